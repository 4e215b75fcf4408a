"""deepdenoise1d/folderlock.py: one run per folder; a second lock is refused at once, in one line."""
from __future__ import annotations

from conftest import assert_one_line_error
from deepdenoise1d.folderlock import lock_folder


def test_second_lock_on_the_same_folder_is_refused_in_one_line_naming_the_holder(run_call, tmp_path):
    first = lock_folder(tmp_path, ".train.lock", "train.py")
    try:
        code, err = run_call(lambda: lock_folder(tmp_path, ".train.lock", "train.py"))
        assert_one_line_error(code, err, str(tmp_path), "another train.py run holds this folder", ".train.lock")
        assert first.is_locked  # the refused attempt leaves the first run's lock alone
    finally:
        first.release()


def test_a_released_lock_can_be_retaken(tmp_path):
    first = lock_folder(tmp_path, ".train.lock", "train.py")
    first.release()
    assert not first.is_locked
    second = lock_folder(tmp_path, ".train.lock", "train.py")
    try:
        assert second.is_locked
    finally:
        second.release()


def test_another_lock_name_in_the_same_folder_is_independent(tmp_path):
    first = lock_folder(tmp_path, ".train.lock", "train.py")
    try:
        other = lock_folder(tmp_path, ".explain.lock", "explain_results.py")
        assert other.is_locked
        other.release()
    finally:
        first.release()


def test_a_missing_folder_is_created(tmp_path):
    lock = lock_folder(tmp_path / "new" / "run", ".train.lock", "train.py")
    try:
        assert lock.is_locked and (tmp_path / "new" / "run" / ".train.lock").exists()
    finally:
        lock.release()

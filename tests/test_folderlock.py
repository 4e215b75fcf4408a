"""deepdenoise1d/folderlock.py: one run per folder; a second lock is refused at once, in one line (naming who
holds it); another user's lock file never turns into a traceback, and never breaks the one-run guarantee."""
from __future__ import annotations

import os
import stat

import pytest

from conftest import assert_one_line_error, shared_folder, start_as_nobody
from deepdenoise1d.errors import InputError
from deepdenoise1d.folderlock import FileLockHeld, LockHeld, holder_of, lock_folder


def test_second_lock_on_the_same_folder_is_refused_in_one_line_naming_the_holder(run_call, tmp_path):
    first = lock_folder(tmp_path, ".train.lock", "train.py")
    try:
        code, err = run_call(lambda: lock_folder(tmp_path, ".train.lock", "train.py"))
        assert_one_line_error(code, err, str(tmp_path), "another train.py run holds this folder", ".train.lock")
        if os.path.exists("/proc/locks"):
            assert f"pid {os.getpid()}, user " in err  # who holds it, from /proc/locks
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


@pytest.mark.parametrize("what", ["fifo", "link", "folder"])
def test_a_lock_path_that_is_not_a_file_is_one_line_and_left_alone(run_call, tmp_path, what):
    lock = tmp_path / ".train.lock"
    if what == "fifo":
        os.mkfifo(lock)  # opened without blocking: no hang
    elif what == "link":
        lock.symlink_to(tmp_path / "elsewhere")
    else:
        lock.mkdir()
    code, err = run_call(lambda: lock_folder(tmp_path, ".train.lock", "train.py"))
    assert_one_line_error(code, err, str(tmp_path), "cannot lock the folder", ".train.lock")
    assert not (tmp_path / "elsewhere").exists()
    assert os.path.lexists(lock) and not os.path.isfile(lock)


def test_a_lock_file_removed_while_held_is_locked_afresh(tmp_path):
    """Whoever held the lock may remove its file (a run that wrote nothing); the next one locks the new file."""
    path = tmp_path / ".train.lock"
    first = FileLockHeld(path).acquire()
    path.unlink()
    second = FileLockHeld(path).acquire()  # a new file: the first's lock is on a removed inode
    try:
        third = FileLockHeld(path)
        with pytest.raises(LockHeld):
            third.acquire(timeout=0.05)
    finally:
        second.release()
        first.release()


def test_holder_of_a_free_lock_is_none(tmp_path):
    path = tmp_path / ".train.lock"
    path.write_text("")
    assert holder_of(path) is None
    assert holder_of(tmp_path / "missing") is None


HOLD = """
import sys
from pathlib import Path
from deepdenoise1d.folderlock import lock_folder
from deepdenoise1d.errors import run_cli
def main():
    lock = lock_folder(Path(sys.argv[1]), ".train.lock", "train.py")
    print("locked", flush=True)
    sys.stdin.readline()
    lock.release()
run_cli(main, "train.py")
"""


def test_another_users_unreadable_lock_file_is_one_line_naming_its_owner(as_nobody):
    """(6) A mode-0600 lock file of another user (root here) cannot be opened: one line naming the owner, no
    traceback, and the folder is not taken (whether a run holds it cannot be told)."""
    with shared_folder() as folder:
        lock = folder / ".train.lock"
        lock.write_text("")
        lock.chmod(0o600)
        code, _, err = as_nobody(HOLD, folder, cwd=folder)
        assert_one_line_error(code, err, str(folder), ".train.lock", "belongs to user root (uid 0)", "mode 0600",
                              "cannot be told")
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600 and lock.stat().st_uid == 0


def test_another_users_readable_lock_file_still_gives_one_run_per_folder(as_nobody):
    """Another user's lock file that this user can read (not write) is locked read-only: their lock file does not
    block a run, and while one run holds it the other user's run is refused, in both directions."""
    with shared_folder() as folder:
        lock = folder / ".train.lock"
        lock.write_text("")
        lock.chmod(0o644)  # root's, readable by nobody
        child = start_as_nobody(HOLD, folder, cwd=folder, stdin=__import__("subprocess").PIPE)
        try:
            assert child.stdout.readline().strip() == "locked", child.stderr.read()
            with pytest.raises(InputError, match="another train.py run holds this folder") as refused:
                lock_folder(folder, ".train.lock", "train.py")
            if os.path.exists("/proc/locks"):
                assert f"pid {child.pid}, user nobody" in str(refused.value)
        finally:
            child.stdin.write("\n")
            child.stdin.flush()
            child.communicate(timeout=30)
        assert child.returncode == 0
        mine = lock_folder(folder, ".train.lock", "train.py")  # released by nobody: root takes it
        try:
            holder = start_as_nobody(HOLD, folder, cwd=folder, stdin=__import__("subprocess").PIPE)
            out, err = holder.communicate("\n", timeout=30)
            assert_one_line_error(holder.returncode, err, "another train.py run holds this folder", ".train.lock")
            assert "locked" not in out
        finally:
            mine.release()

"""Tests of Pytorch_V1/rundir.py: the run folder's rules (a new one by default, never clobbered, removed when a run wrote nothing, only our own temp files cleaned) and its lock."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import Pytorch_V1.train as train_mod
from conftest import (
    RUN_FILES,
    TINY,
    TRAIN_SCRIPT,
    assert_one_line_error,
    kill_9,
    log_tail,
    read_log,
    start_training,
    wait_for,
)
from Pytorch_V1.checkpoint import load_checkpoint
from Pytorch_V1.data import SyntheticStream
from Pytorch_V1.rundir import LOCK_NAME, MARKER, RunDir, default_run_dir
from Pytorch_V1.train import TrainConfig, train
from deepdenoise1d.errors import InputError


# ---------------------------------------------------------------------------
# RunDir itself


def test_default_run_dir_is_a_new_folder_under_the_root(tmp_path):
    first = default_run_dir(tmp_path)
    assert first.parent == tmp_path and first.name.startswith("train-") and not first.exists()
    first.mkdir()
    second = default_run_dir(tmp_path)
    assert second != first and second.parent == tmp_path and not second.exists()


def test_a_second_rundir_on_a_locked_folder_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "run"
    with RunDir(folder):
        for overwrite in (False, True):
            with pytest.raises(InputError) as refused:
                RunDir(folder, overwrite=overwrite).open()
            message = str(refused.value)
            assert "\n" not in message and "another train.py run holds this folder" in message and str(folder) in message
        assert (folder / LOCK_NAME).exists()
    with RunDir(folder) as run:  # released: the next run takes the folder
        assert run.path == folder and folder.is_dir()


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "ckpt_last.pth").write_bytes(b"a run's checkpoint")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds another run") as refused:
        RunDir(folder).open()
    message = str(refused.value)
    # no .train-run mark: train.py did not make this folder, so --overwrite is not offered
    assert "\n" not in message and "ckpt_last.pth" in message and "--resume" in message and "--overwrite" not in message
    assert (folder / "ckpt_last.pth").read_bytes() == b"a run's checkpoint"
    with RunDir(folder, resume=True):
        assert (folder / "ckpt_last.pth").read_bytes() == b"a run's checkpoint"
    assert capsys.readouterr().err == ""
    with pytest.raises(InputError, match="not a run folder made by train.py"):
        RunDir(folder, overwrite=True).open()
    assert (folder / "ckpt_last.pth").read_bytes() == b"a run's checkpoint"
    (folder / MARKER).write_text("made by a train.py run")
    with pytest.raises(InputError, match="--overwrite to replace it"):
        RunDir(folder).open()
    with RunDir(folder, overwrite=True):
        assert not (folder / "ckpt_last.pth").exists()
    assert "--overwrite" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "mine"  # not a run file: never deleted
    with pytest.raises(InputError, match="exclude"):
        RunDir(folder, resume=True, overwrite=True)


def test_a_run_that_wrote_nothing_leaves_no_folder(tmp_path):
    folder = tmp_path / "runs" / "run"
    with RunDir(folder):
        assert folder.is_dir()
    assert not folder.exists()
    with RunDir(folder) as run:  # a run that wrote a file keeps its folder
        run.file("train_log.csv").write_text("step\n")
    assert (folder / "train_log.csv").read_text() == "step\n"
    (tmp_path / "mine").mkdir()
    with RunDir(tmp_path / "mine"):
        pass
    assert (tmp_path / "mine").is_dir()  # a folder the run did not make is never removed
    with pytest.raises(InputError, match="no such checkpoint"):
        RunDir(tmp_path / "absent", resume=True).open()
    assert not (tmp_path / "absent").exists()


# ---------------------------------------------------------------------------
# the rules as train.py's CLI applies them


def test_default_run_folder_is_new_and_under_runs(tmp_path, monkeypatch, run_main):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, out, err = run_main(train_mod, ["--steps", 2, "--batch-size", 8, "--val-size", 20, "--device", "cpu"])
        assert code == 0, err
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("train-") for r in runs)
    assert all(RUN_FILES <= {p.name for p in r.iterdir()} for r in runs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing else written, no ckpt/


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(finished_tiny_run, run_main, capsys):
    before = {p.name: p.read_bytes() for p in finished_tiny_run.iterdir()}
    code, _, err = run_main(train_mod, ["--run-dir", finished_tiny_run, "--steps", 2])
    assert_one_line_error(code, err, "holds another run", "--resume", "--overwrite")
    assert {p.name: p.read_bytes() for p in finished_tiny_run.iterdir()} == before


def test_overwrite_says_what_it_replaces(tmp_path, run_main):
    folder = tmp_path / "run"
    train(TrainConfig(**TINY), folder)
    code, _, err = run_main(train_mod, ["--run-dir", folder, "--overwrite", "--steps", 4, "--batch-size", 8,
                                        "--val-size", 20, "--eval-every", 2, "--device", "cpu"])
    assert code == 0, err
    assert "--overwrite" in err and "ckpt_last.pth" in err and "ckpt_best.pth" in err
    assert load_checkpoint(folder / "ckpt_last.pth")["step"] == 4
    assert [int(r["step"]) for r in read_log(folder / "train_log.csv")] == [2, 4]


def test_a_second_run_on_a_locked_folder_gets_one_line(tmp_path, run_main):
    folder = tmp_path / "run"
    with RunDir(folder):  # another run holds the folder
        code, _, err = run_main(train_mod, ["--run-dir", folder, "--steps", 2])
        assert_one_line_error(code, err, "another train.py run holds this folder")
        code, _, err = run_main(train_mod, ["--run-dir", folder, "--overwrite", "--steps", 2])
        assert_one_line_error(code, err, "another train.py run holds this folder")
    assert not (folder / "ckpt_last.pth").exists()


def test_run_dir_that_is_a_file_is_one_line(tmp_path, run_main):
    (tmp_path / "f").write_text("user file")
    code, _, err = run_main(train_mod, ["--run-dir", tmp_path / "f", "--steps", 1])
    assert_one_line_error(code, err, "is a file")
    assert (tmp_path / "f").read_text() == "user file"


def test_a_run_that_fails_at_setup_leaves_no_folder(tmp_path, monkeypatch, run_main):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(train_mod, ["--data", tmp_path / "nope", "--steps", 1])
    assert_one_line_error(code, err, "nope")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---------------------------------------------------------------------------
# temp files


def test_only_our_own_temp_files_are_removed(tmp_path, monkeypatch):
    """Leftovers of our atomic writes (.ckpt_last.pth.*.tmp ...) go; any other .tmp file stays."""
    folder = tmp_path / "run"
    folder.mkdir()
    ours = [folder / ".ckpt_last.pth.1234x5678-abcd.tmp", folder / ".train_log.csv.9x9-1.tmp"]
    theirs = [folder / ".ckpt_best.h5.1234x5678-abcd.tmp", folder / "notes.tmp", folder / ".mine.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"x")
    train(TrainConfig(**{**TINY, "steps": 2}), folder)
    assert not any(p.exists() for p in ours)
    assert all(p.read_bytes() == b"x" for p in theirs)


def test_stale_temp_files_are_removed_at_start(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = [run_dir / ".ckpt_last.pth.a1b2c3.tmp", run_dir / ".ckpt_best.pth.zz_9.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = [run_dir / "notes.tmp", run_dir / "my.txt"]  # not ours: never touched
    for p in keep:
        p.write_text("user file")
    seen_at_first_step = []
    real_next = SyntheticStream.next_batch

    def spy(self):
        if not seen_at_first_step:
            seen_at_first_step.append(sorted(p.name for p in run_dir.iterdir()))
        return real_next(self)

    monkeypatch.setattr(SyntheticStream, "next_batch", spy)
    train(TrainConfig(steps=2, batch_size=8, val_size=20, eval_every=2, save_every=2, device="cpu"), run_dir)
    assert not any(p.exists() for p in stale)
    assert not any(name.endswith(".tmp") and name.startswith(".") for name in seen_at_first_step[0])
    assert all(p.read_text() == "user file" for p in keep)
    assert not list(run_dir.glob(".*.tmp"))


# ---------------------------------------------------------------------------
# two processes, one folder


def test_a_second_training_on_the_same_folder_is_refused_while_the_first_runs(tmp_path, no_stray_trainings):
    """Two processes, one run folder: the second (even with --overwrite) gets one line and exit 2,
    and deletes nothing of the first run, which is still going."""
    folder = tmp_path / "run"
    flags = ["--steps", "3000", "--batch-size", "16", "--val-size", "100", "--eval-every", "5", "--save-every", "5",
             "--device", "cpu"]
    first = start_training(folder, *flags)
    wait_for(folder / "ckpt_last.pth", first)
    second = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--run-dir", str(folder), "--overwrite", *flags],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert_one_line_error(second.returncode, second.stderr, "another train.py run holds this folder")
    assert first.poll() is None, "the first run ended before the second was tried"
    step = load_checkpoint(folder / "ckpt_last.pth")["step"]
    deadline = time.monotonic() + 60
    while load_checkpoint(folder / "ckpt_last.pth")["step"] == step:  # the first run goes on writing
        assert time.monotonic() < deadline and first.poll() is None, log_tail(folder)
        time.sleep(0.05)
    kill_9(first)


# --- the tracked folders and the .train-run mark -----------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]])
def test_a_run_dir_in_a_tracked_folder_is_refused_outright(run_main, flags):
    from deepdenoise1d.safewrite import tracked_folders

    for folder in tracked_folders():
        if not folder.is_dir():
            continue
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        for run_dir in (folder, folder / "sub"):
            code, _, err = run_main(train_mod, ["--run-dir", run_dir, "--steps", 2, "--batch-size", 8,
                                                "--val-size", 20, "--device", "cpu", *flags])
            assert_one_line_error(code, err, "tracked files")
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
        assert not (folder / "sub").exists() and not (folder / LOCK_NAME).exists()


def test_a_refused_setup_leaves_no_lock_or_mark_in_a_folder_it_did_not_make(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "ckpt_best.pth").write_bytes(b"someone's checkpoint")
    for overwrite in (False, True):
        with pytest.raises(InputError):
            RunDir(folder, overwrite=overwrite).open()
        assert sorted(p.name for p in folder.iterdir()) == ["ckpt_best.pth"]


def test_a_new_run_marks_its_folder_and_overwrite_removes_the_stale_h5(tmp_path):
    folder = tmp_path / "run"
    with RunDir(folder) as run:
        assert (folder / MARKER).is_file()
        (run.file("ckpt_best.pth")).write_bytes(b"run 1")
    (folder / "ckpt_best.h5").write_bytes(b"converted from run 1")
    (folder / "notes.txt").write_text("mine")
    with RunDir(folder, overwrite=True):
        assert not (folder / "ckpt_best.pth").exists() and not (folder / "ckpt_best.h5").exists()
    assert (folder / "notes.txt").read_text() == "mine" and (folder / MARKER).is_file()

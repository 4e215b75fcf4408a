"""train.py --resume after its --data file changed: the run records the file's sha256 when it starts and a resume
hashes it again, refusing in one line when it differs or is gone (the run's σ scale was estimated on the old
content, so SURE would be told the wrong σ); a checkpoint from before the hash resumes with a one-line warning."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import Pytorch_V1.train as train_mod
from conftest import assert_one_line_error
from Pytorch_V1.checkpoint import load_checkpoint


def spikes_record(length: int = 2048, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Sparse spikes of 3..8 in white noise of σ ``scale``, all times ``scale``."""
    rng = np.random.default_rng(seed)
    clean = np.zeros(length)
    at = rng.choice(length, length // 20, replace=False)
    clean[at] = rng.uniform(3, 8, at.size) * rng.choice([-1, 1], at.size)
    return scale * (clean + rng.standard_normal(length))


def record_args(record, run_dir, steps: int) -> list:
    return ["--data", record, "--loss", "sure", "--run-dir", run_dir, "--steps", steps, "--batch-size", 8,
            "--eval-every", 2, "--save-every", 2, "--crop-length", 64, "--device", "cpu"]


@pytest.fixture
def started(tmp_path, run_main):
    """A 2-step run on a record (rec.npy) in tmp_path/run: (record, run folder)."""
    record, run = tmp_path / "rec.npy", tmp_path / "run"
    np.save(record, spikes_record())
    code, _, err = run_main(train_mod, record_args(record, run, 2))
    assert code == 0, err
    return record, run


def test_a_run_records_the_sha256_of_its_data_file(started):
    record, run = started
    digest = hashlib.sha256(record.read_bytes()).hexdigest()
    for name in ("ckpt_last.pth", "ckpt_best.pth"):
        assert load_checkpoint(run / name)["config"]["train"]["data_sha256"] == digest


def test_resume_with_the_same_data_continues(started, run_main):
    record, run = started
    code, _, err = run_main(train_mod, [*record_args(record, run, 4), "--resume"])
    assert code == 0 and "resuming at step 2 of 4" in err, err
    assert load_checkpoint(run / "ckpt_last.pth")["step"] == 4


@pytest.mark.parametrize("change", ["rewritten", "gone", "folder"])
def test_resume_refuses_a_data_file_that_changed_or_is_gone(started, run_main, change):
    """The record rewritten in place in other units (σ 3 times the saved scale), deleted, or a folder now:
    one line naming the file and its saved hash, nothing written."""
    record, run = started
    digest = hashlib.sha256(record.read_bytes()).hexdigest()
    if change == "rewritten":
        np.save(record, spikes_record(scale=3.0))
    else:
        record.unlink()
        if change == "folder":
            record.mkdir()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, _, err = run_main(train_mod, [*record_args(record, run, 4), "--resume"])
    assert_one_line_error(code, err, f"{record}: changed since this run started (sha256 {digest}",
                          "start a new run (--run-dir elsewhere) or restore the file")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_checkpoint_without_the_hash_resumes_with_one_warning(started, run_main):
    """A run saved before the hash was recorded: the data cannot be checked, so the resume says so once and goes on."""
    record, run = started
    ckpt = load_checkpoint(run / "ckpt_last.pth")
    del ckpt["config"]["train"]["data_sha256"]
    torch.save(ckpt, run / "ckpt_last.pth")
    code, _, err = run_main(train_mod, [*record_args(record, run, 4), "--resume"])
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "cannot be checked" in line]
    assert len(warnings) == 1 and str(record) in warnings[0], err
    assert load_checkpoint(run / "ckpt_last.pth")["step"] == 4

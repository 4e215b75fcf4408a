"""Tests of Pytorch_V1/distributed.py: train.py under torchrun on two CPU workers (training, resume, the batch split)."""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from conftest import TRAIN_SCRIPT
from Pytorch_V1.checkpoint import load_checkpoint, save_checkpoint
from deepdenoise1d.safewrite import write_policy


def _torchrun(args, tmp_path, timeout=240):
    # PYTHONFAULTHANDLER: a worker that aborts (SIGABRT was seen once in CI) prints where it was.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(TRAIN_SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_two_cpu_workers_train_and_resume(tmp_path):
    ckpt = tmp_path / "ckpt"
    common = ["--batch-size", "16", "--val-size", "50", "--eval-every", "5", "--save-every", "5", "--run-dir", str(ckpt)]
    run = _torchrun(["--steps", "10", *common], tmp_path)
    assert run.returncode == 0, run.stderr[-8000:]
    last = load_checkpoint(ckpt / "ckpt_last.pth")
    assert last["step"] == 10 and last["config"]["world_size"] == 2
    # Each rank's data stream is saved, and the two differ (distinct synthetic streams).
    streams = last["rng_state"]["stream"]
    assert len(streams) == 2 and streams[0] != streams[1]
    rows = (ckpt / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["5", "10"]  # rank 0 alone writes the log

    # Extend the saved run to 15 global steps and resume it on two workers.
    last["config"]["train"]["steps"] = 15
    with write_policy(command="train.py"):  # as train.py itself would rewrite its own checkpoint
        save_checkpoint(ckpt / "ckpt_last.pth", last)
    resumed = _torchrun(["--resume", "--run-dir", str(ckpt)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-8000:]
    after = load_checkpoint(ckpt / "ckpt_last.pth")
    assert after["step"] == 15
    changed = [k for k, v in after["net_state_dict"].items() if v.is_floating_point()
               and not torch.equal(v, last["net_state_dict"][k])]
    assert changed, "resumed steps did not change the weights"
    assert [r.split(",")[0] for r in (ckpt / "train_log.csv").read_text().splitlines()[1:]] == ["5", "10", "15"]


def test_uneven_batch_over_workers_is_a_clear_error(tmp_path):
    run = _torchrun(["--steps", "2", "--batch-size", "15", "--run-dir", str(tmp_path / "c")], tmp_path)
    assert run.returncode != 0
    assert "must divide evenly" in run.stderr

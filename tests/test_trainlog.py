"""Tests of Pytorch_V1/trainlog.py: train_log.csv written by start_log and append_log and read back by read_log."""
from __future__ import annotations

import math

import pytest

from Pytorch_V1 import trainlog
from Pytorch_V1.checkpoint import TrainState


def test_start_append_read_round_trip_and_resume(tmp_path):
    path = tmp_path / "train_log.csv"
    trainlog.start_log(path, 0)
    assert path.read_text().splitlines() == [",".join(trainlog.LOG_COLUMNS)]
    assert trainlog.read_log(path) == []
    for step in (5, 10, 15):
        state = TrainState(step=step, val={"fixed": 0.5 + step, "unfixed": 0.25}, loss_sum=3.0 * step, loss_count=3)
        trainlog.append_log(path, state, lr=1e-3 * step, seconds=1.5 * step)
    rows = trainlog.read_log(path)
    assert [int(r["step"]) for r in rows] == [5, 10, 15]
    assert set(rows[0]) == set(trainlog.LOG_COLUMNS)
    assert float(rows[1]["loss"]) == pytest.approx(10.0)  # the mean loss since the last row
    assert float(rows[1]["lr"]) == pytest.approx(1e-2, rel=1e-3)
    assert float(rows[1]["val_rmse_fixed"]) == pytest.approx(10.5) and float(rows[1]["val_rmse_unfixed"]) == 0.25
    assert math.isnan(float(rows[1]["val_sure_root_mse_fixed"]))  # not in this validation
    assert float(rows[2]["seconds"]) == pytest.approx(22.5)
    trainlog.start_log(path, 10)  # a resume at step 10: rows a killed run logged past it go
    assert [int(r["step"]) for r in trainlog.read_log(path)] == [5, 10]
    path.unlink()
    trainlog.start_log(path, 10)  # a resume without its log: the header again
    assert trainlog.read_log(path) == []


def test_read_log_skips_a_row_cut_short(tmp_path):
    path = tmp_path / "train_log.csv"
    trainlog.start_log(path, 0)
    trainlog.append_log(path, TrainState(step=5, val={"fixed": 1.0}, loss_sum=2.0, loss_count=1), lr=0.1, seconds=1.0)
    with open(path, "a") as f:
        f.write("10,0.5")  # a kill mid-write
    assert [int(r["step"]) for r in trainlog.read_log(path)] == [5]


def test_next_steps_use_the_repositorys_interpreter_and_never_copy_into_ckpt(tmp_path, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.chdir(trainlog.REPO)
    run = SimpleNamespace(path=tmp_path / "run", file=lambda name: tmp_path / "run" / name)
    synthetic = "\n".join(trainlog.next_steps(run, None))
    own_data = "\n".join(trainlog.next_steps(run, "my_recordings"))
    for text in (synthetic, own_data):
        assert "cp " not in text and "ckpt/ckpt_best" not in text
        assert all(line.split()[1] == ".venv/bin/python" for line in text.splitlines()[1:])
        assert f"--weights {tmp_path / 'run' / 'ckpt_best.h5'}" in text
    assert "--random" in synthetic and "--input" not in synthetic
    assert "--input" in own_data and "my_recordings" in own_data
    broad = "\n".join(trainlog.next_steps(run, None, broad=True))  # a broad-prior run: scored on the field table
    assert "--random" not in broad and f"field_table.py --models {tmp_path / 'run' / 'ckpt_best.h5'}" in broad
    monkeypatch.chdir(tmp_path)  # elsewhere: the interpreter by its full path
    assert str(trainlog.REPO / ".venv" / "bin" / "python") in "\n".join(trainlog.next_steps(run, None))

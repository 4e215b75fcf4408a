"""Reliability: training survives kill -9 and resumes bit for bit; stale temp files
are cleaned; bad checkpoints, HDF5 weights, signals and output paths in pth2h5.py, Numpy_test.py
and Pytorch_V1/test.py get one clear stderr line, a non-zero exit, no traceback, and nothing written.
(Cases already in test_torch_test_cli.py, test_pth2h5.py and test_numpy_parity.py are not repeated here.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, assert_one_line_error, load_script
from Pytorch_V1.checkpoint import load_checkpoint, save_checkpoint
from Pytorch_V1.data import SyntheticStream
from Pytorch_V1.model import ICNN_s, ModelConfig
from Pytorch_V1.train import TrainConfig, train
from test_model import write_cuda_checkpoint

TRAIN = REPO_ROOT / "Pytorch_V1" / "train.py"
PTH2H5 = REPO_ROOT / "pth2h5.py"
NUMPY_TEST = REPO_ROOT / "Numpy_V2" / "Numpy_test.py"
TORCH_TEST = REPO_ROOT / "Pytorch_V1" / "test.py"
TRAIN_FLAGS = ["--steps", "40", "--batch-size", "16", "--val-size", "100", "--eval-every", "10",
               "--save-every", "10", "--device", "cpu", "--seed", "5"]


# ---------------------------------------------------------------------------
# training under kill -9


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_stray_trainings():
    """Kill (by pid) any training this module started and a failing test left running."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def start_training(run_dir: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    log = open(run_dir.parent / f"{run_dir.name}.log", "ab")
    try:
        proc = subprocess.Popen([sys.executable, str(TRAIN), "--run-dir", str(run_dir), *flags],
                                cwd=run_dir.parent, env=env, stdout=log, stderr=log)
    finally:
        log.close()
    STARTED.append(proc)
    return proc


def log_tail(run_dir: Path) -> str:
    log = run_dir.parent / f"{run_dir.name}.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training exited ({proc.returncode}) before writing {path.name}:\n{log_tail(path.parent)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {path.name} after {timeout} s")
        time.sleep(0.005)


def kill_9(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        pytest.fail("training finished before it could be killed; the test needs a longer run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def finish(proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, log.read_text(errors="replace")[-2000:]


def test_kill_9_while_checkpointing_every_step_never_corrupts(tmp_path):
    """With a checkpoint written every step, a kill lands while ckpt_last.pth is being replaced,
    again and again: what is on disk must always load."""
    run_dir = tmp_path / "run"
    flags = ["--steps", "2000", "--batch-size", "16", "--val-size", "100", "--eval-every", "1000",
             "--save-every", "1", "--device", "cpu"]
    last = run_dir / "ckpt_last.pth"
    steps = []
    for round_, delay in enumerate([0.05, 0.237]):
        proc = start_training(run_dir, *flags, *(["--resume"] if round_ else []))
        if round_:  # wait until the resumed run has moved past its starting step
            deadline = time.monotonic() + 120
            while load_checkpoint(last)["step"] <= steps[-1]:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the resumed run made no progress:\n{log_tail(run_dir)}")
                time.sleep(0.005)
        else:
            wait_for(last, proc)
        time.sleep(delay)
        kill_9(proc)
        ckpt = load_checkpoint(last)  # never truncated, never half-written
        assert set(ckpt["net_state_dict"]) == set(ICNN_s().state_dict())
        steps.append(ckpt["step"])
    assert 1 <= steps[0] < steps[1] < 2000


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


def test_killed_and_resumed_run_equals_uninterrupted_run_bit_for_bit(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    proc_whole = start_training(whole, *TRAIN_FLAGS)  # runs alongside; one thread each
    proc = start_training(broken, *TRAIN_FLAGS)
    wait_for(broken / "ckpt_last.pth", proc)
    kill_9(proc)
    killed_at = load_checkpoint(broken / "ckpt_last.pth")["step"]
    assert 10 <= killed_at < 40
    (broken / ".ckpt_last.pth.k1ll3d.tmp").write_bytes(b"left by a kill -9 mid-write")
    proc = start_training(broken, *TRAIN_FLAGS, "--resume")
    finish(proc, tmp_path / "broken.log")
    finish(proc_whole, tmp_path / "whole.log")
    assert not list(broken.glob(".*.tmp"))
    a = load_checkpoint(whole / "ckpt_last.pth")
    b = load_checkpoint(broken / "ckpt_last.pth")
    assert a["step"] == b["step"] == 40
    assert set(a["net_state_dict"]) == set(b["net_state_dict"])
    for key, value in a["net_state_dict"].items():
        assert torch.equal(value, b["net_state_dict"][key]), key
    for pid, state in a["optim_state_dict"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optim_state_dict"]["state"][pid][name]), (pid, name)
    assert a["validation"] == b["validation"]


def test_a_second_training_on_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Two processes, one run folder: the second (even with --overwrite) gets one line and exit 2,
    and deletes nothing of the first run, which is still going."""
    folder = tmp_path / "run"
    flags = ["--steps", "3000", "--batch-size", "16", "--val-size", "100", "--eval-every", "5", "--save-every", "5",
             "--device", "cpu"]
    first = start_training(folder, *flags)
    wait_for(folder / "ckpt_last.pth", first)
    second = subprocess.run([sys.executable, str(TRAIN), "--run-dir", str(folder), "--overwrite", *flags],
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


# ---------------------------------------------------------------------------
# pth2h5.py


@pytest.fixture(scope="module")
def pth2h5():
    return load_script(PTH2H5, "pth2h5_script_reliability")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "w.pth"
    save_checkpoint(path, {"net_state_dict": ICNN_s().state_dict(), "config": {"model": ModelConfig().to_dict()},
                           "format_version": 1})
    return path


@pytest.fixture(scope="module")
def weights_h5(pth2h5, checkpoint):
    path = checkpoint.with_name("w.h5")
    pth2h5.convert(checkpoint, path)
    return path


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("case", ["empty", "text", "zip_cut_short"])
def test_pth2h5_bad_checkpoint(pth2h5, run_main, checkpoint, tmp_path, case):
    """Truncation mid-file and pickles carrying code are in test_pth2h5.py; these are the other unreadable files."""
    bad = tmp_path / "bad.pth"
    data = checkpoint.read_bytes()
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "text":
        bad.write_text("not a checkpoint\n")
    else:
        bad.write_bytes(data[:100])  # only the first zip header survived
    before = listing(tmp_path)
    code, _, err = run_main(pth2h5, [bad, tmp_path / "out" / "w.h5"])
    assert_one_line_error(code, err, "bad.pth")
    assert listing(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_pth2h5_creates_a_missing_output_folder(pth2h5, run_main, checkpoint, tmp_path):
    out = tmp_path / "new" / "deeper" / "w.h5"
    code, _, err = run_main(pth2h5, [checkpoint, out])
    assert code == 0, err
    with h5py.File(out, "r") as f:
        assert "wienernet.beta" in f and "inc.double_conv.0.weight" in f


@pytest.mark.parametrize("spelling", ["dotted", "symlink"])  # the plain same path: test_pth2h5.py
def test_pth2h5_refuses_to_overwrite_its_input(pth2h5, run_main, checkpoint, tmp_path, spelling):
    source = tmp_path / "w.pth"
    source.write_bytes(checkpoint.read_bytes())
    if spelling == "dotted":
        dest = tmp_path / "." / "w.pth"
    else:
        dest = tmp_path / "link.pth"
        dest.symlink_to(source)
    before = listing(tmp_path)
    code, _, err = run_main(pth2h5, [source, dest])
    assert_one_line_error(code, err, "overwrite")
    assert listing(tmp_path) == before
    assert source.read_bytes() == checkpoint.read_bytes()


def test_pth2h5_output_folder_path_is_refused(pth2h5, run_main, checkpoint, tmp_path):
    (tmp_path / "dir.h5").mkdir()
    code, _, err = run_main(pth2h5, [checkpoint, tmp_path / "dir.h5"])
    assert_one_line_error(code, err, "dir.h5")


def test_cuda_saved_checkpoint_works_in_test_py_and_pth2h5(pth2h5, run_main, tmp_path):
    """A CUDA-saved checkpoint loads on the CPU (it must load, not fail)."""
    torch.manual_seed(2)
    model = ICNN_s()
    write_cuda_checkpoint(tmp_path / "cuda.pth", {"epoch": 3, "net_state_dict": model.state_dict(), "loss": 1.0})
    code, out, err = run_main(pth2h5, [tmp_path / "cuda.pth", tmp_path / "cuda.h5"])
    assert code == 0, err
    with h5py.File(tmp_path / "cuda.h5", "r") as f:
        np.testing.assert_array_equal(f["outc.conv.weight"][()], model.outc.conv.weight.detach().numpy().ravel())
    np.save(tmp_path / "in.npy", np.random.default_rng(0).normal(size=(2, 100)))
    torch_test = load_script(TORCH_TEST, "torch_test_script_reliability")
    code, _, err = run_main(torch_test, ["--weights", tmp_path / "cuda.pth", "--device", "cpu", "--input",
                                         tmp_path / "in.npy", "--output", tmp_path / "out.npy"])
    assert code == 0, err
    assert np.load(tmp_path / "out.npy").shape == (2, 100)


# ---------------------------------------------------------------------------
# Numpy_test.py --weights: bad HDF5 files


@pytest.fixture(scope="module")
def numpy_test():
    return load_script(NUMPY_TEST, "numpy_test_script_reliability")


def rewrite_h5(src: Path, dst: Path, edit) -> None:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        edit(f)


def drop(key):
    def edit(f):
        del f[key]
    return edit


def reshape(key, size):
    def edit(f):
        del f[key]
        f.create_dataset(key, data=np.zeros(size, dtype=np.float32))
    return edit


@pytest.mark.parametrize("case, fragments", [
    ("missing", ["up3.conv.double_conv.0.weight", "missing"]),
    ("missing_beta", ["wienernet.beta"]),
    ("wrong_shape", ["outc.conv.weight", "(3,)", "(1, 2, 1)"]),
    ("truncated", ["bad.h5"]),
    ("empty", ["bad.h5", "empty"]),
    ("text", ["bad.h5"]),
])
def test_numpy_test_bad_weights(numpy_test, run_main, weights_h5, tmp_path, case, fragments):
    bad = tmp_path / "bad.h5"
    if case == "missing":
        rewrite_h5(weights_h5, bad, drop("up3.conv.double_conv.0.weight"))
    elif case == "missing_beta":
        rewrite_h5(weights_h5, bad, drop("wienernet.beta"))
    elif case == "wrong_shape":
        rewrite_h5(weights_h5, bad, reshape("outc.conv.weight", 3))
    elif case == "truncated":
        data = weights_h5.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif case == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_text("1\n2\n3\n")
    np.save(tmp_path / "in.npy", np.random.default_rng(0).normal(size=(2, 100)))
    before = listing(tmp_path)
    code, _, err = run_main(numpy_test, ["--weights", bad, "--input", tmp_path / "in.npy",
                                         "--output", tmp_path / "out" / "o.npy"])
    assert_one_line_error(code, err, *fragments)
    assert listing(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_numpy_test_bad_weights_in_random_mode(numpy_test, run_main, weights_h5, tmp_path):
    data = weights_h5.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    code, _, err = run_main(numpy_test, ["--weights", tmp_path / "cut.h5", "--random", "--n", 5, "--json", tmp_path / "r.json"])
    assert_one_line_error(code, err, "cut.h5")
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------
# bad signals and output paths, Numpy_test.py (and what test_torch_test_cli.py does not cover for test.py)


def write_bad_signal(folder: Path, case: str) -> Path:
    if case == "txt_non_numeric":
        path = folder / "in.txt"
        path.write_text("1.0\n2.5\nabc\n" + "0\n" * 30)
    elif case == "txt_nan":
        path = folder / "in.txt"
        path.write_text("0\n" * 20 + "nan\n" + "0\n" * 20)
    elif case == "txt_inf":
        path = folder / "in.txt"
        path.write_text("0\n" * 20 + "-inf\n" + "0\n" * 20)
    elif case == "npy_nan":
        path = folder / "in.npy"
        x = np.zeros((3, 100))
        x[1, 7] = np.nan
        np.save(path, x)
    elif case == "npy_inf":
        path = folder / "in.npy"
        x = np.zeros((3, 100))
        x[2, 99] = np.inf
        np.save(path, x)
    elif case == "short_txt":
        path = folder / "in.txt"
        path.write_text("1\n" * 15)
    elif case == "short_npy":
        path = folder / "in.npy"
        np.save(path, np.ones((4, 15)))
    elif case == "empty_txt":
        path = folder / "in.txt"
        path.write_bytes(b"")
    elif case == "blank_txt":
        path = folder / "in.txt"
        path.write_text("\n  \n\n")
    elif case == "empty_npy":
        path = folder / "in.npy"
        path.write_bytes(b"")
    elif case == "npy_no_signals":
        path = folder / "in.npy"
        np.save(path, np.zeros((0, 100)))
    else:
        raise AssertionError(case)
    return path


FRAGMENTS = {
    "txt_non_numeric": ["line 3"], "txt_nan": ["signal 0", "index 20"], "txt_inf": ["signal 0", "index 20"],
    "npy_nan": ["signal 1", "index 7"], "npy_inf": ["signal 2", "index 99"], "short_txt": ["16"],
    "short_npy": ["16"], "empty_txt": ["empty"], "blank_txt": ["in.txt"], "empty_npy": ["empty"],
    "npy_no_signals": ["in.npy"],
}
NUMPY_CASES = list(FRAGMENTS)
TORCH_CASES = ["txt_nan", "txt_inf", "short_txt", "blank_txt", "empty_npy", "npy_no_signals"]  # the rest: test_torch_test_cli.py


def run_front_end(front_end, numpy_test, run_main, weights_h5, checkpoint, *argv):
    if front_end == "numpy":
        return run_main(numpy_test, ["--weights", weights_h5, *argv])
    torch_test = load_script(TORCH_TEST, "torch_test_script_reliability")
    return run_main(torch_test, ["--weights", checkpoint, "--device", "cpu", *argv])


@pytest.mark.parametrize("front_end, case", [("numpy", c) for c in NUMPY_CASES] + [("torch", c) for c in TORCH_CASES])
def test_bad_signal_file(front_end, case, numpy_test, run_main, weights_h5, checkpoint, tmp_path):
    path = write_bad_signal(tmp_path, case)
    out = tmp_path / "out" / ("o" + path.suffix)  # in a missing folder: must not be created for bad input
    before = listing(tmp_path)
    code, _, err = run_front_end(front_end, numpy_test, run_main, weights_h5, checkpoint,
                                 "--input", path, "--output", out)
    assert_one_line_error(code, err, path.name, *FRAGMENTS[case])
    assert listing(tmp_path) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".npy", ".txt"])
def test_numpy_test_output_in_missing_folder_is_created(numpy_test, run_main, weights_h5, tmp_path, suffix):
    noisy = np.random.default_rng(3).normal(size=100) * 3
    src = tmp_path / f"in{suffix}"
    if suffix == ".npy":
        np.save(src, noisy)
    else:
        src.write_text("".join(f"{float(v)!r}\n" for v in noisy))
    out = tmp_path / "a" / "b" / f"out{suffix}"
    code, _, err = run_main(numpy_test, ["--weights", weights_h5, "--input", src, "--output", out, "--bn-mode", "unfixed"])
    assert code == 0, err
    result = np.load(out) if suffix == ".npy" else np.loadtxt(out)
    assert result.shape == (100,) and np.isfinite(result).all()


OVERWRITE_CASES = [("numpy", s) for s in ("same", "dotted", "symlink", "hardlink")] + [
    ("torch", s) for s in ("symlink", "hardlink")]  # torch same/dotted: test_torch_test_cli.py


@pytest.mark.parametrize("front_end, spelling", OVERWRITE_CASES)
def test_output_may_not_overwrite_input(front_end, spelling, numpy_test, run_main, weights_h5, checkpoint, tmp_path):
    noisy = np.random.default_rng(4).normal(size=(2, 100))
    src = tmp_path / "in.npy"
    np.save(src, noisy)
    original = src.read_bytes()
    if spelling == "same":
        out = src
    elif spelling == "dotted":
        out = tmp_path / "." / "in.npy"
    elif spelling == "symlink":
        out = tmp_path / "link.npy"
        out.symlink_to(src)
    else:
        out = tmp_path / "hard.npy"
        os.link(src, out)
    before = listing(tmp_path)
    code, _, err = run_front_end(front_end, numpy_test, run_main, weights_h5, checkpoint,
                                 "--input", src, "--output", out)
    assert_one_line_error(code, err, "overwrite")
    assert src.read_bytes() == original
    assert listing(tmp_path) == before

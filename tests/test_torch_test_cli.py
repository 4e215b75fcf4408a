"""Pytorch_V1/test.py with a random-weight checkpoint: figures, table, file denoising, bad input."""
from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, assert_one_line_error, load_script, run_script
from Pytorch_V1.checkpoint import load_model, save_checkpoint
from Pytorch_V1.inference import denoise
from Pytorch_V1.model import MIN_LENGTH, ICNN_s, ModelConfig
from signals import report

SCRIPT = REPO_ROOT / "Pytorch_V1" / "test.py"
ALL_METHODS = {"net_fixed", "net_unfixed", "wiener", "l1", "gmc", "soft", "bayes"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = ICNN_s()
    path = tmp_path_factory.mktemp("ckpt") / "random.pth"
    save_checkpoint(path, {"net_state_dict": model.state_dict(), "config": {"model": ModelConfig().to_dict()},
                           "format_version": 1})
    return path


@pytest.fixture(scope="module")
def torch_test():
    return load_script(SCRIPT, "torch_test_script")


def run(run_main, torch_test, checkpoint, *argv):
    return run_main(torch_test, ["--checkpoint", checkpoint, "--device", "cpu", *argv])


def test_min_length_is_shared_with_signals():
    assert report.NETWORK_MIN_LENGTH == MIN_LENGTH


def test_figure_mode_writes_one_png_per_sample(run_main, torch_test, checkpoint, tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ["Test0_data.txt", "Test0_label.txt", "Test3_data.txt", "Test3_label.txt"]:
        shutil.copy(REPO_ROOT / "TestSamples" / name, samples / name)
    code, out, err = run(run_main, torch_test, checkpoint, "--samples", samples, "--fig-dir", tmp_path / "figs")
    assert code == 0, err
    written = sorted(tmp_path.joinpath("figs").iterdir())
    assert [p.name for p in written] == ["Test0_torch.png", "Test3_torch.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_random_mode_json_keys(run_main, torch_test, checkpoint, tmp_path):
    code, out, err = run(run_main, torch_test, checkpoint, "--random", 40, "--seed", 3, "--json", tmp_path / "r.json",
                         "--plots", "--fig-dir", tmp_path)
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["sigma"], result["n"], result["seed"]) == (3.0, 40, 3)
    assert set(result["methods"]) == ALL_METHODS
    assert all(f"| {k} |" in out for k in ALL_METHODS)
    assert (tmp_path / "methods_torch.png").is_file() and (tmp_path / "filter_torch.png").is_file()


@pytest.mark.parametrize("shape", [(100,), (5, 100), (3, 77)])
def test_npy_in_npy_out_same_shape_and_values(run_main, torch_test, checkpoint, tmp_path, shape):
    noisy = np.random.default_rng(1).normal(size=shape) * 3
    np.save(tmp_path / "in.npy", noisy)
    out_path = tmp_path / "new" / "folder" / "out.npy"  # a missing folder is created
    code, _, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "in.npy", "--output", out_path,
                       "--bn", "unfixed")
    assert code == 0, err
    denoised = np.load(out_path)
    assert denoised.shape == shape
    model, _ = load_model(checkpoint)
    np.testing.assert_allclose(np.atleast_2d(denoised), denoise(model, np.atleast_2d(noisy), "unfixed"), atol=1e-6)


def test_txt_in_txt_out_and_bn_modes_differ(run_main, torch_test, checkpoint, tmp_path):
    signal = np.random.default_rng(2).normal(size=100) * 3
    (tmp_path / "in.txt").write_text("".join(f"{v}\n" for v in signal))
    outputs = {}
    for bn in ["fixed", "unfixed"]:
        code, _, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "in.txt", "--output",
                           tmp_path / f"out_{bn}.txt", "--bn", bn)
        assert code == 0, err
        outputs[bn] = np.loadtxt(tmp_path / f"out_{bn}.txt")
        assert outputs[bn].shape == (100,)
    assert not np.allclose(outputs["fixed"], outputs["unfixed"])


def test_truncated_checkpoint(run_main, torch_test, checkpoint, tmp_path):
    data = checkpoint.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    code, _, err = run(run_main, torch_test, tmp_path / "cut.pth", "--random", 5)
    assert_one_line_error(code, err, "cut.pth")


def test_missing_checkpoint(run_main, torch_test, tmp_path):
    code, _, err = run(run_main, torch_test, tmp_path / "none.pth", "--random", 5)
    assert_one_line_error(code, err, "none.pth", "no such")


def test_checkpoint_shape_mismatch_names_key_and_shapes(run_main, torch_test, checkpoint, tmp_path):
    state = ICNN_s().state_dict()
    state["outc.conv.weight"] = torch.zeros(1, 3, 1)
    save_checkpoint(tmp_path / "bad.pth", {"net_state_dict": state})
    code, _, err = run(run_main, torch_test, tmp_path / "bad.pth", "--random", 5)
    assert_one_line_error(code, err, "outc.conv.weight", "(1, 3, 1)", "(1, 2, 1)")


class CreatesFile:
    """Unpickling this calls open(path, 'w'): a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_with_code_is_refused_and_not_run(checkpoint, tmp_path):
    control = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(CreatesFile(control))).close()
    assert control.exists()  # the payload is live when unpickled without safeguards
    marker = tmp_path / "pwned.txt"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"net_state_dict": CreatesFile(marker)}, f)
    # A real process, from an unrelated working directory.
    result = run_script(SCRIPT, "--checkpoint", tmp_path / "evil.pth", "--device", "cpu", "--random", 5, cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "evil.pth")
    assert not marker.exists()


def test_runs_from_any_directory(checkpoint, tmp_path):
    result = run_script(SCRIPT, "--checkpoint", checkpoint, "--device", "cpu", "--random", 10, "--json", "r.json",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(json.loads((tmp_path / "r.json").read_text())["methods"]) == ALL_METHODS


def test_short_signal(run_main, torch_test, checkpoint, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((2, MIN_LENGTH - 1)))
    code, _, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "short.npy", "--output", tmp_path / "o.npy")
    assert_one_line_error(code, err, "short.npy", str(MIN_LENGTH))
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_signal_is_named(run_main, torch_test, checkpoint, tmp_path, bad):
    noisy = np.zeros((4, 100))
    noisy[2, 40] = bad
    np.save(tmp_path / "in.npy", noisy)
    code, _, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "in.npy", "--output", tmp_path / "o.npy")
    assert_one_line_error(code, err, "signal 2", "index 40")
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("content, fragment", [("", "empty"), ("1\n2\nabc\n", "line 3")])
def test_bad_txt_input(run_main, torch_test, checkpoint, tmp_path, content, fragment):
    (tmp_path / "in.txt").write_text(content)
    code, _, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "in.txt", "--output", tmp_path / "o.txt")
    assert_one_line_error(code, err, "in.txt", fragment)


def test_output_may_not_overwrite_input(run_main, torch_test, checkpoint, tmp_path):
    noisy = np.random.default_rng(0).normal(size=(2, 100))
    np.save(tmp_path / "in.npy", noisy)
    code, _, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "in.npy", "--output",
                       tmp_path / "." / "in.npy")
    assert_one_line_error(code, err, "overwrite")
    np.testing.assert_array_equal(np.load(tmp_path / "in.npy"), noisy)


def test_many_signals_to_txt_is_refused(run_main, torch_test, checkpoint, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((3, 100)))
    code, _, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "in.npy", "--output", tmp_path / "o.txt")
    assert_one_line_error(code, err, ".npy")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda(run_main, torch_test, checkpoint):
    code, _, err = run_main(torch_test, ["--checkpoint", checkpoint, "--device", "cuda", "--random", 5])
    assert_one_line_error(code, err, "CUDA")

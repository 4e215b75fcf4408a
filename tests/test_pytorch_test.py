"""Tests of Pytorch_V1/test.py (the PyTorch test CLI) with a random-weight checkpoint: figures, table, file denoising,
bad input, the guarded write path, streaming and the out-of-range σ warning."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from conftest import (
    BAD_SIGNAL_FRAGMENTS,
    REPO_ROOT,
    assert_one_line_error,
    listing,
    load_script,
    output_names,
    run_script,
    write_bad_signal,
    write_cuda_checkpoint,
)
from icnn.spec import BN_MODES, MIN_LENGTH
from Pytorch_V1.checkpoint import load_model, save_checkpoint
from Pytorch_V1.inference import denoise
from Pytorch_V1.model import ICNN_s, ModelConfig
from deepdenoise1d.synthesis import benchmark_signals

SCRIPT = REPO_ROOT / "Pytorch_V1" / "test.py"
ALL_METHODS = {"net_fixed", "net_unfixed", "wiener", "l1", "gmc", "wavelet", "soft", "bayes"}


def write_checkpoint(path, config: dict | None = None, train: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    recorded = {"model": config if config is not None else ModelConfig().to_dict()}
    if train is not None:
        recorded["train"] = train
    save_checkpoint(path, {"net_state_dict": ICNN_s().state_dict(), "config": recorded, "format_version": 1})
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pth")


@pytest.fixture(scope="module")
def torch_test():
    return load_script(SCRIPT, "torch_test_script")


def run(run_main, torch_test, checkpoint, *argv):
    return run_main(torch_test, ["--weights", checkpoint, "--device", "cpu", *argv])


def test_cli_convention(run_main, torch_test):
    code, out, _ = run_main(torch_test, ["--help"])
    assert code == 0
    for flag in ["--weights", "--bn-mode", "--random", "--n", "--seed", "--sigma", "--device", "--threads", "--input",
                 "--output", "--json", "--fig-dir", "--samples", "--plots"]:
        assert flag in out
    assert "--checkpoint" not in out
    args = torch_test.get_args([])
    assert (args.n, args.seed, args.random, args.fig_dir) == (2000, 2026, False, torch_test.cli.DEFAULT_FIG_DIR)
    assert not args.fig_dir.is_absolute()  # under the current folder, never a tracked one


def test_figure_mode_writes_one_png_per_sample(run_main, torch_test, checkpoint, tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ["Test0_data.txt", "Test0_label.txt", "Test3_data.txt", "Test3_label.txt"]:
        shutil.copy(REPO_ROOT / "TestSamples" / name, samples / name)
    code, out, err = run(run_main, torch_test, checkpoint, "--samples", samples, "--fig-dir", tmp_path / "figs")
    assert code == 0, err
    written = [tmp_path / "figs" / name for name in output_names(tmp_path / "figs")]
    assert [p.name for p in written] == ["Test0_torch.png", "Test3_torch.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_figures_default_to_runs_figures_under_the_current_folder(checkpoint, tmp_path):
    result = run_script(SCRIPT, "--weights", checkpoint, "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert output_names(tmp_path / "runs" / "figures") == [f"Test{k}_torch.png" for k in range(6)]


def test_random_mode_json_keys(run_main, torch_test, checkpoint, tmp_path):
    code, out, err = run(run_main, torch_test, checkpoint, "--random", "--n", 40, "--seed", 3, "--json",
                         tmp_path / "r.json", "--plots", "--fig-dir", tmp_path)
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["sigma"], result["n"], result["seed"], result["backend"]) == (3.0, 40, 3, "PyTorch")
    assert result["weights"] == str(checkpoint)
    assert set(result["methods"]) == ALL_METHODS
    for name in ["net (fixed BN)", "net (unfixed BN)", "wiener", "l1", "gmc", "soft (T = σ)", "bayes"]:
        assert f"| {name} |" in out
    assert (tmp_path / "methods_torch.png").is_file() and (tmp_path / "filter_torch.png").is_file()


def test_bn_mode_restricts_rows(run_main, torch_test, checkpoint):
    code, out, err = run_main(torch_test, ["--weights", checkpoint, "--device", "cpu", "--random", "--n", 5,
                                           "--bn-mode", "unfixed"])
    assert code == 0, err
    assert "| net (unfixed BN) |" in out and "| net (fixed BN) |" not in out


def test_the_checkpoint_spelling_is_gone(run_main, torch_test):
    code, _, err = run_main(torch_test, ["--checkpoint", "c.pth"])
    assert code == 2 and "unrecognized arguments: --checkpoint" in err


def test_sigma_auto_in_random_mode(run_main, torch_test, checkpoint, tmp_path):
    code, out, err = run(run_main, torch_test, checkpoint, "--random", "--n", 30, "--sigma", "auto",
                         "--json", tmp_path / "r.json")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sigma"] == 3.0 and report["classical_sigma"] == "estimated"


@pytest.mark.parametrize("shape", [(100,), (5, 100), (3, 77)])
def test_npy_in_npy_out_same_shape_and_values(run_main, torch_test, checkpoint, tmp_path, shape):
    noisy = np.random.default_rng(1).normal(size=shape) * 3
    np.save(tmp_path / "in.npy", noisy)
    out_path = tmp_path / "new" / "folder" / "out.npy"  # a missing folder is created
    code, _, err = run(run_main, torch_test, checkpoint, "--method", "net", "--input", tmp_path / "in.npy", "--output", out_path,
                       "--bn-mode", "unfixed")
    assert code == 0, err
    denoised = np.load(out_path)
    assert denoised.shape == shape and denoised.dtype == np.float64
    model, _ = load_model(checkpoint)
    np.testing.assert_allclose(np.atleast_2d(denoised), denoise(model, np.atleast_2d(noisy), "unfixed"), atol=1e-6)


def test_float32_in_float32_out(run_main, torch_test, checkpoint, tmp_path):
    noisy = (np.random.default_rng(5).normal(size=(7, 100)) * 3).astype(np.float32)
    np.save(tmp_path / "in.npy", noisy)
    code, out, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "in.npy", "--output", tmp_path / "o.npy")
    assert code == 0, err
    assert np.load(tmp_path / "o.npy").dtype == np.float32 and "(float32)" in out


def test_txt_in_txt_out_and_bn_modes_differ(run_main, torch_test, checkpoint, tmp_path):
    signal = np.random.default_rng(2).normal(size=100) * 3
    (tmp_path / "in.txt").write_text("".join(f"{v}\n" for v in signal))
    outputs = {}
    for bn in BN_MODES:
        code, _, err = run(run_main, torch_test, checkpoint, "--method", "net", "--input", tmp_path / "in.txt", "--output",
                           tmp_path / f"out_{bn}.txt", "--bn-mode", bn)
        assert code == 0, err
        outputs[bn] = np.loadtxt(tmp_path / f"out_{bn}.txt")
        assert outputs[bn].shape == (100,)
    assert not np.allclose(outputs["fixed"], outputs["unfixed"])


def test_rows_txt_in_gives_rows_txt_out(run_main, torch_test, checkpoint, tmp_path):
    noisy = np.random.default_rng(3).normal(size=(4, 64)) * 3
    np.savetxt(tmp_path / "in.txt", noisy)  # one signal per row
    code, _, err = run(run_main, torch_test, checkpoint, "--method", "net", "--input", tmp_path / "in.txt", "--output", tmp_path / "o.txt")
    assert code == 0, err
    model, _ = load_model(checkpoint)
    np.testing.assert_allclose(np.loadtxt(tmp_path / "o.txt"), denoise(model, noisy), atol=1e-6)


def test_truncated_checkpoint(run_main, torch_test, checkpoint, tmp_path):
    data = checkpoint.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    code, _, err = run(run_main, torch_test, tmp_path / "cut.pth", "--random", "--n", 5)
    assert_one_line_error(code, err, "cut.pth")


def test_missing_checkpoint(run_main, torch_test, tmp_path):
    code, _, err = run(run_main, torch_test, tmp_path / "none.pth", "--random", "--n", 5)
    assert_one_line_error(code, err, "none.pth", "no such", "train.py")


def test_checkpoint_shape_mismatch_names_key_and_shapes(run_main, torch_test, checkpoint, tmp_path):
    state = ICNN_s().state_dict()
    state["outc.conv.weight"] = torch.zeros(1, 3, 1)
    save_checkpoint(tmp_path / "bad.pth", {"net_state_dict": state})
    code, _, err = run(run_main, torch_test, tmp_path / "bad.pth", "--random", "--n", 5)
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
    result = run_script(SCRIPT, "--weights", tmp_path / "evil.pth", "--device", "cpu", "--random", "--n", 5, cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "evil.pth")
    assert not marker.exists()


def test_runs_from_any_directory(checkpoint, tmp_path):
    result = run_script(SCRIPT, "--weights", checkpoint, "--device", "cpu", "--random", "--n", 10, "--json", "r.json",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(json.loads((tmp_path / "r.json").read_text())["methods"]) == ALL_METHODS


def test_short_signal(run_main, torch_test, checkpoint, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((2, MIN_LENGTH - 1)))
    code, _, err = run(run_main, torch_test, checkpoint, "--method", "net", "--input", tmp_path / "short.npy", "--output", tmp_path / "o.npy")
    assert_one_line_error(code, err, "short.npy", str(MIN_LENGTH))
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("bad, fragment", [(np.inf, "non-finite"), (1e39, "float32")])  # a NaN is a gap (test_gaps.py)
def test_bad_value_is_named_and_nothing_is_written(run_main, torch_test, checkpoint, tmp_path, bad, fragment):
    noisy = np.zeros((4, 100))
    noisy[2, 40] = bad
    np.save(tmp_path / "in.npy", noisy)
    code, _, err = run(run_main, torch_test, checkpoint, "--method", "net", "--input", tmp_path / "in.npy", "--output",
                       tmp_path / "new" / "o.npy")
    assert_one_line_error(code, err, "signal 2", "index 40", fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


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


@pytest.mark.parametrize("spelling", ["same", "symlink", "hardlink"])
@pytest.mark.parametrize("mode", ["random", "input"])
def test_json_over_the_weights_is_refused(run_main, torch_test, tmp_path, spelling, mode):
    """`test.py --weights c.pth --random 3 --json c.pth` once turned the checkpoint into JSON."""
    weights = write_checkpoint(tmp_path / "c.pth")
    original = weights.read_bytes()
    target = {"same": weights, "symlink": tmp_path / "l.json", "hardlink": tmp_path / "h.json"}[spelling]
    if spelling == "symlink":
        target.symlink_to(weights)
    elif spelling == "hardlink":
        os.link(weights, target)
    np.save(tmp_path / "in.npy", np.zeros((2, 100)))
    extra = ["--random", "--n", 3] if mode == "random" else ["--input", tmp_path / "in.npy", "--output", tmp_path / "o.npy"]
    code, _, err = run_main(torch_test, ["--weights", weights, "--device", "cpu", *extra, "--json", target])
    assert_one_line_error(code, err, "refusing to overwrite", "c.pth")
    assert weights.read_bytes() == original
    assert not (tmp_path / "o.npy").exists()


def test_json_over_the_input_is_refused(run_main, torch_test, checkpoint, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((2, 100)))
    original = (tmp_path / "in.npy").read_bytes()
    code, _, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "in.npy", "--output", tmp_path / "o.npy",
                       "--json", tmp_path / "in.npy")
    assert_one_line_error(code, err, "refusing to overwrite")
    assert (tmp_path / "in.npy").read_bytes() == original


@pytest.mark.parametrize("flag", ["--output", "--json"])
def test_output_parent_is_a_file(run_main, torch_test, checkpoint, tmp_path, flag):
    np.save(tmp_path / "in.npy", np.zeros((2, 100)))
    (tmp_path / "afile").write_text("x")
    out = {"--output": tmp_path / "afile" / "o.npy", "--json": tmp_path / "o.npy"}
    json_path = tmp_path / "afile" / "r.json" if flag == "--json" else tmp_path / "r.json"
    code, _, err = run(run_main, torch_test, checkpoint, "--input", tmp_path / "in.npy", "--output", out[flag],
                       "--json", json_path)
    assert_one_line_error(code, err, "afile")
    assert (tmp_path / "afile").read_text() == "x"


def test_input_mode_json_summary(run_main, torch_test, checkpoint, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((3, 100), dtype=np.float32))
    code, _, err = run(run_main, torch_test, checkpoint, "--method", "net", "--input", tmp_path / "in.npy", "--output", tmp_path / "o.npy",
                       "--json", tmp_path / "s.json")
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["n"], summary["length"], summary["dtype"], summary["bn_mode"]) == (3, 100, "float32", "fixed")


def test_progress_lines_when_stderr_is_not_a_terminal(checkpoint, tmp_path):
    noisy = (np.random.default_rng(6).normal(size=(9000, 32)) * 3).astype(np.float32)  # more than one chunk
    np.save(tmp_path / "in.npy", noisy)
    result = run_script(SCRIPT, "--weights", checkpoint, "--device", "cpu", "--method", "net", "--input", "in.npy", "--output", "o.npy",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("denoising:")]
    assert lines and lines[-1].startswith("denoising: 9000/9000")
    assert "\r" not in result.stderr
    assert np.load(tmp_path / "o.npy").shape == (9000, 32)


# --- the out-of-range σ warning ---------------------------------------------------------------------


def warnings_of(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "warning" in ln]


BEFORE_SIGMA_RANGE = {k: v for k, v in ModelConfig().to_dict().items() if k != "sigma_range"}  # files older than the field


@pytest.mark.parametrize("config, train, sigma, warned", [
    ({**ModelConfig().to_dict(), "sigma_range": [0.5, 5.0]}, None, 8.0, True),
    ({**ModelConfig().to_dict(), "sigma_range": [0.5, 5.0]}, None, 2.0, False),
    (BEFORE_SIGMA_RANGE, {"sigma": 3.0}, 8.0, True),  # older checkpoint: the recorded training sigma
    (BEFORE_SIGMA_RANGE, {"sigma": 3.0}, 3.0, False),
    (ModelConfig().to_dict(), {"sigma": 1.0}, 8.0, False),  # a recorded None (an adapted blind model's) stands
    (ModelConfig().to_dict(), None, 8.0, False),  # nothing recorded: nothing to compare with
])
def test_out_of_range_warning(run_main, torch_test, tmp_path, config, train, sigma, warned):
    weights = write_checkpoint(tmp_path / "w.pth", config, train)
    np.save(tmp_path / "in.npy", benchmark_signals(9, 300, sigma)[1])
    code, out, err = run_main(torch_test, ["--weights", weights, "--device", "cpu", "--method", "net", "--input", tmp_path / "in.npy",
                                           "--output", tmp_path / "o.npy"])
    assert code == 0, err
    # a random-weight network may also move the record by more than its noise: that warning is another test's
    lines = [line for line in warnings_of(err) if "moved the record" not in line]
    if warned:
        assert len(lines) == 1, err
        assert lines[0].startswith("test.py: warning:") and "of 300 signal" in lines[0] and "above" in lines[0]
    else:
        assert lines == [], err
    assert np.load(tmp_path / "o.npy").shape == (300, 100)  # a warning, not a refusal


def test_out_of_range_warning_in_random_mode(run_main, torch_test, tmp_path):
    weights = write_checkpoint(tmp_path / "w.pth", {**ModelConfig().to_dict(), "sigma_range": [3.0, 3.0]})
    code, _, err = run_main(torch_test, ["--weights", weights, "--device", "cpu", "--random", "--n", 200, "--sigma", 6])
    assert code == 0 and len(warnings_of(err)) == 1, err
    code, _, err = run_main(torch_test, ["--weights", weights, "--device", "cpu", "--random", "--n", 200])
    assert code == 0 and warnings_of(err) == [], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda(run_main, torch_test, checkpoint):
    code, _, err = run_main(torch_test, ["--weights", checkpoint, "--device", "cuda", "--random", "--n", 5])
    assert_one_line_error(code, err, "CUDA")


# --- bad signal files and outputs through a link ------------------------------------------------------


TORCH_BAD_SIGNALS = ["txt_nan", "txt_inf", "short_txt", "blank_txt", "empty_npy", "npy_no_signals"]  # the rest: tests above


@pytest.mark.parametrize("case", TORCH_BAD_SIGNALS)
def test_bad_signal_file(case, run_main, torch_test, checkpoint, tmp_path):
    path = write_bad_signal(tmp_path, case)
    out = tmp_path / "out" / ("o" + path.suffix)  # in a missing folder: must not be created for bad input
    before = listing(tmp_path)
    code, _, err = run(run_main, torch_test, checkpoint, "--method", "net", "--input", path, "--output", out)
    assert_one_line_error(code, err, path.name, *BAD_SIGNAL_FRAGMENTS[case])
    assert listing(tmp_path) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spelling", ["symlink", "hardlink"])  # the same file, dotted: test_output_may_not_overwrite_input
def test_output_may_not_overwrite_input_through_a_link(spelling, run_main, torch_test, checkpoint, tmp_path):
    noisy = np.random.default_rng(4).normal(size=(2, 100))
    src = tmp_path / "in.npy"
    np.save(src, noisy)
    original = src.read_bytes()
    if spelling == "symlink":
        out = tmp_path / "link.npy"
        out.symlink_to(src)
    else:
        out = tmp_path / "hard.npy"
        os.link(src, out)
    before = listing(tmp_path)
    code, _, err = run(run_main, torch_test, checkpoint, "--input", src, "--output", out)
    assert_one_line_error(code, err, "overwrite")
    assert src.read_bytes() == original
    assert listing(tmp_path) == before


def test_cuda_saved_checkpoint_denoises_on_the_cpu(run_main, torch_test, tmp_path):
    """A CUDA-saved checkpoint loads on the CPU (it must load, not fail); pth2h5.py: test_pth2h5.py."""
    torch.manual_seed(2)
    model = ICNN_s()
    write_cuda_checkpoint(tmp_path / "cuda.pth", {"epoch": 3, "net_state_dict": model.state_dict(), "loss": 1.0})
    np.save(tmp_path / "in.npy", np.random.default_rng(0).normal(size=(2, 100)))
    code, _, err = run_main(torch_test, ["--weights", tmp_path / "cuda.pth", "--device", "cpu", "--input",
                                         tmp_path / "in.npy", "--output", tmp_path / "out.npy"])
    assert code == 0, err
    assert np.load(tmp_path / "out.npy").shape == (2, 100)


# ---------------------------------------------------------------------------
# --method: the label-free scoreboard, the same in test.py and Numpy_test.py


def test_method_auto_matches_numpy_test_and_net_unfixed_is_the_network_in_that_mode(run_main, torch_test, tmp_path):
    pywt = pytest.importorskip("pywt")
    from icnn.shipped import default_weights

    clean = pywt.data.demo_signal("Doppler", 1024)
    sigma = float(clean.std() / 7)
    np.save(tmp_path / "rec.npy", (clean + sigma * np.random.default_rng(8).standard_normal(1024)).astype(np.float32))
    common = ["--input", tmp_path / "rec.npy", "--method", "auto", "--sigma", sigma]
    code, out, err = run_main(torch_test, ["--weights", default_weights(".pth"), "--device", "cpu", *common,
                                           "--output", tmp_path / "t.npy", "--json", tmp_path / "t.json"])
    assert code == 0, err
    numpy_test = load_script(REPO_ROOT / "Numpy_V2" / "Numpy_test.py", "numpy_test_for_method")
    code, _, err = run_main(numpy_test, ["--weights", default_weights(".h5"), *common,
                                         "--output", tmp_path / "n.npy", "--json", tmp_path / "n.json"])
    assert code == 0, err
    torch_report, numpy_report = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "tn")
    assert torch_report["chosen"] == numpy_report["chosen"] and f"| {torch_report['chosen']} * |" in out
    for name, value in torch_report["estimates"].items():  # classical: the same code; networks: float32 apart
        assert value == pytest.approx(numpy_report["estimates"][name], rel=0 if not name.startswith("net_") else 1e-3)
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), np.load(tmp_path / "n.npy"))
    for argv, name in ((["--method", "net_unfixed"], "m.npy"), (["--method", "net", "--bn-mode", "unfixed"], "d.npy")):
        code, _, err = run_main(torch_test, ["--weights", default_weights(".pth"), "--device", "cpu", "--input",
                                             tmp_path / "rec.npy", "--output", tmp_path / name, *argv])
        assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), np.load(tmp_path / "d.npy"))


def test_a_long_record_is_denoised_in_windows_like_numpy(run_main, torch_test, checkpoint, tmp_path):
    record = (np.random.default_rng(6).normal(size=(777,)) * 3).astype(np.float32)
    np.save(tmp_path / "rec.npy", record)
    code, out, err = run(run_main, torch_test, checkpoint, "--method", "net", "--input", tmp_path / "rec.npy", "--output",
                         tmp_path / "o.npy", "--plot", tmp_path / "p.png", "--plot-range", "100:600")
    assert code == 0, err
    assert "in windows of 100" in out
    model, _ = load_model(checkpoint, torch.device("cpu"))
    denoised = np.load(tmp_path / "o.npy")
    assert denoised.shape == (777,)
    np.testing.assert_allclose(denoised, denoise(model, record[None])[0], rtol=0, atol=1e-6)
    assert (tmp_path / "p.png").stat().st_size > 0


def test_pytorch_front_end_prints_sigma_under_an_ascii_locale(tmp_path):
    import subprocess
    import sys

    np.save(tmp_path / "in.npy", benchmark_signals(32, 3, 3.0)[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONIOENCODING": "ascii"}
    for args in (["--input", "in.npy", "--output", "out.npy"], ["--random", "--n", "5", "--sigma", "auto"]):
        result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, encoding="ascii", errors="strict", timeout=300)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert "\\u03c3 estimated per signal" in result.stderr

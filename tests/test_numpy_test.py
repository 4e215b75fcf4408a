"""Numpy_V2/Numpy_test.py: the NumPy test front-end's command line.

Runs with torch unimportable, figures, table, JSON, bad input, streaming, the out-of-range σ
warning; and the same seed giving the same table in test.py, Numpy_test.py and scripts/results.py.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import (BAD_SIGNAL_FRAGMENTS, REPO_ROOT, assert_one_line_error, listing, load_script, output_names,
                      run_script, write_bad_signal)
from deepdenoise1d.synthesis import benchmark_signals
from icnn.shipped import default_weights

SCRIPT = REPO_ROOT / "Numpy_V2" / "Numpy_test.py"
CLASSICAL = {"wiener", "l1", "gmc", "wavelet", "soft", "bayes"}
SCORE_KEYS = {"rmse", "rmse_ci95", "psnr_paper", "psnr", "seconds_per_signal"}


@pytest.fixture
def numpy_test(tmp_path, monkeypatch):
    """The script as a module, its default weights pointed at a file that does not exist."""
    module = load_script(SCRIPT, "numpy_test_script")
    monkeypatch.setattr(module, "default_weights_for", lambda suffix, record: tmp_path / "absent" / f"ckpt{suffix}")
    return module


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight checkpoint and its .h5 (pth2h5.py), recording sigma_range [3, 3]."""
    torch = pytest.importorskip("torch")
    from Pytorch_V1.checkpoint import save_checkpoint
    from Pytorch_V1.model import ICNN_s, ModelConfig

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    config = {**ModelConfig().to_dict(), "sigma_range": [3.0, 3.0]}
    save_checkpoint(folder / "w.pth", {"net_state_dict": ICNN_s().state_dict(), "config": {"model": config},
                                       "format_version": 1})
    load_script(REPO_ROOT / "pth2h5.py", "pth2h5_for_numpy_cli").convert(folder / "w.pth", folder / "w.h5")
    return folder / "w.pth", folder / "w.h5"


def test_random_table_and_json_with_torch_unimportable(tmp_path):
    result = run_script(SCRIPT, "--random", "--n", 60, "--sigma", 3, "--seed", 7, "--json", tmp_path / "r.json",
                        "--plots", "--fig-dir", tmp_path / "figs", cwd=tmp_path, block_torch=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"sigma", "n", "seed", "methods", "backend"} <= set(report)
    assert (report["sigma"], report["n"], report["seed"], report["backend"]) == (3.0, 60, 7, "NumPy")
    # With the repository's weights present the network rows come too; without, classical only.
    assert CLASSICAL <= set(report["methods"]) <= CLASSICAL | {"net_fixed", "net_unfixed"}
    for scores in report["methods"].values():
        assert set(scores) == SCORE_KEYS
    assert "| soft (T = σ) |" in result.stdout and "| wiener |" in result.stdout
    assert (tmp_path / "figs" / "methods_numpy.png").is_file()
    assert (tmp_path / "figs" / "filter_numpy.png").is_file()


def test_figures_classical_only_without_default_weights(numpy_test, run_main, tmp_path):
    code, out, err = run_main(numpy_test, ["--fig-dir", tmp_path / "figs"])
    assert code == 0, err
    assert "classical methods only" in err and "pth2h5.py" in err and len(err.strip().splitlines()) == 1
    assert output_names(tmp_path / "figs") == [f"Test{k}_numpy.png" for k in range(6)]


def test_figures_default_to_runs_figures_under_the_current_folder(weights, tmp_path):
    result = run_script(SCRIPT, "--weights", weights[1], cwd=tmp_path, block_torch=True)
    assert result.returncode == 0, result.stderr
    assert output_names(tmp_path / "runs" / "figures") == [f"Test{k}_numpy.png" for k in range(6)]


def test_random_classical_keys_without_default_weights(numpy_test, run_main, tmp_path):
    code, out, err = run_main(numpy_test, ["--random", "--n", 20, "--seed", 1, "--json", tmp_path / "r.json"])
    assert code == 0, err
    assert list(json.loads((tmp_path / "r.json").read_text())["methods"]) == ["wiener", "l1", "gmc", "wavelet", "soft", "bayes"]


def test_help_explains_every_flag(numpy_test, run_main):
    code, out, _ = run_main(numpy_test, ["--help"])
    assert code == 0
    for flag in ["--weights", "--bn-mode", "--random", "--n", "--seed", "--sigma", "--threads", "--input", "--output",
                 "--json", "--fig-dir", "--samples", "--plots"]:
        assert flag in out
    args = numpy_test.get_args([])
    assert (args.n, args.seed) == (2000, 2026)


def test_explicit_missing_weights_says_how_to_make_them(numpy_test, run_main, tmp_path):
    code, _, err = run_main(numpy_test, ["--weights", tmp_path / "ckpt_blind.h5", "--random", "--n", 5])
    assert_one_line_error(code, err, "ckpt_blind.h5", "no such", "pth2h5.py SRC.pth")
    (tmp_path / "ckpt_blind.pth").write_bytes(b"x")  # the source exists: the hint names it
    code, _, err = run_main(numpy_test, ["--weights", tmp_path / "ckpt_blind.h5", "--random", "--n", 5])
    assert_one_line_error(code, err, f"pth2h5.py {tmp_path / 'ckpt_blind.pth'} {tmp_path / 'ckpt_blind.h5'}")


def test_input_needs_weights(numpy_test, run_main, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((2, 100)))
    code, _, err = run_main(numpy_test, ["--method", "net", "--input", tmp_path / "in.npy", "--output", tmp_path / "out.npy"])
    assert_one_line_error(code, err, "weights")
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("argv", [["--random", "--input", "a.npy", "--output", "b.npy"], ["--input", "a.npy"],
                                  ["--json", "r.json"], ["--plots"], ["--random", "7"],
                                  ["--input", "a.npy", "--output", "b.npy", "--sigma", "3"],
                                  ["--random", "--n", "0"], ["--random", "--seed", "-1"], ["--random", "--sigma", "0"],
                                  ["--random", "--sigma", "nan"], ["--threads", "0"]])
def test_bad_flags_are_refused(numpy_test, run_main, argv):
    code, _, err = run_main(numpy_test, argv)
    assert code == 2 and "Traceback" not in err


def test_bad_samples_folder(numpy_test, run_main, tmp_path):
    code, _, err = run_main(numpy_test, ["--samples", tmp_path / "nothing", "--fig-dir", tmp_path / "figs"])
    assert_one_line_error(code, err.strip().splitlines()[-1], "no TestK_data.txt")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_keeps_float_dtype(numpy_test, run_main, weights, tmp_path, dtype):
    np.save(tmp_path / "in.npy", (np.random.default_rng(0).normal(size=(5, 100)) * 3).astype(dtype))
    code, out, err = run_main(numpy_test, ["--weights", weights[1], "--input", tmp_path / "in.npy",
                                           "--output", tmp_path / "o.npy"])
    assert code == 0, err
    assert np.load(tmp_path / "o.npy").dtype == dtype and f"({np.dtype(dtype).name})" in out


def test_rows_txt_input(numpy_test, run_main, weights, tmp_path):
    noisy = np.random.default_rng(3).normal(size=(4, 64)) * 3
    np.savetxt(tmp_path / "in.txt", noisy)  # np.savetxt of (N, L): one signal per row
    code, _, err = run_main(numpy_test, ["--weights", weights[1], "--input", tmp_path / "in.txt",
                                         "--output", tmp_path / "o.npy"])
    assert code == 0, err
    assert np.load(tmp_path / "o.npy").shape == (4, 64)


def test_value_beyond_float32_is_one_line(numpy_test, run_main, weights, tmp_path):
    noisy = np.zeros((3, 100))
    noisy[1, 5] = 1e39
    np.save(tmp_path / "in.npy", noisy)
    code, _, err = run_main(numpy_test, ["--weights", weights[1], "--method", "net", "--input", tmp_path / "in.npy",
                                         "--output", tmp_path / "out" / "o.npy"])
    assert_one_line_error(code, err, "signal 1", "index 5", "float32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


@pytest.mark.parametrize("which", ["weights", "input"])
def test_json_over_what_it_reads_is_refused(numpy_test, run_main, weights, tmp_path, which):
    """`Numpy_test.py --weights c.h5 --json c.h5` once turned the weights into JSON."""
    h5 = tmp_path / "c.h5"
    h5.write_bytes(weights[1].read_bytes())
    np.save(tmp_path / "in.npy", np.zeros((2, 100)))
    target = h5 if which == "weights" else tmp_path / "in.npy"
    original = target.read_bytes()
    for mode in (["--random", "--n", 3], ["--input", tmp_path / "in.npy", "--output", tmp_path / "o.npy"]):
        if which == "input" and mode[0] == "--random":
            continue
        code, _, err = run_main(numpy_test, ["--weights", h5, *mode, "--json", target])
        assert_one_line_error(code, err, "refusing to overwrite")
        assert target.read_bytes() == original


def test_figure_over_the_weights_is_refused(numpy_test, run_main, weights, tmp_path):
    h5 = tmp_path / "figs" / "Test0_numpy.png"  # weights that happen to sit where a figure would go
    h5.parent.mkdir()
    h5.write_bytes(weights[1].read_bytes())
    code, _, err = run_main(numpy_test, ["--weights", h5, "--fig-dir", tmp_path / "figs"])
    assert_one_line_error(code, err, "refusing to overwrite")
    assert h5.read_bytes() == weights[1].read_bytes()


def test_progress_lines_when_stderr_is_not_a_terminal(weights, tmp_path):
    np.save(tmp_path / "in.npy", (np.random.default_rng(6).normal(size=(9000, 32)) * 3).astype(np.float32))
    result = run_script(SCRIPT, "--weights", weights[1], "--method", "net", "--input", "in.npy", "--output", "o.npy", cwd=tmp_path,
                        block_torch=True)
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("denoising:")]
    assert lines and lines[-1].startswith("denoising: 9000/9000") and "\r" not in result.stderr


@pytest.mark.parametrize("sigma, warned", [(3.0, False), (8.0, True)])
def test_out_of_range_warning(numpy_test, run_main, weights, tmp_path, sigma, warned):
    np.save(tmp_path / "in.npy", benchmark_signals(9, 300, sigma)[1])
    code, _, err = run_main(numpy_test, ["--weights", weights[1], "--method", "net", "--input", tmp_path / "in.npy",
                                         "--output", tmp_path / "o.npy"])
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(lines) == int(warned), err
    if warned:
        assert lines[0].startswith("Numpy_test.py: warning:") and "trained on noise σ 3" in lines[0]


def test_network_matches_pytorch(weights, tmp_path, run_main):
    """Denoise a file with both front-ends from the same weights, and compare."""
    noisy = np.random.default_rng(0).normal(size=(4, 100)) * 3
    np.save(tmp_path / "in.npy", noisy)
    numpy_test = load_script(SCRIPT, "numpy_test_script")
    torch_test = load_script(REPO_ROOT / "Pytorch_V1" / "test.py", "torch_test_script")
    for bn in ["fixed", "unfixed"]:
        code, _, err = run_main(numpy_test, ["--weights", weights[1], "--input", tmp_path / "in.npy",
                                             "--output", tmp_path / f"np_{bn}.npy", "--bn-mode", bn])
        assert code == 0, err
        code, _, err = run_main(torch_test, ["--weights", weights[0], "--device", "cpu", "--input",
                                             tmp_path / "in.npy", "--output", tmp_path / f"pt_{bn}.npy", "--bn-mode", bn])
        assert code == 0, err
        np.testing.assert_allclose(np.load(tmp_path / f"np_{bn}.npy"), np.load(tmp_path / f"pt_{bn}.npy"), atol=1e-4)


# --- one seed, one set of signals, one table ----------------------------------------------------------


def table_rows(text: str) -> dict[str, list[str]]:
    """``{row name: [RMSE ± CI, vs Bayes, paper PSNR, PSNR]}`` of a Markdown table (timings dropped)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 5 and re.match(r"^-?\d+\.\d{4} ± ", cells[1]):
            rows[cells[0]] = cells[1:5]
    return rows


def test_same_seed_same_signals_same_rows_in_all_three_scripts(weights, tmp_path, run_main):
    seed, n = 31, 60
    numpy_test = load_script(SCRIPT, "numpy_test_script")
    torch_test = load_script(REPO_ROOT / "Pytorch_V1" / "test.py", "torch_test_script")
    results = load_script(REPO_ROOT / "scripts" / "results.py", "results_script")
    flags = ["--random", "--n", n, "--seed", seed]
    code, np_out, err = run_main(numpy_test, ["--weights", weights[1], *flags])
    assert code == 0, err
    code, pt_out, err = run_main(torch_test, ["--weights", weights[0], "--device", "cpu", *flags])
    assert code == 0, err
    from Pytorch_V1.checkpoint import load_model

    lines, *_ = results.sigma3_section({"net": load_model(weights[0])}, seed, n)
    res_rows = table_rows("\n".join(lines))
    np_rows, pt_rows = table_rows(np_out), table_rows(pt_out)
    names = ["net (fixed BN)", "net (unfixed BN)", "wiener", "l1", "gmc", "wavelet (BayesShrink)", "soft (T = σ)", "bayes"]
    assert list(np_rows) == list(pt_rows) == list(res_rows) == names
    assert np_rows == pt_rows == res_rows  # same values to the printed decimals
    # The signals are the shared held-out draw: a different seed gives different rows.
    code, other, _ = run_main(numpy_test, ["--weights", weights[1], "--random", "--n", n, "--seed", seed + 1])
    assert table_rows(other)["wiener"] != np_rows["wiener"]
    assert benchmark_signals(seed, n, 3.0)[1].shape == (n, 100)


def test_json_and_output_naming_one_file_is_one_line(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 100), np.float32))
    done = run_script(SCRIPT, "--input", tmp_path / "x.npy", "--output", tmp_path / "o.npy",
                      "--json", tmp_path / "o.npy", cwd=tmp_path, block_torch=True)
    assert_one_line_error(done.returncode, done.stderr, "--json and --output name the same file")
    assert not (tmp_path / "o.npy").exists()


# Hostile and broken inputs: weights files, signal files and output paths.
# The PyTorch side builds the weights these tests convert; the command under test never imports torch.
PTH2H5 = REPO_ROOT / "pth2h5.py"


NUMPY_TEST = REPO_ROOT / "Numpy_V2" / "Numpy_test.py"


@pytest.fixture(scope="module")
def pth2h5_main():
    return load_script(PTH2H5, "pth2h5_script_reliability")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from Pytorch_V1.checkpoint import save_checkpoint
    from Pytorch_V1.model import ICNN_s, ModelConfig

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "w.pth"
    save_checkpoint(path, {"net_state_dict": ICNN_s().state_dict(), "config": {"model": ModelConfig().to_dict()},
                           "format_version": 1})
    return path


@pytest.fixture(scope="module")
def weights_h5(pth2h5_main, random_checkpoint):
    path = random_checkpoint.with_name("w.h5")
    pth2h5_main.convert(random_checkpoint, path)
    return path


# ---------------------------------------------------------------------------
# Numpy_test.py --weights: bad HDF5 files


@pytest.fixture(scope="module")
def numpy_test_main():
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
def test_numpy_test_bad_weights(numpy_test_main, run_main, weights_h5, tmp_path, case, fragments):
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
    code, _, err = run_main(numpy_test_main, ["--weights", bad, "--input", tmp_path / "in.npy",
                                         "--output", tmp_path / "out" / "o.npy"])
    assert_one_line_error(code, err, *fragments)
    assert listing(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_numpy_test_bad_weights_in_random_mode(numpy_test_main, run_main, weights_h5, tmp_path):
    data = weights_h5.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    code, _, err = run_main(numpy_test_main, ["--weights", tmp_path / "cut.h5", "--random", "--n", 5, "--json", tmp_path / "r.json"])
    assert_one_line_error(code, err, "cut.h5")
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------
# bad signals and output paths


@pytest.mark.parametrize("case", list(BAD_SIGNAL_FRAGMENTS))
def test_bad_signal_file(case, numpy_test_main, run_main, weights_h5, tmp_path):
    path = write_bad_signal(tmp_path, case)
    out = tmp_path / "out" / ("o" + path.suffix)  # in a missing folder: must not be created for bad input
    before = listing(tmp_path)
    code, _, err = run_main(numpy_test_main, ["--weights", weights_h5, "--method", "net", "--input", path, "--output", out])
    assert_one_line_error(code, err, path.name, *BAD_SIGNAL_FRAGMENTS[case])
    assert listing(tmp_path) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".npy", ".txt"])
def test_numpy_test_output_in_missing_folder_is_created(numpy_test_main, run_main, weights_h5, tmp_path, suffix):
    noisy = np.random.default_rng(3).normal(size=100) * 3
    src = tmp_path / f"in{suffix}"
    if suffix == ".npy":
        np.save(src, noisy)
    else:
        src.write_text("".join(f"{float(v)!r}\n" for v in noisy))
    out = tmp_path / "a" / "b" / f"out{suffix}"
    code, _, err = run_main(numpy_test_main, ["--weights", weights_h5, "--input", src, "--output", out, "--bn-mode", "unfixed"])
    assert code == 0, err
    result = np.load(out) if suffix == ".npy" else np.loadtxt(out)
    assert result.shape == (100,) and np.isfinite(result).all()


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_output_may_not_overwrite_input(spelling, numpy_test_main, run_main, weights_h5, tmp_path):
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
    code, _, err = run_main(numpy_test_main, ["--weights", weights_h5, "--input", src, "--output", out])
    assert_one_line_error(code, err, "overwrite")
    assert src.read_bytes() == original
    assert listing(tmp_path) == before


# ---------------------------------------------------------------------------
# --method: the label-free scoreboard (deepdenoise1d.scoreboard) picks the denoiser for one record


def bumps_record(path: Path, n: int = 2048, seed: int = 3) -> tuple[np.ndarray, float]:
    """pywt's Bumps plus noise at rsnr 7, saved as float32 .npy; returns the saved record and σ."""
    pywt = pytest.importorskip("pywt")
    clean = pywt.data.demo_signal("Bumps", n)
    sigma = float(clean.std() / 7)
    noisy = (clean + sigma * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)
    np.save(path, noisy)
    return noisy.astype(np.float64), sigma


def shipped_h5() -> Path:
    from icnn.shipped import default_weights

    return default_weights(".h5")


def test_method_auto_prints_the_table_and_writes_the_chosen_candidate(numpy_test_main, run_main, tmp_path):
    from deepdenoise1d import scoreboard

    noisy, sigma = bumps_record(tmp_path / "rec.npy")
    code, out, err = run_main(numpy_test_main, ["--weights", shipped_h5(), "--input", tmp_path / "rec.npy",
                                                "--output", tmp_path / "out.npy", "--method", "auto",
                                                "--sigma", sigma, "--json", tmp_path / "r.json"])
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    names = set(scoreboard.candidate_names(("fixed", "unfixed")))
    assert set(report["estimates"]) == names and report["sigma"] == sigma and report["sigma_source"] == "given"
    chosen = report["chosen"]
    assert report["estimates"][chosen] == min(report["estimates"].values())
    assert f"| {chosen} * |" in out and all(f"| {name}" in out for name in names)
    expected = scoreboard.classical_candidates(sigma)[chosen](noisy).astype(np.float32)  # the networks lose here
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_method_name_writes_that_candidate_and_no_table(numpy_test_main, run_main, tmp_path):
    from deepdenoise1d import classical

    noisy, sigma = bumps_record(tmp_path / "rec.npy", 500)
    code, out, err = run_main(numpy_test_main, ["--weights", shipped_h5(), "--input", tmp_path / "rec.npy",
                                                "--output", tmp_path / "out.npy", "--method", "wavelet_sym8_visu",
                                                "--sigma", "0.25"])
    assert code == 0, err
    assert "SURE" not in out and "wavelet_sym8_visu" in out
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"),
                                  classical.wavelet(noisy, 0.25, "VisuShrink", "sym8").astype(np.float32))


def test_method_auto_without_weights_ranks_the_classical_candidates(numpy_test, run_main, tmp_path):
    from deepdenoise1d import scoreboard

    bumps_record(tmp_path / "rec.npy", 600)
    code, out, err = run_main(numpy_test, ["--input", tmp_path / "rec.npy", "--output", tmp_path / "out.npy",
                                           "--method", "auto", "--json", tmp_path / "r.json"])
    assert code == 0, err
    lines = err.strip().splitlines()  # the notice, then which σ estimator was used
    assert len(lines) == 2 and "classical methods only" in lines[0] and "σ estimated per signal" in lines[1]
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["estimates"]) == set(scoreboard.candidate_names(())) and report["sigma_source"] == "estimated"
    assert report["sigma"] > 0 and np.load(tmp_path / "out.npy").shape == (600,)


def test_method_net_without_weights_is_one_line(numpy_test, run_main, tmp_path):
    bumps_record(tmp_path / "rec.npy", 200)
    code, _, err = run_main(numpy_test, ["--input", tmp_path / "rec.npy", "--output", tmp_path / "out.npy",
                                         "--method", "net_fixed"])
    assert_one_line_error(code, err, "net_fixed", "--weights")
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("argv", [["--method", "auto"], ["--random", "--method", "auto"],
                                  ["--input", "a.npy", "--output", "b.npy", "--method", "median"],
                                  ["--input", "a.npy", "--output", "b.npy", "--method", "net", "--sigma", "3"]])
def test_method_flags_are_refused(numpy_test, run_main, argv):
    code, _, err = run_main(numpy_test, argv)
    assert code == 2 and "Traceback" not in err


def test_method_auto_runs_with_torch_unimportable(tmp_path):
    bumps_record(tmp_path / "rec.npy", 1000)
    done = run_script(NUMPY_TEST, "--weights", shipped_h5(), "--input", tmp_path / "rec.npy", "--output",
                      tmp_path / "out.npy", "--method", "auto", cwd=tmp_path, block_torch=True)
    assert done.returncode == 0, done.stderr
    assert "* |" in done.stdout and np.load(tmp_path / "out.npy").shape == (1000,)


# ---------------------------------------------------------------------------
# A long 1-D record: windows, the input's shape kept, .csv, --plot

def test_record_in_record_out_in_windows_with_a_plot(numpy_test, run_main, weights, tmp_path):
    from Numpy_V2.model import load_h5

    record = (np.random.default_rng(4).normal(size=1234) * 3).astype(np.float32)
    np.save(tmp_path / "rec.npy", record)
    code, out, err = run_main(numpy_test, ["--weights", weights[1], "--method", "net", "--input", tmp_path / "rec.npy",
                                           "--output", tmp_path / "o.npy", "--plot", tmp_path / "rec.png"])
    assert code == 0, err
    assert "in windows of 100" in out
    denoised = np.load(tmp_path / "o.npy")
    assert denoised.shape == (1234,)  # (L,) in, (L,) out
    np.testing.assert_allclose(denoised, load_h5(weights[1]).denoise(record)[0], rtol=0, atol=1e-6)
    assert (tmp_path / "rec.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_column_csv_record_gives_a_one_column_csv_with_its_header(numpy_test, run_main, weights, tmp_path):
    record = np.random.default_rng(5).normal(size=321) * 3
    (tmp_path / "rec.csv").write_text("value\n" + "\n".join(f"{v:.6f}" for v in record) + "\n")
    code, _, err = run_main(numpy_test, ["--weights", weights[1], "--input", tmp_path / "rec.csv",
                                         "--output", tmp_path / "o.csv"])
    assert code == 0, err
    lines = (tmp_path / "o.csv").read_text().splitlines()
    assert len(lines) == 322 and lines[0] == "value" and all("," not in line for line in lines)


@pytest.mark.parametrize("flags, fragment", [
    (["--plot", "p.png"], "--plot needs --input"),
    (["--input", "in.npy", "--output", "o.npy", "--plot-range", "5:9"], "--plot-range needs --plot"),
    (["--input", "in.npy", "--output", "o.npy", "--plot", "p.png", "--plot-range", "9:5"], "0 <= A < B"),
])
def test_plot_flags_are_checked(numpy_test, run_main, weights, tmp_path, flags, fragment):
    np.save(tmp_path / "in.npy", np.zeros(200, dtype=np.float32))
    code, _, err = run_main(numpy_test, ["--weights", weights[1], *[tmp_path / f if f.endswith((".npy", ".png"))
                                                                     else f for f in flags]])
    assert code == 2 and fragment in err
    assert not (tmp_path / "o.npy").exists()


# --- output paths: the write policy of deepdenoise1d.safewrite through the front-end ---------------


def test_json_never_replaces_a_checkpoint(weights, tmp_path):
    user = tmp_path / "user.pth"
    user.write_bytes((REPO_ROOT / "ckpt" / "ckpt_sure.pth").read_bytes())
    before = user.read_bytes()
    result = run_script(SCRIPT, "--weights", weights[1], "--random", "--n", 20, "--json", user, cwd=tmp_path,
                        block_torch=True)
    assert_one_line_error(result.returncode, result.stderr, "user.pth", "is a checkpoint")
    result = run_script(SCRIPT, "--weights", weights[1], "--random", "--n", 20, "--json", user, "--overwrite",
                        cwd=tmp_path, block_torch=True)
    assert_one_line_error(result.returncode, result.stderr, "user.pth", "is a checkpoint")
    assert user.read_bytes() == before


def test_json_into_the_tracked_ckpt_is_refused(weights, tmp_path):
    shipped = REPO_ROOT / "ckpt" / "ckpt_sure.pth"
    before = shipped.read_bytes()
    np.save(tmp_path / "x.npy", np.ones((2, 100), np.float32))
    result = run_script(SCRIPT, "--weights", weights[1], "--input", "x.npy", "--output", "y.npy", "--json", shipped,
                        cwd=tmp_path, block_torch=True)
    assert_one_line_error(result.returncode, result.stderr, "tracked files")
    assert shipped.read_bytes() == before and not (tmp_path / "y.npy").exists()


def test_an_output_ending_in_a_separator_is_refused(weights, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 100), np.float32))
    result = run_script(SCRIPT, "--weights", weights[1], "--input", "x.npy", "--output", "y.npy/", cwd=tmp_path,
                        block_torch=True)
    assert_one_line_error(result.returncode, result.stderr, "y.npy/", "names a folder")
    assert output_names(tmp_path) == ["x.npy"]


def test_the_same_command_twice_replaces_its_own_output(weights, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 100), np.float32))
    command = ("--weights", weights[1], "--method", "net", "--input", "x.npy", "--output", "y.npy", "--json", "y.json")
    for _ in range(2):
        result = run_script(SCRIPT, *command, cwd=tmp_path, block_torch=True)
        assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "y.npy").shape == (2, 100)
    assert json.loads((tmp_path / "y.json").read_text())["n"] == 2


def test_a_user_file_is_replaced_only_with_overwrite_and_the_same_kind(weights, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 100), np.float32))
    np.save(tmp_path / "mine.npy", np.arange(3.0))
    (tmp_path / "notes.npy").write_text("my notes\n")
    before = {name: (tmp_path / name).read_bytes() for name in ("mine.npy", "notes.npy")}
    for name in before:
        result = run_script(SCRIPT, "--weights", weights[1], "--method", "net", "--input", "x.npy", "--output", name, cwd=tmp_path,
                            block_torch=True)
        assert_one_line_error(result.returncode, result.stderr, name, "not written by this project", "--overwrite")
    result = run_script(SCRIPT, "--weights", weights[1], "--method", "net", "--input", "x.npy", "--output", "notes.npy", "--overwrite",
                        cwd=tmp_path, block_torch=True)
    assert_one_line_error(result.returncode, result.stderr, "notes.npy", "holds text, not npy")
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    result = run_script(SCRIPT, "--weights", weights[1], "--method", "net", "--input", "x.npy", "--output", "mine.npy", "--overwrite",
                        cwd=tmp_path, block_torch=True)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "mine.npy").shape == (2, 100)


def test_sigterm_while_streaming_leaves_no_temp_file(weights, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    np.save(tmp_path / "big.npy", np.random.default_rng(0).normal(0, 3, (200_000, 100)).astype(np.float32))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--weights", str(weights[1]), "--method", "net", "--input", "big.npy",
                             "--output", "out.npy"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.npy.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "finished before the temp file was seen: make the input larger"
    time.sleep(0.3)  # mid-way through the stream
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert output_names(tmp_path) == ["big.npy"]  # no temp file, no output


def _run_ascii(script, *args, cwd):
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONIOENCODING": "ascii"}
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding="ascii", errors="strict", timeout=300)


def test_input_mode_prints_the_sigma_estimate_and_warnings_under_an_ascii_locale(tmp_path):
    _, noisy = benchmark_signals(31, 6, 3.0)
    noisy[1] = 0.0  # degenerate
    noisy[2, 40] += 1e6  # a peak far above the trained spikes
    np.save(tmp_path / "in.npy", noisy)
    spikes = default_weights(".h5")  # the spike model: its range check has peaks to warn about
    result = _run_ascii(SCRIPT, "--method", "net", "--weights", spikes, "--input", "in.npy", "--output", "out.npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("Numpy_test.py: \\u03c3 estimated per signal: median") for line in lines)
    assert any("are degenerate" in line and "signal(s) 1" in line for line in lines)
    assert any("peak far above" in line and "signal(s) 2" in line for line in lines)


def test_random_auto_sigma_under_an_ascii_locale(tmp_path):
    result = _run_ascii(SCRIPT, "--random", "--n", "5", "--sigma", "auto", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "\\u03c3 = 3" in result.stdout and "\\u03c3 estimated per signal" in result.stderr


def test_input_without_method_scores_every_candidate_and_never_writes_worse_than_the_noisy_input(
        numpy_test_main, run_main, tmp_path):
    """The default of --input is auto: on a smooth record far from the spikes, in counts with a large offset, the
    written output beats the noisy input (the network alone, --method net, does what it is told)."""
    rng = np.random.default_rng(11)
    t = np.arange(3000)
    clean = 2782.0 + 40 * np.sin(2 * np.pi * t / 400) + 25 * np.sin(2 * np.pi * t / 57) * np.exp(-((t - 1500) / 600) ** 2)
    sigma = clean.std() / 4
    np.save(tmp_path / "rec.npy", clean + sigma * rng.standard_normal(t.size))
    noisy = np.load(tmp_path / "rec.npy")
    code, out, err = run_main(numpy_test_main, ["--input", tmp_path / "rec.npy", "--output", tmp_path / "out.npy",
                                                "--json", tmp_path / "r.json"])
    assert code == 0, err
    assert "no --method given" in err and "SURE scoreboard" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["method"] == "auto" and report["estimates"][report["chosen"]] < report["estimates"]["noisy"]
    rmse = lambda e: float(np.sqrt(np.mean((e - clean) ** 2)))  # noqa: E731
    assert rmse(np.load(tmp_path / "out.npy")) < 0.7 * rmse(noisy)
    code, _, err = run_main(numpy_test_main, ["--method", "net", "--input", tmp_path / "rec.npy", "--output",
                                              tmp_path / "net.npy"])
    assert code == 0, err
    assert "no --method given" not in err


def test_a_csv_with_a_time_column_is_one_line_not_a_table_of_two_sample_signals(run_main, tmp_path):
    """A "t,value" table with a header is not read as 2-sample signals: refused, naming its columns and --column."""
    module = load_script(SCRIPT, "numpy_test_time_column")
    values = np.sin(np.linspace(0, 20, 300)) + 0.1 * np.random.default_rng(0).standard_normal(300)
    np.savetxt(tmp_path / "rec.csv", np.column_stack([np.arange(300) * 0.01, values]), delimiter=",",
               header="t,value", comments="")
    code, _, err = run_main(module, ["--input", tmp_path / "rec.csv", "--output", tmp_path / "out.csv"])
    assert_one_line_error(code, err, "(t, value)", "--column")
    assert not (tmp_path / "out.csv").exists()

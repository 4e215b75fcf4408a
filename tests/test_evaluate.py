"""deepdenoise1d/evaluate.py: tables, reports, streaming file denoising, the out-of-range σ check."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error
from icnn.spec import CHUNK, MIN_LENGTH
from deepdenoise1d import evaluate
from deepdenoise1d.metrics import rmse
from deepdenoise1d.synthesis import benchmark_signals


def test_report_json_and_table(tmp_path):
    rep, clean, noisy, estimates = evaluate.random_benchmark(
        30, 3.0, 4, {"soft": evaluate.classical_methods(3.0)["soft"]}, progress=False)
    evaluate.write_report_json(tmp_path / "r.json", rep)
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert {"sigma", "n", "seed", "methods"} <= set(loaded)
    assert (loaded["sigma"], loaded["n"], loaded["seed"]) == (3.0, 30, 4)
    assert set(loaded["methods"]["soft"]) == {"rmse", "rmse_ci95", "psnr_paper", "psnr", "seconds_per_signal"}
    assert loaded["methods"]["soft"]["rmse"] == pytest.approx(rmse(estimates["soft"], clean).mean())
    # The draw is the shared held-out one.
    np.testing.assert_array_equal(noisy, benchmark_signals(4, 30, 3.0)[1])
    table = evaluate.format_table(rep)
    assert "| soft (T = σ) |" in table and "±" in table


def test_one_signal_report_is_valid_json(tmp_path):
    rep, *_ = evaluate.random_benchmark(1, 3.0, 4, {"soft": evaluate.classical_methods(3.0)["soft"]}, progress=False)
    evaluate.write_report_json(tmp_path / "r.json", rep)
    assert json.loads((tmp_path / "r.json").read_text())["methods"]["soft"]["rmse_ci95"] is None  # no NaN token


def test_sigma_auto_estimates_per_signal():
    clean, noisy = benchmark_signals(3, 400, 2.0)
    given = evaluate.classical_methods(2.0)["bayes"](noisy)
    auto = evaluate.classical_methods("auto")["bayes"](noisy)
    assert not np.allclose(given, auto)
    assert rmse(auto, clean).mean() < 1.03 * rmse(given, clean).mean()


def test_denoise_file_keeps_shape_and_refuses_overwrite(run_call, tmp_path):
    signals = np.random.default_rng(2).normal(size=(5, 32))
    np.save(tmp_path / "in.npy", signals)
    evaluate.denoise_file(tmp_path / "in.npy", tmp_path / "new" / "out.npy", lambda x: 2 * x, MIN_LENGTH, CHUNK,
                          progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "new" / "out.npy"), 2 * signals.astype(np.float32), rtol=1e-6)
    code, err = run_call(lambda: evaluate.denoise_file(tmp_path / "in.npy", tmp_path / "in.npy", lambda x: x,
                                                       MIN_LENGTH, CHUNK, reads=(tmp_path / "in.npy",)))
    assert_one_line_error(code, err, "overwrite")
    np.testing.assert_array_equal(np.load(tmp_path / "in.npy"), signals)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_denoise_file_streams_in_chunks_and_keeps_dtype(tmp_path, dtype):
    signals = np.random.default_rng(3).normal(size=(1000, 16)).astype(dtype)
    np.save(tmp_path / "in.npy", signals)
    sizes = []
    result = evaluate.denoise_file(tmp_path / "in.npy", tmp_path / "out.npy", lambda x: sizes.append(len(x)) or x,
                                   MIN_LENGTH, 300, progress=False)
    assert sizes == [300, 300, 300, 100]
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == dtype and result.dtype == np.dtype(dtype).name
    np.testing.assert_array_equal(out, signals.astype(np.float32).astype(dtype))  # computed in float32


def test_bad_value_in_a_late_chunk_leaves_nothing(run_call, tmp_path):
    signals = np.zeros((1000, 16))
    signals[950, 3] = 1e39  # finite in float64, beyond float32
    np.save(tmp_path / "in.npy", signals)
    code, err = run_call(lambda: evaluate.denoise_file(tmp_path / "in.npy", tmp_path / "new" / "deeper" / "o.npy",
                                                       lambda x: x, MIN_LENGTH, 300, progress=False))
    assert_one_line_error(code, err, "signal 950", "index 3", "float32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]  # no output, no temp, no new folder


def test_short_signal_is_refused(run_call, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((2, 10)))
    code, err = run_call(lambda: evaluate.denoise_file(tmp_path / "short.npy", tmp_path / "o.npy", lambda x: x,
                                                       MIN_LENGTH, CHUNK))
    assert_one_line_error(code, err, "length 10", "16")
    assert not (tmp_path / "o.npy").exists()


def test_denoise_file_refuses_to_write_a_non_finite_output(run_call, tmp_path):
    # Finite input that overflows inside a network must end in one line and no file, never in NaN output.
    np.save(tmp_path / "in.npy", np.ones((5, 32), dtype=np.float32))

    def overflowing(x):
        y = x.copy()
        y[3, 0] = np.inf
        return y

    code, err = run_call(lambda: evaluate.denoise_file(tmp_path / "in.npy", tmp_path / "out.npy", overflowing,
                                                       MIN_LENGTH, CHUNK))
    assert_one_line_error(code, err, "signal 3 overflows")
    assert not (tmp_path / "out.npy").exists()


# --- the out-of-range σ check -------------------------------------------------------------------


@pytest.mark.parametrize("sigma_range, sigma", [((3, 3), 3.0), ((3, 3), 3.2), ((0.5, 5), 0.5), ((0.5, 5), 5.0),
                                                ((0.5, 5), 2.0)])
@pytest.mark.parametrize("n", [1, 30, 5000])
def test_in_range_signals_give_no_warning(sigma_range, sigma, n):
    _, noisy = benchmark_signals(11, n, sigma)
    assert evaluate.sigma_range_check(sigma_range, noisy).warning() is None


@pytest.mark.parametrize("sigma_range, sigma, word", [((3, 3), 8.0, "above"), ((3, 3), 6.0, "above"),
                                                      ((0.5, 5), 0.2, "below"), ((0.5, 5), 8.0, "above")])
def test_out_of_range_signals_give_one_line_with_counts(sigma_range, sigma, word):
    _, noisy = benchmark_signals(11, 2000, sigma)
    line = evaluate.sigma_range_check(sigma_range, noisy).warning()
    assert line is not None and "\n" not in line
    assert line.startswith("warning:") and word in line and "of 2000 signal" in line
    assert f"{sigma_range[0]:g}" in line


def test_mixed_input_counts_only_the_signals_outside():
    _, low = benchmark_signals(12, 1900, 3.0)
    _, high = benchmark_signals(12, 100, 9.0)
    line = evaluate.sigma_range_check((3, 3), np.concatenate([low, high])).warning()
    count = int(line.split("; ")[1].split(" signal")[0])
    assert 80 <= count <= 100  # the σ = 9 signals, not the σ = 3 ones


def test_signals_without_a_negative_sample_are_skipped():
    noisy = np.abs(benchmark_signals(1, 20, 3.0)[1]) + 1  # nothing the estimator can read
    assert np.isnan(evaluate.per_signal_sigma(noisy)).all()
    assert evaluate.sigma_range_check((3, 3), noisy).warning() is None


def test_no_range_no_check():
    assert evaluate.sigma_range_check(None) is None

"""deepdenoise1d/evaluate.py (tables, reports), streaming.py (file denoising), range_check.py (the out-of-range check)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error
from icnn.spec import CHUNK, MIN_LENGTH
from deepdenoise1d import evaluate, methods, noise, range_check, streaming
from deepdenoise1d.metrics import rmse
from deepdenoise1d.synthesis import benchmark_signals


def test_report_json_and_table(tmp_path):
    rep, clean, noisy, estimates = evaluate.random_benchmark(
        30, 3.0, 4, {"soft": methods.classical_methods(3.0)["soft"]}, progress=False)
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
    rep, *_ = evaluate.random_benchmark(1, 3.0, 4, {"soft": methods.classical_methods(3.0)["soft"]}, progress=False)
    evaluate.write_report_json(tmp_path / "r.json", rep)
    assert json.loads((tmp_path / "r.json").read_text())["methods"]["soft"]["rmse_ci95"] is None  # no NaN token


def test_sigma_auto_estimates_per_signal():
    clean, noisy = benchmark_signals(3, 400, 2.0)
    given = methods.classical_methods(2.0)["bayes"](noisy)
    auto = methods.classical_methods("auto")["bayes"](noisy)
    assert not np.allclose(given, auto)
    assert rmse(auto, clean).mean() < 1.03 * rmse(given, clean).mean()


def test_denoise_file_keeps_shape_and_refuses_overwrite(run_call, tmp_path):
    signals = np.random.default_rng(2).normal(size=(5, 32))
    np.save(tmp_path / "in.npy", signals)
    streaming.denoise_file(tmp_path / "in.npy", tmp_path / "new" / "out.npy", lambda x: 2 * x, MIN_LENGTH, CHUNK,
                          progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "new" / "out.npy"), 2 * signals.astype(np.float32), rtol=1e-6)
    code, err = run_call(lambda: streaming.denoise_file(tmp_path / "in.npy", tmp_path / "in.npy", lambda x: x,
                                                       MIN_LENGTH, CHUNK, reads=(tmp_path / "in.npy",)))
    assert_one_line_error(code, err, "overwrite")
    np.testing.assert_array_equal(np.load(tmp_path / "in.npy"), signals)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_denoise_file_streams_in_chunks_and_keeps_dtype(tmp_path, dtype):
    signals = np.random.default_rng(3).normal(size=(1000, 16)).astype(dtype)
    np.save(tmp_path / "in.npy", signals)
    sizes = []
    result = streaming.denoise_file(tmp_path / "in.npy", tmp_path / "out.npy", lambda x: sizes.append(len(x)) or x,
                                   MIN_LENGTH, 300, progress=False)
    assert sizes == [300, 300, 300, 100]
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == dtype and result.dtype == np.dtype(dtype).name
    np.testing.assert_array_equal(out, signals.astype(np.float32).astype(dtype))  # computed in float32


def test_bad_value_in_a_late_chunk_leaves_nothing(run_call, tmp_path):
    signals = np.zeros((1000, 16))
    signals[950, 3] = 1e39  # finite in float64, beyond float32
    np.save(tmp_path / "in.npy", signals)
    code, err = run_call(lambda: streaming.denoise_file(tmp_path / "in.npy", tmp_path / "new" / "deeper" / "o.npy",
                                                       lambda x: x, MIN_LENGTH, 300, progress=False))
    assert_one_line_error(code, err, "signal 950", "index 3", "float32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]  # no output, no temp, no new folder


def test_short_signal_is_refused(run_call, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((2, 10)))
    code, err = run_call(lambda: streaming.denoise_file(tmp_path / "short.npy", tmp_path / "o.npy", lambda x: x,
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

    code, err = run_call(lambda: streaming.denoise_file(tmp_path / "in.npy", tmp_path / "out.npy", overflowing,
                                                       MIN_LENGTH, CHUNK))
    assert_one_line_error(code, err, "signal 3 overflows")
    assert not (tmp_path / "out.npy").exists()


# --- the out-of-range σ check -------------------------------------------------------------------


@pytest.mark.parametrize("sigma_range, sigma", [((3, 3), 3.0), ((3, 3), 3.2), ((0.5, 5), 0.5), ((0.5, 5), 5.0),
                                                ((0.5, 5), 2.0)])
@pytest.mark.parametrize("n", [1, 30, 5000])
def test_in_range_signals_give_no_warning(sigma_range, sigma, n):
    _, noisy = benchmark_signals(11, n, sigma)
    assert range_check.sigma_range_check(sigma_range, noisy).warning() is None


@pytest.mark.parametrize("sigma_range, sigma, word", [((3, 3), 8.0, "above"), ((3, 3), 6.0, "above"),
                                                      ((0.5, 5), 0.2, "below"), ((0.5, 5), 8.0, "above")])
def test_out_of_range_signals_give_one_line_with_counts(sigma_range, sigma, word):
    _, noisy = benchmark_signals(11, 2000, sigma)
    line = range_check.sigma_range_check(sigma_range, noisy).warning()
    assert line is not None and "\n" not in line
    assert line.startswith("warning:") and word in line and "of 2000 signal" in line
    assert f"{sigma_range[0]:g}" in line


def test_mixed_input_counts_only_the_signals_outside():
    _, low = benchmark_signals(12, 1900, 3.0)
    _, high = benchmark_signals(12, 100, 9.0)
    line = range_check.sigma_range_check((3, 3), np.concatenate([low, high])).warning()
    count = int(line.split("; ")[1].split(" signal")[0])
    assert 80 <= count <= 100  # the σ = 9 signals, not the σ = 3 ones


def test_signals_without_a_negative_sample_are_estimated_by_wavelet_mad():
    clean, noisy = benchmark_signals(1, 20, 3.0)
    each = methods.per_signal_sigma(noisy + 30)  # an offset: no sample <= 0 for the spike estimator
    assert np.isfinite(each).all() and 2.0 < np.median(each) < 4.5  # wavelet MAD overestimates spikes a little
    assert np.all(~noise.estimate_sigma_auto(noisy + 30).spike)


def test_no_range_no_range_warning_but_the_estimate():
    check = range_check.sigma_range_check(None, benchmark_signals(1, 20, 3.0)[1])
    assert check.warning() is None and check.peak_warning() is None
    assert [line.split(":")[0] for line in check.notes()] == ["σ estimated per signal"]


@pytest.mark.parametrize("length", [100, 10_000, 1_000_000])
def test_range_check_has_no_spurious_warning_at_any_length_and_still_warns_a_mismatch(length):
    from deepdenoise1d.synthesis import SpikePrior, noisy_pairs

    prior = SpikePrior(length=length, n_spikes=20 * length // 100)
    n = max(1, 20_000 // length)
    for sigma in (3.0, 4.0):
        _, noisy, _ = noisy_pairs(np.random.default_rng(length), n, sigma, prior)
        line = range_check.sigma_range_check((3, 3), noisy).warning()
        assert (line is None) == (sigma == 3.0), line


@pytest.mark.parametrize("amplitude", [100.0, 1e6])
def test_peaks_far_above_the_trained_spikes_are_warned(amplitude):
    _, noisy = benchmark_signals(3, 20, 3.0)
    assert range_check.sigma_range_check((3, 3), noisy).peak_warning() is None
    noisy[:5, 50] += amplitude
    line = range_check.sigma_range_check((3, 3), noisy).peak_warning()
    assert line.startswith("warning: 5 of 20 signal(s) peak far above") and "signal(s) 0, 1, 2, 3, 4" in line


def test_peaks_on_the_training_prior_are_not_warned():
    _, noisy = benchmark_signals(4, 5000, 0.5)
    assert range_check.sigma_range_check((0.5, 5), noisy).peak_warning() is None


def test_degenerate_signals_are_warned_and_auto_sigma_computes_without_nan():
    _, noisy = benchmark_signals(5, 4, 3.0)
    noisy[2] = 0.0
    notes = range_check.sigma_range_check((3, 3), noisy).notes()
    assert any(line.startswith("warning: 1 of 4 signal(s) are degenerate") and line.endswith("signal(s) 2")
               for line in notes)
    with np.errstate(all="raise"):  # no RuntimeWarning can reach a user
        for key in ("soft", "bayes"):
            assert np.isfinite(methods.classical_methods("auto")[key](noisy)).all()


# ---------------------------------------------------------------------------
# Records longer than the training length: windows, any dtype, text in and out

def _shipped_numpy_denoise():
    from icnn.shipped import default_weights
    from Numpy_V2.model import load_h5

    net = load_h5(default_weights(".h5"))
    return net, (lambda block: net.denoise(block))


def test_windowed_record_does_as_well_as_its_pieces(tmp_path):
    # A long record made of held-out benchmark signals end to end: windows that straddle two pieces
    # must not cost accuracy compared with denoising each 100-sample piece on its own.
    net, denoise = _shipped_numpy_denoise()
    clean, noisy = benchmark_signals(2026, 200, 3.0)
    np.save(tmp_path / "rec.npy", noisy.reshape(-1).astype(np.float32))
    result = streaming.denoise_file(tmp_path / "rec.npy", tmp_path / "out.npy", denoise, MIN_LENGTH, 64,
                                   progress=False, train_length=net.config.train_length)
    assert (result.n, result.length) == (1, 200 * 100)
    windowed = np.load(tmp_path / "out.npy")
    assert windowed.shape == (200 * 100,)
    pieces = net.denoise(noisy.astype(np.float32))
    rmse_windowed = rmse(windowed.reshape(200, 100), clean).mean()
    rmse_pieces = rmse(pieces, clean).mean()
    assert rmse_windowed < 1.03 * rmse_pieces
    assert rmse_windowed < 0.7 * rmse(noisy, clean).mean()  # and it does denoise


def test_denoise_file_windows_only_beyond_the_training_length(tmp_path):
    signals = np.random.default_rng(0).normal(size=(3, 100)).astype(np.float32)
    np.save(tmp_path / "in.npy", signals)
    lengths = []

    def record(block):
        lengths.append(block.shape[1])
        return block

    streaming.denoise_file(tmp_path / "in.npy", tmp_path / "out.npy", record, MIN_LENGTH, 8, progress=False,
                          train_length=100)
    streaming.denoise_file(tmp_path / "in.npy", tmp_path / "out2.npy", record, MIN_LENGTH, 8, progress=False,
                          train_length=40)
    assert lengths[0] == 100 and set(lengths[1:]) == {40}
    np.testing.assert_array_equal(np.load(tmp_path / "out2.npy"), signals)  # an identity blends back exactly


@pytest.mark.parametrize("dtype", [">f4", "<i2", "<f8"])
def test_denoise_file_converts_each_block_of_any_dtype(tmp_path, dtype):
    record = (np.random.default_rng(1).normal(size=1000) * 100).astype(dtype)
    np.save(tmp_path / "in.npy", record)
    streaming.denoise_file(tmp_path / "in.npy", tmp_path / "out.npy", lambda b: b * 2, MIN_LENGTH, 4,
                          progress=False, train_length=100)
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (1000,) and out.dtype == (np.float32 if dtype == ">f4" else np.float64)
    np.testing.assert_allclose(out, 2 * record.astype(np.float64), rtol=1e-6)


def test_one_column_csv_with_header_gives_one_column_csv(tmp_path):
    record = np.round(np.random.default_rng(2).normal(size=250), 3)
    (tmp_path / "in.csv").write_text("amplitude\n" + "\n".join(map(str, record)) + "\n")
    result = streaming.denoise_file(tmp_path / "in.csv", tmp_path / "out.csv", lambda b: -b, MIN_LENGTH, 4,
                                   progress=False, train_length=100)
    assert (result.n, result.length) == (1, 250)
    np.testing.assert_allclose(np.loadtxt(tmp_path / "out.csv"), -record, rtol=1e-6)  # computed in float32


def test_a_bad_value_deep_in_a_long_record_is_named_and_leaves_no_output(tmp_path, run_call):
    record = np.ones(5000, dtype=np.float32)
    record[4321] = np.nan
    np.save(tmp_path / "in.npy", record)
    code, err = run_call(lambda: streaming.denoise_file(tmp_path / "in.npy", tmp_path / "out.npy", lambda b: b,
                                                       MIN_LENGTH, 4, progress=False, train_length=100))
    assert_one_line_error(code, err, "signal 0 has a non-finite value (nan) at index 4321")
    assert not (tmp_path / "out.npy").exists()


def test_benchmark_refuses_a_draw_beyond_the_memory_limit(monkeypatch, run_call):
    monkeypatch.setenv("DEEPDENOISE1D_MEMORY_LIMIT", "1G")
    code, err = run_call(lambda: evaluate.random_benchmark(10**7, 3.0, 0, methods.classical_methods(3.0)))
    assert_one_line_error(code, err, "--n 10000000 signals needs about", "limit of 1.0 GiB", "smaller --n")


def test_the_sigma_range_is_compared_with_the_estimate_divided_by_the_input_scale():
    from deepdenoise1d.synthesis import noisy_pairs as draw

    noisy = 1000 * draw(np.random.default_rng(0), 50, 1.0)[1]  # σ 1 in the net's units, ×1000 in the file's
    assert range_check.sigma_range_check([1.0, 1.0], noisy, scale=1000.0).warning() is None
    warning = range_check.sigma_range_check([1.0, 1.0], noisy).warning()
    assert warning is not None and "the top" in warning  # unscaled, the file's σ̂ lies far above the range
    scaled_off = range_check.sigma_range_check([1.0, 1.0], 3 * noisy, scale=1000.0).warning()
    assert scaled_off is not None and "input scale 1000" in scaled_off


# --- equivariant models: the range warning speaks of signal-to-noise, not of units -------------------------


@pytest.mark.parametrize("units", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("sigma_range", [(3, 3), (0.5, 5)])
@pytest.mark.parametrize("n", [1, 30, 2000])
def test_equivariant_check_gives_no_warning_for_benchmark_signals_in_any_units(units, sigma_range, n):
    _, noisy = benchmark_signals(11, n, 3.0)
    check = range_check.sigma_range_check(sigma_range, units * noisy, equivariant=True)
    assert len(np.concatenate(check.snrs)) == n  # one signal-to-noise per signal was recorded
    assert check.warning() is None


def test_plain_check_still_warns_for_benchmark_signals_in_other_units():
    _, noisy = benchmark_signals(11, 30, 3.0)
    line = range_check.sigma_range_check((3, 3), 1000 * noisy).warning()
    assert line is not None and "noise σ 3" in line and "the top" in line and "signal-to-noise" not in line
    assert range_check.sigma_range_check((3, 3), noisy).warning() is None


def _sines(n: int, noise_sigma: float, length: int = 100) -> np.ndarray:
    t = np.linspace(0, 4 * np.pi, length)
    return np.sin(t) + noise_sigma * np.random.default_rng(5).standard_normal((n, length))


@pytest.mark.parametrize("n", [1, 30])
def test_equivariant_check_warns_for_a_smooth_signal_far_above_the_trained_signal_to_noise(n):
    line = range_check.sigma_range_check((0.5, 5), _sines(n, 0.01), equivariant=True).warning()
    assert line is not None and "\n" not in line and line.startswith("warning:")
    assert "signal-to-noise" in line and "the top" in line and f"median of {n} signal" in line
    assert "noise σ" not in line  # units are not the point any more


def test_equivariant_check_warns_for_signals_far_below_the_trained_signal_to_noise():
    # Noise alone, in signals long enough to tell (at length 100 one σ̂ is too rough to rule out weak spikes).
    noisy = np.random.default_rng(6).standard_normal((30, 1000))
    line = range_check.sigma_range_check((0.5, 3), noisy, equivariant=True).warning()
    assert line is not None and "signal-to-noise" in line and "under the bottom" in line


@pytest.mark.parametrize("sigma", [0.5, 1, 2, 3, 4, 5])
def test_a_blind_spike_models_check_is_silent_across_its_noise_range(sigma):
    _, noisy = benchmark_signals(12, 1000, sigma)
    assert range_check.sigma_range_check((0.5, 5), noisy, equivariant=True, offset_free=True).warning() is None


@pytest.mark.parametrize("sigma", [7, 8, 10])
def test_a_blind_spike_models_check_warns_at_noise_levels_past_its_range(sigma):
    # σ̂ reads a few per cent low on dense spikes at these levels, so a comparison with the true range stays silent
    _, noisy = benchmark_signals(12, 1000, sigma)
    line = range_check.sigma_range_check((0.5, 5), noisy, equivariant=True, offset_free=True).warning()
    assert line is not None and "under the bottom" in line and "median of 1000 signal" in line


def test_the_measured_range_is_what_spikes_just_past_the_range_read():
    ends = range_check.measured_snr_range(0.5, 5.0, True)
    _, noisy = benchmark_signals(13, 4000, 5.0 * (1 + range_check.SIGMA_POOLED_FLOOR))
    check = range_check.sigma_range_check((0.5, 5), noisy, equivariant=True, offset_free=True)
    error = 1.2533 * ends.bottom_sd * np.sqrt(1 / 4000 + 1 / range_check.CALIBRATION_SIGNALS)
    assert abs(np.median(np.concatenate(check.snrs)) - ends.bottom) < 4 * error
    assert ends.bottom > range_check.snr_range(0.5, 5)[0] / 1.1  # σ̂'s bias: the reason the range is measured
    assert ends.top > ends.bottom


def test_prior_signal_rms_matches_the_drawn_spikes():
    from deepdenoise1d.synthesis import SpikePrior, clean_spikes

    clean = clean_spikes(np.random.default_rng(0), 20000)
    assert range_check.prior_signal_rms() == pytest.approx(np.sqrt(np.mean(clean ** 2)), rel=0.01)
    assert range_check.prior_signal_rms(SpikePrior(n_spikes=5)) < range_check.prior_signal_rms()
    assert range_check.snr_range(0.5, 5) == pytest.approx((range_check.prior_signal_rms() / 5, range_check.prior_signal_rms() / 0.5))


def test_denoise_file_with_an_equivariant_model_checks_signal_to_noise_in_windows_too(tmp_path):
    record = 1000 * _sines(1, 0.01, length=1000)[0]  # one long record in other units, windows of 100
    np.save(tmp_path / "rec.npy", record)
    plain = streaming.denoise_file(tmp_path / "rec.npy", tmp_path / "a.npy", lambda b: b, MIN_LENGTH, 8,
                                  sigma_range=(0.5, 5), progress=False, train_length=100)
    equivariant = streaming.denoise_file(tmp_path / "rec.npy", tmp_path / "b.npy", lambda b: b, MIN_LENGTH, 8,
                                        sigma_range=(0.5, 5), progress=False, train_length=100, equivariant=True)
    assert plain.warning is not None and "noise σ" in plain.warning
    assert equivariant.warning is not None and "signal-to-noise" in equivariant.warning
    assert any("signal-to-noise" in line for line in equivariant.notes)

"""signals/: classical denoisers, synthesis, I/O and metrics (the evaluation library and plots: test_evaluate.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.signal

from conftest import REPO_ROOT, assert_one_line_error, load_script
from deepdenoise1d import classical, dataset, evaluate, io, noise
from deepdenoise1d.metrics import mean_ci95, psnr, psnr_paper, rmse
from deepdenoise1d.synthesis import DEFAULT_SEED, SpikePrior, benchmark_signals, clean_spikes, noisy_pairs


# --- classical denoisers -------------------------------------------------------------------


@pytest.mark.parametrize("length", [5, 64, 100, 257])
def test_wiener_matches_scipy_row_by_row(length):
    rng = np.random.default_rng(length)
    x = np.concatenate([rng.normal(size=(8, length)) * rng.uniform(0.1, 10, size=(8, 1)),
                        noisy_pairs(rng, 4, 3.0, SpikePrior(length=length))[1]])
    ours = classical.wiener(x)
    for row, out in zip(x, ours):
        np.testing.assert_allclose(out, scipy.signal.wiener(row, 3), rtol=0, atol=1e-10)


def test_wiener_inverse_response_is_finite_for_zero_spectrum_bins():
    x = np.zeros((2, 100))
    x[0, 10] = 1.0  # flat spectrum
    x[1] = np.cos(2 * np.pi * 5 * np.arange(100) / 100)  # all but two bins are zero
    h = classical.wiener_inverse_response(x)
    assert h.shape == x.shape and np.isfinite(h).all()


def test_l1_objective_never_increases_over_ista():
    _, y, _ = noisy_pairs(np.random.default_rng(3), 6, 3.0)
    op = classical.TruncatedDFT(y.shape[1])
    aty = op.adjoint(y)
    c = np.zeros_like(aty)
    previous = classical.l1_objective(y, c, 1.0, op)
    for _ in range(300):
        c = classical.ista_step(op, c, aty, 1.9, 1.0)
        objective = classical.l1_objective(y, c, 1.0, op)
        assert np.all(objective <= previous + 1e-9 * np.abs(previous))
        previous = objective


def test_classical_table_on_2000_signals_and_bayes_beats_all():
    # The expected ranges of the classical methods; one draw serves both checks.
    clean, noisy, _ = noisy_pairs(np.random.default_rng(20240611), 2000, 3.0)
    scores, _ = evaluate.evaluate_methods(clean, noisy, evaluate.classical_methods(3.0), progress=False)
    rmses = {k: s["rmse"] for k, s in scores.items()}
    assert 2.37 <= rmses["wiener"] <= 2.43
    assert 2.41 <= rmses["l1"] <= 2.47
    assert 2.83 <= rmses["gmc"] <= 2.93
    assert rmses["soft"] <= 1.87
    assert 1.59 <= rmses["bayes"] <= 1.65
    assert all(rmses["bayes"] < r for k, r in rmses.items() if k != "bayes")


def test_soft_threshold_and_bayes_shapes():
    y = np.array([[-5.0, -1.0, 0.0, 2.0, 7.0]])
    np.testing.assert_allclose(classical.soft_threshold(y, threshold=3.0), [[-2, 0, 0, 0, 4]])
    b = classical.bayes_posterior_mean(y, 3.0)
    assert b.shape == y.shape and np.all((b >= 0) & (b <= 10))



# --- noise level and the wavelet baseline ----------------------------------------------------


def test_estimate_sigma_per_signal_matches_a_plain_loop_and_the_pooled_value():
    _, noisy, _ = noisy_pairs(np.random.default_rng(8), 50, 2.0)
    median_form = lambda v: 1.4826 * np.median(-v[v <= 0])  # noqa: E731
    rms_form = lambda v: np.sqrt(np.mean(v[v <= 0] ** 2))  # noqa: E731
    for method, form in (("negative", median_form), ("negative_rms", rms_form)):
        loop = [form(row) for row in noisy]
        np.testing.assert_allclose(noise.estimate_sigma(noisy, per_signal=True, method=method), loop, rtol=1e-4)
        assert noise.estimate_sigma(noisy, method=method) == pytest.approx(form(noisy), rel=1e-4)
    assert noise.estimate_sigma(noisy) == pytest.approx(rms_form(noisy), rel=1e-12)  # the default
    with pytest.raises(ValueError, match="signal 1"):
        noise.estimate_sigma(np.array([[-1.0, 2.0], [1.0, 2.0]]), per_signal=True)
    with pytest.raises(ValueError, match="non-finite"):
        noise.estimate_sigma(np.array([[-1.0, np.nan]]))


def test_wavelet_sigma_is_scikit_image_batched():
    from skimage.restoration import estimate_sigma as skimage_sigma

    _, noisy, _ = noisy_pairs(np.random.default_rng(9), 12, 1.5)
    ours = noise.estimate_sigma(noisy, per_signal=True, method="wavelet")
    np.testing.assert_allclose(ours, [skimage_sigma(row) for row in noisy], rtol=1e-9)


@pytest.mark.parametrize("sigma", [0.5, 3.0, 5.0])
def test_default_sigma_estimator_beats_the_wavelet_mad_on_spikes(sigma):
    # The comparison behind the default (scripts/compare_sigma_estimators.py), on one draw.
    _, noisy = benchmark_signals(DEFAULT_SEED, 2000, sigma)
    negative = noise.estimate_sigma(noisy) / sigma - 1
    wavelet = noise.estimate_sigma(noisy, method="wavelet") / sigma - 1
    assert abs(negative) < 0.04 and abs(negative) < abs(wavelet)


def test_wavelet_denoiser_is_scikit_image_per_signal_and_beats_wiener():
    from skimage.restoration import denoise_wavelet

    clean, noisy = benchmark_signals(DEFAULT_SEED, 2000, 3.0)
    out = classical.wavelet(noisy, 3.0)
    for i in (0, 7):
        expected = denoise_wavelet(noisy[i], sigma=3.0, method="BayesShrink", mode="soft", rescale_sigma=True)
        np.testing.assert_allclose(out[i], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(classical.wavelet(noisy[:3], np.array([3.0, 1.0, 3.0]))[1],
                               denoise_wavelet(noisy[1], sigma=1.0, method="BayesShrink", rescale_sigma=True), atol=1e-12)
    score = rmse(out, clean).mean()
    assert rmse(classical.bayes_posterior_mean(noisy, 3.0), clean).mean() < score < rmse(classical.wiener(noisy), clean).mean()


def test_compare_sigma_estimators_script(run_main, tmp_path):
    script = load_script(REPO_ROOT / "scripts" / "compare_sigma_estimators.py", "compare_sigma_estimators")
    code, out, err = run_main(script, ["--n", "300", "--repeats", "2", "--output", tmp_path / "sigma.md"])
    assert code == 0, err
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "estimator" not in line]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [(f"{s:g}", m) for s in script.SIGMAS for m in ("negative", "negative_rms", "wavelet")]
    assert all(abs(float(r[2])) < 5 for r in rows if r[1].strip() == "negative")  # per-signal bias, % of σ
    assert (tmp_path / "sigma.md").read_text() == out

# --- synthesis -------------------------------------------------------------------------------


def test_synthesis_is_vectorised_100k_signals_under_a_second():
    best = np.inf
    for _ in range(3):  # best of three, in CPU time: wall time on a shared machine also counts the others
        start = time.process_time()
        clean, noisy, sigmas = noisy_pairs(np.random.default_rng(0), 100_000, 3.0)
        best = min(best, time.process_time() - start)
    assert clean.shape == noisy.shape == (100_000, 100) and sigmas.shape == (100_000,)
    assert best < 1.0


def test_later_draw_overwrites_earlier_one():
    prior = SpikePrior(length=4, n_spikes=12)
    clean = clean_spikes(np.random.default_rng(5), 300, prior)
    # Replay the same draws with a plain loop in which later writes win.
    rng = np.random.default_rng(5)
    positions = rng.integers(0, prior.length, size=(300, prior.n_spikes))
    amps = rng.integers(prior.amp_low, prior.amp_high + 1, size=(300, prior.n_spikes))
    expected = np.zeros((300, prior.length))
    for i in range(300):
        for p, a in zip(positions[i], amps[i]):
            expected[i, p] = a
    np.testing.assert_array_equal(clean, expected)


def test_nonzero_count_matches_the_prior():
    clean = clean_spikes(np.random.default_rng(11), 20_000)
    expected = 100 * (1 - SpikePrior().zero_probability)  # ≈ 18.2
    assert abs(expected - 18.21) < 0.01
    assert abs((clean != 0).sum(axis=1).mean() - expected) < 0.05
    assert set(np.unique(clean)) <= set(range(0, 11)) - {1}


def test_sigma_range_draws_per_signal_levels():
    _, _, sigmas = noisy_pairs(np.random.default_rng(1), 500, (0.5, 5.0))
    assert sigmas.min() >= 0.5 and sigmas.max() <= 5.0 and sigmas.std() > 0.5


# --- I/O -------------------------------------------------------------------------------------


def test_txt_round_trip(tmp_path):
    signal = np.random.default_rng(0).normal(size=100) * 7
    io.write_txt(tmp_path / "s.txt", signal)
    np.testing.assert_allclose(io.read_txt(tmp_path / "s.txt"), signal, rtol=1e-8)
    signals, stored = io.read_signals(tmp_path / "s.txt")
    assert signals.shape == (1, 100) and stored == (100,)


@pytest.mark.parametrize("shape", [(100,), (7, 100)])
def test_npy_round_trip(tmp_path, shape):
    signals = np.random.default_rng(1).normal(size=shape)
    io.write_signals(tmp_path / "s.npy", np.atleast_2d(signals), like_shape=shape)
    np.testing.assert_array_equal(io.read_npy(tmp_path / "s.npy"), signals)
    read, stored = io.read_signals(tmp_path / "s.npy")
    assert read.shape == np.atleast_2d(signals).shape and stored == shape


def test_folder_dataset_pairs_by_file_name(tmp_path):
    names = ["10", "2", "0", "1"]
    for i, name in enumerate(names):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        # The label of file N holds N everywhere; its data holds N + 0.5.
        io.write_txt(tmp_path / "data" / f"{name}.txt", np.full(20, int(name) + 0.5))
        io.write_txt(tmp_path / "labels" / f"{name}.txt", np.full(20, float(name)))
    noisy, clean = dataset.read_folder_dataset(tmp_path)
    np.testing.assert_array_equal(noisy - clean, 0.5)
    np.testing.assert_array_equal(clean[:, 0], [0, 1, 2, 10])  # numeric order


def test_committed_test_samples_match_the_generator(tmp_path):
    make_test_samples = load_script(REPO_ROOT / "scripts" / "make_test_samples.py", "make_test_samples_script")

    make_test_samples.main(["--output", str(tmp_path)])
    committed = dataset.read_test_samples(REPO_ROOT / "TestSamples")
    fresh = dataset.read_test_samples(tmp_path)
    assert [name for name, _, _ in committed] == [f"Test{k}" for k in range(6)]
    for (name, noisy, clean), (_, noisy2, clean2) in zip(committed, fresh):
        np.testing.assert_array_equal(noisy, noisy2)
        np.testing.assert_array_equal(clean, clean2)



STREAM_SCRIPT = """
import os, sys, numpy as np
from deepdenoise1d import io, safewrite

def rss_mb():  # resident now, not the lifetime peak
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

path, out_path = sys.argv[1], sys.argv[2]
before, peak = rss_mb(), 0.0
signals, shape = io.read_signals(path)
with safewrite.open_npy_output(out_path, shape, signals.dtype, reads=[path]) as out:
    for start, block in io.iter_chunks(signals, 4096, path, np.float32):
        out[start : start + len(block)] = 2 * block
        safewrite.release_pages(out)
        peak = max(peak, rss_mb())
print(peak - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident size from /proc")
def test_streaming_a_large_npy_keeps_memory_bounded(tmp_path):
    # 40 MB in, 40 MB out through memory maps. Without releasing pages, every touched
    # page stays resident (+40 MB for the output alone); with it, about one chunk.
    np.save(tmp_path / "in.npy", np.tile(np.arange(100, dtype=np.float32), (100_000, 1)))
    result = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
                            capture_output=True, text=True, check=True, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert float(result.stdout) < 20, result.stdout
    out = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert out.dtype == np.float32 and out.shape == (100_000, 100)
    np.testing.assert_array_equal(out[[0, -1]], 2 * np.arange(100, dtype=np.float32)[None].repeat(2, 0))

# --- bad input: one line on stderr, exit 2 ---------------------------------------------------


def test_missing_file(run_call, tmp_path):
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "nope.txt")), "nope.txt", "no such file")


def test_empty_file(run_call, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "empty.txt")), "empty.txt", "empty")


def test_non_numeric_line_names_file_and_line(run_call, tmp_path):
    (tmp_path / "bad.txt").write_text("1.0\n2.0\nhello\n")
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "bad.txt")), "bad.txt", "line 3")


def test_nan_in_npy_names_signal_and_index(run_call, tmp_path):
    signals = np.zeros((3, 50))
    signals[1, 7] = np.nan
    np.save(tmp_path / "nan.npy", signals)
    read, _ = io.read_signals(tmp_path / "nan.npy")  # values are checked per chunk, not at open
    assert_one_line_error(*run_call(lambda: io.check_chunk(read[1:], 1, "nan.npy", np.float32)), "nan.npy", "signal 1", "index 7")
    assert_one_line_error(*run_call(lambda: io.read_npy(tmp_path / "nan.npy")), "nan.npy", "signal 1", "index 7")


def test_inf_in_txt_names_index(run_call, tmp_path):
    (tmp_path / "inf.txt").write_text("0\n1\ninf\n")
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "inf.txt")), "inf.txt", "signal 0", "index 2")


def test_unpaired_folder(run_call, tmp_path):
    for sub, name in [("data", "0"), ("data", "1"), ("labels", "0"), ("labels", "5")]:
        (tmp_path / sub).mkdir(exist_ok=True)
        io.write_txt(tmp_path / sub / f"{name}.txt", np.zeros(20))
    assert_one_line_error(*run_call(lambda: dataset.read_folder_dataset(tmp_path)), "do not pair up", "1.txt", "5.txt")


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_formulas():
    clean = np.zeros((1, 4))
    estimate = np.array([[2.0, 0, 0, 0]])  # MSE 1
    assert rmse(estimate, clean)[0] == pytest.approx(1.0)
    assert psnr_paper(estimate, clean)[0] == pytest.approx(20.0)  # 20·log10(10 / 1)
    assert psnr(estimate, clean)[0] == pytest.approx(20.0)  # 10·log10(100 / 1)
    mean, ci = mean_ci95(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and ci == pytest.approx(1.96 / np.sqrt(3))




def test_sigma_prior_is_fitted_from_noisy_signals_and_shrinks_toward_it():
    from deepdenoise1d.noise import estimate_sigma, shrink_sigma, sigma_posterior_mean, sigma_prior
    from deepdenoise1d.synthesis import noisy_pairs

    # One noise level: the fitted distribution piles up there and the posterior means agree far better than σ̂.
    _, noisy, _ = noisy_pairs(np.random.default_rng(11), 4000, 2.0)
    grid, weights = sigma_prior(noisy)
    assert weights.sum() == pytest.approx(1.0) and weights[(grid > 1.8) & (grid < 2.2)].sum() > 0.9
    raw, posterior = estimate_sigma(noisy, per_signal=True), sigma_posterior_mean(noisy, (grid, weights))
    assert np.std(posterior) < 0.3 * np.std(raw) and abs(np.median(posterior) / 2.0 - 1) < 0.03
    # A range of levels: the distribution spans it; shrink_sigma pulls the top back inside and keeps σ̂ below.
    _, noisy, sigmas = noisy_pairs(np.random.default_rng(12), 6000, (1.0, 4.0))
    prior = sigma_prior(noisy)
    raw, posterior, shrunk = (estimate_sigma(noisy, per_signal=True), sigma_posterior_mean(noisy, prior),
                              shrink_sigma(noisy, prior))
    assert raw.max() > 4.4 and posterior.max() < 4.2 and shrunk.max() < 4.2
    assert np.array_equal(shrunk, np.minimum(raw, posterior)) and (shrunk == raw).mean() > 0.5
    assert np.corrcoef(posterior, sigmas)[0, 1] > 0.9

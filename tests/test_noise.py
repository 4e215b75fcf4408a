"""deepdenoise1d/noise.py: σ estimators (pooled and per signal), the fitted σ prior and shrinkage, folder σ."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO_ROOT, load_script
from deepdenoise1d import noise
from deepdenoise1d.errors import InputError
from deepdenoise1d.synthesis import DEFAULT_SEED, benchmark_signals, noisy_pairs


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


def test_compare_sigma_estimators_script(run_main, tmp_path):
    script = load_script(REPO_ROOT / "scripts" / "compare_sigma_estimators.py", "compare_sigma_estimators")
    code, out, err = run_main(script, ["--n", "300", "--repeats", "2", "--output", tmp_path / "sigma.md"])
    assert code == 0, err
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "estimator" not in line]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [(f"{s:g}", m) for s in script.SIGMAS for m in ("negative", "negative_rms", "wavelet")]
    assert all(abs(float(r[2])) < 5 for r in rows if r[1].strip() == "negative")  # per-signal bias, % of σ
    assert (tmp_path / "sigma.md").read_text() == out


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


# --- estimate_sigma on known σ, per_signal_sigma, folder_sigmas ------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 3.0])
def test_estimate_sigma_recovers_a_known_sigma_within_its_sampling_error(sigma):
    """Pure zero-baseline noise of known σ, N samples, about k = N/2 of them ≤ 0.

    ``negative_rms``: σ̂² is the mean of k values σ²·Z² (Var Z² = 2), so sd(σ̂/σ) ≈ 1/√(2k) = 1/√N.
    ``negative``: the median of k half-normal values; its sd, over its value 0.6745 σ, is
    √(p(1−p)) / (√k · f(0.6745) · 0.6745) with f = 2φ ≈ 0.636, i.e. ≈ 1.65/√N. Five sd each.
    """
    noisy = np.random.default_rng(41).normal(0.0, sigma, size=(200, 100))
    n = noisy.size
    for method, sd in (("negative_rms", 1 / np.sqrt(n)), ("negative", 1.65 / np.sqrt(n))):
        assert abs(noise.estimate_sigma(noisy, method=method) / sigma - 1) < 5 * sd, method
    # Per signal: L = 100 samples, k ≈ 50, so the estimates spread by about 1/√(2k) = 0.1 of σ.
    per_signal = noise.estimate_sigma(noisy, per_signal=True) / sigma
    assert per_signal.shape == (200,)
    assert 0.8 * 0.1 < per_signal.std() < 1.25 * 0.1
    assert abs(per_signal.mean() - 1) < 5 * 0.1 / np.sqrt(200)


def test_per_signal_sigma_is_one_clipped_value_per_signal():
    _, noisy, sigmas = noisy_pairs(np.random.default_rng(42), 300, (0.5, 5.0))
    got = noise.per_signal_sigma(noisy, "x.npy")
    assert got.shape == (300,) and got.dtype == np.float64
    spike = noise.estimate_sigma_auto(noisy).spike
    assert spike.mean() > 0.8  # the spike estimator, where it applies
    np.testing.assert_allclose(got[spike], noise.estimate_sigma(noisy[spike], per_signal=True), rtol=1e-12)
    assert np.corrcoef(got, sigmas)[0, 1] > 0.9
    assert noise.per_signal_sigma(np.zeros((2, 100)), "zeros.npy").tolist() == [1e-3, 1e-3]  # kept above 1e-3
    shrunk = noise.per_signal_sigma(noisy, "x.npy", prior=noise.sigma_prior(noisy))
    assert shrunk.shape == (300,) and np.all(shrunk[spike] <= got[spike] + 1e-12)
    # A signal with no sample <= 0 no longer blocks the others: it is estimated by wavelet MAD.
    offset = np.vstack([noisy[:2], noisy[2:3] + 100])
    each = noise.per_signal_sigma(offset, "x.npy")
    assert abs(each[2] / sigmas[2] - 1) < 0.5 and np.allclose(each[:2], got[:2])


def test_folder_sigmas_pools_one_sigma_and_keeps_per_signal_values_when_sigma_varies():
    _, one, _ = noisy_pairs(np.random.default_rng(43), 500, 2.0)
    pooled, per_signal = noise.folder_sigmas(one, "one/")
    assert per_signal is None and abs(pooled / 2.0 - 1) < 0.05
    _, mixed, sigmas = noisy_pairs(np.random.default_rng(44), 500, (0.5, 5.0))
    pooled, per_signal = noise.folder_sigmas(mixed, "mixed/")
    assert per_signal is not None and per_signal.shape == (500,)
    assert np.corrcoef(per_signal, sigmas)[0, 1] > 0.9 and 0.5 < pooled < 5.0
    with pytest.raises(InputError, match="positive/: every signal is constant"):
        noise.folder_sigmas(np.ones((3, 100)), "positive/")


@pytest.mark.parametrize("sigma", [1.0, 3.0, 5.0])
def test_sigma_is_estimated_from_noisy_signals_alone(sigma):
    _, noisy, _ = noisy_pairs(np.random.default_rng(3), 1000, sigma)
    assert abs(noise.estimate_sigma(noisy) / sigma - 1) < 0.04


# --- --sigma auto on any signal: the spike estimator or wavelet MAD, chosen per signal -----------------


@pytest.mark.parametrize("sigma", [0.5, 3.0, 5.0])
def test_auto_uses_the_spike_estimator_on_spike_signals(sigma):
    _, noisy, _ = noisy_pairs(np.random.default_rng(7), 1000, sigma)
    auto = noise.estimate_sigma_auto(noisy)
    assert auto.spike.mean() > 0.85
    assert np.median(np.abs(auto.sigma / sigma - 1)) < 0.1  # wavelet MAD alone: 0.14 to 1.4 here


@pytest.mark.parametrize("name", ["Bumps", "Blocks", "HeaviSine", "Doppler", "ecg"])
@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (100.0, -5.0), (0.01, 5.0)])
def test_auto_is_right_on_general_signals_with_offsets_and_scales(name, scale, offset):
    import pywt

    clean = pywt.data.ecg().astype(float) / 100 if name == "ecg" else pywt.data.demo_signal(name, 2048)
    sigma = 0.5
    noisy = scale * (clean + offset + sigma * np.random.default_rng(8).standard_normal((20, clean.size)))
    auto = noise.estimate_sigma_auto(noisy)
    assert np.median(np.abs(auto.sigma / (scale * sigma) - 1)) < 0.1
    assert "σ estimated per signal" in auto.summary()


def _narrowband(kind: str, length: int = 4096) -> np.ndarray:
    t = np.arange(length)
    return np.cos(np.pi * t) if kind == "alternating" else np.sin(2 * np.pi * 0.43 * t + 0.3)


@pytest.mark.parametrize("kind", ["alternating", "near_nyquist"])
@pytest.mark.parametrize("length", [128, 512, 4096])
@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (1e-6, 3e-5), (1e6, -2e7)])
def test_auto_reads_sigma_under_a_signal_at_the_finest_scale(kind, length, scale, offset):
    """Both the spike and the wavelet estimators take such a signal for noise (several times σ)."""
    sigma = 0.3
    noisy = _narrowband(kind, length) + sigma * np.random.default_rng(10).standard_normal((200, length))
    noisy = scale * noisy + offset
    auto = noise.estimate_sigma_auto(noisy)
    assert auto.spectral.all() and not auto.spike.any()
    assert abs(np.median(auto.sigma) / (scale * sigma) - 1) < 0.1
    assert "periodogram median" in auto.summary()
    assert np.median(noise._wavelet_each(noisy)) > 3 * scale * sigma  # what it read before


@pytest.mark.parametrize("length", [128, 512, 2048])
def test_the_periodogram_replaces_no_estimate_on_noise_spikes_or_the_broad_prior(length):
    from deepdenoise1d.broad_prior import draw_noisy

    rng = np.random.default_rng(11)
    assert noise.estimate_sigma_auto(rng.standard_normal((3000, length))).spectral.mean() < 0.002
    for sigma in (0.5, 3.0, 5.0):  # the benchmark's spikes, 100 samples each, and a long record of them
        spikes = benchmark_signals(12, 2000, sigma)[1]
        assert not noise.estimate_sigma_auto(spikes).spectral.any()
        assert not noise.estimate_sigma_auto(spikes.ravel()[: 97 * length].reshape(97, length)).spectral.any()
    drawn = [draw_noisy(rng, length) for _ in range(500)]
    noisy, sigma = np.array([d[1] for d in drawn]), np.array([d[2] for d in drawn])
    auto = noise.estimate_sigma_auto(noisy)
    assert auto.spectral.mean() < 0.02
    # where it does replace one (chirps, bursts, beat trains past the finest scale's reach), it errs less
    before = np.where(auto.spike, np.nan, noise._wavelet_each(noisy))[auto.spectral]
    after = auto.sigma[auto.spectral]
    assert np.all(np.abs(np.log(after / sigma[auto.spectral])) <= np.abs(np.log(before / sigma[auto.spectral])) + 1e-12)


def test_short_signals_never_use_the_periodogram():
    noisy = np.random.default_rng(12).standard_normal((4000, noise.NARROWBAND_MIN_LENGTH - 1))
    assert not noise.estimate_sigma_auto(noisy).spectral.any()


def test_auto_names_degenerate_signals_and_never_raises():
    _, noisy, _ = noisy_pairs(np.random.default_rng(9), 6, 3.0)
    noisy[1] = 0.0
    noisy[4] = 2.5  # constant
    auto = noise.estimate_sigma_auto(noisy)
    assert np.flatnonzero(auto.degenerate).tolist() == [1, 4]
    line = auto.degenerate_warning()
    assert line.startswith("warning: 2 of 6 signal(s) are degenerate") and line.endswith("signal(s) 1, 4")
    sigmas = noise.per_signal_sigma(noisy, "x")
    assert np.isfinite(sigmas).all() and sigmas[1] == sigmas[4] == np.median(sigmas[[0, 2, 3, 5]])


@pytest.mark.parametrize("length", [16, 20, 24])
def test_folder_sigmas_works_on_short_signals(length):
    rng = np.random.default_rng(length)
    noisy = 3.0 * rng.standard_normal((300, length))
    noisy[:, length // 2] += 5
    pooled, _ = noise.folder_sigmas(noisy, "short/")
    assert abs(pooled / 3.0 - 1) < 0.15

"""deepdenoise1d/classical.py: Wiener, ISTA/L1, soft threshold, wavelet, the σ-aware and the blind Bayes oracles."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from deepdenoise1d import classical, evaluate, methods
from deepdenoise1d.classical import bayes_blind_posterior_mean, bayes_posterior_mean
from deepdenoise1d.metrics import rmse
from deepdenoise1d.synthesis import DEFAULT_SEED, SpikePrior, benchmark_signals, noisy_pairs


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
    scores, _ = evaluate.evaluate_methods(clean, noisy, methods.classical_methods(3.0), progress=False)
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


# --- the blind Bayes oracle: σ marginalised over a prior range ----------------------------------


def plug_in_sigma(noisy):
    """Naive per-signal σ estimate: 1.4826 · median(|y| : y <= 0) of each row."""
    neg = np.where(noisy <= 0, np.abs(noisy), np.nan)
    return 1.4826 * np.nanmedian(neg, axis=1)


def test_narrow_range_reduces_to_sigma_aware_oracle():
    _, noisy, _ = noisy_pairs(np.random.default_rng([12, 1]), 200, 3.0)
    aware = bayes_posterior_mean(noisy, 3.0)
    blind = bayes_blind_posterior_mean(noisy, sigma_range=(2.995, 3.005), n_grid=5)
    assert np.abs(blind - aware).max() < 1e-3
    exact = bayes_blind_posterior_mean(noisy, sigma_range=(3.0, 3.0))
    np.testing.assert_allclose(exact, aware, rtol=0, atol=1e-12)


def test_wide_range_differs_from_any_single_sigma():
    _, noisy, _ = noisy_pairs(np.random.default_rng([12, 2]), 50, 3.0)
    blind = bayes_blind_posterior_mean(noisy, sigma_range=(0.5, 5.0))
    assert np.abs(blind - bayes_posterior_mean(noisy, 0.5)).max() > 0.1


def test_blind_lies_between_sigma_aware_oracle_and_naive_plug_in():
    # Held-out blind signals: one σ per signal, uniform on the prior range.
    clean, noisy, sigmas = noisy_pairs(np.random.default_rng([12, 3]), 600, (0.5, 5.0))
    err = {
        "aware": bayes_posterior_mean(noisy, sigmas[:, None]),
        "blind": bayes_blind_posterior_mean(noisy, sigma_range=(0.5, 5.0)),
        "plug_in": bayes_posterior_mean(noisy, plug_in_sigma(noisy)[:, None]),
    }
    # Compare relative to σ² so that no σ dominates.
    mse = {k: float(np.mean(((v - clean) ** 2).mean(axis=1) / sigmas**2)) for k, v in err.items()}
    assert mse["aware"] < mse["blind"] < mse["plug_in"]
    assert mse["blind"] < 1.03 * mse["aware"]  # inferring σ from 100 samples costs little


def test_posterior_sigma_tracks_the_true_sigma():
    _, noisy, sigmas = noisy_pairs(np.random.default_rng([12, 4]), 300, (0.5, 5.0))
    _, sigma_hat = bayes_blind_posterior_mean(noisy, return_sigma=True)
    assert sigma_hat.shape == sigmas.shape
    assert np.median(np.abs(sigma_hat / sigmas - 1)) < 0.08
    assert np.all((sigma_hat >= 0.5) & (sigma_hat <= 5.0))


def test_one_signal_equals_its_row_in_a_batch():
    _, noisy, _ = noisy_pairs(np.random.default_rng([12, 5]), 4, (0.5, 5.0))
    batch = bayes_blind_posterior_mean(noisy)
    np.testing.assert_allclose(bayes_blind_posterior_mean(noisy[2]), batch[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sigma_range, n_grid", [((0.0, 5.0), 8), ((5.0, 1.0), 8), ((1.0, np.inf), 8), ((1.0, 2.0), 0)])
def test_invalid_range_is_refused(sigma_range, n_grid):
    with pytest.raises(ValueError):
        bayes_blind_posterior_mean(np.zeros((1, 100)), sigma_range=sigma_range, n_grid=n_grid)


def test_equivariant_oracle_is_equivariant_and_costs_little_at_home():
    """The limit of a scale-equivariant model: f(a·y) = a·f(y), and close to the σ-aware oracle at a = 1."""
    from deepdenoise1d.classical import bayes_equivariant_posterior_mean

    clean, noisy, _ = noisy_pairs(np.random.default_rng([12, 5]), 300, 3.0)
    # a grid of a that a factor 2 maps onto itself: the estimate at 2·y is exactly twice that at y
    wide = dict(scale_range=(2.0**-6, 2.0**6), n_grid=12 * 40 + 1)
    once = bayes_equivariant_posterior_mean(noisy, **wide)
    np.testing.assert_allclose(bayes_equivariant_posterior_mean(2 * noisy, **wide), 2 * once, rtol=1e-6, atol=1e-9)
    mse = {"aware": ((bayes_posterior_mean(noisy, 3.0) - clean) ** 2).mean(),
           "equivariant": ((once - clean) ** 2).mean(),
           "identity": ((noisy - clean) ** 2).mean()}
    assert mse["aware"] < mse["equivariant"] < 1.02 * mse["aware"] < mse["identity"]


def test_the_offset_free_equivariant_oracle_moves_with_offsets_and_scales_and_knows_less():
    """The limit of an offset-free, scale-equivariant model: f(a·y + c) = a·f(y) + c, and above the scale-only limit."""
    from deepdenoise1d.classical import bayes_equivariant_posterior_mean

    clean, noisy, _ = noisy_pairs(np.random.default_rng([12, 6]), 60, 2.0)
    grid = dict(scale_range=(2.0**-3, 2.0**3), n_grid=6 * 8 + 1, n_sigma=6)  # a factor 2 maps this grid onto itself
    once = bayes_equivariant_posterior_mean(noisy, (1.0, 3.0), offset_free=True, **grid)
    moved = bayes_equivariant_posterior_mean(2 * noisy - 5.0, (1.0, 3.0), offset_free=True, **grid)
    np.testing.assert_allclose(moved, 2 * once - 5.0, rtol=1e-6, atol=1e-8)
    scale_only = bayes_equivariant_posterior_mean(noisy, (1.0, 3.0), **grid)
    mse = lambda estimate: ((estimate - clean) ** 2).mean()  # noqa: E731
    assert mse(scale_only) < mse(once) < mse(noisy)

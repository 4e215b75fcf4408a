"""The blind Bayes oracle: σ marginalised over a prior range."""
import numpy as np
import pytest

from deepdenoise1d.classical import bayes_blind_posterior_mean, bayes_posterior_mean
from deepdenoise1d.synthesis import noisy_pairs


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

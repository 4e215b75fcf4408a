"""deepdenoise1d/synthesis.py: the spike prior, vectorised drawing, per-signal noise levels."""
from __future__ import annotations

import time

import numpy as np
import pytest

from deepdenoise1d.synthesis import (BLIND_SIGMA_RANGE, SpikePrior, clean_spikes, draw_sigmas, noisy_pairs, parse_sigma,
                                     spike_records)


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


def test_sigma_range_is_parsed_and_sampled_uniformly():
    assert parse_sigma("0.5:5") == (0.5, 5.0)
    assert parse_sigma("3") == 3.0
    for bad in ("5:0.5", "-1", "a:b", "1:2:3"):
        with pytest.raises(ValueError):
            parse_sigma(bad)
    sigmas = draw_sigmas(np.random.default_rng(0), 100_000, (0.5, 5.0))
    assert sigmas.min() >= 0.5 and sigmas.max() <= 5.0
    assert abs(sigmas.mean() - 2.75) < 0.02 and abs(sigmas.std() - 4.5 / np.sqrt(12)) < 0.02


@pytest.mark.parametrize("length", [100, 512, 37])
def test_spike_records_are_the_benchmark_signals_end_to_end(length):
    clean, noisy, sigmas = spike_records(np.random.default_rng(3), 50, length)
    assert clean.shape == noisy.shape == (50, length) and sigmas.shape == (50,)
    # the clean rows are the benchmark's signals joined: the same draws, cut to the length
    joined = -(-length // 100)
    expected = clean_spikes(np.random.default_rng(3), 50 * joined).reshape(50, -1)[:, :length]
    np.testing.assert_array_equal(clean, expected)
    low, high = BLIND_SIGMA_RANGE
    assert sigmas.min() >= low and sigmas.max() <= high and sigmas.std() > 0.5
    residual = (noisy - clean) / sigmas[:, None]  # one σ per record, white
    assert abs(residual.std() - 1) < 0.05
    again = spike_records(np.random.default_rng(3), 50, length)
    for a, b in zip(again, (clean, noisy, sigmas)):
        np.testing.assert_array_equal(a, b)


def test_spike_records_keep_the_benchmark_density():
    clean, _, _ = spike_records(np.random.default_rng(8), 400, 500)
    assert abs((clean != 0).mean() - (1 - SpikePrior().zero_probability)) < 0.005
    with pytest.raises(ValueError):
        spike_records(np.random.default_rng(0), 2, 0)

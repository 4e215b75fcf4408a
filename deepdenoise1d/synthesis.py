"""The original repository's sparse-spike benchmark signals, vectorised over a batch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGNAL_LENGTH = 100
N_SPIKES = 20
AMPLITUDE_RANGE = (2, 10)
SIGMA = 3.0
BLIND_SIGMA_RANGE = (0.5, 5.0)  # the blind spike models' σ range, drawn per signal (the blind oracle's prior)
# Held-out evaluation signals: one default seed for every script that draws them
# (test.py, Numpy_test.py, results.py, benchmarks). Training has its own seed (666, the original repository's).
DEFAULT_SEED = 2026
TRAIN_SEED = 666


@dataclass(frozen=True)
class SpikePrior:
    """Knobs of the clean-signal distribution."""

    length: int = SIGNAL_LENGTH
    n_spikes: int = N_SPIKES
    amp_low: int = AMPLITUDE_RANGE[0]
    amp_high: int = AMPLITUDE_RANGE[1]

    def __post_init__(self):
        if self.length < 1 or self.n_spikes < 0 or not 0 < self.amp_low <= self.amp_high:
            raise ValueError(f"invalid spike prior {self}")

    @property
    def zero_probability(self) -> float:
        """Probability that one sample is zero: no draw landed on it."""
        return (1.0 - 1.0 / self.length) ** self.n_spikes

    @property
    def amplitudes(self) -> np.ndarray:
        return np.arange(self.amp_low, self.amp_high + 1, dtype=np.float64)


def clean_spikes(rng: np.random.Generator, n: int, prior: SpikePrior = SpikePrior()) -> np.ndarray:
    """Draw ``n`` clean signals, shape (n, length).

    Positions are drawn with replacement; a later draw at the same position
    overwrites an earlier one, as in the original repository.
    """
    positions = rng.integers(0, prior.length, size=(n, prior.n_spikes))
    amps = rng.integers(prior.amp_low, prior.amp_high + 1, size=(n, prior.n_spikes))
    clean = np.zeros((n, prior.length))
    rows = np.arange(n)
    # One column at a time so that the later draw wins, deterministically.
    for j in range(prior.n_spikes):
        clean[rows, positions[:, j]] = amps[:, j]
    return clean


def draw_sigmas(rng: np.random.Generator, n: int, sigma: float | tuple[float, float]) -> np.ndarray:
    """Noise level per signal: a constant, or uniform on ``(low, high)``. Shape (n,)."""
    if np.isscalar(sigma):
        return np.full(n, float(sigma))
    low, high = sigma
    if not 0 <= low <= high:
        raise ValueError(f"invalid sigma range {sigma}")
    return rng.uniform(low, high, size=n)


def parse_sigma(text: str) -> float | tuple[float, float]:
    """Parse ``"3"`` or ``"0.5:5"`` (a range) from the command line."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"sigma must be a number or LOW:HIGH, got {text!r}") from None
    if len(values) == 1 and values[0] >= 0:
        return values[0]
    if len(values) == 2 and 0 <= values[0] <= values[1]:
        return (values[0], values[1])
    raise ValueError(f"sigma must be a number >= 0 or LOW:HIGH with 0 <= LOW <= HIGH, got {text!r}")


def noisy_pairs(
    rng: np.random.Generator,
    n: int,
    sigma: float | tuple[float, float] = SIGMA,
    prior: SpikePrior = SpikePrior(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` (clean, noisy) pairs.

    Parameters
    ----------
    rng : np.random.Generator
        The only source of randomness.
    n : int
        Number of signals.
    sigma : float or (float, float)
        White-noise standard deviation, or a range to draw one per signal from.
    prior : SpikePrior
        Length, number of draws and amplitude range of the clean signals.

    Returns
    -------
    clean, noisy : np.ndarray
        Shape (n, length), float64.
    sigmas : np.ndarray
        Shape (n,), the noise level of each signal.
    """
    return with_noise(rng, clean_spikes(rng, n, prior), sigma)


def with_noise(rng: np.random.Generator, clean: np.ndarray, sigma: float | tuple[float, float]):
    """(clean, noisy, sigmas): white noise of one σ per row (:func:`draw_sigmas`) added to ``clean`` (n, L)."""
    sigmas = draw_sigmas(rng, clean.shape[0], sigma)
    noisy = clean + sigmas[:, None] * rng.standard_normal(clean.shape)
    return clean, noisy, sigmas


def benchmark_signals(seed: int, n: int, sigma: float = SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """The held-out draw every evaluation script shares: same ``seed``, ``n``, ``sigma`` -> same signals.

    The generator is ``default_rng([seed, round(100·σ)])``, so each noise level of a
    sweep is its own independent draw.

    Returns
    -------
    clean, noisy : np.ndarray
        Shape (n, SIGNAL_LENGTH), float64.
    """
    clean, noisy, _ = noisy_pairs(np.random.default_rng([seed, int(round(sigma * 100))]), n, sigma)
    return clean, noisy


def spike_records(
    rng: np.random.Generator,
    n: int,
    length: int,
    sigma: float | tuple[float, float] = BLIND_SIGMA_RANGE,
    prior: SpikePrior = SpikePrior(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` records of ``length`` samples, each the benchmark's signals end to end (the last one cut), one σ each.

    The benchmark's spike density and amplitudes at any length: how a network trained on longer crops
    learns the benchmark's prior (it is convolutional, so a record of joined signals is, locally, the same
    draw as one signal).

    Returns
    -------
    clean, noisy : np.ndarray
        Shape (n, length), float64.
    sigmas : np.ndarray
        Shape (n,), the noise level of each record.
    """
    if n < 0 or length < 1:
        raise ValueError(f"n must be >= 0 and length >= 1, got n={n!r}, length={length!r}")
    joined = -(-length // prior.length)
    return with_noise(rng, clean_spikes(rng, n * joined, prior).reshape(n, joined * prior.length)[:, :length], sigma)

"""Noise level of sparse-spike signals, from the noisy signals alone (NumPy, no torch).

:func:`estimate_sigma` estimates σ pooled or per signal; :func:`sigma_prior` fits the
distribution of σ over a set of signals and :func:`shrink_sigma` pulls each signal's
estimate toward it; :func:`folder_sigmas` decides whether a folder has one σ or one per
signal, and :func:`per_signal_sigma` gives each signal's own estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepdenoise1d.errors import InputError
from deepdenoise1d.magnitude import power_of_two
from deepdenoise1d.synthesis import N_SPIKES, SIGNAL_LENGTH, SpikePrior, noisy_pairs

VARIES_FACTOR = 1.5  # per-signal estimates spread this much more than at one σ: σ varies
MAD_TO_SIGMA = 1 / 0.6744897501960817  # 1 / Φ⁻¹(0.75) ≈ 1.4826: median of |N(0, σ²)| is 0.6745 σ
SIGMA_METHODS = ("negative", "negative_rms", "wavelet")


def estimate_sigma(noisy: np.ndarray, per_signal: bool = False, method: str = "negative_rms") -> float | np.ndarray:
    """Noise standard deviation of sparse positive-spike signals on a zero baseline.

    Samples ≤ 0 are almost all noise on a zero sample. ``"negative_rms"`` (the
    default) is their root-mean-square, since E[y² | y ≤ 0] = σ² there; ``"negative"``
    the half-normal median form 1.4826 · median(|y| : y ≤ 0) (the original
    repository's estimator); ``"wavelet"`` the wavelet MAD of ``skimage.restoration.estimate_sigma``
    (finest db2 detail coefficients, median(|d|) / 0.6745), whose detail coefficients
    the spikes leak into, so it overestimates σ on this prior.
    ``scripts/compare_sigma_estimators.py`` measures the three on 2000 benchmark
    signals per σ = 0.5..5: per-signal spread (L = 100) 11 % for ``"negative_rms"``,
    17-18 % for ``"negative"``, 18-53 % for ``"wavelet"``; pooled bias +0.1 % to −1.4 %,
    0.0 % to −2.5 %, and +142 % to +11 %.

    Parameters
    ----------
    noisy : np.ndarray
        Noisy signals, (N, L) or one signal (L,).
    per_signal : bool
        One estimate per signal instead of one pooled over all samples.
    method : {"negative", "negative_rms", "wavelet"}
        The estimator.

    Returns
    -------
    float or np.ndarray
        The pooled estimate, or shape (N,) when ``per_signal``.

    Raises
    ------
    ValueError
        Non-finite input, or a signal (or set) with no usable sample.
    """
    if method not in SIGMA_METHODS:
        raise ValueError(f"unknown sigma estimator {method!r}; choose from {SIGMA_METHODS}")
    y = np.atleast_2d(np.asarray(noisy, dtype=np.float64))
    if y.size == 0 or not np.isfinite(y).all():
        raise ValueError("cannot estimate sigma: empty input or a non-finite value")
    if method == "wavelet":
        return _wavelet_sigma(y, per_signal)
    if not per_signal:
        y = y.reshape(1, -1)
    negative = y <= 0
    empty = np.flatnonzero(~negative.any(axis=-1))
    if empty.size:
        which = f"signal {empty[0]} has" if per_signal else "the signals have"
        raise ValueError(f"cannot estimate sigma: {which} no sample <= 0")
    if method == "negative_rms":
        sigmas = np.sqrt(np.where(negative, y * y, 0.0).sum(axis=-1) / negative.sum(axis=-1))
    else:
        sigmas = MAD_TO_SIGMA * np.nanmedian(np.where(negative, -y, np.nan), axis=-1)
    return sigmas if per_signal else float(sigmas[0])


def _wavelet_sigma(y: np.ndarray, per_signal: bool) -> float | np.ndarray:
    """skimage's estimator, batched: MAD of the nonzero finest db2 detail coefficients."""
    import pywt  # scikit-image's wavelet dependency; imported only when used

    detail = pywt.dwt(y, "db2", axis=-1)[1]
    if not per_signal:
        detail = detail[detail != 0]
        if detail.size == 0:
            raise ValueError("cannot estimate sigma: every detail coefficient is zero")
        return float(MAD_TO_SIGMA * np.median(np.abs(detail)))
    magnitude = np.where(detail != 0, np.abs(detail), np.nan)
    empty = np.flatnonzero(np.isnan(magnitude).all(axis=-1))
    if empty.size:
        raise ValueError(f"cannot estimate sigma: signal {empty[0]} has no nonzero detail coefficient")
    return MAD_TO_SIGMA * np.nanmedian(magnitude, axis=-1)


def sigma_prior(noisy: np.ndarray, n_grid: int = 200, iterations: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """The distribution of the noise level over a set of signals, fitted from the noisy signals alone.

    Each signal's ``negative_rms`` estimate σ̂ is the mean of k squares of zero-baseline
    noise, so k·σ̂²/σ² follows χ²_k. The prior is the nonparametric maximum-likelihood
    mixing distribution of σ on a log-spaced grid (EM for the NPMLE, as in empirical Bayes),
    with no labels and no parametric form. :func:`shrink_sigma` uses it.

    Parameters
    ----------
    noisy : np.ndarray
        Noisy signals, (N, L); the more the better (thousands).
    n_grid : int
        Grid points between half the smallest and twice the largest estimate.
    iterations : int
        EM iterations.

    Returns
    -------
    grid, weights : np.ndarray
        σ values (n_grid,) and their prior probabilities, summing to 1.
    """
    auto = estimate_sigma_auto(noisy)
    spike = auto.spike & ~auto.degenerate  # the χ² model holds for the spike estimator's signals only
    if not spike.any():
        raise InputError("cannot fit the σ distribution: no signal has a zero baseline (samples <= 0)")
    sigma_hat, count = _negative_rms_and_count(np.atleast_2d(noisy)[spike])
    grid = np.geomspace(0.5 * sigma_hat.min(), 2.0 * sigma_hat.max(), n_grid)
    likelihood = _chi2_likelihood(sigma_hat, count, grid)  # (N, G), each row scaled to max 1
    weights = np.full(n_grid, 1.0 / n_grid)
    for _ in range(iterations):
        weights = weights * (likelihood.T @ (1.0 / (likelihood @ weights))) / len(sigma_hat)
    return grid, weights / weights.sum()


def sigma_posterior_mean(noisy: np.ndarray, prior: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """√E[σ² | σ̂, k] per signal under ``prior`` (from :func:`sigma_prior`), shape (N,).

    The best function of a signal's own ``negative_rms`` estimate in the mean-square sense
    over the data's σ distribution. Near the top of that range it stays inside it; in the
    middle it sits above σ̂ (for k ≈ 40 samples, E[σ² | σ̂] ≈ k·σ̂²/(k − 3), +7 %).
    """
    return _posterior_mean(*_negative_rms_and_count(noisy), prior)


def shrink_sigma(noisy: np.ndarray, prior: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Each signal's σ̂, pulled down to :func:`sigma_posterior_mean` where that is lower, shape (N,).

    σ̂² is unbiased for σ² inside the data's σ range, but near its top half of the signals
    overshoot it, and a label-free loss then treats them as noisier than any signal is. The
    posterior mean knows the range; where it is lower, it is used. Where it is higher (the
    middle, by the χ² skew, and the bottom edge) σ̂ is kept. Measured as SURE weights in
    blind label-free training (README): the top edge gains 2 %, the middle is unchanged.
    """
    sigma_hat, count = _negative_rms_and_count(noisy)
    return np.minimum(sigma_hat, _posterior_mean(sigma_hat, count, prior))


def _posterior_mean(sigma_hat: np.ndarray, count: np.ndarray, prior: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """√E[σ² | σ̂, k] on the prior's grid."""
    grid, weights = prior
    posterior = _chi2_likelihood(sigma_hat, count, grid) * weights
    return np.sqrt((posterior @ grid**2) / posterior.sum(axis=1))


def _negative_rms_and_count(noisy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per signal: the RMS of the samples ≤ 0 (``estimate_sigma``'s default) and how many there are."""
    y = np.atleast_2d(np.asarray(noisy, dtype=np.float64))
    sigma_hat = np.asarray(estimate_sigma(y, per_signal=True))  # raises on empty, non-finite or no sample <= 0
    return np.clip(sigma_hat, 1e-12, None), (y <= 0).sum(axis=1)


def _chi2_likelihood(sigma_hat: np.ndarray, count: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """p(σ̂ | σ = grid[j]) for each signal, from k·σ̂²/σ² ~ χ²_k; rows scaled to a maximum of 1."""
    from scipy.stats import chi2

    k = count[:, None].astype(np.float64)
    t = k * (sigma_hat[:, None] / grid[None, :]) ** 2
    log = chi2.logpdf(t, k) + np.log(t)  # the density of log σ̂², up to a constant per signal
    return np.exp(log - log.max(axis=1, keepdims=True))


# --sigma auto on any signal: the spike estimator where its zero-baseline model holds, wavelet MAD elsewhere.
# Measured per signal (tests/test_noise.py checks the outcome): on benchmark spike signals (L = 100, σ 0.5..5)
# 41-44 % of samples are <= 0 and the spike estimate is 0.24-1.40 times the wavelet one (1st-99th percentile;
# wavelet overestimates there, by 2.4× at σ = 0.5); a baseline offset, a negative part or a smooth trend puts
# signal into the samples <= 0 and makes the spike estimate 1.2-65 times the wavelet one (Blocks, HeaviSine,
# Doppler, ECG), and a positive offset leaves few samples <= 0.
AUTO_MIN_BELOW = 10  # samples <= 0 the spike estimator needs (from fewer its spread passes 20 %)
AUTO_MIN_SHARE = 0.2  # share of samples <= 0: a zero baseline under the prior leaves about 0.4 there
AUTO_MAX_RATIO = 1.1  # spike estimate above this × the wavelet one: the samples <= 0 hold signal, not only noise
DEGENERATE_RELATIVE = 1e-9  # σ̂ below this × max|y| (or 0, or not finite): no noise to estimate
AUTO_METHODS = ("spike", "wavelet")
# A signal living at the finest scale (a sine near the Nyquist frequency, an alternating sequence) is what both
# estimators above take for noise (3.2 × σ by the spike estimator, 6 × by wavelet MAD, measured); white noise
# spreads over every frequency, such a signal over few, so the median of the periodogram still reads σ there.
# It replaces the estimate above this ratio: on the Donoho-Johnstone signals, the ECG and seven other records the
# wavelet estimate was 0.73-1.05 × the spectral one (which reads high wherever the signal is broadband: spikes,
# jumps), on those two 6.1 and 6.2 ×.
NARROWBAND_RATIO = 1.5
NARROWBAND_MIN_LENGTH = 128  # shorter, the median of few tapered bins is too rough: noise alone passed the ratio 0.4 % at 64
LN2 = float(np.log(2.0))  # median of a χ²₂ / 2 periodogram bin of white noise, in units of σ²


@dataclass
class AutoSigma:
    """Each signal's σ from :func:`estimate_sigma_auto`.

    ``sigma`` (N,) is NaN where the signal is degenerate (constant, all zero: no noise to
    estimate); ``spike`` (N,) is True where the spike estimator was used; ``spectral`` (N,) where the periodogram
    median was (:data:`NARROWBAND_RATIO`); wavelet MAD elsewhere.
    """

    sigma: np.ndarray
    spike: np.ndarray
    spectral: np.ndarray  # (N,) True where the periodogram median replaced both (narrowband signal)

    @property
    def degenerate(self) -> np.ndarray:
        return ~np.isfinite(self.sigma)

    def summary(self) -> str:
        """``σ estimated per signal: median 3.01 (spike estimator on 98 signals, wavelet MAD on 2)``."""
        good = ~self.degenerate
        if not good.any():
            return "σ could not be estimated for any signal"
        spectral = self.spectral & good
        spike = int((self.spike & good).sum())
        wavelet = int((~self.spike & ~spectral & good).sum())
        used = ", ".join(f"{name} on {count} signal(s)" for name, count in
                         (("spike estimator (samples <= 0)", spike), ("wavelet MAD", wavelet),
                          (SPECTRAL_NAME, int(spectral.sum()))) if count)
        return f"σ estimated per signal: median {float(np.median(self.sigma[good])):.4g} ({used})"

    def degenerate_warning(self, offset: int = 0) -> str | None:
        """One line naming how many signals are degenerate and the first few (indices plus ``offset``); None if none."""
        return degenerate_warning(np.flatnonzero(self.degenerate) + offset, self.sigma.size)


def degenerate_warning(indices: np.ndarray, total: int, count: int | None = None) -> str | None:
    """``warning: 2 of 10 signal(s) are degenerate ...: signal(s) 0, 3``; None for no index.

    ``indices`` are the first ones (five are named); ``count`` the number in all (default: len(indices)).
    """
    count = len(indices) if count is None else count
    if count == 0:
        return None
    shown = ", ".join(str(int(i)) for i in indices[:5]) + (", ..." if count > 5 else "")
    return (f"warning: {count} of {total} signal(s) are degenerate (constant or all zero: σ estimate 0 or not "
            f"finite): signal(s) {shown}")


def estimate_sigma_auto(noisy: np.ndarray) -> AutoSigma:
    """σ of each signal, choosing the estimator by itself; never raises on finite input.

    The spike estimator (``negative_rms``) is used when at least :data:`AUTO_MIN_BELOW` samples
    and :data:`AUTO_MIN_SHARE` of them are <= 0 and its estimate is at most :data:`AUTO_MAX_RATIO`
    times the wavelet MAD one; otherwise wavelet MAD (``skimage.restoration.estimate_sigma``'s),
    which holds for any signal smooth at the finest scale (offsets, trends, oscillations).

    Parameters
    ----------
    noisy : np.ndarray
        (N, L) or (L,), finite.

    Returns
    -------
    AutoSigma
        NaN where the signal is degenerate (see :data:`DEGENERATE_RELATIVE`).
    """
    y = np.atleast_2d(np.asarray(noisy, dtype=np.float64))
    # both estimators are homogeneous: on y / 2^e near 1 no square overflows or underflows, and the bits are y's
    p = power_of_two(y)[:, 0]
    y = y / p[:, None]
    below = y <= 0
    count = below.sum(axis=-1)
    spike = np.sqrt(np.where(below, y * y, 0.0).sum(axis=-1) / np.maximum(count, 1))
    wavelet = _wavelet_each(y)
    use_spike = (count >= AUTO_MIN_BELOW) & (count >= AUTO_MIN_SHARE * y.shape[-1]) & (spike <= AUTO_MAX_RATIO * wavelet)
    chosen = np.where(use_spike, spike, wavelet)
    spectral = _spectral_each(y)
    narrowband = chosen > NARROWBAND_RATIO * spectral  # False where either is NaN
    sigma = p * np.where(narrowband, spectral, chosen)
    scale = p * np.abs(y).max(axis=-1)
    sigma[~(np.isfinite(sigma) & (sigma > DEGENERATE_RELATIVE * scale) & (sigma > 0))] = np.nan
    return AutoSigma(sigma, use_spike & ~narrowband, narrowband)


SPECTRAL_NAME = "periodogram median (a narrowband signal at the finest scale)"


def _spectral_each(y: np.ndarray) -> np.ndarray:
    """σ per row from the median of its Hann-tapered periodogram (mean and Nyquist bins left out): white noise
    puts σ²·χ²₂/2 in every bin, whose median is σ²·ln 2; NaN for rows under :data:`NARROWBAND_MIN_LENGTH` samples."""
    if y.shape[-1] < NARROWBAND_MIN_LENGTH:
        return np.full(y.shape[0], np.nan)
    taper = np.hanning(y.shape[-1])  # a strong line or a trend leaks into far bins less (as 1/f³, not 1/f)
    centred = (y - y.mean(axis=-1, keepdims=True)) * taper
    power = np.square(np.abs(np.fft.rfft(centred, axis=-1))) / np.sum(np.square(taper))
    inner = power[:, 1:-1] if y.shape[-1] % 2 == 0 else power[:, 1:]
    return np.sqrt(np.median(inner, axis=-1) / LN2)


def _wavelet_each(y: np.ndarray) -> np.ndarray:
    """Wavelet MAD per row, NaN where every finest detail coefficient is zero."""
    import pywt  # scikit-image's wavelet dependency; imported only when used

    detail = np.abs(pywt.dwt(y, "db2", axis=-1)[1])
    magnitude = np.where(detail != 0, detail, np.nan)
    out = np.full(y.shape[0], np.nan)
    some = ~np.isnan(magnitude).all(axis=-1)
    if some.any():
        out[some] = MAD_TO_SIGMA * np.nanmedian(magnitude[some], axis=-1)
    return out


def relative_spread(values: np.ndarray) -> float:
    """Interquartile range over the median."""
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return float((q75 - q25) / q50)


def folder_sigmas(noisy: np.ndarray, source: str) -> tuple[float, np.ndarray | None]:
    """σ of a folder of noisy signals: (pooled estimate, per-signal estimates or None).

    Per-signal estimates are returned only when the folder's σ visibly varies: their
    relative spread is more than :data:`VARIES_FACTOR` times the spread the same
    estimator shows on synthetic spike signals of one σ (the pooled one) and the
    same length. Otherwise one pooled value is the better estimate for every signal.
    Each signal's estimate is :func:`estimate_sigma_auto`'s, so no signal blocks the folder:
    degenerate ones (see :class:`AutoSigma`) get the pooled value.
    """
    auto = estimate_sigma_auto(noisy)
    good = ~auto.degenerate
    if not good.any():
        raise InputError(f"{source}: every signal is constant (no noise to estimate); give --sigma")
    spike = auto.spike & good
    if spike.sum() >= 0.5 * good.sum():  # mostly spike signals: pool their samples <= 0 (a tighter estimate)
        pooled = float(estimate_sigma(np.atleast_2d(noisy)[spike]))
    else:
        pooled = float(np.median(auto.sigma[good]))
    per_signal = np.where(good, auto.sigma, pooled)
    _, reference, _ = noisy_pairs(np.random.default_rng(0), 2000, pooled, _reference_prior(noisy.shape[-1]))
    expected = estimate_sigma_auto(reference).sigma
    varies = relative_spread(per_signal[good]) > VARIES_FACTOR * relative_spread(expected[np.isfinite(expected)])
    return pooled, (per_signal if varies else None)


def _reference_prior(length: int) -> SpikePrior:
    """The benchmark prior at ``length``, with spikes as dense as at length 100 (20 spikes in 16 samples leave no zero)."""
    return SpikePrior(length=length, n_spikes=max(1, round(N_SPIKES * length / SIGNAL_LENGTH)))


def per_signal_sigma(noisy: np.ndarray, source: str, prior: tuple | None = None) -> np.ndarray:
    """σ estimated from each signal alone (:func:`estimate_sigma_auto`), shape (N,), kept above 1e-3.

    With ``prior``, the spike-estimated signals are shrunk toward it (:func:`shrink_sigma`).
    Degenerate signals get the median of the others (1e-3 when all are): callers warn about
    them (:meth:`AutoSigma.degenerate_warning`). ``source`` is kept for callers' messages.
    """
    y = np.atleast_2d(np.asarray(noisy, dtype=np.float64))
    auto = estimate_sigma_auto(y)
    sigma = auto.sigma.copy()
    spike = auto.spike & ~auto.degenerate
    if prior is not None and spike.any():
        sigma[spike] = shrink_sigma(y[spike], prior)
    good = np.isfinite(sigma)
    sigma[~good] = float(np.median(sigma[good])) if good.any() else 1e-3
    return np.clip(sigma, 1e-3, None)

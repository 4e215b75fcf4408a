"""Translation-invariant wavelet shrinkage: the stationary (undecimated) wavelet transform of PyWavelets.

Decimated wavelet shrinkage depends on where the signal starts against the dyadic grid; averaging
over every shift (cycle spinning, Coifman & Donoho 1995) removes that and its artefacts near
jumps. The stationary transform computes the same average at once: ``pywt.swt`` keeps every
coefficient at every level, each level's detail coefficients of white noise of level σ have
standard deviation σ (orthogonal filters, ``norm=False``), and ``pywt.iswt`` averages the
shifted reconstructions.

Thresholds, soft, one per level:
- ``"BayesShrink"``: σ²/σ_x with σ_x² = max(mean(d²) − σ², 0) (Chang, Yu & Vetterli 2000); a level of
  pure noise (σ_x = 0) is set to zero.
- ``"SURE"``: the threshold that minimises Stein's unbiased risk estimate of soft thresholding on
  that level's coefficients (SureShrink, Donoho & Johnstone 1995).
"""
from __future__ import annotations

import math

import numpy as np

from deepdenoise1d.magnitude import power_of_two

METHODS = ("BayesShrink", "SURE")
MAX_LEVELS = 8  # coarsest details at 2^8 samples: the approximation below it is smooth; bounds memory at 9 × L


def levels_for(length: int, wavelet: str, max_levels: int = MAX_LEVELS) -> int:
    """Levels of the transform: as many as the wavelet's filter allows for ``length``, at most ``max_levels``."""
    import pywt  # heavy import, only when used

    return int(max(1, min(pywt.dwt_max_level(length, pywt.Wavelet(wavelet).dec_len), max_levels)))


def bayes_threshold(d: np.ndarray, sigma: float) -> float:
    """BayesShrink's σ²/σ_x for one level's coefficients; inf (every coefficient to zero) when σ_x = 0."""
    signal_var = max(float(np.mean(d * d)) - sigma * sigma, 0.0)
    return sigma * sigma / math.sqrt(signal_var) if signal_var > 0 else math.inf


def sure_threshold(d: np.ndarray, sigma: float) -> float:
    """The soft threshold of least SURE for coefficients d of noise level σ (searched over the |d| themselves).

    For soft thresholding at t of m coefficients of unit noise, SURE(t) = m − 2·#{|d| ≤ t} + Σ min(|d|, t)²;
    its minimum lies at 0 or at one of the |d|.
    """
    a = np.sort(np.abs(d.ravel()) / sigma)
    m = a.size
    if m == 0:
        return 0.0
    below = np.cumsum(a * a)  # Σ of a_i² with a_i ≤ t = a_k
    k = np.arange(1, m + 1)
    risks = m - 2 * k + below + (m - k) * a * a
    risks = np.concatenate([[float(m)], risks])  # t = 0: keep everything, SURE = m
    best = int(np.argmin(risks))
    return 0.0 if best == 0 else float(a[best - 1] * sigma)


def denoise_swt(y: np.ndarray, sigma: float, wavelet: str = "sym8", method: str = "BayesShrink",
                levels: int | None = None, threshold_scale: float = 1.0,
                thresholds: np.ndarray | None = None) -> np.ndarray:
    """Translation-invariant wavelet shrinkage of each signal (last axis), noise level given.

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, (L,) or (N, L), L ≥ 2.
    sigma : float
        Noise standard deviation, > 0.
    wavelet : str
        A PyWavelets orthogonal wavelet (``"sym8"``, ``"db4"``, ``"haar"``, ...).
    method : {"BayesShrink", "SURE"}
        The per-level threshold rule (module docstring).
    levels : int, optional
        Transform levels; default :func:`levels_for`.
    threshold_scale : float
        Multiplies every level's threshold (1: the rule's own; a study's hindsight grid varies it).
    thresholds : np.ndarray, optional
        (N, levels) thresholds to use instead of the rule's (finest level last), e.g. those
        :func:`swt_thresholds` chose on another record: the shrinkage with its parameters held fixed.

    Returns
    -------
    np.ndarray
        Denoised signals, float64, same shape as ``y``. The signal is extended symmetrically to a
        multiple of 2^levels (the transform needs it) and cropped back.
    """
    return _shrink(y, sigma, wavelet, method, levels, threshold_scale, thresholds)[0]


def swt_thresholds(y: np.ndarray, sigma: float, wavelet: str = "sym8", method: str = "BayesShrink",
                   levels: int | None = None, threshold_scale: float = 1.0) -> np.ndarray:
    """The (N, levels) thresholds :func:`denoise_swt` chooses on ``y`` (inf: a level set to zero)."""
    return _shrink(y, sigma, wavelet, method, levels, threshold_scale, None)[1]


def _shrink(y, sigma, wavelet, method, levels, threshold_scale, thresholds) -> tuple[np.ndarray, np.ndarray]:
    import pywt  # heavy import, only when used

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    y = np.asarray(y, dtype=np.float64)
    rows = np.atleast_2d(y)
    length = rows.shape[-1]
    levels = levels or levels_for(length, wavelet)
    block = 2**levels
    padded = -(-length // block) * block
    extended = np.pad(rows, ((0, 0), (0, padded - length)), mode="symmetric") if padded > length else rows
    rule = bayes_threshold if method == "BayesShrink" else sure_threshold
    out = np.empty_like(rows)
    used = np.empty((rows.shape[0], levels))
    for i, row in enumerate(extended):
        # the rules' squares near 1 (a power of two, exact): no underflow at 1e-200, no overflow at 1e200
        q = power_of_two(row).item()
        coeffs = pywt.swt(row / q, wavelet, level=levels, trim_approx=True, norm=False)  # [cA_J, cD_J, ..., cD_1]
        for j in range(1, len(coeffs)):
            t = rule(coeffs[j], sigma / q) * threshold_scale if thresholds is None else thresholds[i, j - 1] / q
            used[i, j - 1] = t * q
            coeffs[j] = np.zeros_like(coeffs[j]) if math.isinf(t) else pywt.threshold(coeffs[j], t, mode="soft")
        out[i] = q * pywt.iswt(coeffs, wavelet, norm=False)[:length]
    return out.reshape(y.shape), used

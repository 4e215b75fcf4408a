"""Total-variation denoising of 1-D signals, exact, with its weight chosen by SURE.

``denoise_tv(y, weight)`` solves min_x ½‖y − x‖² + weight · Σ|x[k+1] − x[k]| exactly, row by row,
with Condat's direct algorithm (L. Condat, "A direct algorithm for 1-D total variation denoising",
IEEE Signal Processing Letters 20(11), 2013): linear time in practice, no iterations to converge.
scikit-image's ``denoise_tv_chambolle`` solves the same problem iteratively; its answer depends on when
it stops, and SURE needs the exact one.

The exact solution is piecewise constant, and its Jacobian is the projection onto its runs
(each output sample is the mean of the inputs in its run), so the divergence is the number of runs K
(Tibshirani & Taylor, "Degrees of freedom in lasso problems", Annals of Statistics 2012):
SURE(weight) = ‖x̂ − y‖²/n − σ² + 2σ²K/n, with no Monte-Carlo probes. :func:`denoise_tv_sure` picks the
weight of least SURE on a geometric grid in units of σ.
"""
from __future__ import annotations

import math

import numpy as np

from deepdenoise1d.magnitude import power_of_two

# The grid of weights, in units of σ: 2^(k/2) for k = -4..12 covers 0.25σ (a light touch) to 64σ
# (long flat runs); the SURE curve is smooth in log weight, so half-octave steps lose little.
WEIGHT_GRID = tuple(2.0 ** (k / 2) for k in range(-4, 13))


def _tv_row(y: list[float], lam: float) -> list[float]:
    """Condat's direct algorithm on one signal (a list of floats), as published in C, in plain Python."""
    n = len(y)
    x = [0.0] * n
    if n == 0:
        return x
    k = k0 = kplus = kminus = 0
    umin, umax = lam, -lam
    vmin, vmax = y[0] - lam, y[0] + lam
    two_lam, minus_lam = 2.0 * lam, -lam
    while True:
        while k == n - 1:  # at the end: close the last run, or restart after its left end
            if umin < 0.0:
                while k0 <= kminus:
                    x[k0] = vmin
                    k0 += 1
                k = kminus = k0
                vmin = y[k]
                umin = lam
                umax = vmin + umin - vmax
            elif umax > 0.0:
                while k0 <= kplus:
                    x[k0] = vmax
                    k0 += 1
                k = kplus = k0
                vmax = y[k]
                umax = minus_lam
                umin = vmax + umax - vmin
            else:
                vmin += umin / (k - k0 + 1)
                while k0 <= k:
                    x[k0] = vmin
                    k0 += 1
                return x
        umin += y[k + 1] - vmin
        if umin < minus_lam:  # a jump down after the run: it ends at kminus
            while k0 <= kminus:
                x[k0] = vmin
                k0 += 1
            k = kminus = kplus = k0
            vmin = y[k]
            vmax = vmin + two_lam
            umin, umax = lam, minus_lam
            continue
        umax += y[k + 1] - vmax
        if umax > lam:  # a jump up after the run: it ends at kplus
            while k0 <= kplus:
                x[k0] = vmax
                k0 += 1
            k = kminus = kplus = k0
            vmax = y[k]
            vmin = vmax - two_lam
            umin, umax = lam, minus_lam
            continue
        k += 1
        if umin >= lam:
            kminus = k
            vmin += (umin - lam) / (kminus - k0 + 1)
            umin = lam
        if umax <= minus_lam:
            kplus = k
            vmax += (umax + lam) / (kplus - k0 + 1)
            umax = minus_lam


def denoise_tv(y: np.ndarray, weight: float) -> np.ndarray:
    """Exact 1-D total-variation denoising of each signal (last axis).

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, (L,) or (N, L).
    weight : float
        λ ≥ 0 of min_x ½‖y − x‖² + λ·Σ|x[k+1] − x[k]|, in the signal's units (0 returns y).

    Returns
    -------
    np.ndarray
        The minimiser, float64, same shape as ``y``.
    """
    if not (weight >= 0 and math.isfinite(weight)):
        raise ValueError(f"weight must be finite and >= 0, got {weight!r}")
    y = np.asarray(y, dtype=np.float64)
    rows = y.reshape(-1, y.shape[-1]) if y.ndim else y.reshape(1, 1)
    if weight == 0:
        return y.copy()
    out = np.array([_tv_row(row.tolist(), float(weight)) for row in rows])
    return out.reshape(y.shape)


def runs(x: np.ndarray) -> int:
    """Number of constant runs of each row of x, summed: the divergence of exact TV denoising at its output x."""
    x = np.atleast_2d(x)
    return int(x.shape[0] + np.count_nonzero(np.diff(x, axis=-1)))


def tv_sure(y: np.ndarray, sigma: float, weight: float) -> tuple[float, np.ndarray, int]:
    """SURE of exact TV at ``weight`` (per sample, estimating the MSE), its output, and its divergence K."""
    y = np.asarray(y, dtype=np.float64)
    out = denoise_tv(y, weight)
    k = runs(out.reshape(-1, y.shape[-1]))
    return float(np.mean((out - y) ** 2) - sigma**2 + 2 * sigma**2 * k / y.size), out, k


def choose_weight(y: np.ndarray, sigma: float, grid=WEIGHT_GRID) -> tuple[float, dict[float, float]]:
    """The weight (in the signal's units) of least SURE over ``grid`` × σ, and SURE at each grid weight."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    scores = {float(g * sigma): tv_sure(y, sigma, g * sigma)[0] for g in grid}
    return min(scores, key=scores.get), scores


def denoise_tv_sure(y: np.ndarray, sigma: float, grid=WEIGHT_GRID) -> np.ndarray:
    """TV denoising with its weight chosen by SURE on ``y`` itself (:func:`choose_weight`).

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, (L,) or (N, L); one weight for all of them.
    sigma : float
        The noise standard deviation, > 0.
    grid : sequence of float
        Candidate weights in units of σ (default :data:`WEIGHT_GRID`).

    Returns
    -------
    np.ndarray
        Denoised, float64, same shape as ``y``; scale-equivariant at any float64 magnitude.
    """
    y = np.asarray(y, dtype=np.float64)
    # TV is homogeneous (its weight in the signal's units): on y / 2^e near 1 SURE's squares neither underflow nor
    # overflow, and dividing by a power of two is exact, so the bits are y's wherever they fit
    q = power_of_two(y, axis=None).item()
    return q * denoise_tv(y / q, choose_weight(y / q, sigma / q, grid)[0])

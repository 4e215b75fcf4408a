"""Label-free training: Stein's unbiased risk estimate with a Monte-Carlo divergence.

For y = x + σ·n and a denoiser f, per signal of length L
    SURE = ‖f(y) − y‖²/L − σ² + 2σ²·div f(y)/L
is an unbiased estimate of ‖f(y) − x‖²/L. The divergence is estimated with Gaussian
probes b (Ramani, Blu & Unser 2008): antithetic, div ≈ bᵀ(f(y + εb) − f(y − εb))/2ε,
whose bias is O(ε²) so ε can be large (0.1·σ) and the float32 difference well above
rounding; or one-sided, bᵀ(f(y + εb) − f(y))/ε, bias O(ε), which needs a tiny ε.

Two anchors from the literature train without labels as well: Recorrupted-to-Recorrupted
(:func:`r2r_per_signal`), which also needs σ, and UNSURE (Tachella, Davies & Jacques, ICLR
2025), which learns one noise variance η for the whole data set as a Lagrange multiplier:
train.py raises η while the mean divergence is positive (``sure_from_divergence`` with σ² = η).

SURE needs σ. For a folder of unknown noise (``--sigma auto``) :func:`folder_sigmas`
decides between one pooled estimate and one estimate per signal.
"""
from __future__ import annotations

import numpy as np
import torch

from Pytorch_V1.model import wiener_prior
from deepdenoise1d.classical import estimate_sigma, shrink_sigma
from deepdenoise1d.errors import InputError
from deepdenoise1d.synthesis import SpikePrior, noisy_pairs

VARIES_FACTOR = 1.5  # per-signal estimates spread this much more than at one σ: σ varies


def sure_per_signal(model, x: torch.Tensor, pred: torch.Tensor, sigma: torch.Tensor,
                    probe: torch.Tensor, epsilon: float, with_prior: bool, central: bool = False) -> torch.Tensor:
    """SURE of each signal, shape (N,).

    Parameters
    ----------
    model : callable
        The denoiser, called as ``model(x, h)``.
    x, pred : torch.Tensor
        Noisy input and ``model(x, h)``, shape (N, 1, L).
    sigma : torch.Tensor
        Noise level per signal, shape (N,).
    probe : torch.Tensor
        Standard normal probes b, shape (N, 1, L), or (P, N, 1, L) for P probes averaged.
    epsilon : float
        Step of the finite difference, relative to sigma.
    with_prior : bool
        Recompute the Wiener prior h for the perturbed input (it is part of f).
    central : bool
        Antithetic probes (a central difference) instead of a one-sided one.
    """
    divergence = mc_divergence(model, x, pred, epsilon * sigma, probe, with_prior, central)
    return sure_from_divergence(x, pred, sigma**2, divergence)


def sure_from_divergence(x: torch.Tensor, pred: torch.Tensor, variance: torch.Tensor,
                         divergence: torch.Tensor) -> torch.Tensor:
    """‖f(y) − y‖²/L − σ² + 2σ²·div f(y)/L per signal, for noise variance σ² (a scalar or (N,))."""
    residual = ((pred - x) ** 2).mean(dim=(1, 2))
    return residual - variance + 2 * variance * divergence / x.shape[-1]


def mc_divergence(model, x: torch.Tensor, pred: torch.Tensor, step: torch.Tensor, probe: torch.Tensor,
                  with_prior: bool, central: bool = False) -> torch.Tensor:
    """Monte-Carlo divergence of f at each signal, shape (N,); ``step`` is the absolute ε, shape (N,)."""
    eps = step.clamp_min(1e-6)[:, None, None]  # (N, 1, 1)
    probes = probe if probe.ndim == 4 else probe[None]
    divergence = 0.0
    for b in probes:
        plus = _perturbed(model, x + eps * b, with_prior)
        if central:
            difference, width = plus - _perturbed(model, x - eps * b, with_prior), 2 * eps
        else:
            difference, width = plus - pred, eps
        divergence = divergence + (b * difference).sum(dim=(1, 2)) / width.flatten()
    return divergence / probes.shape[0]


def r2r_per_signal(model, x: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor, alpha: float,
                   with_prior: bool) -> torch.Tensor:
    """Recorrupted-to-Recorrupted loss of each signal, shape (N,) (Pang et al., CVPR 2021).

    With y = x + n, n ~ N(0, σ²), and z ~ N(0, 1), the pair ŷ = y + ασz and ȳ = y − σz/α
    has independent noises, so E‖f(ŷ) − ȳ‖² = E‖f(ŷ) − x‖² + const: a clean-target loss
    for inputs of noise σ·√(1 + α²), with no clean signal. ``z`` has the shape of ``x``.
    """
    s = sigma[:, None, None]
    pred = _perturbed(model, x + alpha * s * z, with_prior)
    return ((pred - (x - s * z / alpha)) ** 2).mean(dim=(1, 2))


def _perturbed(model, x: torch.Tensor, with_prior: bool) -> torch.Tensor:
    """f at a perturbed input, the prior h recomputed from it (h is part of f)."""
    return model(x, wiener_prior(x) if with_prior else None)


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
    """
    try:
        pooled = float(estimate_sigma(noisy))
    except ValueError as err:
        raise InputError(f"{source}: cannot estimate the noise level ({err})") from None
    per_signal = per_signal_sigmas(noisy, source)
    if not (np.isfinite(pooled) and pooled > 0):
        raise InputError(f"{source}: estimated noise level is {pooled}; give --sigma")
    _, reference, _ = noisy_pairs(np.random.default_rng(0), 2000, pooled, SpikePrior(length=noisy.shape[1]))
    expected = relative_spread(np.asarray(estimate_sigma(reference, per_signal=True)))
    varies = relative_spread(per_signal) > VARIES_FACTOR * expected
    return pooled, (per_signal if varies else None)


def per_signal_sigmas(noisy: np.ndarray, source: str, prior: tuple | None = None) -> np.ndarray:
    """σ estimated from each signal alone (shrunk toward ``prior`` when given), shape (N,), kept above 1e-3."""
    try:
        raw = estimate_sigma(noisy, per_signal=True) if prior is None else shrink_sigma(noisy, prior)
        return np.clip(np.asarray(raw, dtype=np.float64), 1e-3, None)
    except ValueError as err:
        raise InputError(f"{source}: cannot estimate the noise level per signal ({err})") from None

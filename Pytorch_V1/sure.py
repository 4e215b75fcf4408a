"""Label-free training: Stein's unbiased risk estimate with a Monte-Carlo divergence.

For y = x + σ·n and a denoiser f, per signal of length L
    SURE = ‖f(y) − y‖²/L − σ² + 2σ²·div f(y)/L
is an unbiased estimate of ‖f(y) − x‖²/L. The divergence is estimated with one
Gaussian probe b: div ≈ bᵀ(f(y + εb) − f(y))/ε (Ramani, Blu & Unser 2008).
"""
from __future__ import annotations

import numpy as np
import torch

from Pytorch_V1.model import wiener_prior


def sure_per_signal(model, x: torch.Tensor, pred: torch.Tensor, sigma: torch.Tensor,
                    probe: torch.Tensor, epsilon: float, with_prior: bool) -> torch.Tensor:
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
        Standard normal probe b, shape (N, 1, L).
    epsilon : float
        Step of the finite difference, relative to sigma.
    with_prior : bool
        Recompute the Wiener prior h for the perturbed input (it is part of f).
    """
    length = x.shape[-1]
    eps = (epsilon * sigma).clamp_min(1e-6)[:, None, None]  # (N, 1, 1)
    x_probe = x + eps * probe
    pred_probe = model(x_probe, wiener_prior(x_probe) if with_prior else None)
    divergence = (probe * (pred_probe - pred)).sum(dim=(1, 2)) / eps.flatten()
    residual = ((pred - x) ** 2).mean(dim=(1, 2))
    return residual - sigma**2 + 2 * sigma**2 * divergence / length


def estimate_sigma(noisy: np.ndarray) -> float:
    """Noise std of a set of sparse, positive-spike signals on a zero baseline, pooled.

    Negative samples are almost all noise on a zero sample, and |noise| there is
    half-normal with median 0.6745σ, so σ̂ = 1.4826 · median(|y| : y ≤ 0).
    Measured bias on the benchmark: −0.3 % at σ = 1, −1.7 % at σ = 3, −2.4 % at σ = 5.
    """
    values = np.asarray(noisy, dtype=np.float64).ravel()
    negative = values[values <= 0]
    if negative.size == 0:
        raise ValueError("cannot estimate sigma: no sample is <= 0")
    return float(1.4826 * np.median(np.abs(negative)))

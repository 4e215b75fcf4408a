"""Training losses: supervised (mse, smoothl1) and label-free (sure, r2r, unsure), with per-signal weights.

For y = x + σ·n and a denoiser f, per signal of length L
    SURE = ‖f(y) − y‖²/L − σ² + 2σ²·div f(y)/L
is an unbiased estimate of ‖f(y) − x‖²/L. The divergence is estimated with Gaussian
probes b (Ramani, Blu & Unser 2008): antithetic, div ≈ bᵀ(f(y + εb) − f(y − εb))/2ε,
whose bias is O(ε²) so ε can be large (0.1·σ) and the float32 difference well above
rounding; or one-sided, bᵀ(f(y + εb) − f(y))/ε, bias O(ε), which needs a tiny ε.

Two anchors from the literature train without labels as well: Recorrupted-to-Recorrupted
(:func:`r2r_per_signal`), which also needs σ, and UNSURE (Tachella, Davies & Jacques, ICLR
2025), which learns one noise variance η for the whole data set as a Lagrange multiplier
(:class:`UnsureEta`): η rises while the mean divergence is positive.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from icnn.spec import CHUNK

from deepdenoise1d.classical import bayes_mse
from deepdenoise1d.noise import per_signal_sigma

LABEL_FREE = ("sure", "r2r", "unsure")  # losses that never see a clean signal
WEIGHTS = ("none", "sigma2", "bayes")
# A step of η is UNSURE_STEP times the first batch's mean square, so the rate does not depend on the data's scale.
SURE_EPSILON = 0.1  # SURE's finite-difference step, times σ (antithetic probes: bias O(ε²))
VAL_EPSILON = 1e-2  # validation SURE's finite-difference step, times σ (its divergence of a fixed model)
SURE_CENTRAL = True  # antithetic probes, (f(y+εb) − f(y−εb))/2ε; False: one-sided (f(y+εb) − f(y))/ε
UNSURE_STEP = 1e-3
UNSURE_MOMENTUM = 0.9
# A mean square error is never negative; per-signal SURE dips below 0 only by the noise of its residual
# term, whose std is σ²·√(2/L). Below this many of those stds the estimate is being gamed, not noisy.
SURE_FLOOR_SD = 4.0


# ---------------------------------------------------------------------------
# the training loss of one batch


RMSE_FLOOR = 1e-8  # keeps the gradient of √MSE finite at a perfect signal


def compute_loss(cfg, parts, x, h, clean, sigmas) -> torch.Tensor:
    """The batch's loss under ``cfg`` (a TrainConfig), with ``parts`` (checkpoint.Parts) the model and generators."""
    if cfg.sigma_estimate != "true":  # blind and label-free: the loss is never told the true σ
        sigmas = per_signal_sigma(x[:, 0].double().cpu().numpy(), "training batch", parts.sigma_prior)
    if cfg.loss in LABEL_FREE:
        per_signal = label_free_loss(cfg, parts, x, h, sigmas)
    else:
        loss_fn = F.smooth_l1_loss if cfg.loss == "smoothl1" else F.mse_loss
        per_signal = loss_fn(parts.net(x, h).float(), clean, reduction="none").mean(dim=(1, 2))
        if cfg.loss == "rmse":  # each signal's RMSE: one with large errors (a sharp peak) no longer outweighs the rest
            per_signal = (per_signal + RMSE_FLOOR).sqrt()
    weights = loss_weights(cfg.weight_by, sigmas)
    if weights is not None:
        per_signal = per_signal * torch.as_tensor(weights, dtype=torch.float32, device=parts.device)
    loss = per_signal.mean()
    if cfg.sparsity_weight > 0:
        loss = loss + cfg.sparsity_weight * parts.model.sparsity_penalty()
    return loss


def label_free_loss(cfg, parts, x, h, sigmas: np.ndarray) -> torch.Tensor:
    """Per-signal SURE, R2R or UNSURE loss, shape (N,): no clean signal involved."""
    sigma = torch.as_tensor(sigmas, dtype=torch.float32, device=parts.device)
    if cfg.loss == "r2r":
        z = torch.from_numpy(parts.flip_rng.standard_normal(x.shape).astype(np.float32)).to(parts.device)
        return r2r_per_signal(parts.net, x, sigma, z, cfg.r2r_alpha, h is not None)
    probes = parts.flip_rng.standard_normal((cfg.sure_probes, x.shape[0], x.shape[2]))
    probe = torch.from_numpy(probes.astype(np.float32))[:, :, None].to(parts.device)  # (P, N, 1, L)
    if parts.eta is not None:  # UNSURE: σ is not used, the loss learns one variance η instead
        sigma = torch.full_like(sigma, math.sqrt(parts.eta.start(x)))
    pred, divergence = sure_terms(parts.net, x, h, cfg.sure_epsilon * sigma, probe, cfg.sure_central,
                                  joint=parts.model.signals_independent)
    if parts.eta is not None:
        parts.eta.update(float(divergence.detach().mean()) / x.shape[-1])
        return sure_from_divergence(x, pred, sigma**2, divergence)
    return floored_sure(sure_from_divergence(x, pred, sigma**2, divergence), sigma**2, x.shape[-1],
                        getattr(cfg, "sure_floor", SURE_FLOOR_SD))


def floored_sure(sure: torch.Tensor, variance: torch.Tensor, length: int, floor_sd: float) -> torch.Tensor:
    """Per-signal SURE reflected at its floor −floor_sd·σ²·√(2/L): below it, a lower estimate costs more.

    A negative estimate of a mean square error beyond the noise of the estimate itself means the network
    found a way to fool the Monte-Carlo divergence; reflecting (not clamping) turns its gradient back.
    ``floor_sd`` 0 switches the floor off.
    """
    if floor_sd <= 0:
        return sure
    floor = -floor_sd * variance * math.sqrt(2.0 / length)
    return torch.where(sure < floor, 2 * floor - sure, sure)


def loss_weights(kind: str, sigmas: np.ndarray) -> np.ndarray | None:
    """Per-signal loss weights (mean 1) so that no noise level dominates a blind run; None for "none"."""
    if kind == "none":
        return None
    weights = 1.0 / sigmas**2 if kind == "sigma2" else 1.0 / bayes_mse(sigmas)
    return weights / weights.mean()


class UnsureEta:
    """UNSURE's learned noise variance η, climbed by momentum ascent; NaN until the first batch."""

    def __init__(self):
        self.value = math.nan
        self.velocity = 0.0
        self.step = math.nan  # UNSURE_STEP times the first batch's mean square

    def start(self, x: torch.Tensor) -> float:
        """The current η; the first batch sets its start (a quarter of the mean square) and its step."""
        if math.isnan(self.value):
            scale = float((x.double() ** 2).mean())
            self.value, self.step = 0.25 * scale, UNSURE_STEP * scale
        return self.value

    def update(self, mean_divergence: float) -> None:
        """Momentum ascent of ‖y − f‖² + 2η·div f in η: η stops where the mean divergence is 0."""
        self.velocity = UNSURE_MOMENTUM * self.velocity + 2 * mean_divergence
        self.value = max(self.value + self.step * self.velocity, 1e-8)

    @property
    def sigma(self) -> float:
        """√η, the learned noise level."""
        return math.sqrt(self.value)

    def state_dict(self) -> dict:
        return {"eta": self.value, "velocity": self.velocity, "step": self.step}

    def load_state_dict(self, state: dict | None) -> None:
        """A saved :meth:`state_dict`; missing entries (or None) start afresh."""
        state = state or {}
        self.value, self.velocity, self.step = (float(state.get(k, d)) for k, d in
                                                (("eta", math.nan), ("velocity", 0.0), ("step", math.nan)))


# ---------------------------------------------------------------------------
# SURE and R2R, per signal


# perturbed signals per model call in probe_divergences: bounds its memory like inference's chunks
PROBE_BATCH = 1024


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


def sure_terms(model, x: torch.Tensor, h: torch.Tensor | None, step: torch.Tensor, probe: torch.Tensor,
               central: bool, joint: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """f(y), shape (N, 1, L), and its Monte-Carlo divergence (:func:`mc_divergence`), shape (N,), for SURE.

    ``joint``: y and its perturbed copies go through the model as one call, each with the prior the model
    computes for it (``h``, the one :meth:`~Pytorch_V1.model.ICNN_s.prior` computes for y, is then not needed):
    a few large calls instead of 1 + 2P small ones. Only for a model whose outputs do not depend on the
    batch (``ICNN_s.signals_independent``).
    """
    if not joint:
        pred = model(x, h).to(x.dtype)  # float16 under AMP
        return pred, mc_divergence(model, x, pred, step, probe, h is not None, central)
    eps, probes, width = _probe_steps(step, probe, central)
    moved = [x + eps * probes] + ([x - eps * probes] if central else [])
    out = model(torch.cat([x] + [m.flatten(0, 1) for m in moved]), None).to(x.dtype)
    pred, perturbed = out[: x.shape[0]], out[x.shape[0] :].view(len(moved), *probes.shape)
    difference = perturbed[0] - (perturbed[1] if central else pred)
    return pred, ((probes * difference).sum(dim=(2, 3)) / width).mean(dim=0)


def mc_divergence(model, x: torch.Tensor, pred: torch.Tensor, step: torch.Tensor, probe: torch.Tensor,
                  with_prior: bool, central: bool = False) -> torch.Tensor:
    """Monte-Carlo divergence of f at each signal, shape (N,); ``step`` is the absolute ε, shape (N,)."""
    return probe_divergences(model, x, pred, step, probe, with_prior, central).mean(dim=0)


def probe_divergences(model, x: torch.Tensor, pred: torch.Tensor, step: torch.Tensor, probe: torch.Tensor,
                      with_prior: bool, central: bool = False, batch_probes: bool = False) -> torch.Tensor:
    """The divergence of f at each signal by each probe b, bᵀ(f(y + εb) − f(y))/ε, shape (P, N).

    ``batch_probes``: the probes go through the model together, as many at a time as keep P·N within
    :data:`PROBE_BATCH` signals (one call per probe on a few held-out windows spent most of a validation
    in per-call overhead). Only for a model whose output does not depend on its batch: batch-norm
    statistics of the batch would mix the probes.
    """
    eps, probes, width = _probe_steps(step, probe, central)
    group = max(1, PROBE_BATCH // x.shape[0]) if batch_probes else 1
    out = []
    for b in probes.split(group):
        plus = _perturbed(model, (x + eps * b).flatten(0, 1), with_prior).view(b.shape)
        if central:
            difference = plus - _perturbed(model, (x - eps * b).flatten(0, 1), with_prior).view(b.shape)
        else:
            difference = plus - pred
        out.append((b * difference).sum(dim=(2, 3)) / width)
    return torch.cat(out)


def _probe_steps(step: torch.Tensor, probe: torch.Tensor, central: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ε (N, 1, 1) from the absolute steps (N,), the probes as (P, N, 1, L), and the finite difference's width
    per signal (N,): 2ε antithetic, ε one-sided."""
    eps = step.clamp_min(1e-6)[:, None, None]
    probes = probe if probe.ndim == 4 else probe[None]
    return eps, probes, (2 * eps if central else eps).flatten()


@torch.no_grad()
def validation_outputs(model, val, mode: str, sigmas: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A model's outputs on validation signals (N, 1, L) in BN mode ``mode``, in chunks, and where the
    validation has probes, their divergences (P, N) by each of its P probes (validation SURE's, which averages
    them; else None). ``sigmas`` replaces ``val.sigmas`` in the probes' step (UNSURE's learned σ). The model
    is evaluated in eval mode and left in the mode it came in."""
    training = model.training
    model.eval()
    f = partial(model, bn_mode=mode)
    sigmas = val.sigmas if sigmas is None else sigmas
    try:
        preds, divergences = [], []
        for i in range(0, val.x.shape[0], CHUNK):
            x, h = val.x[i : i + CHUNK], None if val.h is None else val.h[i : i + CHUNK]
            preds.append(f(x, h))
            if val.probe is not None:
                step = VAL_EPSILON * sigmas[i : i + CHUNK].to(x.device)
                divergences.append(probe_divergences(f, x, preds[-1], step, val.probe[:, i : i + CHUNK],
                                                     h is not None, central=True, batch_probes=mode == "fixed"))
        return torch.cat(preds), torch.cat(divergences, dim=1) if divergences else None
    finally:
        model.train(training)


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
    """f at a perturbed input, the prior h recomputed from it (h is part of f): with h None the model's forward
    computes it as the model defines it (of x − m(x) for an offset-free one), so ``with_prior`` needs no h here."""
    return model(x, None)

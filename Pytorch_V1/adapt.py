"""Adapting a trained model to one record without labels: what ``--init`` changes in a run.

    python Pytorch_V1/train.py --data REC.npy --init ckpt/ckpt_universal.pth --loss sure

- The architecture is the starting checkpoint's (prior, norm, width, depth, baseline, window
  length, the σ range it was trained for): no model flag is needed (:func:`init_model`).
- With ``--data``, the recipe is a fine-tune's (:data:`ADAPT_RECIPE`): small batches of the record's
  crops at a small learning rate, for a budget that follows the record's length.
- ``--adapt`` picks which weights move (:data:`ADAPT_PARTS`); the choice of the default was measured
  (docs/adaptation.md).
- ``--sigma auto`` (the default) reads the record's σ from the start's own residual
  (:func:`residual_sigma`): SURE, the loss and the judge, is only as good as its σ.
- The start is validated before the first step (step 0), so ``ckpt_best.pth`` is never worse than the
  start on the held-out windows; a label-free run replaces the start only when a step's held-out SURE
  is lower by more than noise explains and its held-out divergence is not negative (:class:`StartGuard`).
  When no step does, the run says so and ``ckpt_best.pth`` holds the start's weights (:func:`kept_start_note`).

Each ``cfg`` here is a train.TrainConfig, left unannotated: train.py imports this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from icnn.spec import BN_MODES, inference_modes

from Pytorch_V1.checkpoint import TrainState, load_checkpoint, model_config_of
from Pytorch_V1.inference import denoise
from Pytorch_V1.losses import LABEL_FREE, sure_from_divergence, validation_outputs
from Pytorch_V1.model import ICNN_s
from deepdenoise1d.errors import InputError

# A fine-tune of a trained model on one record: a few crops per step, a learning rate well below a
# training's, and the run stops when the held-out windows stop improving.
ADAPT_RECIPE = {"batch_size": 8, "lr": 1e-5}
ADAPT_PARTS = ("all", "biases")  # every weight; or the convolutions' biases only (a few hundred numbers)
# A step replaces the start when its held-out SURE is lower by this many SDs of the difference: the run keeps the
# best of up to 20 validations, and a one-sided draw of 3 SDs comes by chance to one of 20 in under 3 % of runs.
GUARD_SDS = 3.0
# ... and by what an error of this fraction of σ² in the σ estimate can move it (SURE weighs the divergence by σ²)
SIGMA_DOUBT = 0.05
RESIDUAL_PROBES = 2  # antithetic probe pairs of the start's divergence in residual_sigma
RESIDUAL_EPSILON = 1e-2  # their finite-difference step, times the first estimate of σ
RESIDUAL_STREAM = 17  # [seed, 17]: their probes
# Below this many samples adaptation gained nothing on the measured records and once fit the noise of the
# samples it trained on (docs/adaptation.md): such a record gets a note.
SHORT_RECORD = 8192
# The model fields a run takes from its --init checkpoint.
INIT_FIELDS = ("prior", "norm", "equivariant", "baseline", "width", "depth", "train_length", "odd", "reversal")


def init_model(path: str, data: bool) -> dict:
    """The architecture of the ``--init`` checkpoint at ``path``, as a TrainConfig's ``model`` dict.

    With ``data`` (an adaptation to the user's own signals) the model also keeps the σ range it is
    recorded for; a fine-tune on synthetic signals records the σ it trains on instead.
    """
    recorded = model_config_of(load_checkpoint(path), path).to_dict()
    names = INIT_FIELDS + (("sigma_range",) if data else ())
    return {name: recorded[name] for name in names if name in recorded}  # "odd" and "reversal" are recorded only when set


def trainable_parameters(model: ICNN_s, adapt: str) -> list[torch.nn.Parameter]:
    """The parameters ``--adapt`` lets the optimiser move; the rest are frozen (``requires_grad`` off)."""
    if adapt == "all":
        return list(model.parameters())
    chosen = []
    for name, param in model.named_parameters():
        keep = name.endswith(".bias") and isinstance(model.get_submodule(name.rsplit(".", 1)[0]), torch.nn.Conv1d)
        param.requires_grad_(keep)
        if keep:
            chosen.append(param)
    if not chosen:
        raise InputError(f"--adapt biases: this model's convolutions have no biases (norm {model.config.norm!r}); "
                         "use --adapt all")
    return chosen


def kept_start_note(cfg, state: TrainState) -> str | None:
    """One line when an ``--init`` run found nothing better than its start on validation (ckpt_best.pth is the start)."""
    if cfg.init is None or state.best_step != 0 or state.step == 0:
        return None
    metric = "√(mean SURE)" if cfg.loss in LABEL_FREE else "RMSE"
    return (f"no step with a divergence ≥ 0 beat the starting model on the held-out validation by more than noise "
            f"explains ({metric} {state.best:.4g} at step 0): ckpt_best.pth keeps the weights of {cfg.init}")


@dataclass
class StartGuard:
    """The start's held-out outputs and mean SURE, per BN mode: what a label-free step must beat.

    Three errors can make a worse model look better. Noise moves the difference of two mean SUREs by
    −2⟨f − f₀, n⟩/(N·L), of standard deviation 2σ‖f − f₀‖/(N·L): picking the best of many evaluations
    on a few held-out windows would hand back a model that drew lucky noise. The divergences are
    Monte-Carlo estimates: with the same P probes for both models, their difference errs by the spread of
    its P single-probe values over √P, times 2σ²/(N·L) (on a record of 8192 samples, where the held-out
    windows are few, this was larger than the noise term). And SURE weighs the divergence by σ², so an
    error δ·σ² in the estimated σ² moves the difference by 2δσ²·(div f − div f₀)/(N·L): an overestimated
    σ favours a smoother model, an underestimated one a rougher. A step replaces the start when its mean
    SURE is lower by more than :data:`GUARD_SDS` SDs of the first two together plus the error of
    :data:`SIGMA_DOUBT` in σ², and its divergence is not negative (:func:`denoises_like_a_posterior_mean`).
    """

    start: dict[str, torch.Tensor]  # BN mode -> the start's outputs (N, 1, L)
    start_divergence: dict[str, torch.Tensor]  # BN mode -> their divergences by each probe (P, N)
    start_sure: dict[str, float]  # BN mode -> its mean SURE on the validation windows
    sigma_doubt: float = SIGMA_DOUBT  # 0 where validation's σ is the generator's own (synthetic signals)

    @classmethod
    def of(cls, model: ICNN_s, val, sigma_doubt: float = SIGMA_DOUBT) -> "StartGuard":
        """From the start ``model`` on the validation set ``val`` (its SURE is train.evaluate's: the same
        probes and step), with the relative error allowed in validation's σ²."""
        modes = inference_modes(model.config)
        start = {m: validation_outputs(model, val, m) for m in modes}
        start.update({m: start[modes[0]] for m in BN_MODES if m not in start})  # no running statistics: the same
        variance = val.sigmas.to(val.x.device).pow(2)
        sure = {m: float(sure_from_divergence(val.x, start[m][0], variance, start[m][1].mean(dim=0)).mean())
                for m in BN_MODES}
        return cls({m: start[m][0] for m in BN_MODES}, {m: start[m][1] for m in BN_MODES}, sure, sigma_doubt)

    def margin(self, model: ICNN_s, val, mode: str) -> float:
        """What the mean-SURE difference between ``model`` and the start may owe to noise, to the divergences'
        probes and to σ's error."""
        return self._margin(*validation_outputs(model, val, mode), val, mode)

    def _margin(self, pred: torch.Tensor, divergence: torch.Tensor, val, mode: str) -> float:
        variance = val.sigmas.double().pow(2)
        change = (pred - self.start[mode]).double().pow(2).sum(dim=(1, 2)).cpu()
        noise = 2 * float((variance * change).sum().sqrt())
        per_probe = (variance * (divergence - self.start_divergence[mode]).double().cpu()).sum(dim=1)  # (P,)
        probes = 2 * float(per_probe.std() / math.sqrt(per_probe.numel())) if per_probe.numel() > 1 else 0.0
        doubt = 2 * self.sigma_doubt * float(per_probe.mean().abs())
        return (GUARD_SDS * math.hypot(noise, probes) + doubt) / (val.x.shape[0] * val.x.shape[-1])

    def verdict(self, model: ICNN_s, val, mode: str, score: float,
                computed: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[bool, bool]:
        """(admissible, allowed) for ``model`` of signed √(mean SURE) ``score``: admissible when its mean
        divergence on the validation windows is not negative (:func:`denoises_like_a_posterior_mean`);
        allowed when it is admissible and beats the start by more than the margin. ``computed``: its
        :func:`~Pytorch_V1.losses.validation_outputs` already at hand (train.evaluate's), else computed here."""
        pred, divergence = validation_outputs(model, val, mode) if computed is None else computed
        if not denoises_like_a_posterior_mean(divergence):
            return False, False
        return True, math.copysign(score**2, score) < self.start_sure[mode] - self._margin(pred, divergence, val, mode)

    def allows(self, model: ICNN_s, val, mode: str, score: float) -> bool:
        """Whether ``model``, of signed √(mean SURE) ``score``, may replace the start (:meth:`verdict`)."""
        return self.verdict(model, val, mode, score)[1]


def denoises_like_a_posterior_mean(divergence: torch.Tensor) -> bool:
    """Whether the mean of the probes' divergence estimates (P, N) is ≥ 0, as every posterior mean's is.

    By Tweedie's formula the MMSE denoiser's Jacobian is Cov(x | y)/σ², positive semidefinite, so its
    divergence is never negative. A label-free run can drive it below zero while held-out SURE still
    falls: on a piecewise-constant record the adapted network's divergence went from +0.018 to −0.006 per
    sample, its held-out SURE read 4 × below its true error, and it was 8 % worse than its start
    (docs/adaptation.md). Such a step has left the denoisers SURE can judge on a few windows: refused.
    """
    return float(divergence.double().mean()) >= 0.0



def residual_sigma(model: ICNN_s, record: np.ndarray, first: float, seed: int) -> float:
    """The noise σ of ``record`` from the start model's residual: ‖y − f(y)‖² / (L − 2·div f(y)).

    By Stein's lemma that ratio's expectation is σ² plus the start's own mean square error over
    (1 − 2·div/L), so it errs upwards by a few per cent of σ² where the start denoises well. The
    wavelet MAD estimate (``first``, which sets the probes' step) errs by 2..20 % on signals with
    detail at the finest scale (spikes, sums of families), and SURE, the adaptation's loss and its
    judge, is only as good as its σ. The divergence is a Monte-Carlo estimate with antithetic probes.
    """
    y = np.asarray(record, dtype=np.float64)
    rng = np.random.default_rng([seed, RESIDUAL_STREAM])
    step = RESIDUAL_EPSILON * first
    divergence = 0.0
    for _ in range(RESIDUAL_PROBES):
        probe = rng.standard_normal(y.size)
        plus, minus = denoise(model, (y + step * probe)[None])[0], denoise(model, (y - step * probe)[None])[0]
        divergence += float(np.dot((plus - minus) / (2 * step), probe)) / RESIDUAL_PROBES
    residual = float(np.sum((y - denoise(model, y[None])[0]) ** 2))
    dof = y.size - 2 * divergence
    return float(np.sqrt(residual / dof)) if dof > 0 and residual > 0 else first


def short_record_note(length: int) -> str | None:
    """One line for an adaptation to a record shorter than :data:`SHORT_RECORD` samples; None otherwise."""
    if length >= SHORT_RECORD:
        return None
    return (f"note: on records under {SHORT_RECORD} samples adaptation gained nothing where it was measured and can "
            f"fit the noise of the samples it trains on (docs/adaptation.md); compare it with the start by "
            f"--method auto")

"""How long a run trains and when it stops or warns.

With --data and no --steps the budget follows the data: a number of passes over the
training signals, a fixed number of validations per run, and a patience that stops the
run when validation stops improving. The run warns when the data is small for its
steps, when validation SURE turns negative, and when the best model is no better than
the noisy input.

Each ``cfg`` here is a train.TrainConfig, left unannotated: train.py imports this module.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from Pytorch_V1.checkpoint import TrainState
from Pytorch_V1.data import Validation
from Pytorch_V1.distributed import Workers, note
from Pytorch_V1.losses import LABEL_FREE

# --data without --steps: the budget follows the data (budget_from_data).
DATA_PASSES = 30.0  # passes over the training signals
MIN_DATA_STEPS = 800  # ... but at least this many steps (a record gives few signals per pass)
DATA_EVALS = 20  # validations per run, so --patience has something to count
DATA_PATIENCE = 5  # evaluations without a better validation before the run stops
SMALL_DATA_BATCHES = 20  # warn when the training signals are fewer than this many batches


def stalled(cfg, state: TrainState, workers: Workers) -> bool:
    """True when validation has not improved for ``cfg.patience`` evaluations; every worker gets the main one's answer."""
    answer = cfg.patience is not None and state.step - state.lowest_step >= cfg.patience * cfg.eval_every
    if workers.world_size > 1:
        box = [answer]
        torch.distributed.broadcast_object_list(box, src=0)
        answer = box[0]
    return bool(answer)


def warn_negative_sure(cfg, state: TrainState, workers: Workers) -> None:
    """One warning line when validation SURE, an estimate of a mean square error, is negative: it is being gamed."""
    if cfg.loss not in LABEL_FREE:
        return
    raw = state.val.get("raw_sure")
    if raw is not None and raw < 0:
        note(f"warning: validation SURE is negative ({raw:.4g}) at step {state.step}: the divergence estimate is "
             f"being gamed; use ckpt_best.pth (step {state.best_step}), raise --sure-floor or lower --lr", workers)


def warn_worse_than_noisy(cfg, val: Validation, state: TrainState, workers: Workers) -> None:
    """One warning line when the best label-free validation is no better than returning the input,
    whose SURE is exactly σ²: the model would make the data worse."""
    if cfg.loss not in LABEL_FREE or cfg.loss == "unsure" or not math.isfinite(state.best):
        return
    noisy = float(val.sigmas.double().pow(2).mean().sqrt())
    if state.best >= noisy:
        note(f"warning: the best validation √(mean SURE) {state.best:.4g} (step {state.best_step}) is no better than "
             f"the noisy input's {noisy:.4g}: this model makes the data worse; train longer (--steps) or use a "
             f"classical denoiser", workers)


def budget_from_data(cfg, stream, workers: Workers):
    """--data without --steps: the steps of ``cfg.passes`` passes over the training signals (within
    [MIN_DATA_STEPS, the default steps]) and DATA_EVALS validations; a warning when the data is small."""
    n = stream.size
    if cfg.passes is not None:
        cfg = replace(cfg, steps=min(cfg.steps, max(MIN_DATA_STEPS, math.ceil(cfg.passes * n / cfg.batch_size))))
    if cfg.eval_every == 0:
        cfg = replace(cfg, eval_every=max(1, cfg.steps // DATA_EVALS))
    if n < SMALL_DATA_BATCHES * cfg.batch_size:
        stop = "" if cfg.patience is None else f", and the run stops after {cfg.patience} evaluations without a better one"
        note(f"warning: {n} training signals are few for {cfg.steps} steps of {cfg.batch_size} "
             f"({cfg.steps * cfg.batch_size / n:.0f} passes): expect overfitting; ckpt_best.pth is the best "
             f"validation step{stop}", workers)
    return cfg

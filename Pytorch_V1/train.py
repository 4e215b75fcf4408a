"""Train ICNN_s on sparse-spike signals.

    python Pytorch_V1/train.py                       # the shipped recipe, CPU-friendly
    python Pytorch_V1/train.py --sigma 0.5:5         # blind: a noise level per signal
    python Pytorch_V1/train.py --loss sure           # no clean labels (Stein's unbiased risk)
    python Pytorch_V1/train.py --data DIR            # your own data/N.txt (+ labels/N.txt)
    python Pytorch_V1/train.py --data REC.npy --loss sure --sigma auto   # one record, no labels
    python Pytorch_V1/train.py --data REC.npy --init ckpt/ckpt_universal.pth --loss sure   # adapt to it
    torchrun --standalone --nproc-per-node=2 Pytorch_V1/train.py   # DistributedDataParallel

Each run writes a NEW folder, runs/train-YYYYmmdd-HHMMSS under the current
directory (or --run-dir DIR): ckpt_last.pth (every --save-every steps and at
the end), ckpt_best.pth (best on validation), train_log.csv, train_curve.png.
A --run-dir inside the repository's tracked folders (ckpt/, TestSamples/, demo/) is
refused, whatever the flags; the run ends by printing the commands that test it,
convert it and evaluate it (after --data REC: denoise REC with it, and score it beside every candidate).
Every new run marks its folder (.train-run). A folder that holds a run is refused
unless --resume (continue it) or --overwrite (delete that run, named first, and start
again; only in a folder a train.py run made, with the mark). One run per folder: a
lock is held for the whole run.

Validation (--val-size): on synthetic data, fresh signals from their own seeded
stream; with --data, a seeded share of the folder held out of training.
Validation picks ckpt_best.pth and the recorded BN mode.

--init CKPT starts from a trained model and takes its architecture. A run with --init
validates the start before the first step, so ckpt_best.pth is never worse than the start
on validation; with --data it adapts the model to your signals with a fine-tune's recipe
(batch {batch}, lr {lr:g}) and --adapt picks which weights move.

Learning rate (get_lr): a linear warm-up over the first 5 % of the steps, then
a cosine from --lr down to 1 % of it at the last step. It is a function of the
step and the run's total steps only, so `--resume --steps N` follows, from the
saved step on, exactly the curve of a fresh N-step run: a longer run
re-stretches the remaining decay, a shorter one ends its decay sooner.

--resume continues ckpt_last.pth at its step with its saved config; it honours
--steps, --eval-every, --save-every, --device and --threads, and refuses any
flag that would change what the run is (seed, data, model, loss, sigma, ...).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from icnn.spec import BN_MODES, MIN_LENGTH, ModelConfig, inference_modes
from Pytorch_V1 import train_args
from Pytorch_V1.adapt import ADAPT_RECIPE, StartGuard, kept_start_note, trainable_parameters
from Pytorch_V1.bn_calibration import BN_CALIBRATION_BATCHES, recalibrate_batch_norm
from Pytorch_V1.checkpoint import Parts, TrainState, checkpoint_dict, load_initial_weights, restore, save_checkpoint
from Pytorch_V1.data import STEP_STREAM, Validation, check_training_memory, to_tensor
from Pytorch_V1.distributed import Workers, gather_stream_state, leave_worker, note, process_group, worker_device, wrap_model
from Pytorch_V1.inference import configure_threads, resolve_device
from Pytorch_V1.losses import (LABEL_FREE, SURE_CENTRAL, SURE_EPSILON, SURE_FLOOR_SD, UnsureEta,
                               compute_loss, sure_from_divergence, validation_outputs)
from Pytorch_V1.model import ICNN_s
from Pytorch_V1.rundir import RunDir, check_reads_outside, default_run_dir, open_run
from Pytorch_V1.runstart import start_config, start_data, start_guard
from Pytorch_V1.schedule import stalled, warn_negative_sure, warn_worse_than_noisy
# the command line lives in train_args; its constants stay importable as train.X
from Pytorch_V1.train_args import BROAD_LENGTH, SURE_RECIPE, TRAIN_PRIORS, given_flags, parse_args  # noqa: F401
from Pytorch_V1.trainlog import append_log, finish, progress_text, start_log
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.metrics import mse, rmse
from deepdenoise1d.progress import Progress
from deepdenoise1d.synthesis import SIGNAL_LENGTH, TRAIN_SEED
from deepdenoise1d.threads import resolve_threads


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; saved as plain types in every checkpoint, never changed by the loop."""

    steps: int = 3000
    batch_size: int = 256  # signals per step, over all workers
    lr: float = 6e-3  # peak learning rate (get_lr)
    optimizer: str = "adam"
    loss: str = "mse"  # mse, smoothl1 (the original repository's), rmse (per signal, averaged); label-free: sure, r2r or unsure
    sigma: list[float] | None = None  # [low, high] (low == high: one σ); None until resolved (load_data)
    sigma_per_signal: bool = False  # --data with varying σ: each signal's own estimate (noise.folder_sigmas)
    seed: int = TRAIN_SEED
    bn_train: str = "batch"  # BN statistics while training: batch, signal or mixed
    bn_mode: str | None = None  # inference BN mode to record; None picks the better on validation
    sparsity_weight: float = 0.0  # L1 weight on normalised activations (sparse_bn)
    weight_by: str = "none"  # per-signal loss weight (blind runs): none, sigma2 (1/σ²) or bayes (1/Bayes MSE at σ)
    sure_epsilon: float = SURE_EPSILON
    sure_probes: int = 1  # Monte-Carlo probes per signal and step
    sure_central: bool = SURE_CENTRAL
    r2r_alpha: float = 0.5  # --loss r2r: recorrupt with ασz, target y − σz/α
    sigma_estimate: str = "true"  # σ the label-free loss gets: the true one, each signal's estimate, or it shrunk
    lr_final: float = 0.01  # the cosine ends at this fraction of --lr
    ema: float = 0.0  # decay of a moving average of the weights, which validation, ckpt_best and users get; 0: off
    init: str | None = None  # warm start from this checkpoint's weights (fine-tuning); None: seeded random
    init_sha256: str | None = None  # of the --init file, so the run records exactly what it started from
    data: str | None = None  # a folder in the original repository's layout, or a signal file; None: fresh synthetic signals
    data_sha256: str | None = None  # of a --data file, so that a resume can tell it was rewritten (runstart)
    val_size: int | None = None  # None: data.SYNTHETIC_VAL, or data.held_out_size of the folder
    split: dict | None = None  # --data: how the validation signals were held out
    eval_every: int = 250
    save_every: int = 500
    warmup: float = 0.05  # fraction of steps with a linear warm-up
    device: str = "auto"
    model: dict = field(default_factory=lambda: {"prior": True, "norm": "bn", "equivariant": True, "baseline": "median",
                                                 "width": 2, "depth": 4})
    sure_floor: float = SURE_FLOOR_SD  # per-signal SURE is reflected at −this·σ²·√(2/L) (losses.floored_sure); 0: off
    crop_length: int = SIGNAL_LENGTH  # --data RECORD or --train-prior broad: training signals of this length
    train_prior: str = "spikes"  # synthetic signals: the benchmark's spikes, or deepdenoise1d.broad_prior's families
    spike_share: float = 0.0  # --train-prior broad: this share of each batch is the benchmark's spikes (data.BroadStream)
    input_scale: float = 1.0  # --data RECORD: the record was divided by this (its σ); also in the model config
    passes: float | None = None  # steps from the data: this many passes over the training signals (budget_from_data)
    patience: int | None = None  # stop after this many evaluations without a better validation; None: never
    adapt: str = "all"  # which weights the optimiser moves: all, or the convolutions' biases (adapt.ADAPT_PARTS)


def get_args(argv=None) -> argparse.Namespace:
    """Parse and check the flags (train_args). Flags that define the run default to None, so that
    :func:`given_flags` can tell what the user typed (a resumed run refuses those)."""
    description = __doc__.format(batch=ADAPT_RECIPE["batch_size"], lr=ADAPT_RECIPE["lr"])
    return parse_args(argv, description, TrainConfig())


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """A TrainConfig: the given flags, TrainConfig's defaults for the rest (SURE_RECIPE for label-free losses)."""
    return train_args.config_from_args(a, TrainConfig())


# ---------------------------------------------------------------------------
# model and optimiser


def build_parts(cfg: TrainConfig, workers: Workers, device: torch.device, warm_start: bool = True) -> Parts:
    """Model, optimiser and generators; the weights of ``cfg.init`` when given and ``warm_start``."""
    with torch.random.fork_rng(devices=[]):  # seeded init without touching global RNG state
        torch.manual_seed(cfg.seed)
        model = ICNN_s(ModelConfig.from_dict(cfg.model, "train config"))
    if cfg.init is not None and warm_start:
        load_initial_weights(model, cfg)
    model.to(device).train()
    params = trainable_parameters(model, cfg.adapt)
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=get_lr(0, cfg), fused=True)  # one kernel for all tiny tensors
    else:
        optimizer = torch.optim.SGD(params, lr=get_lr(0, cfg), momentum=0.9, weight_decay=1e-6)
    use_amp = device.type == "cuda" and cfg.loss not in LABEL_FREE  # finite differences need float32
    average = None
    # Only the main worker validates and saves, so only it keeps the average. Buffers too: BN's
    # running statistics must match the averaged weights.
    if cfg.ema > 0 and workers.is_main:
        average = AveragedModel(model, multi_avg_fn=partial(ema_update, cfg.ema), use_buffers=True)
    return Parts(model, wrap_model(model, device, workers), optimizer, torch.amp.GradScaler("cuda", enabled=use_amp),
                 np.random.default_rng([cfg.seed, STEP_STREAM, workers.rank]), device, use_amp,
                 eta=UnsureEta() if cfg.loss == "unsure" else None, average=average)


@torch.no_grad()
def ema_update(decay: float, averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor) -> None:
    """AveragedModel's multi_avg_fn: average ← d·average + (1 − d)·current, with d = min(decay, (1 + n)/(10 + n))
    after n updates, so the average never reaches back more than about n/9 steps: early, far-off weights
    (the random init at n = 0) fade instead of weighing decay**n."""
    weight = 1 - min(decay, (1 + float(count)) / (10 + float(count)))
    for a, c in zip(averaged, current):
        if a.is_floating_point():
            a.lerp_(c, weight)
        else:
            a.copy_(c)  # BN's batch counters


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based) in a run of ``cfg.steps`` steps.

    Linear warm-up over the first ``cfg.warmup`` of the steps, then a cosine from
    ``cfg.lr`` to ``cfg.lr_final`` of it (1 % by default) at ``cfg.steps``. A function of (step, steps) only:
    a resumed run with other --steps follows the curve of a fresh run of that length.
    """
    warm = max(1, int(cfg.warmup * cfg.steps))
    if step < warm:
        return cfg.lr * ((step + 1) / warm)
    t = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


# ---------------------------------------------------------------------------
# one step


def get_batch(stream, parts: Parts):
    """(x, h, clean, sigmas) of the next batch: tensors, and σ per signal as NumPy (B,); clean None without labels."""
    noisy, clean, sigmas = stream.next_batch()
    x = to_tensor(noisy, parts.device)
    h = parts.model.prior(x)
    clean = to_tensor(clean, parts.device) if clean is not None else None
    return x, h, clean, sigmas


def train_step(cfg: TrainConfig, parts: Parts, batch, step: int) -> float:
    """One optimiser step at learning rate get_lr(step); returns the loss."""
    per_signal = cfg.bn_train == "signal" or (cfg.bn_train == "mixed" and parts.flip_rng.random() < 0.5)
    parts.model.set_signal_stats(per_signal)
    for group in parts.optimizer.param_groups:
        group["lr"] = get_lr(step, cfg)
    with torch.autocast(parts.device.type, dtype=torch.float16, enabled=parts.use_amp):
        loss = compute_loss(cfg, parts, *batch)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    if parts.average is not None:
        parts.average.update_parameters(parts.model)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise InputError(f"training diverged at step {step + 1} (loss {value}); try a lower --lr")
    return value


# ---------------------------------------------------------------------------
# evaluate


@torch.no_grad()
def evaluate(model: ICNN_s, val: Validation, sigmas: torch.Tensor | None = None,
             keep: dict | None = None) -> dict[str, float]:
    """Validation in both BN modes: RMSE (with labels) and, for label-free runs, the label-free √(mean SURE).

    ``sigmas`` replaces ``val.sigmas`` in SURE (UNSURE's learned σ). ``keep``, a dict, receives per BN mode
    the outputs (N, 1, L) and each probe's divergences (P, N) that SURE was computed from
    (:func:`~Pytorch_V1.losses.validation_outputs`), for the guard's verdict without computing them twice.
    """
    sigmas = val.sigmas if sigmas is None else sigmas
    out = {}
    modes = inference_modes(model.config)
    for mode in modes:
        pred, divergence = validation_outputs(model, val, mode, sigmas)
        denoised = pred[:, 0].double().cpu().numpy()
        if val.clean is not None:
            out[mode] = float(rmse(denoised, val.clean).mean())
        if divergence is not None:
            if keep is not None:
                keep[mode] = (pred, divergence)
            # compare sqrt(mean SURE) with sqrt(mean MSE): per-signal SURE is too noisy to root
            mean_sure = float(sure_from_divergence(val.x, pred, sigmas**2, divergence.mean(dim=0)).mean())
            # signed, so that a mean below 0 (noise, where the error is far below σ²) still ranks the steps
            out[f"sure_{mode}"] = math.copysign(math.sqrt(abs(mean_sure)), mean_sure)
            if mean_sure < -sure_tolerance(sigmas, val.x.shape[-1]):  # below what noise explains: gamed (warn_negative_sure)
                out["raw_sure"] = min(mean_sure, out.get("raw_sure", 0.0))
            if val.clean is not None:
                out[f"root_mse_{mode}"] = float(np.sqrt(mse(denoised, val.clean).mean()))
    for other in BN_MODES[len(modes):]:  # no running statistics: both modes compute the same, scored once
        out.update({key.replace(modes[0], other): value for key, value in list(out.items()) if key.endswith(modes[0])})
        if keep is not None and modes[0] in keep:
            keep[other] = keep[modes[0]]
    return out


def sure_tolerance(sigmas: torch.Tensor, length: int) -> float:
    """How far below 0 the validation's mean SURE goes by noise alone: SURE_FLOOR_SD standard deviations of
    the mean of its signals' noise energy, σ²·√(2 / (signals · length)) each."""
    variance = float(sigmas.double().pow(2).mean())
    return SURE_FLOOR_SD * variance * math.sqrt(2.0 / (sigmas.numel() * length))


def selection_scores(val_result: dict, loss: str) -> dict[str, float]:
    """Per BN mode, what picks the best checkpoint: SURE for label-free runs, else validation RMSE."""
    return {m: val_result[f"sure_{m}" if loss in LABEL_FREE else m] for m in BN_MODES}


# ---------------------------------------------------------------------------
# the loop


def validate_and_keep_best(cfg: TrainConfig, parts: Parts, val: Validation, state: TrainState, run: RunDir,
                           stream, stream_state, workers: Workers, seconds: float, guard: StartGuard | None = None) -> None:
    """Evaluate, log a row, and write ckpt_best.pth when validation improved (main worker only); with a
    ``guard``, a step replaces the start only when it beats it by more than noise explains."""
    learned = None if parts.eta is None else torch.full_like(val.sigmas, parts.eta.sigma)
    if cfg.train_prior == "broad":  # heavy-tailed batches leave BN's running statistics astray: re-estimate them
        recalibrate_batch_norm(parts.deployed, stream.calibration_batches(BN_CALIBRATION_BATCHES, parts.device))
    computed = {}  # what SURE was computed from, per BN mode: the guard's verdict reuses it
    state.val = evaluate(parts.deployed, val, learned, keep=computed if learned is None else None)
    if parts.eta is not None:
        state.val["unsure_sigma"] = parts.eta.sigma
    append_log(run.file("train_log.csv"), state, get_lr(state.step, cfg), seconds)
    state.loss_sum, state.loss_count = 0.0, 0
    scores = selection_scores(state.val, cfg.loss)
    mode = cfg.bn_mode or min(scores, key=scores.get)
    admissible = allowed = True  # without a guard (or at the start itself) every step is judged by its score alone
    if guard is not None and state.step > 0 and scores[mode] < state.best:  # lowest ≤ best: both are decided here
        admissible, allowed = guard.verdict(parts.deployed, val, mode, scores[mode], computed.get(mode))
    # UNSURE's SURE uses its own learned σ, which drifts, so it cannot rank steps: its best is its latest.
    # Patience counts from the lowest SURE of an admissible step: a negative divergence does not restart the wait.
    if (scores[mode] < state.lowest and admissible) or parts.eta is not None:
        state.lowest, state.lowest_step = scores[mode], state.step
    improved = scores[mode] < state.best and allowed
    if improved or parts.eta is not None:
        state.best, state.best_step, state.bn_mode = scores[mode], state.step, mode
        save_checkpoint(run.file("ckpt_best.pth"), checkpoint_dict(cfg, parts, state, stream, stream_state, workers))


def train_loop(cfg: TrainConfig, parts: Parts, stream, val: Validation, state: TrainState, run: RunDir,
               workers: Workers, guard: StartGuard | None = None) -> None:
    start = time.time()
    if cfg.init is not None and state.step == 0:  # the start is a candidate: never hand back worse
        stream_state = gather_stream_state(stream, workers)
        if workers.is_main:
            validate_and_keep_best(cfg, parts, val, state, run, stream, stream_state, workers, 0.0, guard)
    bar = Progress(cfg.steps, "train", unit="step", initial=state.step, enabled=workers.is_main)
    while state.step < cfg.steps:
        state.last_loss = train_step(cfg, parts, get_batch(stream, parts), state.step)
        state.step += 1
        state.loss_sum, state.loss_count = state.loss_sum + state.last_loss, state.loss_count + 1
        evaluate_now = state.step % cfg.eval_every == 0 or state.step == cfg.steps
        save_now = state.step % cfg.save_every == 0 or state.step == cfg.steps
        if evaluate_now or save_now:
            stream_state = gather_stream_state(stream, workers)
        if evaluate_now and workers.is_main:
            validate_and_keep_best(cfg, parts, val, state, run, stream, stream_state, workers, time.time() - start, guard)
            bar.set_postfix(progress_text(state, val))
            warn_negative_sure(cfg, state, workers)
        stop = evaluate_now and stalled(cfg, state, workers)
        if stop:
            kept = "" if state.best_step == state.lowest_step else f", kept: step {state.best_step}"
            note(f"validation has not improved for {cfg.patience} evaluations (best at step {state.lowest_step}{kept}): "
                 f"stopping at step {state.step} of {cfg.steps}", workers)
        if (save_now or stop) and workers.is_main:
            save_checkpoint(run.file("ckpt_last.pth"), checkpoint_dict(cfg, parts, state, stream, stream_state, workers))
        bar.update(1)
        if stop:
            break
    bar.close()


# ---------------------------------------------------------------------------
# the whole run


def train(cfg: TrainConfig, run_dir: Path, resume: bool = False, overwrite: bool = False,
          given: set[str] | None = None) -> dict:
    """Run training in ``run_dir``; returns the final validation result. Only the main worker writes.

    With ``resume``, the saved config is used; ``cfg`` supplies the flags a resume may
    change (steps, eval_every, save_every, device), and the flags in ``given``
    (all, when None) must agree with the saved run.
    """
    with process_group() as workers:
        return run_workers(cfg, Path(run_dir), resume, overwrite, given, workers)


def run_workers(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool, given: set[str] | None,
                workers: Workers) -> dict:
    """The body of ``train``; its model and DDP wrapper are freed on return, before the process group goes."""
    if overwrite:
        check_reads_outside(run_dir, {"--init": cfg.init, "--data": cfg.data})
    with open_run(run_dir, resume, overwrite, workers) as run:
        cfg, ckpt = start_config(cfg, run, resume, given, workers)  # a resume: the saved run, its --data unchanged
        device = worker_device(resolve_device(cfg.device), workers)
        cfg, stream, val = start_data(cfg, ckpt is not None, given, workers, device)
        parts = build_parts(cfg, workers, device, warm_start=ckpt is None)
        parts.sigma_prior = val.sigma_prior
        state = TrainState(bn_mode=cfg.bn_mode or "fixed")
        if ckpt is not None:
            state = restore(ckpt, parts, stream, workers, run.file("ckpt_last.pth"))
        verb = f"resuming at step {state.step} of {cfg.steps}" if state.step else f"training {cfg.steps} steps"
        note(f"{verb} in {run.path}; validation on {val.description}", workers)
        if workers.is_main:
            start_log(run.file("train_log.csv"), state.step)
        train_loop(cfg, parts, stream, val, state, run, workers, start_guard(cfg, val, device, workers))
        warn_worse_than_noisy(cfg, val, state, workers)
        kept = kept_start_note(cfg, state)
        if kept is not None:
            note(kept, workers)
        if workers.is_main:
            finish(run, val, state, data=cfg.data, broad=cfg.train_prior == "broad",
                   adapted=cfg.init is not None and cfg.data is not None, record=is_record_run(cfg))
        return state.val


def is_record_run(cfg: TrainConfig) -> bool:
    """Trained on one record's crops (data.record_data): its split names the validation windows' starts."""
    return cfg.split is not None and "val_starts" in cfg.split


def main(argv=None) -> None:
    args = get_args(argv)
    resolve_device(args.device)  # --device cuda without CUDA: one line before any folder is made
    configure_threads(resolve_threads(args.threads))
    cfg = config_from_args(args)
    if not args.resume:  # before any folder, lock or log: synthetic signals have SIGNAL_LENGTH, a folder's at least MIN_LENGTH
        check_training_memory(cfg.batch_size, SIGNAL_LENGTH if cfg.data is None else MIN_LENGTH)
    run_dir = args.run_dir if args.run_dir is not None else default_run_dir()
    train(cfg, run_dir, args.resume, args.overwrite, given_flags(args))


if __name__ == "__main__":
    run_cli(main, "train.py")
    leave_worker()

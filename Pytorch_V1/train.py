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
convert it and evaluate it (on your own held-out signals after --data).
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
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from icnn.spec import BASELINES, BN_MODES, BN_TRAIN_STATS, CHUNK, MIN_LENGTH, NORMS, ModelConfig
from Pytorch_V1.adapt import (ADAPT_PARTS, ADAPT_RECIPE, SIGMA_DOUBT, StartGuard, init_model, kept_start_note,
                              trainable_parameters)
from Pytorch_V1.checkpoint import (RESUMABLE, RUN_FLAGS, Parts, TrainState, checkpoint_dict, file_sha256,
                                   load_initial_weights, load_resume_point, restore, resumed_config, save_checkpoint)
from Pytorch_V1.data import (MIN_VAL, STEP_STREAM, SYNTHETIC_VAL, VAL_FRACTION, Validation,
                             check_training_memory, load_data, to_tensor)
from Pytorch_V1.distributed import (Workers, gather_stream_state, leave_worker, note, process_group, worker_device,
                                    wrap_model)
from Pytorch_V1.inference import configure_threads, resolve_device
from Pytorch_V1.losses import (LABEL_FREE, SURE_CENTRAL, SURE_EPSILON, SURE_FLOOR_SD, VAL_EPSILON, WEIGHTS, UnsureEta,
                               compute_loss, sure_per_signal)
from Pytorch_V1.model import ICNN_s
from Pytorch_V1.rundir import RunDir, check_reads_outside, default_run_dir, open_run
from Pytorch_V1.schedule import (DATA_PASSES, DATA_PATIENCE, MIN_DATA_STEPS, budget_from_data, stalled,
                                 warn_negative_sure, warn_worse_than_noisy)
from Pytorch_V1.trainlog import append_log, finish, progress_text, start_log
from deepdenoise1d.cli import (add_device_arg, add_threads_arg, batch_size, decay_float, nonnegative_float, seed_int,
                               positive_float, positive_int, sigma_range_or_auto, signal_count)
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.metrics import mse, rmse
from deepdenoise1d.progress import Progress
from deepdenoise1d.synthesis import SIGMA, SIGNAL_LENGTH, TRAIN_SEED
from deepdenoise1d.threads import resolve_threads

# --loss sure trains on a noisier gradient: a larger batch and lr reach the limit in fewer steps.
SURE_RECIPE = {"steps": 1500, "batch_size": 512, "lr": 1e-2}


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
    data: str | None = None  # a folder in the original repository's layout; None: fresh synthetic signals
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
    input_scale: float = 1.0  # --data RECORD: the record was divided by this (its σ); also in the model config
    passes: float | None = None  # steps from the data: this many passes over the training signals (budget_from_data)
    patience: int | None = None  # stop after this many evaluations without a better validation; None: never
    adapt: str = "all"  # which weights the optimiser moves: all, or the convolutions' biases (adapt.ADAPT_PARTS)


TRAIN_PRIORS = ("spikes", "broad")
BROAD_LENGTH = 512  # broad-prior training signals: long enough for a slow oscillation's few cycles
BN_CALIBRATION_BATCHES = 50  # broad prior: batches that re-estimate BN's statistics before each validation


# ---------------------------------------------------------------------------
# command line


def run_dir_arg(text: str) -> Path:
    """argparse type: a folder path that is not an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, expected a run folder")
    return path


class OneLineParser(argparse.ArgumentParser):
    """Bad flags are an InputError: one line on stderr and exit 2 under run_cli (no usage block)."""

    def error(self, message: str):
        raise InputError(f"{message} (see --help)")


def get_args(argv=None) -> argparse.Namespace:
    """Parse and check the flags. Flags that define the run default to None, so that
    :func:`given_flags` can tell what the user typed (a resumed run refuses those)."""
    d = TrainConfig()
    description = __doc__.format(batch=ADAPT_RECIPE["batch_size"], lr=ADAPT_RECIPE["lr"])
    p = OneLineParser(prog="train.py", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, help=f"total (global) optimiser steps (default {d.steps}; "
                                                      f"{SURE_RECIPE['steps']} with --loss sure)")
    p.add_argument("--batch-size", type=batch_size, help=f"signals per step, over all workers (default {d.batch_size}; "
                                                           f"{SURE_RECIPE['batch_size']} with --loss sure)")
    p.add_argument("--lr", type=positive_float, help=f"peak learning rate (default {d.lr}; {SURE_RECIPE['lr']} with --loss sure)")
    p.add_argument("--optimizer", choices=["adam", "sgd"],
                   help="adam (default), or sgd with momentum 0.9 like the original repository")
    p.add_argument("--loss", choices=["mse", "smoothl1", "rmse", *LABEL_FREE],
                   help="mse (default), smoothl1 (the original repository's), rmse (each signal's RMSE, averaged: the broad prior's loss), or label-free: sure (Stein's unbiased "
                        "risk estimate), r2r (Recorrupted-to-Recorrupted, needs sigma like sure) or unsure (learns one "
                        "noise variance for the whole data set)")
    p.add_argument("--sigma", type=sigma_range_or_auto, metavar="S",
                   help=f"noise std of the training signals, LOW:HIGH to draw one per signal (blind), or auto "
                        f"(estimated from --data). Default: {SIGMA:g} on synthetic data, the folder's estimate with --data")
    p.add_argument("--seed", type=seed_int, metavar="K", help=f"seed of weights, data, split and validation (default {TRAIN_SEED})")
    p.add_argument("--norm", choices=NORMS, help="the step after each convolution: bn (default); sparse_bn: BN with a learnable soft "
                        "threshold; none: nothing (conv, then ReLU); alternatives to BN (docs/norms.md): shrink (a soft "
                        "threshold set from each signal's own features), sigma_shrink (a soft threshold in units of the "
                        "noise level), bias_free (no additive constant anywhere), frn (filter response normalisation "
                        "with a thresholded linear unit)")
    p.add_argument("--sparsity-weight", type=nonnegative_float, help="L1 penalty on normalised activations, for --norm sparse_bn (default 0)")
    p.add_argument("--no-prior", action="store_true", default=None, help="switch the Wiener prior branch off (ablation)")
    p.add_argument("--no-equivariant", action="store_true", default=None,
                   help="let the network see the input's absolute scale; by default it normalises each signal by its "
                        "own noise scale, so the model works in any units (f(a·y) = a·f(y))")
    p.add_argument("--train-prior", choices=TRAIN_PRIORS,
                   help="synthetic training signals (without --data): spikes (default, the benchmark's) or broad (nine "
                        f"families of 1-D signals at random scales, offsets and signal-to-noise ratios, crops of "
                        f"--crop-length, default {BROAD_LENGTH} there)")
    p.add_argument("--width", type=positive_int, help="channels of the U-Net's first level, doubling per level (default 2)")
    p.add_argument("--depth", type=positive_int, help="levels of the U-Net: signals of at least 2^depth samples (default 4)")
    p.add_argument("--baseline", choices=BASELINES,
                   help="median (default): the network takes each signal's median off and adds it back, so an offset "
                        "of the record changes nothing but the output's offset (f(y + c) = f(y) + c); none: it sees "
                        "the absolute level, as the models trained before this option")
    p.add_argument("--weight-by", choices=WEIGHTS,
                   help="per-signal loss weight for blind runs, so no noise level dominates: sigma2 (1/sigma^2) or "
                        "bayes (1/the Bayes MSE at that sigma) (default none)")
    p.add_argument("--sure-epsilon", type=positive_float, help=f"SURE's finite-difference step, times sigma (default {d.sure_epsilon})")
    p.add_argument("--sure-probes", type=positive_int, help=f"SURE Monte-Carlo probes per signal and step (default {d.sure_probes})")
    p.add_argument("--sure-one-sided", action="store_const", const=False, dest="sure_central",
                   help="one-sided SURE divergence (f(y+eps b) - f(y))/eps instead of the default antithetic probes")
    p.add_argument("--r2r-alpha", type=positive_float, help=f"--loss r2r: recorruption strength alpha (default {d.r2r_alpha})")
    p.add_argument("--sigma-estimate", choices=("true", "signal", "shrunk"),
                   help="sigma the label-free loss gets on synthetic data: the true one (default); signal: each "
                        "signal's own estimate (blind and label-free: the loss is never told sigma); shrunk: that "
                        "estimate, pulled down where it overshoots the sigma distribution fitted on the noisy "
                        "training signals (deepdenoise1d.noise.shrink_sigma)")
    p.add_argument("--lr-final", type=positive_float, help=f"the cosine ends at this fraction of --lr (default {d.lr_final})")
    p.add_argument("--ema", type=decay_float, metavar="DECAY",
                   help="average the weights: an exponential moving average with this decay per step, which "
                        "reaches back at most about 1/(1 - DECAY) steps and a ninth of the steps so far. Validation, "
                        "ckpt_best.pth and the weights a user loads are the average (default off)")
    p.add_argument("--bn-train", choices=BN_TRAIN_STATS, help="BN statistics in training: batch (default), signal, or a coin flip per step")
    p.add_argument("--bn-mode", choices=BN_MODES, help="BN mode recorded as this model's inference default (default: the better on validation)")
    p.add_argument("--init", metavar="PATH", help="start from the weights of this train.py checkpoint (fine-tune it) "
                                                   "instead of a seeded random init, with its architecture")
    p.add_argument("--adapt", choices=ADAPT_PARTS,
                   help="with --init, the weights that move: all (default) or biases (the convolutions' biases only)")
    p.add_argument("--data", help="train on a folder in the original repository's layout (data/N.txt, labels/N.txt; "
                                  "labels optional with a label-free --loss), or, with a label-free --loss, on a "
                                  "signal file: one record (.npy of shape (L,), .txt/.csv one column; random crops "
                                  "of --crop-length, validated on windows spread along it) or (N, L) signals (.npy)")
    p.add_argument("--crop-length", type=positive_int, metavar="L",
                   help=f"--data RECORD: train on random crops of L samples, the model's train_length (default {d.crop_length})")
    p.add_argument("--passes", type=positive_float, metavar="P",
                   help=f"with --data and no --steps: steps for P passes over the training signals, at least "
                        f"{MIN_DATA_STEPS} and at most the default steps (default {DATA_PASSES:g})")
    p.add_argument("--patience", type=positive_int, metavar="K",
                   help=f"stop when validation has not improved for K evaluations (default {DATA_PATIENCE} with "
                        f"--data, else never)")
    p.add_argument("--sure-floor", type=nonnegative_float, metavar="K",
                   help=f"--loss sure: reflect each signal's SURE at -K sigma^2 sqrt(2/L), K standard deviations of "
                        f"its noise below 0, so a gamed divergence estimate cannot lower the loss (default "
                        f"{SURE_FLOOR_SD:g}; 0: off)")
    p.add_argument("--val-size", type=signal_count,
                   help=f"validation signals (default {SYNTHETIC_VAL} synthetic; with --data {100 * VAL_FRACTION:g} %% "
                        f"of it, at least {MIN_VAL})")
    p.add_argument("--eval-every", type=positive_int, help=f"validate every N steps (default {d.eval_every})")
    p.add_argument("--save-every", type=positive_int, help=f"write ckpt_last.pth every N steps (default {d.save_every})")
    add_device_arg(p)
    add_threads_arg(p)
    p.add_argument("--run-dir", type=run_dir_arg, metavar="DIR", help="the run folder (default: a new runs/train-YYYYmmdd-HHMMSS); never inside the "
                   "repository's tracked ckpt/, TestSamples/ or demo/")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from ckpt_last.pth, with its saved config")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --run-dir (named first) and start again; only in a folder that a "
                   "train.py run made (its .train-run mark)")
    a = p.parse_args(argv)
    if a.sigma == "auto" and a.data is None and not a.resume:
        p.error("--sigma auto (estimate the noise level) needs --data")
    if a.resume and a.overwrite:
        p.error("--resume and --overwrite exclude each other")
    if a.resume and a.run_dir is None:
        p.error("--resume needs --run-dir DIR (the run to continue)")
    return a


def given_flags(args: argparse.Namespace) -> set[str]:
    """The flags the user typed, among RUN_FLAGS and RESUMABLE (argparse left the others at None)."""
    return {name for name in (*RUN_FLAGS, *RESUMABLE) if getattr(args, name) is not None}


def model_from_args(a: argparse.Namespace, start: dict) -> dict:
    """TrainConfig.model: the model flags given, else the --init checkpoint's (``start``), else the original ICNN_s."""
    given = {"prior": None if a.no_prior is None else not a.no_prior, "norm": a.norm,
             "equivariant": None if a.no_equivariant is None else not a.no_equivariant,
             "baseline": a.baseline, "width": a.width, "depth": a.depth}
    defaults = {"prior": True, "norm": "bn", "equivariant": True, "baseline": "median", "width": 2, "depth": 4, **start}
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """A TrainConfig: the given flags, TrainConfig's defaults for the rest (:data:`SURE_RECIPE` for label-free losses)."""
    d = replace(TrainConfig(), **SURE_RECIPE) if a.loss in LABEL_FREE else TrainConfig()
    adapting = a.init is not None and a.data is not None
    if adapting:
        d = replace(d, **ADAPT_RECIPE)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    start = init_model(a.init, data=a.data is not None) if a.init is not None else {}
    model = model_from_args(a, start)
    crop_default = start["train_length"] if adapting else BROAD_LENGTH if a.train_prior == "broad" else d.crop_length
    return TrainConfig(
        steps=pick(a.steps, d.steps), batch_size=pick(a.batch_size, d.batch_size), lr=pick(a.lr, d.lr),
        optimizer=pick(a.optimizer, d.optimizer), loss=pick(a.loss, d.loss),
        sigma=None if a.sigma == "auto" else a.sigma, seed=pick(a.seed, d.seed), bn_train=pick(a.bn_train, d.bn_train),
        bn_mode=a.bn_mode, sparsity_weight=pick(a.sparsity_weight, d.sparsity_weight),
        weight_by=pick(a.weight_by, d.weight_by), sure_epsilon=pick(a.sure_epsilon, d.sure_epsilon),
        sure_probes=pick(a.sure_probes, d.sure_probes), sure_central=pick(a.sure_central, d.sure_central),
        sigma_estimate=pick(a.sigma_estimate, d.sigma_estimate), r2r_alpha=pick(a.r2r_alpha, d.r2r_alpha), lr_final=pick(a.lr_final, d.lr_final),
        ema=pick(a.ema, d.ema),
        sure_floor=pick(a.sure_floor, d.sure_floor), crop_length=pick(a.crop_length, crop_default),
        passes=pick(a.passes, DATA_PASSES) if a.data is not None and a.steps is None else None,
        patience=pick(a.patience, DATA_PATIENCE if a.data is not None else None),
        data=a.data, val_size=a.val_size, init=a.init, init_sha256=None if a.init is None else file_sha256(a.init),
        # 0: chosen with the steps (budget_from_data)
        eval_every=pick(a.eval_every, 0 if a.data is not None and a.steps is None else d.eval_every), save_every=pick(a.save_every, d.save_every), device=a.device,
        model=model, train_prior=pick(a.train_prior, "spikes"), adapt=pick(a.adapt, d.adapt),
    )


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
def evaluate(model: ICNN_s, val: Validation, sigmas: torch.Tensor | None = None) -> dict[str, float]:
    """Validation in both BN modes: RMSE (with labels) and, for label-free runs, the label-free √(mean SURE).

    ``sigmas`` replaces ``val.sigmas`` in SURE (UNSURE's learned σ).
    """
    sigmas = val.sigmas if sigmas is None else sigmas
    model.eval()
    out = {}
    try:
        for mode in BN_MODES:
            preds, risks = [], []
            for s in (slice(i, i + CHUNK) for i in range(0, val.x.shape[0], CHUNK)):
                h = val.h[s] if val.h is not None else None
                pred = model(val.x[s], h, bn_mode=mode)
                preds.append(pred[:, 0].double().cpu().numpy())
                if val.probe is not None:
                    risks.append(sure_per_signal(partial(model, bn_mode=mode), val.x[s], pred, sigmas[s],
                                                 val.probe[:, s], VAL_EPSILON, h is not None, central=True))
            pred = np.concatenate(preds)
            if val.clean is not None:
                out[mode] = float(rmse(pred, val.clean).mean())
            if risks:  # compare sqrt(mean SURE) with sqrt(mean MSE): per-signal SURE is too noisy to root
                mean_sure = float(torch.cat(risks).mean())
                # signed, so that a mean below 0 (noise, where the error is far below σ²) still ranks the steps
                out[f"sure_{mode}"] = math.copysign(math.sqrt(abs(mean_sure)), mean_sure)
                if mean_sure < -sure_tolerance(sigmas, val.x.shape[-1]):  # below what noise explains: gamed (warn_negative_sure)
                    out["raw_sure"] = min(mean_sure, out.get("raw_sure", 0.0))
                if val.clean is not None:
                    out[f"root_mse_{mode}"] = float(np.sqrt(mse(pred, val.clean).mean()))
    finally:
        model.train()
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


@torch.no_grad()
def recalibrate_batch_norm(model: ICNN_s, batches) -> None:
    """Replace every BN's running statistics by their plain average over ``batches`` ((B, 1, L) tensors).

    On the broad prior a running average with momentum follows the last few batches, and a batch of
    sharp peaks moves it far: validation in fixed BN then drifts while the training loss falls.
    """
    norms = model.batch_norms()
    if not norms:  # norm "none": no statistics to estimate
        return
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # nn.BatchNorm1d: a cumulative average
    training = model.training
    model.train()
    for x in batches:
        model(x)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.train(training)


def validate_and_keep_best(cfg: TrainConfig, parts: Parts, val: Validation, state: TrainState, run: RunDir,
                           stream, stream_state, workers: Workers, seconds: float, guard: StartGuard | None = None) -> None:
    """Evaluate, log a row, and write ckpt_best.pth when validation improved (main worker only); with a
    ``guard``, a step replaces the start only when it beats it by more than noise explains."""
    learned = None if parts.eta is None else torch.full_like(val.sigmas, parts.eta.sigma)
    if cfg.train_prior == "broad":  # heavy-tailed batches leave BN's running statistics astray: re-estimate them
        recalibrate_batch_norm(parts.deployed, stream.calibration_batches(BN_CALIBRATION_BATCHES, parts.device))
    state.val = evaluate(parts.deployed, val, learned)
    if parts.eta is not None:
        state.val["unsure_sigma"] = parts.eta.sigma
    append_log(run.file("train_log.csv"), state, get_lr(state.step, cfg), seconds)
    state.loss_sum, state.loss_count = 0.0, 0
    scores = selection_scores(state.val, cfg.loss)
    mode = cfg.bn_mode or min(scores, key=scores.get)
    # UNSURE's SURE uses its own learned σ, which drifts, so it cannot rank steps: its best is its latest.
    improved = scores[mode] < state.best and (guard is None or state.step == 0
                                              or guard.allows(parts.deployed, val, mode, scores[mode]))
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
            note(f"validation has not improved for {cfg.patience} evaluations (best at step {state.best_step}): "
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
        ckpt = load_resume_point(run.file("ckpt_last.pth")) if resume else None
        if ckpt is not None:
            cfg = resumed_config(ckpt, cfg, given, run.file("ckpt_last.pth"))
        device = worker_device(resolve_device(cfg.device), workers)
        cfg, stream, val = load_data(cfg, workers, device)
        if cfg.data is not None and (ckpt is None or (given is not None and "steps" not in given)):  # a resume's --steps stands
            cfg = budget_from_data(cfg, stream, workers)
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
                   adapted=cfg.init is not None and cfg.data is not None)
        return state.val


def start_guard(cfg: TrainConfig, val: Validation, device: torch.device, workers: Workers) -> StartGuard | None:
    """A label-free run from --init: the start's held-out outputs and SURE, which a step must beat by more than
    noise explains (main worker; rebuilt from the --init file on resume)."""
    if cfg.init is None or cfg.loss not in LABEL_FREE or cfg.loss == "unsure" or not workers.is_main:
        return None
    model = ICNN_s(ModelConfig.from_dict(cfg.model, "train config"))
    load_initial_weights(model, cfg)
    model.to(device)
    # σ is estimated from --data; synthetic validation knows it exactly
    return StartGuard.of(model, val, sigma_doubt=SIGMA_DOUBT if cfg.data is not None else 0.0)


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

"""Train ICNN_s on sparse-spike signals.

    python Pytorch_V1/train.py                       # the shipped recipe, CPU-friendly
    python Pytorch_V1/train.py --sigma 0.5:5         # blind: a noise level per signal
    python Pytorch_V1/train.py --loss sure           # no clean labels (Stein's unbiased risk)
    python Pytorch_V1/train.py --data DIR            # your own data/N.txt (+ labels/N.txt)
    torchrun --standalone --nproc-per-node=2 Pytorch_V1/train.py   # DistributedDataParallel

Each run writes a NEW folder, runs/train-YYYYmmdd-HHMMSS under the current
directory (or --run-dir DIR): ckpt_last.pth (every --save-every steps and at
the end), ckpt_best.pth (best on validation), train_log.csv, train_curve.png.
It never writes into ckpt/: promoting a run there is an explicit step, and the
run ends by printing the commands to test, convert and promote it.
A folder that holds a run is refused unless --resume (continue it) or
--overwrite (replace it). One run per folder: a lock is held for the whole run.

Validation: on synthetic data, 1000 fresh signals from default_rng([seed, 999]);
with --data, a seeded 10 % of the folder (at least 100 signals) held out of
training. Validation picks ckpt_best.pth and the recorded BN mode.

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
import csv
import hashlib
import io
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from icnn.spec import BN_MODES, BN_TRAIN_STATS, CHUNK, NORMS, ModelConfig
from Pytorch_V1.checkpoint import FORMAT_VERSION, load_checkpoint, load_state_dict_strict, model_config_of
from Pytorch_V1.data import SPLIT_STREAM, FolderStream, SyntheticStream, held_out_size, split_indices, to_tensor
from Pytorch_V1.inference import configure_threads, resolve_device
from Pytorch_V1.model import ICNN_s, wiener_prior
from Pytorch_V1.rundir import RunDir, default_run_dir
from Pytorch_V1.sure import (folder_sigmas, mc_divergence, per_signal_sigmas, r2r_per_signal, sure_from_divergence,
                              sure_per_signal)
from deepdenoise1d.classical import bayes_mse, bayes_posterior_mean, sigma_prior
from deepdenoise1d.cli import (add_device_arg, add_threads_arg, decay_float, nonnegative_float, nonnegative_int,
                         positive_float, positive_int, run_cli)
from deepdenoise1d.errors import InputError
from deepdenoise1d.io import atomic_write, read_folder_dataset
from deepdenoise1d.metrics import mse, rmse
from deepdenoise1d.plots import save_figure, training_curve
from deepdenoise1d.progress import Progress
from deepdenoise1d.synthesis import SIGMA, TRAIN_SEED, noisy_pairs, parse_sigma
from deepdenoise1d.threads import resolve_threads

REPO = Path(__file__).resolve().parent.parent
LOG_COLUMNS = ["step", "loss", "lr", "val_rmse_fixed", "val_rmse_unfixed", "val_root_mse_fixed",
               "val_sure_root_mse_fixed", "seconds"]
SIGMA_MISMATCH = 0.2  # warn when --sigma and the folder's estimate differ by more than this fraction
WEIGHTS = ("none", "sigma2", "bayes")
LABEL_FREE = ("sure", "r2r", "unsure")  # losses that never see a clean signal (Pytorch_V1/sure.py)
# UNSURE's multiplier η (the noise variance it learns) climbs the loss by momentum ascent; a step
# is UNSURE_STEP times the first batch's mean square, so the rate does not depend on the data's scale.
UNSURE_STEP = 1e-3
UNSURE_MOMENTUM = 0.9
# --loss sure trains on a noisier gradient: a larger batch and lr reach the limit in fewer steps
# (held-out 1.0043 x Bayes at σ = 3 in 1500 steps; the supervised defaults serve --loss mse).
SURE_RECIPE = {"steps": 1500, "batch_size": 512, "lr": 1e-2}
# Validation SURE picks the label-free checkpoint. One probe gives root-SURE a ±0.6 % spread on
# 1000 signals, the size of the differences it must rank; 8 antithetic probes (16 forward
# passes, no gradient) cut that to about ±0.2 %. No gradient flows here, so the step can be small.
VAL_PROBES = 8
VAL_EPSILON = 1e-2
PRIOR_SIGNALS = 20000  # noisy signals that --sigma-estimate shrunk fits the σ distribution on


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; saved as plain types in every checkpoint, never changed by the loop."""

    steps: int = 3000
    batch_size: int = 256  # signals per step, over all workers
    lr: float = 6e-3  # peak learning rate (get_lr)
    optimizer: str = "adam"
    loss: str = "mse"  # mse, smoothl1 (the seed's); label-free: sure, r2r or unsure
    sigma: list[float] | None = None  # [low, high] (low == high: one σ); None until resolved (load_data)
    sigma_per_signal: bool = False  # --data with varying σ: each signal's own estimate (sure.folder_sigmas)
    seed: int = TRAIN_SEED
    bn_train: str = "batch"  # BN statistics while training: batch, signal or mixed
    bn_mode: str | None = None  # inference BN mode to record; None picks the better on validation
    sparsity_weight: float = 0.0  # L1 weight on normalised activations (sparse_bn)
    weight_by: str = "none"  # per-signal loss weight (blind runs): none, sigma2 (1/σ²) or bayes (1/Bayes MSE at σ)
    sure_epsilon: float = 0.1  # SURE's finite-difference step, times σ (antithetic probes: bias O(ε²))
    sure_probes: int = 1  # Monte-Carlo probes per signal and step
    sure_central: bool = True  # antithetic probes, (f(y+εb) − f(y−εb))/2ε; False: one-sided (f(y+εb) − f(y))/ε
    r2r_alpha: float = 0.5  # --loss r2r: recorrupt with ασz, target y − σz/α
    sigma_estimate: str = "true"  # σ the label-free loss gets: the true one, each signal's estimate, or it shrunk
    lr_final: float = 0.01  # the cosine ends at this fraction of --lr
    ema: float = 0.0  # decay of a moving average of the weights, which validation, ckpt_best and users get; 0: off
    init: str | None = None  # warm start from this checkpoint's weights (fine-tuning); None: seeded random
    init_sha256: str | None = None  # of the --init file, so the run records exactly what it started from
    data: str | None = None  # a folder in the seed's layout; None: fresh synthetic signals
    val_size: int | None = None  # None: 1000 synthetic, or 10 % (at least 100) of the folder
    split: dict | None = None  # --data: how the validation signals were held out
    eval_every: int = 250
    save_every: int = 500
    warmup: float = 0.05  # fraction of steps with a linear warm-up
    device: str = "auto"
    model: dict = field(default_factory=lambda: {"prior": True, "norm": "bn"})


# Flags that define the run: with --resume they must match the saved run (else refused).
# Each maps to its value in a TrainConfig.
RUN_FLAGS = {
    "seed": lambda c: c.seed, "batch_size": lambda c: c.batch_size, "lr": lambda c: c.lr,
    "optimizer": lambda c: c.optimizer, "loss": lambda c: c.loss, "sigma": lambda c: c.sigma,
    "norm": lambda c: c.model["norm"], "no_prior": lambda c: not c.model["prior"],
    "sparsity_weight": lambda c: c.sparsity_weight, "weight_by": lambda c: c.weight_by,
    "sure_epsilon": lambda c: c.sure_epsilon, "sure_probes": lambda c: c.sure_probes,
    "sure_central": lambda c: c.sure_central, "sigma_estimate": lambda c: c.sigma_estimate,
    "r2r_alpha": lambda c: c.r2r_alpha,
    "lr_final": lambda c: c.lr_final, "ema": lambda c: c.ema,
    "bn_train": lambda c: c.bn_train, "bn_mode": lambda c: c.bn_mode, "data": lambda c: c.data, "init": lambda c: c.init,
    "val_size": lambda c: c.val_size,
}
RESUMABLE = ("steps", "eval_every", "save_every", "device")  # honoured by --resume


# ---------------------------------------------------------------------------
# command line


def sigma_arg(text: str) -> list[float] | str:
    """argparse type: ``auto``, or a finite σ > 0, or LOW:HIGH, as [low, high]."""
    if text == "auto":
        return text
    try:
        value = parse_sigma(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    low, high = (value, value) if np.isscalar(value) else value
    if not (math.isfinite(high) and low > 0):
        raise argparse.ArgumentTypeError(f"sigma must be finite and > 0, got {text!r}")
    return [float(low), float(high)]


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
    p = OneLineParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, help=f"total (global) optimiser steps (default {d.steps}; "
                                                      f"{SURE_RECIPE['steps']} with --loss sure)")
    p.add_argument("--batch-size", type=positive_int, help=f"signals per step, over all workers (default {d.batch_size}; "
                                                           f"{SURE_RECIPE['batch_size']} with --loss sure)")
    p.add_argument("--lr", type=positive_float, help=f"peak learning rate (default {d.lr}; {SURE_RECIPE['lr']} with --loss sure)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="adam (default), or sgd with momentum 0.9 like the seed")
    p.add_argument("--loss", choices=["mse", "smoothl1", *LABEL_FREE],
                   help="mse (default), smoothl1 (the seed's), or label-free: sure (Stein's unbiased risk "
                        "estimate), r2r (Recorrupted-to-Recorrupted, needs sigma like sure) or unsure (learns one "
                        "noise variance for the whole data set)")
    p.add_argument("--sigma", type=sigma_arg, metavar="S",
                   help=f"noise std of the training signals, LOW:HIGH to draw one per signal (blind), or auto "
                        f"(estimated from --data). Default: {SIGMA:g} on synthetic data, the folder's estimate with --data")
    p.add_argument("--seed", type=nonnegative_int, metavar="K", help=f"seed of weights, data, split and validation (default {TRAIN_SEED})")
    p.add_argument("--norm", choices=NORMS, help="bn (default), or sparse_bn: BN with a learnable soft threshold")
    p.add_argument("--sparsity-weight", type=nonnegative_float, help="L1 penalty on normalised activations, for --norm sparse_bn (default 0)")
    p.add_argument("--no-prior", action="store_true", default=None, help="switch the Wiener prior branch off (ablation)")
    p.add_argument("--weight-by", choices=WEIGHTS,
                   help="per-signal loss weight for blind runs, so no noise level dominates: sigma2 (1/sigma^2) or "
                        "bayes (1/the Bayes MSE at that sigma) (default none)")
    p.add_argument("--weight-by-sigma", action="store_const", const="sigma2", dest="weight_by", help=argparse.SUPPRESS)
    p.add_argument("--sure-epsilon", type=positive_float, help=f"SURE's finite-difference step, times sigma (default {d.sure_epsilon})")
    p.add_argument("--sure-probes", type=positive_int, help=f"SURE Monte-Carlo probes per signal and step (default {d.sure_probes})")
    p.add_argument("--sure-one-sided", action="store_const", const=False, dest="sure_central",
                   help="one-sided SURE divergence (f(y+eps b) - f(y))/eps instead of the default antithetic probes")
    p.add_argument("--r2r-alpha", type=positive_float, help=f"--loss r2r: recorruption strength alpha (default {d.r2r_alpha})")
    p.add_argument("--sigma-estimate", choices=("true", "signal", "shrunk"),
                   help="sigma the label-free loss gets on synthetic data: the true one (default); signal: each "
                        "signal's own estimate (blind and label-free: the loss is never told sigma); shrunk: that "
                        "estimate, pulled down where it overshoots the sigma distribution fitted on the noisy "
                        "training signals (deepdenoise1d.classical.shrink_sigma)")
    p.add_argument("--lr-final", type=positive_float, help=f"the cosine ends at this fraction of --lr (default {d.lr_final})")
    p.add_argument("--ema", type=decay_float, metavar="DECAY",
                   help="average the weights: an exponential moving average with this decay per step, which "
                        "reaches back at most about 1/(1 - DECAY) steps and a ninth of the steps so far (0.999 in "
                        "a 4000-step run: the last ~450 steps). Validation, ckpt_best.pth and the weights a user "
                        "loads are the average; it smooths the step-to-step noise of label-free losses (default off)")
    p.add_argument("--bn-train", choices=BN_TRAIN_STATS, help="BN statistics in training: batch (default), signal, or a coin flip per step")
    p.add_argument("--bn-mode", choices=BN_MODES, help="BN mode recorded as this model's inference default (default: the better on validation)")
    p.add_argument("--init", metavar="PATH", help="start from the weights of this train.py checkpoint (fine-tune it) "
                                                   "instead of a seeded random init; same architecture (--no-prior, --norm)")
    p.add_argument("--data", help="train on a folder in the seed's layout (data/N.txt, labels/N.txt; labels optional with --loss sure)")
    p.add_argument("--val-size", type=positive_int, help="validation signals (default 1000 synthetic; with --data 10 %% of it, at least 100)")
    p.add_argument("--eval-every", type=positive_int, help=f"validate every N steps (default {d.eval_every})")
    p.add_argument("--save-every", type=positive_int, help=f"write ckpt_last.pth every N steps (default {d.save_every})")
    add_device_arg(p)
    add_threads_arg(p)
    p.add_argument("--run-dir", type=run_dir_arg, metavar="DIR", help="the run folder (default: a new runs/train-YYYYmmdd-HHMMSS)")
    p.add_argument("--ckpt-dir", type=run_dir_arg, dest="run_dir", help=argparse.SUPPRESS)  # the seed's name
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from ckpt_last.pth, with its saved config")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir (says what it deletes)")
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


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """A TrainConfig: the given flags, TrainConfig's defaults for the rest (:data:`SURE_RECIPE` for --loss sure)."""
    d = replace(TrainConfig(), **SURE_RECIPE) if a.loss in LABEL_FREE else TrainConfig()
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return TrainConfig(
        steps=pick(a.steps, d.steps), batch_size=pick(a.batch_size, d.batch_size), lr=pick(a.lr, d.lr),
        optimizer=pick(a.optimizer, d.optimizer), loss=pick(a.loss, d.loss),
        sigma=None if a.sigma == "auto" else a.sigma, seed=pick(a.seed, d.seed), bn_train=pick(a.bn_train, d.bn_train),
        bn_mode=a.bn_mode, sparsity_weight=pick(a.sparsity_weight, d.sparsity_weight),
        weight_by=pick(a.weight_by, d.weight_by), sure_epsilon=pick(a.sure_epsilon, d.sure_epsilon),
        sure_probes=pick(a.sure_probes, d.sure_probes), sure_central=pick(a.sure_central, d.sure_central),
        sigma_estimate=pick(a.sigma_estimate, d.sigma_estimate), r2r_alpha=pick(a.r2r_alpha, d.r2r_alpha), lr_final=pick(a.lr_final, d.lr_final),
        ema=pick(a.ema, d.ema),
        data=a.data, val_size=a.val_size, init=a.init, init_sha256=None if a.init is None else file_sha256(a.init),
        eval_every=pick(a.eval_every, d.eval_every), save_every=pick(a.save_every, d.save_every), device=a.device,
        model={"prior": not a.no_prior, "norm": pick(a.norm, "bn")},
    )


def file_sha256(path: str) -> str:
    """sha256 of a file, or a one-line error naming it."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None


def resumed_config(saved: dict, asked: TrainConfig, given: set[str] | None, source: Path) -> TrainConfig:
    """The saved run's config, with the flags a resume may change taken from ``asked``.

    ``given`` names the flags the user typed (None: all of them, for library calls):
    a run-defining one that differs from the saved run is refused, a RESUMABLE one is honoured.
    """
    try:
        recorded = saved["config"]["train"]
        known = {k: v for k, v in recorded.items() if k in TrainConfig.__dataclass_fields__}
        if "weight_by" not in recorded and recorded.get("weight_by_sigma"):  # runs saved before --weight-by
            known["weight_by"] = "sigma2"
        known["sigma"] = saved_sigma(known.get("sigma"))
        cfg = TrainConfig(**known)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{source}: not a resumable train.py checkpoint (config: {err})") from None
    for name in sorted(set(RUN_FLAGS) if given is None else given & set(RUN_FLAGS)):
        if name == "sigma" and asked.sigma is None:
            continue  # --sigma auto: the saved run's σ was estimated
        mine, theirs = RUN_FLAGS[name](asked), RUN_FLAGS[name](cfg)
        if mine != theirs:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} would change the resumed run (saved: {theirs}, asked: {mine}); "
                             f"resume without {flag}, or start a new run in another --run-dir")
    cfg = replace(cfg, **{k: getattr(asked, k) for k in RESUMABLE if given is None or k in given})
    if cfg.steps < saved["step"]:
        raise InputError(f"--steps {cfg.steps} is before the saved step {saved['step']} of {source}; "
                         "a resumed run can only end at or after it")
    return cfg


def saved_sigma(value) -> list[float] | None:
    """A recorded sigma (one number, [low, high], or None) as [low, high]."""
    if value is None or value == "auto":
        return None
    low, high = (value, value) if np.isscalar(value) else value
    return [float(low), float(high)]


# ---------------------------------------------------------------------------
# setup: workers, data, model and optimiser


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """Workers torchrun started (its WORLD_SIZE), 1 when run directly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> Workers:
    """One worker, or a process group when launched by torchrun."""
    world_size = launched_world_size()
    if world_size == 1:
        return Workers()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Workers(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world_size)


def note(text: str, workers: Workers) -> None:
    """One line on stderr, from the main worker only."""
    if workers.is_main:
        print(f"train.py: {text}", file=sys.stderr, flush=True)


@dataclass
class Validation:
    """The fixed validation set, as tensors; ``clean`` None when the folder has no labels."""

    x: torch.Tensor
    h: torch.Tensor | None
    clean: np.ndarray | None
    sigmas: torch.Tensor
    probe: torch.Tensor | None  # SURE's Monte-Carlo probe (label-free model selection)
    bayes: float | None  # the Bayes limit: only where the prior is known (synthetic data)
    description: str
    sigma_prior: tuple | None = None  # --sigma-estimate shrunk: the σ distribution fitted on noisy training signals


def sigma_spec(sigma: list[float]) -> float | tuple[float, float]:
    """[low, high] as deepdenoise1d.synthesis takes it: one number when low == high (draws nothing)."""
    low, high = sigma
    return low if low == high else (low, high)


def load_data(cfg: TrainConfig, workers: Workers, device: torch.device):
    """(config with sigma and val_size resolved, training stream, Validation)."""
    if cfg.batch_size % workers.world_size:
        raise InputError(f"--batch-size {cfg.batch_size} must divide evenly over {workers.world_size} workers")
    local_batch = cfg.batch_size // workers.world_size
    if cfg.data is not None:
        return folder_data(cfg, workers, device, local_batch)
    cfg = replace(cfg, sigma=cfg.sigma or [SIGMA, SIGMA], val_size=cfg.val_size or 1000)
    stream = SyntheticStream(cfg.seed, local_batch, sigma_spec(cfg.sigma), workers.rank, workers.world_size)
    clean, noisy, sigmas = noisy_pairs(np.random.default_rng([cfg.seed, 999]), cfg.val_size, sigma_spec(cfg.sigma))
    bayes = float(rmse(bayes_posterior_mean(noisy, sigmas[:, None]), clean).mean())
    what = f"{cfg.val_size} synthetic signals (default_rng([{cfg.seed}, 999]), sigma {format_sigma(cfg.sigma)})"
    prior = None
    if cfg.sigma_estimate == "shrunk":  # fitted on noisy training-like signals only, never their σ
        prior = sigma_prior(noisy_pairs(np.random.default_rng([cfg.seed, 997]), PRIOR_SIGNALS, sigma_spec(cfg.sigma))[1])
    return cfg, stream, validation(cfg, noisy, clean, sigmas, bayes, what, device, prior)


def folder_data(cfg: TrainConfig, workers: Workers, device: torch.device, local_batch: int):
    """Read the folder, resolve its σ, hold out the validation split."""
    noisy, clean = read_folder_dataset(cfg.data, require_labels=cfg.loss not in LABEL_FREE)
    n = noisy.shape[0]
    n_val = held_out_size(n, cfg.val_size)
    if n_val >= n:
        raise InputError(f"{cfg.data}: {n} signals; holding out {n_val} for validation leaves none to train on "
                         "(validation takes 10 %, at least 100; or set --val-size)")
    if cfg.split is not None and cfg.split.get("n_signals") != n:  # a resumed run
        raise InputError(f"{cfg.data}: holds {n} signals now, the run was trained on {cfg.split.get('n_signals')}")
    cfg, sigmas = resolve_folder_sigma(cfg, noisy, workers)
    train_idx, val_idx = split_indices(n, n_val, cfg.seed)
    split = {"n_signals": n, "n_val": n_val, "rule": f"default_rng([seed, {SPLIT_STREAM}]).permutation(n_signals)[:n_val]"}
    cfg = replace(cfg, val_size=n_val, split=split)
    pick = lambda a, idx: None if a is None else a[idx]  # noqa: E731
    stream = FolderStream(noisy[train_idx], pick(clean, train_idx), cfg.seed, local_batch, sigmas[train_idx],
                          workers.rank, workers.world_size)
    what = f"{n_val} held-out signals of {cfg.data}"
    prior = sigma_prior(noisy[train_idx]) if cfg.sigma_estimate == "shrunk" else None
    return cfg, stream, validation(cfg, noisy[val_idx], pick(clean, val_idx), sigmas[val_idx], None, what, device, prior)


def resolve_folder_sigma(cfg: TrainConfig, noisy: np.ndarray, workers: Workers) -> tuple[TrainConfig, np.ndarray]:
    """(config with sigma set, σ of each signal): the given --sigma, else the folder's estimate."""
    if cfg.sigma is not None and cfg.sigma[0] != cfg.sigma[1] and not cfg.sigma_per_signal:
        raise InputError("--data needs one --sigma value (the folder's noise level) or --sigma auto")
    pooled, per_signal = folder_sigmas(noisy, cfg.data)
    if cfg.sigma_per_signal or (cfg.sigma is None and per_signal is not None):
        if per_signal is None:  # a resumed run that found σ varying: the same per-signal estimates
            per_signal = per_signal_sigmas(noisy, cfg.data)
        low, high = (round(float(v), 4) for v in np.percentile(per_signal, [1, 99]))
        note(f"sigma varies across {cfg.data}: per-signal estimates {low}..{high} (1st-99th percentile); "
             "each signal's own estimate is used", workers)
        return replace(cfg, sigma=[low, high], sigma_per_signal=True), per_signal
    if cfg.sigma is None:
        cfg = replace(cfg, sigma=[round(pooled, 4)] * 2)
        note(f"noise sigma of {cfg.data} estimated at {pooled:.4f} (pooled over all {noisy.shape[0]} signals)", workers)
    elif abs(cfg.sigma[0] / pooled - 1) > SIGMA_MISMATCH:
        note(f"warning: --sigma {cfg.sigma[0]:g} differs from the folder's estimated {pooled:.3f} by "
             f"{100 * abs(cfg.sigma[0] / pooled - 1):.0f} % (omit --sigma to use the estimate)", workers)
    return cfg, np.full(noisy.shape[0], cfg.sigma[0])


def format_sigma(sigma: list[float]) -> str:
    return f"{sigma[0]:g}" if sigma[0] == sigma[1] else f"{sigma[0]:g}..{sigma[1]:g}"


def validation(cfg: TrainConfig, noisy, clean, sigmas, bayes, description, device, prior=None) -> Validation:
    x = to_tensor(noisy, device)
    probe = None
    if cfg.loss in LABEL_FREE:  # label-free model selection: SURE needs fixed probes
        probes = np.random.default_rng([cfg.seed, 998]).standard_normal((VAL_PROBES, *noisy.shape))
        probe = torch.from_numpy(probes.astype(np.float32))[:, :, None].to(device)  # (P, N, 1, L)
        if cfg.sigma_estimate != "true":
            sigmas = per_signal_sigmas(noisy, "validation signals", prior)
    return Validation(x, wiener_prior(x) if cfg.model["prior"] else None, clean,
                      torch.as_tensor(sigmas, dtype=torch.float32, device=device), probe, bayes, description, prior)


@dataclass
class Trainer:
    """What one step changes: the model, its optimiser, the AMP scaler and the coin/probe generator."""

    model: ICNN_s
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    flip_rng: np.random.Generator  # BN-statistics coin ("mixed"), SURE probes, R2R recorruption
    device: torch.device
    use_amp: bool
    eta: float = math.nan  # --loss unsure: the learned noise variance (NaN until the first batch)
    eta_velocity: float = 0.0
    eta_step: float = math.nan  # UNSURE_STEP times the first batch's mean square
    sigma_prior: tuple | None = None  # --sigma-estimate shrunk (Validation.sigma_prior)
    average: AveragedModel | None = None  # --ema: the moving average of model's weights

    @property
    def deployed(self) -> ICNN_s:
        """The weights that are validated and saved for use: the average with --ema, else the model."""
        return self.model if self.average is None else self.average.module


def build_trainer(cfg: TrainConfig, workers: Workers, device: torch.device, warm_start: bool = True) -> Trainer:
    """Model, optimiser and generators; the weights of ``cfg.init`` when given and ``warm_start``."""
    with torch.random.fork_rng(devices=[]):  # seeded init without touching global RNG state
        torch.manual_seed(cfg.seed)
        model = ICNN_s(ModelConfig.from_dict(cfg.model, "train config"))
    if cfg.init is not None and warm_start:
        load_initial_weights(model, cfg)
    model.to(device).train()
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=get_lr(0, cfg), fused=True)  # one kernel for all tiny tensors
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=get_lr(0, cfg), momentum=0.9, weight_decay=1e-6)
    use_amp = device.type == "cuda" and cfg.loss not in LABEL_FREE  # finite differences need float32
    net = model
    if workers.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    average = None
    # Only the main worker validates and saves, so only it keeps the average. Buffers too: BN's
    # running statistics must match the averaged weights.
    if cfg.ema > 0 and workers.is_main:
        average = AveragedModel(model, multi_avg_fn=partial(ema_update, cfg.ema), use_buffers=True)
    return Trainer(model, net, optimizer, torch.amp.GradScaler("cuda", enabled=use_amp),
                   np.random.default_rng([cfg.seed, 5, workers.rank]), device, use_amp, average=average)


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


def load_initial_weights(model: ICNN_s, cfg: TrainConfig) -> None:
    """--init: the weights of a checkpoint of the same architecture, checked to be the file the config names."""
    if file_sha256(cfg.init) != cfg.init_sha256:
        raise InputError(f"{cfg.init}: changed since the run was set up (sha256 differs)")
    ckpt = load_checkpoint(cfg.init)
    theirs = model_config_of(ckpt, cfg.init)
    if (theirs.prior, theirs.norm) != (cfg.model["prior"], cfg.model["norm"]):
        raise InputError(f"{cfg.init}: a model with prior={theirs.prior}, norm={theirs.norm}; this run builds "
                         f"prior={cfg.model['prior']}, norm={cfg.model['norm']} (match --no-prior and --norm)")
    load_state_dict_strict(model, ckpt["net_state_dict"], cfg.init)


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


def get_batch(stream, trainer: Trainer):
    """(x, h, clean, sigmas) of the next batch: tensors, and σ per signal as NumPy (B,); clean None without labels."""
    noisy, clean, sigmas = stream.next_batch()
    x = to_tensor(noisy, trainer.device)
    h = wiener_prior(x) if trainer.model.wienernet is not None else None
    clean = to_tensor(clean, trainer.device) if clean is not None else None
    return x, h, clean, sigmas


def compute_loss(cfg: TrainConfig, trainer: Trainer, x, h, clean, sigmas) -> torch.Tensor:
    if cfg.sigma_estimate != "true":  # blind and label-free: the loss is never told the true σ
        sigmas = per_signal_sigmas(x[:, 0].double().cpu().numpy(), "training batch", trainer.sigma_prior)
    if cfg.loss in LABEL_FREE:
        per_signal = label_free_loss(cfg, trainer, x, h, sigmas)
    else:
        loss_fn = F.smooth_l1_loss if cfg.loss == "smoothl1" else F.mse_loss
        per_signal = loss_fn(trainer.net(x, h).float(), clean, reduction="none").mean(dim=(1, 2))
    weights = loss_weights(cfg.weight_by, sigmas)
    if weights is not None:
        per_signal = per_signal * torch.as_tensor(weights, dtype=torch.float32, device=trainer.device)
    loss = per_signal.mean()
    if cfg.sparsity_weight > 0:
        loss = loss + cfg.sparsity_weight * trainer.model.sparsity_penalty()
    return loss


def label_free_loss(cfg: TrainConfig, trainer: Trainer, x, h, sigmas: np.ndarray) -> torch.Tensor:
    """Per-signal SURE, R2R or UNSURE loss, shape (N,): no clean signal involved."""
    sigma = torch.as_tensor(sigmas, dtype=torch.float32, device=trainer.device)
    if cfg.loss == "r2r":
        z = torch.from_numpy(trainer.flip_rng.standard_normal(x.shape).astype(np.float32)).to(trainer.device)
        return r2r_per_signal(trainer.net, x, sigma, z, cfg.r2r_alpha, h is not None)
    probes = trainer.flip_rng.standard_normal((cfg.sure_probes, x.shape[0], x.shape[2]))
    probe = torch.from_numpy(probes.astype(np.float32))[:, :, None].to(trainer.device)  # (P, N, 1, L)
    pred = trainer.net(x, h).float()
    if cfg.loss == "unsure":  # σ is not used: the loss learns one variance η instead
        sigma = torch.full_like(sigma, math.sqrt(unsure_eta(trainer, x)))
    divergence = mc_divergence(trainer.net, x, pred, cfg.sure_epsilon * sigma, probe, h is not None, cfg.sure_central)
    if cfg.loss == "unsure":
        ascend_eta(trainer, float(divergence.detach().mean()) / x.shape[-1])
    return sure_from_divergence(x, pred, sigma**2, divergence)


def unsure_eta(trainer: Trainer, x: torch.Tensor) -> float:
    """UNSURE's current η; the first batch sets its start (a quarter of the mean square) and its step."""
    if math.isnan(trainer.eta):
        scale = float((x.double() ** 2).mean())
        trainer.eta, trainer.eta_step = 0.25 * scale, UNSURE_STEP * scale
    return trainer.eta


def ascend_eta(trainer: Trainer, mean_divergence: float) -> None:
    """Momentum ascent of ‖y − f‖² + 2η·div f in η: η stops where the mean divergence is 0."""
    trainer.eta_velocity = UNSURE_MOMENTUM * trainer.eta_velocity + 2 * mean_divergence
    trainer.eta = max(trainer.eta + trainer.eta_step * trainer.eta_velocity, 1e-8)


def loss_weights(kind: str, sigmas: np.ndarray) -> np.ndarray | None:
    """Per-signal loss weights (mean 1) so that no noise level dominates a blind run; None for "none"."""
    if kind == "none":
        return None
    weights = 1.0 / sigmas**2 if kind == "sigma2" else 1.0 / bayes_mse(sigmas)
    return weights / weights.mean()


def train_step(cfg: TrainConfig, trainer: Trainer, batch, step: int) -> float:
    """One optimiser step at learning rate get_lr(step); returns the loss."""
    per_signal = cfg.bn_train == "signal" or (cfg.bn_train == "mixed" and trainer.flip_rng.random() < 0.5)
    trainer.model.set_signal_stats(per_signal)
    for group in trainer.optimizer.param_groups:
        group["lr"] = get_lr(step, cfg)
    with torch.autocast(trainer.device.type, dtype=torch.float16, enabled=trainer.use_amp):
        loss = compute_loss(cfg, trainer, *batch)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    if trainer.average is not None:
        trainer.average.update_parameters(trainer.model)
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
                out[f"sure_{mode}"] = float(torch.cat(risks).mean().clamp_min(0).sqrt())
                if val.clean is not None:
                    out[f"root_mse_{mode}"] = float(np.sqrt(mse(pred, val.clean).mean()))
    finally:
        model.train()
    return out


def selection_scores(val_result: dict, loss: str) -> dict[str, float]:
    """Per BN mode, what picks the best checkpoint: SURE for label-free runs, else validation RMSE."""
    return {m: val_result[f"sure_{m}" if loss in LABEL_FREE else m] for m in BN_MODES}


# ---------------------------------------------------------------------------
# checkpoint and log


@dataclass
class TrainState:
    """What the loop changes besides the trainer; restored on resume."""

    step: int = 0
    best: float = math.inf
    best_step: int = 0
    bn_mode: str = "fixed"  # the recorded inference mode: --bn-mode, or the better on validation at the best step
    val: dict = field(default_factory=dict)
    last_loss: float = math.nan
    loss_sum: float = 0.0  # training loss since the last log row
    loss_count: int = 0


def trained_model_config(cfg: TrainConfig, state: TrainState) -> ModelConfig:
    """The ModelConfig saved with the weights: architecture, chosen BN mode and the σ range trained on."""
    return ModelConfig.from_dict({**cfg.model, "bn_mode": state.bn_mode, "sigma_range": cfg.sigma}, "train config")


def checkpoint_dict(cfg: TrainConfig, trainer: Trainer, state: TrainState, stream, stream_state, workers: Workers) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "step": state.step,
        "epoch": stream.epoch,
        "net_state_dict": trainer.deployed.state_dict(),
        # --ema: the weights the optimiser trains, which a resume continues (net_state_dict is their average)
        **({"train_state_dict": trainer.model.state_dict(), "ema_count": int(trainer.average.n_averaged)}
           if trainer.average is not None else {}),
        "optim_state_dict": trainer.optimizer.state_dict(),
        "scaler_state_dict": trainer.scaler.state_dict() if trainer.use_amp else {},
        "config": {"model": trained_model_config(cfg, state).to_dict(), "train": asdict(cfg),
                   "world_size": workers.world_size},
        "val_rmse": state.val,
        "best_val_rmse": state.best,
        "best_step": state.best_step,
        "loss": state.last_loss,
        "rng_state": {"stream": stream_state, "flip": trainer.flip_rng.bit_generator.state},
        **({"unsure": {"eta": trainer.eta, "velocity": trainer.eta_velocity, "step": trainer.eta_step}}
           if cfg.loss == "unsure" else {}),  # only UNSURE learns η
        "torch_version": str(torch.__version__),
    }


def write_checkpoint(path: Path, ckpt: dict) -> None:
    """torch.save into memory, then one atomic write (never a half-written file)."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_resume_point(path: Path) -> dict:
    """ckpt_last.pth of the run being resumed, checked to hold what a resume needs."""
    ckpt = load_checkpoint(path)
    missing = [k for k in ("config", "optim_state_dict", "rng_state", "step") if k not in ckpt]
    if missing or not isinstance(ckpt["config"], dict) or not isinstance(ckpt["config"].get("train"), dict):
        raise InputError(f"{path}: not a resumable train.py checkpoint (no {(missing or ['config.train'])[0]!r})")
    return ckpt


def restore(ckpt: dict, trainer: Trainer, stream, workers: Workers, source: Path) -> TrainState:
    """Load weights, optimiser and data-stream state; the loop continues at the saved step."""
    saved_world = ckpt["config"].get("world_size", 1)
    if saved_world != workers.world_size:
        raise InputError(f"{source}: saved by {saved_world} workers; resume it with the same number (now {workers.world_size})")
    load_state_dict_strict(trainer.model, ckpt.get("train_state_dict", ckpt["net_state_dict"]), str(source))
    if trainer.average is not None:
        load_state_dict_strict(trainer.average.module, ckpt["net_state_dict"], str(source))
        trainer.average.n_averaged.fill_(int(ckpt.get("ema_count", ckpt["step"])))
    trainer.optimizer.load_state_dict(ckpt["optim_state_dict"])
    if trainer.use_amp and ckpt.get("scaler_state_dict"):
        trainer.scaler.load_state_dict(ckpt["scaler_state_dict"])
    streams = ckpt["rng_state"]["stream"]
    stream.load_state(streams[workers.rank] if workers.world_size > 1 else streams)
    trainer.flip_rng.bit_generator.state = ckpt["rng_state"]["flip"]
    unsure = ckpt.get("unsure") or {}
    trainer.eta, trainer.eta_velocity, trainer.eta_step = (float(unsure.get(k, d)) for k, d in
                                                           (("eta", math.nan), ("velocity", 0.0), ("step", math.nan)))
    return TrainState(step=ckpt["step"], best=ckpt.get("best_val_rmse", math.inf), best_step=ckpt.get("best_step", 0),
                      bn_mode=ckpt["config"]["model"].get("bn_mode", "fixed"), val=ckpt.get("val_rmse") or {},
                      last_loss=ckpt.get("loss", math.nan))


def gather_stream_state(stream, workers: Workers):
    """Every worker's data-stream state (a collective: every rank must call it)."""
    state = stream.state()
    if workers.world_size == 1:
        return state
    states = [None] * workers.world_size
    dist.all_gather_object(states, state)
    return states


def start_log(path: Path, step: int) -> None:
    """A fresh log (header only) at step 0; on resume, keep the rows up to ``step`` (a killed run
    may have logged past its last checkpoint) and recreate the header if the log is missing."""
    rows = read_log(path) if step > 0 and path.is_file() else []
    kept = [r for r in rows if r.get("step", "").isdigit() and 0 < int(r["step"]) <= step]
    text = io.StringIO()
    writer = csv.DictWriter(text, LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values()]  # a row cut short by a kill has Nones


def append_log(path: Path, state: TrainState, lr: float, seconds: float) -> None:
    v = lambda key: f"{state.val.get(key, math.nan):.5f}"  # noqa: E731
    row = [state.step, f"{state.loss_sum / max(1, state.loss_count):.6f}", f"{lr:.3e}", v("fixed"), v("unfixed"),
           v("root_mse_fixed"), v("sure_fixed"), f"{seconds:.1f}"]
    with open(path, "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow(row)


# ---------------------------------------------------------------------------
# the loop


def validate_and_keep_best(cfg: TrainConfig, trainer: Trainer, val: Validation, state: TrainState, run: RunDir,
                           stream, stream_state, workers: Workers, seconds: float) -> None:
    """Evaluate, log a row, and write ckpt_best.pth when validation improved (main worker only)."""
    learned = None if math.isnan(trainer.eta) else torch.full_like(val.sigmas, math.sqrt(trainer.eta))
    state.val = evaluate(trainer.deployed, val, learned)
    if learned is not None:
        state.val["unsure_sigma"] = math.sqrt(trainer.eta)
    append_log(run.file("train_log.csv"), state, get_lr(state.step, cfg), seconds)
    state.loss_sum, state.loss_count = 0.0, 0
    scores = selection_scores(state.val, cfg.loss)
    mode = cfg.bn_mode or min(scores, key=scores.get)
    # UNSURE's SURE uses its own learned σ, which drifts, so it cannot rank steps: its best is its latest.
    if scores[mode] < state.best or cfg.loss == "unsure":
        state.best, state.best_step, state.bn_mode = scores[mode], state.step, mode
        write_checkpoint(run.file("ckpt_best.pth"), checkpoint_dict(cfg, trainer, state, stream, stream_state, workers))


def train_loop(cfg: TrainConfig, trainer: Trainer, stream, val: Validation, state: TrainState, run: RunDir,
               workers: Workers) -> None:
    start = time.time()
    bar = Progress(cfg.steps, "train", unit="step", initial=state.step, enabled=workers.is_main)
    while state.step < cfg.steps:
        state.last_loss = train_step(cfg, trainer, get_batch(stream, trainer), state.step)
        state.step += 1
        state.loss_sum, state.loss_count = state.loss_sum + state.last_loss, state.loss_count + 1
        evaluate_now = state.step % cfg.eval_every == 0 or state.step == cfg.steps
        save_now = state.step % cfg.save_every == 0 or state.step == cfg.steps
        if evaluate_now or save_now:
            stream_state = gather_stream_state(stream, workers)
        if evaluate_now and workers.is_main:
            validate_and_keep_best(cfg, trainer, val, state, run, stream, stream_state, workers, time.time() - start)
            bar.set_postfix(progress_text(state, val))
        if save_now and workers.is_main:
            write_checkpoint(run.file("ckpt_last.pth"), checkpoint_dict(cfg, trainer, state, stream, stream_state, workers))
        bar.update(1)
    bar.close()


def progress_text(state: TrainState, val: Validation) -> str:
    bayes = f" (Bayes {val.bayes:.4f})" if val.bayes is not None else ""
    return f"loss {state.last_loss:.3f}; validation {validation_text(state.val)}{bayes}"


def validation_text(result: dict) -> str:
    """``RMSE fixed …, unfixed …; √(mean SURE) fixed …`` (SURE only in label-free runs, RMSE only with labels)."""
    parts = []
    for label, prefix in (("RMSE", ""), ("√(mean SURE)", "sure_")):
        values = ", ".join(f"{m} {result[prefix + m]:.4f}" for m in BN_MODES if prefix + m in result)
        if values:
            parts.append(f"{label} {values}")
    if "unsure_sigma" in result:
        parts.append(f"learned σ {result['unsure_sigma']:.4f}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# the whole run


def train(cfg: TrainConfig, run_dir: Path, resume: bool = False, overwrite: bool = False,
          given: set[str] | None = None) -> dict:
    """Run training in ``run_dir``; returns the final validation result. Only the main worker writes.

    With ``resume``, the saved config is used; ``cfg`` supplies the flags a resume may
    change (steps, eval_every, save_every, device), and the flags in ``given``
    (all, when None) must agree with the saved run.
    """
    workers = init_distributed()
    try:
        result = run_workers(cfg, Path(run_dir), resume, overwrite, given, workers)
        if workers.world_size > 1:
            # Leave together, so no worker is gone while the main one still writes (see leave_worker).
            dist.barrier()
        return result
    finally:
        if workers.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def run_workers(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool, given: set[str] | None,
                workers: Workers) -> dict:
    """The body of ``train``; its model and DDP wrapper are freed on return, before the process group goes."""
    with open_run(run_dir, resume, overwrite, workers) as run:
        ckpt = load_resume_point(run.file("ckpt_last.pth")) if resume else None
        if ckpt is not None:
            cfg = resumed_config(ckpt, cfg, given, run.file("ckpt_last.pth"))
        device = worker_device(cfg, workers)
        cfg, stream, val = load_data(cfg, workers, device)
        trainer = build_trainer(cfg, workers, device, warm_start=ckpt is None)
        trainer.sigma_prior = val.sigma_prior
        state = TrainState(bn_mode=cfg.bn_mode or "fixed")
        if ckpt is not None:
            state = restore(ckpt, trainer, stream, workers, run.file("ckpt_last.pth"))
        announce(cfg, run, val, state, workers)
        if workers.is_main:
            start_log(run.file("train_log.csv"), state.step)
        train_loop(cfg, trainer, stream, val, state, run, workers)
        if workers.is_main:
            finish(cfg, run, val, state)
        return state.val


class NoRun:
    """The run folder as seen by workers other than the main one: they write nothing."""

    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name


@contextmanager
def open_run(run_dir: Path, resume: bool, overwrite: bool, workers: Workers):
    """The locked run folder on the main worker; every worker stops if it cannot be opened."""
    run = RunDir(run_dir, resume, overwrite) if workers.is_main else NoRun(run_dir)
    error = None
    if workers.is_main:
        try:
            run.open()
        except InputError as err:
            error = err
    if workers.world_size > 1:
        box = [None if error is None else str(error)]
        dist.broadcast_object_list(box, src=0)
        error = error or (InputError(box[0]) if box[0] is not None else None)
    if error is not None:
        raise error
    try:
        yield run
    finally:
        if workers.is_main:
            run.close()


def worker_device(cfg: TrainConfig, workers: Workers) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda" and workers.world_size > 1:
        device = torch.device("cuda", workers.local_rank)
        torch.cuda.set_device(device)
    return device


def announce(cfg: TrainConfig, run, val: Validation, state: TrainState, workers: Workers) -> None:
    verb = f"resuming at step {state.step} of {cfg.steps}" if state.step else f"training {cfg.steps} steps"
    note(f"{verb} in {run.path}; validation on {val.description}", workers)


def finish(cfg: TrainConfig, run: RunDir, val: Validation, state: TrainState) -> None:
    """Draw the curve, print the result and the commands that test, convert and promote this run."""
    title = f"{run.path.name}: validation on {val.description}"
    save_figure(training_curve(read_log(run.file("train_log.csv")), val.bayes, title), run.file("train_curve.png"))
    bayes = f" (Bayes {val.bayes:.4f})" if val.bayes is not None else ""
    print(f"done: step {state.step}; validation on {val.description}: {validation_text(state.val)}{bayes}; "
          f"best {state.best:.4f} ({state.bn_mode} BN, step {state.best_step}) -> {run.file('ckpt_best.pth')}")
    best, h5 = run.file("ckpt_best.pth"), run.file("ckpt_best.h5")
    print("next (test.py alone still evaluates the shipped ckpt/ckpt_best.pth):")
    print(f"  test:    python {script('Pytorch_V1/test.py')} --weights {best}")
    print(f"  convert: python {script('pth2h5.py')} {best} {h5}")
    print(f"           python {script('Numpy_V2/Numpy_test.py')} --weights {h5}")
    print(f"  promote: cp {best} {script('ckpt/ckpt_best.pth')} && cp {h5} {script('ckpt/ckpt_best.h5')}")


def script(relative: str) -> str:
    """A repository path as the user can type it from the current directory."""
    path = os.path.relpath(REPO / relative)
    return path if not path.startswith("..") else str(REPO / relative)


def main(argv=None) -> None:
    args = get_args(argv)
    resolve_device(args.device)  # --device cuda without CUDA: one line before any folder is made
    configure_threads(resolve_threads(args.threads))
    run_dir = args.run_dir if args.run_dir is not None else default_run_dir()
    train(config_from_args(args), run_dir, args.resume, args.overwrite, given_flags(args))


def leave_worker() -> None:
    """End a finished torchrun worker without the interpreter's C++ teardown.

    By then the workers have met at a barrier, the process group is destroyed and every file
    is closed. That teardown still aborted a worker ("terminate called without an active
    exception", SIGABRT, no Python frame left) in about 1 of 25 two-worker runs on a 2-core
    machine, and torchrun then killed the other worker and reported the run as failed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    run_cli(main, "train.py")
    if launched_world_size() > 1:
        leave_worker()

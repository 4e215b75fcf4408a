"""train.py's command line: the flags, their one-line errors, and the TrainConfig they give.

Flags that define a run default to None, so that :func:`given_flags` can tell what the user typed
(a resumed run refuses those); :func:`config_from_args` fills in the recipe's defaults.
Each ``defaults`` here is a ``train.TrainConfig()``, left unannotated: train.py imports this module.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from icnn.spec import BASELINES, BN_MODES, BN_TRAIN_STATS, NORMS
from Pytorch_V1.adapt import ADAPT_PARTS, ADAPT_RECIPE, init_model
from Pytorch_V1.checkpoint import RESUMABLE, RUN_FLAGS, file_sha256
from Pytorch_V1.data import MIN_VAL, SYNTHETIC_VAL, VAL_FRACTION
from Pytorch_V1.losses import LABEL_FREE, SURE_FLOOR_SD, WEIGHTS
from Pytorch_V1.schedule import DATA_PASSES, DATA_PATIENCE, MIN_DATA_STEPS
from deepdenoise1d.cli import (add_device_arg, add_threads_arg, batch_size, decay_float, nonnegative_float, seed_int,
                               positive_float, positive_int, sigma_range_or_auto, signal_count)
from deepdenoise1d.errors import InputError
from deepdenoise1d.synthesis import SIGMA, TRAIN_SEED

# --loss sure trains on a noisier gradient: a larger batch and lr reach the limit in fewer steps.
SURE_RECIPE = {"steps": 1500, "batch_size": 512, "lr": 1e-2}
TRAIN_PRIORS = ("spikes", "broad")
BROAD_LENGTH = 512  # broad-prior training signals: long enough for a slow oscillation's few cycles


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


def parse_args(argv, description: str, defaults) -> argparse.Namespace:
    """Parse and check the flags; ``description`` is train.py's help text, ``defaults`` a TrainConfig()."""
    d = defaults
    p = OneLineParser(prog="train.py", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(p, d)
    add_model_args(p)
    add_loss_args(p, d)
    add_data_args(p, d)
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
    if a.spike_share and (a.train_prior != "broad" or a.data is not None):
        p.error("--spike-share mixes the benchmark's spikes into --train-prior broad (without --data)")
    return a


def add_recipe_args(p: argparse.ArgumentParser, d) -> None:
    """Steps, batch, learning rate, optimiser, loss, σ and seed (the order --help lists them in)."""
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


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The architecture: norm, prior, equivariance, the training signals' prior, width, depth, baseline, loss weight."""
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
    p.add_argument("--spike-share", type=decay_float, metavar="P",
                   help="with --train-prior broad: this share of each batch (and of the validation set) is the benchmark's "
                        "spikes, signals joined end to end to --crop-length, σ drawn over the blind models' range "
                        "(default 0)")
    p.add_argument("--width", type=positive_int, help="channels of the U-Net's first level, doubling per level (default 2)")
    p.add_argument("--depth", type=positive_int, help="levels of the U-Net: signals of at least 2^depth samples (default 4)")
    p.add_argument("--odd", action="store_true", default=None,
                   help="make the model sign-symmetric, f(−y) = −f(y): it outputs (w(y) − w(−y)) / 2 of the network w, "
                        "at twice the cost (with --init, switches it on for the start's weights)")
    p.add_argument("--reversal", action="store_true", default=None,
                   help="make the model symmetric in time, f(R·y) = R·f(y) with R reversing the record: it outputs "
                        "(w(y) + R·w(R·y)) / 2, at twice the cost (with --init, switches it on for the start's weights)")
    p.add_argument("--baseline", choices=BASELINES,
                   help="median (default): the network takes each signal's median off and adds it back, so an offset "
                        "of the record changes nothing but the output's offset (f(y + c) = f(y) + c); none: it sees "
                        "the absolute level, as the models trained before this option")
    p.add_argument("--weight-by", choices=WEIGHTS,
                   help="per-signal loss weight for blind runs, so no noise level dominates: sigma2 (1/sigma^2) or "
                        "bayes (1/the Bayes MSE at that sigma) (default none)")


def add_loss_args(p: argparse.ArgumentParser, d) -> None:
    """The label-free losses' settings, the schedule's end, EMA, BN and the --init start."""
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


def add_data_args(p: argparse.ArgumentParser, d) -> None:
    """--data and what follows from it (crops, budget, patience, SURE floor), validation and the checkpoints' pace."""
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


def given_flags(args: argparse.Namespace) -> set[str]:
    """The flags the user typed, among RUN_FLAGS and RESUMABLE (argparse left the others at None)."""
    return {name for name in (*RUN_FLAGS, *RESUMABLE) if getattr(args, name) is not None}


def model_from_args(a: argparse.Namespace, start: dict) -> dict:
    """TrainConfig.model: the model flags given, else the --init checkpoint's (``start``), else the original ICNN_s."""
    given = {"prior": None if a.no_prior is None else not a.no_prior, "norm": a.norm,
             "equivariant": None if a.no_equivariant is None else not a.no_equivariant,
             "baseline": a.baseline, "width": a.width, "depth": a.depth,
             "odd": a.odd, "reversal": a.reversal}  # True or None: like ModelConfig.to_dict, each appears only when set
    defaults = {"prior": True, "norm": "bn", "equivariant": True, "baseline": "median", "width": 2, "depth": 4, **start}
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}


def config_from_args(a: argparse.Namespace, defaults):
    """A TrainConfig: the given flags, ``defaults`` (a TrainConfig()) for the rest (:data:`SURE_RECIPE` for label-free losses)."""
    d = replace(defaults, **SURE_RECIPE) if a.loss in LABEL_FREE else defaults
    adapting = a.init is not None and a.data is not None
    if adapting:
        d = replace(d, **ADAPT_RECIPE)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    start = init_model(a.init, data=a.data is not None) if a.init is not None else {}
    model = model_from_args(a, start)
    crop_default = start["train_length"] if adapting else BROAD_LENGTH if a.train_prior == "broad" else d.crop_length
    return replace(
        defaults,
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
        spike_share=pick(a.spike_share, d.spike_share),
    )

"""Score networks on synthetic validation sets of the broad prior: how ``ckpt_universal`` was selected.

    .venv/bin/python scripts/broad_validation.py --models runs/a/ckpt_best.h5 runs/b/ckpt_best.h5

Each set is ``deepdenoise1d.broad_prior.BroadPrior().validation_set(seed, n, length)``, the set a
``train.py --train-prior broad --seed K`` run validates on when ``seed`` is K + 999 (1665 for the
default seed 666). The score is train.py's: the mean over signals of each one's RMSE in units of its
own σ (the noisy input scores about 1). Never the field's test signals: selection is on these only.

``--windows W ...`` scores each model once per inference window (a record longer than the window is
denoised in Hann-blended half-overlapping windows of it; the model's own is its ``train_length``), on
sets of ``--length`` samples:

    .venv/bin/python scripts/broad_validation.py --models ckpt/ckpt_universal.h5 --seeds 5353 --n 240 \\
        --length 8192 --windows 512 1024 2048

``--overlaps O ...`` scores each model once per overlap of its windows (samples shared by neighbours;
the default blend shares half a window, so every sample is seen by two windows; more overlap is an
average over more placements of the window grid, at window ÷ (window − O) network calls per sample).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import numpy as np

from deepdenoise1d.broad_prior import BroadPrior
from deepdenoise1d.budget import check_memory
from deepdenoise1d.cli import nonnegative_int, positive_int
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.frontend import missing_weights_message
from deepdenoise1d.windows import denoise_windows
from icnn.spec import CHUNK, min_length


# Memory: every validation set is drawn before scoring (clean and noisy float64 per sample, per --seeds value),
# the draw works with 32 bytes per sample (measured); a model's denoise holds its float32 input and output on
# top, and the activations of one block of signals (660 bytes per sample measured for ckpt_universal).
SET_BYTES_PER_SAMPLE = 16
SCORE_BYTES_PER_SAMPLE = 32 + 16
BLOCK_BYTES_PER_SAMPLE = 700


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="broad_validation.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", type=Path, required=True, metavar="H5", help=".h5 weights to score")
    p.add_argument("--seeds", nargs="+", type=int, default=[1665, 1001], metavar="K",
                   help="validation sets (default: 1665 1001, those of train.py --seed 666 and --seed 2)")
    p.add_argument("--n", type=positive_int, default=1000, help="signals per set (default %(default)s)")
    p.add_argument("--length", type=positive_int, default=512, help="samples per signal (default %(default)s)")
    p.add_argument("--windows", nargs="+", type=positive_int, default=None, metavar="W",
                   help="score each model with these inference windows (default: the model's own train_length)")
    p.add_argument("--overlaps", nargs="+", type=nonnegative_int, default=None, metavar="O",
                   help="score each model with these window overlaps (default: half a window)")
    return p.parse_args(argv)


def validation_bytes(n: int, length: int, sets: int) -> int:
    """Estimated peak memory of scoring ``sets`` validation sets of ``n`` signals of ``length``."""
    from Numpy_V2.model import forward_block

    samples = n * length  # a block of forward_block(length, width 1) signals: the most any model's block holds
    return (samples * (SET_BYTES_PER_SAMPLE * sets + SCORE_BYTES_PER_SAMPLE)
            + min(n, forward_block(length, 1)) * length * BLOCK_BYTES_PER_SAMPLE)


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, an --n or --length whose sets cannot be scored in memory."""
    check_memory(validation_bytes(args.n, args.length, len(args.seeds)),
                 f"--n {args.n} signals of --length {args.length} ({len(args.seeds)} set(s), one per --seeds value)",
                 "use a smaller --n or --length")


def score(net, clean: np.ndarray, noisy: np.ndarray, sigma: np.ndarray, overlap: int | None = None) -> float:
    """Mean per-signal RMSE / σ of the network's fixed-mode output, its windows overlapping by ``overlap``
    samples (default: as ``net.denoise`` blends them)."""
    if overlap is None:
        out = net.denoise(noisy, bn_mode="fixed")
    else:
        out = denoise_windows(noisy, lambda block: net.denoise(block, bn_mode="fixed"), net.config.train_length,
                              overlap=overlap, batch=CHUNK, dtype=noisy.dtype)
    return float(np.mean(np.sqrt(np.mean((out - clean) ** 2, axis=1)) / sigma))


def check_overlap(net, overlap: int) -> int:
    """``overlap`` when it is below the network's window, else a one-line error."""
    if overlap >= net.config.train_length:
        raise InputError(f"--overlaps {overlap}: must be below the window, {net.config.train_length} samples")
    return overlap


def with_window(net, window: int):
    """A copy of ``net`` that denoises in windows of ``window`` samples (its config's train_length)."""
    if window < min_length(net.config):
        raise InputError(f"--windows {window}: below the network's minimum length {min_length(net.config)} "
                         f"(2^depth, depth {net.config.depth})")
    windowed = copy.copy(net)
    windowed.config = dataclasses.replace(net.config, train_length=window)
    return windowed


def main(argv=None) -> dict:
    args = get_args(argv)
    check_budget(args)
    from Numpy_V2.model import load_h5

    nets = {}  # every model and window checked before the sets are drawn: a bad one costs no wait
    for path in args.models:
        if not path.is_file():
            raise InputError(missing_weights_message(path))
        net = load_h5(path)
        for window in args.windows or [None]:
            windowed = net if window is None else with_window(net, window)
            for overlap in args.overlaps or [None]:
                name = str(path) + "".join(f" ({what} {v})" for what, v in (("window", window), ("overlap", overlap))
                                           if v is not None)
                nets[name] = (windowed, None if overlap is None else check_overlap(windowed, overlap))
    sets = {seed: BroadPrior(dtype=np.float64).validation_set(seed, args.n, args.length)[:3] for seed in args.seeds}
    scores = {}
    print("| model | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for name, (net, overlap) in nets.items():
        row = [score(net, *sets[seed], overlap) for seed in args.seeds]
        scores[name] = row
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + f" | {np.mean(row):.4f} |", flush=True)
    return scores


if __name__ == "__main__":
    run_cli(main, "broad_validation.py")

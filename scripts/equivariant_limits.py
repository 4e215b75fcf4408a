"""What a scale-equivariant (and offset-free) denoiser can reach on the benchmark, and how near the spike models are.

    .venv/bin/python scripts/equivariant_limits.py [--n 400] [--seed 2026]
    .venv/bin/python scripts/equivariant_limits.py --models ckpt/ckpt_best.h5 ckpt/ckpt_sure.h5 \\
        ckpt/ckpt_blind.h5 ckpt/ckpt_blind_sure.h5 --output runs/home.md

Per σ = 1..5, on ``benchmark_signals(seed, n, σ)``: the σ-aware Bayes RMSE (the limit), the blind oracle
(σ unknown, uniform on 0.5..5, the amplitudes 2..10 known in absolute units), the equivariant blind
oracle (σ unknown on 0.5..5 and the units unknown: ``classical.bayes_equivariant_posterior_mean`` with
a σ range) and the same also offset-free (the baseline unknown too: ``offset_free=True``), each as a
ratio to Bayes. The benchmark's amplitudes are integers in absolute units on a zero baseline; a model
that works in any units and at any offset cannot use either once σ is unknown, and this is what it
costs. The scale grid (0.25..4, 60 nodes) and the σ grid (32 nodes) are coarse, and the finite scale
range gives the oracles a little knowledge of the units, so their ratios err on the low (optimistic)
side; the grid of offsets (11 nodes over ± a·σ) moved the ratio by 4·10⁻⁵ against 21 nodes.

``--models``: each model denoises the same signals (NumPy, fixed batch statistics), scored against
Bayes and against its own limit: the one with the model's knowledge (σ told when it was trained at one
σ, then only at that σ; offset-free when its baseline is), with the standard error of the paired ratio.
10 to 27 minutes per σ at n = 400 on one core beside other jobs (measured; the offset-free blind oracle does
11 × the work of the scale-only one); each σ's rows print as it ends.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from deepdenoise1d import classical, cli
from deepdenoise1d.budget import check_memory
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.frontend import missing_weights_message
from deepdenoise1d.metrics import rmse
from deepdenoise1d.safewrite import atomic_write, guard_output
from deepdenoise1d.synthesis import BLIND_SIGMA_RANGE, SIGMA, SIGNAL_LENGTH, benchmark_signals

SIGMAS = (1.0, 2.0, 3.0, 4.0, 5.0)
GRID = dict(scale_range=(0.25, 4.0), n_grid=60, n_sigma=32)
N_OFFSET = 11
# Memory per sample of the --n signals of one σ: the draw (clean, noisy, float64), the oracles' estimates, and the
# largest oracle's working set (bayes_equivariant_posterior_mean 555 bytes per sample, measured; offset-free it holds
# every offset node at once).
ORACLE_WORK_BYTES_PER_SAMPLE = 560 * N_OFFSET
LIMITS_BYTES_PER_SAMPLE = 8 * (2 + 6) + ORACLE_WORK_BYTES_PER_SAMPLE
LIMIT_NAMES = {(False, False): "equivariant", (False, True): "equivariant offset-free",
               (True, False): "equivariant blind", (True, True): "equivariant offset-free blind"}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="equivariant_limits.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_n_arg(p, 400)
    cli.add_seed_arg(p, what="the held-out signals")
    p.add_argument("--models", nargs="*", type=Path, default=[], metavar="H5",
                   help="spike models (.h5) to score against Bayes and against their own limit")
    p.add_argument("--output", type=Path, default=None, metavar="FILE.md", help="also write the tables here")
    return p.parse_args(argv)


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, an --n whose signals cannot be scored in memory."""
    check_memory(args.n * SIGNAL_LENGTH * LIMITS_BYTES_PER_SAMPLE, f"--n {args.n} signals per σ", "use a smaller --n")


def limit_estimate(noisy: np.ndarray, sigma: float, blind: bool, offset_free: bool) -> np.ndarray:
    """The best equivariant denoiser's estimate with the given knowledge (σ told unless ``blind``)."""
    return classical.bayes_equivariant_posterior_mean(noisy, BLIND_SIGMA_RANGE if blind else sigma, offset_free=offset_free,
                                                      n_offset=N_OFFSET, **GRID)


def paired_ratio(model: np.ndarray, limit: np.ndarray) -> tuple[float, float]:
    """mean(model) / mean(limit) over signals, and its standard error (delta method, paired signals)."""
    ratio = model.mean() / limit.mean()
    spread = np.std(model / model.mean() - limit / limit.mean(), ddof=1)
    return float(ratio), float(ratio * spread / np.sqrt(model.size))


def oracle_scores(clean: np.ndarray, noisy: np.ndarray, sigma: float) -> dict[str, np.ndarray]:
    """Per-signal RMSE of Bayes, the blind oracle and the two equivariant blind limits."""
    scores = {"bayes": classical.bayes_posterior_mean(noisy, sigma),
              "blind": classical.bayes_blind_posterior_mean(noisy, BLIND_SIGMA_RANGE)}
    for offset_free in (False, True):
        scores[LIMIT_NAMES[True, offset_free]] = limit_estimate(noisy, sigma, True, offset_free)
    return {name: rmse(estimate, clean) for name, estimate in scores.items()}


def limits(seed: int, n: int, sigma: float) -> dict[str, float]:
    """Mean RMSE of :func:`oracle_scores` on ``benchmark_signals(seed, n, sigma)``."""
    return {name: float(v.mean()) for name, v in oracle_scores(*benchmark_signals(seed, n, sigma), sigma).items()}


def model_knowledge(net) -> tuple[bool, bool]:
    """(blind, offset_free) of a spike model, from its config."""
    low, high = net.config.sigma_range or (SIGMA, SIGMA)
    return low != high, net.config.baseline != "none"


def main(argv=None) -> str:
    args = get_args(argv)
    check_budget(args)
    from Numpy_V2.model import load_h5

    for path in args.models:
        if not path.is_file():
            raise InputError(missing_weights_message(path))
    if args.output is not None:
        guard_output(args.output, args.models)
    nets = {path.stem: load_h5(path) for path in args.models}
    lines = ["| σ | Bayes RMSE | blind oracle / Bayes | equivariant blind / Bayes | equivariant offset-free blind / Bayes"
             " | seconds |", "|---|---|---|---|---|---|"]
    rows = ["| σ | model | RMSE | ÷ Bayes | its limit | ÷ limit (± s.e.) |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for sigma in SIGMAS:
        start = time.time()
        clean, noisy = benchmark_signals(args.seed, args.n, sigma)
        per_signal = lambda estimate: rmse(estimate, clean)  # noqa: E731
        scores = oracle_scores(clean, noisy, sigma)
        bayes = scores["bayes"].mean()
        line = (f"| {sigma:g} | {bayes:.4f} | {scores['blind'].mean() / bayes:.4f} | "
                f"{scores['equivariant blind'].mean() / bayes:.4f} | "
                f"{scores['equivariant offset-free blind'].mean() / bayes:.4f} | {time.time() - start:.0f} |")
        lines.append(line)
        print(line, flush=True)
        for name, net in nets.items():
            blind, offset_free = model_knowledge(net)
            if not blind and sigma != SIGMA:
                continue  # a model told σ was trained at SIGMA only
            limit_name = LIMIT_NAMES[blind, offset_free]
            if limit_name not in scores:
                scores[limit_name] = per_signal(limit_estimate(noisy, sigma, blind, offset_free))
            mine = per_signal(net.denoise(noisy, bn_mode="fixed"))
            ratio, error = paired_ratio(mine, scores[limit_name])
            rows.append(f"| {sigma:g} | {name} | {mine.mean():.4f} | {mine.mean() / bayes:.4f} | {limit_name} "
                        f"{scores[limit_name].mean() / bayes:.4f} × Bayes | {ratio:.4f} ± {error:.4f} |")
            print(rows[-1], flush=True)
    text = "\n".join(lines) + ("\n\n" + "\n".join(rows) if nets else "") + "\n"
    if args.output is not None:
        atomic_write(args.output, lambda f: f.write(text.encode()), reads=args.models)
    return text


if __name__ == "__main__":
    run_cli(main, "equivariant_limits.py")

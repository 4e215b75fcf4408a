"""What a scale-equivariant denoiser can reach on the benchmark, at σ = 1..5.

    .venv/bin/python scripts/equivariant_limits.py [--n 400] [--seed 2026]

Per σ, on ``benchmark_signals(seed, n, σ)``: the σ-aware Bayes RMSE (the limit), the blind oracle
(σ unknown, uniform on 0.5..5, the amplitudes 2..10 known in absolute units) and the
equivariant blind oracle (σ unknown on 0.5..5 and the units unknown:
``classical.bayes_equivariant_posterior_mean`` with a σ range), each as a ratio to Bayes. The
benchmark's amplitudes are integers in absolute units; a model that works in any units cannot use
that lattice once σ is unknown, and this is what it costs. The scale grid (0.25..4, 60 nodes) and
the σ grid (32 nodes) are coarse, and the finite scale range gives the oracle a little knowledge of
the units, so its ratios err on the low (optimistic) side. About 80 s per σ at n = 400 on one core.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from deepdenoise1d import classical, cli
from deepdenoise1d.budget import check_memory
from deepdenoise1d.errors import run_cli
from deepdenoise1d.metrics import rmse
from deepdenoise1d.synthesis import SIGNAL_LENGTH, benchmark_signals

SIGMAS = (1.0, 2.0, 3.0, 4.0, 5.0)
BLIND_RANGE = (0.5, 5.0)  # the blind models' training range
# Memory per sample of the --n signals of one σ: the draw (clean, noisy, float64), one oracle's estimate, and that
# oracle's working set (bayes_posterior_mean 522, bayes_blind_posterior_mean 539, bayes_equivariant_posterior_mean
# 555 bytes per sample, measured).
ORACLE_WORK_BYTES_PER_SAMPLE = 560
LIMITS_BYTES_PER_SAMPLE = 8 * (2 + 1) + ORACLE_WORK_BYTES_PER_SAMPLE


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="equivariant_limits.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_n_arg(p, 400)
    cli.add_seed_arg(p, what="the held-out signals")
    return p.parse_args(argv)


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, an --n whose signals cannot be scored in memory."""
    check_memory(args.n * SIGNAL_LENGTH * LIMITS_BYTES_PER_SAMPLE, f"--n {args.n} signals per σ", "use a smaller --n")


def limits(seed: int, n: int, sigma: float) -> dict[str, float]:
    """Mean per-signal RMSE of the three oracles at ``sigma``."""
    clean, noisy = benchmark_signals(seed, n, sigma)
    score = lambda estimate: float(rmse(estimate, clean).mean())  # noqa: E731
    return {"bayes": score(classical.bayes_posterior_mean(noisy, sigma)),
            "blind": score(classical.bayes_blind_posterior_mean(noisy, BLIND_RANGE)),
            "equivariant blind": score(classical.bayes_equivariant_posterior_mean(
                noisy, BLIND_RANGE, scale_range=(0.25, 4.0), n_grid=60, n_sigma=32))}


def main(argv=None) -> None:
    args = get_args(argv)
    check_budget(args)
    print("| σ | Bayes RMSE | blind oracle / Bayes | equivariant blind oracle / Bayes | seconds |")
    print("|---|---|---|---|---|")
    for sigma in SIGMAS:
        start = time.time()
        r = limits(args.seed, args.n, sigma)
        print(f"| {sigma:g} | {r['bayes']:.4f} | {r['blind'] / r['bayes']:.4f} | "
              f"{r['equivariant blind'] / r['bayes']:.4f} | {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    run_cli(main, "equivariant_limits.py")

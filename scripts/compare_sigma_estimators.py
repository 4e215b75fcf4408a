"""Compare the noise-level estimators on spike signals and print a Markdown table.

    .venv/bin/python scripts/compare_sigma_estimators.py            # 2000 signals, 20 pooled draws per σ
    .venv/bin/python scripts/compare_sigma_estimators.py --n 500 --repeats 5 --output sigma.md

Estimators (all in :func:`deepdenoise1d.noise.estimate_sigma`):

- negative_rms: the RMS of the samples ≤ 0, the default (it won this comparison);
- negative: 1.4826 · median(|y| : y ≤ 0), the original repository's estimator;
- wavelet: ``skimage.restoration.estimate_sigma``, the MAD of the finest db2 detail
  coefficients (checked here against scikit-image itself on the first signals).

For each σ in 0.5, 1, 2, 3, 4, 5: per-signal bias (mean of σ̂/σ − 1) and spread (std of
σ̂/σ) over --n signals; pooled bias and spread of the estimate from all --n signals at
once, over --repeats independent draws. Each draw is ``noisy_pairs`` with generator
``default_rng([seed, repeat, round(100σ)])``.
"""
from __future__ import annotations

import argparse

import numpy as np

from deepdenoise1d.budget import check_memory
from deepdenoise1d.cli import add_n_arg, add_overwrite_arg, add_seed_arg, output_file, positive_int
from deepdenoise1d.errors import run_cli
from deepdenoise1d.noise import SIGMA_METHODS, estimate_sigma
from deepdenoise1d.safewrite import atomic_write, guard_output, write_policy
from deepdenoise1d.synthesis import SIGNAL_LENGTH, noisy_pairs

SIGMAS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
# Memory per sample of the --n signals: the first draw (float64), held for the σ, a pooled draw being made
# (noisy_pairs: 24 bytes per sample at its peak, measured) and an estimator's working set (36 at most, measured).
SIGMA_BYTES_PER_SAMPLE = 8 + 32 + 40


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_n_arg(p, 2000)
    add_seed_arg(p)
    p.add_argument("--repeats", type=positive_int, default=20, metavar="R",
                   help="independent draws for the pooled estimate's spread (default %(default)s)")
    p.add_argument("--output", type=output_file, default=None, metavar="PATH",
                   help="also write the table to this Markdown file (default: print only)")
    add_overwrite_arg(p)
    return p.parse_args(argv)


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, an --n whose signals cannot be drawn in memory."""
    check_memory(args.n * SIGNAL_LENGTH * SIGMA_BYTES_PER_SAMPLE, f"--n {args.n} signals", "use a smaller --n")


def draw(seed: int, repeat: int, n: int, sigma: float) -> np.ndarray:
    """Noisy spike signals of one draw, (n, 100)."""
    return noisy_pairs(np.random.default_rng([seed, repeat, int(round(100 * sigma))]), n, sigma)[1]


def check_against_skimage(noisy: np.ndarray, count: int = 20) -> float:
    """Largest relative gap between our batched wavelet estimate and scikit-image's, per signal."""
    from skimage.restoration import estimate_sigma as skimage_sigma

    ours = estimate_sigma(noisy[:count], per_signal=True, method="wavelet")
    theirs = np.array([skimage_sigma(row) for row in noisy[:count]])
    return float(np.max(np.abs(ours / theirs - 1)))


def measure(seed: int, n: int, repeats: int, sigma: float) -> dict[str, dict[str, float]]:
    """Bias and spread (relative to σ) of each estimator at one σ."""
    first = draw(seed, 0, n, sigma)
    gap = check_against_skimage(first)
    if gap > 1e-6:
        raise RuntimeError(f"batched wavelet estimate differs from scikit-image by {gap:.2g}")
    rows = {}
    for method in SIGMA_METHODS:
        ratio = estimate_sigma(first, per_signal=True, method=method) / sigma
        pooled = np.array([estimate_sigma(draw(seed, r, n, sigma), method=method) for r in range(repeats)]) / sigma
        rows[method] = {
            "bias": float(ratio.mean() - 1), "spread": float(ratio.std()),
            "pooled_bias": float(pooled.mean() - 1), "pooled_spread": float(pooled.std()),
        }
    return rows


def table(results: dict[float, dict[str, dict[str, float]]], n: int, repeats: int) -> str:
    """The Markdown table: one row per σ and estimator, values in percent of σ."""
    lines = [
        f"Relative error σ̂/σ − 1 in %: per signal (L = 100, {n} signals) and pooled ({n} signals, {repeats} draws).",
        "",
        "| σ | estimator | per-signal bias | per-signal spread | pooled bias | pooled spread |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for sigma, rows in results.items():
        for method, r in rows.items():
            lines.append(f"| {sigma:g} | {method} | {100 * r['bias']:+.1f} | {100 * r['spread']:.1f} "
                         f"| {100 * r['pooled_bias']:+.2f} | {100 * r['pooled_spread']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = get_args(argv)
    check_budget(args)
    with write_policy(overwrite=args.overwrite):  # deepdenoise1d.safewrite's policy for --output
        if args.output is not None:
            guard_output(args.output, kind="text")  # refuse before the work, not after
        results = {sigma: measure(args.seed, args.n, args.repeats, sigma) for sigma in SIGMAS}
        text = table(results, args.n, args.repeats)
        print(text, end="")
        if args.output is not None:
            atomic_write(args.output, lambda f: f.write(text.encode()))


if __name__ == "__main__":
    run_cli(main, "compare_sigma_estimators.py")

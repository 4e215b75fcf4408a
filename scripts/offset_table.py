"""The offset table: every shipped model on the benchmark's signals with a constant added, both backends.

    python scripts/offset_table.py [--n 2000 --seed 2026] [--output runs/offset_table.md]

For each ``ckpt/*.pth`` (PyTorch) and its ``.h5`` (NumPy): the RMSE of f(y + c) − c against the clean
signals at σ = 3 (float64 in), for c = 0, 10σ and 10⁴σ, and the largest departure from offset-freedom,
max |f(y + c) − c − f(y)| / max |f(y)|. An offset-free model (``baseline`` "median") gives the same
RMSE at every c; a model that sees the absolute level does not.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deepdenoise1d.budget import check_memory
from deepdenoise1d.cli import add_overwrite_arg, positive_int
from deepdenoise1d.errors import run_cli
from deepdenoise1d.safewrite import atomic_write, guard_output, write_policy
from deepdenoise1d.synthesis import DEFAULT_SEED, SIGMA, SIGNAL_LENGTH, benchmark_signals

OFFSETS = (0.0, 10.0, 1e4)  # in units of σ
# Memory per sample of the --n signals (float64): the draw (clean, noisy), f(y), y + c, f(y + c), f(y + c) − c and
# the two temporaries of its comparisons, and on top a denoise call's working set (about 50 bytes measured, NumPy).
OFFSET_BYTES_PER_SAMPLE = 8 * (2 + 6) + 64


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="offset_table.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=positive_int, default=2000, help="benchmark signals (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the signals (default %(default)s)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE.md", help="also write the table here")
    add_overwrite_arg(p)
    return p.parse_args(argv)


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, an --n whose signals cannot be denoised in memory."""
    check_memory(args.n * SIGNAL_LENGTH * OFFSET_BYTES_PER_SAMPLE, f"--n {args.n} signals", "use a smaller --n")


def backends(pth: Path) -> dict:
    """``{"PyTorch": denoise, "NumPy": denoise}`` of one shipped model (fixed BN, float64 in and out)."""
    from Numpy_V2.model import load_h5
    from Pytorch_V1.checkpoint import load_model
    from Pytorch_V1.inference import denoise

    model, _ = load_model(pth, "cpu")
    net = load_h5(pth.with_suffix(".h5"))
    return {"PyTorch": lambda y: denoise(model, y, "fixed"), "NumPy": lambda y: net.denoise(y, "fixed")}, net.config


def rows_for(name: str, pth: Path, clean: np.ndarray, noisy: np.ndarray) -> list[str]:
    runs, config = backends(pth)
    rows = []
    for backend, denoise in runs.items():
        base = denoise(noisy)
        cells, worst = [], 0.0
        for c in OFFSETS:
            shift = c * SIGMA
            out = denoise(noisy + shift) - shift
            cells.append(f"{np.sqrt(np.mean((out - clean) ** 2)):.4g}")
            worst = max(worst, float(np.abs(out - base).max() / np.abs(base).max()))
        rows.append(f"| `{name}` | {config.baseline} | {backend} | " + " | ".join(cells) + f" | {worst:.1e} |")
    return rows


def main(argv=None) -> str:
    args = get_args(argv)
    check_budget(args)
    with write_policy(overwrite=args.overwrite):  # the write below: deepdenoise1d.safewrite's policy
        return produce(args)


def produce(args: argparse.Namespace) -> str:
    if args.output is not None:
        guard_output(args.output)
    from icnn.shipped import weights_dir

    clean, noisy = benchmark_signals(args.seed, args.n, SIGMA)
    lines = [f"RMSE of f(y + c) − c on {args.n} benchmark signals (seed {args.seed}, σ = {SIGMA:g}, fixed BN, float64 in)",
             "", "| model | baseline | backend | " + " | ".join(f"c = {c:g}σ" for c in OFFSETS)
             + " | max departure |", "|---|---|---|" + "---|" * (len(OFFSETS) + 1)]
    for pth in sorted(weights_dir().glob("*.pth")):
        lines += rows_for(pth.stem, pth, clean, noisy)
        print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output is not None:
        atomic_write(args.output, lambda f: f.write(text.encode()))
        print(f"wrote {args.output}", file=sys.stderr)
    return text


if __name__ == "__main__":
    run_cli(main, "offset_table.py")

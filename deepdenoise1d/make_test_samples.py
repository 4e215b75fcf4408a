"""Write TestK_data.txt / TestK_label.txt (K = 0..5) from fixed seeds.

    python -m deepdenoise1d.make_test_samples                    # into runs/test_samples/ (ignored by git)
    python -m deepdenoise1d.make_test_samples --out TestSamples  # refresh the committed samples, explicitly
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.io import TEST_SAMPLE_SEEDS, write_test_samples

DEFAULT_OUT = Path("runs") / "test_samples"


def get_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="make_test_samples",
        description=f"Write TestK_data.txt (noisy) and TestK_label.txt (clean), K = 0..5, "
        f"drawn from the fixed seeds {TEST_SAMPLE_SEEDS[0]}..{TEST_SAMPLE_SEEDS[-1]}.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder to write into, created if missing (default: %(default)s under the current "
                        "folder; pass --out TestSamples to refresh the repository's committed samples)")
    parser.add_argument("--sigma", type=float, default=3.0, help="white-noise standard deviation (default 3)")
    return parser.parse_args(argv)


def main(argv=None):
    args = get_args(argv)
    if not (math.isfinite(args.sigma) and args.sigma >= 0):
        raise InputError(f"--sigma must be a finite number >= 0, got {args.sigma}")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"{args.out}: exists and is not a folder")
    written = write_test_samples(args.out, args.sigma)
    print(f"wrote {len(written)} files to {args.out}")


if __name__ == "__main__":
    run_cli(main, "make_test_samples")

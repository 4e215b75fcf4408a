"""Write TestK_data.txt / TestK_label.txt (K = 0..5) from fixed seeds.

    python scripts/make_test_samples.py                         # into runs/test_samples/ (ignored by git)
    python scripts/make_test_samples.py --output TestSamples --allow-tracked   # refresh the committed samples
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from deepdenoise1d.dataset import TEST_SAMPLE_SEEDS, write_test_samples
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.safewrite import write_policy
from deepdenoise1d.synthesis import SIGMA

DEFAULT_OUTPUT = Path("runs") / "test_samples"


def get_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="make_test_samples.py",
        description=f"Write TestK_data.txt (noisy) and TestK_label.txt (clean), K = 0..5, "
        f"drawn from the fixed seeds {TEST_SAMPLE_SEEDS[0]}..{TEST_SAMPLE_SEEDS[-1]}.",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="DIR",
                        help="folder to write into, created if missing (default: %(default)s under the current "
                        "folder; --output TestSamples --allow-tracked refreshes the repository's committed samples)")
    parser.add_argument("--allow-tracked", action="store_true",
                        help="let --output be a folder of the repository's tracked files (TestSamples/) and replace "
                        "the TestK text files there; without it such a folder is refused")
    parser.add_argument("--sigma", type=float, default=SIGMA,
                        help=f"white-noise standard deviation (default {SIGMA:g})")
    return parser.parse_args(argv)


def main(argv=None):
    args = get_args(argv)
    if not (math.isfinite(args.sigma) and args.sigma >= 0):
        raise InputError(f"--sigma must be a finite number >= 0, got {args.sigma}")
    if args.output.exists() and not args.output.is_dir():
        raise InputError(f"{args.output}: exists and is not a folder")
    # The flag is the only way in: tracked folders, and their files that this project did not record.
    with write_policy(overwrite=args.allow_tracked, tracked_ok=args.allow_tracked):
        written = write_test_samples(args.output, args.sigma)
    print(f"wrote {len(written)} files to {args.output}")


if __name__ == "__main__":
    run_cli(main, "make_test_samples.py")

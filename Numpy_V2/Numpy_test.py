"""Test the pure-NumPy ICNN_s against the classical denoisers. Never imports torch.

    python Numpy_V2/Numpy_test.py                          # figures demo/TestK_numpy.png
    python Numpy_V2/Numpy_test.py --random 2000 --sigma 3 --seed 7 [--json r.json]
    python Numpy_V2/Numpy_test.py --input noisy.npy --output clean.npy [--bn unfixed]

Weights come from ``--weights`` (default ckpt/ckpt_best.h5, written by pth2h5.py).
When the default file is missing, the figures and the table show the classical
methods only; ``--input/--output`` needs the network.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from signals import report
from signals.errors import InputError, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO_ROOT / "ckpt" / "ckpt_best.h5"
FIG_SUFFIX = "numpy"


def get_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="Numpy_test.py",
        description="Denoise with the NumPy ICNN_s (HDF5 weights) and compare it with Wiener, L1, GMC, "
        "soft threshold and the Bayes limit. Modes: figures (default), --random N, or --input/--output.",
    )
    parser.add_argument("--weights", type=Path, default=None, metavar="PATH",
                        help="HDF5 weights written by pth2h5.py (default: ckpt/ckpt_best.h5 in the repository; "
                        "if that default is missing the figures and table show classical methods only)")
    report.add_mode_args(parser, REPO_ROOT, FIG_SUFFIX)
    args = parser.parse_args(argv)
    report.check_mode_args(parser, args)
    return args


def load_network(weights: Path | None):
    """The NumPy network, or None when the default weights file does not exist."""
    if weights is None:
        if not DEFAULT_WEIGHTS.exists():
            print(f"Numpy_test.py: no weights at {DEFAULT_WEIGHTS}; classical methods only "
                  "(run pth2h5.py, or pass --weights)", file=sys.stderr)
            return None
        weights = DEFAULT_WEIGHTS
    if not weights.exists():
        raise InputError(f"{weights}: no such weights file")
    from Numpy_V2.model import load_h5  # only when there are weights to load

    return load_h5(weights)


def main(argv=None):
    args = get_args(argv)
    if args.input is not None:
        if args.weights is None and not DEFAULT_WEIGHTS.exists():
            raise InputError(f"no weights at {DEFAULT_WEIGHTS}: --input needs the network (run pth2h5.py, or pass --weights)")
        net = load_network(args.weights)
        n, length = report.denoise_file(args.input, args.output, lambda noisy: net.denoise(noisy, bn_mode=args.bn))
        mode = args.bn or net.config.get("bn_mode", "fixed")
        print(f"denoised {n} signal(s) of length {length} with {mode} BN -> {args.output}")
        return
    net = load_network(args.weights)
    methods = report.network_methods(lambda noisy, mode: net.denoise(noisy, bn_mode=mode)) if net is not None else {}
    methods.update(report.classical_methods(args.sigma))
    if args.random is not None:
        report.run_random_mode(args, methods, FIG_SUFFIX)
    else:
        report.run_figure_mode(args, methods, FIG_SUFFIX)


if __name__ == "__main__":
    run_cli(main, "Numpy_test.py")

"""Test the pure-NumPy ICNN_s against the classical denoisers. Never imports torch.

    python Numpy_V2/Numpy_test.py                                   # figures runs/figures/TestK_numpy.png
    python Numpy_V2/Numpy_test.py --random [--n 2000 --seed 2026 --sigma 3] [--json r.json --plots]
    python Numpy_V2/Numpy_test.py --input rec.npy --output out.npy [--sigma S] [--json J]   # the best candidate by SURE
    python Numpy_V2/Numpy_test.py --input noisy.npy --output clean.npy --method net [--bn-mode unfixed]   # the network alone

Weights come from ``--weights`` (default ckpt/ckpt_universal.h5 for ``--input``, the network trained on
a broad prior of signals; ckpt/ckpt_best.h5, the spike benchmark's, otherwise; written by pth2h5.py).
When that default file is missing, the figures and the table show the classical
methods only, and ``--input/--output`` scores the classical candidates (``--method net`` needs the
network). Flags, modes and tables are
the same as Pytorch_V1/test.py's (deepdenoise1d/frontend.py).
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from icnn.shipped import default_weights_for, resolve_weights
from icnn.spec import BN_MODES, CHUNK, MIN_LENGTH, inference_modes, min_length
from deepdenoise1d import cli, frontend
from deepdenoise1d.errors import InputError, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
PROG = "Numpy_test.py"


def get_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Denoise with the NumPy ICNN_s (HDF5 weights) and compare it with Wiener, L1, GMC, "
        "soft threshold and the Bayes limit. Modes: figures (default), --random, or --input/--output.",
    )
    cli.add_weights_arg(parser, None, "HDF5 weights written by pth2h5.py (default: ckpt/ckpt_universal.h5 with "
                        "--input, trained on a broad prior of signals; else ckpt/ckpt_best.h5, the spike benchmark's; "
                        "when that default is missing, classical methods only)")
    frontend.add_test_args(parser, REPO_ROOT / "TestSamples", "numpy", BN_MODES)
    args = parser.parse_args(argv)
    frontend.check_test_args(parser, args)
    return args


def load_backend(args) -> frontend.Backend:
    """The NumPy network, or a backend without one when the default weights are missing."""
    from deepdenoise1d.threads import resolve_threads

    weights = args.weights
    if weights is None:
        default = default_weights_for(".h5", record=args.input is not None)
        if not default.exists():
            if args.input is None or args.method == "auto":
                print(f"{PROG}: no weights at {default}; classical methods only "
                      f"(make them with: python pth2h5.py, or pass --weights)", file=sys.stderr)
            return frontend.Backend(PROG, "NumPy", "numpy", None, None, None, None, MIN_LENGTH, CHUNK, BN_MODES)
        weights = default
    weights = resolve_weights(weights, ".h5")
    if not weights.exists():
        raise InputError(frontend.missing_weights_message(weights))
    from Numpy_V2.jacobian import denoise_jacobians
    from Numpy_V2.model import load_h5  # only when there are weights to load

    net = load_h5(weights)
    threads = resolve_threads(args.threads)
    return frontend.Backend(PROG, "NumPy", "numpy", weights,
                       lambda noisy, mode: net.denoise(noisy, bn_mode=mode, threads=threads),
                       net.config.bn_mode, net.config.sigma_range, min_length(net.config), CHUNK,
                       inference_modes(net.config),
                       train_length=net.config.train_length, jacobian=partial(denoise_jacobians, net),
                       input_scale=net.config.input_scale, equivariant=net.config.equivariant,
                       offset_free=net.config.baseline == "median")


def main(argv=None):
    args = get_args(argv)
    frontend.run_test_cli(args, load_backend(args))


if __name__ == "__main__":
    run_cli(main, PROG)

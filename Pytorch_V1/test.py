"""Test the PyTorch ICNN_s against the classical denoisers.

    python Pytorch_V1/test.py                                   # figures runs/figures/TestK_torch.png
    python Pytorch_V1/test.py --random [--n 2000 --seed 2026 --sigma 3] [--json r.json --plots]
    python Pytorch_V1/test.py --input rec.npy --output out.npy [--sigma S] [--json J]   # the best candidate by SURE
    python Pytorch_V1/test.py --input noisy.npy --output clean.npy --method net [--bn-mode unfixed]   # the network alone

The weights (``--weights``, default ckpt/ckpt_universal.pth for ``--input``, else ckpt/ckpt_best.pth) are loaded with
``weights_only=True`` only: a file that is not a plain checkpoint is refused, never
run. Flags, modes and tables are the same as Numpy_V2/Numpy_test.py's
(deepdenoise1d/frontend.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from icnn.shipped import default_weights_for, resolve_weights
from icnn.spec import BN_MODES, CHUNK, inference_modes, min_length
from deepdenoise1d import cli, frontend
from deepdenoise1d.errors import InputError, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
PROG = "test.py"


def get_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Denoise with the PyTorch ICNN_s and compare it with Wiener, L1, GMC, soft threshold "
        "and the Bayes limit. Modes: figures (default), --random, or --input/--output.",
    )
    cli.add_weights_arg(parser, None, "a .pth checkpoint written by train.py or in the original repository's layout "
                        "(default: ckpt/ckpt_universal.pth with --input, trained on a broad prior of signals; else "
                        "ckpt/ckpt_best.pth, the spike benchmark's)")
    cli.add_device_arg(parser)
    frontend.add_test_args(parser, REPO_ROOT / "TestSamples", "torch", BN_MODES)
    args = parser.parse_args(argv)
    frontend.check_test_args(parser, args)
    if args.weights is None:
        args.weights = default_weights_for(".pth", record=args.input is not None)
    return args


def load_backend(args) -> frontend.Backend:
    """The network on the chosen device, with what its checkpoint records."""
    from Pytorch_V1.checkpoint import load_model  # torch only once the flags are known good
    from Pytorch_V1.inference import configure_threads, denoise, resolve_device
    from deepdenoise1d.threads import resolve_threads

    configure_threads(resolve_threads(args.threads))
    device = resolve_device(args.device)
    args.weights = resolve_weights(args.weights, ".pth")
    if not args.weights.exists():
        raise InputError(frontend.missing_weights_message(args.weights))
    model, _ = load_model(args.weights, device)
    # sigma_range: recorded, or (older checkpoints) the recorded training sigma, else None (no warning).
    return frontend.Backend(PROG, "PyTorch", "torch", args.weights, lambda noisy, mode: denoise(model, noisy, mode),
                       model.config.bn_mode, model.config.sigma_range, min_length(model.config), CHUNK,
                       inference_modes(model.config),
                       train_length=model.config.train_length, input_scale=model.config.input_scale,
                       equivariant=model.config.equivariant, offset_free=model.config.baseline == "median")


def main(argv=None):
    args = get_args(argv)
    frontend.run_test_cli(args, load_backend(args))


if __name__ == "__main__":
    run_cli(main, PROG)

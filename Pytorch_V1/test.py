"""Test the PyTorch ICNN_s against the classical denoisers.

    python Pytorch_V1/test.py                          # figures demo/TestK_torch.png
    python Pytorch_V1/test.py --random 2000 --sigma 3 --seed 7 [--json r.json]
    python Pytorch_V1/test.py --input noisy.npy --output clean.npy [--bn unfixed]

The checkpoint (``--checkpoint``, default ckpt/ckpt_best.pth) is loaded with
``weights_only=True`` only: a file that is not a plain checkpoint is refused, never run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from Pytorch_V1.checkpoint import load_model
from Pytorch_V1.inference import CHUNK, denoise, resolve_device
from Pytorch_V1.model import MIN_LENGTH
from signals import report
from signals.errors import InputError, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO_ROOT / "ckpt" / "ckpt_best.pth"
FIG_SUFFIX = "torch"


def get_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="test.py",
        description="Denoise with the PyTorch ICNN_s and compare it with Wiener, L1, GMC, soft threshold "
        "and the Bayes limit. Modes: figures (default), --random N, or --input/--output.",
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, metavar="PATH",
                        help="checkpoint written by train.py, or the seed's layout "
                        "(default: ckpt/ckpt_best.pth in the repository)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs; auto picks CUDA when available (default auto)")
    report.add_mode_args(parser, REPO_ROOT, FIG_SUFFIX)
    args = parser.parse_args(argv)
    report.check_mode_args(parser, args)
    return args


def main(argv=None):
    args = get_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise InputError(str(err)) from None
    model, _ = load_model(args.checkpoint, device)
    if args.input is not None:
        n, length = report.denoise_file(args.input, args.output, lambda noisy: denoise(model, noisy, args.bn),
                                        min_length=MIN_LENGTH, chunk=CHUNK)
        print(f"denoised {n} signal(s) of length {length} with {args.bn or model.config.bn_mode} BN -> {args.output}")
        return
    methods = report.network_methods(lambda noisy, mode: denoise(model, noisy, mode))
    methods.update(report.classical_methods(args.sigma))
    if args.random is not None:
        report.run_random_mode(args, methods, FIG_SUFFIX)
    else:
        report.run_figure_mode(args, methods, FIG_SUFFIX)


if __name__ == "__main__":
    run_cli(main, "test.py")

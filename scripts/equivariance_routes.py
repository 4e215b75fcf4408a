"""Why the shipped models normalise the scale inside the network instead of dropping every bias.

    .venv/bin/python scripts/equivariance_routes.py [--weights ckpt/ckpt_best.pth] [--n 200]

Two routes make a denoiser scale-equivariant, f(a·y) = a·f(y). A bias-free network (no additive
constant anywhere: convolution biases, BN's β and running mean set to 0) is homogeneous of degree 1
only while every BN divides by a fixed number: in unfixed mode each BN divides by the signal's own
spread, so the network becomes scale-*invariant*, f(a·y) = f(y). The scale normalisation of an
equivariant model, f(y) = s(y)·g(y / s(y)), holds in both modes. This script removes the additive
constants of a checkpoint and prints max |f(a·y)/a − f(y)| / max |f(y)| per BN mode for both routes
(a checkpoint with ``equivariant`` false is made equivariant with the same weights for the second).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses

import numpy as np
import torch

from icnn.shipped import default_weights
from icnn.spec import BN_MODES
from Pytorch_V1.checkpoint import load_model
from Pytorch_V1.model import wiener_prior
from deepdenoise1d import cli
from deepdenoise1d.errors import run_cli
from deepdenoise1d.synthesis import SIGMA, benchmark_signals

FACTORS = (1e-3, 1e3)


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="equivariance_routes.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(default_weights(".pth")), help="a checkpoint (default: the shipped ckpt_best.pth)")
    cli.add_n_arg(p, 200)
    cli.add_seed_arg(p, what="the benchmark signals")
    return p.parse_args(argv)


@torch.no_grad()
def bias_free(model):
    """A copy of ``model`` with every additive constant removed and no scale normalisation."""
    model = copy.deepcopy(model)
    model.config = dataclasses.replace(model.config, equivariant=False)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv1d) and module.bias is not None:
            module.bias.zero_()
        if isinstance(module, torch.nn.BatchNorm1d):
            module.bias.zero_()
            module.running_mean.zero_()
    return model


@torch.no_grad()
def departure(model, x: torch.Tensor, mode: str) -> float:
    """Worst relative departure from f(a·y) = a·f(y) over :data:`FACTORS` (h is scale-free, computed once)."""
    h = wiener_prior(x) if model.wienernet is not None else None
    reference = model(x, h, mode)
    return max(float((model(x * a, h, mode) / a - reference).abs().max() / reference.abs().max()) for a in FACTORS)


def main(argv=None) -> None:
    args = get_args(argv)
    model, _ = load_model(args.weights, "cpu")
    normalised = copy.deepcopy(model)
    normalised.config = dataclasses.replace(model.config, equivariant=True)
    _, noisy = benchmark_signals(args.seed, args.n, SIGMA)
    x = torch.from_numpy(noisy.astype(np.float32))[:, None]
    print("| route | " + " | ".join(f"{m} BN" for m in BN_MODES) + " |")
    print("|---|" + "---|" * len(BN_MODES))
    for name, net in (("bias-free", bias_free(model)), ("scale normalisation", normalised)):
        print(f"| {name} | " + " | ".join(f"{departure(net, x, m):.2e}" for m in BN_MODES) + " |")


if __name__ == "__main__":
    run_cli(main, "equivariance_routes.py")

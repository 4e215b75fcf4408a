"""One figure where the two backends would draw the same picture: PyTorch and NumPy together.

    .venv/bin/python scripts/backend_figures.py --weights ckpt/ckpt_best.pth [ckpt/ckpt_best.h5] \
        [--fig-dir runs/figures] [--n 2000 --seed 2026]

test.py and Numpy_test.py each draw their own figures, and from the same weights those are
the same picture up to float32 rounding. This script draws each picture once:

- ``TestK.png``: the PyTorch network (both BN modes) beside Wiener, L1 and GMC on TestK,
  with NumPy − PyTorch difference panels underneath;
- ``methods.png``: RMSE ± CI on the held-out draw ``benchmark_signals(--seed, --n, 3)``, the
  network rows of both backends and the classical rows once;
- ``filter.png``: output vs input per sample, PyTorch, with the largest |NumPy − PyTorch| in the title.

Every title names the backends, the weights files and the seed. It needs both torch and
NumPy, so it lives in ``scripts/`` (``Numpy_V2`` never imports torch).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from icnn.shipped import default_weights
from icnn.spec import BN_MODES
from Numpy_V2.model import load_h5
from Pytorch_V1.checkpoint import load_model
from Pytorch_V1.inference import configure_threads, denoise
from deepdenoise1d import cli, evaluate, frontend, plots
from deepdenoise1d.methods import classical_methods
from deepdenoise1d.dataset import read_test_samples
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.safewrite import write_policy
from deepdenoise1d.synthesis import SIGMA, benchmark_signals
from deepdenoise1d.threads import resolve_threads

REPO_ROOT = Path(__file__).resolve().parents[1]


def get_args(argv=None):
    p = argparse.ArgumentParser(prog="backend_figures.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default = default_weights(".pth")
    p.add_argument("--weights", type=Path, nargs="+", default=[default], metavar="PATH",
                   help=f"the .pth checkpoint (PyTorch side), then optionally the same weights as .h5 (NumPy side; "
                   f"default: the .pth with the suffix .h5). Default {default}")
    p.add_argument("--samples", type=Path, default=REPO_ROOT / "TestSamples", metavar="DIR",
                   help="folder of TestK_data.txt / TestK_label.txt pairs (default: the repository's TestSamples/)")
    p.add_argument("--fig-dir", type=Path, default=cli.DEFAULT_FIG_DIR, metavar="DIR",
                   help=f"where the figures go (default {cli.DEFAULT_FIG_DIR}/ under the current folder)")
    cli.add_overwrite_arg(p)
    cli.add_n_arg(p, 2000)
    cli.add_seed_arg(p)
    cli.add_threads_arg(p)
    args = p.parse_args(argv)
    if len(args.weights) > 2:
        p.error("--weights takes the .pth and, optionally, the .h5: at most two paths")
    args.weights, args.h5 = args.weights[0], (args.weights[1:] or [args.weights[0].with_suffix(".h5")])[0]
    return args


def sample_figures(args, torch_net, numpy_net, made_by: str, reads: tuple) -> list[Path]:
    """TestK.png: PyTorch network and classical panels, then NumPy − PyTorch per BN mode."""
    written = []
    seeded = args.samples.resolve() == (REPO_ROOT / "TestSamples").resolve()
    for name, noisy, clean in read_test_samples(args.samples):
        y = noisy[None]
        estimates = {f"net_{m}": torch_net(y, m)[0] for m in BN_MODES}
        estimates.update({k: classical_methods(SIGMA)[k](y)[0] for k in frontend.FIGURE_METHODS})
        differences = {f"NumPy − PyTorch, {m} BN": numpy_net(y, m)[0] - estimates[f"net_{m}"] for m in BN_MODES}
        fig = plots.comparison_figure(plots.sample_title(name, args.samples, made_by, seeded), clean, noisy, estimates, differences)
        written.append(plots.save_figure(fig, args.fig_dir / f"{name}.png", reads=reads))
    return written


def benchmark_figures(args, torch_net, numpy_net, made_by: str, reads: tuple) -> list[Path]:
    """methods.png (both backends' network rows, classical once) and filter.png (PyTorch, with the max difference)."""
    methods = {f"{backend} {evaluate.row_name('net_' + m)}": (lambda y, m=m, f=f: f(y, m))
               for backend, f in (("PyTorch", torch_net), ("NumPy", numpy_net)) for m in BN_MODES}
    methods.update({evaluate.row_name(k): f for k, f in classical_methods(SIGMA).items()})
    clean, noisy = benchmark_signals(args.seed, args.n, SIGMA)
    scores, estimates = evaluate.evaluate_methods(clean, noisy, methods)
    report = evaluate.build_report(SIGMA, args.n, args.seed, scores)
    about = f"{made_by}; seed {args.seed}"
    nets = {m: estimates[f"PyTorch {evaluate.row_name('net_' + m)}"] for m in BN_MODES}
    gap = max(np.max(np.abs(estimates[f"NumPy {evaluate.row_name('net_' + m)}"] - nets[m])) for m in BN_MODES)
    filter_fig = plots.filter_figure(noisy, {f"net_{m}": v for m, v in nets.items()}, SIGMA,
                                     made_by=f"{about}; PyTorch drawn, max |NumPy − PyTorch| = {gap:.2g}")
    return [plots.save_figure(plots.methods_chart(report, about), args.fig_dir / "methods.png", reads=reads),
            plots.save_figure(filter_fig, args.fig_dir / "filter.png", reads=reads)]


def main(argv=None) -> None:
    args = get_args(argv)
    with write_policy(overwrite=args.overwrite):  # every write below: deepdenoise1d.safewrite's policy
        produce(args)


def produce(args: argparse.Namespace) -> None:
    """Draw every figure into --fig-dir."""
    configure_threads(resolve_threads(args.threads))
    for path in (args.weights, args.h5):
        if not path.exists():
            raise InputError(frontend.missing_weights_message(path))
    model, _ = load_model(args.weights)
    net = load_h5(args.h5)
    torch_net = lambda y, m: denoise(model, y, m)  # noqa: E731
    numpy_net = lambda y, m: net.denoise(y, bn_mode=m)  # noqa: E731
    made_by = f"PyTorch ({frontend.shown_path(args.weights)}) and NumPy ({frontend.shown_path(args.h5)})"
    reads = (args.weights, args.h5, args.samples)
    for path in sample_figures(args, torch_net, numpy_net, made_by, reads) + \
            benchmark_figures(args, torch_net, numpy_net, made_by, reads):
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main, "backend_figures.py")

"""The application shared by the two test front-ends (Pytorch_V1/test.py, Numpy_V2/Numpy_test.py).

One set of flags, three run modes. The front-end builds a :class:`Backend` (its network
and what it knows about it); everything else is here, so both scripts behave the same
way. Torch-free: the PyTorch front-end passes its network in.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from deepdenoise1d import evaluate
from deepdenoise1d.cli import DEFAULT_FIG_DIR, add_bn_mode_arg, add_n_arg, add_seed_arg, add_threads_arg, sigma_or_auto
from deepdenoise1d.dataset import read_test_samples
from deepdenoise1d.errors import InputError
from deepdenoise1d.safewrite import guard_output
from deepdenoise1d.synthesis import SIGMA

DRAW_SIGMA = SIGMA  # --random draws at the benchmark σ when --sigma is auto or not given
FIGURE_METHODS = ("wiener", "l1", "gmc")  # classical panels of the per-sample figures


@dataclass
class Backend:
    """What a front-end knows about its network.

    ``denoise(noisy (n, L), bn_mode or None) -> (n, L)`` keeps the float dtype; None when
    there is no network (the NumPy side without its default weights). ``bn_mode`` is the
    mode the weights record; ``sigma_range`` the [low, high] noise range they were trained on.
    """

    prog: str
    name: str
    suffix: str
    weights: Path | None
    denoise: Callable | None
    bn_mode: str | None
    sigma_range: list | None
    min_length: int
    chunk: int
    bn_modes: tuple

    def label(self) -> str:
        """``PyTorch, ckpt/ckpt_best.pth`` (what made a table or a figure)."""
        return f"{self.name}, {shown_path(self.weights)}" if self.weights is not None else f"{self.name}, no weights"


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def add_test_args(parser: argparse.ArgumentParser, samples: Path, fig_suffix: str, bn_modes: tuple) -> None:
    """Every flag the two test front-ends share (their weights and device flags are their own)."""
    add_bn_mode_arg(parser, bn_modes)
    add_threads_arg(parser)
    parser.add_argument("--sigma", type=sigma_or_auto, default=None, metavar="S|auto",
                        help=f"noise level of the --random draw (default {DRAW_SIGMA:g}) and the σ given to the soft "
                        "threshold (T = σ) and the Bayes oracle; auto estimates σ for each noisy signal "
                        f"(deepdenoise1d.noise.estimate_sigma; --random then draws at σ = {DRAW_SIGMA:g})")
    figures = parser.add_argument_group("figure mode (the default)")
    figures.add_argument("--samples", type=Path, default=samples, metavar="DIR",
                         help="folder of TestK_data.txt / TestK_label.txt pairs (default: the repository's TestSamples/)")
    figures.add_argument("--fig-dir", type=Path, default=DEFAULT_FIG_DIR, metavar="DIR",
                         help=f"where figures go, created if missing: TestK_{fig_suffix}.png, and with --random --plots "
                         f"methods_{fig_suffix}.png and filter_{fig_suffix}.png (default: {DEFAULT_FIG_DIR}/ under the "
                         "current folder)")
    bench = parser.add_argument_group("random benchmark mode")
    bench.add_argument("--random", action="store_true",
                       help="draw --n held-out signals (deepdenoise1d.synthesis.benchmark_signals(--seed, --n, --sigma); "
                       "the same signals in test.py, Numpy_test.py and scripts/results.py) and print a table of every method")
    add_n_arg(bench, 2000)
    add_seed_arg(bench)
    bench.add_argument("--plots", action="store_true",
                       help=f"with --random: also draw methods_{fig_suffix}.png and filter_{fig_suffix}.png into --fig-dir")
    files = parser.add_argument_group("denoise-a-file mode")
    files.add_argument("--input", type=Path, metavar="IN",
                       help="signals to denoise: .txt (one value per line, or one signal per row) or .npy ([L] or "
                       "[N, L]); streamed in chunks, so any size fits in memory")
    files.add_argument("--output", type=Path, metavar="OUT",
                       help="where the denoised signals go (.txt or .npy, the input's shape; float32 in, float32 out); "
                       "never the input or the weights")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="with --random: the table as JSON; with --input: what was done (counts, dtype, BN mode, "
                        "σ warning). Never the weights or the input")


def check_test_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flag combinations that mix modes or that a mode would ignore (argparse error, exit 2)."""
    if args.random and args.input is not None:
        parser.error("--random and --input are different modes; give one")
    if (args.input is None) != (args.output is None):
        parser.error("--input and --output go together")
    if args.plots and not args.random:
        parser.error("--plots needs --random")
    if args.json is not None and not (args.random or args.input is not None):
        parser.error("--json needs --random or --input/--output")
    args.repo_samples = args.samples.resolve() == Path(parser.get_default("samples")).resolve()
    if args.input is not None and args.sigma not in (None, "auto"):
        parser.error("--sigma S applies to --random and the figures; with --input σ is estimated per signal "
                     "(for the out-of-range warning)")


def run_test_cli(args: argparse.Namespace, backend: Backend) -> None:
    """Run the mode the flags ask for: --input/--output, --random, or the TestK figures."""
    reads = tuple(p for p in (backend.weights, args.input) if p is not None)
    if args.input is not None:
        run_file_mode(args, backend, reads)
    elif args.random:
        run_random_mode(args, backend, reads)
    else:
        run_figure_mode(args, backend, reads + (args.samples,))


def shown_modes(args: argparse.Namespace, backend: Backend) -> tuple:
    """BN modes the table and figures show: --bn-mode alone when given, else every mode."""
    return (args.bn_mode,) if args.bn_mode else tuple(backend.bn_modes)


def methods_of(args: argparse.Namespace, backend: Backend, sigma) -> dict:
    """Network rows (when there is a network) then the classical ones."""
    methods = {}
    if backend.denoise is not None:
        methods.update(evaluate.network_methods(backend.denoise, shown_modes(args, backend)))
    methods.update(evaluate.classical_methods(sigma))
    return methods


def warn(backend: Backend, line: str | None) -> None:
    """One warning line on stderr, named by the script."""
    if line:
        print(f"{backend.prog}: {line}", file=sys.stderr)


def check_sigma_range(backend: Backend, noisy) -> None:
    """Warn once when ``noisy`` lies outside the noise range the weights were trained on."""
    if backend.denoise is not None:
        check = evaluate.sigma_range_check(backend.sigma_range, noisy)
        warn(backend, check.warning() if check else None)


def run_random_mode(args: argparse.Namespace, backend: Backend, reads: tuple) -> dict:
    """Benchmark every method on the held-out draw: table on stdout, optional JSON and figures."""
    if args.json is not None:
        guard_output(args.json, reads)  # fail before the work, not after
    draw = DRAW_SIGMA if args.sigma in (None, "auto") else args.sigma
    given = args.sigma if args.sigma is not None else draw
    report, _, noisy, estimates = evaluate.random_benchmark(
        args.n, draw, args.seed, methods_of(args, backend, given),
        classical_sigma="estimated" if given == "auto" else "given", backend=backend.name,
        weights=str(backend.weights) if backend.weights else None)
    check_sigma_range(backend, noisy)
    print(evaluate.format_table(report))
    if args.json is not None:
        evaluate.write_report_json(args.json, report, reads)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plots:
        for path in draw_random_figures(args, backend, report, noisy, estimates, reads):
            print(f"wrote {path}", file=sys.stderr)
    return report


def draw_random_figures(args, backend: Backend, report: dict, noisy, estimates: dict, reads: tuple) -> list[Path]:
    """methods_{suffix}.png and filter_{suffix}.png, titled with backend, weights and seed."""
    from deepdenoise1d import plots  # matplotlib only when drawing

    made_by = f"{backend.label()}; seed {args.seed}, {args.n} signals"
    shown = {k: v for k, v in estimates.items() if k.startswith("net_")} or {"wiener": estimates["wiener"]}
    sigma = report["sigma"]
    return [
        plots.save_figure(plots.methods_chart(report, made_by), args.fig_dir / f"methods_{backend.suffix}.png", reads=reads),
        plots.save_figure(plots.filter_figure(noisy, shown, sigma, made_by=made_by),
                          args.fig_dir / f"filter_{backend.suffix}.png", reads=reads),
    ]


def run_figure_mode(args: argparse.Namespace, backend: Backend, reads: tuple) -> list[Path]:
    """One comparison figure per TestK sample: the network (when loaded) and Wiener, L1, GMC."""
    from deepdenoise1d import plots  # matplotlib only when drawing

    sigma = args.sigma if args.sigma is not None else DRAW_SIGMA
    methods = methods_of(args, backend, sigma)
    shown = {k: m for k, m in methods.items() if k.startswith("net_") or k in FIGURE_METHODS}
    samples = read_test_samples(args.samples)
    check_sigma_range(backend, np.stack([noisy for _, noisy, _ in samples]))
    written = plots.draw_test_sample_figures(samples, args.fig_dir, backend.suffix, shown,
                                             made_by=backend.label(), reads=reads, samples_dir=args.samples,
                                             seeded=args.repo_samples)
    for path in written:
        print(f"wrote {path}")
    return written


def run_file_mode(args: argparse.Namespace, backend: Backend, reads: tuple) -> evaluate.FileResult:
    """Denoise --input into --output, streaming; one warning line when σ is out of the trained range."""
    if backend.denoise is None:
        raise InputError("--input needs the network: pass --weights")
    if args.json is not None:
        if os.path.abspath(args.json) == os.path.abspath(args.output):
            raise InputError(f"{args.json}: --json and --output name the same file; give two paths")
        guard_output(args.json, reads + (args.output,))
    result = evaluate.denoise_file(args.input, args.output, lambda noisy: backend.denoise(noisy, args.bn_mode),
                                   backend.min_length, backend.chunk, reads, backend.sigma_range)
    warn(backend, result.warning)
    mode = args.bn_mode or backend.bn_mode
    print(f"denoised {result.n} signal(s) of length {result.length} ({result.dtype}) with {mode} BN "
          f"({backend.label()}) -> {args.output}")
    if args.json is not None:
        summary = {"backend": backend.name, "weights": str(backend.weights), "input": str(args.input),
                   "output": str(args.output), "n": result.n, "length": result.length, "dtype": result.dtype,
                   "bn_mode": mode, "sigma_range": backend.sigma_range, "sigma_warning": result.warning}
        evaluate.write_report_json(args.json, summary, reads + (args.output,))
    return result


def missing_weights_message(path: Path) -> str:
    """One line for a weights file that does not exist, with the command that makes it."""
    if path.suffix.lower() == ".h5":
        source = path.with_suffix(".pth")
        src = str(source) if source.is_file() else "SRC.pth"
        return f"{path}: no such weights file; make it from a checkpoint with: python pth2h5.py {src} {path}"
    return f"{path}: no such checkpoint file; train one with Pytorch_V1/train.py, or pass --weights"

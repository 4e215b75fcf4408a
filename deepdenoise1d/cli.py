"""The one command-line convention every script shares.

Same flag, same meaning, everywhere:

``--weights PATH``   the trained network (.pth for PyTorch scripts, .h5 for NumPy ones)
``--bn MODE``        batch-norm statistics, fixed or unfixed (default: what the weights record)
``--n N``            how many signals to draw
``--seed K``         seed of the drawn signals (default :data:`deepdenoise1d.synthesis.DEFAULT_SEED`)
``--sigma S``        noise level: a number, LOW:HIGH, or auto (estimated)
``--device D``       auto, cpu or cuda (PyTorch scripts)
``--threads N``      compute threads (default :data:`deepdenoise1d.threads.DEFAULT_THREADS`)
``--output PATH``    the main result file

Every script has ``get_args(argv)`` and ``main(argv)`` and ends with
``run_cli(main, prog)``, so bad input is one line on stderr and exit 2.
This module is the command-line layer; the library modules of ``deepdenoise1d`` hold no argparse.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from deepdenoise1d import evaluate
from deepdenoise1d.errors import InputError, run_cli  # noqa: F401  (re-exported: one import for scripts)
from deepdenoise1d.io import guard_output, read_test_samples
from deepdenoise1d.synthesis import DEFAULT_SEED, SIGMA


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return _bounded_int(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return _bounded_int(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _finite_float(text, "> 0", lambda v: v > 0)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _finite_float(text, ">= 0", lambda v: v >= 0)


def decay_float(text: str) -> float:
    """argparse type: a number in [0, 1), such as a moving average's decay per step."""
    return _finite_float(text, "in [0, 1)", lambda v: 0 <= v < 1)


def _finite_float(text: str, bound: str, within) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or not within(value):
        raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
    return value


def _bounded_int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return value


def add_weights_arg(parser: argparse.ArgumentParser, default: Path | None, kind: str) -> None:
    """``--weights PATH``; ``kind`` says which file ("a .pth checkpoint", "HDF5 weights (.h5)")."""
    shown = f" (default {default})" if default is not None else ""
    parser.add_argument("--weights", type=Path, default=default, metavar="PATH", help=f"{kind} to load{shown}")


def add_bn_arg(parser: argparse.ArgumentParser, modes: tuple) -> None:
    """``--bn MODE``; ``modes`` is ``icnn.spec.BN_MODES`` (passed in: deepdenoise1d/ does not import icnn)."""
    parser.add_argument("--bn", choices=modes, default=None,
                        help="batch-norm statistics: fixed (running, from training) or unfixed (each signal's own); "
                        "default: the mode the weights record")


def add_n_arg(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--n", type=positive_int, default=default, metavar="N",
                        help=f"number of signals to draw (default {default})")


def add_seed_arg(parser: argparse.ArgumentParser, default: int = DEFAULT_SEED, what: str = "the drawn signals") -> None:
    parser.add_argument("--seed", type=nonnegative_int, default=default, metavar="K",
                        help=f"seed of {what} (default {default}; the same seed gives the same signals in every script)")


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="compute threads (default 1: on a 2-core machine a second thread made training 1.45x "
                        "faster when quiet but 35x slower beside one busy process, scripts/bench_threads.py; "
                        "capped at the cores this process may use)")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs; auto picks CUDA when available (default auto)")


# ---------------------------------------------------------------------------
# The two test front-ends (Pytorch_V1/test.py, Numpy_V2/Numpy_test.py): one set of flags,
# three run modes. The front-end builds a Backend (its network and what it knows about it);
# everything else is here, so both scripts behave the same way.

DEFAULT_FIG_DIR = Path("runs") / "figures"  # under the current folder, never a tracked one
DRAW_SIGMA = SIGMA  # --random draws at the benchmark σ when --sigma is auto or not given
FIGURE_METHODS = ("wiener", "l1", "gmc")  # classical panels of the per-sample figures


def sigma_or_auto(text: str):
    """argparse type: ``auto`` or a finite number > 0."""
    return "auto" if text.strip().lower() == "auto" else positive_float(text)


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
    add_bn_arg(parser, bn_modes)
    add_threads_arg(parser)
    parser.add_argument("--sigma", type=sigma_or_auto, default=None, metavar="S|auto",
                        help="noise level of the --random draw (default 3) and the σ given to the soft threshold "
                        "(T = σ) and the Bayes oracle; auto estimates σ for each noisy signal "
                        "(deepdenoise1d.classical.estimate_sigma; --random then draws at σ = 3)")
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
    """BN modes the table and figures show: --bn alone when given, else every mode."""
    return (args.bn,) if args.bn else tuple(backend.bn_modes)


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
    result = evaluate.denoise_file(args.input, args.output, lambda noisy: backend.denoise(noisy, args.bn),
                                   backend.min_length, backend.chunk, reads, backend.sigma_range)
    warn(backend, result.warning)
    mode = args.bn or backend.bn_mode
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

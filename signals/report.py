"""What both front-ends (Pytorch_V1/test.py, Numpy_V2/Numpy_test.py) share: the method
table (timing, RMSE ± CI, PSNRs) with its Markdown and JSON forms, the random benchmark,
denoising a user's signal file in chunks, and the flags and run modes of both scripts.

A *method* is a callable ``noisy (N, L) -> estimate (N, L)``; methods are passed as an
ordered dict ``{key: callable}``, so the table follows the dict's order.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from signals import classical, plots
from signals.errors import InputError
from signals.io import atomic_write, check_length, check_output_path, read_npy, read_signals, write_signals
from signals.metrics import mean_ci95, psnr, psnr_paper, rmse
from signals.synthesis import noisy_pairs

Method = Callable[[np.ndarray], np.ndarray]

# ICNN_s halves the length four times; equal to Pytorch_V1.model.MIN_LENGTH (a test checks),
# repeated here because signals/ must not import torch.
NETWORK_MIN_LENGTH = 16
CHUNK = 8192
BN_MODES = ("fixed", "unfixed")
# Panels of the per-sample figures, in order (those available).
FIGURE_METHODS = ("net_fixed", "net_unfixed", "wiener", "l1", "gmc")


def classical_methods(sigma: float) -> dict[str, Method]:
    """The classical denoisers at noise level ``sigma``, keyed as in the JSON report.

    ``soft`` thresholds at T = σ; ``bayes`` is the posterior mean given σ.
    """
    return {
        "wiener": classical.wiener,
        "l1": classical.l1_srls,
        "gmc": classical.gmc,
        "soft": lambda noisy: classical.soft_threshold(noisy, threshold=sigma),
        "bayes": lambda noisy: classical.bayes_posterior_mean(noisy, sigma),
    }


def network_methods(denoise: Callable[[np.ndarray, str], np.ndarray]) -> dict[str, Method]:
    """``net_fixed`` and ``net_unfixed`` from a ``denoise(noisy, bn_mode)`` callable."""
    return {
        "net_fixed": lambda noisy: denoise(noisy, "fixed"),
        "net_unfixed": lambda noisy: denoise(noisy, "unfixed"),
    }


def evaluate_methods(
    clean: np.ndarray, noisy: np.ndarray, methods: dict[str, Method], progress: bool = True
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Run and time each method on the same signals and score it.

    Parameters
    ----------
    clean, noisy : np.ndarray
        Shape (N, L).
    methods : dict
        ``{key: callable(noisy) -> estimate}``.
    progress : bool
        Show a tqdm bar over methods (on stderr).

    Returns
    -------
    scores : dict
        ``{key: {"rmse", "rmse_ci95", "psnr_paper", "psnr", "seconds_per_signal"}}``,
        each the mean over signals (CI is the 95 % half-width).
    estimates : dict
        ``{key: estimate (N, L)}``.
    """
    n = noisy.shape[0]
    scores, estimates = {}, {}
    bar = tqdm(methods.items(), desc="methods", unit="method", disable=None if progress else True, leave=False)  # None: off when not a terminal
    for key, method in bar:
        bar.set_postfix_str(key)
        start = time.perf_counter()
        estimate = np.asarray(method(noisy), dtype=np.float64)
        elapsed = time.perf_counter() - start
        if estimate.shape != noisy.shape:
            raise ValueError(f"method {key!r} returned shape {estimate.shape}, expected {noisy.shape}")
        mean_rmse, ci95 = mean_ci95(rmse(estimate, clean))
        scores[key] = {
            "rmse": mean_rmse,
            "rmse_ci95": ci95,
            "psnr_paper": float(np.mean(psnr_paper(estimate, clean))),
            "psnr": float(np.mean(psnr(estimate, clean))),
            "seconds_per_signal": elapsed / n,
        }
        estimates[key] = estimate
    return scores, estimates


def build_report(sigma: float, n: int, seed: int | None, scores: dict[str, dict]) -> dict:
    """The JSON report: ``{"sigma", "n", "seed", "methods": {key: scores}}``."""
    return {"sigma": float(sigma), "n": int(n), "seed": seed, "methods": scores}


def format_table(report: dict) -> str:
    """Markdown table of a report: RMSE ± CI95, paper PSNR, PSNR and seconds per signal."""
    lines = [
        f"σ = {report['sigma']:g}, {report['n']} signals, seed {report['seed']}",
        "",
        "| method | RMSE ± CI95 | paper PSNR | PSNR (dB) | s / signal |",
        "|---|---|---|---|---|",
    ]
    for key, s in report["methods"].items():
        lines.append(
            f"| {key} | {s['rmse']:.3f} ± {s['rmse_ci95']:.3f} | {s['psnr_paper']:.2f} "
            f"| {s['psnr']:.2f} | {s['seconds_per_signal']:.2e} |"
        )
    return "\n".join(lines)


def write_report_json(path: str | os.PathLike, report: dict) -> None:
    """Write the report as indented JSON, atomically."""
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def random_benchmark(
    n: int, sigma: float, seed: int, methods: dict[str, Method], progress: bool = True
) -> tuple[dict, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Draw ``n`` benchmark signals from ``seed`` and evaluate every method on them.

    Returns
    -------
    report : dict
        See :func:`build_report`.
    clean, noisy : np.ndarray
        The drawn signals, (n, L).
    estimates : dict
        ``{key: estimate (n, L)}``.
    """
    if n < 1:
        raise InputError(f"--random needs at least 1 signal, got {n}")
    if not sigma > 0:
        raise InputError(f"--sigma must be > 0, got {sigma}")
    clean, noisy, _ = noisy_pairs(np.random.default_rng(seed), n, sigma)
    scores, estimates = evaluate_methods(clean, noisy, methods, progress)
    return build_report(sigma, n, seed, scores), clean, noisy, estimates


def read_signal_file(path: str | os.PathLike, min_length: int = NETWORK_MIN_LENGTH) -> tuple[np.ndarray, tuple[int, ...]]:
    """Read ``.txt`` or ``.npy`` signals for denoising.

    Returns the signals as float64 (N, L) and the shape they were stored in
    (``[L]`` for ``.txt``), so the output can be written back in that shape.
    Raises :class:`InputError` for unreadable, non-finite or too-short signals.
    """
    if Path(path).suffix.lower() == ".npy":
        stored = read_npy(path)
        shape = stored.shape
        signals = np.atleast_2d(stored).astype(np.float64)
    else:
        signals = read_signals(path)
        shape = signals.shape[1:]
    check_length(signals, min_length, str(path))
    return signals, shape


def denoise_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    denoise: Method,
    min_length: int = NETWORK_MIN_LENGTH,
    chunk: int = CHUNK,
    progress: bool = True,
) -> tuple[int, int]:
    """Denoise every signal of ``input_path`` in chunks and write them to ``output_path``.

    The output keeps the input's shape (``[L]`` or ``[N, L]``); it may not
    overwrite the input, and its folder is created when missing. A ``.txt``
    output holds one signal. Everything is checked before anything is written.

    Returns
    -------
    (N, L) : tuple of int
    """
    output_path = Path(output_path)
    out_format = output_path.suffix.lower()
    if out_format not in (".txt", ".npy"):
        raise InputError(f"{output_path}: unsupported output format {output_path.suffix!r} (use .txt or .npy)")
    signals, shape = read_signal_file(input_path, min_length)
    if out_format == ".txt" and signals.shape[0] != 1:
        raise InputError(f"{output_path}: a .txt output holds one signal, got {signals.shape[0]}; use .npy")
    # Only now, with the input known good, may the output folder be created.
    output_path = check_output_path(output_path, input_path)
    out = np.empty_like(signals)
    starts = range(0, signals.shape[0], chunk)
    for start in tqdm(starts, desc="denoising", unit="chunk", disable=None if progress and len(starts) > 1 else True):
        out[start : start + chunk] = denoise(signals[start : start + chunk])
    like_shape = shape if out_format == ".npy" else None
    write_signals(output_path, out, like_shape=like_shape)
    return signals.shape


# ---------------------------------------------------------------------------
# Flags and run modes common to Pytorch_V1/test.py and Numpy_V2/Numpy_test.py


def add_mode_args(parser: argparse.ArgumentParser, repo_root: Path, fig_suffix: str) -> None:
    """Add the flags both front-ends share: figure, random-benchmark and file modes."""
    figures = parser.add_argument_group("figure mode (the default)")
    figures.add_argument("--samples", type=Path, default=repo_root / "TestSamples", metavar="DIR",
                         help="folder of TestK_data.txt / TestK_label.txt pairs (default: the repository's TestSamples/)")
    figures.add_argument("--fig-dir", type=Path, default=repo_root / "demo", metavar="DIR",
                         help=f"where figures go, created if missing; per-sample figures are TestK_{fig_suffix}.png "
                         "(default: the repository's demo/)")
    bench = parser.add_argument_group("random benchmark mode")
    bench.add_argument("--random", type=int, metavar="N",
                       help="draw N fresh benchmark signals and print a Markdown table of every method")
    bench.add_argument("--sigma", type=float, default=3.0, metavar="S",
                       help="noise standard deviation of the drawn signals; also the soft threshold T and "
                       "the Bayes oracle's σ (default 3)")
    bench.add_argument("--seed", type=int, default=0, metavar="K", help="random seed of the drawn signals (default 0)")
    bench.add_argument("--json", type=Path, metavar="PATH",
                       help='also write {"sigma", "n", "seed", "methods": {...}} as JSON to PATH')
    bench.add_argument("--plots", action="store_true",
                       help=f"also draw methods_{fig_suffix}.png (RMSE ± CI per method) and filter_{fig_suffix}.png "
                       "(output vs input per sample) into --fig-dir")
    files = parser.add_argument_group("denoise-a-file mode")
    files.add_argument("--input", type=Path, metavar="IN",
                       help="signals to denoise: .txt (one value per line) or .npy ([L] or [N, L]); length >= 16")
    files.add_argument("--output", type=Path, metavar="OUT",
                       help="where to write the denoised signals, same shape as the input (.txt or .npy); "
                       "its folder is created, the input is never overwritten")
    files.add_argument("--bn", choices=BN_MODES, default=None,
                       help="batch-norm statistics: fixed (running, from training) or unfixed (each signal's own); "
                       "default: the mode the weights record")


def check_mode_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject flag combinations that mix modes (argparse-style error, exit 2)."""
    if args.random is not None and args.input is not None:
        parser.error("--random and --input are different modes; give one")
    if (args.input is None) != (args.output is None):
        parser.error("--input and --output go together")
    if args.bn is not None and args.input is None:
        parser.error("--bn applies to --input/--output (the figures and the table show both modes)")
    if args.random is None and (args.json is not None or args.plots):
        parser.error("--json and --plots need --random N")


def run_random_mode(args: argparse.Namespace, methods: dict[str, Method], fig_suffix: str) -> dict:
    """Benchmark ``methods`` on ``args.random`` fresh signals: table on stdout, optional JSON and figures."""
    _check_writable_file(args.json)
    _check_not_a_file(args.fig_dir)
    report, _, noisy, estimates = random_benchmark(args.random, args.sigma, args.seed, methods)
    print(format_table(report))
    if args.json is not None:
        write_report_json(args.json, report)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plots:
        # The networks are the point of the filter figure; without them show Wiener's curve.
        shown = {k: estimates[k] for k in ("net_fixed", "net_unfixed") if k in estimates} or {"wiener": estimates["wiener"]}
        figures = [
            plots.save_figure(plots.methods_chart(report), args.fig_dir / f"methods_{fig_suffix}.png"),
            plots.save_figure(plots.filter_figure(noisy, shown, args.sigma), args.fig_dir / f"filter_{fig_suffix}.png"),
        ]
        for path in figures:
            print(f"wrote {path}", file=sys.stderr)
    return report


def run_figure_mode(args: argparse.Namespace, methods: dict[str, Method], fig_suffix: str) -> list[Path]:
    """One comparison figure per TestK sample, with the available :data:`FIGURE_METHODS`."""
    _check_not_a_file(args.fig_dir)
    shown = {k: methods[k] for k in FIGURE_METHODS if k in methods}
    written = plots.draw_test_sample_figures(args.samples, args.fig_dir, fig_suffix, shown)
    for path in written:
        print(f"wrote {path}")
    return written


def _check_not_a_file(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")


def _check_writable_file(path: Path | None) -> None:
    if path is not None and path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file path")

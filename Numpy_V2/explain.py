"""Read the network as a filter: its exact Jacobian at each signal, in pure NumPy (torch never imported).

    python Numpy_V2/explain.py --weights ckpt/ckpt_best.h5 --input noisy.npy --output J.npz \
        [--bn-mode fixed|unfixed] [--fig-dir DIR] [--sigma S] [--threads N]

Writes an ``.npz`` with ``jacobian`` (N, L, L), ``jacobian[n, i, j] = ∂f_i/∂y_j`` at
signal n (the total derivative, through the Wiener prior and, in unfixed mode,
each signal's own BN statistics), ``offset`` (N, L) = f(y) − J(y)·y and
``output`` (N, L) = f(y), all float64, computed by forward-mode differentiation
(``Numpy_V2.jacobian``). With ``--fig-dir DIR`` it also draws, for the first
signal, its adaptive filters, J as a heat map in both BN modes beside the Bayes
denoiser's diagonal Jacobian (at ``--sigma``), the offset, and the feature maps.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from icnn.shipped import default_weights
from icnn.spec import BN_MODES, MIN_LENGTH
from Numpy_V2.jacobian import JACOBIAN_BLOCK, bayes_jacobian_diagonal, bn_mode_of, feature_maps, jacobians
from Numpy_V2.model import load_h5
from deepdenoise1d.budget import check_memory, memory_limit
from deepdenoise1d.cli import (add_bn_mode_arg, add_overwrite_arg, add_threads_arg, add_weights_arg, output_file,
                               positive_float, positive_int)
from deepdenoise1d.threads import resolve_threads
from deepdenoise1d.errors import InputError, run_cli, show_path
from deepdenoise1d.io import check_chunk, open_signals
from deepdenoise1d.safewrite import atomic_write, guard_output, write_policy
from deepdenoise1d.progress import Progress
from deepdenoise1d.synthesis import SIGMA

DEFAULT_WEIGHTS = default_weights(".h5")
# Forward-mode tangents of one signal in a block, per L² (float32 tangents of every layer: about 215
# bytes measured at L = 1000 and 2000). The result is held in memory before the .npz is written.
TANGENT_BYTES_PER_L2 = 240
WIENER_KERNEL = np.full(3, 1.0 / 3.0)  # scipy.signal.wiener's local mean over its 3-sample window


def get_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="explain.py",
        description="Exact Jacobians J(y) of the NumPy ICNN_s (forward-mode, float64), the offset "
        "f(y) − J(y)·y and the output, for every input signal; optional figures.",
    )
    add_weights_arg(parser, DEFAULT_WEIGHTS, "HDF5 weights (.h5)")
    parser.add_argument("--input", type=Path, required=True, metavar="PATH", help="noisy signals, .npy ([L] or [N, L]) or .txt")
    parser.add_argument("--output", type=output_file, required=True, metavar="PATH",
                        help="the .npz to write (jacobian, offset, output)")
    add_overwrite_arg(parser)
    add_bn_mode_arg(parser, BN_MODES)
    parser.add_argument("--fig-dir", type=Path, default=None, metavar="DIR",
                        help="also draw the filter figures of the first signal into DIR")
    parser.add_argument("--sigma", type=positive_float, default=SIGMA, metavar="S",
                        help=f"noise level of the Bayes denoiser drawn beside the network in the figures (default {SIGMA})")
    parser.add_argument("--max-length", type=positive_int, default=None, metavar="N",
                        help="explain only the first N samples of each signal (the Jacobians grow as N²)")
    add_threads_arg(parser)
    return parser.parse_args(argv)


def jacobian_bytes(n: int, length: int, threads: int = 1, figures: bool = False) -> int:
    """Estimated peak memory of the Jacobians of ``n`` signals of ``length``: the (n, L, L) result held
    for the .npz, and the forward-mode tangents of the blocks running at once (one more signal for --fig-dir)."""
    working = min(n, JACOBIAN_BLOCK) * max(1, threads) + (1 if figures else 0)
    return length * length * (8 * n + TANGENT_BYTES_PER_L2 * working)


def read_input(path: Path, max_length: int | None = None, threads: int = 1, figures: bool = False) -> np.ndarray:
    """Checked (N, L) float64 signals from ``path`` (the first ``max_length`` samples of each), refusing,
    before loading them, inputs whose Jacobians would not fit in memory (:mod:`deepdenoise1d.budget`)."""
    signals, _ = open_signals(path)
    if max_length is not None:
        signals = signals[:, :max_length]
    n, length = signals.shape
    if length < MIN_LENGTH:
        raise InputError(f"{path}: signals have length {length}, need at least {MIN_LENGTH}")
    limit, _ = memory_limit()
    per_l2 = jacobian_bytes(n, 1, threads, figures)
    fits = int(math.isqrt(max(limit, 0) // per_l2))
    way_round = (f"pass --max-length {fits} to explain the first {fits} samples of each signal, or fewer signals"
                 if fits >= MIN_LENGTH else "explain fewer signals at a time")
    check_memory(jacobian_bytes(n, length, threads, figures),
                 f"{path}: computing the Jacobians of {n} signal(s) of length {length}", way_round)
    check_chunk(signals, 0, str(path), np.float64)
    return np.array(signals, dtype=np.float64)


def write_npz(path: Path, result: dict[str, np.ndarray], reads: tuple[Path, ...]) -> None:
    """The three arrays as an uncompressed .npz, written atomically, never over a file this command reads."""
    arrays = {key: result[key] for key in ("jacobian", "offset", "output")}
    atomic_write(path, lambda f: np.savez(f, **arrays), reads=reads)


def signal_figures(net, noisy: np.ndarray, clean: np.ndarray | None, jacobian_by_mode: dict[str, np.ndarray],
                   offset: np.ndarray, output: np.ndarray, mode: str, sigma: float) -> dict[str, object]:
    """The four per-signal figures of one signal: {file stem: Figure}.

    ``jacobian_by_mode`` holds this signal's (L, L) Jacobian for each BN mode to draw;
    ``offset`` and ``output`` are those of ``mode``.
    """
    from deepdenoise1d.filter_plots import (adaptive_filters_figure, feature_maps_figure, jacobian_heatmaps_figure,
                                      offset_figure, pick_rows)

    bayes_mean, bayes_slope = bayes_jacobian_diagonal(noisy, sigma)
    rows = pick_rows(clean if clean is not None else bayes_mean)
    panels = [(f"network, {m} BN", j) for m, j in jacobian_by_mode.items()]
    panels.append((f"Bayes posterior mean (σ = {sigma:g})", np.diag(bayes_slope)))
    features = feature_maps(net, noisy[None], mode)
    return {
        "adaptive_filters": adaptive_filters_figure(noisy, clean, jacobian_by_mode[mode], rows, WIENER_KERNEL,
                                                    f"network ({mode} BN): the samples examined", bayes_slope),
        "jacobian_heatmaps": jacobian_heatmaps_figure(panels),
        "offset": offset_figure(noisy, clean, output, offset, f"network ({mode} BN): f(y) = J(y)·y + b(y)"),
        "feature_maps": feature_maps_figure(noisy, {k: v[0] for k, v in features.items()},
                                            f"feature maps at each U-Net level ({mode} BN)"),
    }


def save_figures(figures: dict[str, object], folder: Path, prefix: str, reads: tuple[Path, ...] = ()) -> list[Path]:
    """Save each Figure as ``folder/{prefix}{stem}.png``, never over a file in ``reads``; returns the paths."""
    from deepdenoise1d.plots import save_figure

    paths = []
    for stem, fig in figures.items():
        path = guard_output(folder / f"{prefix}{stem}.png", reads)
        paths.append(save_figure(fig, path))
    return paths


def main(argv=None) -> None:
    args = get_args(argv)
    with write_policy(overwrite=args.overwrite):  # every write below: deepdenoise1d.safewrite's policy
        explain(args)


def explain(args: argparse.Namespace) -> None:
    """Compute, write the .npz and draw the figures the flags ask for."""
    reads = (args.weights, args.input)
    if args.output.suffix.lower() != ".npz":
        raise InputError(f"{args.output}: the output is an .npz archive; name it *.npz")
    # The memory check comes first: a refused input leaves no folder or file behind.
    y = read_input(args.input, args.max_length, resolve_threads(args.threads), args.fig_dir is not None)
    guard_output(args.output, reads, kind="npz")  # refuse a bad output before the work, not after
    net = load_h5(args.weights, dtype=np.float64)
    mode = bn_mode_of(net, args.bn_mode)
    bar = Progress(y.shape[0], "jacobians", unit="signal")
    try:
        result = jacobians(net, y, mode, threads=args.threads, progress=bar)
    finally:
        bar.close()
    write_npz(args.output, result, reads)
    print(f"{y.shape[0]} Jacobian(s) of length {y.shape[1]} with {mode} BN -> {show_path(args.output)}")
    if args.fig_dir is not None:
        # Both modes of the first signal, in BN_MODES order; the mode asked for is already computed.
        by_mode = {m: result["jacobian"][0] if m == mode else jacobians(net, y[:1], m)["jacobian"][0] for m in BN_MODES}
        figures = signal_figures(net, y[0], None, by_mode, result["offset"][0], result["output"][0], mode, args.sigma)
        for path in save_figures(figures, args.fig_dir, "explain_", reads + (args.output,)):
            print(f"figure -> {show_path(path)}")


if __name__ == "__main__":
    run_cli(main, "explain.py")

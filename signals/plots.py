"""Figures shared by both front-ends: per-sample comparisons, the methods chart and
"the network as a filter". Matplotlib only (no torch).

Figures are built with the object-oriented API (``matplotlib.figure.Figure``) and
rendered by the Agg canvas, so no GUI backend and no pyplot global state are involved.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # headless, whatever the environment asks for

import numpy as np
from matplotlib.figure import Figure

from signals.classical import bayes_posterior_mean, soft_threshold
from signals.io import read_test_samples
from signals.metrics import psnr_paper, rmse

Method = Callable[[np.ndarray], np.ndarray]

DPI = 110
METHOD_LABELS = {
    "net_fixed": "network, fixed BN",
    "net_unfixed": "network, unfixed BN",
    "wiener": "Wiener",
    "l1": "L1 (srls)",
    "gmc": "GMC",
    "soft": "soft threshold",
    "bayes": "Bayes posterior mean",
}
CLEAN_STYLE = dict(color="0.55", lw=2.2, alpha=0.35, label="clean")
COLORS = {
    "noisy": "tab:gray",
    "net_fixed": "tab:blue",
    "net_unfixed": "tab:cyan",
    "wiener": "tab:orange",
    "l1": "tab:green",
    "gmc": "tab:red",
    "soft": "tab:purple",
    "bayes": "black",
}


def method_label(key: str) -> str:
    """Human-readable name of a method key (the key itself when unknown)."""
    return METHOD_LABELS.get(key, key)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Render ``fig`` to a temp file beside ``path``, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def comparison_figure(title: str, clean: np.ndarray, noisy: np.ndarray, estimates: dict[str, np.ndarray]) -> Figure:
    """Stacked panels sharing the x axis: clean, noisy, then one per method.

    The clean signal is drawn faintly under every other panel; each panel's
    title gives its RMSE and paper PSNR against the clean signal.

    Parameters
    ----------
    title : str
        Figure title, e.g. ``"Test0"``.
    clean, noisy : np.ndarray
        One signal each, shape (L,).
    estimates : dict
        ``{method_key: estimate (L,)}``, drawn in this order.
    """
    panels = {"noisy": noisy, **estimates}
    # Fixed margins rather than a layout engine: drawing stays fast with many panels.
    fig = Figure(figsize=(10, 12))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.05, top=0.94, hspace=0.45)
    axes = fig.subplots(len(panels) + 1, 1, sharex=True, sharey=True)
    t = np.arange(clean.shape[-1])

    axes[0].plot(t, clean, color="black", lw=1.3)
    axes[0].set_title("clean", loc="left", fontsize=10)
    for ax, (key, signal) in zip(axes[1:], panels.items()):
        ax.plot(t, clean, **CLEAN_STYLE)
        ax.plot(t, signal, color=COLORS.get(key, "tab:brown"), lw=1.1)
        score = f"RMSE {rmse(signal, clean):.3f}, paper PSNR {psnr_paper(signal, clean):.2f}"
        ax.set_title(f"{method_label(key)}  ({score})", loc="left", fontsize=10)
    for ax in axes:
        ax.axhline(0, color="0.85", lw=0.6, zorder=0)
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("sample")
    fig.suptitle(title, fontsize=12)
    return fig


def methods_chart(report: dict) -> Figure:
    """Horizontal bars of RMSE ± CI95 per method, with the Bayes RMSE as a vertical line.

    ``report`` is the dict of :func:`signals.report.build_report`.
    """
    methods = report["methods"]
    keys = list(methods)
    means = np.array([methods[k]["rmse"] for k in keys])
    cis = np.nan_to_num(np.array([methods[k]["rmse_ci95"] for k in keys]))
    fig = Figure(figsize=(8, 0.45 * len(keys) + 1.6), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(keys))
    ax.barh(y, means, xerr=cis, color=[COLORS.get(k, "tab:brown") for k in keys], alpha=0.8, capsize=3)
    for yi, mean, ci in zip(y, means, cis):
        ax.text(mean + ci, yi, f"  {mean:.3f}", va="center", ha="left", fontsize=8)
    if "bayes" in methods:
        ax.axvline(methods["bayes"]["rmse"], color="black", ls="--", lw=1, label="Bayes limit")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [method_label(k) for k in keys])
    ax.invert_yaxis()  # first method on top
    ax.set_xlim(0, means.max() * 1.15)
    ax.set_xlabel("RMSE (mean over signals, ± 95 % CI)")
    ax.set_title(f"σ = {report['sigma']:g}, {report['n']} signals", fontsize=10)
    return fig


def filter_figure(noisy: np.ndarray, estimates: dict[str, np.ndarray], sigma: float, max_points: int = 20000, seed: int = 0) -> Figure:
    """"The network as a filter": output sample vs input sample, one panel per estimator.

    Each panel scatters (noisy value, estimate value) pairs, over the Bayes
    posterior-mean curve E[x | y], the soft threshold at T = σ and the identity.

    Parameters
    ----------
    noisy : np.ndarray
        Input signals, any shape.
    estimates : dict
        ``{method_key: output}``, each the shape of ``noisy``.
    sigma : float
        Noise level for the Bayes and soft-threshold curves.
    max_points, seed : int
        At most this many points per scatter, drawn at random from ``seed``.
    """
    y = np.ravel(noisy)
    pick = np.random.default_rng(seed).choice(y.size, size=min(max_points, y.size), replace=False)
    grid = np.linspace(y.min(), y.max(), 600)
    fig = Figure(figsize=(5.5 * len(estimates) + 0.5, 5.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(estimates), sharex=True, sharey=True))
    for ax, (key, estimate) in zip(axes, estimates.items()):
        ax.scatter(y[pick], np.ravel(estimate)[pick], s=3, alpha=0.2, color=COLORS.get(key, "tab:brown"),
                   label=method_label(key), rasterized=True)
        ax.plot(grid, bayes_posterior_mean(grid, sigma), color="black", lw=2, label="Bayes posterior mean")
        ax.plot(grid, soft_threshold(grid, threshold=sigma), color="tab:purple", lw=1.5, ls="--",
                label=f"soft threshold T = {sigma:g}")
        ax.plot(grid, grid, color="0.6", lw=1, ls=":", label="identity")
        ax.set_title(method_label(key), fontsize=10)
        ax.set_xlabel("input sample (noisy)")
        ax.legend(fontsize=8, markerscale=4, loc="upper left")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("output sample")
    fig.suptitle(f"Output vs input, per sample (σ = {sigma:g})", fontsize=11)
    return fig


def draw_test_sample_figures(samples_dir: str | os.PathLike, fig_dir: str | os.PathLike, suffix: str, methods: dict[str, Method]) -> list[Path]:
    """One comparison figure per ``TestK`` in ``samples_dir``, saved as ``fig_dir/TestK_{suffix}.png``."""
    written = []
    for name, noisy, clean in read_test_samples(samples_dir):
        estimates = {key: np.asarray(method(noisy[None]))[0] for key, method in methods.items()}
        fig = comparison_figure(name, clean, noisy, estimates)
        written.append(save_figure(fig, Path(fig_dir) / f"{name}_{suffix}.png"))
    return written

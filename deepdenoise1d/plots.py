"""Figures shared by both front-ends: per-sample comparisons, the methods chart and
"the network as a filter". Matplotlib only (no torch).

Figures are built with the object-oriented API (``matplotlib.figure.Figure``) and
rendered to PNG by Agg when saved, so no GUI backend and no pyplot global state are
involved, and importing this module changes no process state (no ``matplotlib.use``).
Every figure is written through the guarded, atomic write path (:func:`save_figure`).
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from deepdenoise1d.classical import bayes_posterior_mean, soft_threshold
from deepdenoise1d.dataset import TEST_SAMPLE_SEEDS
from deepdenoise1d.safewrite import atomic_write
from deepdenoise1d.metrics import psnr_paper, rmse

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
CLEAN_STYLE = dict(color="0.55", lw=2.2, alpha=0.35, label="clean (grey, under every panel)")
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


def method_color(key: str) -> str:
    """Colour of a method key, or of a table row name (``PyTorch net (fixed BN)``, ``soft (T = σ)``)."""
    if key in COLORS:
        return COLORS[key]
    for fragment, color in (("(unfixed BN)", COLORS["net_unfixed"]), ("(fixed BN)", COLORS["net_fixed"]),
                            ("soft", COLORS["soft"])):
        if fragment in key:
            return color
    return "tab:brown"


def method_label(key: str) -> str:
    """Human-readable name of a method key (the key itself when unknown)."""
    return METHOD_LABELS.get(key, key)


def fit_title(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` wrapped at spaces so that no line is wider than a figure ``width_inches`` wide.

    Matplotlib never wraps or shrinks a title, and a layout engine does not either; a
    character of DejaVu Sans is at most about 0.6 em wide on average, hence the estimate.
    """
    per_line = max(20, int(0.95 * width_inches * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, per_line, break_long_words=False, break_on_hyphens=False)
                     for line in text.split("\n"))


# Per format, the metadata that would stamp a version or a date: left out, so a rerun writes the same bytes.
STABLE_METADATA = {"png": {"Software": None}, "svg": {"Creator": None, "Date": None},
                   "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI, reads: tuple = ()) -> Path:
    """Render ``fig`` as PNG, SVG or PDF (by the suffix) through :func:`deepdenoise1d.io.atomic_write`
    (never over a file in ``reads``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format=fmt, metadata=STABLE_METADATA.get(fmt)),
                        reads=reads)


def comparison_figure(title: str, clean: np.ndarray, noisy: np.ndarray, estimates: dict[str, np.ndarray],
                      differences: dict[str, np.ndarray] | None = None) -> Figure:
    """Stacked panels sharing the x axis: clean, noisy, one per method, then any differences.

    The clean signal is drawn faintly under every method panel; each panel's
    title gives its RMSE and paper PSNR against the clean signal.

    Parameters
    ----------
    title : str
        Figure title: the sample and what made the figure (backend, weights, seed).
    clean, noisy : np.ndarray
        One signal each, shape (L,).
    estimates : dict
        ``{method_key: estimate (L,)}``, drawn in this order.
    differences : dict, optional
        ``{label: difference (L,)}`` drawn last on their own scale (e.g. NumPy − PyTorch).
    """
    panels = {"noisy": noisy, **estimates}
    differences = differences or {}
    # Fixed margins rather than a layout engine: drawing stays fast with many panels.
    fig = Figure(figsize=(10, 12 + 1.3 * len(differences)))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.05, top=0.93, hspace=0.55)
    axes = fig.subplots(len(panels) + 1 + len(differences), 1, sharex=True)
    for ax in axes[1 : len(panels) + 1]:
        ax.sharey(axes[0])
    for ax, (label, diff) in zip(axes[len(panels) + 1 :], differences.items()):
        t = np.arange(diff.shape[-1])
        ax.plot(t, diff, color="tab:red", lw=1.0)
        ax.set_title(f"{label}  (max |Δ| {np.max(np.abs(diff)):.2g})", loc="left", fontsize=10)
    t = np.arange(clean.shape[-1])

    axes[0].plot(t, clean, color="black", lw=1.3)
    axes[0].set_title("clean", loc="left", fontsize=10)
    for ax, (key, signal) in zip(axes[1:], panels.items()):
        overlay = ax.plot(t, clean, **CLEAN_STYLE)
        ax.plot(t, signal, color=method_color(key), lw=1.1)
        score = f"RMSE {rmse(signal, clean):.3f}, paper PSNR {psnr_paper(signal, clean):.2f}"
        ax.set_title(f"{method_label(key)}  ({score})", loc="left", fontsize=10)
    # One entry, in the title row of the first overlaid panel (over no data): the same grey line is in every one.
    axes[1].legend(handles=overlay, fontsize=8, loc="lower right", bbox_to_anchor=(1, 1), frameon=False,
                   borderaxespad=0.1)
    for ax in axes:
        ax.axhline(0, color="0.85", lw=0.6, zorder=0)
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("sample")
    fig.suptitle(title, fontsize=11)
    return fig


def methods_chart(report: dict, made_by: str = "") -> Figure:
    """Horizontal bars of RMSE ± CI95 per method, with the Bayes RMSE as a vertical line.

    ``report`` is the dict of :func:`deepdenoise1d.evaluate.build_report` (its methods keyed as there,
    or with any other label); ``made_by`` (backend, weights, seed) goes into the title.
    """
    methods = report["methods"]
    keys = list(methods)
    means = np.array([methods[k]["rmse"] for k in keys])
    cis = np.nan_to_num(np.array([methods[k]["rmse_ci95"] for k in keys]))
    fig = Figure(figsize=(8, 0.45 * len(keys) + 1.6), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(keys))
    ax.barh(y, means, xerr=cis, color=[method_color(k) for k in keys], alpha=0.8, capsize=3)
    for yi, mean, ci in zip(y, means, cis):
        ax.text(mean + ci, yi, f"  {mean:.3f}", va="center", ha="left", fontsize=8)
    if "bayes" in methods:
        ax.axvline(methods["bayes"]["rmse"], color="black", ls="--", lw=1, label="Bayes limit")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [method_label(k) for k in keys])
    ax.invert_yaxis()  # first method on top
    ax.set_xlim(0, means.max() * 1.15)
    ax.set_xlabel("RMSE (mean over signals, ± 95 % CI)")
    about = f"; {made_by}" if made_by else ""
    title = f"σ = {report['sigma']:g}, {report['n']} signals{about}"
    fig.suptitle(fit_title(title, fig.get_figwidth(), 9), fontsize=9)  # the figure's width, not the axes'
    return fig


def filter_figure(noisy: np.ndarray, estimates: dict[str, np.ndarray], sigma: float, max_points: int = 20000,
                  seed: int = 0, made_by: str = "") -> Figure:
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
    made_by : str
        What made the figure (backend, weights, seed), for the title.
    """
    y = np.ravel(noisy)
    pick = np.random.default_rng(seed).choice(y.size, size=min(max_points, y.size), replace=False)
    grid = np.linspace(y.min(), y.max(), 600)
    fig = Figure(figsize=(5.5 * len(estimates) + 0.5, 5.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(estimates), sharex=True, sharey=True))
    for ax, (key, estimate) in zip(axes, estimates.items()):
        ax.scatter(y[pick], np.ravel(estimate)[pick], s=3, alpha=0.2, color=method_color(key),
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
    about = f"; {made_by}" if made_by else ""
    fig.suptitle(fit_title(f"Output vs input, per sample (σ = {sigma:g}){about}", fig.get_figwidth(), 10), fontsize=10)
    return fig


def sample_title(name: str, samples_dir: str | os.PathLike, made_by: str, seeded: bool = False) -> str:
    """``Test0: <made_by>`` and the sample file; with ``seeded`` (the repository's TestSamples), its seed."""
    k = name[len("Test"):]
    known = seeded and k.isdigit() and int(k) < len(TEST_SAMPLE_SEEDS)
    seed = f" (drawn with seed {TEST_SAMPLE_SEEDS[int(k)]})" if known else ""
    return f"{name}: {made_by}\nsample {Path(samples_dir).name}/{name}_data.txt{seed}"


def draw_test_sample_figures(samples: list, fig_dir: str | os.PathLike, suffix: str, methods: dict[str, Method],
                             made_by: str = "", reads: tuple = (), samples_dir: str | os.PathLike = "TestSamples",
                             seeded: bool = False) -> list[Path]:
    """One comparison figure per sample, saved as ``fig_dir/{name}_{suffix}.png``.

    Parameters
    ----------
    samples : list of (name, noisy, clean)
        As :func:`deepdenoise1d.io.read_test_samples` returns them.
    fig_dir : path
        Where the figures go (created if missing).
    suffix : str
        File-name suffix (the backend: ``torch`` or ``numpy``).
    methods : dict
        ``{key: callable(noisy (1, L)) -> (1, L)}``, one panel each.
    made_by, reads, samples_dir, seeded
        Title note (backend, weights); files never written over; where the samples came from,
        and whether they are the repository's (drawn from ``TEST_SAMPLE_SEEDS``).
    """
    written = []
    for name, noisy, clean in samples:
        estimates = {key: np.asarray(method(noisy[None]))[0] for key, method in methods.items()}
        fig = comparison_figure(sample_title(name, samples_dir, made_by, seeded), clean, noisy, estimates)
        written.append(save_figure(fig, Path(fig_dir) / f"{name}_{suffix}.png", reads=reads))
    return written


def training_curve(rows: list[dict], bayes_rmse: float | None, title: str) -> Figure:
    """Training loss and validation RMSE (both BN modes) against step, from train.py's log rows.

    Parameters
    ----------
    rows : list of dict
        ``train_log.csv`` rows (``csv.DictReader``): ``step``, ``loss``, ``val_rmse_fixed``,
        ``val_rmse_unfixed``, ``val_root_mse_fixed``, ``val_sure_root_mse_fixed`` (``nan`` when absent).
    bayes_rmse : float or None
        The Bayes limit on the validation set, drawn only where the prior is known (synthetic data).
    title : str
        Figure title: what was trained and validated on.
    """
    col = lambda key: np.array([float(r.get(key) or "nan") for r in rows])  # noqa: E731
    steps = col("step")
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    ax_loss.plot(steps, col("loss"), color="tab:gray")
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss")
    for key, label in (("val_rmse_fixed", "fixed BN"), ("val_rmse_unfixed", "unfixed BN")):
        if np.isfinite(col(key)).any():
            ax_val.plot(steps, col(key), label=label)
    sure = col("val_sure_root_mse_fixed")
    if np.isfinite(sure).any():  # label-free run: does SURE track the true error?
        if np.isfinite(col("val_root_mse_fixed")).any():
            ax_val.plot(steps, col("val_root_mse_fixed"), color="tab:green", ls=":", label="√(mean MSE), fixed BN (uses labels)")
        ax_val.plot(steps, sure, color="tab:red", ls="-.", label="√(mean SURE), fixed BN (no labels)")
    if bayes_rmse is not None and np.isfinite(bayes_rmse) and bayes_rmse > 0:
        ax_val.axhline(bayes_rmse, color="k", ls="--", lw=1, label=f"Bayes limit {bayes_rmse:.3f}")
    shown = np.concatenate([col(k) for k in ("val_rmse_fixed", "val_rmse_unfixed", "val_sure_root_mse_fixed")])
    shown = shown[np.isfinite(shown)]
    if shown.size:  # zoom on the end of training, where the curves differ
        low = min(shown.min(), bayes_rmse or np.inf) - 0.02
        ax_val.set_ylim(low, max(low + 0.3, min(low + 1.0, shown.max() + 0.02)))
    ax_val.set(xlabel="step", ylabel="validation RMSE", title="Validation")
    ax_val.legend(fontsize=8)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def record_figure(noisy: np.ndarray, denoised: np.ndarray, start: int, method: str, made_by: str = "",
                  signal_length: int | None = None, fs: float | None = None, ylabel: str | None = None) -> Figure:
    """A stretch of a record, noisy and denoised, with the residual (noisy − denoised) in a panel below.

    Parameters
    ----------
    noisy, denoised : np.ndarray
        The same stretch (1-D) of the input and the output.
    start : int
        Index of the stretch's first sample in the record (the x axis starts there).
    method : str
        What denoised it (title and legend), e.g. ``"network, fixed BN"``.
    made_by : str
        Backend and weights, for the title.
    signal_length : int, optional
        When the file holds several signals laid end to end: their length, so the x axis says so.
    fs : float, optional
        Sampling rate in Hz: the x axis is then time in seconds.
    ylabel : str, optional
        What the values are (a column's name such as ``counts``), for the y axis.
    """
    noisy, denoised = np.asarray(noisy, dtype=np.float64), np.asarray(denoised, dtype=np.float64)
    x = np.arange(start, start + len(noisy), dtype=np.float64)
    if fs is not None:
        x = x / fs
    fig = Figure(figsize=(11, 4.8))
    ax, res = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax.plot(x, noisy, color=COLORS["noisy"], lw=0.8, alpha=0.7, label="noisy")
    ax.plot(x, denoised, color="tab:blue", lw=1.2, label="denoised")  # by what: the title says
    ax.set_ylabel(ylabel or "amplitude")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # beside the axes, never over the peaks
    res.plot(x, noisy - denoised, color="0.35", lw=0.6)
    res.axhline(0.0, color="k", lw=0.5)
    res.set_ylabel("residual")
    if fs is not None:
        res.set_xlabel(f"time (s), fs = {fs:g} Hz")
    else:
        res.set_xlabel("sample" if signal_length is None else f"sample (signals of length {signal_length} laid end to end)")
    title = f"{method}: samples {start}..{start + len(noisy) - 1}" + (f" ({made_by})" if made_by else "")
    ax.set_title(fit_title(title, 11, 10), fontsize=10)
    fig.tight_layout()
    return fig

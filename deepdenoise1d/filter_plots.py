"""Figures of the network read as a filter: rows of its Jacobian, J as a heat map,
the offset b(y), effective dimensionality against σ, and the U-Net's feature maps.

Matplotlib's object API only (``matplotlib.figure.Figure``, no pyplot, no backend
switch); each builder returns a Figure, saved with ``deepdenoise1d.plots.save_figure``.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

# Half-width (in samples) of the window of each Jacobian row drawn around its output sample.
ROW_HALF_WIDTH = 10
# A sample counts as a spike when its reference value exceeds this (half the smallest amplitude, 2).
SPIKE_LEVEL = 1.0


def pick_rows(reference: np.ndarray, level: float = SPIKE_LEVEL, gap: int = 3) -> dict[str, int]:
    """Three telling output samples of a signal: an isolated spike, background, and next to a spike.

    Parameters
    ----------
    reference : np.ndarray
        Where the spikes are, shape (L,): the clean signal when known, else an estimate.
    level : float
        Samples above it are spikes.
    gap : int
        An isolated spike has no other spike within ``gap`` samples.

    Returns
    -------
    dict
        ``{"isolated spike": i, "background": j, "next to a spike": k}`` (keys absent when
        the signal has no spike).
    """
    reference = np.asarray(reference, dtype=np.float64)
    length = reference.size
    spikes = np.flatnonzero(reference > level)
    if spikes.size == 0:
        return {"background": length // 2}
    distance = np.abs(np.arange(length)[:, None] - spikes[None, :])  # (L, S)
    nearest_other = np.where(distance[spikes] == 0, length, distance[spikes]).min(axis=1)
    isolated = spikes[nearest_other > gap]
    spike = int(isolated[np.argmax(reference[isolated])]) if isolated.size else int(spikes[np.argmax(reference[spikes])])
    # Background: the sample farthest from every spike, away from the zero-padded ends when possible.
    far = distance.min(axis=1).astype(np.float64)
    if length > 4 * gap:
        far[:gap] = far[-gap:] = -1.0
    rows = {"isolated spike": spike, "background": int(np.argmax(far))}
    for neighbour in (spike + 1, spike - 1):
        if 0 <= neighbour < length and reference[neighbour] <= level:
            rows["next to a spike"] = neighbour
            break
    return rows


def adaptive_filters_figure(noisy: np.ndarray, clean: np.ndarray | None, jacobian: np.ndarray,
                            rows: dict[str, int], wiener_kernel: np.ndarray, title: str = "",
                            bayes_slope: np.ndarray | None = None) -> Figure:
    """The signal with the chosen samples marked, and the Jacobian row (adaptive filter) of each.

    Parameters
    ----------
    noisy, clean : np.ndarray
        Shape (L,); ``clean`` may be None.
    jacobian : np.ndarray
        Shape (L, L), ``[i, j] = ∂f_i/∂y_j``.
    rows : dict
        Label -> output sample (see :func:`pick_rows`).
    wiener_kernel : np.ndarray
        Wiener's fixed 3-tap window, drawn for comparison.
    title : str
        Title of the signal panel.
    bayes_slope : np.ndarray, optional
        The Bayes denoiser's diagonal Jacobian (L,), drawn at lag 0 of each row (its filter is one tap).
    """
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[1, 1.3])
    positions = np.arange(noisy.size)
    top.plot(positions, noisy, color="tab:gray", lw=0.9, label="noisy y")
    if clean is not None:
        top.plot(positions, clean, color="0.55", lw=2.2, alpha=0.35, label="clean x")
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    lags = np.arange(-ROW_HALF_WIDTH, ROW_HALF_WIDTH + 1)
    for color, (label, i) in zip(colors, rows.items()):
        top.axvline(i, color=color, ls="--", lw=1)
        columns = i + lags
        inside = (columns >= 0) & (columns < noisy.size)
        bottom.plot(lags[inside], jacobian[i, columns[inside]], "o-", color=color, ms=3.5, lw=1.3,
                    label=f"{label} (sample {i}): Σ = {jacobian[i].sum():.2f}")  # the whole row, not the window
        if bayes_slope is not None:
            bottom.plot([0], [bayes_slope[i]], "x", color=color, ms=11, mew=2)
    half = len(wiener_kernel) // 2
    bottom.plot(np.arange(-half, half + 1), wiener_kernel, "s:", color="tab:orange", ms=5, lw=1.5,
                label="Wiener's fixed 3-tap window")
    if bayes_slope is not None:
        bottom.plot([], [], "x", color="0.3", ms=9, mew=2, label="Bayes: Var[x|y]/σ² at that sample (one tap)")
    bottom.axhline(0, color="0.7", lw=0.8)
    top.set(xlabel="sample", ylabel="amplitude", title=title or "signal and the output samples examined")
    top.legend(fontsize=8, loc="upper right")
    bottom.set(xlabel="input offset j − i", ylabel="∂f_i / ∂y_j",
               title="adaptive filters: the Jacobian row that makes each output sample")
    bottom.legend(fontsize=8, title_fontsize=8, alignment="left",
                  title="Σ: the sum of the whole row over all inputs j (not only the lags drawn):\n"
                        "how far that output sample moves when every input sample rises by 1")
    return fig


def jacobian_heatmaps_figure(panels: list[tuple[str, np.ndarray]]) -> Figure:
    """Jacobians side by side on one symmetric colour scale, each titled with its diagonal-mass fraction.

    Parameters
    ----------
    panels : list of (title, matrix)
        Each matrix (L, L), ``[i, j] = ∂f_i/∂y_j``.
    """
    fig = Figure(figsize=(4.2 * len(panels) + 0.8, 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    limit = max(float(np.abs(m).max()) for _, m in panels) or 1.0
    image = None
    for ax, (title, matrix) in zip(axes, panels):
        fraction = np.sum(np.diag(matrix) ** 2) / max(np.sum(matrix**2), 1e-300)
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set(title=f"{title}\n‖diag J‖²/‖J‖²_F = {fraction:.2f}", xlabel="input sample j", ylabel="output sample i")
    fig.colorbar(image, ax=list(axes), shrink=0.85, label="∂f_i / ∂y_j")
    return fig


def offset_figure(noisy: np.ndarray, clean: np.ndarray | None, output: np.ndarray, offset: np.ndarray,
                  title: str = "") -> Figure:
    """f(y) split into its linear part J(y)·y and its offset b(y), along the signal."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(noisy.size)
    if clean is not None:
        ax.plot(positions, clean, color="0.55", lw=2.2, alpha=0.35, label="clean x")
    ax.plot(positions, output, color="tab:blue", lw=1.3, label="f(y)")
    ax.plot(positions, output - offset, color="tab:green", lw=1, ls="--", label="J(y)·y")
    ax.plot(positions, offset, color="tab:red", lw=1.3, label="offset b(y) = f(y) − J(y)·y")
    ax.axhline(0, color="0.7", lw=0.8)
    relative = np.linalg.norm(offset) / max(np.linalg.norm(output), 1e-300)
    ax.set(xlabel="sample", ylabel="amplitude", title=(title or "the offset b(y)") + f"  (‖b‖/‖f(y)‖ = {relative:.3f})")
    ax.legend(fontsize=8)
    return fig


def effective_dimension_figure(sigmas: np.ndarray, curves: dict[str, dict[str, np.ndarray]], length: int) -> Figure:
    """tr J and ‖J‖²_F against σ, one line per denoiser (median over signals, band = 10th-90th percentile).

    Parameters
    ----------
    sigmas : np.ndarray
        Noise levels, shape (S,).
    curves : dict
        Denoiser name -> {"trace": (S, N), "frobenius_squared": (S, N)} per-signal values.
    length : int
        Signal length, drawn as the identity's value.
    """
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, label in zip(axes, ("trace", "frobenius_squared"), ("tr J", "‖J‖²_F")):
        for name, values in curves.items():
            v = np.asarray(values[key])
            line = ax.plot(sigmas, np.median(v, axis=1), "o-", ms=4, label=name)[0]
            ax.fill_between(sigmas, np.percentile(v, 10, axis=1), np.percentile(v, 90, axis=1),
                            color=line.get_color(), alpha=0.15)
        ax.set(xlabel="noise σ", ylabel=label, title=f"{label} (the identity has {length})")
        ax.legend(fontsize=8)
    return fig


def filters_by_sigma_figure(panels: list[tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                            rows: dict[str, int], title: str = "") -> Figure:
    """How one denoiser's adaptive filters change with the noise level, on one clean signal.

    Parameters
    ----------
    panels : list of (sigma, clean, noisy, output, jacobian)
        One row of the figure per noise level: the signals (L,) and the Jacobian (L, L).
    rows : dict
        Label -> output sample whose Jacobian row is drawn (see :func:`pick_rows`), the same at every σ.
    title : str
        The figure's title.
    """
    fig = Figure(figsize=(11, 2.6 * len(panels)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(panels), 2, width_ratios=[1.6, 1]))
    lags = np.arange(-ROW_HALF_WIDTH, ROW_HALF_WIDTH + 1)
    colors = ["tab:red", "tab:blue", "tab:green"]
    for (sigma, clean, noisy, output, jacobian), (left, right) in zip(panels, axes):
        positions = np.arange(clean.size)
        left.plot(positions, noisy, color="tab:gray", lw=0.8, label="noisy")
        left.plot(positions, clean, color="0.55", lw=2.2, alpha=0.4, label="clean")
        left.plot(positions, output, color="black", lw=1.1, label="output")
        for color, (label, i) in zip(colors, rows.items()):
            left.axvline(i, color=color, ls="--", lw=0.9)
            columns = i + lags
            inside = (columns >= 0) & (columns < clean.size)
            right.plot(lags[inside], jacobian[i, columns[inside]], "o-", color=color, ms=3, lw=1.2,
                       label=f"{label}: ∂f_i/∂y_i = {jacobian[i, i]:.2f}")
        right.axhline(0, color="0.7", lw=0.8)
        left.set(ylabel=f"σ = {sigma:g}", xlabel="sample")
        right.set(xlabel="input offset j − i", ylabel="∂f_i / ∂y_j",
                  title=f"tr J / L = {np.trace(jacobian) / clean.size:.3f}", )
        right.legend(fontsize=7, loc="upper right")
    axes[0, 0].legend(fontsize=7, loc="upper right", ncols=3)
    if title:
        fig.suptitle(title)
    return fig


def feature_maps_figure(signal: np.ndarray, features: dict[str, np.ndarray], title: str = "") -> Figure:
    """The input and the activations at each U-Net level, channels × positions on the input's axis.

    Parameters
    ----------
    signal : np.ndarray
        The input, shape (L,).
    features : dict
        Level name -> activations (C, L') of this one signal, in network order.
    """
    fig = Figure(figsize=(10, 1.2 * (len(features) + 1) + 0.6), layout="constrained")
    axes = fig.subplots(len(features) + 1, 1, sharex=True)
    length = signal.size
    axes[0].plot(np.arange(length) + 0.5, signal, color="tab:gray", lw=0.9)
    axes[0].set(ylabel="input", title=title or "feature maps at each U-Net level")
    for ax, (name, maps) in zip(axes[1:], features.items()):
        channels, positions = maps.shape
        image = ax.imshow(maps, aspect="auto", cmap="magma", interpolation="nearest",
                          extent=(0, length, channels - 0.5, -0.5), vmin=0)
        ax.set_ylabel(f"{name}\n{channels}×{positions}", fontsize=8)
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, pad=0.01, fraction=0.02)
    axes[-1].set_xlabel("input sample (each level stretched to the input's length)")
    return fig

"""Denoise signals longer than a model's training length in overlapping, blended windows.

As seisbench's ``annotate`` does: each signal is cut into windows of the training
length that overlap by ``overlap`` samples (the last one ends at the signal's end),
the windows are denoised in batches, and the estimates are blended with a Hann
cross-fade: inside an overlap the outgoing window fades out as cos² while the
incoming one fades in as sin², so the weights sum to 1 (normalised by their sum
where the last, end-aligned window overlaps more). Memory is bounded by the batch
of windows, whatever the signal length: the input is read span by span (a memory
map is fine), and finished samples are written to ``out`` (a memory map is fine)
as soon as no later window touches them. Torch-free.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from deepdenoise1d.safewrite import release_pages

Denoiser = Callable[[np.ndarray], np.ndarray]
# Check hook: (raw values of a flat span, index of its first value in the flattened signals).
SpanCheck = Callable[[np.ndarray, int], None]
DEFAULT_BATCH = 8192  # windows per call of the denoiser


def default_overlap(window: int) -> int:
    """Half a window: every sample is seen by two windows, and window edges carry little weight."""
    return window // 2


def window_starts(length: int, window: int, overlap: int) -> np.ndarray:
    """Starts of the windows covering ``[0, length)``: every ``window - overlap``, the last one ending at ``length``.

    Parameters
    ----------
    length, window, overlap : int
        ``length >= window >= 1`` and ``0 <= overlap < window``.

    Returns
    -------
    np.ndarray
        int64 starts, increasing, from 0 to ``length - window``.
    """
    _check_geometry(length, window, overlap)
    starts = np.arange(0, length - window + 1, window - overlap, dtype=np.int64)
    if starts[-1] != length - window:
        starts = np.append(starts, length - window)
    return starts


def _check_geometry(length: int, window: int, overlap: int) -> None:
    if not (1 <= window <= length and 0 <= overlap < window):
        raise ValueError(f"need 1 <= window <= length and 0 <= overlap < window, got length {length}, "
                         f"window {window}, overlap {overlap}")


def taper(window: int, overlap: int, first: bool = False, last: bool = False) -> np.ndarray:
    """Weights of one window: sin² rising over its first ``overlap`` samples, cos² falling over its last.

    The first window of a signal does not rise and the last does not fall (nothing
    overlaps them there). Every weight is > 0, so normalising by the sum is safe.
    """
    weights = np.ones(window)
    if overlap:
        rise = np.sin(np.pi * (np.arange(overlap) + 0.5) / (2 * overlap)) ** 2
        if not first:
            weights[:overlap] = rise
        if not last:
            weights[window - overlap:] = np.minimum(weights[window - overlap:], rise[::-1])
    return weights


def blend_weights(length: int, window: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts and the normalised weights (n_windows, window) of one signal; they sum to 1 at every sample.

    Small signals only (it holds every window's weights); :func:`denoise_windows` streams.
    """
    starts = window_starts(length, window, overlap)
    weights = _batch_weights(np.arange(len(starts)), len(starts), window, overlap)
    total = np.zeros(length)
    for start, w in zip(starts, weights):
        total[start : start + window] += w
    return starts, weights / np.stack([total[s : s + window] for s in starts])


def _batch_weights(k: np.ndarray, n_windows: int, window: int, overlap: int) -> np.ndarray:
    """Weights (len(k), window) of windows number ``k`` (0-based within their signal) of ``n_windows``."""
    weights = np.repeat(taper(window, overlap)[None], len(k), axis=0)
    if n_windows == 1:
        weights[:] = 1.0
        return weights
    weights[k == 0] = taper(window, overlap, first=True)
    weights[k == n_windows - 1] = taper(window, overlap, last=True)
    return weights


def denoise_windows(
    signals: np.ndarray,
    denoise: Denoiser,
    window: int,
    overlap: int | None = None,
    batch: int = DEFAULT_BATCH,
    out: np.ndarray | None = None,
    check: SpanCheck | None = None,
    dtype=np.float32,
) -> np.ndarray:
    """Denoise (N, L) or (L,) signals window by window and blend the windows back.

    Parameters
    ----------
    signals : np.ndarray
        (N, L) or (L,), any real dtype; a memory map is read one span at a time.
        L < ``window`` uses one window of length L per signal.
    denoise : callable
        ``windows (n, window) of dtype -> estimates (n, window)``, with ``n <= batch``.
    window : int
        The model's training length.
    overlap : int, optional
        Samples shared by neighbouring windows (default :func:`default_overlap`).
    batch : int
        Windows per call of ``denoise`` (bounds memory).
    out : np.ndarray, optional
        Where the result goes, the shape of ``signals`` (a memory map is fine); default a new float array.
    check : callable, optional
        Called as ``check(raw_span, first_flat_index)`` on every span before it is used
        (e.g. finite values); raise to stop.
    dtype : dtype-like
        What the windows are converted to before ``denoise``.

    Returns
    -------
    np.ndarray
        ``out``.
    """
    rows = signals.reshape(-1, signals.shape[-1]) if signals.ndim != 2 else signals
    n_rows, length = rows.shape
    window = min(window, length)
    overlap = default_overlap(window) if overlap is None else min(overlap, window - 1)
    if out is None:
        out = np.empty(signals.shape, np.float64 if np.dtype(signals.dtype) == np.float64 else np.float32)
    flat_in, flat_out = rows.reshape(-1), out.reshape(-1)
    _Blender(flat_in, flat_out, denoise, length, window, overlap, check, np.dtype(dtype)).run(n_rows, max(1, batch))
    return out


class _Blender:
    """Streams (row, window) pairs in order; samples before the next pair's start are final."""

    def __init__(self, flat_in, flat_out, denoise, length, window, overlap, check, dtype):
        self.flat_in, self.flat_out, self.denoise, self.check, self.dtype = flat_in, flat_out, denoise, check, dtype
        self.length, self.window, self.overlap = length, window, overlap
        self.starts = window_starts(length, window, overlap)
        self.acc = np.zeros(0)  # weighted sum and weight sum of the samples not yet written
        self.wsum = np.zeros(0)
        self.acc_lo = 0

    def run(self, n_rows: int, batch: int) -> None:
        n_windows = len(self.starts)
        total = n_rows * n_windows
        for p0 in range(0, total, batch):
            pairs = np.arange(p0, min(p0 + batch, total))
            row, k = pairs // n_windows, pairs % n_windows
            flat_starts = row * self.length + self.starts[k]
            self._blend(flat_starts, _batch_weights(k, n_windows, self.window, self.overlap))
            final = flat_starts[-1] + self.window if p0 + batch >= total else (
                (p0 + batch) // n_windows * self.length + self.starts[(p0 + batch) % n_windows])
            self._flush(int(final))

    def _blend(self, flat_starts: np.ndarray, weights: np.ndarray) -> None:
        lo, hi = int(flat_starts[0]), int(flat_starts[-1]) + self.window
        raw = self.flat_in[lo:hi]
        if self.check is not None:
            self.check(raw, lo)
        span = np.asarray(raw, dtype=self.dtype)
        release_pages(self.flat_in)
        views = np.lib.stride_tricks.sliding_window_view(span, self.window)[flat_starts - lo]
        estimate = np.asarray(self.denoise(np.ascontiguousarray(views)), dtype=np.float64)
        if estimate.shape != views.shape:
            raise ValueError(f"the denoiser returned shape {estimate.shape}, expected {views.shape}")
        index = ((flat_starts - lo)[:, None] + np.arange(self.window)).ravel()
        acc = np.bincount(index, (weights * estimate).ravel(), minlength=hi - lo)
        wsum = np.bincount(index, weights.ravel(), minlength=hi - lo)
        carried = len(self.acc)  # the carry starts at lo: the previous flush stopped at this batch's first start
        acc[:carried] += self.acc
        wsum[:carried] += self.wsum
        self.acc, self.wsum, self.acc_lo = acc, wsum, lo

    def _flush(self, final: int) -> None:
        done = final - self.acc_lo
        self.flat_out[self.acc_lo : final] = self.acc[:done] / self.wsum[:done]
        release_pages(self.flat_out)
        self.acc, self.wsum, self.acc_lo = self.acc[done:].copy(), self.wsum[done:].copy(), final

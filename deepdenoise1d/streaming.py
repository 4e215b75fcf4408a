"""Denoise a signal file into its output, chunk by chunk: read, window, denoise, blend, write.

:func:`denoise_file` is the one pipeline of the front-ends' file mode: the reader
(:mod:`deepdenoise1d.io`, or a column of a table, :mod:`deepdenoise1d.columns`), the network or a
method in chunks (long signals in blended windows, :mod:`deepdenoise1d.windows`), the range check
(:mod:`deepdenoise1d.range_check`) on the way, and the guarded writer (:mod:`deepdenoise1d.safewrite`).
Memory stays bounded whatever the file size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepdenoise1d import columns, windows
from deepdenoise1d.errors import InputError
from deepdenoise1d.io import (TEXT_SUFFIXES, Gaps, check_span, compute_dtype, iter_chunks, open_signals, scan_gaps,
                              short_stretches_note, temp_memmap, write_signals)
from deepdenoise1d.methods import Method
from deepdenoise1d.progress import Progress
from deepdenoise1d.range_check import SigmaRangeCheck, sigma_range_check
from deepdenoise1d.safewrite import guard_output, open_npy_output, release_pages

@dataclass
class FileResult:
    """What :func:`denoise_file` did: ``n`` signals of ``length``, written as ``dtype``."""

    n: int
    length: int
    dtype: str
    warning: str | None
    notes: tuple = ()  # lines to show: the σ estimate and every warning (SigmaRangeCheck.notes)
    gap_notes: tuple = ()  # NaN gaps: "N gaps (M samples) kept as NaN; K stretches denoised", and the short ones
    gaps: dict | None = None  # for --json: gaps, NaN samples, stretches denoised, stretches kept as they were


def denoise_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    denoise: Method,
    min_length: int,
    chunk: int,
    reads: tuple = (),
    sigma_range=None,
    progress: bool = True,
    train_length: int | None = None,
    overlap: int | None = None,
    input_scale: float = 1.0,
    equivariant: bool = False,
    offset_free: bool = False,
    column=None,
    network: bool = True,
    gaps: bool = False,
    gap_min_length: int | None = None,
) -> FileResult:
    """Denoise every signal of ``input_path`` and write them to ``output_path``, streaming.

    A ``.npy`` input is memory-mapped (a text input is parsed block by block into a
    temporary memory map) and goes through the network ``chunk`` signals at a time, each
    block converted from the stored dtype on its own, into a memory-mapped output, so
    memory stays bounded whatever the file size. Signals longer than ``train_length`` are
    denoised in overlapping windows of that length, blended (:mod:`deepdenoise1d.windows`),
    ``chunk`` windows at a time. Each block is checked (finite, inside the range of the float
    type it is computed in: float32 for a network that is not scale-equivariant, else the
    record's own) before it is used; a bad value anywhere leaves no output (the
    temp file is removed, and so is any folder this call created). float32 in gives
    float32 out, float64 (and integers) give float64.

    Parameters
    ----------
    input_path, output_path : path
        ``.txt`` (one value per line, or one signal per row) or ``.npy`` ([L] or [N, L]).
        The output keeps the input's shape; it may not be (or link to) any of ``reads``.
    denoise : callable
        ``noisy chunk (n, L) -> estimate (n, L)``, keeping the float dtype.
    min_length, chunk : int
        The network's minimum length and signals per chunk (``icnn.spec``).
    reads : tuple of path
        Every file the command reads (weights, input): never written over.
    sigma_range : [low, high] or None
        The model's training noise range, for :class:`SigmaRangeCheck`.
    progress : bool
        Report progress on stderr when there is more than one chunk.
    train_length : int, optional
        The length the model was trained on; longer signals go through windows of it.
        None: every signal goes through whole.
    overlap : int, optional
        Samples shared by neighbouring windows (default: half a window).
    input_scale : float
        The model's input_scale s: ``sigma_range`` is compared with σ̂ / s.
    equivariant : bool
        The model is scale-equivariant: the range warning compares signal-to-noise, not σ̂.
    offset_free : bool
        The model takes each signal's median off: signal-to-noise and peaks are measured from it.
    column : deepdenoise1d.columns.Column, optional
        The record is this column of the text table ``input_path``; a text output is that table with the
        column denoised (header and other columns kept), a ``.npy`` output the column alone.
    network : bool
        ``denoise`` is a network: warn when it moves the record by far more than the noise.
    gaps : bool
        NaN runs are gaps (:func:`deepdenoise1d.io.scan_gaps`, a first pass over the file in blocks): each finite
        stretch between them is denoised as a signal of its own (in windows when longer than ``train_length``),
        the NaN stay NaN in the output, and :attr:`FileResult.gap_notes` says how many. inf is refused all the
        same. False (the default): any NaN is refused, naming signal and index.
    gap_min_length : int, optional
        Stretches shorter than this are written back unchanged (default ``min_length``).
    """
    output_path = Path(output_path)
    suffix = output_path.suffix.lower()
    if suffix not in (*TEXT_SUFFIXES, ".npy"):
        raise InputError(f"{output_path}: unsupported output format {output_path.suffix!r} (use .txt, .csv or .npy)")
    if suffix != ".npy":  # refuse before the work, not after (no folder made yet: the input may be bad)
        guard_output(output_path, reads, kind="text", make_parent=False)
    signals, stored_shape = (columns.read_column(input_path, column, gaps) if column
                             else open_signals(input_path, allow_nan=gaps))
    if signals.shape[-1] < min_length:
        raise InputError(f"{input_path}: signals have length {signals.shape[-1]}, need at least {min_length}")
    found = scan_gaps(signals, str(input_path)) if gaps else None
    if found is not None and found.samples() == signals.size:
        raise InputError(f"{input_path}: every value is NaN (all gap): nothing to denoise")
    dtype = compute_dtype(signals.dtype)  # float32 and float16 give float32, the rest float64
    # A method computes in the record's own float type; a network that is not scale-equivariant only in float32
    # (an equivariant one takes its baseline and scale in float64 and hands float32 the normalised signal).
    work = np.float32 if network and not equivariant else dtype
    check = sigma_range_check(sigma_range, scale=input_scale, equivariant=equivariant, offset_free=offset_free)
    check.network = network
    window = train_length if train_length is not None and signals.shape[-1] > train_length else None
    stream = _Stream(signals, denoise, chunk, str(input_path), check, progress, window, overlap, work,
                     train_length=train_length)
    minimum = min_length if gap_min_length is None else gap_min_length
    counts = None

    def run(out: np.ndarray) -> None:
        nonlocal counts
        if found is None:
            stream.run(out)
        else:
            counts = stream.run_gaps(out, found, minimum)

    with _undo_new_folders(output_path):
        if suffix == ".npy":
            with open_npy_output(output_path, tuple(stored_shape), dtype, reads=reads) as out:
                run(out.reshape(signals.shape))
        else:
            out = temp_memmap(signals.shape, dtype)  # the text is written from it block by block
            run(out)
            if column is not None:
                columns.write_column(output_path, input_path, column, out[0], reads=reads)
            else:
                write_signals(output_path, out, like_shape=tuple(stored_shape), reads=reads)
    n, length = signals.shape
    gap_notes, gap_info = (), None
    if counts is not None:
        denoised, short = counts
        gap_notes = tuple(line for line in (found.note(denoised), short_stretches_note(short, minimum)) if line)
        gap_info = {"gaps": found.count(), "nan_samples": found.samples(), "stretches_denoised": denoised,
                    "stretches_unchanged": short, "min_stretch": minimum}
    return FileResult(n, length, np.dtype(dtype).name, check.warning() if check else None,
                      tuple(check.notes()) if check else (), gap_notes, gap_info)


@dataclass
class _Stream:
    signals: np.ndarray
    denoise: Method
    chunk: int
    source: str
    check: SigmaRangeCheck | None
    progress: bool
    window: int | None = None
    overlap: int | None = None
    dtype: type = np.float32  # what the method computes in: each block is cast to it and checked inside its range
    train_length: int | None = None  # stretches between gaps longer than this go through windows of it
    first_row: int = 0  # where ``signals`` begin in the file's signals (a stretch between gaps), for messages
    first_index: int = 0

    def run_gaps(self, out: np.ndarray, gaps: Gaps, minimum: int) -> tuple[int, int]:
        """Rows without a gap as :meth:`run` sends them (in chunks); each finite stretch of a row with gaps as a
        signal of its own (windows when longer than ``train_length``), stretches shorter than ``minimum``
        copied unchanged, the gaps NaN. Returns (stretches denoised, stretches copied unchanged)."""
        n, length = self.signals.shape
        denoised = short = 0
        start = 0
        for row in sorted(gaps.runs) + [n]:
            if row > start:  # rows without a gap: each is one stretch
                self._part(start, row, 0, length).run(out[start:row])
                denoised += row - start
            if row == n:
                break
            for a, b in gaps.stretches(row):
                if b - a < minimum:
                    out[row, a:b] = self.signals[row, a:b]
                    short += 1
                else:
                    self._part(row, row + 1, a, b).run(out[row : row + 1, a:b])
                    denoised += 1
            for a, b in gaps.runs[row]:
                out[row, a:b] = np.nan
            release_pages(out)
            start = row + 1
        return denoised, short

    def _part(self, r0: int, r1: int, a: int, b: int) -> "_Stream":
        """The stream of ``signals[r0:r1, a:b]`` (whole signals, or one stretch between gaps)."""
        window = self.train_length if self.train_length is not None and b - a > self.train_length else None
        return _Stream(self.signals[r0:r1, a:b], self.denoise, self.chunk, self.source, self.check, self.progress,
                       window, self.overlap, self.dtype, self.train_length, self.first_row + r0, self.first_index + a)

    def run(self, out: np.ndarray) -> None:
        if self.window is not None:
            self._run_windows(out)
            return
        n, length = self.signals.shape
        with Progress(n, "denoising", "signals", every=5.0, enabled=self.progress and n > self.chunk) as bar:
            # Each block is checked (finite, inside the float type the method computes in) before use.
            for start, block in iter_chunks(self.signals, self.chunk, self.source, self.dtype, self.first_row,
                                            self.first_index):
                if self.check is not None:
                    self.check.observe(block)
                estimate = self.denoise(block)
                if self.check is not None:
                    self.check.observe_output(block, estimate)
                bad = ~np.isfinite(estimate).all(axis=-1)
                if bad.any():  # finite input that overflows inside the network: refuse, never write NaN
                    raise InputError(f"{self.source}: signal {self.first_row + start + int(np.argmax(bad))} overflows inside the "
                                     "network (its values are too large); rescale the input")
                out[start : start + block.shape[0]] = estimate
                release_pages(out)
                bar.update(block.shape[0])

    def _run_windows(self, out: np.ndarray) -> None:
        """Long signals: windows of the training length, ``chunk`` at a time, blended into ``out``."""
        n, length = self.signals.shape
        overlap = windows.default_overlap(self.window) if self.overlap is None else self.overlap
        total = n * len(windows.window_starts(length, self.window, overlap))
        with Progress(total, "denoising", "windows", every=5.0, enabled=self.progress and total > self.chunk) as bar:
            def denoise_windows(block: np.ndarray) -> np.ndarray:
                if self.check is not None:  # each window is a signal of the length the model knows
                    self.check.observe_windows(block)
                estimate = self.denoise(block)
                if self.check is not None:
                    self.check.observe_output(block, estimate)
                if not np.isfinite(estimate).all():  # finite input that overflows inside the network
                    raise InputError(f"{self.source}: the values overflow inside the network (they are too "
                                     "large); rescale the input")
                bar.update(block.shape[0])
                return estimate

            windows.denoise_windows(self.signals, denoise_windows, self.window, overlap, batch=self.chunk, out=out,
                                    check=lambda raw, flat: check_span(raw, flat, length, self.source, self.dtype,
                                                                       first_row=self.first_row,
                                                                       first_index=self.first_index),
                                    dtype=self.dtype)


class _undo_new_folders:
    """Remove the (still empty) folders above ``path`` that did not exist before, when the body fails."""

    def __init__(self, path: Path):
        self.missing = [p for p in Path(os.path.abspath(path)).parents if not p.exists()]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            for folder in self.missing:  # deepest first
                try:
                    folder.rmdir()  # only ever an empty folder
                except OSError:
                    break
        return False

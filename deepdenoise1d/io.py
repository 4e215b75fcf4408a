"""Signal files: readers, writers and value checks.

Signals are read from ``.txt``/``.csv`` (one float per line = one signal, with an
optional header row, or one signal per row as ``np.savetxt`` writes an (N, L)
array; parsed block by block) or ``.npy`` ([L] or [N, L], opened memory-mapped
after its header is checked against the file size). :func:`open_signals` reads any
size in bounded memory; :func:`read_signals` loads. Writers go
through the guarded atomic write path of :mod:`deepdenoise1d.safewrite`. Every
reader and writer raises :class:`deepdenoise1d.errors.InputError` with one clear line
on bad input or an OS error, never another exception.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from deepdenoise1d.errors import InputError, os_reason, show_path
from deepdenoise1d.safewrite import atomic_write, release_pages

PathLike = str | os.PathLike
FLOAT32_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------
# Value checks


def compute_dtype(dtype) -> np.dtype:
    """The float dtype signals of stored ``dtype`` are computed in: float32 stays float32, else float64."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize <= 4 else np.dtype(np.float64)


def check_chunk(chunk: np.ndarray, first_row: int, source: str, dtype=np.float64, first_index: int = 0,
                allow_nan: bool = False) -> None:
    """Refuse NaN/inf, and values beyond float32's range when computing in float32.

    Parameters
    ----------
    chunk : np.ndarray
        Signals (n, L) or one signal (L,), as stored (any real dtype).
    first_row : int
        Index of ``chunk[0]`` in the whole file, for the message.
    source : str
        File name for the message.
    dtype : dtype-like
        The dtype the values will be computed in.
    first_index : int
        Position of ``chunk[:, 0]`` within its signals (a stretch of a long record).
    allow_nan : bool
        Let NaN through (gaps, :func:`scan_gaps`); inf is refused all the same.

    Raises
    ------
    InputError
        Naming the signal index and the position within the signal.
    """
    check_still_whole(chunk, source)
    found = _first_bad(np.atleast_2d(np.asarray(chunk)), dtype, allow_nan)
    if found is not None:
        row, col, what = found
        raise InputError(_bad_value_message(source, first_row + row, first_index + col, what))


def check_still_whole(array: np.ndarray, source: str) -> None:
    """Refuse, in one line, a memory-mapped input whose file was cut short since it was opened: touching the
    pages past its new end would kill the process (SIGBUS). Checked before each block is read, which leaves
    only the time between this check and the read for a cut to land in."""
    filename = getattr(array, "filename", None)  # a str or a Path, after the NumPy version
    mapped = getattr(array, "_mmap", None)
    if not isinstance(filename, (str, os.PathLike)) or mapped is None:
        return
    try:
        size = os.stat(filename).st_size
    except OSError:
        return  # removed or renamed: the mapping still holds the pages
    if size < len(mapped):
        raise InputError(f"{source}: the file was cut short while it was being read (now {size} bytes, "
                         f"{len(mapped)} when opened); nothing written")


def check_span(raw: np.ndarray, flat_start: int, length: int, source: str, dtype=np.float32,
               allow_nan: bool = False, first_row: int = 0, first_index: int = 0) -> None:
    """:func:`check_chunk` for a stretch ``raw`` of the flattened (N, ``length``) signals, from ``flat_start`` on
    (those signals begin at signal ``first_row``, index ``first_index`` of the file's, for the message)."""
    check_still_whole(raw, source)
    found = _first_bad(np.asarray(raw).reshape(1, -1), dtype, allow_nan)
    if found is not None:
        _, col, what = found
        row, index = divmod(flat_start + col, length)
        raise InputError(_bad_value_message(source, first_row + row, first_index + index, what))


def _first_bad(chunk: np.ndarray, dtype, allow_nan: bool = False) -> tuple[int, int, tuple] | None:
    """(row, col, (kind, value)) of the first value :func:`check_chunk` refuses in a 2-D chunk, else None."""
    if chunk.dtype.kind not in "fc":
        return None  # integers are finite and, below 2**64, inside float32's range
    bad = np.isinf(chunk) if allow_nan else ~np.isfinite(chunk)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        return int(row), int(col), ("non-finite", chunk[row, col])
    if np.dtype(dtype) == np.float32 and chunk.dtype.itemsize > 4:
        with np.errstate(invalid="ignore"):
            big = np.abs(chunk) > FLOAT32_MAX  # NaN (a gap, when allowed) compares False
        if big.any():
            row, col = np.argwhere(big)[0]
            return int(row), int(col), ("big", chunk[row, col])
    return None


def _bad_value_message(source: str, row: int, col: int, what: tuple) -> str:
    kind, value = what
    if kind == "non-finite":
        return f"{source}: signal {row} has a non-finite value ({value}) at index {col}"
    return f"{source}: signal {row} has value {value:.6g} at index {col}, beyond the float32 range (±{FLOAT32_MAX:.4g})"


def iter_chunks(signals: np.ndarray, chunk: int, source: str, dtype, first_row: int = 0,
                first_index: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block)``: checked (:func:`check_chunk`) blocks of rows cast to ``dtype``.

    Pages of a memory-mapped input are released after each block, so memory
    stays bounded by the chunk size. ``first_row`` and ``first_index`` place ``signals`` in
    the file's signals, for the messages (a stretch between gaps).
    """
    dtype = np.dtype(dtype)
    for start in range(0, signals.shape[0], chunk):
        raw = signals[start : start + chunk]
        check_chunk(raw, first_row + start, source, dtype, first_index=first_index)
        yield start, np.array(raw, dtype=dtype)
        release_pages(signals)


# ---------------------------------------------------------------------------
# Gaps: NaN runs in a record, kept as NaN while the finite stretches between them are denoised

GAP_BLOCK = 1 << 20  # values scanned at a time by :func:`scan_gaps`


@dataclass
class Gaps:
    """Where the NaN runs (gaps) of (N, ``length``) signals lie: ``runs[row]`` = [(start, stop), ...], increasing.

    A row without a gap has no entry. The finite stretches are the complement of the runs in each row.
    """

    n: int
    length: int
    runs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def count(self) -> int:
        """The number of gaps (NaN runs)."""
        return sum(len(r) for r in self.runs.values())

    def samples(self) -> int:
        """The NaN samples."""
        return sum(b - a for r in self.runs.values() for a, b in r)

    def stretches(self, row: int) -> list[tuple[int, int]]:
        """The finite stretches ``[(start, stop), ...]`` of ``row`` (the whole row when it has no gap)."""
        out, at = [], 0
        for a, b in self.runs.get(row, ()):
            if a > at:
                out.append((at, a))
            at = b
        if at < self.length:
            out.append((at, self.length))
        return out

    def all_stretches(self) -> list[tuple[int, int, int]]:
        """``(row, start, stop)`` of every finite stretch of the rows that have gaps."""
        return [(row, a, b) for row in sorted(self.runs) for a, b in self.stretches(row)]

    def note(self, denoised: int) -> str:
        """``3 gaps (120 samples) kept as NaN; 4 stretches denoised`` (the line the front-ends print)."""
        samples = self.samples()
        return (f"{self.count()} gap{'s' if self.count() != 1 else ''} ({samples} sample{'s' if samples != 1 else ''}) kept as NaN; "
                f"{denoised} stretch{'es' if denoised != 1 else ''} denoised")


def short_stretches_note(count: int, minimum: int) -> str | None:
    """One line for the stretches between gaps too short to denoise, written back unchanged; None for none."""
    if not count:
        return None
    return (f"{count} stretch{'es' if count != 1 else ''} between gaps shorter than {minimum} samples (the "
            f"method's minimum) written back unchanged")


def scan_gaps(signals: np.ndarray, source: str, block: int = GAP_BLOCK) -> Gaps | None:
    """Find the NaN runs of (N, L) signals, :data:`GAP_BLOCK` values at a time (a memory map stays unloaded).

    Returns None when there is no NaN (integers never have one). Refuses inf in one line (it is no gap:
    a value that overflowed), naming signal and index, as :func:`check_chunk` does.
    """
    if signals.dtype.kind not in "fc":
        return None
    n, length = signals.shape
    rows_per = max(1, block // max(length, 1))
    cols = length if rows_per > 1 else min(length, block)
    gaps = Gaps(n, length)
    for r0 in range(0, n, rows_per):
        for c0 in range(0, length, cols):
            raw = np.asarray(signals[r0 : r0 + rows_per, c0 : c0 + cols])
            finite = np.isfinite(raw)
            if finite.all():
                continue
            inf = np.isinf(raw)
            if inf.any():
                row, col = np.argwhere(inf)[0]
                raise InputError(_bad_value_message(source, r0 + int(row), c0 + int(col),
                                                    ("non-finite", raw[row, col])))
            for i in np.flatnonzero(~finite.all(axis=1)):
                edges = np.diff(np.concatenate(([0], np.isnan(raw[i]).view(np.int8), [0])))
                starts, stops = np.flatnonzero(edges == 1) + c0, np.flatnonzero(edges == -1) + c0
                runs = gaps.runs.setdefault(r0 + int(i), [])
                for a, b in zip(starts.tolist(), stops.tolist()):
                    if runs and runs[-1][1] == a:  # a run that goes on across two blocks
                        runs[-1] = (runs[-1][0], b)
                    else:
                        runs.append((a, b))
        release_pages(signals)
    return gaps if gaps.runs else None


# ---------------------------------------------------------------------------
# Readers


def check_file(path: Path) -> int:
    """Return the size of a regular, non-empty file, or raise one line."""
    try:
        if not path.exists():
            raise InputError(f"{show_path(path)}: no such file")
        if not path.is_file():
            raise InputError(f"{show_path(path)}: not a file")
        size = path.stat().st_size
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise InputError(f"{show_path(path)}: cannot read ({os_reason(err)})") from None
    if size == 0:
        raise InputError(f"{show_path(path)}: file is empty")
    return size


TEXT_SUFFIXES = (".txt", ".csv")
TEXT_BLOCK = 1 << 22  # bytes of text decoded at a time
TEXT_ROWS = 1 << 16  # parsed rows held before they go to the temporary file
MAX_LINE = 1 << 26  # a "line" this long is not a signal file


def read_signals(path: PathLike, allow_nan: bool = False) -> tuple[np.ndarray, tuple[int, ...]]:
    """Read ``.txt``/``.csv`` or ``.npy`` signals into memory as (N, L), with the shape they were stored in.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.txt`` or ``.csv`` (one float per line, with an optional header row, is
        one signal; or one signal per row separated by whitespace, commas or
        semicolons; UTF-8, optional byte-order mark, ``#`` comments) or a ``.npy``
        ([L] or [N, L], real numbers, no pickles).
    allow_nan : bool
        Text: let NaN through (gaps, :func:`scan_gaps`); inf is refused all the same.

    Returns
    -------
    signals : np.ndarray
        (N, L). ``.npy``: a read-only memory map for native float32/float64
        (float32 stays float32), other real dtypes converted to float64 (float16
        to float32). Text: float64, already checked finite.
    stored_shape : tuple of int
        ``(L,)`` for one signal stored flat, else ``(N, L)``.

    Notes
    -----
    ``.npy`` values are not scanned here; call :func:`check_chunk` (or use
    :func:`iter_chunks`) on each block before computing with it. For files of any
    size, :func:`open_signals` reads without loading or converting.
    """
    suffix = Path(path).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        signals, stored_shape = read_text_signals(path, allow_nan)
        return np.array(signals), stored_shape
    if suffix == ".npy":
        array = read_npy(path, check_values=False)
        return np.atleast_2d(array), tuple(array.shape)
    raise InputError(f"{show_path(path)}: unsupported signal format {suffix!r} (use .txt, .csv or .npy)")


def open_signals(path: PathLike, allow_nan: bool = False) -> tuple[np.ndarray, tuple[int, ...]]:
    """Open signals of any size without loading them: (N, L) as stored, and the stored shape.

    ``.npy``: a read-only memory map in the stored dtype (no conversion: convert
    block by block, e.g. with :func:`iter_chunks`). Text: parsed block by block
    into a float64 memory map of a temporary file (:func:`read_text_signals`).
    Values of a ``.npy`` are not scanned here (see :func:`check_chunk`); ``allow_nan`` lets a text file's
    NaN through (gaps).
    """
    suffix = Path(path).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return read_text_signals(path, allow_nan)
    if suffix == ".npy":
        path = Path(path)
        shape, _, dtype, _ = read_npy_header(path)
        array = _load_npy_map(path, shape, dtype)
        return array.reshape(1, -1) if array.ndim == 1 else array, tuple(shape)
    raise InputError(f"{show_path(path)}: unsupported signal format {suffix!r} (use .txt, .csv or .npy)")


def read_txt(path: PathLike) -> np.ndarray:
    """Read one signal from a ``.txt``/``.csv`` file, shape (L,). See :func:`read_signals` for the layouts."""
    signals, _ = read_text_signals(path)
    if signals.shape[0] != 1:
        raise InputError(f"{show_path(path)}: expected one signal, the file holds {signals.shape[0]} rows")
    return np.array(signals[0])


def read_text_signals(path: PathLike, allow_nan: bool = False) -> tuple[np.ndarray, tuple[int, ...]]:
    """Parse a text signal file block by block into a read-only float64 memory map (N, L).

    The values go to an anonymous temporary file (in the system temp folder, removed
    when the map is freed), so memory stays bounded whatever the file size. One
    value per line is one signal (stored shape ``(L,)``); its first data line may be
    a header (words, e.g. ``amplitude``), which is skipped. Otherwise every row is
    one signal and all rows have as many values. Values are checked finite (``allow_nan``: NaN is let
    through as a gap, inf still refused).
    """
    path = Path(path)
    check_file(path)
    try:
        with tempfile.TemporaryFile(prefix="deepdenoise1d-", suffix=".f64") as tmp:
            rows, width = _TextParser(path, tmp, allow_nan).run()
            tmp.flush()
            flat = width == 1  # the original repository's layout: one float per line is one signal
            shape = (1, rows) if flat else (rows, width)
            return np.memmap(tmp, dtype=np.float64, mode="r", shape=shape), ((rows,) if flat else shape)
    except OSError as err:
        raise InputError(f"{show_path(path)}: cannot read into a temporary file in {tempfile.gettempdir()} "
                         f"({os_reason(err)})") from None


class _TextParser:
    """Lines -> rows of floats -> the temporary file, :data:`TEXT_ROWS` rows at a time."""

    def __init__(self, path: Path, out, allow_nan: bool = False):
        self.path, self.source, self.out, self.allow_nan = path, show_path(path), out, allow_nan
        self.width, self.first_line, self.rows, self.buffer = None, 0, 0, []

    def run(self) -> tuple[int, int]:
        self.header_allowed = True
        for first_lineno, text in _text_blocks(self.path):
            lines = text.splitlines(keepends=True)
            done = 0
            while self.header_allowed and done < len(lines):  # line by line until the first data line
                self._parse_line(lines[done], first_lineno + done)
                done += 1
            rest = "".join(lines[done:]) if done else text
            if rest and not self._fast_block(rest):
                for offset, line in enumerate(lines[done:]):
                    self._parse_line(line, first_lineno + done + offset)
        self._flush()
        if self.width is None:
            raise InputError(f"{self.source}: file holds no values")
        return self.rows, self.width

    def _parse_line(self, line: str, lineno: int) -> None:
        if not _is_data(line):
            return
        try:
            values = _parse_row(line, lineno, self.path)
        except InputError:
            if self.header_allowed and _is_header(line):
                self.header_allowed = False
                return
            raise
        self.header_allowed = False
        self._add(values, lineno)

    def _add(self, values: list[float], lineno: int) -> None:
        if self.width is None:
            self.width, self.first_line = len(values), lineno
        elif len(values) != self.width:
            raise InputError(f"{self.source}: line {lineno} has {_count(len(values))}, "
                             f"line {self.first_line} has {self.width}")
        self.buffer.append(values)
        if len(self.buffer) >= TEXT_ROWS:
            self._flush()

    def _fast_block(self, text: str) -> bool:
        """A block of plain rows (ASCII numbers and blanks only, as many per row as before) parsed in C.

        The line-by-line parser is about ten times slower; any other block (comments, commas, a
        different width, a bad value) goes through it, so its messages are unchanged.
        """
        if self.width is None or _NOT_PLAIN.search(text) is not None:
            return False
        try:
            # Python's float on these characters accepts exactly NUMBER_PATTERN: no '_', letters or other digits
            values = np.array(list(map(float, text.split())), dtype=np.float64)
        except ValueError:  # "1..2", "e5": the line parser names the line
            return False
        rows = len(text.splitlines())
        if values.size != rows * self.width or (self.width > 1 and not _same_width(text, self.width)):
            return False
        self._flush()
        self._write(values.reshape(rows, self.width))
        return True

    def _flush(self) -> None:
        if self.buffer:
            self._write(np.array(self.buffer, dtype=np.float64))
            self.buffer = []

    def _write(self, block: np.ndarray) -> None:
        if self.width == 1:  # one signal: the block is a stretch of it
            check_chunk(block.T, 0, self.source, np.float64, first_index=self.rows, allow_nan=self.allow_nan)
        else:
            check_chunk(block, self.rows, self.source, np.float64, allow_nan=self.allow_nan)
        self.out.write(block.tobytes())
        self.rows += block.shape[0]


def _same_width(text: str, width: int) -> bool:
    """Every row of a plain block holds ``width`` values."""
    return all(len(line.split()) == width for line in text.splitlines())


def _text_blocks(path: Path) -> Iterator[tuple[int, str]]:
    """(number of its first line, whole lines of text) of a UTF-8 file (optional byte-order mark),
    decoded :data:`TEXT_BLOCK` bytes at a time."""
    lineno, offset, rest = 1, 0, b""
    with open(path, "rb") as f:
        while True:
            block = f.read(TEXT_BLOCK)
            data = rest + block
            cut = data.rfind(b"\n") + 1 if block else len(data)  # whole lines only, until the end
            data, rest = data[:cut], data[cut:]
            if len(rest) > MAX_LINE:
                long_line = lineno + data.count(b"\n")
                raise InputError(f"{show_path(path)}: line {long_line} is longer than {_human(MAX_LINE)}; "
                                 "not a signal file")
            if offset == 0 and data.startswith(b"\xef\xbb\xbf"):
                data, offset = data[3:], 3
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{show_path(path)}: not UTF-8 text (bad byte at offset {offset + err.start})") from None
            offset += len(data)
            if text:
                yield lineno, text
                lineno += len(text.splitlines())
            if not block:
                return


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file, as :func:`_text_blocks` decodes it."""
    for first, text in _text_blocks(path):
        yield from enumerate(text.splitlines(), start=first)


def _is_header(line: str) -> bool:
    """A header row: names, none of them a number or begun like one (``1.0x`` is a bad value), at least one
    with a letter (``Time (s),Voltage [mV]``)."""
    tokens = [token for token in re.split(r"[\s,;]+", line.strip()) if token]
    for token in tokens:
        if token[0] in "0123456789+-.":
            return False
        try:
            parse_number(token)
            return False  # nan, inf: a value, refused later as not finite
        except ValueError:
            pass
    return any(char.isalpha() for token in tokens for char in token)


def temp_memmap(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A writable memory map of an anonymous temporary file (system temp folder), space reserved up front.

    Reserving the space turns a full disk into one :class:`InputError` line now
    instead of a crash when a page is first written.
    """
    dtype = np.dtype(dtype)
    nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    try:
        with tempfile.TemporaryFile(prefix="deepdenoise1d-") as tmp:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(tmp.fileno(), 0, nbytes)
            else:
                tmp.truncate(nbytes)
            return np.memmap(tmp, dtype=dtype, mode="r+", shape=shape)
    except OSError as err:
        raise InputError(f"cannot make a temporary file of {_human(nbytes)} in {tempfile.gettempdir()} "
                         f"({os_reason(err)})") from None

def _count(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"


def _is_data(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


# A number is ASCII decimal only: float() would also take "1_000", Arabic-Indic or full-width digits.
NUMBER_PATTERN = r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:nan|inf|infinity))"
_NUMBER = re.compile(NUMBER_PATTERN)
# A character outside plain rows of numbers separated by blanks (the fast path of the text reader).
_NOT_PLAIN = re.compile(r"[^0-9eE+\-. \t\r\n]")
# Between two values: a comma or a semicolon with optional blanks around it, or blanks alone.
_SEPARATOR = re.compile(r"[ \t]*[,;][ \t]*|[ \t]+")


def parse_number(text: str) -> float:
    """``float(text)`` for an ASCII decimal number (``nan``/``inf`` included), else ValueError.

    Unlike ``float``, refuses digit separators (``1_000``), non-ASCII digits and
    surrounding whitespace other than ASCII blanks.
    """
    stripped = text.strip(" \t\r\n")
    if _NUMBER.fullmatch(stripped) is None:
        raise ValueError(f"not an ASCII decimal number: {text[:40]!r}")
    return float(stripped)


def _parse_row(line: str, lineno: int, path: Path) -> list[float]:
    """The values of one data line; refused (line number and a short reason, never the line's text) when
    a value is not an ASCII decimal number or the separators are ambiguous (a decimal comma)."""
    text = line.strip()
    if text[-1:] in (",", ";"):
        text = text[:-1].rstrip(" \t")  # one trailing separator, as some CSV writers leave
    separators = _SEPARATOR.findall(text)
    tokens = _SEPARATOR.split(text)
    if any(s == "," for s in separators) and any(s.strip(" \t") != "," for s in separators):
        # "1,5\t2,25" or "1,5;2": a bare comma next to other separators is a decimal comma, never read as two values
        raise InputError(f"{show_path(path)}: line {lineno} mixes bare commas with other separators (a decimal "
                         "comma?); write numbers with a decimal point")
    if separators == [","] and all(t.isdigit() and t.isascii() for t in tokens):
        # "3,14": two integers make a signal of length 2, which nothing uses; a decimal comma is far likelier
        raise InputError(f"{show_path(path)}: line {lineno} is two integers joined by a comma (a decimal comma?); "
                         "write numbers with a decimal point")
    values = []
    for column, token in enumerate(tokens, start=1):
        try:
            values.append(parse_number(token))
        except ValueError:
            where = f"line {lineno}" if len(tokens) == 1 else f"line {lineno}, value {column}"
            raise InputError(f"{show_path(path)}: {where} is not a number ({_not_number_reason(token)})") from None
    return values


def _not_number_reason(token: str) -> str:
    """Why a token is not a number, in a few words that never quote it (file contents stay out of messages)."""
    if not token:
        return "an empty value between two separators"
    if not token.isascii():
        return "non-ASCII characters; numbers are ASCII digits, '.', 'e', '+', '-'"
    if "_" in token:
        return "'_' digit separators are not read"
    return "numbers are ASCII digits with '.', 'e', '+', '-'"


def read_npy_header(path: PathLike) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Read and check an ``.npy`` header without loading data.

    Returns
    -------
    shape, fortran_order, dtype, data_offset
        As declared; the file is known to hold ``prod(shape)·itemsize`` bytes
        after ``data_offset``, the shape is [L] or [N, L] and non-empty, and the
        dtype is real integer or float32/float64/float16.

    Raises
    ------
    InputError
        One line for an ``.npz``, a pickle, any other non-``.npy`` file, a
        malformed header, or a declared size larger than the file.
    """
    path = Path(path)
    size = check_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
            f.seek(0)
            if head != b"\x93NUMPY":
                raise InputError(f"{show_path(path)}: {_not_npy_reason(head)}")
            shape, fortran, dtype = _read_header(f, path)
            offset = f.tell()
    except OSError as err:
        raise InputError(f"{show_path(path)}: cannot read ({os_reason(err)})") from None
    _check_header(path, shape, dtype, size - offset)
    return shape, fortran, dtype, offset


def _not_npy_reason(head: bytes) -> str:
    if head.startswith(b"PK"):
        return "is a zip archive (.npz?), not a .npy array; save one array with np.save"
    if head[:1] == b"\x80":
        return "is a pickle, not a .npy array (pickles are never loaded)"
    return "not a .npy file (no NumPy header)"


def _read_header(f, path: Path):
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(f)
        if version not in readers:
            raise InputError(f"{show_path(path)}: unsupported .npy format version {version[0]}.{version[1]}")
        return readers[version](f)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001  numpy's header parser raises many types (tokenize, ast, ...)
        detail = " ".join(str(err).split())[:80] or type(err).__name__
        raise InputError(f"{show_path(path)}: malformed .npy header ({detail})") from None


def _check_header(path: Path, shape, dtype: np.dtype, data_bytes: int) -> None:
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise InputError(f"{show_path(path)}: expected real numbers (float or integer), got dtype {dtype}")
    if len(shape) not in (1, 2) or min(shape) <= 0:
        raise InputError(f"{show_path(path)}: expected a non-empty [L] or [N, L] array, got shape {tuple(shape)}")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > data_bytes:
        raise InputError(
            f"{show_path(path)}: header declares shape {tuple(shape)} of {dtype} ({_human(declared)}), "
            f"but the file holds only {_human(max(data_bytes, 0))} of data"
        )


def _human(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"


def read_npy(path: PathLike, check_values: bool = True) -> np.ndarray:
    """Read ``[L]`` or ``[N, L]`` from ``.npy`` memory-mapped, after :func:`read_npy_header`.

    Parameters
    ----------
    path : str or os.PathLike
        The file (no pickles are ever loaded).
    check_values : bool
        Scan for NaN/inf block by block (naming signal and index).

    Returns
    -------
    np.ndarray
        Shape as stored. Native float32/float64: a read-only memory map.
        Integers: float64; float16: float32; other byte orders: native.
    """
    path = Path(path)
    shape, _, dtype, _ = read_npy_header(path)
    array = _load_npy_map(path, shape, dtype)
    target = compute_dtype(dtype)
    if array.dtype != target:
        array = array.astype(target)  # ints, float16, or a foreign byte order
    if check_values:
        rows = np.atleast_2d(array)
        for start, _ in iter_chunks(rows, 65536, show_path(path), target):
            pass
    return array


def _load_npy_map(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The read-only memory map of a ``.npy`` whose header :func:`read_npy_header` checked, in its stored dtype."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{show_path(path)}: not a readable .npy array ({' '.join(str(err).split())[:80]})") from None
    if array.shape != tuple(shape) or array.dtype != dtype:
        raise InputError(f"{show_path(path)}: .npy header and data disagree")
    return array


def write_txt(path: PathLike, signal: np.ndarray, reads: Iterable[PathLike] = (), *, durable: bool = True) -> Path:
    """Write one signal, one float per line (the original repository's layout), atomically (see :func:`atomic_write`)."""
    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise InputError(f"{show_path(path)}: write_txt writes one signal, got shape {signal.shape}")
    return _write_text(path, signal, reads, durable)


def _write_text(path: PathLike, array: np.ndarray, reads, durable: bool = True, delimiter: str = " ") -> Path:
    # 9 significant digits round-trip float32, 17 round-trip float64.
    fmt = "%.9g" if array.dtype == np.float32 else "%.17g"

    def write(f) -> None:  # block by block, so a memory-mapped array is never loaded whole
        for start in range(0, array.shape[0], TEXT_ROWS):
            np.savetxt(f, np.asarray(array[start : start + TEXT_ROWS]), fmt=fmt, delimiter=delimiter)
            release_pages(array)

    return atomic_write(path, write, reads, durable=durable)


def write_npy(path: PathLike, array: np.ndarray, reads: Iterable[PathLike] = ()) -> Path:
    """Write an array as ``.npy``, atomically."""
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False), reads)


def write_signals(path: PathLike, signals: np.ndarray, like_shape: tuple[int, ...] | None = None,
                  reads: Iterable[PathLike] = ()) -> Path:
    """Write (N, L) signals in the layout they were read in.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy`` (reshaped to ``like_shape``), ``.txt`` or ``.csv``: one float per line
        when ``like_shape`` is [L] (or None with N = 1), else one signal per row
        (values separated by a blank in ``.txt``, a comma in ``.csv``).
    signals : np.ndarray
        (N, L).
    like_shape : tuple of int, optional
        The stored shape from :func:`read_signals`.
    reads : iterable of path
        Files the command reads; see :func:`guard_output`.
    """
    path = Path(path)
    signals = np.atleast_2d(np.asarray(signals))
    suffix = path.suffix.lower()
    flat = (like_shape is not None and len(like_shape) == 1) or (like_shape is None and signals.shape[0] == 1)
    if suffix in TEXT_SUFFIXES:
        return _write_text(path, signals[0] if flat and signals.shape[0] == 1 else signals, reads,
                           delimiter="," if suffix == ".csv" else " ")
    if suffix == ".npy":
        return write_npy(path, signals.reshape(like_shape) if like_shape is not None else signals, reads)
    raise InputError(f"{show_path(path)}: unsupported output format {suffix!r} (use .txt, .csv or .npy)")

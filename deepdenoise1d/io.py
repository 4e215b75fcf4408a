"""Signal files: readers, writers and value checks.

Signals are read from ``.txt`` (one float per line = one signal, or one signal per
row as ``np.savetxt`` writes an (N, L) array) or ``.npy`` ([L] or [N, L], opened
memory-mapped after its header is checked against the file size). Writers go
through the guarded atomic write path of :mod:`deepdenoise1d.safewrite`. Every
reader and writer raises :class:`deepdenoise1d.errors.InputError` with one clear line
on bad input or an OS error, never another exception.
"""
from __future__ import annotations

import os
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


def check_chunk(chunk: np.ndarray, first_row: int, source: str, dtype=np.float64) -> None:
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

    Raises
    ------
    InputError
        Naming the signal index and the position within the signal.
    """
    chunk = np.atleast_2d(np.asarray(chunk))
    if chunk.dtype.kind not in "fc":
        return  # integers are finite and, below 2**64, inside float32's range
    bad = ~np.isfinite(chunk)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{source}: signal {first_row + row} has a non-finite value ({chunk[row, col]}) at index {col}")
    if np.dtype(dtype) == np.float32 and chunk.dtype.itemsize > 4:
        big = np.abs(chunk) > FLOAT32_MAX
        if big.any():
            row, col = np.argwhere(big)[0]
            raise InputError(
                f"{source}: signal {first_row + row} has value {chunk[row, col]:.6g} at index {col}, "
                f"beyond the float32 range (±{FLOAT32_MAX:.4g})"
            )


def iter_chunks(signals: np.ndarray, chunk: int, source: str, dtype) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block)``: checked (:func:`check_chunk`) blocks of rows cast to ``dtype``.

    Pages of a memory-mapped input are released after each block, so memory
    stays bounded by the chunk size.
    """
    dtype = np.dtype(dtype)
    for start in range(0, signals.shape[0], chunk):
        raw = signals[start : start + chunk]
        check_chunk(raw, start, source, dtype)
        yield start, np.array(raw, dtype=dtype)
        release_pages(signals)


# ---------------------------------------------------------------------------
# Readers


def _check_file(path: Path) -> int:
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


def read_signals(path: PathLike) -> tuple[np.ndarray, tuple[int, ...]]:
    """Read ``.txt`` or ``.npy`` signals as (N, L), with the shape they were stored in.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.txt`` (one float per line, or one signal per row separated by
        whitespace or commas; UTF-8, optional byte-order mark, ``#`` comments) or
        a ``.npy`` ([L] or [N, L], real numbers, no pickles).

    Returns
    -------
    signals : np.ndarray
        (N, L). ``.npy``: a read-only memory map for native float32/float64
        (float32 stays float32), other real dtypes converted to float64 (float16
        to float32). ``.txt``: float64, already checked finite.
    stored_shape : tuple of int
        ``(L,)`` for one signal stored flat, else ``(N, L)``.

    Notes
    -----
    ``.npy`` values are not scanned here; call :func:`check_chunk` (or use
    :func:`iter_chunks`) on each block before computing with it.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".txt":
        return _read_txt_signals(Path(path))
    if suffix == ".npy":
        array = read_npy(path, check_values=False)
        return np.atleast_2d(array), tuple(array.shape)
    raise InputError(f"{show_path(path)}: unsupported signal format {suffix!r} (use .txt or .npy)")


def read_txt(path: PathLike) -> np.ndarray:
    """Read one signal from a ``.txt`` file, shape (L,). See :func:`read_signals` for the layouts."""
    signals, _ = _read_txt_signals(Path(path))
    if signals.shape[0] != 1:
        raise InputError(f"{show_path(path)}: expected one signal, the file holds {signals.shape[0]} rows")
    return signals[0]


def _read_txt_signals(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    _check_file(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{show_path(path)}: not UTF-8 text (bad byte at offset {err.start})") from None
    except (OSError, MemoryError) as err:
        raise InputError(f"{show_path(path)}: cannot read ({os_reason(err) if isinstance(err, OSError) else 'too large'})") from None
    rows = [(n, _parse_row(line, n, path)) for n, line in enumerate(text.splitlines(), start=1) if _is_data(line)]
    if not rows:
        raise InputError(f"{show_path(path)}: file holds no values")
    widths = {len(values) for _, values in rows}
    if widths == {1}:  # the original repository's layout: one float per line is one signal
        signals = np.array([values[0] for _, values in rows], dtype=np.float64)[None, :]
        stored_shape = (signals.shape[1],)
    else:
        width = len(rows[0][1])
        for lineno, values in rows:
            if len(values) != width:
                raise InputError(f"{show_path(path)}: line {lineno} has {_count(len(values))}, line {rows[0][0]} has {width}")
        signals = np.array([values for _, values in rows], dtype=np.float64)
        stored_shape = signals.shape
    check_chunk(signals, 0, show_path(path), np.float64)
    return signals, stored_shape


def _count(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"


def _is_data(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def _parse_row(line: str, lineno: int, path: Path) -> list[float]:
    tokens = line.replace(",", " ").split()
    try:
        return [float(t) for t in tokens]
    except ValueError:
        for column, token in enumerate(tokens, start=1):
            try:
                float(token)
            except ValueError:
                where = f"line {lineno}" if len(tokens) == 1 else f"line {lineno}, value {column}"
                raise InputError(f"{show_path(path)}: {where} is not a number: {token[:40]!r}") from None
        raise


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
    size = _check_file(path)
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
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{show_path(path)}: not a readable .npy array ({' '.join(str(err).split())[:80]})") from None
    if array.shape != tuple(shape) or array.dtype != dtype:
        raise InputError(f"{show_path(path)}: .npy header and data disagree")
    target = compute_dtype(dtype)
    if array.dtype != target:
        array = array.astype(target)  # ints, float16, or a foreign byte order
    if check_values:
        rows = np.atleast_2d(array)
        for start, _ in iter_chunks(rows, 65536, show_path(path), target):
            pass
    return array


def write_txt(path: PathLike, signal: np.ndarray, reads: Iterable[PathLike] = (), *, durable: bool = True) -> Path:
    """Write one signal, one float per line (the original repository's layout), atomically (see :func:`atomic_write`)."""
    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise InputError(f"{show_path(path)}: write_txt writes one signal, got shape {signal.shape}")
    return _write_text(path, signal, reads, durable)


def _write_text(path: PathLike, array: np.ndarray, reads, durable: bool = True) -> Path:
    # 9 significant digits round-trip float32, 17 round-trip float64.
    fmt = "%.9g" if array.dtype == np.float32 else "%.17g"
    return atomic_write(path, lambda f: np.savetxt(f, array, fmt=fmt, delimiter=" "), reads, durable=durable)


def write_npy(path: PathLike, array: np.ndarray, reads: Iterable[PathLike] = ()) -> Path:
    """Write an array as ``.npy``, atomically."""
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False), reads)


def write_signals(path: PathLike, signals: np.ndarray, like_shape: tuple[int, ...] | None = None,
                  reads: Iterable[PathLike] = ()) -> Path:
    """Write (N, L) signals in the layout they were read in.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy`` (reshaped to ``like_shape``) or ``.txt``: one float per line when
        ``like_shape`` is [L] (or None with N = 1), else one signal per row.
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
    if suffix == ".txt":
        return _write_text(path, signals[0] if flat and signals.shape[0] == 1 else signals, reads)
    if suffix == ".npy":
        return write_npy(path, signals.reshape(like_shape) if like_shape is not None else signals, reads)
    raise InputError(f"{show_path(path)}: unsupported output format {suffix!r} (use .txt or .npy)")

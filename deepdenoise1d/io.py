"""Signal files and the one guarded write path.

Signals are read from ``.txt`` (one float per line = one signal, or one signal per
row as ``np.savetxt`` writes an (N, L) array) or ``.npy`` ([L] or [N, L], opened
memory-mapped after its header is checked against the file size).

Every output goes through :func:`guard_output`: it refuses a folder, a path that is
or links to a file the same command reads, and a parent that is a file. Writes are
atomic (:func:`atomic_write`, :func:`open_npy_output`). Every reader and writer
raises :class:`deepdenoise1d.errors.InputError` with one clear line on bad input or an
OS error, never another exception.
"""
from __future__ import annotations

import contextlib
import errno
import mmap
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from deepdenoise1d.errors import InputError
from deepdenoise1d.synthesis import noisy_pairs

PathLike = str | os.PathLike
FLOAT32_MAX = float(np.finfo(np.float32).max)
# A random token per interpreter, so temp names never collide with another process's.
_TOKEN = secrets.token_hex(4)


# ---------------------------------------------------------------------------
# Messages


def _show(path: PathLike) -> str:
    """The path as text for a one-line message (control characters escaped)."""
    text = os.fsdecode(path)
    return text if text.isprintable() else ascii(text)


def _os_reason(err: Exception) -> str:
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(reason.split())


# ---------------------------------------------------------------------------
# The guarded write path


def guard_output(path: PathLike, reads: Iterable[PathLike] = ()) -> Path:
    """Check that ``path`` may be written, and create its parent folder.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    reads : iterable of path
        Files the same command reads. ``path`` may not be one of them, nor a
        symlink or hard link to one (``os.path.samefile``), nor resolve to one.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        One line naming the path: a folder, an input, a parent that is a file,
        an unwritable folder, or any OS error while creating the parent.
    """
    path = Path(path)
    if "\0" in os.fsdecode(path):
        raise InputError(f"{_show(path)}: a file name cannot hold a NUL byte")
    for read in reads:
        if _same_file(path, Path(read)):
            raise InputError(f"{_show(path)}: refusing to overwrite {_show(read)}, which this command reads")
    try:
        if path.is_dir():
            raise InputError(f"{_show(path)}: is a folder, expected a file path")
        _make_parent(path)
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise InputError(f"{_show(path)}: cannot write ({_os_reason(err)})") from None
    return path


def _same_file(path: Path, read: Path) -> bool:
    try:
        if os.path.realpath(path) == os.path.realpath(read):
            return True
        return path.exists() and read.exists() and os.path.samefile(path, read)
    except (OSError, ValueError):
        return False


def _make_parent(path: Path) -> None:
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists() or p.is_symlink()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"{_show(path)}: cannot write, {_show(existing)} is not a folder")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{_show(path)}: cannot write, folder {_show(parent)} is not writable")


def _temp_path(path: Path) -> Path:
    # Keep the name short enough for NAME_MAX; the pid and token say whose temp it is.
    return path.parent / f".{path.name[:80]}.{_marker()}-{secrets.token_hex(4)}.tmp"


def _marker() -> str:
    return f"{os.getpid()}x{_TOKEN}"


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temp file next to ``path``; mode 0o666 minus the umask."""
    for _ in range(100):
        tmp = _temp_path(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "could not create a unique temp file")


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; best effort (not every platform opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write_fn: Callable, reads: Iterable[PathLike] = (), *, durable: bool = True) -> Path:
    """Write a file atomically: guarded, temp file in the same folder, fsync, ``os.replace``.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    write_fn : callable
        Called with the temp file opened for binary writing.
    reads : iterable of path
        Files the command reads; see :func:`guard_output`.
    durable : bool
        fsync the file and its folder (survives a power cut). False skips both,
        for bulk files that can be made again (datasets); still atomic.

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    InputError
        From :func:`guard_output`, or one line naming the path for any OSError
        (disk full, permission, ...). Only this call's own temp file is removed.
    """
    path = guard_output(path, reads)
    tmp = None
    try:
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        if durable:
            _fsync_folder(path.parent)
    except OSError as err:
        raise InputError(f"{_show(path)}: cannot write ({_os_reason(err)})") from None
    finally:
        if tmp is not None:
            _unlink_quietly(tmp)
    return path


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextlib.contextmanager
def open_npy_output(path: PathLike, shape: tuple[int, ...], dtype, reads: Iterable[PathLike] = ()) -> Iterator[np.ndarray]:
    """A writable ``.npy`` memory map that appears at ``path`` only on a clean exit.

    The data space is reserved up front (``posix_fallocate``), so a full disk is
    an :class:`InputError` here rather than a crash while writing pages.

    Parameters
    ----------
    path : str or os.PathLike
        The output ``.npy`` file.
    shape : tuple of int
        Shape of the array.
    dtype : dtype-like
        Its dtype.
    reads : iterable of path
        Files the command reads; see :func:`guard_output`.

    Yields
    ------
    np.ndarray
        A ``np.lib.format.open_memmap`` (a plain array when the shape holds no
        element), flushed, fsynced and renamed into place on a clean exit; the
        temp file is deleted when the block raises.
    """
    path = guard_output(path, reads)
    shape = tuple(int(d) for d in shape)
    tmp = None
    try:
        try:
            fd, tmp = _create_temp(path)
            os.close(fd)
            array = _open_memmap(tmp, shape, np.dtype(dtype))
        except OSError as err:
            raise InputError(f"{_show(path)}: cannot write ({_os_reason(err)})") from None
        yield array
        try:
            _finish_memmap(array, tmp)
            os.replace(tmp, path)
            tmp = None
            _fsync_folder(path.parent)
        except OSError as err:
            raise InputError(f"{_show(path)}: cannot write ({_os_reason(err)})") from None
    finally:
        if tmp is not None:
            _unlink_quietly(tmp)


def _open_memmap(tmp: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if int(np.prod(shape, dtype=object)) == 0:
        return np.zeros(shape, dtype)  # mmap cannot map zero bytes; written by _finish_memmap
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # no fallocate here: go on
                raise
        finally:
            os.close(fd)
    return array


def _finish_memmap(array: np.ndarray, tmp: Path) -> None:
    if isinstance(array, np.memmap):
        array.flush()  # the map stays open while the caller holds it; POSIX renames it fine
    else:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def release_pages(array: np.ndarray) -> None:
    """Let the kernel drop the resident pages of a memory-mapped array (flushed first).

    Streaming through a large ``.npy`` otherwise keeps every touched page in the
    process's RSS. A no-op for arrays that are not memory maps.
    """
    mm = getattr(array, "_mmap", None)
    if mm is None or mm.closed or getattr(array, "mode", None) == "c":
        return  # copy-on-write pages hold private changes: dropping them would lose data
    try:
        if isinstance(array, np.memmap) and array.mode in ("r+", "w+"):
            mm.flush()
        mm.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):
        pass


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


def check_finite(signals: np.ndarray, source: str) -> None:
    """Raise naming the first signal and index that holds NaN or inf."""
    check_chunk(signals, 0, source, np.float64)


def check_length(signals: np.ndarray, min_length: int, source: str) -> None:
    """Raise when signals are shorter than the model can take."""
    if signals.shape[-1] < min_length:
        raise InputError(f"{source}: signals have length {signals.shape[-1]}, need at least {min_length}")


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
            raise InputError(f"{_show(path)}: no such file")
        if not path.is_file():
            raise InputError(f"{_show(path)}: not a file")
        size = path.stat().st_size
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise InputError(f"{_show(path)}: cannot read ({_os_reason(err)})") from None
    if size == 0:
        raise InputError(f"{_show(path)}: file is empty")
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
    raise InputError(f"{_show(path)}: unsupported signal format {suffix!r} (use .txt or .npy)")


def read_txt(path: PathLike) -> np.ndarray:
    """Read one signal from a ``.txt`` file, shape (L,). See :func:`read_signals` for the layouts."""
    signals, _ = _read_txt_signals(Path(path))
    if signals.shape[0] != 1:
        raise InputError(f"{_show(path)}: expected one signal, the file holds {signals.shape[0]} rows")
    return signals[0]


def _read_txt_signals(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    _check_file(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{_show(path)}: not UTF-8 text (bad byte at offset {err.start})") from None
    except (OSError, MemoryError) as err:
        raise InputError(f"{_show(path)}: cannot read ({_os_reason(err) if isinstance(err, OSError) else 'too large'})") from None
    rows = [(n, _parse_row(line, n, path)) for n, line in enumerate(text.splitlines(), start=1) if _is_data(line)]
    if not rows:
        raise InputError(f"{_show(path)}: file holds no values")
    widths = {len(values) for _, values in rows}
    if widths == {1}:  # the seed's layout: one float per line is one signal
        signals = np.array([values[0] for _, values in rows], dtype=np.float64)[None, :]
        stored_shape = (signals.shape[1],)
    else:
        width = len(rows[0][1])
        for lineno, values in rows:
            if len(values) != width:
                raise InputError(f"{_show(path)}: line {lineno} has {_count(len(values))}, line {rows[0][0]} has {width}")
        signals = np.array([values for _, values in rows], dtype=np.float64)
        stored_shape = signals.shape
    check_chunk(signals, 0, _show(path), np.float64)
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
                raise InputError(f"{_show(path)}: {where} is not a number: {token[:40]!r}") from None
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
                raise InputError(f"{_show(path)}: {_not_npy_reason(head)}")
            shape, fortran, dtype = _read_header(f, path)
            offset = f.tell()
    except OSError as err:
        raise InputError(f"{_show(path)}: cannot read ({_os_reason(err)})") from None
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
            raise InputError(f"{_show(path)}: unsupported .npy format version {version[0]}.{version[1]}")
        return readers[version](f)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001  numpy's header parser raises many types (tokenize, ast, ...)
        detail = " ".join(str(err).split())[:80] or type(err).__name__
        raise InputError(f"{_show(path)}: malformed .npy header ({detail})") from None


def _check_header(path: Path, shape, dtype: np.dtype, data_bytes: int) -> None:
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise InputError(f"{_show(path)}: expected real numbers (float or integer), got dtype {dtype}")
    if len(shape) not in (1, 2) or min(shape) <= 0:
        raise InputError(f"{_show(path)}: expected a non-empty [L] or [N, L] array, got shape {tuple(shape)}")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > data_bytes:
        raise InputError(
            f"{_show(path)}: header declares shape {tuple(shape)} of {dtype} ({_human(declared)}), "
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
        raise InputError(f"{_show(path)}: not a readable .npy array ({' '.join(str(err).split())[:80]})") from None
    if array.shape != tuple(shape) or array.dtype != dtype:
        raise InputError(f"{_show(path)}: .npy header and data disagree")
    target = compute_dtype(dtype)
    if array.dtype != target:
        array = array.astype(target)  # ints, float16, or a foreign byte order
    if check_values:
        rows = np.atleast_2d(array)
        for start, _ in iter_chunks(rows, 65536, _show(path), target):
            pass
    return array


def write_txt(path: PathLike, signal: np.ndarray, reads: Iterable[PathLike] = (), *, durable: bool = True) -> Path:
    """Write one signal, one float per line (the seed's layout), atomically (see :func:`atomic_write`)."""
    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise InputError(f"{_show(path)}: write_txt writes one signal, got shape {signal.shape}")
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
    raise InputError(f"{_show(path)}: unsupported output format {suffix!r} (use .txt or .npy)")


# ---------------------------------------------------------------------------
# The seed's folder layout and test samples


def read_folder_dataset(folder: PathLike, require_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the seed's folder layout: ``data/N.txt`` paired by file name with ``labels/N.txt``.

    Every data file is checked against its label file and against the first
    data file before anything is stacked; the first file that differs is named.

    Returns
    -------
    noisy, clean : np.ndarray
        Each (N, L) float64; ``clean`` is None when the folder has no
        ``labels/`` and ``require_labels`` is False.
    """
    folder = Path(folder)
    data_dir, label_dir = folder / "data", folder / "labels"
    if not data_dir.is_dir():
        raise InputError(f"{_show(folder)}: no data/ folder")
    try:
        data_names = _txt_names(data_dir)
        label_names = _txt_names(label_dir) if label_dir.is_dir() else None
    except OSError as err:
        raise InputError(f"{_show(folder)}: cannot list files ({_os_reason(err)})") from None
    if not data_names:
        raise InputError(f"{_show(data_dir)}: no .txt files")
    has_labels = label_names is not None
    if require_labels and not has_labels:
        raise InputError(f"{_show(folder)}: no labels/ folder")
    if has_labels:
        _check_pairing(folder, data_names, label_names)
    noisy, clean = [], []
    for name in data_names:
        noisy.append(_read_txt_signals(data_dir / name)[0])
        _check_same_length(noisy[-1], noisy[0], data_dir / name, data_dir / data_names[0])
        if has_labels:
            clean.append(_read_txt_signals(label_dir / name)[0])
            _check_same_shape(clean[-1], noisy[-1], label_dir / name, data_dir / name)
    return np.concatenate(noisy), (np.concatenate(clean) if has_labels else None)


def _check_pairing(folder: Path, data_names: list[str], label_names: list[str]) -> None:
    if data_names != label_names:
        only_data = sorted(set(data_names) - set(label_names))[:3]
        only_labels = sorted(set(label_names) - set(data_names))[:3]
        raise InputError(
            f"{_show(folder)}: data/ and labels/ do not pair up "
            f"(only in data/: {only_data or 'none'}; only in labels/: {only_labels or 'none'})"
        )


def _check_same_length(signals: np.ndarray, reference: np.ndarray, path: Path, reference_path: Path) -> None:
    if signals.shape[1] != reference.shape[1]:
        raise InputError(
            f"{_show(path)}: signals have length {signals.shape[1]}, but {_show(reference_path)} has {reference.shape[1]}"
        )


def _check_same_shape(signals: np.ndarray, reference: np.ndarray, path: Path, reference_path: Path) -> None:
    _check_same_length(signals, reference, path, reference_path)
    if signals.shape[0] != reference.shape[0]:
        raise InputError(f"{_show(path)}: holds {signals.shape[0]} signals, but {_show(reference_path)} holds {reference.shape[0]}")


def write_folder_dataset(folder: PathLike, noisy: np.ndarray, clean: np.ndarray | None) -> None:
    """Write pairs in the seed's folder layout, ``data/i.txt`` and ``labels/i.txt``.

    Each file is atomic but not fsynced: a dataset is made again more cheaply
    than thousands of fsyncs cost (about 7 ms each here).
    """
    folder = Path(folder)
    for i, signal in enumerate(noisy):
        write_txt(folder / "data" / f"{i}.txt", signal, durable=False)
    if clean is not None:
        for i, signal in enumerate(clean):
            write_txt(folder / "labels" / f"{i}.txt", signal, durable=False)


TEST_SAMPLE_SEEDS = tuple(range(1000, 1006))


def write_test_samples(folder: PathLike, sigma: float = 3.0) -> list[Path]:
    """Write ``TestK_data.txt`` / ``TestK_label.txt`` (K = 0..5) from fixed seeds."""
    folder = Path(folder)
    written = []
    for k, seed in enumerate(TEST_SAMPLE_SEEDS):
        clean, noisy, _ = noisy_pairs(np.random.default_rng(seed), 1, sigma)
        for kind, signal in (("data", noisy[0]), ("label", clean[0])):
            written.append(_write_sample(folder / f"Test{k}_{kind}.txt", signal))
    return written


def _write_sample(path: Path, signal: np.ndarray) -> Path:
    # The committed samples use 9 significant digits; keep their bytes stable.
    text = "".join(f"{v:.9g}\n" for v in signal)
    return atomic_write(path, lambda f: f.write(text.encode()))


def read_test_samples(folder: PathLike) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Read every ``TestK_data.txt`` with its ``TestK_label.txt``: [(name, noisy, clean)]."""
    folder = Path(folder)
    pairs = []
    for data_path in sorted(folder.glob("Test*_data.txt")):
        name = data_path.name[: -len("_data.txt")]
        label_path = folder / f"{name}_label.txt"
        if not label_path.is_file():
            raise InputError(f"{_show(data_path)}: no matching {label_path.name}")
        pairs.append((name, read_txt(data_path), read_txt(label_path)))
    if not pairs:
        raise InputError(f"{_show(folder)}: no TestK_data.txt files")
    return pairs


def _txt_names(folder: Path) -> list[str]:
    names = [p.name for p in folder.iterdir() if p.suffix == ".txt"]
    # Numeric names sort as numbers (2.txt before 10.txt), others by text.
    return sorted(names, key=lambda n: (0, int(n[:-4]), n) if n[:-4].isdigit() else (1, 0, n))

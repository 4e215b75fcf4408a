"""The one guarded, atomic write path for every output file.

:func:`guard_output` refuses a folder, a path that is or links to a file the same
command reads, and a parent that is a file. :func:`atomic_write` and
:func:`open_npy_output` write a temp file in the same folder and rename it into place,
so a reader never sees half a file. Every failure is a
:class:`deepdenoise1d.errors.InputError` with one line naming the path.
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

from deepdenoise1d.errors import InputError, os_reason, show_path

PathLike = str | os.PathLike
# A random token per interpreter, so temp names never collide with another process's.
_TOKEN = secrets.token_hex(4)


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
        raise InputError(f"{show_path(path)}: a file name cannot hold a NUL byte")
    for read in reads:
        if _same_file(path, Path(read)):
            raise InputError(f"{show_path(path)}: refusing to overwrite {show_path(read)}, which this command reads")
    try:
        if path.is_dir():
            raise InputError(f"{show_path(path)}: is a folder, expected a file path")
        _make_parent(path)
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise InputError(f"{show_path(path)}: cannot write ({os_reason(err)})") from None
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
        raise InputError(f"{show_path(path)}: cannot write, {show_path(existing)} is not a folder")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{show_path(path)}: cannot write, folder {show_path(parent)} is not writable")


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
        raise InputError(f"{show_path(path)}: cannot write ({os_reason(err)})") from None
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
            raise InputError(f"{show_path(path)}: cannot write ({os_reason(err)})") from None
        yield array
        try:
            _finish_memmap(array, tmp)
            os.replace(tmp, path)
            tmp = None
            _fsync_folder(path.parent)
        except OSError as err:
            raise InputError(f"{show_path(path)}: cannot write ({os_reason(err)})") from None
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

"""The one guarded, atomic write path for every output file.

:func:`guard_output` decides whether a path may be written, by one policy:

1. a path that ends in a separator or names a folder is refused;
2. a path that is, links to or resolves to a file the same command reads is refused;
3. the repository's tracked folders (``ckpt/``, ``TestSamples/``, ``demo/``, and the installed
   weights ``icnn/ckpt``) are refused unless the command's explicit flag allows them
   (:func:`write_policy` ``tracked_ok``);
4. an existing checkpoint (zip or pickle) or HDF5 file, sniffed by content, is never
   replaced, except by a new file of the same kind over this project's own earlier output;
5. any other existing file is replaced when this project wrote it and nobody changed it
   since (a per-folder manifest, :data:`MANIFEST_NAME`), else only with ``--overwrite``
   (:func:`write_policy` ``overwrite``) and only by a file of the same kind (:func:`sniff_kind`).

:func:`atomic_write` and :func:`open_npy_output` write a temp file in the same folder, check
the policy again with the written kind, rename it into place and record it in the manifest,
so a reader never sees half a file. Every refusal is a
:class:`deepdenoise1d.errors.InputError` with one line naming the path.
"""
from __future__ import annotations

import codecs
import contextlib
import contextvars
import errno
import json
import mmap
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from filelock import FileLock, Timeout

from deepdenoise1d.errors import InputError, os_reason, show_path

PathLike = str | os.PathLike
# A random token per interpreter, so temp names never collide with another process's.
_TOKEN = secrets.token_hex(4)

MANIFEST_NAME = ".deepdenoise1d-outputs.json"  # per folder: the files this project wrote there
MANIFEST_LOCK = ".deepdenoise1d-outputs.lock"
BOOKKEEPING = (MANIFEST_NAME, MANIFEST_LOCK)
LOCK_TIMEOUT = 5.0  # seconds; a manifest update takes milliseconds
TRACKED = ("ckpt", "TestSamples", "demo")  # the repository's tracked data folders, beside pyproject.toml
# Kinds never replaced by another kind, nor by --overwrite: losing one loses a trained model.
PROTECTED = {"checkpoint": "is a checkpoint", "hdf5": "is an HDF5 weights file"}
_SNIFF_BYTES = 4096
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class WritePolicy:
    """What the running command's explicit flags allow: ``--overwrite``, and writing into tracked folders."""

    overwrite: bool = False
    tracked_ok: bool = False


_POLICY: contextvars.ContextVar[WritePolicy] = contextvars.ContextVar("write_policy", default=WritePolicy())


@contextlib.contextmanager
def write_policy(overwrite: bool = False, tracked_ok: bool = False) -> Iterator[WritePolicy]:
    """Every write inside the block follows this policy; set it only from a command-line flag.

    Parameters
    ----------
    overwrite : bool
        ``--overwrite``: an existing file this project did not write may be replaced by
        one of the same kind (never a checkpoint or HDF5 file).
    tracked_ok : bool
        The repository's tracked folders may be written (``demo.py --refresh``,
        ``make_test_samples.py --allow-tracked``).
    """
    token = _POLICY.set(WritePolicy(bool(overwrite), bool(tracked_ok)))
    try:
        yield _POLICY.get()
    finally:
        _POLICY.reset(token)


def _policy(overwrite: bool | None, tracked_ok: bool | None) -> WritePolicy:
    base = _POLICY.get()
    return WritePolicy(base.overwrite if overwrite is None else bool(overwrite),
                       base.tracked_ok if tracked_ok is None else bool(tracked_ok))


def output_path_text(text: str) -> Path:
    """A command-line output path as typed: refused when it ends in a separator (``foo.npy/``).

    ``Path`` drops a trailing separator, so the check runs on the text before it becomes one.
    """
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    if text.endswith(seps) or os.path.basename(text) in ("", ".", ".."):
        raise InputError(f"{show_path(text)}: names a folder, expected a file path")
    return Path(text)


def guard_output(path: PathLike, reads: Iterable[PathLike] = (), *, kind: str | None = None,
                 overwrite: bool | None = None, tracked_ok: bool | None = None,
                 replace_weights: bool = False, make_parent: bool = True) -> Path:
    """Check that ``path`` may be written (the policy of this module), and create its parent folder.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    reads : iterable of path
        Files the same command reads. ``path`` may not be one of them, nor a
        symlink or hard link to one (``os.path.samefile``), nor resolve to one.
    kind : str or None
        What will be written (a :func:`sniff_kind` name); None when not known yet
        (:func:`atomic_write` checks again with the written bytes).
    overwrite, tracked_ok : bool or None
        Override the :func:`write_policy` in force; None keeps it.
    replace_weights : bool
        With ``overwrite``: the caller has checked that an existing HDF5 file is this
        project's weights format (pth2h5.py), so a new conversion may replace it.
    make_parent : bool
        Create the missing parent folders; False only checks them (a check before
        work that may still fail, so that a failure leaves no folder behind).

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        One line naming the path: a folder, an input, a tracked folder, a file the
        policy keeps, a parent that is a file, an unwritable folder, or any OS error
        while creating the parent.
    """
    policy = _policy(overwrite, tracked_ok)
    if isinstance(path, str):
        path = output_path_text(path)
    path = Path(path)
    if "\0" in os.fsdecode(path):
        raise InputError(f"{show_path(path)}: a file name cannot hold a NUL byte")
    for read in reads:
        if _same_file(path, Path(read)):
            raise InputError(f"{show_path(path)}: refusing to overwrite {show_path(read)}, which this command reads")
    if path.name in BOOKKEEPING:
        raise InputError(f"{show_path(path)}: is this project's record of its outputs; pick another name")
    try:
        if path.is_dir():
            raise InputError(f"{show_path(path)}: is a folder, expected a file path")
        _check_tracked(path, policy)
        _make_parent(path, make_parent)
        if path.exists():
            check_replace(path, kind, policy, replace_weights)
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise InputError(f"{show_path(path)}: cannot write ({os_reason(err)})") from None
    return path


# --- rule 3: the repository's tracked folders -------------------------------------------------------


def tracked_folders() -> tuple[Path, ...]:
    """The folders no command writes without an explicit flag, found by path (never by import).

    The repository's ``ckpt/``, ``TestSamples/`` and ``demo/`` (beside the ``pyproject.toml``
    above this package), and the installed weights folder ``icnn/ckpt`` beside this package.
    """
    here = Path(__file__).resolve().parent
    folders = [here.parent / "icnn" / "ckpt"]
    if (here.parent / "pyproject.toml").is_file():
        folders += [here.parent / name for name in TRACKED]
    return tuple(folders)


def tracked_folder_of(path: PathLike) -> Path | None:
    """The tracked folder that ``path`` (resolved through links) lies in, or None."""
    real = Path(os.path.realpath(path))
    for folder in tracked_folders():
        real_folder = Path(os.path.realpath(folder))
        if real == real_folder or real_folder in real.parents:
            return folder
    return None


def _check_tracked(path: Path, policy: WritePolicy) -> None:
    folder = tracked_folder_of(path)
    if folder is not None and not policy.tracked_ok:
        raise InputError(f"{show_path(path)}: inside {show_path(folder)}, a folder of the repository's tracked "
                         "files that no command writes; write elsewhere (e.g. runs/)")


# --- rules 4 and 5: what an existing file is, and who wrote it --------------------------------------


def sniff_kind(path: PathLike) -> str:
    """What a file holds, from its first bytes (never its suffix).

    Returns
    -------
    str
        ``checkpoint`` (a zip that is not an ``.npz``, or a pickle), ``hdf5``, ``npz``,
        ``npy``, ``png``, ``pdf``, ``json``, ``text``, ``binary`` or ``empty``.

    Raises
    ------
    NotRegularFile
        The path is not a regular file (a device, FIFO or socket).
    OSError
        The file cannot be read.
    """
    # Opened without blocking and checked on the open descriptor: a FIFO would hang a plain open, and a
    # path swapped for a device between a check and the open is caught all the same.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(path)
        with os.fdopen(fd, "rb", closefd=False) as f:
            head = f.read(_SNIFF_BYTES)
    finally:
        os.close(fd)
    return _kind_of(head)


class NotRegularFile(OSError):
    """An output path that is a device, FIFO or socket: never opened to sniff, never replaced."""


def _kind_of(head: bytes) -> str:
    if not head:
        return "empty"
    if head.startswith(b"PK"):  # any zip: torch.save's format, unless every sign says .npz
        name_length = int.from_bytes(head[26:28], "little")
        first = head[30 : 30 + name_length]
        return "npz" if head.startswith(b"PK\x03\x04") and first.endswith(b".npy") else "checkpoint"
    if head[:1] == b"\x80":  # the pickle PROTO opcode: a legacy torch.save
        return "checkpoint"
    if any(head[offset : offset + 8] == _HDF5_MAGIC for offset in (0, 512, 1024, 2048)):
        return "hdf5"  # the superblock may follow a user block of 512 · 2^k bytes
    for magic, kind in ((b"\x93NUMPY", "npy"), (b"\x89PNG\r\n\x1a\n", "png"), (b"%PDF-", "pdf")):
        if head.startswith(magic):
            return kind
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        return "binary"
    if "\0" in text:
        return "binary"
    return "json" if text.lstrip()[:1] in ("{", "[") else "text"


def _written_kind(kind: str) -> str:
    return "text" if kind == "empty" else kind  # an empty output is replaced like a text one


def check_replace(path: Path, kind: str | None, policy: WritePolicy | None = None,
                  replace_weights: bool = False) -> None:
    """Refuse to replace the existing file ``path`` unless the policy allows it (rules 4 and 5).

    Parameters
    ----------
    path : Path
        An existing file (a link is judged by what it points to).
    kind : str or None
        The kind about to be written; None skips the kind checks (checked again at commit).
    policy : WritePolicy or None
        None: the :func:`write_policy` in force.
    replace_weights : bool
        See :func:`guard_output`.
    """
    policy = policy or _POLICY.get()
    try:
        existing = sniff_kind(path)
    except NotRegularFile:
        raise InputError(f"{show_path(path)}: is a device, FIFO or socket, not a regular file; refusing to "
                         "write to it (name a file)") from None
    except OSError as err:
        raise InputError(f"{show_path(path)}: exists and cannot be read to check what it is "
                         f"({os_reason(err)}); refusing to replace it") from None
    own = is_recorded(path)
    if existing in PROTECTED:
        same = kind is None or _written_kind(kind) == existing
        if same and (own or (policy.overwrite and replace_weights)):
            return
        raise InputError(f"{show_path(path)}: {PROTECTED[existing]}; refusing to replace it (write elsewhere)")
    if own:
        return
    if not policy.overwrite:
        raise InputError(f"{show_path(path)}: exists and was not written by this project; "
                         "pass --overwrite to replace it")
    if kind is not None and existing != "empty" and _written_kind(kind) != existing:
        raise InputError(f"{show_path(path)}: holds {existing}, not {_written_kind(kind)}; "
                         "--overwrite replaces only a file of the kind written")


# --- the manifest: files this project wrote, per folder ---------------------------------------------


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _read_manifest(folder: Path) -> dict[str, list[int]]:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_bytes())
        files = data["files"]
        return {str(k): [int(x) for x in v] for k, v in files.items() if isinstance(v, list) and len(v) == 3}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # missing or damaged: nothing is listed, so nothing is replaced without --overwrite


def is_recorded(path: PathLike) -> bool:
    """True when ``path`` is a regular file this project wrote and nobody changed since (the manifest)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not os.path.isfile(path) or os.path.islink(path):
        return False
    return _read_manifest(path.parent).get(path.name) == _stamp(st)


@contextlib.contextmanager
def _manifest_lock(folder: Path) -> Iterator[None]:
    lock = FileLock(str(folder / MANIFEST_LOCK), timeout=LOCK_TIMEOUT)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(f"{show_path(folder)}: another process holds {MANIFEST_LOCK} for "
                         f"{LOCK_TIMEOUT:g} s; try again") from None
    try:
        yield
    finally:
        lock.release()


def _write_manifest(folder: Path, files: dict[str, list[int]], durable: bool) -> None:
    """Replace the manifest atomically, keeping only entries that still match their file."""
    kept = {}
    for name, stamp in sorted(files.items()):
        try:
            if _stamp(os.lstat(folder / name)) == stamp:
                kept[name] = stamp
        except OSError:
            pass
    data = json.dumps({"format": "deepdenoise1d-outputs", "files": kept}, indent=1).encode()
    for stale in folder.glob(f".{MANIFEST_NAME}.*.tmp"):  # a killed update's; only the lock holder writes these
        _unlink_quietly(stale)
    fd, tmp = _create_temp(folder / MANIFEST_NAME)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, folder / MANIFEST_NAME)
        tmp = None
    finally:
        if tmp is not None:
            _unlink_quietly(tmp)


def record_outputs(paths: Iterable[PathLike], durable: bool = True) -> None:
    """Record existing regular files as this project's outputs (a run that ``--resume`` adopts).

    Raises
    ------
    InputError
        The manifest's lock is held by another process too long, or the manifest cannot be written.
    """
    by_folder: dict[Path, list[Path]] = {}
    for path in map(Path, paths):
        if path.is_file() and not path.is_symlink():
            by_folder.setdefault(path.parent, []).append(path)
    for folder, members in by_folder.items():
        with _manifest_lock(folder):
            files = _read_manifest(folder)
            files.update({p.name: _stamp(os.lstat(p)) for p in members})
            try:
                _write_manifest(folder, files, durable)
            except OSError as err:
                raise InputError(f"{show_path(folder / MANIFEST_NAME)}: cannot write ({os_reason(err)})") from None


def _commit(tmp: Path, path: Path, policy: WritePolicy, replace_weights: bool, record: bool, durable: bool) -> None:
    """Check the policy with the written kind, rename ``tmp`` to ``path``, record it (under the folder's lock)."""
    kind = sniff_kind(tmp)
    if not record:  # bulk files (durable=False): checked, never listed
        if path.exists():
            check_replace(path, kind, policy, replace_weights)
        os.replace(tmp, path)
        return
    with _manifest_lock(path.parent):
        if path.exists():
            check_replace(path, kind, policy, replace_weights)
        os.replace(tmp, path)
        files = _read_manifest(path.parent)
        files[path.name] = _stamp(os.lstat(path))
        _write_manifest(path.parent, files, durable)


def _same_file(path: Path, read: Path) -> bool:
    try:
        if os.path.realpath(path) == os.path.realpath(read):
            return True
        return path.exists() and read.exists() and os.path.samefile(path, read)
    except (OSError, ValueError):
        return False


def _make_parent(path: Path, make: bool = True) -> None:
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists() or p.is_symlink()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"{show_path(path)}: cannot write, {show_path(existing)} is not a folder")
    if make:
        parent.mkdir(parents=True, exist_ok=True)
    folder = parent if make or existing is None else existing
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{show_path(path)}: cannot write, folder {show_path(folder)} is not writable")


def _temp_path(path: Path) -> Path:
    # Keep the name short enough for NAME_MAX; the pid and token say whose temp it is.
    return path.parent / f".{path.name[:80]}.{_marker()}-{secrets.token_hex(4)}.tmp"


def _marker() -> str:
    return f"{os.getpid()}x{_TOKEN}"


def _remove_stale_temps(path: Path) -> None:
    """Remove the temp files of ``path`` that a killed writer left: ours by name, our user's, regular, and
    named by a process that no longer runs. A live process's temp is never touched (its pid may be reused:
    then the temp stays, which is only a leak)."""
    pattern = re.compile(rf"\.{re.escape(path.name[:80])}\.(\d+)x[0-9a-f]+-[0-9a-f]{{8}}\.tmp")
    try:
        candidates = [entry for entry in os.scandir(path.parent) if pattern.fullmatch(entry.name)]
    except OSError:
        return
    for entry in candidates:
        try:
            info = entry.stat(follow_symlinks=False)
            ours = stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
            if ours and not _process_runs(int(pattern.fullmatch(entry.name)[1])):
                os.unlink(entry.path)
        except OSError:
            continue  # gone already, or not ours to remove


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or not a pid we can ask about: leave its file
    return True


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temp file next to ``path`` (first removing the ones killed writers left); mode 0o666
    minus the umask."""
    _remove_stale_temps(path)
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


def atomic_write(path: PathLike, write_fn: Callable, reads: Iterable[PathLike] = (), *, durable: bool = True,
                 replace_weights: bool = False) -> Path:
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
        for bulk files that can be made again (datasets); still atomic and guarded,
        but not recorded in the folder's manifest (a re-run needs ``--overwrite``).
    replace_weights : bool
        See :func:`guard_output`.

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    InputError
        From :func:`guard_output` (checked before the write, and again with the
        written kind before the rename), or one line naming the path for any OSError
        (disk full, permission, ...). Only this call's own temp file is removed.
    """
    policy = _POLICY.get()
    path = guard_output(path, reads, replace_weights=replace_weights)
    tmp = None
    try:
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        _commit(tmp, path, policy, replace_weights, record=durable, durable=durable)
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
    policy = _POLICY.get()
    path = guard_output(path, reads, kind="npy")
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
            _commit(tmp, path, policy, False, record=True, durable=True)
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

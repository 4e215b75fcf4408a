"""One run per folder: an ``flock`` lock file that a second run is refused at once, in one line.

:func:`lock_folder` takes ``folder/name`` (a run folder's ``.train.lock``); :class:`FileLockHeld` is the lock
itself, also used for this project's own bookkeeping (:mod:`deepdenoise1d.safewrite`'s state folder).

- The lock is the kernel's ``flock`` on the lock file's open descriptor: the OS drops it when the process
  dies, even by ``kill -9``, so a stale lock file never blocks anybody.
- A lock file that another user made and this user cannot write is opened read-only (``flock`` needs no
  write access), so another user's lock file in a shared folder never blocks a run by itself, while the
  one-run-per-folder guarantee holds between users too. One that this user cannot even read is refused in
  one line naming its owner (whether a run of theirs holds it cannot be told).
- A held lock is refused in one line naming, where the system says (``/proc/locks``), the pid and user of
  the holder. Nothing here ever raises anything but :class:`~deepdenoise1d.errors.InputError` from
  :func:`lock_folder`.
- The lock file is opened without following a link and without blocking (a FIFO in its place cannot hang
  the open) and must be a regular file; after the ``flock``, the path must still name the locked file (a
  lock file removed and made again in between is locked afresh).
"""
from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

from deepdenoise1d.errors import InputError, os_reason, show_path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

_CONTENDED = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES}
_POLL = 0.02  # seconds between tries while waiting for a lock


class LockHeld(OSError):
    """Another process holds the lock (``flock`` refused, and the timeout ran out)."""


class LockUnreadable(PermissionError):
    """The lock file belongs to someone else and this user can neither write nor read it."""


class FileLockHeld:
    """An exclusive ``flock`` on ``path``: :meth:`acquire` takes it (waiting up to ``timeout`` s), :meth:`release` drops it.

    Parameters
    ----------
    path : str or os.PathLike
        The lock file; created (mode ``mode`` minus the umask) when missing.
    mode : int
        The new lock file's permissions.
    """

    def __init__(self, path: str | os.PathLike, mode: int = 0o644):
        self.lock_file = os.fspath(path)
        self.mode = mode
        self._fd: int | None = None

    @property
    def is_locked(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float = 0.0) -> "FileLockHeld":
        """Take the lock; raises :class:`LockHeld` when another process still holds it after ``timeout`` seconds,
        :class:`LockUnreadable` for another user's lock file this user cannot open, or another ``OSError``."""
        if self._fd is not None:
            return self
        if fcntl is None:  # pragma: no cover - not POSIX
            raise OSError(errno.ENOSYS, "file locks need fcntl.flock (a POSIX system)")
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in _CONTENDED:
                    raise
                if time.monotonic() >= deadline:
                    raise LockHeld(errno.EWOULDBLOCK, "held by another process", self.lock_file) from None
                time.sleep(_POLL)
                continue
            if self._still_named(fd):
                self._fd = fd
                return self
            os.close(fd)  # the file was removed or replaced while we waited: lock the one the path names now

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass  # closing drops it all the same
            os.close(fd)

    def __enter__(self) -> "FileLockHeld":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a lock object dropped without release: close its descriptor (that drops the lock)
        try:
            self.release()
        except Exception:
            pass

    def _open(self) -> int:
        flags = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | flags, self.mode)
        except PermissionError:
            # Another user's lock file: flock works on a read-only descriptor, so the lock is shared with them.
            try:
                fd = os.open(self.lock_file, os.O_RDONLY | flags)
            except PermissionError:
                if os.path.lexists(self.lock_file):
                    raise LockUnreadable(errno.EACCES, "another user's lock file, not readable by this user",
                                         self.lock_file) from None
                raise
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", self.lock_file)
        return fd

    def _still_named(self, fd: int) -> bool:
        try:
            now, held = os.lstat(self.lock_file), os.fstat(fd)
        except OSError:
            return False
        return held.st_nlink > 0 and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def holder_of(path: str | os.PathLike) -> str | None:
    """``pid N, user NAME``: who holds an ``flock`` on ``path`` now, from ``/proc/locks``; None when unknown."""
    try:
        info = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # "->": a waiter, not the holder
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) != wanted:
                continue
            pid = int(fields[4])
        except ValueError:
            continue
        return f"pid {pid}{_user_part(_uid_of_process(pid))}"
    return None


def _uid_of_process(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _user_part(uid: int | None) -> str:
    return "" if uid is None else f", user {user_name(uid)}"


def user_name(uid: int) -> str:
    """The login name of ``uid`` (``uid N`` when it has none)."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def lock_folder(folder: Path, name: str, holder: str) -> FileLockHeld:
    """Create ``folder`` if needed and take ``folder/name``; refuse when another run holds it.

    Parameters
    ----------
    folder : Path
        The run's folder.
    name : str
        The lock file's name inside it (hidden, e.g. ``.train.lock``).
    holder : str
        The program that holds such a lock, for the message (``train.py``).

    Returns
    -------
    FileLockHeld
        Held; the caller releases it (``release()``).

    Raises
    ------
    InputError
        One line: another run holds the folder (naming its pid and user where known); the lock file is
        another user's and unreadable here (naming its owner); or any OS error while creating the folder
        or taking the lock.
    """
    folder = Path(folder)
    path = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{show_path(folder)}: cannot lock the folder ({os_reason(err)})") from None
    lock = FileLockHeld(path)
    try:
        lock.acquire(timeout=0)
    except LockHeld:
        who = holder_of(path)
        raise InputError(f"{show_path(folder)}: another {holder} run holds this folder (lock {name}"
                         f"{'; ' + who if who else ''}); wait for it to end or pick another folder") from None
    except LockUnreadable:
        raise InputError(f"{show_path(folder)}: the lock file {name} belongs to {_owner(path)} and this user cannot "
                         f"open it, so whether a {holder} run of theirs holds this folder cannot be told; pick "
                         "another folder") from None
    except OSError as err:
        raise InputError(f"{show_path(folder)}: cannot lock the folder ({name}: {os_reason(err)})") from None
    return lock


def _owner(path: Path) -> str:
    try:
        info = os.lstat(path)
    except OSError:
        return "another user"
    return f"user {user_name(info.st_uid)}, mode {stat.S_IMODE(info.st_mode):04o}"

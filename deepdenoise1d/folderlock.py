"""One run per folder: a file lock that a second run is refused at once, in one line."""
from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from deepdenoise1d.errors import InputError


def lock_folder(folder: Path, name: str, holder: str) -> FileLock:
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
    FileLock
        Held; the caller releases it.
    """
    lock = FileLock(str(Path(folder) / name), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(f"{folder}: another {holder} run holds this folder (lock {name}); "
                         "wait for it to end or pick another folder") from None
    except OSError as err:
        raise InputError(f"{folder}: cannot lock the folder ({err.strerror or err})") from None
    return lock

"""A training run's folder: a new one by default, never clobbered, held by one run at a time.

``train.py`` writes into a run folder (default ``runs/train-YYYYmmdd-HHMMSS`` under
the current directory, never the tracked ``ckpt/``). Rules:

- a lock file (``.train.lock``, :func:`deepdenoise1d.folderlock.lock_folder`) is held for the whole run, so a
  second run on the same folder stops with one line; the OS drops the lock when
  a process dies, even by ``kill -9``, so a resume never finds a stale lock;
- a folder inside the repository's tracked folders (``ckpt/``, ``TestSamples/``, ``demo/``,
  :func:`deepdenoise1d.safewrite.tracked_folders`) is refused, whatever the flags;
- every folder opened for a new run gets a marker file (:data:`MARKER`); a folder that
  already holds a run is refused unless the run is resumed (``--resume``) or explicitly
  replaced (``--overwrite``, which says what it deletes, and only in a folder with the
  marker: one that a run of train.py made);
- a run that ends before writing any of :data:`RUN_FILES` (a failed setup) takes back what
  it added: the marker, a lock file that was not there, the folder if it made it;
- temp files are deleted only when they are this script's own: the atomic writer's
  ``.NAME.*.tmp`` for one of :data:`RUN_FILES`, found while holding the lock (nobody
  else may be writing them). Any other file is left alone.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

from Pytorch_V1.distributed import Workers, share_error
from deepdenoise1d.errors import InputError
from deepdenoise1d.folderlock import lock_folder
from deepdenoise1d.safewrite import record_outputs, sniff_kind, tracked_folder_of

RUN_FILES = ("ckpt_last.pth", "ckpt_best.pth", "train_log.csv", "train_curve.png")
RUN_KINDS = {"ckpt_last.pth": "checkpoint", "ckpt_best.pth": "checkpoint", "train_log.csv": "text",
             "train_curve.png": "png"}  # what each run file holds (deepdenoise1d.safewrite.sniff_kind)
STALE_FILES = ("ckpt_best.h5",)  # made from a run's ckpt_best.pth (pth2h5.py): stale once the run is replaced
LOCK_NAME = ".train.lock"
MARKER = ".train-run"
MARKER_TEXT = "a run folder made by Pytorch_V1/train.py; train.py --overwrite may replace the run in it\n"
RUNS_ROOT = Path("runs")


def default_run_dir(root: Path = RUNS_ROOT) -> Path:
    """A new, not yet existing folder ``root/train-YYYYmmdd-HHMMSS`` (``-2``, ``-3``... if taken)."""
    base = root / time.strftime("train-%Y%m%d-%H%M%S")
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


class RunDir:
    """The run folder, locked from :meth:`open` to :meth:`close` (or as a context manager).

    Parameters
    ----------
    path : Path
        The folder; created when missing.
    resume : bool
        Continue the run in it (``ckpt_last.pth`` must exist).
    overwrite : bool
        Replace the run in it (its :data:`RUN_FILES` and :data:`STALE_FILES` are deleted,
        and named, first); only in a folder with the :data:`MARKER`.
    """

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise InputError("--resume and --overwrite exclude each other")
        self.path, self.resume, self.overwrite = Path(path), resume, overwrite
        self.lock = None  # held from open to close
        self.created = False  # this run made the folder: remove it again if the run wrote nothing
        self.lock_was_there = True  # the lock file existed before this run: never removed
        self.wrote_marker = False

    def open(self) -> "RunDir":
        self._make_folder()
        self.lock_was_there = (self.path / LOCK_NAME).exists()
        self.lock = lock_folder(self.path, LOCK_NAME, "train.py")
        try:
            self._check_contents()
            self._remove_own_temps()
            self._mark()
        except BaseException:
            self._undo_setup()  # refused: leave the folder as it was
            self.close()
            raise
        return self

    def close(self) -> None:
        """Release the lock; a run that wrote none of :data:`RUN_FILES` (it failed at setup) takes
        back its marker, a lock file that was not there before, and the folder if it made it."""
        try:
            if self.lock is not None and not any((self.path / name).exists() for name in RUN_FILES):
                self._undo_setup()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def __enter__(self) -> "RunDir":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def file(self, name: str) -> Path:
        return self.path / name

    def _undo_setup(self) -> None:
        try:
            if self.wrote_marker:
                (self.path / MARKER).unlink(missing_ok=True)
            if not self.lock_was_there:
                (self.path / LOCK_NAME).unlink(missing_ok=True)  # still held: no other run has it
            if self.created:
                self.path.rmdir()
        except OSError:
            pass  # best effort: a folder that is not empty stays

    def _mark(self) -> None:
        """Mark a new run's folder as train.py's; a resumed run adopts its files that hold what their
        names say as this project's outputs (a run from before the manifest, a log a kill cut short)."""
        if self.resume:
            record_outputs(self.path / name for name, kind in RUN_KINDS.items()
                           if (self.path / name).is_file() and sniff_kind(self.path / name) == kind)
            return
        if not (self.path / MARKER).exists():
            try:
                with open(self.path / MARKER, "x") as f:
                    f.write(MARKER_TEXT)
            except OSError as err:
                raise InputError(f"{self.path}: cannot write the run marker {MARKER} ({err.strerror or err})") from None
            self.wrote_marker = True

    def _make_folder(self) -> None:
        tracked = tracked_folder_of(self.path)
        if tracked is not None:
            raise InputError(f"{self.path}: inside {tracked}, a folder of the repository's tracked files; "
                             "train.py never writes there (pick another --run-dir, e.g. under runs/)")
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: is a file, expected a run folder (--run-dir)")
        if self.resume and not self.path.is_dir():
            raise InputError(f"{self.path / 'ckpt_last.pth'}: no such checkpoint to resume (no run folder)")
        try:
            self.created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"{self.path}: cannot create the run folder ({err.strerror or err})") from None

    def _check_contents(self) -> None:
        present = [name for name in RUN_FILES + STALE_FILES if (self.path / name).exists()]
        marked = (self.path / MARKER).is_file()
        if self.resume:
            if not (self.path / "ckpt_last.pth").is_file():
                raise InputError(f"{self.path / 'ckpt_last.pth'}: no such checkpoint to resume")
            return
        if self.overwrite and not marked and not self.created:
            raise InputError(f"{self.path}: not a run folder made by train.py (no {MARKER} marker); --overwrite "
                             "replaces only such a run: pick another --run-dir")
        if present and not self.overwrite:
            replace = "--overwrite to replace it, " if marked else ""
            raise InputError(f"{self.path}: holds another run ({', '.join(present)}); use --resume to continue it, "
                             f"{replace}or another --run-dir")
        if present:
            print(f"train.py: --overwrite: deleting the previous run in {self.path}: {', '.join(present)}",
                  file=sys.stderr)
            for name in present:
                (self.path / name).unlink()

    def _remove_own_temps(self) -> list[Path]:
        """Leftovers of an interrupted atomic write of one of our files (we hold the lock)."""
        stale = [p for name in RUN_FILES for p in self.path.glob(f".{name}.*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale


class NoRun:
    """The run folder as seen by workers other than the main one: they write nothing."""

    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name


def check_reads_outside(run_dir: Path, reads: dict[str, str | None]) -> None:
    """Refuse, before anything is deleted, an --overwrite of a folder that holds a file the run reads
    (``reads``: flag -> path, e.g. ``{"--init": "R/ckpt_best.pth"}``): clearing the run would destroy it."""
    folder = Path(run_dir).resolve()
    for flag, path in reads.items():
        if path is not None and folder in (Path(path).resolve(), *Path(path).resolve().parents):
            raise InputError(f"--overwrite would delete {path} ({flag}), which lies in the run folder {run_dir}; "
                             f"copy it out first or choose another --run-dir")


@contextmanager
def open_run(run_dir: Path, resume: bool, overwrite: bool, workers: Workers):
    """The locked run folder on the main worker; every worker stops if it cannot be opened."""
    run = RunDir(run_dir, resume, overwrite) if workers.is_main else NoRun(run_dir)
    error = None
    if workers.is_main:
        try:
            run.open()
        except InputError as err:
            error = err
    error = share_error(error, workers)
    if error is not None:
        raise error
    try:
        yield run
    finally:
        if workers.is_main:
            run.close()

"""The one guarded, atomic write path for every output file.

:func:`guard_output` decides whether a path may be written, by one policy:

1. a path that ends in a separator or names a folder is refused, and so is one inside this project's
   state folder (:func:`state_folder`) or named like the old per-folder records (:data:`BOOKKEEPING`);
2. a path that is, links to or resolves to a file the same command reads is refused;
3. the repository's tracked folders (``ckpt/``, ``TestSamples/``, ``demo/``, ``docs/``, and the installed
   weights ``icnn/ckpt``), and in a git checkout every file that git tracks, are refused unless the
   command's explicit flag allows them (:func:`write_policy` ``tracked_ok``), ``--overwrite`` or not;
4. an existing device, FIFO or socket is refused, never opened (:func:`sniff_kind`), and so is an
   existing file that cannot be read to tell what it holds;
5. an existing file is "ours" only when this user's record (:func:`state_folder`) lists this exact
   path (resolved) as written by the same command (:func:`command_name`) with the same kind as the
   new file, and its content still has the recorded sha256; who can stat a file can no longer forge it;
6. an existing checkpoint (zip or pickle) or HDF5 file, sniffed by content, is replaced only when
   ours, or (``--overwrite`` with ``replace_weights``) by the same kind;
7. any other existing file is replaced when ours, else only with ``--overwrite``
   (:func:`write_policy` ``overwrite``); the kind check always applies: a file is replaced only by
   one of its own kind (an empty file by any), whoever wrote it.

The record is one JSON file per user (``outputs.json`` in :func:`state_folder`, locked there by
``outputs.lock``), never a file in the user's folders: ``$DEEPDENOISE1D_STATE_DIR``, else
``$XDG_STATE_HOME/deepdenoise1d``, else ``~/.local/state/deepdenoise1d``, made mode 0700; one that is
not owned by this user or that others can write is ignored with one warning line (then nothing is
ours). It maps each resolved output path to its sha256, size, writing command and kind; it is read
with a size cap (:data:`MANIFEST_CAP`) and a strict schema: anything else is ignored with one warning
line, never a traceback. Who wrote an existing file is judged under the record's lock (the record read
and the file hashed together), so a writer of the same output that renames and records its file in
between never makes another's verdict compare the old record with the new file. The old per-folder
records (``.deepdenoise1d-outputs.json``) are ignored and never deleted.

:func:`atomic_write` and :func:`open_npy_output` write a temp file in the same folder (a killed
writer's temps are removed by the next write of that output; the temp's name keeps at most
:data:`TEMP_STEM_BYTES` bytes of the output's, so every legal output name has a legal temp name),
check the policy again with the written kind (under the record's lock), rename it into place and
record it. Every refusal is a :class:`deepdenoise1d.errors.InputError` with one line naming the path,
raised before the rename; once the data is in place, a failure of the bookkeeping (the record
unwritable, a full disk) is one warning line: the output exists and is complete.
"""
from __future__ import annotations

import codecs
import contextlib
import contextvars
import errno
import hashlib
import json
import mmap
import os
import re
import secrets
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from deepdenoise1d.errors import InputError, os_reason, show_path
from deepdenoise1d.folderlock import FileLockHeld, LockHeld

PathLike = str | os.PathLike
# A random token per interpreter, so temp names never collide with another process's.
_TOKEN = secrets.token_hex(4)

# The old per-folder record and its lock (before the state folder): ignored, never deleted, never an output.
MANIFEST_NAME = ".deepdenoise1d-outputs.json"
MANIFEST_LOCK = ".deepdenoise1d-outputs.lock"
BOOKKEEPING = (MANIFEST_NAME, MANIFEST_LOCK)
STATE_ENV = "DEEPDENOISE1D_STATE_DIR"  # the state folder, when set (tests point it at a temp folder)
STATE_MANIFEST = "outputs.json"  # in the state folder: resolved path -> sha256, size, command, kind
STATE_LOCK = "outputs.lock"
MANIFEST_FORMAT = "deepdenoise1d-outputs/2"
MANIFEST_CAP = 16 * 2**20  # bytes: a larger record is not read (one warning), nor written (oldest entries go)
PRUNE_AT = 1000  # entries: past this, records of files that are gone or changed size are dropped on save
LOCK_TIMEOUT = 30.0  # seconds; an update takes milliseconds (plus hashing a replaced output)
TRACKED = ("ckpt", "TestSamples", "demo", "docs")  # the repository's tracked data folders, beside pyproject.toml
TEMP_STEM_BYTES = 80  # bytes of the output's name in its temp's name: .STEM.PIDxTOKEN-HEX.tmp fits NAME_MAX (255)
# Kinds never replaced by another kind, nor by --overwrite: losing one loses a trained model.
PROTECTED = {"checkpoint": "is a checkpoint", "hdf5": "is an HDF5 weights file"}
KINDS = ("checkpoint", "hdf5", "npz", "npy", "png", "pdf", "json", "text", "binary", "empty")  # sniff_kind's names
_SNIFF_BYTES = 4096
_HASH_CHUNK = 1 << 20
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WritePolicy:
    """What the running command's explicit flags allow (``--overwrite``, writing into tracked folders), and
    the command's name that its outputs are recorded under (None: :func:`command_name`'s default)."""

    overwrite: bool = False
    tracked_ok: bool = False
    command: str | None = None


_POLICY: contextvars.ContextVar[WritePolicy] = contextvars.ContextVar("write_policy", default=WritePolicy())


@contextlib.contextmanager
def write_policy(overwrite: bool = False, tracked_ok: bool = False, command: str | None = None) -> Iterator[WritePolicy]:
    """Every write inside the block follows this policy; set it only from a command-line flag.

    Parameters
    ----------
    overwrite : bool
        ``--overwrite``: an existing file that is not this command's own output may be replaced by
        one of the same kind (never a checkpoint or HDF5 file).
    tracked_ok : bool
        The repository's tracked folders may be written (``demo.py --refresh``,
        ``make_test_samples.py --allow-tracked``).
    command : str or None
        The name the outputs are recorded under and that owns them (:func:`command_name`); None keeps
        the enclosing block's, else the running script's file name.
    """
    name = _clean_command(command) if command else _POLICY.get().command
    token = _POLICY.set(WritePolicy(bool(overwrite), bool(tracked_ok), name))
    try:
        yield _POLICY.get()
    finally:
        _POLICY.reset(token)


def _policy(overwrite: bool | None, tracked_ok: bool | None) -> WritePolicy:
    base = _POLICY.get()
    return WritePolicy(base.overwrite if overwrite is None else bool(overwrite),
                       base.tracked_ok if tracked_ok is None else bool(tracked_ok), base.command)


_UNIFIED = ("deepdenoise1d", "deepdenoise1d_command.py")  # the one command whose subcommands run the scripts


def command_name(policy: WritePolicy | None = None) -> str:
    """The name of the running command, that its outputs are recorded under: the :func:`write_policy`'s
    ``command``, else the file name of ``sys.argv[0]`` (``train.py``, ``Numpy_test.py``); under the one
    ``deepdenoise1d`` command, the script its subcommand runs (``deepdenoise1d train``: ``train.py``), so
    that its subcommands are told apart and each is the same command as its script."""
    name = (policy or _POLICY.get()).command
    if name:
        return name
    argv = sys.argv if isinstance(getattr(sys, "argv", None), list) else []
    argv0 = argv[0] if argv and isinstance(argv[0], str) else ""
    name = os.path.basename(argv0.rstrip("/" + (os.altsep or ""))) or "python"
    if name in _UNIFIED and len(argv) > 1 and isinstance(argv[1], str):
        front = sys.modules.get("deepdenoise1d_command") or sys.modules.get("__main__")
        table = getattr(front, "SUBCOMMANDS", None)
        entry = table.get(argv[1]) if isinstance(table, dict) else None
        module = entry[0] if isinstance(entry, tuple) and entry and isinstance(entry[0], str) else None
        name = f"{module.rsplit('.', 1)[-1]}.py" if module else f"{name} {argv[1]}"
    return _clean_command(name)


def _clean_command(name: str) -> str:
    name = str(name)
    return (name if name.isprintable() else ascii(name))[:255] or "python"


# --- warnings: one line each, once per process ------------------------------------------------------

_WARNED: set[str] = set()


def warn(text: str) -> None:
    """One ``warning:`` line on stderr, printed once per process (a run writing many files repeats nothing)."""
    line = " ".join(str(text).split())
    if line not in _WARNED:
        _WARNED.add(line)
        print(f"warning: {line}", file=sys.stderr)


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
        One line naming the path: a folder, an input, a tracked folder, the state folder,
        a file the policy keeps, a parent that is a file, an unwritable folder, or any OS
        error while creating the parent.
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
        raise InputError(f"{show_path(path)}: is named like this project's old record of its outputs; pick another name")
    try:
        _check_state_folder(path)
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

    The repository's ``ckpt/``, ``TestSamples/``, ``demo/`` and ``docs/`` (beside the ``pyproject.toml``
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
    if policy.tracked_ok:
        return
    folder = tracked_folder_of(path)
    if folder is not None:
        raise InputError(f"{show_path(path)}: inside {show_path(folder)}, a folder of the repository's tracked "
                         "files that no command writes; write elsewhere (e.g. runs/)")
    if is_tracked_by_git(path):
        raise InputError(f"{show_path(path)}: a file of the repository that git tracks; no command replaces it, "
                         "--overwrite or not; write elsewhere (e.g. runs/)")


def checkout_root() -> Path | None:
    """The source checkout this package runs from (the folder of ``pyproject.toml`` above it), or None."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else None


_GIT_TRACKED: dict[str, frozenset[str]] = {}


def git_tracked_files() -> frozenset[str]:
    """The resolved paths of the files that the checkout's git index lists (``git ls-files``), read once per
    process; empty when there is no checkout, no ``.git`` in it, no ``git``, or git refuses (another user's
    checkout). The ``GIT_*`` variables of the environment are dropped, so they cannot point it elsewhere."""
    root = checkout_root()
    if root is None or not (root / ".git").exists():
        return frozenset()
    key = str(root)
    if key not in _GIT_TRACKED:
        env = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
        try:
            done = subprocess.run(["git", "-C", key, "ls-files", "-z"], capture_output=True, timeout=30, env=env,
                                  stdin=subprocess.DEVNULL, check=False)
            names = done.stdout.split(b"\0") if done.returncode == 0 else []
        except (OSError, subprocess.SubprocessError, ValueError):
            names = []
        real_root = os.path.realpath(root)
        _GIT_TRACKED[key] = frozenset(os.path.join(real_root, os.fsdecode(name)) for name in names if name)
    return _GIT_TRACKED[key]


def is_tracked_by_git(path: PathLike) -> bool:
    """True when ``path`` (its folders' links resolved; a link at the end also by its target) is a file of the
    checkout that git tracks (:func:`git_tracked_files`)."""
    root = checkout_root()
    if root is None:
        return False
    real_root = os.path.realpath(root)
    candidates = {_record_key(Path(path)), os.path.realpath(path)}
    inside = [c for c in candidates if os.path.commonpath([c, real_root]) == real_root]
    return bool(inside) and any(c in git_tracked_files() for c in inside)


# --- rules 4 to 7: what an existing file is, and who wrote it ----------------------------------------


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
    """Refuse to replace the existing file ``path`` unless the policy allows it (rules 4 to 7).

    Parameters
    ----------
    path : Path
        An existing file (a link is judged by what it points to, and is never ours).
    kind : str or None
        The kind about to be written; None skips the kind checks (checked again at commit).
    policy : WritePolicy or None
        None: the :func:`write_policy` in force.
    replace_weights : bool
        See :func:`guard_output`.
    """
    with _records_for_a_verdict() as records:
        _check_replace(Path(path), kind, policy or _POLICY.get(), replace_weights, records)


def _check_replace(path: Path, kind: str | None, policy: WritePolicy, replace_weights: bool,
                   records: dict[str, "Entry"]) -> None:
    try:
        existing = sniff_kind(path)
    except NotRegularFile:
        raise InputError(f"{show_path(path)}: is a device, FIFO or socket, not a regular file; refusing to "
                         "write to it (name a file)") from None
    except OSError as err:
        raise InputError(f"{show_path(path)}: exists and cannot be read to check what it is "
                         f"({os_reason(err)}); refusing to replace it") from None
    verdict, entry = _verdict(path, kind, command_name(policy), records)
    own = verdict == "ours"
    new = None if kind is None else _written_kind(kind)
    if existing in PROTECTED:
        same = new is None or new == existing
        if same and (own or (policy.overwrite and replace_weights)):
            return
        by = f" ({entry.command} wrote it)" if verdict in ("other-command", "other-kind") else ""
        raise InputError(f"{show_path(path)}: {PROTECTED[existing]}{by}; refusing to replace it (write elsewhere)")
    if own:
        return
    same_kind = new is None or existing == "empty" or new == existing
    if not same_kind and verdict in ("other-command", "other-kind"):  # this project's intact output: --overwrite cannot help
        raise InputError(f"{show_path(path)}: holds {existing} that {entry.command} wrote, not {new}; a file is "
                         "replaced only by one of its own kind (write elsewhere)")
    if not policy.overwrite:
        if verdict == "other-command":
            raise InputError(f"{show_path(path)}: exists and was written by {entry.command}, not by "
                             f"{command_name(policy)}; pass --overwrite to replace it")
        changed = f" (changed since {entry.command} wrote it)" if verdict == "changed" else ""
        raise InputError(f"{show_path(path)}: exists and was not written by this project{changed}; "
                         "pass --overwrite to replace it")
    if not same_kind:
        raise InputError(f"{show_path(path)}: holds {existing}, not {new}; "
                         "--overwrite replaces only a file of the kind written")


def _check_state_folder(path: Path) -> None:
    """Rule 1: never write into the state folder (its record would be this command's to forge)."""
    folder = state_folder_path()
    if folder is None:
        return
    real, real_folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if real == real_folder or real_folder in real.parents:
        raise InputError(f"{show_path(path)}: inside {show_path(folder)}, this project's record of what it wrote; "
                         "write elsewhere")


# --- the record: which outputs this user's commands wrote (the state folder) -----------------------------------


class Entry(NamedTuple):
    """One recorded output: its content's sha256 and size, the command that wrote it and what it holds."""

    sha256: str
    size: int
    command: str
    kind: str


def state_folder_path() -> Path | None:
    """Where this user's record lives: ``$DEEPDENOISE1D_STATE_DIR``, else ``$XDG_STATE_HOME/deepdenoise1d``
    (an absolute one), else ``~/.local/state/deepdenoise1d``; None when there is no home folder."""
    env = os.environ.get(STATE_ENV, "")
    if env and "\0" not in env:
        return Path(os.path.abspath(os.path.expanduser(env)))
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg) and "\0" not in xdg:
        return Path(xdg) / "deepdenoise1d"
    home = os.path.expanduser("~")
    if not home or home == "~" or not os.path.isabs(home):
        return None
    return Path(home) / ".local" / "state" / "deepdenoise1d"


def state_folder(create: bool = False) -> Path | None:
    """The state folder (:func:`state_folder_path`) when it may be trusted, else None.

    Trusted: a folder owned by this user that neither its group nor others can write. ``create`` makes a
    missing one (mode 0700). Anything else (not a folder, another user's, group- or world-writable, not
    creatable) is None with one warning line: then no existing file counts as this project's own, and
    nothing is recorded.
    """
    folder = state_folder_path()
    if folder is None:
        warn(f"no home folder to keep this project's record of its outputs in; set {STATE_ENV} "
             "(until then, replacing an existing output needs --overwrite)")
        return None
    try:
        if create:
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                folder.mkdir(mode=0o700)
            except FileExistsError:
                pass
        info = os.stat(folder)
    except FileNotFoundError:
        if create:
            warn(f"{show_path(folder)}: this project's state folder vanished as it was made; outputs are not recorded")
        return None
    except (OSError, ValueError) as err:
        warn(f"{show_path(folder)}: cannot use this project's state folder ({os_reason(err)}); outputs are not "
             "recorded and replacing an existing output needs --overwrite")
        return None
    if not stat.S_ISDIR(info.st_mode):
        warn(f"{show_path(folder)}: this project's state folder is not a folder; ignored (outputs are not recorded "
             "and replacing an existing output needs --overwrite)")
        return None
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        why = (f"is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})" if info.st_uid != os.geteuid()
               else f"can be written by its group or others (mode {stat.S_IMODE(info.st_mode):04o})")
        warn(f"{show_path(folder)}: this project's state folder {why}; ignored (no existing output counts as this "
             "project's own: replacing one needs --overwrite)")
        return None
    return folder


def _record_key(path: Path) -> str:
    """The resolved absolute path: the parent's links resolved, the last name kept (the write replaces it)."""
    return os.path.join(os.path.realpath(path.parent), path.name)


def _no_constant(text: str) -> object:
    return _Invalid  # NaN, Infinity: no field of the record holds one


_Invalid = object()  # a float or constant in the JSON: fails the schema wherever it is


def _load_records(folder: Path | None) -> dict[str, Entry]:
    """The record in ``folder``; missing: empty; anything but the expected file: empty, with one warning line."""
    if folder is None:
        return {}
    path = folder / STATE_MANIFEST
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return {}
    except OSError as err:
        warn(f"{show_path(path)}: cannot read this project's record of its outputs ({os_reason(err)}); ignored")
        return {}
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            warn(f"{show_path(path)}: this project's record of its outputs is not a regular file; ignored")
            return {}
        chunks, size = [], 0
        while size <= MANIFEST_CAP:
            chunk = os.read(fd, min(_HASH_CHUNK, MANIFEST_CAP + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        warn(f"{show_path(path)}: cannot read this project's record of its outputs ({os_reason(err)}); ignored")
        return {}
    finally:
        os.close(fd)
    if size > MANIFEST_CAP:
        warn(f"{show_path(path)}: this project's record of its outputs is larger than {MANIFEST_CAP // 2**20} MiB; "
             "ignored")
        return {}
    return _parse_records(b"".join(chunks), path)


def _parse_records(data: bytes, where: Path) -> dict[str, Entry]:
    try:
        doc = json.loads(data.decode("utf-8"), parse_float=_no_constant, parse_constant=_no_constant)
    except (ValueError, RecursionError, MemoryError):  # not JSON, not UTF-8, too deep, a huge integer
        warn(f"{show_path(where)}: this project's record of its outputs is damaged (not JSON); ignored")
        return {}
    if (not isinstance(doc, dict) or set(doc) != {"format", "files"} or doc["format"] != MANIFEST_FORMAT
            or not isinstance(doc["files"], dict)):
        warn(f"{show_path(where)}: not this project's record of its outputs (format {MANIFEST_FORMAT}); ignored")
        return {}
    records, bad = {}, 0
    for key, value in doc["files"].items():
        entry = _entry(key, value)
        if entry is None:
            bad += 1
        else:
            records[key] = entry
    if bad:
        warn(f"{show_path(where)}: {bad} entr{'y' if bad == 1 else 'ies'} of this project's record of its outputs "
             "not in the expected form; ignored")
    return records


def _entry(key: object, value: object) -> Entry | None:
    """An :class:`Entry` when ``key``/``value`` follow the schema exactly, else None."""
    if not isinstance(key, str) or not key or len(key) > 4096 or "\0" in key or not os.path.isabs(key):
        return None
    if not isinstance(value, dict) or set(value) != set(Entry._fields):
        return None
    sha, size, command, kind = (value[name] for name in Entry._fields)
    if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        return None
    if type(size) is not int or not 0 <= size < 2**63:
        return None
    if not isinstance(command, str) or not 0 < len(command) <= 255 or not command.isprintable():
        return None
    if kind not in KINDS:
        return None
    return Entry(sha, size, command, kind)


def _save_records(folder: Path, records: dict[str, Entry], durable: bool) -> None:
    """Replace the record atomically (the caller holds its lock). Past :data:`PRUNE_AT` entries, those whose
    file is gone or changed size are dropped; past :data:`MANIFEST_CAP` bytes, the oldest."""
    if len(records) > PRUNE_AT:
        records = {key: entry for key, entry in records.items() if _size_matches(key, entry)}
    items = list(records.items())
    while True:
        data = json.dumps({"format": MANIFEST_FORMAT, "files": {k: e._asdict() for k, e in items}},
                          indent=0, ensure_ascii=True).encode()
        if len(data) <= MANIFEST_CAP or not items:
            break
        items = items[max(1, len(items) // 10):]  # the oldest tenth goes
    for stale in folder.glob(f".{STATE_MANIFEST}.*.tmp"):  # a killed update's; only the lock holder writes these
        _unlink_quietly(stale)
    fd, tmp = _create_temp(folder / STATE_MANIFEST, mode=0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, folder / STATE_MANIFEST)
        tmp = None
    finally:
        if tmp is not None:
            _unlink_quietly(tmp)


def _size_matches(key: str, entry: Entry) -> bool:
    try:
        info = os.lstat(key)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == entry.size


def content_sha256(path: PathLike) -> str:
    """sha256 of a regular file's content (never a link, never opened when not a regular file).

    Raises
    ------
    NotRegularFile
        A device, FIFO or socket.
    OSError
        It cannot be read (or is a link).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(path)
        digest = hashlib.sha256()
        while block := os.read(fd, _HASH_CHUNK):
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _verdict(path: Path, kind: str | None, command: str, records: dict[str, Entry] | None) -> tuple[str, Entry | None]:
    """Who wrote ``path``, by the record: ``ours`` (this command, ``kind`` unless None, content unchanged),
    ``other-command``, ``other-kind``, ``changed`` (the content is not what was recorded), ``unrecorded``
    (also: not a regular file, a link) or ``absent``."""
    try:
        info = os.lstat(path)
    except (OSError, ValueError):
        return "absent", None
    if not stat.S_ISREG(info.st_mode):
        return "unrecorded", None  # a link, a device, a FIFO: never ours
    if records is None:
        with _records_for_a_verdict() as records:
            return _verdict(path, kind, command, records)
    entry = records.get(_record_key(path))
    if entry is None:
        return "unrecorded", None
    if entry.size != info.st_size:
        return "changed", entry
    try:
        if content_sha256(path) != entry.sha256:
            return "changed", entry
    except OSError:
        return "changed", entry
    if entry.command != command:
        return "other-command", entry
    if kind is not None and entry.kind != "empty" and _written_kind(kind) != entry.kind:
        return "other-kind", entry  # (an empty output is replaced by any kind, as rule 7 says)
    return "ours", entry


def is_recorded(path: PathLike, kind: str | None = None, command: str | None = None) -> bool:
    """True when ``path`` is a regular file that this user's record lists as written by ``command``
    (None: :func:`command_name`), holding ``kind`` (None: any), with its content unchanged since."""
    return _verdict(Path(path), kind, _clean_command(command) if command else command_name(), None)[0] == "ours"


@contextlib.contextmanager
def _records_for_a_verdict() -> Iterator[dict[str, Entry]]:
    """This user's record, held under its lock while the caller judges a file by it (and hashes the file), so
    that another writer cannot rename and record that file in between: without the lock, a verdict could read
    the record before that writer's update and hash the file after it, and call the writer's output "changed".
    When the lock cannot be had (no state folder, held past :data:`LOCK_TIMEOUT`, not lockable), the record is
    read without it: the write's own check at the rename holds the lock and refuses then, in one line."""
    folder = state_folder()
    lock = None
    if folder is not None:
        lock = FileLockHeld(folder / STATE_LOCK, mode=0o600)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT)
        except OSError:  # LockHeld included
            lock = None
    try:
        yield _load_records(folder)
    finally:
        if lock is not None:
            lock.release()


@contextlib.contextmanager
def _record_lock(folder: Path | None) -> Iterator[Path | None]:
    """Hold the record's lock in ``folder``; yields the folder, or None (one warning line) when it cannot
    be taken for a reason other than another process holding it. Held too long: :class:`InputError`."""
    if folder is None:
        yield None
        return
    lock = FileLockHeld(folder / STATE_LOCK, mode=0o600)
    try:
        lock.acquire(timeout=LOCK_TIMEOUT)
    except LockHeld:
        raise InputError(f"{show_path(folder / STATE_LOCK)}: another process of this user holds this project's record "
                         f"of its outputs for {LOCK_TIMEOUT:g} s; try again") from None
    except OSError as err:
        warn(f"{show_path(folder / STATE_LOCK)}: cannot lock this project's record of its outputs ({os_reason(err)}); "
             "outputs are not recorded and replacing an existing output needs --overwrite")
        yield None
        return
    try:
        yield folder
    finally:
        lock.release()


def _record(folder: Path, records: dict[str, Entry], new: dict[str, Entry], durable: bool) -> bool:
    """Add ``new`` to the record (the caller holds the lock); a failure is one warning line, never an error:
    the files exist and are complete, they are only not counted as this project's own."""
    for key, entry in new.items():
        records.pop(key, None)
        records[key] = entry  # the newest last: the last to go when the record outgrows its cap
    try:
        _save_records(folder, records, durable)
        return True
    except Exception as err:  # noqa: BLE001 - bookkeeping after the data is in place never fails the write
        names = ", ".join(show_path(key) for key in new)
        warn(f"{names}: written, but not recorded as this project's output ({show_path(folder / STATE_MANIFEST)}: "
             f"{os_reason(err)}); replacing it later needs --overwrite")
        return False


def _describe(path: Path, kind: str | None = None, command: str | None = None) -> tuple[str, Entry] | None:
    """The record's key and entry for the regular file ``path`` as it is now."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            return None
        kind = kind or sniff_kind(path)
        digest = content_sha256(path)
    except OSError:
        return None
    return _record_key(path), Entry(digest, info.st_size, command or command_name(), kind)


def record_outputs(paths: Iterable[PathLike], durable: bool = True) -> bool:
    """Record existing regular files as the running command's outputs (a run that ``--resume`` adopts, a log
    appended to). Links and anything but regular files are skipped.

    Returns
    -------
    bool
        Whether the record was written. A failure (the state folder unusable, its lock held too long, a
        full disk) is one warning line, never an error: the files are only not counted as this project's own.
    """
    new = dict(filter(None, (_describe(Path(p)) for p in paths)))
    if not new:
        return True
    try:
        with _record_lock(state_folder(create=True)) as folder:
            if folder is None:
                return False
            return _record(folder, _load_records(folder), new, durable)
    except InputError as err:  # the lock held too long: the files stay unrecorded
        warn(f"{err}; not recorded")
        return False


def _commit(tmp: Path, path: Path, policy: WritePolicy, replace_weights: bool, record: bool, durable: bool) -> None:
    """Check the policy with the written kind, rename ``tmp`` to ``path`` and record it, under the record's lock.

    Everything that can refuse happens before the rename; after it, a bookkeeping failure is a warning line.
    """
    kind = sniff_kind(tmp)
    if not record:  # bulk files (durable=False): checked, never listed
        if path.exists():
            check_replace(path, kind, policy, replace_weights)
        os.replace(tmp, path)
        return
    described = _describe(tmp, kind, command_name(policy))
    with _record_lock(state_folder(create=True)) as folder:
        records = _load_records(folder)
        if path.exists():
            _check_replace(path, kind, policy, replace_weights, records)
        os.replace(tmp, path)
        if folder is not None and described is not None:
            _record(folder, records, {_record_key(path): described[1]}, durable)


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
    return path.parent / f".{_temp_stem(path.name)}.{_marker()}-{secrets.token_hex(4)}.tmp"


def _temp_stem(name: str) -> str:
    """The longest start of ``name`` that takes at most :data:`TEMP_STEM_BYTES` bytes on disk, cut between
    characters (a name of 3-byte characters is 3 times longer on disk than in characters)."""
    kept, size = [], 0
    for char in name:
        try:
            size += len(os.fsencode(char))
        except UnicodeError:  # a lone surrogate the file system cannot encode: count it at UTF-8's widest
            size += 4
        if size > TEMP_STEM_BYTES:
            break
        kept.append(char)
    return "".join(kept)


def _marker() -> str:
    return f"{os.getpid()}x{_TOKEN}"


def _remove_stale_temps(path: Path) -> None:
    """Remove the temp files of ``path`` that a killed writer left: ours by name, our user's, regular, and
    named by a process that no longer runs. A live process's temp is never touched (its pid may be reused:
    then the temp stays, which is only a leak)."""
    pattern = re.compile(rf"\.{re.escape(_temp_stem(path.name))}\.(\d+)x[0-9a-f]+-[0-9a-f]{{8}}\.tmp")
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


def _create_temp(path: Path, mode: int = 0o666) -> tuple[int, Path]:
    """Create a new, empty temp file next to ``path`` (first removing the ones killed writers left); ``mode``
    minus the umask."""
    _remove_stale_temps(path)
    for _ in range(100):
        tmp = _temp_path(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode), tmp
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
        but not recorded as this project's output (a re-run needs ``--overwrite``).
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
        (disk full, permission, ...) before the rename. Only this call's own temp file
        is removed. Once the file is in place, a failure to record it is one warning
        line, not an error.
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

"""deepdenoise1d/safewrite.py: guard_output, atomic_write, open_npy_output and release_pages, with property-based tests.

Property: a write either lands at the intended path or is refused in one ``InputError`` line, and
nothing outside the intended path changes. Example counts are bounded (``FUZZ`` in conftest.py).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from conftest import FUZZ, REPO_ROOT, assert_one_line_error, fail_after, one_line, shared_folder
from deepdenoise1d import io, safewrite
from deepdenoise1d.errors import InputError


IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- the output guard -----------------------------------------------------------------------------


# existing.npy holds a user's bytes that this project never wrote: refused without --overwrite.
REFUSED = ["in.npy", "./in.npy", "sub/../in.npy", "link_to_in.npy", "hard_in.npy", "sub", ".",
           "afile/out.npy", "afile/deeper/out.npy", "existing.npy"]
ALLOWED = ["new/deep/out.npy", "sub/out.npy", "dangling.npy", "link_to_sub/out.npy", "out.txt"]
if not IS_ROOT:  # root writes anywhere: a permission case cannot fail there
    REFUSED += ["ro/out.npy", "ro/newdir/out.npy"]


def make_sandbox(root: Path) -> None:
    np.save(root / "in.npy", np.arange(12.0).reshape(3, 4))
    (root / "sub").mkdir()
    (root / "afile").write_text("a file, not a folder")
    (root / "existing.npy").write_bytes(b"old")
    (root / ".user.tmp").write_text("a user's file that looks like a temp")
    os.symlink(root / "in.npy", root / "link_to_in.npy")
    os.link(root / "in.npy", root / "hard_in.npy")
    os.symlink(root / "nowhere.npy", root / "dangling.npy")
    os.symlink(root / "sub", root / "link_to_sub")
    (root / "ro").mkdir()
    if not IS_ROOT:
        os.chmod(root / "ro", 0o555)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: kind and content hash (files) or target (links)."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[rel] = ("dir",)
            else:
                entries[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


def write_with(kind: str, target: Path, reads: list[Path], fail: bool) -> None:
    if kind == "atomic":
        def write(f):
            f.write(b"payload")
            if fail:
                raise OSError(errno.ENOSPC, "No space left on device")
        safewrite.atomic_write(target, write, reads=reads)
    elif kind == "signals":
        io.write_signals(target, np.ones((2, 5), np.float32), like_shape=(2, 5), reads=reads)
    else:
        with safewrite.open_npy_output(target, (2, 5), np.float32, reads=reads) as out:
            out[:] = 1.0
            if fail:
                raise OSError(errno.EIO, "simulated failure inside the block")


NAMES = st.text(alphabet=st.characters(exclude_characters="/", codec="utf-8"), min_size=1, max_size=300).filter(
    lambda name: name not in (".", ".."))


@FUZZ
@given(target=st.one_of(st.sampled_from(REFUSED + ALLOWED), NAMES.map(lambda name: f"new/{name}")),
       kind=st.sampled_from(["atomic", "signals", "npy"]),
       read_spelling=st.sampled_from(["in.npy", "sub/../in.npy", "link_to_in.npy"]), fail=st.booleans())
def test_output_guard_writes_only_the_intended_path(target, kind, read_spelling, fail):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_sandbox(root)
        before = snapshot(root)
        path = root / target
        try:
            write_with(kind, path, [root / read_spelling], fail)
            error = None
        except InputError as err:
            error = one_line(err)
        except OSError as err:  # only the simulated failure inside open_npy_output's block may pass through
            assert fail and kind == "npy" and err.errno == errno.EIO
            error = "simulated"
        after = snapshot(root)
        event("refused" if error else "written")
        intended = {os.path.normpath(target)}
        if "\0" not in target:
            intended.add(os.path.relpath(os.path.realpath(path), os.path.realpath(root)))
        if not IS_ROOT:
            os.chmod(root / "ro", 0o755)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    new_parents = {str(Path(t).parent) for t in intended} | {str(p) for t in intended for p in Path(t).parents}
    if target in REFUSED:
        assert error is not None and error != "simulated", f"{target} was written"
        assert not changed, changed
    elif error is not None:  # a failure (simulated disk full, or .txt/.npy format) changes nothing but parents
        assert changed <= new_parents, changed
    else:
        assert changed - new_parents <= intended and changed, changed
        assert before["in.npy"] == after["in.npy"] and before[".user.tmp"] == after[".user.tmp"]


# --- malformed and unsafe outputs, one by one ----------------------------------------------------


def test_output_parent_is_a_file(run_call, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, err = run_call(lambda: io.write_signals(tmp_path / "afile" / "out.npy", np.zeros((1, 20))))
    assert_one_line_error(code, err, "afile", "not a folder")


@pytest.mark.parametrize("name", ["a\0b.npy", "x" * 300 + ".npy"])
def test_impossible_output_names(run_call, tmp_path, name):
    assert_one_line_error(*run_call(lambda: io.write_npy(tmp_path / name, np.zeros(3))), "cannot")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_one_line_and_keeps_the_old_file(run_call, tmp_path):
    target = tmp_path / "out.npy"
    safewrite.atomic_write(target, lambda f: f.write(b"old content"))  # this project's output: replaceable

    def full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    assert_one_line_error(*run_call(lambda: safewrite.atomic_write(target, full)), "out.npy", "No space left")
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]  # no temp, and no bookkeeping in the user's folder


def test_open_npy_output_reserves_space_up_front(run_call, tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safewrite.os, "posix_fallocate", no_space, raising=False)
    code, err = run_call(lambda: safewrite.open_npy_output(tmp_path / "o.npy", (1000, 100), np.float32).__enter__())
    assert_one_line_error(code, err, "o.npy", "No space left")
    assert list(tmp_path.iterdir()) == []


def test_open_npy_output_round_trip_and_cleanup(tmp_path):
    with safewrite.open_npy_output(tmp_path / "o.npy", (3, 7), np.float32) as out:
        out[:] = np.arange(21, dtype=np.float32).reshape(3, 7)
        assert not (tmp_path / "o.npy").exists()  # appears only on a clean exit
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), np.arange(21).reshape(3, 7))
    with pytest.raises(ZeroDivisionError):
        with safewrite.open_npy_output(tmp_path / "p.npy", (3, 7), np.float32) as out:
            1 / 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npy"]
    with safewrite.open_npy_output(tmp_path / "empty.npy", (0, 7), np.float64):
        pass
    assert np.load(tmp_path / "empty.npy").shape == (0, 7)


def test_written_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        io.write_npy(tmp_path / "a.npy", np.zeros(3))
        with safewrite.open_npy_output(tmp_path / "b.npy", (2, 2), np.float64):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "a.npy").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.npy").stat().st_mode & 0o777 == 0o640


def test_a_failed_write_removes_only_its_own_temp(tmp_path):
    (tmp_path / ".user.tmp").write_text("mine")
    (tmp_path / ".out.npy.999x0000-abcd.tmp").write_text("another process's temp")

    def fail(f):
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(InputError, match="I/O error"):
        safewrite.atomic_write(tmp_path / "out.npy", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.npy.999x0000-abcd.tmp", ".user.tmp"]
    assert not hasattr(safewrite, "remove_stale_temps")  # it deleted other runs' temps and user files


# --- streaming through memory maps -----------------------------------------------------------------


STREAM_SCRIPT = """
import os, sys, numpy as np
from deepdenoise1d import io, safewrite

def rss_mb():  # resident now, not the lifetime peak
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

path, out_path = sys.argv[1], sys.argv[2]
before, peak = rss_mb(), 0.0
signals, shape = io.read_signals(path)
with safewrite.open_npy_output(out_path, shape, signals.dtype, reads=[path]) as out:
    for start, block in io.iter_chunks(signals, 4096, path, np.float32):
        out[start : start + len(block)] = 2 * block
        safewrite.release_pages(out)
        peak = max(peak, rss_mb())
print(peak - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident size from /proc")
def test_streaming_a_large_npy_keeps_memory_bounded(tmp_path):
    # 40 MB in, 40 MB out through memory maps. Without releasing pages, every touched
    # page stays resident (+40 MB for the output alone); with it, about one chunk.
    np.save(tmp_path / "in.npy", np.tile(np.arange(100, dtype=np.float32), (100_000, 1)))
    result = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
                            capture_output=True, text=True, check=True, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert float(result.stdout) < 20, result.stdout
    out = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert out.dtype == np.float32 and out.shape == (100_000, 100)
    np.testing.assert_array_equal(out[[0, -1]], 2 * np.arange(100, dtype=np.float32)[None].repeat(2, 0))


# --- the write policy: tracked folders, content sniffing, the manifest, --overwrite ---------------


def zip_checkpoint_bytes() -> bytes:
    """A zip laid out like torch.save's (a data.pkl member first), made without torch."""
    import io as _io
    import zipfile

    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/version", b"3\n")
    return buffer.getvalue()


def npz_bytes() -> bytes:
    import io as _io

    buffer = _io.BytesIO()
    np.savez(buffer, a=np.arange(3.0))
    return buffer.getvalue()


def hdf5_bytes(tmp: Path) -> bytes:
    import h5py

    with h5py.File(tmp / "made.h5", "w") as f:
        f.attrs["format"] = "icnn_s-weights"
        f.create_dataset("w", data=np.ones(3, np.float32))
    return (tmp / "made.h5").read_bytes()


def npy_bytes() -> bytes:
    import io as _io

    buffer = _io.BytesIO()
    np.save(buffer, np.arange(4.0))
    return buffer.getvalue()


CONTENTS = {
    "checkpoint": zip_checkpoint_bytes(),
    "pickle": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.",
    "npz": npz_bytes(),
    "npy": npy_bytes(),
    "png": b"\x89PNG\r\n\x1a\n" + bytes(range(64)),
    "pdf": b"%PDF-1.4\n%...",
    "json": b'  {"a": 1}\n',
    "text": "σ = 3, one value per line\n1.0\n".encode(),
    "binary": bytes(range(256)),
    "empty": b"",
}
SNIFFED = {"pickle": "checkpoint"}


@pytest.mark.parametrize("name", sorted(CONTENTS))
def test_sniff_kind_reads_content_not_suffix(tmp_path, name):
    path = tmp_path / "file.npy"  # the same misleading suffix for every kind
    path.write_bytes(CONTENTS[name])
    assert safewrite.sniff_kind(path) == SNIFFED.get(name, name)


def test_sniff_kind_knows_hdf5_and_the_shipped_files(tmp_path):
    path = tmp_path / "w.json"
    path.write_bytes(hdf5_bytes(tmp_path))
    assert safewrite.sniff_kind(path) == "hdf5"
    assert safewrite.sniff_kind(REPO_ROOT / "ckpt" / "ckpt_best.pth") == "checkpoint"
    assert safewrite.sniff_kind(REPO_ROOT / "ckpt" / "ckpt_best.h5") == "hdf5"


def test_the_same_write_twice_replaces_its_own_output(tmp_path):
    target = tmp_path / "out.json"
    safewrite.atomic_write(target, lambda f: f.write(b'{"run": 1}'))
    assert safewrite.is_recorded(target)
    safewrite.atomic_write(target, lambda f: f.write(b'{"run": 2}'))
    assert target.read_bytes() == b'{"run": 2}'
    with safewrite.open_npy_output(tmp_path / "o.npy", (2, 3), np.float32) as out:
        out[:] = 1
    with safewrite.open_npy_output(tmp_path / "o.npy", (2, 3), np.float32) as out:
        out[:] = 2
    assert np.load(tmp_path / "o.npy").tolist() == [[2.0] * 3] * 2


def test_an_output_changed_since_it_was_written_is_no_longer_ours(tmp_path):
    target = tmp_path / "out.txt"
    safewrite.atomic_write(target, lambda f: f.write(b"first\n"))
    with open(target, "a") as f:
        f.write("a user's note\n")
    with pytest.raises(InputError, match=r"not written by this project \(changed since .* wrote it\); pass --overwrite"):
        safewrite.atomic_write(target, lambda f: f.write(b"second\n"))
    assert target.read_bytes() == b"first\na user's note\n"


def test_a_user_file_needs_overwrite_and_the_same_kind(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(CONTENTS["npy"])
    new = np.arange(5.0)
    with pytest.raises(InputError, match="not written by this project; pass --overwrite"):
        io.write_npy(target, new)
    assert target.read_bytes() == CONTENTS["npy"]
    with safewrite.write_policy(overwrite=True):
        io.write_npy(target, new)
    np.testing.assert_array_equal(np.load(target), new)
    text = tmp_path / "notes.npy"
    text.write_bytes(CONTENTS["text"])
    with safewrite.write_policy(overwrite=True), pytest.raises(InputError, match="holds text, not npy"):
        io.write_npy(text, new)
    assert text.read_bytes() == CONTENTS["text"]


@pytest.mark.parametrize("name", ["checkpoint", "pickle", "hdf5"])
def test_checkpoints_and_weights_are_never_replaced(tmp_path, name):
    target = tmp_path / "user.pth"
    data = hdf5_bytes(tmp_path) if name == "hdf5" else CONTENTS[name]
    target.write_bytes(data)
    for payload in (b"{}", data, CONTENTS["npy"]):
        with safewrite.write_policy(overwrite=True, tracked_ok=True), pytest.raises(InputError, match="is a"):
            safewrite.atomic_write(target, lambda f, payload=payload: f.write(payload))
    assert target.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) in (["user.pth"], ["made.h5", "user.pth"])


def test_an_own_checkpoint_is_replaced_only_by_a_checkpoint(tmp_path):
    target = tmp_path / "ckpt_last.pth"
    safewrite.atomic_write(target, lambda f: f.write(CONTENTS["checkpoint"]))
    with safewrite.write_policy(overwrite=True), pytest.raises(InputError, match="is a checkpoint"):
        safewrite.atomic_write(target, lambda f: f.write(b'{"json": "over a checkpoint"}'))
    assert target.read_bytes() == CONTENTS["checkpoint"]
    safewrite.atomic_write(target, lambda f: f.write(CONTENTS["pickle"]))  # training saves its checkpoint again
    assert target.read_bytes() == CONTENTS["pickle"]


@pytest.mark.parametrize("folder", safewrite.TRACKED)
def test_tracked_folders_are_refused_without_the_flag(folder):
    target = REPO_ROOT / folder / "new_output.json"
    assert safewrite.tracked_folder_of(target) == REPO_ROOT / folder
    with pytest.raises(InputError, match="tracked files"):
        safewrite.atomic_write(target, lambda f: f.write(b"{}"))
    with pytest.raises(InputError, match="tracked files"):
        safewrite.guard_output(REPO_ROOT / folder / "deeper" / "x.npy")
    assert not target.exists() and not (REPO_ROOT / folder / "deeper").exists()
    # tracked_ok lets the path through (nothing is written: the folder exists already)
    assert safewrite.guard_output(target, tracked_ok=True) == target and not target.exists()


def test_a_link_into_a_tracked_folder_is_refused(tmp_path):
    os.symlink(REPO_ROOT / "ckpt", tmp_path / "weights")
    with pytest.raises(InputError, match="tracked files"):
        safewrite.atomic_write(tmp_path / "weights" / "x.txt", lambda f: f.write(b"x"))
    assert not (REPO_ROOT / "ckpt" / "x.txt").exists()


@pytest.mark.parametrize("text", ["out.npy/", "sub/out.npy/", "sub/.", "sub/.."])
def test_a_path_ending_in_a_separator_names_a_folder(tmp_path, text):
    from deepdenoise1d.cli import output_file

    with pytest.raises(InputError, match="names a folder"):
        output_file(text)
    with pytest.raises(InputError, match="names a folder|is a folder"):
        safewrite.atomic_write(f"{tmp_path}/{text}", lambda f: f.write(b"x"))  # text: Path would drop the ending
    assert not (tmp_path / "out.npy").exists()


def test_the_manifest_names_are_never_outputs(tmp_path, private_state_folder):
    for name in safewrite.BOOKKEEPING:  # the old per-folder record's names
        with pytest.raises(InputError, match="record of its outputs"):
            safewrite.atomic_write(tmp_path / name, lambda f: f.write(b"{}"))
    for path in (private_state_folder / safewrite.STATE_MANIFEST, private_state_folder / "x.json",
                 private_state_folder / "new" / "x.json"):
        before = (private_state_folder / safewrite.STATE_MANIFEST).read_bytes()
        with safewrite.write_policy(overwrite=True), pytest.raises(InputError, match="record of what it wrote"):
            safewrite.atomic_write(path, lambda f: f.write(b"{}"))
        assert (private_state_folder / safewrite.STATE_MANIFEST).read_bytes() == before
        assert not (private_state_folder / "x.json").exists() and not (private_state_folder / "new").exists()


WRITTEN = {"npy": CONTENTS["npy"], "png": CONTENTS["png"], "json": CONTENTS["json"], "text": CONTENTS["text"],
           "checkpoint": CONTENTS["checkpoint"], "hdf5": None}


@FUZZ
@given(existing=st.sampled_from(sorted(CONTENTS) + ["hdf5"]), written=st.sampled_from(sorted(WRITTEN)),
       overwrite=st.booleans(), tracked_ok=st.booleans(), recorded=st.booleans(), tail=st.binary(max_size=64))
def test_the_guard_never_loses_a_checkpoint_or_a_file_it_did_not_write(existing, written, overwrite, tracked_ok,
                                                                       recorded, tail):
    """Property: a checkpoint or HDF5 file is replaced only by the same kind over this command's own
    unchanged output, a file absent from the record only with --overwrite and the same kind, and this
    command's own output only by the same kind (an empty one by any), with or without --overwrite;
    every other write is refused and leaves the file byte for byte as it was."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        h5 = hdf5_bytes(root)
        (root / "made.h5").unlink()
        data = (h5 if existing == "hdf5" else CONTENTS[existing]) + (tail if existing in ("binary",) else b"")
        payload = h5 if written == "hdf5" else WRITTEN[written]
        target = root / "out.bin"
        if recorded:
            safewrite.atomic_write(target, lambda f: f.write(data))
        else:
            target.write_bytes(data)
        kind = safewrite.sniff_kind(target)
        try:
            with safewrite.write_policy(overwrite=overwrite, tracked_ok=tracked_ok):
                safewrite.atomic_write(target, lambda f: f.write(payload))
            replaced = True
        except InputError as err:
            one_line(err)
            replaced = False
        event("replaced" if replaced else "refused")
        now = target.read_bytes()
        temps = [p.name for p in root.iterdir() if p.name.endswith(".tmp")]
    assert not temps
    assert now == (payload if replaced else data)
    same_kind = kind == written or kind == "empty"
    if kind in safewrite.PROTECTED:
        assert replaced == (recorded and kind == written)
    elif not recorded:
        assert replaced == (overwrite and same_kind)
    else:
        assert replaced == same_kind  # the kind check applies to this command's own output too


def test_a_killed_manifest_update_leaves_no_temp_after_the_next_write(tmp_path, private_state_folder):
    stale = private_state_folder / f".{safewrite.STATE_MANIFEST}.999x0000-abcd.tmp"
    stale.write_text("left by a kill -9")
    safewrite.atomic_write(tmp_path / "out.txt", lambda f: f.write(b"x\n"))
    assert not stale.exists() and safewrite.is_recorded(tmp_path / "out.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_fifo_output_is_refused_without_opening_it(tmp_path, overwrite):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    with fail_after(10):
        with pytest.raises(InputError, match="FIFO or socket, not a regular file"):
            safewrite.guard_output(fifo, overwrite=overwrite)
        with pytest.raises(InputError, match="not a regular file"):
            with safewrite.write_policy(overwrite=overwrite):
                safewrite.atomic_write(fifo, lambda f: f.write(b"{}"))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left


def test_a_device_behind_a_link_is_never_replaced(tmp_path):
    """The output names a character device (through a link here, so a failure could only replace the link)."""
    link = tmp_path / "null.json"
    link.symlink_to(os.devnull)
    with pytest.raises(InputError, match="device"):
        safewrite.guard_output(link, overwrite=True)
    with pytest.raises(InputError, match="device"):
        with safewrite.write_policy(overwrite=True):
            safewrite.atomic_write(link, lambda f: f.write(b"{}"))
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode)


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    """A writer killed mid-write leaves its hidden temp file; the next write of that output removes it, and
    never a live process's temp or another output's."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # a process that has exited
    out = tmp_path / "result.npy"
    stale = tmp_path / f".result.npy.{dead}x1a2b3c-0badf00d.tmp"
    live = tmp_path / f".result.npy.{os.getpid()}x1a2b3c-0badf00d.tmp"
    other = tmp_path / f".other.npy.{dead}x1a2b3c-0badf00d.tmp"
    for path in (stale, live, other):
        path.write_bytes(b"\0" * 1024)
    safewrite.atomic_write(out, lambda f: f.write(b"x"))
    assert not stale.exists() and live.exists() and other.exists() and out.read_bytes() == b"x"


# --- who wrote a file: this user's record in the state folder (issue items 3, 5, 6, 20) --------------------


@pytest.fixture
def fresh_warnings():
    """Warnings print once per process: forget the earlier ones, so this test sees its own."""
    safewrite._WARNED.clear()
    yield
    safewrite._WARNED.clear()


def record_of(state: Path) -> dict:
    return json.loads((state / safewrite.STATE_MANIFEST).read_bytes())


def test_the_state_folder_is_the_env_then_xdg_then_home_and_made_private(monkeypatch, tmp_path):
    monkeypatch.setenv(safewrite.STATE_ENV, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert safewrite.state_folder_path() == tmp_path / "env"
    monkeypatch.delenv(safewrite.STATE_ENV)
    assert safewrite.state_folder_path() == tmp_path / "xdg" / "deepdenoise1d"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/xdg")  # the XDG spec: a relative path is ignored
    assert safewrite.state_folder_path() == tmp_path / "home" / ".local" / "state" / "deepdenoise1d"
    monkeypatch.delenv("XDG_STATE_HOME")
    folder = safewrite.state_folder(create=True)
    assert folder == tmp_path / "home" / ".local" / "state" / "deepdenoise1d"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.geteuid()


def test_no_bookkeeping_lands_in_the_users_folder_and_the_record_holds_hash_size_command_kind(
        tmp_path, private_state_folder):
    out = tmp_path / "data"
    out.mkdir()
    io.write_npy(out / "a.npy", np.arange(4.0))
    safewrite.atomic_write(out / "b.json", lambda f: f.write(b'{"b": 1}'))
    with safewrite.open_npy_output(out / "c.npy", (2, 3), np.float32) as array:
        array[:] = 7
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "b.json", "c.npy"]  # no record, no lock here
    files = record_of(private_state_folder)["files"]
    assert record_of(private_state_folder)["format"] == safewrite.MANIFEST_FORMAT
    for name, kind in (("a.npy", "npy"), ("b.json", "json"), ("c.npy", "npy")):
        data = (out / name).read_bytes()
        assert files[os.path.realpath(out / name)] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                                        "command": safewrite.command_name(), "kind": kind}
    assert stat.S_IMODE((private_state_folder / safewrite.STATE_MANIFEST).stat().st_mode) & 0o077 == 0


def test_the_record_key_is_the_resolved_path(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    safewrite.atomic_write(tmp_path / "alias" / "x.txt", lambda f: f.write(b"1\n"))
    assert safewrite.is_recorded(tmp_path / "real" / "x.txt") and safewrite.is_recorded(tmp_path / "real" / ".." / "real" / "x.txt")
    safewrite.atomic_write(tmp_path / "real" / "x.txt", lambda f: f.write(b"2\n"))  # the same file: ours


def test_another_commands_output_needs_overwrite(tmp_path):
    """(3) Numpy_test.py --output R/train_log.csv no longer replaces train.py's log without --overwrite."""
    log = tmp_path / "R" / "train_log.csv"
    with safewrite.write_policy(command="train.py"):
        safewrite.atomic_write(log, lambda f: f.write(b"step,loss\n1,0.5\n"))
    before = log.read_bytes()
    with safewrite.write_policy(command="Numpy_test.py"):
        with pytest.raises(InputError, match=r"was written by train\.py, not by Numpy_test\.py; pass --overwrite"):
            safewrite.atomic_write(log, lambda f: f.write(b"1.0\n2.0\n"))
        assert log.read_bytes() == before
        assert not safewrite.is_recorded(log) and safewrite.is_recorded(log, command="train.py")
    with safewrite.write_policy(command="train.py"):
        safewrite.atomic_write(log, lambda f: f.write(b"step,loss\n"))  # its own: replaced
    with safewrite.write_policy(overwrite=True, command="Numpy_test.py"):
        safewrite.atomic_write(log, lambda f: f.write(b"1.0\n"))  # asked for by name, same kind
    assert log.read_bytes() == b"1.0\n"
    with safewrite.write_policy(command="train.py"), pytest.raises(InputError, match="written by Numpy_test.py"):
        safewrite.atomic_write(log, lambda f: f.write(b"step,loss\n"))  # now Numpy_test.py's


def test_the_same_commands_output_is_replaced_only_by_its_own_kind(tmp_path):
    """(3) --json res.npy no longer turns the command's own earlier .npy into JSON, with or without --overwrite."""
    res = tmp_path / "res.npy"
    with safewrite.write_policy(command="Numpy_test.py"):
        io.write_npy(res, np.arange(3.0))
        before = res.read_bytes()
        for overwrite in (False, True):
            with safewrite.write_policy(overwrite=overwrite), \
                    pytest.raises(InputError, match="holds npy that Numpy_test.py wrote, not json"):
                safewrite.atomic_write(res, lambda f: f.write(b'{"n": 3}'))
            with pytest.raises(InputError, match="holds npy that Numpy_test.py wrote, not json"):
                safewrite.guard_output(res, kind="json", overwrite=overwrite)
        assert res.read_bytes() == before
        io.write_npy(res, np.arange(5.0))  # the same kind: its own output
    assert np.load(res).shape == (5,)


def test_a_legacy_per_folder_record_is_ignored_and_kept(tmp_path):
    """(5) The old record could be forged by anyone who can stat a file: it no longer counts at all."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    victim = shared / "result.npy"
    np.save(victim, np.arange(3.0))
    info = os.lstat(victim)
    forged = {"format": "deepdenoise1d-outputs", "files": {"result.npy": [info.st_size, info.st_mtime_ns, info.st_ino]}}
    (shared / safewrite.MANIFEST_NAME).write_text(json.dumps(forged))
    before = victim.read_bytes()
    with pytest.raises(InputError, match="not written by this project; pass --overwrite"):
        io.write_npy(victim, np.zeros(3))
    assert victim.read_bytes() == before and not safewrite.is_recorded(victim)
    assert json.loads((shared / safewrite.MANIFEST_NAME).read_text()) == forged  # never deleted nor rewritten


def test_a_record_with_the_wrong_hash_does_not_make_a_file_ours(tmp_path, private_state_folder):
    target = tmp_path / "out.txt"
    safewrite.atomic_write(target, lambda f: f.write(b"mine\n"))
    target.write_bytes(b"edit\n")  # the same size, other content: the record's hash no longer matches
    with pytest.raises(InputError, match=r"changed since .* wrote it"):
        safewrite.atomic_write(target, lambda f: f.write(b"next\n"))
    assert target.read_bytes() == b"edit\n"


def test_an_untrusted_state_folder_is_ignored_with_one_warning(run_call, monkeypatch, tmp_path, fresh_warnings):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o770)  # its group could forge entries
    monkeypatch.setenv(safewrite.STATE_ENV, str(state))
    target = tmp_path / "out.json"
    code, err = run_call(lambda: [safewrite.atomic_write(tmp_path / f"{k}.json", lambda f: f.write(b"{}"))
                                  for k in range(3)])
    assert code == 0 and err.count("\n") == 1 and err.startswith("warning: ") and str(state) in err, err
    assert "mode 0770" in err and "ignored" in err and "--overwrite" in err
    assert list(state.iterdir()) == []  # nothing recorded, no lock made
    entry = {"sha256": hashlib.sha256(b"{}").hexdigest(), "size": 2, "command": safewrite.command_name(),
             "kind": "json"}
    target.write_bytes(b"{}")
    (state / safewrite.STATE_MANIFEST).write_text(json.dumps(
        {"format": safewrite.MANIFEST_FORMAT, "files": {os.path.realpath(target): entry}}))
    assert not safewrite.is_recorded(target)  # even an exact entry counts for nothing there
    with pytest.raises(InputError, match="not written by this project"):
        safewrite.atomic_write(target, lambda f: f.write(b"[]"))
    if IS_ROOT:
        state.chmod(0o700)
        os.chown(state, 65534, 65534)  # another user's folder
        safewrite._WARNED.clear()
        code, err = run_call(lambda: safewrite.is_recorded(target))
        assert code == 0 and err.count("\n") == 1 and "is owned by uid 65534, not by this user" in err, err


@pytest.mark.parametrize("garbage", [
    b"1e400", b"NaN", b"[" * 100_000 + b"]" * 100_000, b"{" * 50_000, b"\xff\xfe\x00garbage", b"9" * 5000, b"",
    json.dumps({"format": "deepdenoise1d-outputs/2", "files": {"/x": {"sha256": "a" * 64, "size": 1e400,
                                                                      "command": "x", "kind": "npy"}}}).encode(),
    b'{"format": "deepdenoise1d-outputs/2", "files": {"/x": {"sha256": "' + b"a" * 64 + b'", "size": 1e400, '
    b'"command": "x", "kind": "npy"}}}',
    b'{"format": "deepdenoise1d-outputs/2", "files": []}', b'{"format": "deepdenoise1d-outputs", "files": {}}',
    b'{"format": "deepdenoise1d-outputs/2", "files": {"relative": {"sha256": "' + b"a" * 64 + b'", "size": true, '
    b'"command": "x", "kind": "npy", "extra": 1}}}',
])
def test_a_damaged_record_is_a_warning_never_a_traceback(run_call, tmp_path, private_state_folder, fresh_warnings,
                                                          garbage):
    manifest = private_state_folder / safewrite.STATE_MANIFEST
    saved = manifest.read_bytes() if manifest.exists() else None
    try:
        manifest.write_bytes(garbage)
        target = tmp_path / "out.txt"
        target.write_bytes(b"user's\n")
        code, err = run_call(lambda: safewrite.atomic_write(target, lambda f: f.write(b"x\n")))
        assert code == 2 and "Traceback" not in err and "not written by this project" in err.splitlines()[-1]
        assert all(line.startswith(("warning: ", "prog: error: ")) for line in err.splitlines()), err
        assert target.read_bytes() == b"user's\n"
        code, err = run_call(lambda: safewrite.atomic_write(tmp_path / "new.txt", lambda f: f.write(b"y\n")))
        assert code == 0 and "Traceback" not in err
        assert safewrite.is_recorded(tmp_path / "new.txt")  # the record is rewritten in its format
    finally:
        if saved is not None:
            manifest.write_bytes(saved)


def test_a_record_over_the_size_cap_is_not_read(run_call, tmp_path, private_state_folder, fresh_warnings, monkeypatch):
    monkeypatch.setattr(safewrite, "MANIFEST_CAP", 1000)
    target = tmp_path / "out.txt"
    safewrite.atomic_write(target, lambda f: f.write(b"x\n"))
    manifest = private_state_folder / safewrite.STATE_MANIFEST
    saved = manifest.read_bytes()
    try:
        manifest.write_bytes(saved.rstrip(b"}") + b" " * 1000 + b"}")  # still valid JSON, but too large
        code, err = run_call(lambda: safewrite.is_recorded(target))
        assert code == 0 and "larger than" in err and err.count("\n") == 1
        assert not safewrite.is_recorded(target)
    finally:
        manifest.write_bytes(saved)


def test_a_record_that_outgrows_its_cap_drops_the_oldest_entries(tmp_path, private_state_folder, monkeypatch):
    manifest = private_state_folder / safewrite.STATE_MANIFEST
    saved = manifest.read_bytes() if manifest.exists() else None
    monkeypatch.setattr(safewrite, "MANIFEST_CAP", 4000 + (len(saved) if saved else 0))
    try:
        for k in range(30):
            safewrite.atomic_write(tmp_path / f"{k}.txt", lambda f: f.write(b"x\n"))
        assert manifest.stat().st_size <= safewrite.MANIFEST_CAP
        assert safewrite.is_recorded(tmp_path / "29.txt") and not safewrite.is_recorded(tmp_path / "0.txt")
    finally:
        if saved is not None:
            manifest.write_bytes(saved)


def test_after_the_rename_a_record_that_cannot_be_written_is_a_warning(run_call, tmp_path, private_state_folder,
                                                                       fresh_warnings, monkeypatch):
    """(20) The output exists and is complete: exit 0 with one warning line, never 'cannot write' (exit 2)."""
    manifest = private_state_folder / safewrite.STATE_MANIFEST
    saved = manifest.read_bytes() if manifest.exists() else None
    try:
        manifest.unlink(missing_ok=True)
        manifest.mkdir()  # the record's path is a folder
        code, err = run_call(lambda: io.write_npy(tmp_path / "a.npy", np.arange(3.0)))
        assert code == 0 and err.count("\n") >= 1 and "Traceback" not in err
        assert "a.npy: written, but not recorded" in err and all(line.startswith("warning: ") for line in err.splitlines())
        np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(3.0))
        manifest.rmdir()

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(safewrite, "_save_records", full)  # the disk fills after the data
        code, err = run_call(lambda: safewrite.atomic_write(tmp_path / "b.json", lambda f: f.write(b"{}")))
        assert code == 0 and err.count("\n") == 1 and "b.json: written, but not recorded" in err and "No space" in err
        with safewrite.open_npy_output(tmp_path / "c.npy", (2, 2), np.float32) as out:
            out[:] = 1
        assert (tmp_path / "b.json").read_bytes() == b"{}" and np.load(tmp_path / "c.npy").sum() == 4
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.json", "c.npy"]  # no temp left
        monkeypatch.undo()
        assert not safewrite.is_recorded(tmp_path / "b.json")  # unrecorded: the next run needs --overwrite
    finally:
        if manifest.is_dir():
            manifest.rmdir()
        if saved is not None:
            manifest.write_bytes(saved)


def test_a_record_lock_held_too_long_refuses_before_anything_changes(run_call, tmp_path, private_state_folder,
                                                                      monkeypatch):
    from deepdenoise1d.folderlock import FileLockHeld

    monkeypatch.setattr(safewrite, "LOCK_TIMEOUT", 0.1)
    held = FileLockHeld(private_state_folder / safewrite.STATE_LOCK).acquire()
    try:
        code, err = run_call(lambda: safewrite.atomic_write(tmp_path / "x.json", lambda f: f.write(b"{}")))
        assert_one_line_error(code, err, "another process of this user holds", "try again")
        assert list(tmp_path.iterdir()) == []
        assert not safewrite.record_outputs([REPO_ROOT / "pyproject.toml"])  # adopting: a warning, not an error
    finally:
        held.release()


def test_record_outputs_adopts_regular_files_only(tmp_path):
    (tmp_path / "log.csv").write_text("step\n")
    os.symlink(tmp_path / "log.csv", tmp_path / "link.csv")
    os.mkfifo(tmp_path / "fifo")
    with safewrite.write_policy(command="train.py"):
        assert safewrite.record_outputs([tmp_path / "log.csv", tmp_path / "link.csv", tmp_path / "fifo",
                                         tmp_path / "missing"])
        assert safewrite.is_recorded(tmp_path / "log.csv", kind="text")
        assert not safewrite.is_recorded(tmp_path / "log.csv", kind="npy")
        assert not safewrite.is_recorded(tmp_path / "link.csv") and not safewrite.is_recorded(tmp_path / "fifo")
    assert not safewrite.is_recorded(tmp_path / "log.csv")  # another command's
    assert safewrite.is_recorded(tmp_path / "log.csv", command="train.py")


ANOTHER_USER_WRITES = """
import sys
from deepdenoise1d import safewrite
from deepdenoise1d.errors import run_cli
run_cli(lambda: safewrite.atomic_write(sys.argv[1], lambda f: f.write(b'{"by": "nobody"}')), "prog")
"""


def test_another_users_lock_and_record_in_a_shared_folder_block_nothing(as_nobody, tmp_path):
    """(6) root's mode-0600 lock and record files of the old design in a shared folder: another user's write
    there goes through (the lock is in that user's own state folder), and nothing of root's is touched."""
    with shared_folder() as folder, shared_folder(owner=65534, mode=0o700) as state:
        for name in safewrite.BOOKKEEPING:
            (folder / name).write_text("{}")
            (folder / name).chmod(0o600)
        code, out, err = as_nobody(ANOTHER_USER_WRITES, folder / "out.json", cwd=folder,
                                   env={safewrite.STATE_ENV: str(state)})
        assert code == 0 and err == "", err
        assert json.loads((folder / "out.json").read_text()) == {"by": "nobody"}
        assert sorted(p.name for p in state.iterdir()) == sorted([safewrite.STATE_LOCK, safewrite.STATE_MANIFEST])
        assert all((folder / name).read_text() == "{}" for name in safewrite.BOOKKEEPING)
        # root's state folder is not nobody's: pointed at it, nobody gets one warning line and records nothing
        (folder / "roots").mkdir(mode=0o700)
        code, out, err = as_nobody(ANOTHER_USER_WRITES, folder / "two.json", cwd=folder,
                                   env={safewrite.STATE_ENV: str(folder / "roots")})
        assert code == 0 and err.count("\n") == 1 and "is owned by uid 0, not by this user" in err, err


def test_the_command_name_is_the_script_and_the_unified_commands_subcommand(monkeypatch):
    import deepdenoise1d_command

    monkeypatch.setattr(sys, "argv", ["/home/u/Pytorch_V1/train.py", "--run-dir", "R"])
    assert safewrite.command_name() == "train.py"
    for subcommand, script in (("train", "train.py"), ("denoise", "Numpy_test.py"), ("to-h5", "pth2h5.py")):
        assert subcommand in deepdenoise1d_command.SUBCOMMANDS
        monkeypatch.setattr(sys, "argv", ["/venv/bin/deepdenoise1d", subcommand, "x"])
        assert safewrite.command_name() == script  # deepdenoise1d denoise cannot replace deepdenoise1d train's log
    monkeypatch.setattr(sys, "argv", ["/venv/bin/deepdenoise1d", "nosuch"])
    assert safewrite.command_name() == "deepdenoise1d nosuch"
    with safewrite.write_policy(command="mine"):
        assert safewrite.command_name() == "mine"
        with safewrite.write_policy(overwrite=True):  # an inner block keeps the name
            assert safewrite.command_name() == "mine"
    monkeypatch.setattr(sys, "argv", ["evil\nname.py"])
    assert "\n" not in safewrite.command_name()


# --- the hostile-user probe: what the write guard still let through (docs/hostile-probe.md) ----------------


def test_a_tracked_docs_figure_is_refused_even_with_overwrite():
    figure = REPO_ROOT / "docs" / "figures" / "prior_gallery.png"
    if not figure.is_file():
        pytest.skip("needs the repository's docs/figures")
    before = figure.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(InputError, match="tracked files") as raised:
            safewrite.guard_output(figure, kind="png", overwrite=overwrite)
        assert "\n" not in str(raised.value)
    with safewrite.write_policy(overwrite=True), pytest.raises(InputError, match="tracked files"):
        safewrite.atomic_write(figure, lambda f: f.write(b"\x89PNG\r\n\x1a\n not the figure"))
    assert figure.read_bytes() == before
    assert not [p for p in figure.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_file_git_tracks_is_refused_even_with_overwrite_and_an_untracked_one_is_not(tmp_path):
    if safewrite.checkout_root() != REPO_ROOT or not safewrite.git_tracked_files():
        pytest.skip("needs this package run from a git checkout, and git")
    tracked = REPO_ROOT / "pyproject.toml"  # text that starts with '[': sniffed as JSON, so --json could replace it
    assert str(tracked) in safewrite.git_tracked_files() and safewrite.is_tracked_by_git(tracked)
    before = tracked.read_bytes()
    with safewrite.write_policy(overwrite=True):
        for kind in (None, "json", "text"):
            with pytest.raises(InputError, match="git tracks"):
                safewrite.guard_output(tracked, kind=kind)
        os.symlink(tracked, tmp_path / "link.toml")  # the same file under another name
        with pytest.raises(InputError, match="git tracks"):
            safewrite.guard_output(tmp_path / "link.toml", kind="json")
    assert tracked.read_bytes() == before
    with safewrite.write_policy(overwrite=True, tracked_ok=True):  # the explicit flag (demo.py --refresh) may
        assert safewrite.guard_output(tracked, kind="json", make_parent=False) == tracked
    untracked = REPO_ROOT / "no-such-output-of-a-test.json"  # a new file beside the tracked ones is the user's
    assert not safewrite.is_tracked_by_git(untracked)
    assert safewrite.guard_output(untracked, make_parent=False) == untracked and not untracked.exists()
    assert not safewrite.is_tracked_by_git(tmp_path / "pyproject.toml")


def test_git_is_asked_with_the_environments_git_variables_dropped(monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append((argv, kwargs["env"]))
        return subprocess.CompletedProcess(argv, 128, b"", b"fatal: detected dubious ownership")

    monkeypatch.setattr(safewrite, "_GIT_TRACKED", {})
    monkeypatch.setattr(safewrite.subprocess, "run", fake_run)
    monkeypatch.setenv("GIT_DIR", "/elsewhere/.git")
    monkeypatch.setenv("GIT_INDEX_FILE", "/elsewhere/index")
    if safewrite.checkout_root() is None or not (safewrite.checkout_root() / ".git").exists():
        pytest.skip("needs a git checkout")
    assert safewrite.git_tracked_files() == frozenset() and safewrite.git_tracked_files() == frozenset()
    assert len(calls) == 1  # once per process
    argv, env = calls[0]
    assert argv[:2] == ["git", "-C"] and not any(name.startswith("GIT_") for name in env)
    assert not safewrite.is_tracked_by_git(REPO_ROOT / "pyproject.toml")  # git refused: the folders still hold


# A legal name is at most 255 bytes, not characters: '中' takes 3, so 80 of them plus '.npy' are 244 bytes.
LONG_NAMES = ["中" * 80 + ".npy", "中" * 83 + ".npy", "é" * 125 + ".txt", "a" * 251 + ".npy", "😀" * 62 + ".npy"]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_an_output_name_up_to_255_bytes_gets_a_temp_name_that_fits(tmp_path, name):
    assert len(os.fsencode(name)) <= 255
    tmp = safewrite._temp_path(tmp_path / name)
    assert len(os.fsencode(tmp.name)) <= 255 and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
    safewrite.atomic_write(tmp_path / name, lambda f: f.write(b"x"))
    (tmp_path / "maps").mkdir()
    with safewrite.open_npy_output(tmp_path / "maps" / (name[:-4] + ".npy"), (3,), np.float32) as out:
        out[:] = 1
    assert (tmp_path / name).read_bytes() == b"x"
    assert np.load(tmp_path / "maps" / (name[:-4] + ".npy")).tolist() == [1, 1, 1]
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


def test_a_killed_writers_temp_of_a_long_name_is_removed_by_the_next_write(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    name = "中" * 80 + ".npy"
    stale = tmp_path / f".{safewrite._temp_stem(name)}.{dead}x1a2b3c-0badf00d.tmp"
    assert len(os.fsencode(safewrite._temp_stem(name))) <= safewrite.TEMP_STEM_BYTES
    stale.write_bytes(b"\0" * 64)
    safewrite.atomic_write(tmp_path / name, lambda f: f.write(b"x"))
    assert not stale.exists() and (tmp_path / name).read_bytes() == b"x"


RIVAL_WRITES = """
import pathlib, sys
from deepdenoise1d import safewrite
from deepdenoise1d.errors import run_cli
pathlib.Path(sys.argv[2]).touch()
with safewrite.write_policy(command="same.py"):
    run_cli(lambda: safewrite.atomic_write(sys.argv[1], lambda f: f.write(b"the rival's output")), "prog")
"""


def test_a_writer_of_the_same_output_in_between_never_makes_another_writer_refused(tmp_path, monkeypatch):
    """Two runs of one command writing one output at once (different content): the second's check read the
    record, the first renamed and recorded its file, the second hashed that file against the record it had
    read and called its own command's output "changed" (refused, --overwrite asked for). The verdict now
    holds the record's lock: a rival released in the middle of it waits, and both writes go through."""
    out = tmp_path / "out.txt"
    ready = tmp_path / "ready"
    rivals = []
    real_load = safewrite._load_records

    def load_then_start_a_rival(folder):
        records = real_load(folder)
        if not rivals:  # the first verdict: a rival writer of the same output runs now, to the end if it can
            rivals.append(subprocess.Popen([sys.executable, "-c", RIVAL_WRITES, str(out), str(ready)],
                                           cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            deadline = time.monotonic() + 60
            while not ready.exists() and rivals[0].poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)  # an unlocked verdict: the rival renames and records its output meanwhile
        return records

    with safewrite.write_policy(command="same.py"):
        safewrite.atomic_write(out, lambda f: f.write(b"the first output"))
        monkeypatch.setattr(safewrite, "_load_records", load_then_start_a_rival)
        safewrite.atomic_write(out, lambda f: f.write(b"the second output"))
        monkeypatch.setattr(safewrite, "_load_records", real_load)
        _, err = rivals[0].communicate(timeout=120)
        assert rivals[0].returncode == 0 and err == "", err
        assert out.read_bytes() in (b"the second output", b"the rival's output")
        assert safewrite.is_recorded(out, kind="text")  # whichever came last is recorded as this command's

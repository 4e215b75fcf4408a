"""deepdenoise1d/safewrite.py: guard_output, atomic_write, open_npy_output and release_pages, with property-based tests.

Property: a write either lands at the intended path or is refused in one ``InputError`` line, and
nothing outside the intended path changes. Example counts are bounded (``FUZZ`` in conftest.py).
"""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from conftest import FUZZ, REPO_ROOT, assert_one_line_error, one_line
from deepdenoise1d import io, safewrite
from deepdenoise1d.errors import InputError


IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- the output guard -----------------------------------------------------------------------------


REFUSED = ["in.npy", "./in.npy", "sub/../in.npy", "link_to_in.npy", "hard_in.npy", "sub", ".",
           "afile/out.npy", "afile/deeper/out.npy"]
ALLOWED = ["new/deep/out.npy", "sub/out.npy", "existing.npy", "dangling.npy", "link_to_sub/out.npy", "out.txt"]
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
    target.write_bytes(b"old content")

    def full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    assert_one_line_error(*run_call(lambda: safewrite.atomic_write(target, full)), "out.npy", "No space left")
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]


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

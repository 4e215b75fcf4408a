"""Property-based tests of the signal readers and the guarded write path.

Property: every call gives one ``InputError`` line or a correct result, never another
exception, and nothing is written outside the intended path. Example counts are bounded
(``settings``) so the whole file runs in well under a minute.
"""
from __future__ import annotations

import errno
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, assert_one_line_error
from deepdenoise1d import dataset, io, safewrite
from deepdenoise1d.errors import InputError

# database=None: nothing is written into the repository (.hypothesis/).
FUZZ = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def one_line(err: InputError) -> str:
    text = str(err)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    return text


def read_or_refuse(path: Path):
    """``read_signals`` -> (signals, shape), or None after checking the refusal is one line."""
    try:
        return io.read_signals(path)
    except InputError as err:
        one_line(err)
        return None


# --- random bytes -------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".txt", ".npy"]),
       prefix=st.sampled_from([b"", b"\xef\xbb\xbf", b"\x93NUMPY", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"\x80\x04"]))
def test_random_bytes_give_one_line_or_finite_signals(data, suffix, prefix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x{suffix}"
        path.write_bytes(prefix + data)
        result = read_or_refuse(path)
        if result is not None:
            signals, stored = result
            assert signals.ndim == 2 and signals.size == int(np.prod(stored))
            assert signals.dtype in (np.float32, np.float64)
            try:
                io.check_chunk(signals, 0, "x", np.float32)
            except InputError as err:
                one_line(err)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.-+eE ,\t\n\r#naif\ufeff")), max_size=200))
def test_random_number_like_text(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.txt"
        path.write_bytes(text.encode())
        result = read_or_refuse(path)
        if result is not None:
            signals, _ = result
            assert np.isfinite(signals).all()  # .txt values are checked at reading


# --- random .npy headers ------------------------------------------------------------------------

DESCRS = ["<f4", ">f4", "<f8", ">f8", "<f2", "|i1", "<i2", ">i4", "<i8", "|u1", "<u8", "|b1", "<c8", "<c16",
          "|O", "<U4", "|S3", "|V8", "<f16", "<m8[s]", "garbage", [("a", "<f8")], ("<f8", (2,))]
GOOD_DESCRS = ["<f4", ">f4", "<f8", ">f8", "<f2", "|i1", "<i2", ">i4", "<u8"]
DIMS = st.one_of(st.integers(-2, 6), st.sampled_from([10**10, 2**63, 2**70, 10_000_000_000 // 8]))
# Half the shapes are valid, so that valid files are read and compared, not only refused.
SHAPES = st.one_of(st.lists(st.integers(1, 8), min_size=1, max_size=2).map(tuple), st.lists(DIMS, max_size=3).map(tuple),
                   st.sampled_from(["(3,)", "(1.5,)", "('a',)", "[4]", "()"]))


def npy_bytes(descr, fortran, shape, version: int, payload: bytes, raw_header: str | None) -> bytes:
    """An .npy file whose header says exactly what we choose, valid or not."""
    header = raw_header if raw_header is not None else (
        "{'descr': %r, 'fortran_order': %r, 'shape': %s, }" % (descr, fortran, shape if isinstance(shape, str) else repr(shape))
    )
    body = header.encode("latin1", "replace")
    length_format = "<H" if version == 1 else "<I"
    prefix_len = 6 + 2 + struct.calcsize(length_format)
    body += b" " * ((-(prefix_len + len(body) + 1)) % 64) + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack(length_format, len(body)) + body + payload


def expected_array(descr, fortran, shape, payload: bytes):
    """What a correct reader returns for a valid header and enough data, else None."""
    try:
        dtype = np.dtype(descr)
    except TypeError:
        return None
    if isinstance(shape, str) or len(shape) not in (1, 2) or min(shape) <= 0:
        return None
    if dtype.kind not in "fiu" or dtype.names or dtype.subdtype or dtype.itemsize > 8:
        return None
    count = int(np.prod(shape, dtype=object))
    if count * dtype.itemsize > len(payload):
        return None
    flat = np.frombuffer(payload, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").astype(io.compute_dtype(dtype))


@settings(FUZZ, max_examples=200)  # about one file in eight is valid and compared
@given(descr=st.one_of(st.sampled_from(GOOD_DESCRS), st.sampled_from(DESCRS)), fortran=st.booleans(), shape=SHAPES,
       version=st.sampled_from([1, 2, 1, 2, 3]), payload=st.binary(max_size=300), fill=st.booleans(),
       raw_header=st.one_of(st.none(), st.none(), st.none(), st.text(max_size=80)))
def test_random_npy_headers(descr, fortran, shape, version, payload, fill, raw_header):
    if fill and not isinstance(shape, str) and all(0 < d < 50 for d in shape):
        # Often give exactly enough data, so valid headers are read and compared.
        payload = (payload * 400)[: int(np.prod(shape)) * 16] if payload else bytes(int(np.prod(shape)) * 16)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.npy"
        path.write_bytes(npy_bytes(descr, fortran, shape, version, payload, raw_header))
        result = read_or_refuse(path)
        expected = None if raw_header is not None or version == 3 else expected_array(descr, fortran, shape, payload)
        if expected is not None:
            assert result is not None, "a valid .npy was refused"
        event("refused" if result is None else "read and compared" if expected is not None else "read")
        if result is not None and expected is not None:
            signals, stored = result
            assert stored == tuple(shape) and signals.dtype == expected.dtype
            np.testing.assert_array_equal(signals, np.atleast_2d(expected))


# --- text layouts: BOM, separators, line endings, comments ------------------------------------------

VALUES = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**6, 10**6).map(float))


@FUZZ
@given(rows=st.integers(1, 5), cols=st.integers(1, 6), data=st.data(),
       sep=st.sampled_from([" ", "\t", ",", ", ", "  ", " ,"]), bom=st.booleans(), crlf=st.booleans(),
       blank=st.booleans(), comment=st.booleans(), trailing=st.booleans())
def test_txt_layouts_round_trip(rows, cols, data, sep, bom, crlf, blank, comment, trailing):
    values = np.array(data.draw(st.lists(VALUES, min_size=rows * cols, max_size=rows * cols))).reshape(rows, cols)
    newline = "\r\n" if crlf else "\n"
    lines = [sep.join(repr(float(v)) for v in row) + ("  " if trailing else "") for row in values]
    if blank:
        lines.insert(len(lines) // 2, "   ")
    if comment:
        lines.insert(0, "# written by hand")
    text = ("\ufeff" if bom else "") + newline.join(lines) + newline
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.txt"
        path.write_bytes(text.encode("utf-8"))
        signals, stored = io.read_signals(path)
    if cols == 1:  # the original repository's layout: one float per line is one signal
        assert stored == (rows,)
        np.testing.assert_array_equal(signals, values.T)
    else:
        assert stored == (rows, cols)
        np.testing.assert_array_equal(signals, values)


@FUZZ
@given(widths=st.lists(st.integers(1, 5), min_size=2, max_size=6))
def test_txt_rows_of_different_lengths_name_the_row(widths):
    assume(len(set(widths)) > 1 and max(widths) > 1)
    text = "".join(" ".join(["1.5"] * w) + "\n" for w in widths)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.txt"
        path.write_text(text)
        with pytest.raises(InputError) as caught:
            io.read_signals(path)
    first_bad = next(i for i, w in enumerate(widths, start=1) if w != widths[0])
    count = widths[first_bad - 1]
    assert f"line {first_bad} has {count} value{'s' if count != 1 else ''}," in one_line(caught.value)


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


# --- regression tests for malformed and unsafe inputs ----------------------------------------------


def test_npz_renamed_npy(run_call, tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 20)))
    (tmp_path / "a.npz").rename(tmp_path / "a.npy")
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "a.npy")), "a.npy", "zip archive")


def test_pickle_as_npy(run_call, tmp_path):
    import pickle

    (tmp_path / "p.npy").write_bytes(pickle.dumps([1.0, 2.0]))
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "p.npy")), "p.npy", "pickle")


def test_npy_header_declaring_80_gb(run_call, tmp_path):
    path = tmp_path / "big.npy"
    path.write_bytes(npy_bytes("<f8", False, (100_000_000, 100), 1, b"\0" * 800, None))
    assert_one_line_error(*run_call(lambda: io.read_signals(path)), "big.npy", "80.0 GB", "800 bytes")


def test_txt_with_byte_order_mark(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeff1.5\r\n-2\r\n3e1\r\n".encode("utf-8"))
    signals, stored = io.read_signals(tmp_path / "bom.txt")
    np.testing.assert_array_equal(signals, [[1.5, -2.0, 30.0]])
    assert stored == (3,)


@pytest.mark.parametrize("delimiter", [" ", ","])
def test_savetxt_of_an_n_by_l_array(tmp_path, delimiter):
    values = np.random.default_rng(0).normal(size=(4, 30))
    np.savetxt(tmp_path / "rows.txt", values, delimiter=delimiter)
    signals, stored = io.read_signals(tmp_path / "rows.txt")
    np.testing.assert_array_equal(signals, values)
    assert stored == (4, 30)
    io.write_signals(tmp_path / "back.txt", signals, like_shape=stored)
    np.testing.assert_array_equal(io.read_signals(tmp_path / "back.txt")[0], values)


def test_float32_range_is_checked_before_casting(run_call, tmp_path):
    signals = np.zeros((3, 40))
    signals[2, 17] = 1e39  # finite in float64, inf in float32
    np.save(tmp_path / "big.npy", signals)
    read, _ = io.read_signals(tmp_path / "big.npy")
    io.check_chunk(read, 0, "big.npy", np.float64)  # fine when computing in float64
    code, err = run_call(lambda: [None for _ in io.iter_chunks(read, 2, "big.npy", np.float32)])
    assert_one_line_error(code, err, "big.npy", "signal 2", "index 17", "float32")


def test_float32_input_stays_float32_and_is_memory_mapped(tmp_path):
    np.save(tmp_path / "f.npy", np.ones((5, 20), np.float32))
    np.save(tmp_path / "i.npy", np.ones((5, 20), np.int16))
    signals, _ = io.read_signals(tmp_path / "f.npy")
    assert signals.dtype == np.float32 and isinstance(signals, np.memmap)
    assert io.read_signals(tmp_path / "i.npy")[0].dtype == np.float64


@pytest.mark.parametrize("dtype", [np.complex128, np.bool_, object])
def test_complex_bool_object_npy_refused(run_call, tmp_path, dtype):
    array = np.zeros((2, 20), dtype=dtype)
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "x.npy")), "x.npy")


def test_labels_of_different_length_name_the_file(run_call, tmp_path):
    for i in range(3):
        io.write_txt(tmp_path / "data" / f"{i}.txt", np.zeros(50))
        io.write_txt(tmp_path / "labels" / f"{i}.txt", np.zeros(50 if i != 1 else 49))
    code, err = run_call(lambda: dataset.read_folder_dataset(tmp_path))
    assert_one_line_error(code, err, str(tmp_path / "labels" / "1.txt"), "length 49", "50")


def test_data_files_of_different_length_name_the_file(run_call, tmp_path):
    for i in range(3):
        io.write_txt(tmp_path / "data" / f"{i}.txt", np.zeros(50 if i != 2 else 60))
    code, err = run_call(lambda: dataset.read_folder_dataset(tmp_path, require_labels=False))
    assert_one_line_error(code, err, "2.txt", "length 60", "0.txt")


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


def test_importing_io_changes_no_process_state():
    code = ("import os; calls = []; real = os.umask\n"
            "os.umask = lambda m: calls.append(m) or real(m)\n"
            "import deepdenoise1d.io, deepdenoise1d.safewrite, deepdenoise1d.dataset, deepdenoise1d.classical; print(calls)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_a_failed_write_removes_only_its_own_temp(tmp_path):
    (tmp_path / ".user.tmp").write_text("mine")
    (tmp_path / ".out.npy.999x0000-abcd.tmp").write_text("another process's temp")

    def fail(f):
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(InputError, match="I/O error"):
        safewrite.atomic_write(tmp_path / "out.npy", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.npy.999x0000-abcd.tmp", ".user.tmp"]
    assert not hasattr(safewrite, "remove_stale_temps")  # it deleted other runs' temps and user files

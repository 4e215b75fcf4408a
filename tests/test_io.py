"""deepdenoise1d/io.py: the .txt and .npy readers and writers and their value checks, with property-based tests.

Property: every read gives one ``InputError`` line or a correct result, never another exception.
Example counts are bounded (``FUZZ`` in conftest.py) so the file runs in well under a minute.
"""
from __future__ import annotations

import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from conftest import FUZZ, REPO_ROOT, assert_one_line_error, one_line
from deepdenoise1d import io
from deepdenoise1d.errors import InputError


def test_txt_round_trip(tmp_path):
    signal = np.random.default_rng(0).normal(size=100) * 7
    io.write_txt(tmp_path / "s.txt", signal)
    np.testing.assert_allclose(io.read_txt(tmp_path / "s.txt"), signal, rtol=1e-8)
    signals, stored = io.read_signals(tmp_path / "s.txt")
    assert signals.shape == (1, 100) and stored == (100,)


@pytest.mark.parametrize("shape", [(100,), (7, 100)])
def test_npy_round_trip(tmp_path, shape):
    signals = np.random.default_rng(1).normal(size=shape)
    io.write_signals(tmp_path / "s.npy", np.atleast_2d(signals), like_shape=shape)
    np.testing.assert_array_equal(io.read_npy(tmp_path / "s.npy"), signals)
    read, stored = io.read_signals(tmp_path / "s.npy")
    assert read.shape == np.atleast_2d(signals).shape and stored == shape


# --- bad input: one line on stderr, exit 2 ---------------------------------------------------


def test_missing_file(run_call, tmp_path):
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "nope.txt")), "nope.txt", "no such file")


def test_empty_file(run_call, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "empty.txt")), "empty.txt", "empty")


def test_non_numeric_line_names_file_and_line(run_call, tmp_path):
    (tmp_path / "bad.txt").write_text("1.0\n2.0\nhello\n")
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "bad.txt")), "bad.txt", "line 3")


def test_nan_in_npy_names_signal_and_index(run_call, tmp_path):
    signals = np.zeros((3, 50))
    signals[1, 7] = np.nan
    np.save(tmp_path / "nan.npy", signals)
    read, _ = io.read_signals(tmp_path / "nan.npy")  # values are checked per chunk, not at open
    assert_one_line_error(*run_call(lambda: io.check_chunk(read[1:], 1, "nan.npy", np.float32)), "nan.npy", "signal 1", "index 7")
    assert_one_line_error(*run_call(lambda: io.read_npy(tmp_path / "nan.npy")), "nan.npy", "signal 1", "index 7")


def test_inf_in_txt_names_index(run_call, tmp_path):
    (tmp_path / "inf.txt").write_text("0\n1\ninf\n")
    assert_one_line_error(*run_call(lambda: io.read_signals(tmp_path / "inf.txt")), "inf.txt", "signal 0", "index 2")


# --- random bytes -------------------------------------------------------------------------------


def read_or_refuse(path: Path):
    """``read_signals`` -> (signals, shape), or None after checking the refusal is one line."""
    try:
        return io.read_signals(path)
    except InputError as err:
        one_line(err)
        return None


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


# --- malformed and unsafe inputs, one by one -----------------------------------------------------


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


def test_importing_io_changes_no_process_state():
    code = ("import os; calls = []; real = os.umask\n"
            "os.umask = lambda m: calls.append(m) or real(m)\n"
            "import deepdenoise1d.io, deepdenoise1d.safewrite, deepdenoise1d.dataset, deepdenoise1d.classical; print(calls)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "[]"


# --- numbers: ASCII decimal only; decimal commas refused, never misread -----------------------------


STRICT_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:nan|inf|infinity))")


@pytest.mark.parametrize("text, reason", [
    ("1,5\t2,25\t3,5\n", "decimal comma"),  # tab-separated decimal commas: not six values
    ("1,5;2,25\n", "decimal comma"),
    ("1,5 2,25\n", "decimal comma"),
    ("3,14\n2,72\n", "decimal comma"),  # one value per line with a decimal comma: not two-value rows
    ("1_000\n2\n", "'_' digit separators"),
    ("\u0661\u0662\u0663\n2\n", "non-ASCII"),  # Arabic-Indic digits
    ("\uff11\uff12\n2\n", "non-ASCII"),  # full-width digits
])
def test_ambiguous_or_non_ascii_numbers_are_refused_with_the_line(run_call, tmp_path, text, reason):
    path = tmp_path / "x.txt"
    path.write_text(text, encoding="utf-8")
    assert_one_line_error(*run_call(lambda: io.read_signals(path)), "x.txt", "line 1", reason)


def test_a_refused_line_is_never_quoted(run_call, tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("1.5\nroot:x:0:0:topsecret\n")  # after a value: not a header row
    code, err = run_call(lambda: io.read_signals(path))
    assert_one_line_error(code, err, "x.txt", "line 2", "not a number")
    assert "topsecret" not in err and "x:0:0" not in err


def test_csv_layouts_that_are_not_ambiguous_still_read(tmp_path):
    for text, want in (("1.5, 2.5, 3\n", [1.5, 2.5, 3]), ("1.5,2.5,3,\n", [1.5, 2.5, 3]), ("1;2;3.5\n", [1, 2, 3.5]),
                       ("1,2,3\n", [1, 2, 3])):
        (tmp_path / "x.txt").write_text(text)
        np.testing.assert_array_equal(io.read_signals(tmp_path / "x.txt")[0], [want])


@FUZZ
@given(text=st.one_of(st.text(max_size=12), st.text(alphabet=st.sampled_from(list("0123456789.eE+-_ naifINF\u0661\uff11")),
                                                      max_size=12)))
def test_number_parser_accepts_exactly_the_strict_ascii_decimal_grammar(text):
    strict = STRICT_NUMBER.fullmatch(text.strip(" \t\r\n")) is not None
    try:
        value = io.parse_number(text)
    except ValueError:
        assert not strict
    else:
        assert strict
        assert value == float(text) or (np.isnan(value) and np.isnan(float(text)))


FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)


@FUZZ
@given(rows=st.integers(1, 4), cols=st.integers(2, 6), data=st.data(), sep=st.sampled_from([" ", ",", "\t", ";", ", ", " ; "]),
       comma_sep=st.sampled_from([" ", "\t", ";"]))
def test_written_arrays_read_back_exactly_and_decimal_commas_are_refused(rows, cols, data, sep, comma_sep):
    values = np.array(data.draw(st.lists(FINITE, min_size=rows * cols, max_size=rows * cols))).reshape(rows, cols)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.txt"
        path.write_text("".join(sep.join(repr(float(v)) for v in row) + "\n" for row in values))
        np.testing.assert_array_equal(io.read_signals(path)[0], values)
        # The same rows with decimal commas, between separators that are not bare commas: refused, never misread.
        text = "".join(comma_sep.join(f"{v:.3f}".replace(".", ",") for v in row) + "\n" for row in values)
        path.write_text(text)
        with pytest.raises(InputError, match="line 1 .*decimal comma"):
            io.read_signals(path)


# ---------------------------------------------------------------------------
# Streaming readers: any size in bounded memory, any dtype converted block by block

STREAM_DTYPES = ["<f4", ">f4", "<f8", ">f8", "<f2", "<i2", ">i4", "|u1", "<i8"]


@FUZZ
@given(st.sampled_from(STREAM_DTYPES), st.integers(1, 5), st.integers(16, 300), st.booleans(), st.integers(1, 7))
def test_open_signals_npy_chunks_equal_np_load(dtype, rows, length, flat, chunk):
    rng = np.random.default_rng(rows * 1000 + length)
    values = (rng.normal(size=(rows, length)) * 50).astype(dtype)
    stored = values[0] if flat else values
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, stored)
        signals, shape = io.open_signals(path)
        assert shape == stored.shape and signals.dtype == np.dtype(dtype)  # not converted when opened
        target = io.compute_dtype(dtype)
        blocks = [block for _, block in io.iter_chunks(signals, chunk, "x", target)]
        expected = np.atleast_2d(np.load(path)).astype(target)
        np.testing.assert_array_equal(np.concatenate(blocks), expected)
        del signals, blocks


@FUZZ
@given(st.integers(1, 4), st.integers(2, 200), st.sampled_from([".txt", ".csv"]), st.booleans())  # one value per line is one signal
def test_open_signals_text_equals_np_loadtxt(rows, length, suffix, header):
    values = np.random.default_rng(rows * 1000 + length).normal(size=(rows, length)) * 10
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        one_column = rows == 1
        stored = values[0] if one_column else values
        np.savetxt(path, stored, fmt="%.17g", delimiter="," if suffix == ".csv" else " ",
                   header="amplitude" if header and one_column else "", comments="")
        signals, shape = io.open_signals(path)
        expected = np.loadtxt(path, delimiter="," if suffix == ".csv" else None, skiprows=int(header and one_column),
                              ndmin=2)
        expected = expected.T if one_column else expected
        assert shape == stored.shape
        np.testing.assert_array_equal(np.asarray(signals), expected)
        del signals


def test_text_reader_streams_in_blocks(tmp_path, monkeypatch):
    # Small blocks: lines cut across block boundaries, the byte-order mark, and several flushes.
    monkeypatch.setattr(io, "TEXT_BLOCK", 7)
    monkeypatch.setattr(io, "TEXT_ROWS", 3)
    record = np.arange(20) * 0.5 - 3
    path = tmp_path / "r.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(["# comment", "value", *map(str, record)]).encode())
    signals, shape = io.open_signals(path)
    assert shape == (20,)
    np.testing.assert_array_equal(np.asarray(signals)[0], record)


def test_text_reader_names_the_index_of_a_bad_value_in_a_long_record(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "TEXT_ROWS", 4)
    path = tmp_path / "r.txt"
    path.write_text("\n".join(["1"] * 9 + ["nan"] + ["2"] * 3) + "\n")
    with pytest.raises(InputError, match=r"signal 0 has a non-finite value \(nan\) at index 9"):
        io.open_signals(path)


def test_header_only_on_the_first_data_line_and_never_a_number_word(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("1.0\namplitude\n2.0\n")
    with pytest.raises(InputError, match="line 2"):
        io.open_signals(path)
    path.write_text("1.0x\n2.0\n")  # not a word: a bad number, not a header
    with pytest.raises(InputError, match="line 1"):
        io.open_signals(path)
    path.write_text("inf\n2.0\n")  # a number word: a value, refused as not finite
    with pytest.raises(InputError, match="non-finite"):
        io.open_signals(path)


def test_check_span_names_signal_and_index_of_a_flat_stretch():
    raw = np.array([1.0, 2.0, np.inf, 4.0])
    with pytest.raises(InputError, match=r"signal 2 has a non-finite value \(inf\) at index 1"):
        io.check_span(raw, 9, 5, "x")  # raw[2] is flat index 11 of signals of length 5: signal 2, index 1


def test_write_signals_csv_keeps_the_layout(tmp_path):
    record = np.array([1.5, -2.25, 3.0], dtype=np.float32)
    io.write_signals(tmp_path / "r.csv", record[None], like_shape=(3,))
    assert (tmp_path / "r.csv").read_text().split() == ["1.5", "-2.25", "3"]
    rows = np.arange(6, dtype=np.float64).reshape(2, 3)
    io.write_signals(tmp_path / "s.csv", rows, like_shape=(2, 3))
    assert (tmp_path / "s.csv").read_text().splitlines() == ["0,1,2", "3,4,5"]
    signals, shape = io.open_signals(tmp_path / "s.csv")
    assert shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(signals), rows)


def test_temp_memmap_is_writable_and_anonymous():
    before = set(Path(tempfile.gettempdir()).iterdir())
    out = io.temp_memmap((3, 4), np.float32)
    out[:] = 7
    assert out.dtype == np.float32 and float(out.sum()) == 84
    assert set(Path(tempfile.gettempdir()).iterdir()) == before  # nothing left to clean up


@pytest.mark.parametrize("width", [1, 3])
def test_text_blocks_fast_and_line_paths_agree(tmp_path, monkeypatch, width):
    """Small blocks mix the C fast path (plain rows) with the line parser (comments, a header, blank lines):
    the values are np.loadtxt's, and an error deep in the file names its true line."""
    monkeypatch.setattr(io, "TEXT_BLOCK", 97)
    rng = np.random.default_rng(width)
    values = rng.standard_normal((400, width))
    lines = ["amplitude" if width == 1 else "a b c"] + [" ".join(f"{v:.17g}" for v in row) for row in values]
    lines[150:150] = ["# a comment"]
    lines[200:200] = [""]
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(lines) + "\n")
    signals, shape = io.read_text_signals(path)
    expected = values.ravel() if width == 1 else values
    np.testing.assert_array_equal(np.asarray(signals).reshape(expected.shape), expected)
    lines[350] = lines[350].replace(".", "..", 1)  # a bad value far into the file, on line 351
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="line 351\\b"):
        io.read_text_signals(path)

"""Property tests of the write guard (deepdenoise1d.safewrite): what a file is and which command wrote it decide,
never a forgeable record.

- a device node is never replaceable, whatever the flags and whatever the record says (checked through
  ``guard_output``/``check_replace`` only: nothing here ever writes to a device);
- a FIFO is never opened (no hang) and never replaced;
- a forged or damaged record (hypothesis-made JSON and bytes, entries with a wrong hash, the old per-folder
  record with correct stamps) never makes a file replaceable, and never raises anything but one-line
  refusals (warnings are ``warning:`` lines);
- two outputs of one command at one path (however spelled) with different kinds: the second is refused, and
  a sibling name never inherits a record;
- a file written by command A is replaced by command B only with ``--overwrite`` and the same kind (a
  checkpoint or HDF5 file not even then, unless ``replace_weights``), and by A itself only with the same kind.

Each example runs in a fresh state folder (``DEEPDENOISE1D_STATE_DIR``) and a fresh temp folder. Example counts
are set per property (``max_examples``), so that the file runs in well under a minute.
"""
from __future__ import annotations

import contextlib
import hashlib
import io as _io
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import fail_after, one_line
from deepdenoise1d import safewrite
from deepdenoise1d.errors import InputError


def props(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@contextlib.contextmanager
def fresh_state():
    """A new, private state folder for one example (restores the session's afterwards); warnings reset."""
    previous = os.environ.get(safewrite.STATE_ENV)
    with tempfile.TemporaryDirectory(prefix="dd1d-state-") as folder:
        os.chmod(folder, 0o700)
        os.environ[safewrite.STATE_ENV] = folder
        safewrite._WARNED.clear()
        try:
            yield Path(folder)
        finally:
            safewrite._WARNED.clear()
            if previous is None:
                os.environ.pop(safewrite.STATE_ENV, None)
            else:
                os.environ[safewrite.STATE_ENV] = previous


@contextlib.contextmanager
def stderr_lines():
    """Collect stderr; every line must be a warning (a traceback or stray print fails the property)."""
    buffer = _io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer
    for line in buffer.getvalue().splitlines():
        assert line.startswith("warning: ") and "Traceback" not in line, buffer.getvalue()


def write_record(state: Path, data: bytes) -> None:
    (state / safewrite.STATE_MANIFEST).write_bytes(data)


def record_bytes(files: dict) -> bytes:
    return json.dumps({"format": safewrite.MANIFEST_FORMAT, "files": files}).encode()


def entry(sha256: str, size: int, command: str, kind: str) -> dict:
    return {"sha256": sha256, "size": size, "command": command, "kind": kind}


# --- payloads of every kind ---------------------------------------------------------------------------------


def _zip_checkpoint() -> bytes:
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return buffer.getvalue()


def _np_bytes(save, *args) -> bytes:
    buffer = _io.BytesIO()
    save(buffer, *args)
    return buffer.getvalue()


def _hdf5() -> bytes:
    import h5py

    with tempfile.TemporaryDirectory() as folder:
        with h5py.File(Path(folder) / "w.h5", "w") as f:
            f.attrs["format"] = "icnn_s-weights"
            f.create_dataset("w", data=np.ones(3, np.float32))
        return (Path(folder) / "w.h5").read_bytes()


PAYLOADS = {
    "checkpoint": _zip_checkpoint(), "hdf5": _hdf5(), "npz": _np_bytes(np.savez, np.arange(3.0)),
    "npy": _np_bytes(np.save, np.arange(4.0)), "png": b"\x89PNG\r\n\x1a\n" + bytes(range(32)),
    "pdf": b"%PDF-1.4\n%...", "json": b'{"a": 1}\n', "text": b"1.0\n2.0\n", "binary": bytes(range(256)),
    "empty": b"",
}
KIND = st.sampled_from(sorted(PAYLOADS))
COMMANDS = st.one_of(st.sampled_from(["train.py", "Numpy_test.py", "test.py", "pth2h5.py", "results.py"]),
                     st.text(st.characters(codec="utf-8", categories=("L", "N", "P")), min_size=1, max_size=20))


def same_kind(existing: str, new: str) -> bool:
    """Rule 7: a file is replaced only by one of its own kind; an empty one by any (an empty write counts as text)."""
    return existing == "empty" or (new if new != "empty" else "text") == existing


def write(path: Path, kind: str, command: str | None = None, overwrite: bool = False,
          replace_weights: bool = False) -> bool:
    """atomic_write ``PAYLOADS[kind]`` to ``path`` under ``command`` -> True when written, False when refused."""
    try:
        with safewrite.write_policy(overwrite=overwrite, command=command):
            safewrite.atomic_write(path, lambda f: f.write(PAYLOADS[kind]), replace_weights=replace_weights)
        return True
    except InputError as err:
        one_line(err)
        return False


# --- device nodes: never replaceable; nothing here writes to one --------------------------------------------

DEVICES = [d for d in ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom", "/dev/random")
           if os.path.exists(d) and stat.S_ISCHR(os.stat(d).st_mode)]


@pytest.mark.skipif(not DEVICES, reason="no character devices")
@props(100)
@given(device=st.sampled_from(DEVICES), spelling=st.sampled_from(["plain", "dotdot", "link"]),
       kind=st.one_of(st.none(), KIND), overwrite=st.booleans(), tracked_ok=st.booleans(),
       replace_weights=st.booleans(), command=COMMANDS, forge=st.booleans(), size=st.integers(0, 2**40))
def test_a_device_is_never_replaceable(device, spelling, kind, overwrite, tracked_ok, replace_weights, command,
                                       forge, size):
    before = os.stat(device)
    with fresh_state() as state, tempfile.TemporaryDirectory() as folder, stderr_lines():
        path = {"plain": Path(device), "dotdot": Path("/dev/../dev") / Path(device).name,
                "link": Path(folder) / "out.json"}[spelling]
        if spelling == "link":
            path.symlink_to(device)
        if forge:  # an entry naming the device, as this very command, with the empty content's hash
            write_record(state, record_bytes({device: entry(hashlib.sha256(b"").hexdigest(), size, command,
                                                            kind or "empty")}))
        with safewrite.write_policy(command=command):
            with pytest.raises(InputError, match="device, FIFO or socket|is not writable") as refused:
                safewrite.guard_output(path, kind=kind, overwrite=overwrite, tracked_ok=tracked_ok,
                                       replace_weights=replace_weights, make_parent=False)
            one_line(refused.value)
            with pytest.raises(InputError, match="device, FIFO or socket"):
                safewrite.check_replace(path, kind, safewrite.WritePolicy(overwrite, tracked_ok, command),
                                        replace_weights)
            assert not safewrite.is_recorded(path, kind) and not safewrite.is_recorded(device)
        if spelling == "link":
            assert path.is_symlink()
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    event(f"forged={forge}")


# --- FIFOs: never opened, never replaced ------------------------------------------------------------------


@props(50)
@given(kind=KIND, overwrite=st.booleans(), replace_weights=st.booleans(), forge=st.booleans(),
       through_link=st.booleans())
def test_a_fifo_is_never_opened_nor_replaced(kind, overwrite, replace_weights, forge, through_link):
    with fresh_state() as state, tempfile.TemporaryDirectory() as folder, stderr_lines():
        fifo = Path(folder) / "out.bin"
        os.mkfifo(fifo)
        path = fifo
        if through_link:
            path = Path(folder) / "link.bin"
            path.symlink_to(fifo)
        if forge:  # an exact-looking entry for it, as this command: an empty regular file would be ours
            write_record(state, record_bytes({os.path.realpath(fifo): entry(hashlib.sha256(b"").hexdigest(), 0,
                                                                            safewrite.command_name(), kind)}))
        with fail_after(10):
            with pytest.raises(InputError, match="not a regular file"):
                safewrite.guard_output(path, kind=kind, overwrite=overwrite, replace_weights=replace_weights)
            assert not safewrite.is_recorded(path) and not safewrite.is_recorded(fifo)
            assert not write(path, kind, overwrite=overwrite, replace_weights=replace_weights)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert sorted(p.name for p in Path(folder).iterdir()) == sorted(["out.bin"] + (["link.bin"] if through_link else []))


# --- forged and damaged records ----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30)
HEX = st.text("0123456789abcdef", min_size=64, max_size=64)


@st.composite
def forged_records(draw, key: str, content: bytes, kind: str):
    """Bytes for the record file: garbage, JSON of any shape, or the right format with a wrong-hash entry for ``key``."""
    true_hash = hashlib.sha256(content).hexdigest()
    choice = draw(st.sampled_from(["bytes", "json", "wrong_hash", "bad_fields", "deep", "huge_number"]))
    event(f"record: {choice}")
    if choice == "bytes":
        return draw(st.binary(max_size=300))
    if choice == "json":
        doc = draw(JSON | st.fixed_dictionaries({"format": st.just(safewrite.MANIFEST_FORMAT), "files": JSON}))
        return json.dumps(doc).encode()
    if choice == "wrong_hash":  # everything right but the hash
        sha = draw(HEX.filter(lambda h: h != true_hash))
        command = draw(st.one_of(st.just(safewrite.command_name()), COMMANDS))
        return record_bytes({key: entry(sha, len(content), command, kind)})
    if choice == "bad_fields":  # the true hash, but a field out of the schema (a record this code never writes)
        fields = entry(true_hash, len(content), safewrite.command_name(), kind)
        name = draw(st.sampled_from(sorted(fields) + ["extra"]))
        fields[name] = draw(JSON.filter(lambda v: v != fields.get(name)))
        return json.dumps({"format": safewrite.MANIFEST_FORMAT, "files": {key: fields}}).encode()
    if choice == "deep":
        depth = draw(st.integers(1000, 200_000))
        return b"[" * depth + b"]" * draw(st.sampled_from([0, depth]))
    return record_bytes({key: entry(true_hash, len(content), safewrite.command_name(), kind)}).replace(
        f'"size": {len(content)}'.encode(), draw(st.sampled_from([b'"size": 1e400', b'"size": -1',
                                                                   b'"size": ' + b"9" * 5000, b'"size": NaN'])))


@props(200)
@given(data=st.data(), kind=KIND.filter(lambda k: k != "empty"), tail=st.binary(max_size=32),
       legacy=st.booleans(), overwrite_kind=st.booleans())
def test_a_forged_or_damaged_record_never_makes_a_file_replaceable(data, kind, tail, legacy, overwrite_kind):
    with fresh_state() as state, tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "result.bin"
        content = PAYLOADS[kind] + (tail if kind in ("binary", "text") else b"")
        target.write_bytes(content)  # a user's file: never written by this project
        existing = safewrite.sniff_kind(target)
        write_record(state, data.draw(forged_records(os.path.realpath(target), content, existing)))
        if legacy:  # the old per-folder record, with stamps anyone could read off the file
            info = os.lstat(target)
            (Path(folder) / safewrite.MANIFEST_NAME).write_text(json.dumps(
                {"format": "deepdenoise1d-outputs", "files": {"result.bin": [info.st_size, info.st_mtime_ns, info.st_ino]}}))
        new = existing if not overwrite_kind else data.draw(KIND)
        with stderr_lines():
            assert not safewrite.is_recorded(target)
            assert not safewrite.is_recorded(target, existing)
            written = write(target, new)
            written_guard = True
            try:
                safewrite.guard_output(target, kind=new)
            except InputError as err:
                one_line(err)
                written_guard = False
        assert not written and not written_guard
        assert target.read_bytes() == content
        if legacy:
            assert (Path(folder) / safewrite.MANIFEST_NAME).exists()  # ignored, never deleted


# --- sibling names: two outputs of one command at one path ------------------------------------------------


@props(100)
@given(first=KIND, second=KIND, spelling=st.sampled_from(["same", "dot", "dotdot", "linked_folder"]),
       overwrite=st.booleans(), sibling=st.sampled_from(["{}.json", "{}~", ".{}", "{}.tmp", "X{}", "{}.DAT"]))
def test_two_outputs_of_one_command_at_one_path(first, second, spelling, overwrite, sibling):
    """The second of two outputs of one command that land on one path (however it is spelled) is refused unless it
    is of the first's kind; and no other name (a sibling) inherits the first's record."""
    with fresh_state(), tempfile.TemporaryDirectory() as folder, stderr_lines():
        root = Path(folder)
        (root / "sub").mkdir()
        (root / "alias").symlink_to(root / "sub")
        target = root / "sub" / "out.dat"
        assert write(target, first, command="cmd.py")
        spelled = {"same": target, "dot": root / "sub" / "." / "out.dat", "dotdot": root / "sub" / ".." / "sub" / "out.dat",
                   "linked_folder": root / "alias" / "out.dat"}[spelling]
        replaced = write(spelled, second, command="cmd.py", overwrite=overwrite)
        assert replaced == same_kind(first, second)
        assert target.read_bytes() == PAYLOADS[second if replaced else first]
        event("second replaced" if replaced else "second refused")
        # a sibling name: a user's file there, of the first's kind, stays the user's
        other = root / "sub" / sibling.format("out.dat")
        other.write_bytes(PAYLOADS[first])
        assert not safewrite.is_recorded(other)
        assert not write(other, first, command="cmd.py")
        assert other.read_bytes() == PAYLOADS[first]


# --- kinds x commands ---------------------------------------------------------------------------------------


@props(200)
@given(a=COMMANDS, b=COMMANDS, kind_a=KIND, kind_b=KIND, overwrite=st.booleans(), replace_weights=st.booleans())
def test_a_file_written_by_one_command_is_replaced_by_another_only_with_overwrite(a, b, kind_a, kind_b, overwrite,
                                                                                  replace_weights):
    with fresh_state(), tempfile.TemporaryDirectory() as folder, stderr_lines():
        target = Path(folder) / "out.dat"
        assert write(target, kind_a, command=a)
        assert safewrite.is_recorded(target, command=a) and safewrite.is_recorded(target, kind_a, command=a)
        replaced = write(target, kind_b, command=b, overwrite=overwrite, replace_weights=replace_weights)
        same = same_kind(kind_a, kind_b)
        a_name, b_name = safewrite._clean_command(a), safewrite._clean_command(b)
        if a_name == b_name:
            expected = same  # its own output, of the same kind (rule 7 holds for its own outputs too)
        elif kind_a in safewrite.PROTECTED:
            expected = overwrite and replace_weights and same
        else:
            expected = overwrite and same
        event(f"{'same' if a_name == b_name else 'other'} command, {'same' if same else 'other'} kind: "
              f"{'replaced' if replaced else 'refused'}")
        assert replaced == expected, (a_name, b_name, kind_a, kind_b, overwrite, replace_weights)
        assert target.read_bytes() == PAYLOADS[kind_b if replaced else kind_a]
        assert [p.name for p in Path(folder).iterdir()] == ["out.dat"]  # no temp, no bookkeeping
        if replaced and a_name != b_name:  # now b's: a needs --overwrite to take it back
            assert not write(target, kind_b, command=a)
            assert target.read_bytes() == PAYLOADS[kind_b]

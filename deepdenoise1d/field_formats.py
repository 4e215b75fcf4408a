"""The field's record formats: WAV, miniSEED and SAC (seismology), WFDB (physiology), in and out.

:func:`read_field_record` gives a record as float64 (C, L) channels and what the file says of it
(:class:`FieldMeta`: sampling rate, channel names and units, and the library's own object for the way back);
:func:`write_field_record` writes denoised channels back in the same format, every header field kept but
the data, through the guarded atomic writer (:func:`deepdenoise1d.safewrite.atomic_write`).

- **WAV** (``.wav``, SciPy, always there): each channel a row; the sample rate and the sample type are kept.
  Integer PCM is rounded and clipped to its type's range (one line when anything was clipped); float WAV stays
  float. 24-bit PCM, which SciPy reads as int32, is written as 32-bit PCM.
- **miniSEED** (``.mseed``, ``.miniseed``, ``.msd``) and **SAC** (``.sac``), ObsPy (``pip install
  'research-on-deep-denoising[seismo]'``): each Trace a channel (traces of different lengths or rates each
  denoised on its own); its stats (network, station, location, channel, starttime, sampling_rate, and the
  format's own header: ``stats.mseed``, ``stats.sac``) kept, its data replaced. Float traces keep their float
  type; integer traces (counts) are written as float64 (miniSEED encoding FLOAT64), said in one line, since
  denoised values are no longer whole counts. SAC stores float32 only.
- **WFDB** (``.hea`` with its ``.dat``), wfdb (``pip install 'research-on-deep-denoising[wfdb]'``): its
  signals (physical units) are the channels; fs, signal names, units, storage format (``fmt``), comments and
  base time/date are kept; the output is ``OUT.hea`` and ``OUT.dat`` (record name = the output's stem), with
  ADC gain and baseline chosen by ``wfdb.wrsamp`` for the denoised range, so nothing clips. NaN samples
  (WFDB's invalid value) are gaps, and are written back as the invalid value.

Channels shorter than the longest come back NaN-padded at the end in the (C, L) array; ``meta.lengths`` gives
each channel's length, and the writer drops the padding. ObsPy and wfdb are imported inside the functions
only: without them, one line names the extra to install.
"""
from __future__ import annotations

import importlib
import io as _io
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from deepdenoise1d.errors import InputError, show_path
from deepdenoise1d.io import check_file
from deepdenoise1d.safewrite import atomic_write, guard_output

PathLike = str | os.PathLike
PACKAGE = "research-on-deep-denoising"
FORMATS = {".wav": "wav", ".mseed": "mseed", ".miniseed": "mseed", ".msd": "mseed", ".sac": "sac", ".hea": "wfdb"}
NAMES = {"wav": "WAV", "mseed": "miniSEED", "sac": "SAC", "wfdb": "WFDB"}
# format -> (the module to import, its name in messages, the extra that installs it)
LIBRARIES = {"mseed": ("obspy", "ObsPy", "seismo"), "sac": ("obspy", "ObsPy", "seismo"), "wfdb": ("wfdb", "wfdb", "wfdb")}
WFDB_NAME = re.compile(r"[-\w]+")  # what wfdb accepts as a record name


@dataclass
class FieldMeta:
    """What a field record's file says of it, beside its samples.

    ``format``: ``wav``, ``mseed``, ``sac`` or ``wfdb``. ``rates``, ``names``, ``units``, ``lengths`` and
    ``dtypes`` are per channel (a unit is None where the format has none). ``files``: every file read (the
    writer never writes over one). ``native``: the library's object the writer starts from (an ObsPy Stream,
    a wfdb Record, or for WAV the sample type).
    """

    format: str
    path: Path
    rates: list[float]
    names: list[str]
    units: list[str | None]
    lengths: list[int]
    dtypes: list[str]
    files: tuple[Path, ...]
    native: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def fs(self) -> float | None:
        """The sampling rate shared by every channel, or None when they differ."""
        return self.rates[0] if self.rates and all(r == self.rates[0] for r in self.rates) else None

    def output_dtype(self) -> np.dtype:
        """float32 when every channel is stored as float32, else float64 (for a ``.npy``/text output)."""
        return np.dtype(np.float32) if all(np.dtype(d) == np.float32 for d in self.dtypes) else np.dtype(np.float64)

    def summary(self) -> dict:
        """JSON-ready: the format and each channel's name, unit, length and rate."""
        return {"format": NAMES[self.format], "channel_names": list(self.names), "units": list(self.units),
                "lengths": list(self.lengths), "rates": list(self.rates)}


def field_format(path: PathLike) -> str | None:
    """``wav``, ``mseed``, ``sac`` or ``wfdb`` from the suffix, else None."""
    return FORMATS.get(Path(path).suffix.lower())


def check_pair(input_path: PathLike, output_path: PathLike) -> str | None:
    """The field format of ``input_path`` (None for .npy/.txt/.csv); refuse, in one line, a field format out from
    another format in (the output format follows the output's suffix; a field format needs its own header)."""
    fmt_in, fmt_out = field_format(input_path), field_format(output_path)
    if fmt_out is not None and fmt_out != fmt_in:
        raise InputError(f"{show_path(output_path)}: a {NAMES[fmt_out]} output needs a {NAMES[fmt_out]} input (its "
                         f"header comes from the input's), got {Path(input_path).suffix or 'no suffix'} in; write "
                         ".npy, .txt or .csv instead")
    return fmt_in


def _library(fmt: str, verb: str, suffix: str):
    """Import the library a format needs, or one line naming the extra that installs it."""
    module, label, extra = LIBRARIES[fmt]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{verb} {suffix} needs {label}: pip install '{PACKAGE}[{extra}]'") from None


def _unreadable(path: Path, fmt: str, err: BaseException) -> InputError:
    detail = " ".join(str(err).split())[:120] or type(err).__name__
    return InputError(f"{show_path(path)}: not a readable {NAMES[fmt]} file ({detail})")


def _stack(channels: list[np.ndarray]) -> np.ndarray:
    """Channels of any lengths as float64 (C, max L), the shorter NaN-padded at the end."""
    out = np.full((len(channels), max(c.size for c in channels)), np.nan)
    for row, values in zip(out, channels):
        row[: values.size] = values
    return out


# ---------------------------------------------------------------------------
# Reading


def read_field_record(path: PathLike) -> tuple[np.ndarray, FieldMeta]:
    """Read a WAV, miniSEED, SAC or WFDB record: float64 (C, L) channels and its :class:`FieldMeta`.

    Raises
    ------
    InputError
        One line: not a file of that format, no channel, a missing library (naming the extra), inf in the data.
    """
    path = Path(path)
    fmt = field_format(path)
    if fmt is None:
        raise InputError(f"{show_path(path)}: not a field record format (use {', '.join(sorted(FORMATS))})")
    check_file(path)
    reader = {"wav": _read_wav, "mseed": _read_obspy, "sac": _read_obspy, "wfdb": _read_wfdb}[fmt]
    signals, meta = reader(path, fmt)
    if signals.size == 0 or signals.shape[-1] == 0:
        raise InputError(f"{show_path(path)}: holds no samples")
    if np.isinf(signals).any():
        row, col = np.argwhere(np.isinf(signals))[0]
        raise InputError(f"{show_path(path)}: channel {row} has a non-finite value ({signals[row, col]}) at index {col}")
    return signals, meta


def _read_wav(path: Path, fmt: str) -> tuple[np.ndarray, FieldMeta]:
    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # chunks it skips (metadata): not our concern
            rate, data = wavfile.read(path)
    except (ValueError, EOFError, OSError, IndexError, TypeError) as err:
        raise _unreadable(path, fmt, err) from None
    data = np.asarray(data)
    if data.dtype.kind not in "iuf":
        raise InputError(f"{show_path(path)}: WAV samples of type {data.dtype} are not read")
    rows = data[:, None] if data.ndim == 1 else data
    signals = np.ascontiguousarray(rows.T, dtype=np.float64)
    c, length = signals.shape
    meta = FieldMeta("wav", path, [float(rate)] * c, [f"channel {i}" for i in range(c)], [None] * c, [length] * c,
                     [data.dtype.name] * c, (path,), native=data.dtype, extra={"mono": data.ndim == 1})
    return signals, meta


def _read_obspy(path: Path, fmt: str) -> tuple[np.ndarray, FieldMeta]:
    obspy = _library(fmt, "reading", path.suffix.lower())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stream = obspy.read(str(path), format="MSEED" if fmt == "mseed" else "SAC")
    except Exception as err:  # noqa: BLE001  ObsPy raises many types for a file that is not its format
        raise _unreadable(path, fmt, err) from None
    if len(stream) == 0:
        raise InputError(f"{show_path(path)}: holds no trace")
    channels, dtypes = [], []
    for trace in stream:
        data = trace.data
        if data.dtype.kind not in "iuf":
            raise InputError(f"{show_path(path)}: trace {trace.id} holds {data.dtype} samples, not numbers")
        dtypes.append(data.dtype.name)
        channels.append(np.ma.filled(np.ma.asarray(data).astype(np.float64), np.nan))  # a masked gap is a NaN gap
    meta = FieldMeta(fmt, path, [float(t.stats.sampling_rate) for t in stream], [t.id for t in stream],
                     [None] * len(stream), [c.size for c in channels], dtypes, (path,), native=stream)
    return _stack(channels), meta


def _read_wfdb(path: Path, fmt: str) -> tuple[np.ndarray, FieldMeta]:
    wfdb = _library(fmt, "reading", ".hea")
    name = str(path.with_suffix(""))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = wfdb.rdheader(name)
            if any(int(s or 1) != 1 for s in (header.samps_per_frame or [])):
                raise InputError(f"{show_path(path)}: a WFDB record with several samples per frame (signals at "
                                 "different rates) is not read; convert it with wfdb first")
            record = wfdb.rdrecord(name, physical=True)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001  wfdb raises many types for a bad header or a missing .dat
        raise _unreadable(path, fmt, err) from None
    if record.p_signal is None or record.n_sig == 0:
        raise InputError(f"{show_path(path)}: a WFDB header with no signal")
    signals = np.ascontiguousarray(np.asarray(record.p_signal, dtype=np.float64).T)
    c, length = signals.shape
    files = (path,) + tuple(dict.fromkeys(path.parent / f for f in (record.file_name or [])))
    meta = FieldMeta("wfdb", path, [float(record.fs)] * c, list(record.sig_name or [f"signal {i}" for i in range(c)]),
                     list(record.units or [None] * c), [length] * c, ["float64"] * c, files, native=record)
    return signals, meta


# ---------------------------------------------------------------------------
# Writing


def write_field_record(path: PathLike, signals: np.ndarray, meta: FieldMeta, reads: Iterable[PathLike] = (),
                       note: Callable[[str], None] | None = None) -> Path:
    """Write denoised channels (C, L) in ``meta``'s format at ``path``, every header field of ``meta`` kept.

    Parameters
    ----------
    path : path
        The output; its suffix must be of ``meta``'s format (:func:`check_pair`). WFDB: ``OUT.hea`` and
        ``OUT.dat`` beside it.
    signals : np.ndarray
        (C, L) as :func:`read_field_record` gave them (channels NaN-padded to the longest; the padding is
        dropped).
    meta : FieldMeta
        From :func:`read_field_record` of the input.
    reads : iterable of path
        Files the command reads: never written over (``meta.files`` are added).
    note : callable, optional
        Gets each line worth telling (clipping, integer traces written as float); default: stderr.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    check_pair(meta.path, path)
    signals = np.atleast_2d(np.asarray(signals, dtype=np.float64))
    if signals.shape[0] != len(meta.lengths):
        raise ValueError(f"{len(meta.lengths)} channels read, {signals.shape[0]} to write")
    note = note or (lambda line: print(f"warning: {line}", file=sys.stderr))
    reads = tuple(reads) + meta.files
    writer = {"wav": _write_wav, "mseed": _write_obspy, "sac": _write_obspy, "wfdb": _write_wfdb}[meta.format]
    return writer(path, signals, meta, reads, note)


def _write_wav(path: Path, signals: np.ndarray, meta: FieldMeta, reads: tuple, note) -> Path:
    from scipy.io import wavfile

    dtype = np.dtype(meta.native)
    data = signals.T
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        rounded = np.rint(data)
        clipped = int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
        if clipped:
            note(f"{show_path(path)}: {clipped} sample(s) clipped to the {dtype.name} range [{info.min}, {info.max}]")
        data = np.clip(rounded, info.min, info.max).astype(dtype)
    else:
        data = data.astype(dtype)
    if meta.extra.get("mono"):
        data = data[:, 0]
    rate = int(round(meta.rates[0]))
    return atomic_write(path, lambda f: wavfile.write(f, rate, np.ascontiguousarray(data)), reads)


def _write_obspy(path: Path, signals: np.ndarray, meta: FieldMeta, reads: tuple, note) -> Path:
    _library(meta.format, "writing", path.suffix.lower())
    stream = meta.native.copy()
    as_float = 0
    for trace, values, length, stored in zip(stream, signals, meta.lengths, meta.dtypes):
        stored = np.dtype(stored)
        target = np.dtype(np.float32) if meta.format == "sac" or stored == np.float32 else np.dtype(np.float64)
        as_float += stored.kind in "iu"
        data = values[:length].astype(target)
        trace.data = np.ma.masked_invalid(data) if np.isnan(data).any() else data
        if "mseed" in trace.stats:
            trace.stats.mseed.encoding = "FLOAT32" if target == np.float32 else "FLOAT64"
    if as_float:
        note(f"{show_path(path)}: {as_float} integer trace(s) written as {'float32' if meta.format == 'sac' else 'float64'} "
             "(denoised values are not whole counts)")
    if any(isinstance(t.data, np.ma.MaskedArray) for t in stream):
        stream = stream.split()  # a trace with NaN gaps: its stretches as traces of their own (neither format holds NaN)
    fmt = "MSEED" if meta.format == "mseed" else "SAC"
    if fmt == "SAC" and len(stream) != 1:
        raise InputError(f"{show_path(path)}: SAC holds one trace; the denoised record has {len(stream)} "
                         "(NaN gaps split it): write .npy instead")

    def write(f) -> None:
        buffer = _io.BytesIO()  # ObsPy writes to a file object; the bytes then go through the guarded write
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stream.write(buffer, format=fmt)
        f.write(buffer.getvalue())

    return atomic_write(path, write, reads)


def _write_wfdb(path: Path, signals: np.ndarray, meta: FieldMeta, reads: tuple, note) -> Path:
    wfdb = _library("wfdb", "writing", ".hea")
    name = path.stem
    if path.suffix != ".hea" or not WFDB_NAME.fullmatch(name):
        raise InputError(f"{show_path(path)}: a WFDB record is NAME.hea with NAME of letters, digits, '_' and '-'")
    record = meta.native
    dat = path.with_suffix(".dat")
    guard_output(path, reads)
    guard_output(dat, reads)
    with tempfile.TemporaryDirectory(prefix="deepdenoise1d-wfdb-") as scratch:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wfdb.wrsamp(name, fs=record.fs, units=list(meta.units), sig_name=list(meta.names),
                            p_signal=np.ascontiguousarray(signals.T), fmt=list(record.fmt),
                            comments=list(record.comments or []), base_time=record.base_time,
                            base_date=record.base_date, write_dir=scratch)
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001  wfdb's own checks (a format it cannot write, ...)
            detail = " ".join(str(err).split())[:120] or type(err).__name__
            raise InputError(f"{show_path(path)}: wfdb could not write the record ({detail})") from None
        written = {Path(scratch) / f"{name}.dat": dat, Path(scratch) / f"{name}.hea": path}
        for source, target in written.items():  # the .dat first: the header never names a missing file
            atomic_write(target, lambda f, source=source: _copy(source, f), reads)
    return path


def _copy(source: Path, f) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, f)

"""The field's record formats (deepdenoise1d/field_formats.py): WAV, miniSEED, SAC, WFDB, in and out.

Each test file is written by the format's own library (scipy's wavfile, ObsPy, wfdb); a 3-channel record
comes back as 3 channels with its header fields, each channel denoised on its own. ObsPy and wfdb are optional
extras: their tests are skipped where they are not installed, and the message without them is checked in a
subprocess that blocks the import.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from conftest import REPO_ROOT, assert_one_line_error
from conftest import run_command as run
from deepdenoise1d.errors import InputError
from deepdenoise1d.field_formats import read_field_record, write_field_record

FS = 100.0
LENGTH = 2000
T = np.arange(LENGTH) / FS
AMPLITUDES = np.array([[400.0], [250.0], [600.0]])
CLEAN = AMPLITUDES * np.stack([np.sin(2 * np.pi * 0.5 * T), np.cos(2 * np.pi * 0.3 * T),
                               np.sin(2 * np.pi * 0.2 * T) + (T > 12)])  # smooth channels, one with a step
NOISY = CLEAN + AMPLITUDES / 10 * np.random.default_rng(0).standard_normal(CLEAN.shape)


def rmse(a, b) -> float:
    return float(np.sqrt(np.nanmean((np.asarray(a, dtype=np.float64) - b) ** 2)))


def assert_each_channel_denoised(denoised: np.ndarray, clean=CLEAN, noisy=NOISY, factor=0.6) -> None:
    assert denoised.shape == clean.shape
    for row in range(clean.shape[0]):
        assert rmse(denoised[row], clean[row]) < factor * rmse(noisy[row], clean[row]), row


# --- WAV: scipy, always there -----------------------------------------------------------------------


def write_wav(path: Path, data: np.ndarray, rate: int = 8000) -> Path:
    wavfile.write(path, rate, data)
    return path


def test_wav_int16_round_trip_keeps_rate_dtype_and_channels(tmp_path, capsys):
    source = write_wav(tmp_path / "rec.wav", np.round(NOISY.T).astype(np.int16))
    out, report = tmp_path / "out.wav", tmp_path / "r.json"
    code, stdout, err = run(["denoise", source, out, "--method", "tv", "--json", report], capsys)
    assert code == 0, err
    rate, data = wavfile.read(out)
    assert rate == 8000 and data.dtype == np.int16 and data.shape == (LENGTH, 3)
    assert_each_channel_denoised(data.T)
    assert stdout.count("channel ") >= 3 and "WAV channel(s)" in stdout
    summary = json.loads(report.read_text())
    assert summary["fs"] == 8000.0 and summary["format"] == "WAV" and len(summary["channels"]) == 3


def test_wav_float32_stays_float_and_mono_stays_mono(tmp_path, capsys):
    source = write_wav(tmp_path / "mono.wav", (NOISY[0] / 1000).astype(np.float32), rate=100)
    out = tmp_path / "out.wav"
    code, _, err = run(["denoise", source, out, "--method", "net"], capsys)
    assert code == 0, err
    rate, data = wavfile.read(out)
    assert rate == 100 and data.dtype == np.float32 and data.shape == (LENGTH,)
    assert rmse(data, CLEAN[0] / 1000) < 0.6 * rmse(NOISY[0] / 1000, CLEAN[0] / 1000)


def test_wav_integer_output_is_rounded_and_clipped_with_one_line(tmp_path):
    source = write_wav(tmp_path / "rec.wav", np.zeros((100, 2), np.int16))
    signals, meta = read_field_record(source)
    signals[0, :3] = [40000.0, -40000.0, 1.6]
    lines = []
    write_field_record(tmp_path / "out.wav", signals, meta, note=lines.append)
    _, data = wavfile.read(tmp_path / "out.wav")
    assert data[:3, 0].tolist() == [32767, -32768, 2]
    assert len(lines) == 1 and "2 sample(s) clipped to the int16 range" in lines[0]


def test_a_field_format_out_needs_the_same_format_in(tmp_path, capsys):
    np.save(tmp_path / "rec.npy", NOISY)
    code, _, err = run(["denoise", tmp_path / "rec.npy", tmp_path / "out.wav", "--method", "tv"], capsys)
    assert_one_line_error(code, err, "out.wav", "a WAV output needs a WAV input")
    source = write_wav(tmp_path / "rec.wav", np.round(NOISY.T).astype(np.int16))
    code, _, err = run(["denoise", source, tmp_path / "out.mseed", "--method", "tv"], capsys)
    assert_one_line_error(code, err, "a miniSEED output needs a miniSEED input")


def test_a_field_record_may_go_to_npy(tmp_path, capsys):
    source = write_wav(tmp_path / "rec.wav", np.round(NOISY.T).astype(np.int16))
    code, _, err = run(["denoise", source, tmp_path / "out.npy", "--method", "tv"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "out.npy").shape == (3, LENGTH)


def test_a_file_that_is_not_its_format_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all")
    code, _, err = run(["denoise", tmp_path / "bad.wav", tmp_path / "out.wav", "--method", "tv"], capsys)
    assert_one_line_error(code, err, "bad.wav", "not a readable WAV file")


# --- miniSEED and SAC: ObsPy ------------------------------------------------------------------------


def traces(obspy, data=NOISY, rates=(FS, FS, FS), dtype=np.int32):
    start = obspy.UTCDateTime(2024, 3, 1, 12, 30)
    out = []
    for values, channel, rate in zip(data, "ENZ", rates):
        trace = obspy.Trace(np.round(values).astype(dtype) if np.dtype(dtype).kind == "i" else values.astype(dtype))
        trace.stats.update({"network": "XX", "station": "ABC", "location": "00", "channel": f"HH{channel}",
                            "sampling_rate": rate, "starttime": start})
        out.append(trace)
    return obspy.Stream(out)


STATS = ("network", "station", "location", "channel", "starttime", "sampling_rate", "npts")


@pytest.mark.parametrize("method", ["tv", "net"])
def test_mseed_round_trip_keeps_each_traces_stats(tmp_path, capsys, method):
    obspy = pytest.importorskip("obspy")
    source, out, report = tmp_path / "quake.mseed", tmp_path / "out.mseed", tmp_path / "r.json"
    traces(obspy).write(str(source), format="MSEED")
    code, _, err = run(["denoise", source, out, "--method", method, "--json", report], capsys)
    assert code == 0, err
    assert "3 integer trace(s) written as float64" in err
    before, after = obspy.read(str(source)), obspy.read(str(out))
    assert len(after) == 3
    for a, b in zip(before, after):
        assert all(a.stats[key] == b.stats[key] for key in STATS)
        assert b.data.dtype == np.float64 and b.stats.mseed.encoding == "FLOAT64"
    assert_each_channel_denoised(np.stack([t.data for t in after]))
    assert json.loads(report.read_text())["fs"] == FS


def test_mseed_traces_of_different_lengths_and_rates_each_denoised_alone(tmp_path, capsys):
    obspy = pytest.importorskip("obspy")
    stream = traces(obspy, rates=(FS, 50.0, FS), dtype=np.float32)
    stream[2].data = stream[2].data[:1500]
    source, out, report = tmp_path / "mixed.mseed", tmp_path / "out.mseed", tmp_path / "r.json"
    stream.write(str(source), format="MSEED")
    code, _, err = run(["denoise", source, out, "--method", "tv", "--sigma", "20", "--json", report], capsys)
    assert code == 0, err
    after = obspy.read(str(out))
    assert [t.stats.npts for t in after] == [2000, 2000, 1500]
    assert [t.stats.sampling_rate for t in after] == [FS, 50.0, FS]
    assert all(t.data.dtype == np.float32 for t in after)
    assert json.loads(report.read_text())["fs"] is None  # no one rate: the plot and JSON go by sample
    from deepdenoise1d.scoreboard import classical_candidates

    alone = classical_candidates(20.0)["tv"](stream[2].data.astype(np.float64)[None])[0]
    np.testing.assert_allclose(after[2].data, alone, rtol=1e-6, atol=1e-3)  # float32 on the way out


def test_sac_round_trip_keeps_its_header(tmp_path, capsys):
    obspy = pytest.importorskip("obspy")
    source, out = tmp_path / "quake.sac", tmp_path / "out.sac"
    traces(obspy, dtype=np.float32)[2:].write(str(source), format="SAC")
    code, _, err = run(["denoise", source, out, "--method", "wavelet_ti_sym8_bayes"], capsys)
    assert code == 0, err
    before, after = obspy.read(str(source))[0], obspy.read(str(out))[0]
    assert all(before.stats[key] == after.stats[key] for key in STATS)
    assert after.stats.sac.kstnm == "ABC" and after.stats.sac.kcmpnm == "HHZ"
    assert after.data.dtype == np.float32
    assert rmse(after.data, CLEAN[2]) < 0.6 * rmse(NOISY[2], CLEAN[2])


# --- WFDB -------------------------------------------------------------------------------------------


def write_wfdb(wfdb, folder: Path, signals=NOISY, name="ecg") -> Path:
    wfdb.wrsamp(name, fs=250, units=["mV", "mV", "uV"], sig_name=["I", "II", "V1"], p_signal=signals.T / 100,
                fmt=["16"] * 3, comments=["age: 61"], write_dir=str(folder))
    return folder / f"{name}.hea"


@pytest.mark.parametrize("method", ["auto", "net"])
def test_wfdb_round_trip_keeps_its_header(tmp_path, capsys, method):
    wfdb = pytest.importorskip("wfdb")
    keep = slice(0, 1000)  # --method auto scores every candidate on every channel: a shorter record
    source, out, report = write_wfdb(wfdb, tmp_path, NOISY[:, keep]), tmp_path / "clean.hea", tmp_path / "r.json"
    code, _, err = run(["denoise", source, out, "--method", method, "--json", report], capsys)
    assert code == 0, err
    assert (tmp_path / "clean.dat").is_file()
    before, after = wfdb.rdrecord(str(source.with_suffix(""))), wfdb.rdrecord(str(out.with_suffix("")))
    assert (after.fs, after.sig_name, after.units, after.fmt, after.comments) == \
        (before.fs, before.sig_name, before.units, before.fmt, before.comments)
    assert_each_channel_denoised(after.p_signal.T, CLEAN[:, keep] / 100, NOISY[:, keep] / 100)
    summary = json.loads(report.read_text())
    assert summary["fs"] == 250.0 and summary["channel_names"] == ["I", "II", "V1"]


def test_wfdb_gaps_stay_gaps(tmp_path, capsys):
    wfdb = pytest.importorskip("wfdb")
    noisy = NOISY.copy()
    noisy[1, 500:540] = np.nan  # WFDB's invalid sample
    source, out = write_wfdb(wfdb, tmp_path, noisy), tmp_path / "clean.hea"
    code, _, err = run(["denoise", source, out, "--method", "tv"], capsys)
    assert code == 0, err
    assert "channel 1 (II): 1 gap (40 samples) kept as NaN; 2 stretches denoised" in err
    after = wfdb.rdrecord(str(out.with_suffix(""))).p_signal.T
    assert np.array_equal(np.isnan(after), np.isnan(noisy))


# --- without the extras -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, module, message", [
    (".mseed", "obspy", "reading .mseed needs ObsPy: pip install 'research-on-deep-denoising[seismo]'"),
    (".sac", "obspy", "reading .sac needs ObsPy: pip install 'research-on-deep-denoising[seismo]'"),
    (".hea", "wfdb", "reading .hea needs wfdb: pip install 'research-on-deep-denoising[wfdb]'"),
])
def test_a_missing_library_names_the_extra_in_one_line(tmp_path, suffix, module, message):
    source = tmp_path / f"rec{suffix}"
    source.write_bytes(b"\0" * 64)
    script = (f"import sys; sys.modules[{module!r}] = None\n"  # the import fails as if it were not installed
              "import deepdenoise1d_command\n"
              f"sys.exit(deepdenoise1d_command.main(['denoise', {str(source)!r}, {str(tmp_path / ('out' + suffix))!r}]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert_one_line_error(done.returncode, done.stderr, message)


def test_reading_without_the_library_raises_the_same_line(monkeypatch, tmp_path):
    (tmp_path / "rec.mseed").write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "obspy", None)
    with pytest.raises(InputError, match=r"reading \.mseed needs ObsPy: pip install"):
        read_field_record(tmp_path / "rec.mseed")

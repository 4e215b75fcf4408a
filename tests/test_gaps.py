"""NaN gaps kept as gaps: the finite stretches between them denoised each on its own, the NaN kept in place.

The network's path (--method net, streamed), a named method and --method auto (SURE summed over the
stretches), .npy and text inputs, a table's column, --channels; a stretch too short written back unchanged;
a record that is all NaN, and inf, refused in one line.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error
from conftest import run_command as run
from deepdenoise1d import io
from deepdenoise1d.frontend import rank_stretches
from deepdenoise1d.scoreboard import classical_candidates, rank

LENGTH = 3000
GAPS = ((700, 720), (1500, 1510), (2300, 2340))  # three gaps: four stretches, each longer than a 512 window
GAP_LINE = "3 gaps (70 samples) kept as NaN; 4 stretches denoised"


def record(gaps=GAPS, length=LENGTH, seed=0, noise=0.2) -> np.ndarray:
    t = np.linspace(0, 1, length)
    y = np.sin(2 * np.pi * 3 * t) + (t > 0.6) + noise * np.random.default_rng(seed).standard_normal(length)
    for a, b in gaps:
        y[a:b] = np.nan
    return y


def save(path: Path, values: np.ndarray) -> Path:
    if path.suffix == ".npy":
        np.save(path, values)
    else:
        path.write_text("".join(f"{v!r}\n" for v in values.tolist()))
    return path


def load(path: Path) -> np.ndarray:
    return np.load(path) if path.suffix == ".npy" else np.loadtxt(path)


def stretches(values: np.ndarray) -> list[tuple[int, int]]:
    gaps = io.scan_gaps(values[None], "x")
    return gaps.stretches(0) if gaps is not None else [(0, values.size)]


def alone(tmp_path: Path, values: np.ndarray, a: int, b: int, flags: list, capsys) -> np.ndarray:
    """The stretch values[a:b] denoised as a record of its own, by the same command."""
    source, out = save(tmp_path / f"alone_{a}.npy", values[a:b]), tmp_path / f"alone_{a}_out.npy"
    code, _, err = run(["denoise", source, out, *flags], capsys)
    assert code == 0, err
    return np.load(out)


@pytest.mark.parametrize("suffix", [".npy", ".txt"])
def test_network_path_keeps_gaps_and_each_stretch_equals_it_alone(tmp_path, capsys, suffix):
    values = record()
    source, out = save(tmp_path / f"gaps{suffix}", values), tmp_path / f"out{suffix}"
    code, _, err = run(["denoise", source, out, "--method", "net"], capsys)
    assert code == 0, err
    assert GAP_LINE in err
    denoised = load(out)
    assert np.array_equal(np.isnan(denoised), np.isnan(values))  # NaN exactly where the input's are
    for a, b in stretches(values):
        expected = alone(tmp_path, values, a, b, ["--method", "net"], capsys)
        np.testing.assert_allclose(denoised[a:b], expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    clean = record((), noise=0.0)
    assert np.sqrt(np.nanmean((denoised - clean) ** 2)) < 0.6 * np.sqrt(np.nanmean((values - clean) ** 2))


@pytest.mark.parametrize("suffix", [".npy", ".txt"])
def test_named_method_keeps_gaps_and_each_stretch_equals_it_alone(tmp_path, capsys, suffix):
    values = record()
    source, out = save(tmp_path / f"gaps{suffix}", values), tmp_path / f"out{suffix}"
    flags = ["--method", "wavelet_ti_sym8_bayes", "--sigma", "0.2"]
    code, _, err = run(["denoise", source, out, *flags], capsys)
    assert code == 0, err
    assert GAP_LINE in err
    denoised = load(out)
    assert np.array_equal(np.isnan(denoised), np.isnan(values))
    method = classical_candidates(0.2)["wavelet_ti_sym8_bayes"]
    for a, b in stretches(values):
        expected = method(values[a:b][None])[0]
        np.testing.assert_allclose(denoised[a:b], expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(denoised[a:b], alone(tmp_path, values, a, b, flags, capsys), rtol=1e-10, atol=1e-12)


def test_auto_sums_sure_over_the_stretches_and_applies_its_choice_to_each(tmp_path, capsys):
    values = record(length=1200, gaps=((300, 310), (700, 705), (1000, 1012)))
    source, out, report = save(tmp_path / "gaps.npy", values), tmp_path / "out.npy", tmp_path / "r.json"
    code, stdout, err = run(["denoise", source, out, "--sigma", "0.2", "--json", report], capsys)
    assert code == 0, err
    assert "3 gaps (27 samples) kept as NaN; 4 stretches denoised" in err
    summary = json.loads(report.read_text())
    pieces = stretches(values)
    assert summary["samples"] == sum(b - a for a, b in pieces)  # SURE over the union of the stretches
    assert summary["gaps"]["gaps"] == 3 and summary["gaps"]["stretches_denoised"] == 4
    chosen, denoised = summary["chosen"], np.load(out)
    assert np.array_equal(np.isnan(denoised), np.isnan(values))
    for a, b in pieces:
        expected = alone(tmp_path, values, a, b, ["--method", chosen, "--sigma", "0.2"], capsys)
        np.testing.assert_allclose(denoised[a:b], expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_rank_stretches_is_the_samples_weighted_sure_of_each_stretch():
    values = record(length=900, gaps=((200, 230), (600, 610)))
    candidates = {k: v for k, v in classical_candidates(0.2).items() if k in ("noisy", "soft", "tv", "wiener5")}
    pieces = [(0, a, b) for a, b in stretches(values)]
    combined = rank_stretches(candidates, values[None], pieces, 0.2)
    each = [rank(candidates, values[None, a:b], 0.2) for _, a, b in pieces]
    total = sum(b - a for _, a, b in pieces)
    for name in candidates:
        expected = sum((b - a) / total * r.estimates[name].sure for (_, a, b), r in zip(pieces, each))
        assert combined.estimates[name].sure == pytest.approx(expected, rel=1e-12)
    assert combined.estimates["noisy"].sure == pytest.approx(0.04, rel=1e-12)  # the identity: σ² exactly
    assert combined.n == total and combined.chosen == min(combined.estimates, key=lambda k: combined.estimates[k].sure)


def test_a_stretch_too_short_is_written_back_unchanged_with_one_line(tmp_path, capsys):
    values = record(gaps=((700, 720), (730, 760), (2300, 2340)))  # 720..730: 10 samples, below the minimum
    source, out = save(tmp_path / "gaps.npy", values), tmp_path / "out.npy"
    code, _, err = run(["denoise", source, out, "--method", "net"], capsys)
    assert code == 0, err
    assert "3 gaps (90 samples) kept as NaN; 3 stretches denoised" in err
    assert "1 stretch between gaps shorter than 32 samples" in err
    np.testing.assert_array_equal(np.load(out)[720:730], values[720:730])


@pytest.mark.parametrize("suffix, method", [(".npy", "net"), (".txt", "net"), (".npy", "auto"), (".txt", "tv")])
def test_a_record_that_is_all_nan_is_refused_in_one_line(tmp_path, capsys, suffix, method):
    source = save(tmp_path / f"nan{suffix}", np.full(200, np.nan))
    code, _, err = run(["denoise", source, tmp_path / f"out{suffix}", "--method", method], capsys)
    assert_one_line_error(code, err, source.name, "every value is NaN")
    assert not (tmp_path / f"out{suffix}").exists()


@pytest.mark.parametrize("method", ["net", "tv"])
def test_inf_is_still_refused(tmp_path, capsys, method):
    values = record()
    values[1234] = np.inf
    source = save(tmp_path / "inf.npy", values)
    code, _, err = run(["denoise", source, tmp_path / "out.npy", "--method", method], capsys)
    assert_one_line_error(code, err, "non-finite value (inf) at index 1234")


def test_a_nan_cell_in_a_table_column_stays_nan_and_the_table_is_kept(tmp_path, capsys):
    values = record(length=400, gaps=((100, 103),))
    lines = ["time_s,counts"] + [f"{i / 100:.2f},{v!r}" for i, v in enumerate(values.tolist())]
    source, out = tmp_path / "t.csv", tmp_path / "o.csv"
    source.write_text("\n".join(lines) + "\n")
    code, _, err = run(["denoise", source, out, "--column", "counts", "--method", "tv", "--sigma", "0.2"], capsys)
    assert code == 0, err
    assert "1 gap (3 samples) kept as NaN; 2 stretches denoised" in err
    rows = out.read_text().splitlines()
    assert rows[0] == "time_s,counts" and [r.split(",")[0] for r in rows] == [r.split(",")[0] for r in lines]
    assert [r.split(",")[1] for r in rows[101:104]] == ["nan"] * 3


def test_channels_keep_each_channels_gaps(tmp_path, capsys):
    three = np.stack([record(seed=1), record(gaps=(), seed=2), record(gaps=((10, 40),), seed=3)])[:, :2000]
    source, out = save(tmp_path / "three.npy", three), tmp_path / "out.npy"
    flags = ["--method", "wavelet_ti_sym8_bayes", "--sigma", "0.2"]
    code, _, err = run(["denoise", source, out, "--channels", *flags], capsys)
    assert code == 0, err
    denoised = np.load(out)
    assert np.array_equal(np.isnan(denoised), np.isnan(three))
    method = classical_candidates(0.2)["wavelet_ti_sym8_bayes"]
    for row, values in enumerate(three):
        for a, b in stretches(values):
            expected = method(values[a:b][None])[0] if b - a >= 16 else values[a:b]  # 0..10 of row 2: too short
            np.testing.assert_allclose(denoised[row, a:b], expected, rtol=1e-10, atol=1e-12)
    assert "channel 2: 1 stretch between gaps shorter than 16 samples" in err


def test_scan_gaps_finds_the_same_runs_in_any_block_size():
    values = np.random.default_rng(0).normal(size=(3, 50))
    values[0, 3:9] = values[0, 20] = values[2, 0:50] = values[1, 49] = np.nan
    expected = io.scan_gaps(values, "x")
    assert expected.runs == {0: [(3, 9), (20, 21)], 1: [(49, 50)], 2: [(0, 50)]}
    assert expected.stretches(0) == [(0, 3), (9, 20), (21, 50)] and expected.stretches(2) == []
    for block in (1, 4, 7, 49, 51):
        assert io.scan_gaps(values, "x", block=block).runs == expected.runs
    assert io.scan_gaps(np.ones((2, 5)), "x") is None

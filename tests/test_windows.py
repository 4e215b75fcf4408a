"""Tests of deepdenoise1d/windows.py: window starts, the blending taper, streaming denoise in windows."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import FUZZ
from deepdenoise1d.windows import blend_weights, denoise_windows, taper, window_starts

geometry = st.integers(1, 64).flatmap(lambda window: st.tuples(
    st.integers(window, 8 * window + 5), st.just(window), st.integers(0, window - 1)))


@FUZZ
@given(geometry)
def test_blend_weights_sum_to_one_at_every_sample(geom):
    length, window, overlap = geom
    starts, weights = blend_weights(length, window, overlap)
    total = np.zeros(length)
    for start, w in zip(starts, weights):
        total[start : start + window] += w
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)
    assert starts[0] == 0 and starts[-1] == length - window and np.all(np.diff(starts) <= window - overlap)


@FUZZ
@given(geometry, st.integers(1, 7), st.integers(1, 3), st.sampled_from([np.float32, np.float64, np.int16]))
def test_identity_denoiser_returns_the_record(geom, batch, rows, dtype):
    length, window, overlap = geom
    signals = (np.random.default_rng(length).normal(size=(rows, length)) * 100).astype(dtype)
    seen = []

    def identity(block):
        seen.append(block.shape)
        return block

    out = denoise_windows(signals, identity, window, overlap, batch=batch, dtype=np.float64)
    assert all(n <= batch and w == window for n, w in seen)
    if dtype == np.float64:  # a weighted mean of equal values: exact up to rounding
        np.testing.assert_allclose(out, signals, rtol=1e-14)
    else:  # float64 blending rounds back exactly to float32 or integer values
        np.testing.assert_array_equal(out, signals.astype(out.dtype))


def test_window_starts_step_and_end_aligned():
    assert window_starts(250, 100, 50).tolist() == [0, 50, 100, 150]
    assert window_starts(260, 100, 50).tolist() == [0, 50, 100, 150, 160]
    assert window_starts(100, 100, 50).tolist() == [0]
    with pytest.raises(ValueError):
        window_starts(99, 100, 50)


def test_taper_is_a_hann_cross_fade():
    inner = taper(10, 4)
    assert np.all(inner > 0) and np.all(inner[4:6] == 1)
    np.testing.assert_allclose(inner[:4] + inner[-4:], 1.0)  # the incoming sin² and outgoing cos² add to 1
    assert np.all(taper(10, 4, first=True)[:4] == 1) and np.all(taper(10, 4, last=True)[-4:] == 1)


def test_windows_see_local_content_only():
    # A denoiser that returns each window's mean: the output follows a step, which one global mean would not.
    record = np.r_[np.zeros(500), np.ones(500)].astype(np.float32)
    out = denoise_windows(record, lambda w: np.repeat(w.mean(axis=1, keepdims=True), w.shape[1], axis=1), 100)
    assert out.shape == record.shape and out.dtype == np.float32
    assert out[:350].max() == 0 and out[650:].min() == 1


def test_memory_mapped_record_streams_into_a_memory_mapped_output(tmp_path):
    record = np.random.default_rng(0).normal(size=10_000).astype(">f4")
    np.save(tmp_path / "in.npy", record)
    source = np.load(tmp_path / "in.npy", mmap_mode="r")
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=record.shape)
    calls = []
    denoise_windows(source, lambda w: calls.append(len(w)) or w * 2, 100, batch=16, out=out)
    assert max(calls) <= 16
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), 2 * record.astype(np.float32), rtol=1e-6)


def test_check_hook_sees_every_span_with_its_flat_position():
    signals = np.arange(2 * 300, dtype=np.float32).reshape(2, 300)
    spans = []
    denoise_windows(signals, lambda w: w, 100, batch=3, check=lambda raw, flat: spans.append((flat, raw.copy())))
    for flat, raw in spans:
        np.testing.assert_array_equal(raw, signals.reshape(-1)[flat : flat + len(raw)])
    covered = np.zeros(600, bool)
    for flat, raw in spans:
        covered[flat : flat + len(raw)] = True
    assert covered.all()

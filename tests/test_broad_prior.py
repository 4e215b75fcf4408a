"""deepdenoise1d.broad_prior: the families, the random scale, offset and SNR, the batch stream, and the
exclusion of the evaluation signals; scripts/prior_gallery.py's figure and its write guard."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, assert_one_line_error, load_script
from deepdenoise1d import broad_prior as bp

NAMES = ["piecewise_constant", "piecewise_polynomial", "smooth_process", "chirp", "bumps", "spikes",
         "beat_train", "bursts", "mixture"]


def test_families_in_fixed_order():
    assert list(bp.FAMILIES) == NAMES


@pytest.mark.parametrize("length", [16, 100, 1000])
@pytest.mark.parametrize("name", NAMES)
def test_family_is_deterministic_finite_and_unit_scale(name, length):
    family = bp.FAMILIES[name]
    for seed in range(5):
        x = family(np.random.default_rng(seed), length)
        assert x.shape == (length,) and x.dtype == np.float64
        assert np.all(np.isfinite(x))
        assert 0.05 < np.max(np.abs(x)) <= 1 + 1e-12  # roughly unit scale before scale and offset
        np.testing.assert_array_equal(x, family(np.random.default_rng(seed), length))
        assert not np.array_equal(x, family(np.random.default_rng(seed + 100), length))


def test_draw_clean_covers_scale_offset_and_every_family():
    rng = np.random.default_rng(11)
    draws = [bp.draw_clean_details(rng, 64) for _ in range(300)]
    scales = np.array([d.scale for d in draws])
    ratios = np.array([d.offset / d.scale for d in draws])
    low, high = bp.SCALE_RANGE
    assert np.all((scales >= low) & (scales <= high))
    assert scales.min() < low * 10**0.5 and scales.max() > high / 10**0.5  # spans the decades, ends included
    assert np.all((ratios >= bp.OFFSET_RANGE[0]) & (ratios <= bp.OFFSET_RANGE[1]))
    assert (ratios < -5).any() and (ratios > 5).any()  # both signs, and offsets far larger than the signal
    assert {d.family for d in draws} == set(NAMES)
    for d in draws[:20]:
        assert d.signal.shape == (64,) and d.signal.dtype == np.float64
    first = bp.draw_clean(np.random.default_rng(11), 64)
    np.testing.assert_array_equal(first[0], draws[0].signal)
    assert first[1] == draws[0].family


def test_draw_clean_respects_families():
    rng = np.random.default_rng(3)
    assert {bp.draw_clean(rng, 32, ["chirp", "spikes"])[1] for _ in range(40)} == {"chirp", "spikes"}


def test_snr_spans_its_range():
    rng = np.random.default_rng(12)
    snr = []
    for _ in range(300):
        clean, noisy, sigma, family = bp.draw_noisy(rng, 64)
        assert family in NAMES and noisy.shape == clean.shape == (64,) and sigma > 0
        snr.append(np.std(clean) / sigma)
    low, high = bp.SNR_RANGE
    assert low * (1 - 1e-9) <= min(snr) < low * 1.3
    assert high / 1.3 < max(snr) <= high * (1 + 1e-9)


def test_piecewise_constant_jumps_and_is_flat_between():
    for seed in range(30):
        x = bp.piecewise_constant(np.random.default_rng(seed), 256)
        jumps = np.count_nonzero(np.diff(x))
        assert 1 <= jumps <= min(bp.MAX_JUMPS, 256 // 8)  # every other difference is exactly zero


def test_spikes_are_sparse():
    for length in (16, 1000):
        for seed in range(20):
            x = bp.spikes(np.random.default_rng(seed), length)
            nonzero = np.count_nonzero(x)
            assert 1 <= nonzero <= max(1, round(bp.SPIKE_FRACTION[1] * length))
    assert np.mean(bp.spikes(np.random.default_rng(0), 1000) == 0) >= 0.95


def test_noise_has_the_requested_sigma():
    rng = np.random.default_rng(13)
    pooled = []
    for _ in range(10):
        clean, noisy, sigma, _ = bp.draw_noisy(rng, 2048)
        ratio = (noisy - clean) / sigma
        assert abs(np.std(ratio) - 1) < 0.06
        pooled.append(ratio)
    assert abs(np.std(pooled) - 1) < 0.02
    clean, noisy, sigma = next(bp.BroadPrior(dtype=np.float32).batches(4, 8, 2048))
    assert clean.dtype == noisy.dtype == sigma.dtype == np.float32
    ratio = (noisy.astype(np.float64) - clean) / sigma[:, None]
    assert abs(np.std(ratio) - 1) < 0.02


def test_constant_signal_uses_the_scale(monkeypatch):
    monkeypatch.setitem(bp.FAMILIES, "spikes", lambda rng, length: np.zeros(length))
    clean, noisy, sigma, _ = bp.draw_noisy(np.random.default_rng(5), 64, families=["spikes"])
    replay = np.random.default_rng(5)
    scale = bp.draw_clean_details(replay, 64, ["spikes"]).scale
    assert np.ptp(clean) == 0 and np.isfinite(sigma)
    assert bp.SNR_RANGE[0] <= scale / sigma <= bp.SNR_RANGE[1]
    assert np.std(noisy - clean) > 0


def test_batch_stream_is_reproducible_per_seed():
    prior = bp.BroadPrior(dtype=np.float64)

    def first(seed, count=3):
        stream = prior.batches(seed, 4, 64)
        return [next(stream) for _ in range(count)]

    a, b, c = first(1), first(1), first(2)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert [x[0].shape for x in a] == [(4, 64)] * 3 and a[0][2].shape == (4,)
    assert a[0][0].dtype == np.float64
    assert not any(np.array_equal(x[1], y[1]) for x, y in zip(a, c))
    assert not np.array_equal(a[0][1], a[1][1])
    np.testing.assert_array_equal(next(prior.batches(1, 4, 64, start=2))[1], a[2][1])  # resumable
    clean, noisy, sigma, families = prior.validation_set(1, 6, 64)
    again = prior.validation_set(1, 6, 64)
    np.testing.assert_array_equal(noisy, again[1])
    assert families == again[3] and len(families) == 6 and sigma.shape == (6,)
    assert not np.array_equal(noisy[:4], a[0][1])  # the validation set is not the first training batch


@pytest.mark.parametrize("call", [
    lambda: bp.draw_clean(np.random.default_rng(0), 15),
    lambda: bp.draw_clean(np.random.default_rng(0), 64, ["blocks"]),
    lambda: bp.draw_clean(np.random.default_rng(0), 64, []),
    lambda: bp.draw_noisy(np.random.default_rng(0), 64, (0.0, 1.0)),
    lambda: bp.draw_noisy(np.random.default_rng(0), 64, (2.0, 1.0)),
    lambda: bp.BroadPrior(dtype=np.int32),
    lambda: bp.BroadPrior(families=("nope",)),
    lambda: bp.BroadPrior().batches(0, 0, 64),
    lambda: bp.BroadPrior().batches(0, 4, 8),
    lambda: bp.BroadPrior().validation_set(0, 0, 64),
])
def test_bad_arguments_are_value_errors(call):
    with pytest.raises(ValueError):
        call()


def test_no_draw_matches_the_evaluation_signals():
    pywt = pytest.importorskip("pywt")
    n = 1024
    refs = [pywt.data.demo_signal(name, n) for name in ("Blocks", "Bumps", "HeaviSine", "Doppler")]
    refs.append(np.asarray(pywt.data.ecg(), dtype=np.float64))  # 1024 samples
    refs = np.array([(r - r.mean()) / np.linalg.norm(r - r.mean()) for r in refs])
    for i, name in enumerate(NAMES):
        for j in range(40):
            x = bp.draw_clean(np.random.default_rng([21, i, j]), n, [name])[0]
            x = x - x.mean()
            assert np.max(np.abs(refs @ x)) / np.linalg.norm(x) < 0.99, name


IMPORT_CHECK = """
import sys, warnings
import numpy as np
state, filters = np.random.get_state()[1].copy(), list(warnings.filters)
import deepdenoise1d.broad_prior
assert (np.random.get_state()[1] == state).all() and warnings.filters == filters
assert not {"matplotlib", "torch", "pywt"} & set(sys.modules), sorted(sys.modules)
"""


def test_import_changes_no_process_state():
    result = subprocess.run([sys.executable, "-c", IMPORT_CHECK], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_gallery_writes_a_png_and_refuses_to_overwrite(tmp_path, run_main):
    gallery = load_script(REPO_ROOT / "scripts" / "prior_gallery.py", "prior_gallery")
    out = tmp_path / "g.png"
    code, stdout, err = run_main(gallery, ["--output", out, "--length", 32, "--seed", 1])
    assert code == 0, err
    assert out.read_bytes().startswith(b"\x89PNG") and str(out) in stdout
    code, _, err = run_main(gallery, ["--output", out, "--length", 32])
    assert_one_line_error(code, err, "--overwrite")
    code, _, err = run_main(gallery, ["--output", out, "--length", 32, "--overwrite"])
    assert code == 0, err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

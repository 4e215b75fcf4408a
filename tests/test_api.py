"""Numpy_V2.api: one call denoises an array as the command line denoises the same record in a file."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, load_script
from deepdenoise1d.errors import InputError
from Numpy_V2 import denoise, estimate_sigma, scoreboard


def record(length: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 1, length)
    clean = np.sin(2 * np.pi * 5 * t) + (t > 0.6)
    return clean, clean + 0.2 * np.random.default_rng(seed).standard_normal(length)


def test_auto_gives_the_command_lines_choice_and_output(tmp_path, run_main):
    _, y = record()
    np.save(tmp_path / "rec.npy", y)
    numpy_test = load_script(REPO_ROOT / "Numpy_V2" / "Numpy_test.py", "numpy_test_for_api")
    code, _, _ = run_main(numpy_test, ["--input", tmp_path / "rec.npy", "--output", tmp_path / "out.npy",
                                       "--json", tmp_path / "out.json"])
    assert code == 0
    cli = json.loads((tmp_path / "out.json").read_text())
    out, info = denoise(y)
    assert info["method"] == cli["chosen"] and info["sigma"] == pytest.approx(cli["sigma"], rel=1e-12)
    # the command line's file path feeds the network float32 windows (deepdenoise1d/evaluate.py); the API keeps
    # float64 through the network's baseline and scale: they differ by float32 rounding
    np.testing.assert_allclose(out, np.load(tmp_path / "out.npy"), rtol=0, atol=1e-5 * np.abs(out).max())
    assert set(info["estimates"]) == set(cli["estimates"])


def test_shape_and_dtype_come_back_as_given():
    clean, y = record(1024)
    out, info = denoise(y, method="net")
    assert out.shape == y.shape and out.dtype == np.float64 and info["method"].startswith("net_")
    assert info["weights"].endswith("ckpt_universal.h5")
    assert np.sqrt(np.mean((out - clean) ** 2)) < np.sqrt(np.mean((y - clean) ** 2))  # it denoises
    rows = np.stack([y, y[::-1]]).astype(np.float32)
    out32, _ = denoise(rows, method="tv", sigma=0.2)
    assert out32.shape == (2, 1024) and out32.dtype == np.float32
    counts, _ = denoise(np.round(100 * y).astype(np.int32), method="wavelet_ti_sym8_bayes")
    assert counts.dtype == np.float64


def test_the_net_alone_is_the_models_own_denoise():
    from icnn.shipped import default_weights_for
    from Numpy_V2.model import load_h5

    _, y = record(3000, seed=1)
    out, _ = denoise(y, method="net")
    direct = load_h5(default_weights_for(".h5", record=True)).denoise(y[None])[0]
    np.testing.assert_allclose(out, direct, rtol=0, atol=1e-5 * np.abs(direct).max())  # float32 rounding of the blocks


def test_estimate_sigma_and_the_scoreboard():
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.standard_normal(4096)) * 0.01 + 0.5 * rng.standard_normal(4096)
    assert estimate_sigma(y) == pytest.approx(0.5, rel=0.05)
    ranking = scoreboard(y, sigma=0.5)
    assert ranking.chosen in ranking.estimates and ranking.sigma == 0.5
    assert any(name.startswith("net_") for name in ranking.estimates)


@pytest.mark.parametrize("value, kwargs, fragment", [
    (np.ones(64) * (1 + 1j), {}, "complex"),
    (np.array([1.0, np.nan] * 40), {}, "NaN"),
    (np.ones((2, 2, 40)), {}, "shape"),
    (np.array(["a"] * 40), {}, "expected numbers"),
    (np.full(64, 1e307), {"sigma": 1.0}, "rescale"),  # beyond float64.max / 2^10: the denoised record may overflow
    (np.arange(64.0), {"sigma": -1.0}, "sigma"),
    (np.arange(64.0), {"sigma": "loud"}, "sigma"),
    (np.arange(64.0), {"method": "magic", "sigma": 1.0}, "magic"),
    (np.arange(64.0), {"method": None, "sigma": 1.0}, "method"),
    (np.arange(8.0), {"method": "net", "sigma": 1.0}, "at least"),
])
def test_bad_input_is_refused_in_one_line(value, kwargs, fragment):
    with pytest.raises(InputError, match=fragment) as raised:
        denoise(value, **kwargs)
    assert "\n" not in str(raised.value)


def test_a_short_record_gets_the_classical_candidates_only():
    rng = np.random.default_rng(4)
    y = np.repeat([0.0, 2.0], 12) + 0.3 * rng.standard_normal(24)  # shorter than the network's 32 samples
    out, info = denoise(y, sigma=0.3)
    assert out.shape == (24,) and not any(name.startswith("net_") for name in info["estimates"])
    assert info["weights"] is None
    out, info = denoise(y, method="tv", sigma=0.3, weights="no-such-weights.h5")  # a classical method reads no weights
    assert out.shape == (24,) and info["method"] == "tv"


def test_the_one_call_never_imports_torch():
    code = ("import sys, numpy as np; from Numpy_V2 import denoise; "
            "denoise(np.sin(np.arange(512) / 9.0) + 0.1 * np.random.default_rng(0).standard_normal(512)); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


def test_a_sigma_as_large_as_the_record_is_warned_about(tmp_path, run_main):
    """σ above the record's own spread: a soft threshold writes zeros; both the command and the call say so."""
    _, y = record(512)
    assert denoise(y, sigma=0.2)[1]["warnings"] == []
    out, info = denoise(y, sigma=50.0)
    assert len(info["warnings"]) == 1 and "spread" in info["warnings"][0]
    np.save(tmp_path / "rec.npy", y)
    numpy_test = load_script(REPO_ROOT / "Numpy_V2" / "Numpy_test.py", "numpy_test_for_sigma_note")
    code, _, err = run_main(numpy_test, ["--input", tmp_path / "rec.npy", "--output", tmp_path / "out.npy",
                                         "--sigma", "50"])
    assert code == 0 and "at or above the record's own spread" in err
    code, _, err = run_main(numpy_test, ["--input", tmp_path / "rec.npy", "--output", tmp_path / "out2.npy",
                                         "--sigma", "0.2"])
    assert code == 0 and "spread" not in err

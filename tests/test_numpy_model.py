"""Numpy_V2/model.py: NumpyICNN loading from HDF5 and its errors, denoise (chunks, threads, bad input), no torch import."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import (BLOCK_TORCH, FLOAT32_TOLERANCE, REPO_ROOT, convert, random_model, relative_error,  # noqa: E402
                      spike_signals, torch_forward)
from Numpy_V2.model import load_h5  # noqa: E402
from deepdenoise1d.errors import InputError  # noqa: E402


def rewrite_h5(source, target, drop: str | None = None, replace: dict | None = None, add: dict | None = None) -> None:
    """Copy an .h5 with one dataset dropped, replaced or added (attributes kept)."""
    with h5py.File(source, "r") as f, h5py.File(target, "w") as g:
        for name, value in f.attrs.items():
            g.attrs[name] = value
        for key in f:
            if key != drop:
                g.create_dataset(key, data=(replace or {}).get(key, f[key][()]))
        for key, value in (add or {}).items():
            g.create_dataset(key, data=value)


@pytest.fixture(scope="module")
def good_h5(pth2h5, tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    return convert(pth2h5, random_model(True, "bn", seed=1), folder)[1]


def test_missing_dataset_is_named(good_h5, tmp_path):
    key = "down2.maxpool_conv.1.double_conv.4.running_var"
    rewrite_h5(good_h5, tmp_path / "bad.h5", drop=key)
    with pytest.raises(InputError, match=f"missing tensor '{key}'"):
        load_h5(tmp_path / "bad.h5")


def test_missing_prior_weight_is_named(good_h5, tmp_path):
    rewrite_h5(good_h5, tmp_path / "bad.h5", drop="wienernet.beta")
    with pytest.raises(InputError, match="'wienernet.beta'"):
        load_h5(tmp_path / "bad.h5")


def test_misshaped_dataset_is_named(good_h5, tmp_path):
    key = "up1.conv.double_conv.0.weight"  # (16, 32, 3): 1536 values
    rewrite_h5(good_h5, tmp_path / "bad.h5", replace={key: np.zeros(1535, np.float32)})
    with pytest.raises(InputError, match=rf"'{key}' has shape \(1535,\), expected \(16, 32, 3\)"):
        load_h5(tmp_path / "bad.h5")


def test_unflattened_dataset_of_the_right_shape_is_accepted(good_h5, tmp_path):
    key = "up1.conv.double_conv.0.weight"
    with h5py.File(good_h5, "r") as f:
        value = f[key][()].reshape(16, 32, 3)
    rewrite_h5(good_h5, tmp_path / "ok.h5", replace={key: value})
    x = spike_signals(100)
    np.testing.assert_array_equal(load_h5(tmp_path / "ok.h5").forward(x), load_h5(good_h5).forward(x))


def test_unexpected_dataset_is_named(good_h5, tmp_path):
    rewrite_h5(good_h5, tmp_path / "bad.h5", add={"inc.double_conv.1.threshold": np.zeros(2, np.float32)})
    with pytest.raises(InputError, match="unexpected tensor 'inc.double_conv.1.threshold'"):
        load_h5(tmp_path / "bad.h5")


def test_non_finite_weight_is_named(good_h5, tmp_path):
    key = "outc.conv.bias"
    rewrite_h5(good_h5, tmp_path / "bad.h5", replace={key: np.array([np.nan], np.float32)})
    with pytest.raises(InputError, match=key):
        load_h5(tmp_path / "bad.h5")


@pytest.mark.parametrize("content", ["truncated", "empty", "text"])
def test_unreadable_files_are_input_errors(good_h5, tmp_path, content):
    data = {"truncated": good_h5.read_bytes()[: good_h5.stat().st_size // 2], "empty": b"", "text": b"not hdf5\n" * 50}[content]
    (tmp_path / "bad.h5").write_bytes(data)
    with pytest.raises(InputError, match="bad.h5"):
        load_h5(tmp_path / "bad.h5")
    with pytest.raises(InputError, match="no such"):
        load_h5(tmp_path / "absent.h5")


def test_foreign_format_attribute_is_refused(good_h5, tmp_path):
    rewrite_h5(good_h5, tmp_path / "bad.h5")
    with h5py.File(tmp_path / "bad.h5", "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(InputError, match="format_version"):
        load_h5(tmp_path / "bad.h5")


def test_denoise_is_chunked_per_signal_and_keeps_the_float_dtype(converted):
    model, net = converted[True, "bn"]
    noisy = spike_signals(100, n=40)[:, 0].astype(np.float64)
    assert net.denoise(noisy.astype(np.float32)).dtype == np.float32
    assert net.denoise(noisy.astype(np.int32)).dtype == np.float64
    np.testing.assert_array_equal(net.denoise(noisy.astype(np.float32)), net.denoise(noisy).astype(np.float32))
    for mode in ("fixed", "unfixed"):
        whole = net.denoise(noisy, bn_mode=mode)
        assert whole.dtype == np.float64 and whole.shape == noisy.shape
        np.testing.assert_allclose(net.denoise(noisy, bn_mode=mode, chunk=7), whole, rtol=0, atol=1e-6 * np.abs(whole).max())
        np.testing.assert_allclose(net.denoise(noisy[3], bn_mode=mode)[0], whole[3], rtol=0, atol=1e-6 * np.abs(whole).max())
    assert relative_error(net.denoise(noisy), torch_forward(model, noisy.astype(np.float32)[:, None], "fixed")[:, 0]) <= FLOAT32_TOLERANCE


def test_denoise_threads_do_not_change_the_result(converted):
    _, net = converted[True, "sparse_bn"]
    noisy = spike_signals(100, n=2500)[:, 0]  # three blocks
    for mode in ("fixed", "unfixed"):
        np.testing.assert_array_equal(net.denoise(noisy, mode, threads=1), net.denoise(noisy, mode, threads=3))


def test_bad_input_is_an_input_error(converted):
    _, net = converted[True, "bn"]
    with pytest.raises(InputError, match="length >= 16"):
        net.denoise(np.zeros((2, 15)))
    with pytest.raises(InputError, match="length >= 16"):
        net.forward(np.zeros((2, 1, 8), np.float32))
    with pytest.raises(InputError, match="bn mode"):
        net.denoise(np.zeros((2, 100)), bn_mode="train")
    with pytest.raises(InputError, match="non-finite"):
        net.denoise(np.full((2, 100), np.nan))
    with pytest.raises(InputError, match="signal 1 .* index 7.*float32"):  # finite in float64, inf in float32
        net.denoise(np.where(np.arange(200).reshape(2, 100) == 107, 1e39, 0.0))
    with pytest.raises(InputError, match="bn mode"):
        net.forward(np.zeros((2, 1, 100), np.float32), bn_mode="FIXED")
    with pytest.raises(InputError, match="threads"):
        net.denoise(np.zeros((2, 100)), threads=0)
    with pytest.raises(InputError, match=r"\(N, 1, L\)"):
        net.forward(np.zeros((2, 3, 100), np.float32))


def test_numpy_model_never_imports_torch():
    code = "import sys, Numpy_V2.model, Numpy_V2.layers; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


def test_every_numpy_module_imports_with_torch_blocked():
    """Every module of Numpy_V2 and icnn imports in an interpreter where torch cannot be imported."""
    modules = [f"Numpy_V2.{p.stem}" for p in sorted((REPO_ROOT / "Numpy_V2").glob("*.py")) if p.stem != "__init__"]
    modules += [f"icnn.{p.stem}" for p in sorted((REPO_ROOT / "icnn").glob("*.py")) if p.stem != "__init__"]
    assert "Numpy_V2.model" in modules and "icnn.h5weights" in modules and "icnn.spec" in modules
    block = BLOCK_TORCH.split("sys.argv = ")[0]  # the import hook, without the run-a-script tail
    code = block + f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\nprint(len({modules!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(modules))


def test_signals_longer_than_the_training_length_are_denoised_in_windows():
    from icnn.shipped import default_weights
    from deepdenoise1d.windows import denoise_windows

    net = load_h5(default_weights(".h5"))
    assert net.config.train_length == 100  # the shipped files predate the field: the default
    noisy = np.random.default_rng(0).normal(size=(2, 100)).astype(np.float32) * 3
    whole = net.denoise(noisy)
    np.testing.assert_array_equal(whole, net._forward(noisy[:, None], None, net.config.bn_mode)[:, 0])
    record = np.random.default_rng(1).normal(size=(1, 730)).astype(np.float32) * 3
    expected = denoise_windows(record, lambda w: net._forward(w[:, None], None, net.config.bn_mode)[:, 0], 100)
    np.testing.assert_allclose(net.denoise(record), expected, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="signal 0 has a non-finite value"):
        bad = record.copy()
        bad[0, 600] = np.inf
        net.denoise(bad)

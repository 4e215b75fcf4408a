"""Numpy_V2/model.py: NumpyICNN loading from HDF5 and its errors, denoise (chunks, threads, bad input), no torch import."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import (BLOCK_TORCH, FLOAT32_SPREAD, FLOAT32_TOLERANCE, REPO_ROOT, convert, random_model, relative_error,  # noqa: E402
                      spike_signals, torch_forward)
from Numpy_V2.model import NumpyICNN, load_h5, noise_scale  # noqa: E402
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


# --- scale-equivariant models (ModelConfig.equivariant): f(y) = s(y) · g(y / s(y)) ---


def equivariant_pair(prior: bool, seed: int = 0):
    """A fresh seeded equivariant torch model (BN statistics randomised), and NumpyICNN from its state dict
    in float32 and float64."""
    from conftest import make_model

    model = make_model(seed, prior=prior, equivariant=True)
    arrays = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, NumpyICNN(arrays, model.config), NumpyICNN(arrays, model.config, dtype=np.float64)


def exact_forward(model, x: np.ndarray, mode: str) -> np.ndarray:
    """torch in float64 (unfixed statistics are computed in the input's dtype above half precision)."""
    import copy

    with torch.no_grad():
        return copy.deepcopy(model).double()(torch.from_numpy(x.astype(np.float64)), bn_mode=mode).numpy()


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("prior", [True, False])
def test_equivariant_numpy_forward_is_torchs(prior, mode):
    """float32: NumPy within 1e-5 of torch; in unfixed mode, where torch's own float32 error (against
    float64) is larger, NumPy's error within FLOAT32_SPREAD times it (tests/conftest.py). float64: within 1e-12."""
    model, net, net64 = equivariant_pair(prior)
    assert net.config.equivariant
    for length in (100, 37):
        x = spike_signals(length)
        expected, reference = torch_forward(model, x, mode), exact_forward(model, x, mode)
        got = net.forward(x, bn_mode=mode)
        assert got.dtype == np.float32
        if mode == "fixed":
            assert relative_error(got, expected) <= FLOAT32_TOLERANCE, f"L={length}"
        bound = max(FLOAT32_TOLERANCE, FLOAT32_SPREAD * relative_error(expected, reference))
        assert relative_error(got, reference) <= bound, f"L={length} {mode}"
        assert relative_error(net64.forward(x.astype(np.float64), bn_mode=mode), reference) <= 1e-12, f"L={length}"


@pytest.mark.parametrize("length", [16, 17, 37, 100, 101])
def test_numpy_noise_scale_is_torchs(length):
    from Pytorch_V1.model import noise_scale as torch_noise_scale

    x = (3 * np.random.default_rng(length).standard_normal((20, 1, length))).astype(np.float32)
    s = noise_scale(x)
    assert s.shape == (20, 1, 1) and s.dtype == np.float32
    np.testing.assert_array_equal(s, torch_noise_scale(torch.from_numpy(x)).numpy())  # the same element, divided alike
    constant = np.full((2, 1, length), -2.5, np.float32)  # the RMS branch: summed in another order, so close
    np.testing.assert_allclose(noise_scale(constant), torch_noise_scale(torch.from_numpy(constant)).numpy(), rtol=1e-6)
    assert not noise_scale(np.zeros((1, 1, length), np.float32)).any()


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_numpy_equivariant_model_scales_with_its_input(mode):
    """f(a·y) = a·f(y) in float64 within 1e-12; in float32 within 1e-5 or twice the float32 rounding at y and a·y."""
    _, net, net64 = equivariant_pair(True, seed=1)
    x = spike_signals(100)
    f, f64 = net.forward(x, bn_mode=mode), net64.forward(x.astype(np.float64), bn_mode=mode)
    own = relative_error(f, f64)
    for a in (1e-3, 1e3):
        xa = x * np.float32(a)
        fa = net.forward(xa, bn_mode=mode)
        own_a = relative_error(fa, net64.forward(xa.astype(np.float64), bn_mode=mode))
        assert relative_error(fa, a * f) <= max(FLOAT32_TOLERANCE, 2 * (own + own_a)), (a, own, own_a)
        assert relative_error(net64.forward(a * x.astype(np.float64), bn_mode=mode), a * f64) <= 1e-12, a
    x[2] = 0.0
    assert not net.forward(x, bn_mode=mode)[2].any()  # zeros give zeros

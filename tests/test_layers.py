"""Numpy_V2/layers.py: each NumPy layer against torch.nn.functional (or Pytorch_V1's own op) on random shapes."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from Numpy_V2 import layers  # noqa: E402
from Pytorch_V1 import model as torch_model  # noqa: E402

TOLERANCE = 1e-5  # max|numpy - torch| / max|torch|, float32
SEEDS = range(6)


def assert_matches(got: np.ndarray, expected, tolerance: float = TOLERANCE) -> None:
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert got.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-30)
    error = float(np.abs(got - expected).max()) / scale
    assert error <= tolerance, f"relative error {error:.2e} > {tolerance:.0e}"


def random_batch(rng: np.random.Generator, n: int, c: int, length: int, batch_innermost: bool) -> np.ndarray:
    """(N, C, L) float32, stored either in PyTorch's order or in the model's batch-innermost order."""
    x = (rng.standard_normal((n, c, length)) * rng.uniform(0.5, 3)).astype(np.float32)
    return layers.batch_innermost(x) if batch_innermost else x


def tensor(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x))


@pytest.mark.parametrize("seed", SEEDS)
def test_conv1d_matches_torch(seed):
    rng = np.random.default_rng(seed)
    kernel = int(rng.choice([1, 2, 3, 5]))
    padding = int(rng.integers(0, 3))
    length = int(rng.integers(max(1, kernel - 2 * padding), 40))
    n, c_in, c_out = (int(v) for v in rng.integers(1, 9, size=3))
    x = random_batch(rng, n, c_in, length, batch_innermost=bool(seed % 2))
    weight = rng.standard_normal((c_out, c_in, kernel)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32) if seed % 3 else None
    expected = F.conv1d(tensor(x), tensor(weight), None if bias is None else tensor(bias), padding=padding)
    assert_matches(layers.conv1d(x, weight, bias, padding), expected)


def test_conv1d_memory_order_does_not_change_the_result():
    rng = np.random.default_rng(1)
    x = random_batch(rng, 5, 3, 17, batch_innermost=False)
    weight, bias = rng.standard_normal((4, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    np.testing.assert_array_equal(layers.conv1d(x, weight, bias, 1), layers.conv1d(layers.batch_innermost(x), weight, bias, 1))


@pytest.mark.parametrize("seed", SEEDS)
def test_modulated_conv1d_matches_pytorch_v1(seed):
    rng = np.random.default_rng(seed)
    n, c_in, c_out, length = int(rng.integers(1, 7)), int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 30))
    x = random_batch(rng, n, c_in, length, batch_innermost=bool(seed % 2))
    weight = rng.standard_normal((c_out, c_in, 3)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    scale = (1 + 0.5 * rng.standard_normal((n, c_out, 3))).astype(np.float32)
    expected = torch_model.modulated_conv1d(tensor(x), tensor(weight), tensor(bias), tensor(scale))
    assert_matches(layers.modulated_conv1d(x, weight, bias, scale), expected)


def random_bn_parameters(rng: np.random.Generator, c: int) -> tuple[np.ndarray, ...]:
    """Affine weights and running statistics, all randomised."""
    weight = rng.uniform(0.5, 1.5, c).astype(np.float32)
    bias = rng.normal(0, 0.5, c).astype(np.float32)
    running_mean = rng.normal(0, 1, c).astype(np.float32)
    running_var = rng.uniform(0.2, 3, c).astype(np.float32)
    return weight, bias, running_mean, running_var


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_norm_fixed_matches_torch_eval(seed):
    rng = np.random.default_rng(seed)
    n, c, length = int(rng.integers(1, 9)), int(rng.integers(1, 17)), int(rng.integers(1, 60))
    x = random_batch(rng, n, c, length, batch_innermost=bool(seed % 2))
    weight, bias, mean, var = random_bn_parameters(rng, c)
    expected = F.batch_norm(tensor(x), tensor(mean), tensor(var), tensor(weight), tensor(bias), training=False, eps=1e-5)
    assert_matches(layers.batch_norm(x, weight, bias, mean, var, "fixed"), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_norm_unfixed_is_per_signal_statistics(seed):
    """Unfixed = each signal's own mean and biased variance per channel, i.e. instance norm,
    i.e. train-mode BN on a batch of one; the running statistics play no part."""
    rng = np.random.default_rng(seed)
    n, c, length = int(rng.integers(1, 9)), int(rng.integers(1, 17)), int(rng.integers(2, 60))
    x = random_batch(rng, n, c, length, batch_innermost=bool(seed % 2))
    weight, bias, mean, var = random_bn_parameters(rng, c)
    got = layers.batch_norm(x, weight, bias, mean, var, "unfixed")
    assert_matches(got, F.instance_norm(tensor(x), weight=tensor(weight), bias=tensor(bias), eps=1e-5))
    first = F.batch_norm(tensor(x[:1]), None, None, tensor(weight), tensor(bias), training=True, eps=1e-5)
    assert_matches(got[:1], first)


def test_batch_norm_unfixed_matches_signal_batchnorm_module():
    rng = np.random.default_rng(3)
    x = random_batch(rng, 6, 8, 25, batch_innermost=True)
    module = torch_model.SignalBatchNorm1d(8).eval()
    weight, bias, mean, var = random_bn_parameters(rng, 8)
    with torch.no_grad():
        for name, value in zip(("weight", "bias", "running_mean", "running_var"), (weight, bias, mean, var)):
            getattr(module, name).copy_(tensor(value))
        for mode in ("fixed", "unfixed"):
            assert_matches(layers.batch_norm(x, weight, bias, mean, var, mode), module(tensor(x), mode))


def test_batch_norm_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        layers.batch_norm(np.zeros((1, 1, 4), np.float32), *(np.ones(1, np.float32),) * 4, mode="train")


@pytest.mark.parametrize("seed", SEEDS)
def test_soft_threshold_matches_sparse_bn(seed):
    rng = np.random.default_rng(seed)
    n, c, length = int(rng.integers(1, 9)), int(rng.integers(1, 17)), int(rng.integers(1, 50))
    z = random_batch(rng, n, c, length, batch_innermost=bool(seed % 2))
    threshold = rng.normal(0, 1, c).astype(np.float32)  # negative values act through |threshold|
    lam = tensor(threshold).abs()[:, None]
    expected = torch.sign(tensor(z)) * F.relu(tensor(z).abs() - lam)
    np.testing.assert_array_equal(layers.soft_threshold(z, threshold), expected.numpy())


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_matches_torch(inplace):
    rng = np.random.default_rng(0)
    x = random_batch(rng, 4, 3, 21, batch_innermost=True)
    expected = F.relu(tensor(x)).numpy()
    original = x.copy()
    got = layers.relu(x, inplace=inplace)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(x, expected if inplace else original)


@pytest.mark.parametrize("seed", SEEDS)
def test_max_pool1d_matches_torch_floor(seed):
    rng = np.random.default_rng(seed)
    kernel = int(rng.integers(2, 4))
    length = int(rng.integers(kernel, 40))  # odd lengths drop the last sample, as torch does
    x = random_batch(rng, int(rng.integers(1, 6)), int(rng.integers(1, 9)), length, batch_innermost=bool(seed % 2))
    np.testing.assert_array_equal(layers.max_pool1d(x, kernel), F.max_pool1d(tensor(x), kernel).numpy())


@pytest.mark.parametrize("length,output_size", [(12, 3), (2, 3), (1, 3), (7, 3), (13, 5), (40, 7), (3, 3), (100, 1)])
def test_adaptive_max_pool1d_matches_torch_bins(length, output_size):
    x = random_batch(np.random.default_rng(length), 3, 4, length, batch_innermost=True)
    expected = F.adaptive_max_pool1d(tensor(x), output_size).numpy()
    np.testing.assert_array_equal(layers.adaptive_max_pool1d(x, output_size), expected)


@pytest.mark.parametrize("length", [1, 2, 3, 6, 12, 25, 50, 77])
def test_upsample_linear_align_corners_matches_torch(length):
    x = random_batch(np.random.default_rng(length), 3, 4, length, batch_innermost=bool(length % 2))
    expected = F.interpolate(tensor(x), scale_factor=2, mode="linear", align_corners=True)
    assert_matches(layers.upsample_linear(x, 2), expected)


@pytest.mark.parametrize("len1,len2", [(6, 6), (6, 7), (8, 7), (2, 5), (9, 4)])
def test_pad_to_match_and_concat_match_pytorch_v1(len1, len2):
    rng = np.random.default_rng(len1 * 10 + len2)
    x1 = random_batch(rng, 3, 2, len1, batch_innermost=True)
    x2 = random_batch(rng, 3, 4, len2, batch_innermost=False)
    got1, got2 = layers.pad_to_match(x1, x2)
    want1, want2 = torch_model.pad_to_match(tensor(x1), tensor(x2))
    np.testing.assert_array_equal(got1, want1.numpy())
    np.testing.assert_array_equal(got2, want2.numpy())
    np.testing.assert_array_equal(layers.concat_channels([got2, got1]), torch.cat([want2, want1], dim=1).numpy())


def test_layers_keep_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8))
    weight, bias, mean, var = (p.astype(np.float64) for p in random_bn_parameters(rng, 3))
    y = layers.conv1d(x, rng.standard_normal((3, 3, 3)), bias, 1)
    for out in (y, layers.batch_norm(y, weight, bias, mean, var, "unfixed"), layers.relu(y), layers.max_pool1d(y),
                layers.upsample_linear(y), layers.adaptive_max_pool1d(y, 3), layers.soft_threshold(y, bias)):
        assert out.dtype == np.float64
    assert layers.conv1d(x[:, :1].astype(np.float32), rng.standard_normal((1, 1, 3)), None, 1).dtype == np.float32

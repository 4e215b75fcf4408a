"""Tests of Pytorch_V1/inference.py: stateless, chunked, dtype-keeping denoise; the device and thread settings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import batch_of_100, make_model
from Pytorch_V1.inference import denoise, output_dtype, resolve_device
from deepdenoise1d.errors import InputError


def test_denoise_keeps_dtype_and_takes_the_mode_as_an_argument():
    from Pytorch_V1.inference import denoise

    model = make_model(16)
    noisy = batch_of_100(20, seed=9)[:, 0].numpy()
    fixed32 = denoise(model, noisy, "fixed", chunk=7)
    assert fixed32.dtype == np.float32 and fixed32.shape == noisy.shape
    fixed64 = denoise(model, noisy.astype(np.float64), "fixed")
    assert fixed64.dtype == np.float64
    np.testing.assert_allclose(fixed64, fixed32, rtol=0, atol=1e-5 * np.abs(fixed32).max())
    unfixed = denoise(model, noisy, "unfixed")
    assert np.abs(unfixed - fixed32).max() > 1e-3
    with torch.no_grad():
        expected = model(torch.from_numpy(noisy)[:, None], bn_mode="unfixed")[:, 0].numpy()
    np.testing.assert_allclose(unfixed, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert denoise(model, noisy.astype(np.int64)).dtype == np.float64
    # The model is left as it was: a later default call is fixed (its config's mode).
    np.testing.assert_array_equal(denoise(model, noisy), denoise(model, noisy, "fixed"))
    with pytest.raises(InputError, match="bn mode"):
        denoise(model, noisy, "train")
    big = noisy.astype(np.float64)
    big[3, 17] = 1e39  # finite in float64, inf in float32: refused, never NaN output
    with pytest.raises(InputError, match="signal 3 .* index 17"):
        denoise(model, big, chunk=2)


def test_resolve_device_and_threads():
    from Pytorch_V1.inference import configure_threads, resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert torch.get_num_threads() == 1
        configure_threads(1)  # a second call: inter-op threads can no longer be set, and that is fine
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_denoise_of_a_chunked_batch_equals_one_big_batch(mode):
    model = make_model(17)
    noisy = batch_of_100(23, seed=10)[:, 0].numpy()
    whole = denoise(model, noisy, mode, chunk=len(noisy))
    with torch.no_grad():
        direct = model(torch.from_numpy(noisy)[:, None], bn_mode=mode)[:, 0].numpy()
    scale = np.abs(direct).max()
    np.testing.assert_allclose(whole, direct, rtol=0, atol=1e-6 * scale)
    # unfixed BN normalises each bottleneck row of 6 samples by its own statistics: float32 kernels that depend on
    # the batch size (oneDNN picks them per shape and CPU) round there differently, up to about 2e-5 of the scale
    tolerance = 1e-5 if mode == "fixed" else 5e-5
    for chunk in (1, 5, 22):
        np.testing.assert_allclose(denoise(model, noisy, mode, chunk=chunk), whole, rtol=0, atol=tolerance * scale)
    one = denoise(model, noisy[4], mode)  # one signal (L,): a batch of one, (1, L)
    assert one.shape == (1, noisy.shape[1])
    np.testing.assert_allclose(one[0], whole[4], rtol=0, atol=tolerance * scale)
    with pytest.raises(InputError, match="chunk"):
        denoise(model, noisy, mode, chunk=0)


def test_output_dtype_keeps_float32_and_float64_and_widens_the_rest():
    assert output_dtype(np.float32) == np.float32 and output_dtype(np.float64) == np.float64
    for dtype in (np.float16, np.int64, np.int32, np.uint8):
        assert output_dtype(dtype) == np.float64, dtype
    noisy = batch_of_100(3)[:, 0].numpy()
    assert denoise(make_model(18), noisy.astype(np.float16)).dtype == np.float64


def test_resolve_device_cpu_and_unknown_names():
    device = resolve_device("cpu")
    assert isinstance(device, torch.device) and device.type == "cpu"
    with pytest.raises(InputError, match="nonsense"):
        resolve_device("nonsense")


def test_long_signals_go_through_windows_of_the_training_length():
    from deepdenoise1d.windows import denoise_windows

    model = make_model(seed=1)
    record = np.random.default_rng(2).normal(size=(1, 450)).astype(np.float32) * 3
    lengths = []

    def direct(block):
        lengths.append(block.shape[1])
        return denoise(model, block)

    expected = denoise_windows(record, direct, model.config.train_length)
    assert set(lengths) == {100}
    np.testing.assert_allclose(denoise(model, record), expected, rtol=0, atol=1e-6)
    short = record[:, :100]
    with torch.no_grad():  # up to the training length nothing changes: one forward pass
        from Pytorch_V1.model import wiener_prior
        x = torch.from_numpy(short)[:, None]
        direct_out = model.eval()(x, wiener_prior(x) if model.wienernet is not None else None,
                                  model.config.bn_mode)[:, 0].numpy()
    np.testing.assert_array_equal(denoise(model, short), direct_out)


# --- input_scale: denoise(y) = s · net(y / s) ---


def test_a_scaled_model_denoises_the_scaled_input_and_scales_back():
    plain = make_model(seed=3)
    scaled = make_model(seed=3)
    scaled.config.input_scale = 7.5
    y = batch_of_100(4, seed=1)[:, 0].numpy().astype(np.float64) * 7.5
    got = denoise(scaled, y)
    expected = 7.5 * denoise(plain, (y / 7.5).astype(np.float32))
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    assert not np.allclose(got, denoise(plain, y), rtol=1e-3)  # the scale changes the answer: the test can fail
    long = np.tile(y, (1, 3))  # windowed: the scale is applied once per window, not twice
    expected_long = 7.5 * denoise(plain, (long / 7.5).astype(np.float32))
    assert np.abs(denoise(scaled, long) - expected_long).max() <= 1e-5 * np.abs(expected_long).max()

"""The alternatives to batch norm (``icnn.spec.NORMS``), each from the one spec in every backend.

For every norm: its config round-trips through a checkpoint and pth2h5's HDF5 file; NumPy equals
PyTorch in float32 (1e-5 of the output's peak) in each inference mode it has; the NumPy Jacobian is
float64 autograd's; ONNX Runtime on the exported graph is as close to float64 torch as torch float32
is; a few training steps move every one of its weights. Bias-free is checked to be homogeneous
without the equivariant wrapper, the per-signal norms to ignore their batch-mates.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import FLOAT32_SPREAD, REPO_ROOT, load_script, make_model, spike_signals  # noqa: E402
from icnn.spec import NORMS, RUNNING_STAT_NORMS, ModelConfig, config_from_keys, expected_shapes, inference_modes  # noqa: E402
from Numpy_V2.jacobian import jacobians  # noqa: E402
from Numpy_V2.model import NumpyICNN, load_h5  # noqa: E402
from deepdenoise1d.errors import InputError  # noqa: E402

NEW_NORMS = ("shrink", "sigma_shrink", "bias_free", "frn")
PARITY = 1e-5  # float32 NumPy against float32 torch, relative to the output's peak
# Every norm with and without the wrappers a user meets: the shipped default (equivariant, offset-free) and the plain net.
SETTINGS = {"default": {"equivariant": True, "baseline": "median"}, "plain": {"equivariant": False, "baseline": "none"}}


def config_of(norm: str, setting: str) -> dict:
    if norm == "sigma_shrink":  # its thresholds are in units of the noise scale: equivariant only
        return {"norm": norm, **SETTINGS["default"]}
    return {"norm": norm, **SETTINGS[setting]}


def numpy_twin(model, dtype=np.float32) -> NumpyICNN:
    return NumpyICNN({k: v.detach().numpy() for k, v in model.state_dict().items()}, model.config, dtype=dtype)


@pytest.mark.parametrize("norm", NORMS)
def test_state_dict_is_the_spec(norm):
    model = make_model(0, **config_of(norm, "default"))
    keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert keys == set(expected_shapes(model.config))
    assert config_from_keys(model.state_dict()).norm == norm
    assert config_from_keys(model.state_dict()).width == model.config.width


def test_sigma_shrink_needs_an_equivariant_model():
    with pytest.raises(InputError, match="sigma_shrink"):
        ModelConfig(norm="sigma_shrink", equivariant=False)


@pytest.mark.parametrize("norm", NEW_NORMS)
def test_config_round_trips_through_checkpoint_and_h5(norm, tmp_path):
    from Pytorch_V1.checkpoint import load_model, save_checkpoint

    model = make_model(1, **config_of(norm, "default"))
    pth = tmp_path / f"{norm}.pth"
    save_checkpoint(pth, {"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict()}, "format_version": 1})
    loaded, _ = load_model(pth)
    assert loaded.config == model.config
    load_script(REPO_ROOT / "pth2h5.py", "pth2h5_for_norms").convert(pth, tmp_path / f"{norm}.h5")
    net = load_h5(tmp_path / f"{norm}.h5")
    assert net.config == model.config
    x = spike_signals(100, n=4)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(net.forward(x) - expected).max() <= PARITY * np.abs(expected).max()


@pytest.mark.parametrize("length", [100, 37])
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("norm", NEW_NORMS)
def test_numpy_equals_torch(norm, setting, length):
    """Float64: the same arithmetic (1e-10). Float32: within 1e-5 of the peak, or, where a per-signal
    normalisation amplifies rounding (unfixed statistics on short signals), no further from float64 torch
    than FLOAT32_SPREAD times torch float32's own error (tests/test_parity.py holds bn, sparse_bn and none to the same)."""
    import copy

    model = make_model(2, **config_of(norm, setting))
    exact = copy.deepcopy(model).double()
    x = spike_signals(length, n=8)
    for mode in inference_modes(model.config):
        with torch.no_grad():
            reference = exact(torch.from_numpy(x).double(), bn_mode=mode).numpy()
            batched = model(torch.from_numpy(x), bn_mode=mode).numpy()
            one_by_one = np.concatenate([model(torch.from_numpy(x[i : i + 1]), bn_mode=mode).numpy() for i in range(len(x))])
        peak = np.abs(reference).max()
        got64 = numpy_twin(model, np.float64).forward(x.astype(np.float64), bn_mode=mode)
        assert np.abs(got64 - reference).max() <= 1e-10 * peak, (mode, "float64")
        error = np.abs(numpy_twin(model).forward(x, bn_mode=mode) - reference).max()
        torch_error = max(np.abs(batched - reference).max(), np.abs(one_by_one - reference).max())
        bound = max(PARITY * peak, FLOAT32_SPREAD * torch_error)
        assert error <= bound, (mode, error, bound)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("norm", NEW_NORMS)
def test_jacobian_matches_torch_autograd(norm, setting):
    from test_jacobian import MEDIAN_LIMIT, P95_LIMIT, relative_errors, torch_reference

    model = make_model(3, **config_of(norm, setting))
    net = numpy_twin(model, np.float64)
    with torch.no_grad():
        model = model.double()
    rng = np.random.default_rng(4)
    offset = 5.0 if setting == "default" else 0.0  # an offset-free model takes it off; a plain random one may go dead
    y = 3.0 * rng.standard_normal((6, 48)) + 6.0 * (rng.random((6, 48)) < 0.2) + offset
    for mode in inference_modes(model.config):
        result = jacobians(net, y, mode, tangent_dtype=np.float64)
        errors = relative_errors(result["jacobian"], torch_reference(model, y, mode))
        assert np.median(errors) <= MEDIAN_LIMIT and np.percentile(errors, 95) <= P95_LIMIT, (mode, errors)


def test_bias_free_network_is_homogeneous_without_the_wrapper():
    """No additive constant anywhere: with the plain forward f(a·y) = a·f(y) in fixed mode (running statistics),
    f(a·y) = f(y) in unfixed mode (each signal divided by its own spread, as unfixed BN). Fixed BN, with its
    shifts, is not homogeneous."""
    x = spike_signals(100, n=6)
    for norm, homogeneous, modes in (("bias_free", True, (("fixed", 1), ("unfixed", 0))), ("bn", False, (("fixed", 1),))):
        model = make_model(5, **config_of(norm, "plain"))
        for mode, degree in modes:
            with torch.no_grad():
                out = model(torch.from_numpy(x), bn_mode=mode).double().numpy()
                scaled = model(torch.from_numpy(x * np.float32(7.0)), bn_mode=mode).double().numpy()
            gap = np.abs(scaled - 7.0**degree * out).max() / np.abs(7.0**degree * out).max()
            assert (gap < 1e-4) == homogeneous, (norm, mode, gap)


@pytest.mark.parametrize("norm", ("shrink", "sigma_shrink", "frn", "bn"))
def test_per_signal_norms_ignore_their_batch_mates_in_training(norm):
    """No batch statistics: in training mode too, a signal's output is the same alone or in a batch (to float32
    rounding, which differs between batch sizes by ~3e-5 in eval mode too). BN with batch statistics does not."""
    model = make_model(6, **config_of(norm, "default")).train()
    x = torch.from_numpy(spike_signals(100, n=5))
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
    gap = float((together - alone).abs().max() / together.abs().max())
    assert (gap < 1e-4) == (norm != "bn"), gap


@pytest.mark.parametrize("norm", NEW_NORMS)
def test_a_training_step_moves_every_weight(norm):
    model = make_model(7, **config_of(norm, "default")).train()
    noisy = torch.from_numpy(spike_signals(100, n=16))
    loss = torch.nn.functional.mse_loss(model(noisy), 0.5 * noisy)  # any target: only the gradients' reach is checked
    loss.backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, dead


def test_inference_modes_follow_running_statistics():
    for norm in NORMS:
        modes = inference_modes(ModelConfig(**config_of(norm, "default")))
        assert len(modes) == (2 if norm in RUNNING_STAT_NORMS else 1), norm


@pytest.mark.parametrize("norm", NEW_NORMS)
def test_onnx_runtime_matches_torch(norm, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from test_pth2onnx import parity, session_of

    from Pytorch_V1.checkpoint import save_checkpoint

    pth2onnx = load_script(REPO_ROOT / "pth2onnx.py", "pth2onnx_for_norms")
    model = make_model(8, **config_of(norm, "default"))
    source = tmp_path / f"{norm}.pth"
    save_checkpoint(source, {"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict()},
                             "format_version": 1})
    for mode in inference_modes(model.config):
        destination = tmp_path / f"{norm}-{mode}.onnx"
        pth2onnx.main([str(source), str(destination), "--bn-mode", mode, "--prior-input"])  # the network given h
        session = session_of(destination)
        for length in (17, 100, 257):
            row = parity(model, session, spike_signals(length, n=8), mode)
            assert row["ort"] <= row["bound"], (mode, length, row)

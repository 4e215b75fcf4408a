"""Capacity as configuration: ``ModelConfig.width`` and ``depth`` through icnn/spec.py, both backends,
the .h5 and ONNX formats and the exact Jacobian; the default is the original repository's ICNN_s (its keys
and shapes here; its outputs are the shipped models' in tests/test_parity.py).

Parity follows tests/test_parity.py: float32 NumPy against float32 torch within 1e-5 relative in fixed
mode; in unfixed mode each signal's own statistics amplify float32 rounding (a depth-5 bottleneck
normalises 2-sample rows at L = 32), so both are held to the float64 answer, NumPy within 1e-5 or FLOAT32_SPREAD times
torch's own float32 error; the float64 arithmetic agrees within 1e-10 in both modes.
"""
from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import FLOAT32_SPREAD, FLOAT32_TOLERANCE, REPO_ROOT, convert, load_script, make_model, relative_error, torch_forward  # noqa: E402
from icnn.h5weights import read_weights, write_weights  # noqa: E402
from icnn.spec import (COUNTER_SUFFIX, DECODER, ENCODER, MAX_WEIGHT_VALUES, MIN_LENGTH, MODULATED_PART,  # noqa: E402
                       OUTC, PRIOR_ENCODER, SKIPS, ModelConfig, decoder_parts, encoder_parts, expected_shapes,
                       min_length, modulated_part, outc_part, prior_encoder_parts, skip_parts, weight_count)
from Numpy_V2.jacobian import jacobians  # noqa: E402
from Numpy_V2.model import NumpyICNN, load_h5  # noqa: E402
from Pytorch_V1.checkpoint import load_model  # noqa: E402
from Pytorch_V1.inference import denoise  # noqa: E402
from Pytorch_V1.model import ICNN_s  # noqa: E402
from deepdenoise1d.errors import InputError  # noqa: E402
from test_jacobian import MEDIAN_LIMIT, P95_LIMIT, relative_errors, torch_reference  # noqa: E402

SHIPPED = REPO_ROOT / "ckpt" / "ckpt_best.pth"
FLOAT64_TOLERANCE = 1e-10  # unfixed mode amplifies float64 rounding too: ~1e-12 at a depth-5 bottleneck
CAPACITIES = {
    "w4-d5": dict(width=4, depth=5),
    "w8-d3-noprior": dict(width=8, depth=3, prior=False),
    "w2-d4": dict(width=2, depth=4),
    "w3-d2-sparse": dict(width=3, depth=2, norm="sparse_bn"),
    "w4-d5-equivariant-median": dict(width=4, depth=5, equivariant=True, baseline="median"),
    "w4-d5-no-norm": dict(width=4, depth=5, norm="none", equivariant=True, baseline="median"),
}


def lengths(config: ModelConfig) -> tuple[int, ...]:
    """The shortest signal, an odd length (pooling drops samples, padding restores them) and the training length."""
    shortest = min_length(config)
    return shortest, 2 * shortest + 5, 100


def signals(length: int, n: int = 4, seed: int = 0) -> np.ndarray:
    """Noisy sparse spikes on an offset, (n, 1, length) float32."""
    rng = np.random.default_rng(seed + length)
    return (3 * rng.standard_normal((n, 1, length)) + 6 * (rng.random((n, 1, length)) < 0.2) + 2).astype(np.float32)


def numpy_twin(model: ICNN_s, dtype=np.float32) -> NumpyICNN:
    """NumpyICNN of the torch model's weights and config."""
    return NumpyICNN({k: v.detach().numpy() for k, v in model.state_dict().items()}, model.config, dtype=dtype)


def prior_of(model: ICNN_s, x: np.ndarray) -> np.ndarray | None:
    """h as both float32 forwards compute it from x (of x − m(x) for an offset-free model), float64."""
    h = model.prior(torch.from_numpy(x))
    return None if h is None else h.double().numpy()


def float64_reference(model: ICNN_s, x: np.ndarray, mode: str) -> np.ndarray:
    """torch in float64, given the float32 forwards' h."""
    h = prior_of(model, x)
    with torch.no_grad():
        exact = copy.deepcopy(model).double()
        return exact(torch.from_numpy(x).double(), None if h is None else torch.from_numpy(h), mode).numpy()


def assert_float32_parity(got: np.ndarray, model: ICNN_s, x: np.ndarray, mode: str) -> None:
    """Fixed mode: within 1e-5 of torch's float32. Unfixed: as close to float64 as torch's float32 (module
    docstring), whose error is the larger of the batch's and one signal at a time's (either can be lucky)."""
    if mode == "fixed":
        assert relative_error(got, torch_forward(model, x, mode)) <= FLOAT32_TOLERANCE
        return
    reference = float64_reference(model, x, mode)
    one_by_one = np.concatenate([torch_forward(model, x[i : i + 1], mode) for i in range(len(x))])
    torch_error = max(relative_error(torch_forward(model, x, mode), reference), relative_error(one_by_one, reference))
    assert relative_error(got, reference) <= max(FLOAT32_TOLERANCE, FLOAT32_SPREAD * torch_error)


@pytest.fixture(scope="module")
def models():
    """{name: seeded torch model with randomised BN statistics} for every entry of CAPACITIES."""
    return {name: make_model(seed, **config) for seed, (name, config) in enumerate(CAPACITIES.items())}


@pytest.fixture(scope="module")
def converted(models, tmp_path_factory):
    """{name: (.pth, .h5)}: each model saved by save_checkpoint and converted by pth2h5.py."""
    pth2h5 = load_script(REPO_ROOT / "pth2h5.py", "pth2h5_capacity")
    folder = tmp_path_factory.mktemp("capacity")
    return {name: convert(pth2h5, model, folder, name) for name, model in models.items()}


# --- the rule -----------------------------------------------------------------------------------


def test_the_default_is_the_original_icnn_s():
    """The original's parts, written out here; the constants are the default config's."""
    config = ModelConfig()
    assert (config.width, config.depth) == (2, 4)
    assert ENCODER == encoder_parts(config) == (("inc", 1, 2), ("down1", 2, 4), ("down2", 4, 8), ("down3", 8, 16),
                                                ("down4", 16, 16))
    assert DECODER == decoder_parts(config) == (("up1", 32, 8), ("up2", 16, 4), ("up3", 8, 2), ("up4", 4, 2))
    assert OUTC == outc_part(config) == ("outc", 2, 1)
    assert PRIOR_ENCODER == prior_encoder_parts(config) == ENCODER[:4]
    assert SKIPS == skip_parts(config) == (("up1", "down3"), ("up2", "down2"), ("up3", "down1"), ("up4", "inc"))
    assert MODULATED_PART == modulated_part(config) == "down4"
    assert MIN_LENGTH == min_length(config) == 16
    assert ModelConfig.from_dict({"prior": True}) == config  # a file without the fields is width 2, depth 4


def test_the_shipped_checkpoint_has_the_default_shapes_and_its_original_layout_loads_strictly(tmp_path):
    state = torch.load(SHIPPED, map_location="cpu", weights_only=True)["net_state_dict"]
    shipped = {k: tuple(v.shape) for k, v in state.items() if not k.endswith(COUNTER_SUFFIX)}
    assert list(expected_shapes(ModelConfig()).items()) == list(shipped.items())
    # the original repository's layout: no config
    torch.save({"epoch": 199, "net_state_dict": state, "loss": torch.tensor(0.5)}, tmp_path / "original.pth")
    model, _ = load_model(tmp_path / "original.pth")
    assert (model.config.width, model.config.depth) == (2, 4)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with h5py.File(tmp_path / "original.h5", "w") as f:  # the original converter: flat datasets, no attributes
        for key, value in shipped.items():
            f.create_dataset(key, data=state[key].numpy().reshape(-1))
    _, config, metadata = read_weights(tmp_path / "original.h5")
    assert metadata == {} and (config.width, config.depth) == (2, 4)


@pytest.mark.parametrize("name", CAPACITIES)
def test_parts_follow_the_rule_and_the_spec_lists_every_weight(models, name):
    model = models[name]
    config = model.config
    channels = [config.width * 2**level for level in range(config.depth)]
    state = model.state_dict()
    weights = {k: tuple(v.shape) for k, v in state.items() if not k.endswith(COUNTER_SUFFIX)}
    assert list(expected_shapes(config).items()) == list(weights.items())  # keys, shapes and state-dict order
    assert weight_count(config) == sum(v.numel() for k, v in state.items() if not k.endswith(COUNTER_SUFFIX))
    bottleneck = f"down{config.depth}.maxpool_conv.1.double_conv"
    assert weights["inc.double_conv.0.weight"] == (channels[0], 1, 3)
    assert weights[f"{bottleneck}.3.weight"] == (channels[-1], channels[-1], 3)
    assert weights[f"up{config.depth}.conv.double_conv.3.weight"] == (channels[0], channels[0], 3)
    assert weights["outc.conv.weight"] == (1, channels[0], 1)
    assert f"down{config.depth + 1}.maxpool_conv.1.double_conv.0.weight" not in weights
    if config.prior:
        with torch.no_grad():
            scale = model.wienernet(torch.rand(2, 1, 100))
        assert scale.shape == (2, channels[-1], 3)  # one factor per (channel, tap) of the bottleneck's first kernel
        assert weights[f"{bottleneck}.0.weight"][0] == channels[-1]


# --- both backends ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("name", CAPACITIES)
def test_numpy_computes_the_pytorch_forward(models, name, mode):
    model = models[name]
    net, net64 = numpy_twin(model), numpy_twin(model, np.float64)
    for length in lengths(model.config):
        x = signals(length)
        assert_float32_parity(net.forward(x, bn_mode=mode), model, x, mode)
        got64 = net64.forward(x.astype(np.float64), prior_of(model, x), bn_mode=mode)
        assert relative_error(got64, float64_reference(model, x, mode)) <= FLOAT64_TOLERANCE, f"L={length}"


@pytest.mark.parametrize("name", ["w4-d5", "w8-d3-noprior", "w4-d5-equivariant-median", "w4-d5-no-norm"])
def test_pth_to_h5_round_trip_keeps_the_config_and_the_forward(models, converted, name):
    model = models[name]
    pth, h5 = converted[name]
    assert load_model(pth)[0].config == model.config
    net = load_h5(h5)
    assert net.config == model.config
    assert (net.config.width, net.config.depth) == (CAPACITIES[name]["width"], CAPACITIES[name]["depth"])
    with h5py.File(h5, "r") as f:
        assert {k: f[k].size for k in f} == {k: int(np.prod(s)) for k, s in expected_shapes(model.config).items()}
    for length in lengths(model.config):
        x = signals(length, seed=1)
        assert_float32_parity(net.forward(x, bn_mode="fixed"), model, x, "fixed")
    y = signals(250, n=3)[:, 0]  # longer than train_length: blended windows
    assert relative_error(net.denoise(y, "fixed"), denoise(model, y, "fixed")) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("name,norm", [("w8-d3-noprior", "bn"), ("w3-d2-sparse", "sparse_bn"), ("w4-d5-no-norm", "none")])
def test_a_config_less_h5_reads_width_depth_and_norm_from_its_shapes(models, tmp_path, name, norm):
    model = models[name]
    with h5py.File(tmp_path / "seed.h5", "w") as f:
        for key, value in model.state_dict().items():
            if not key.endswith(COUNTER_SUFFIX):
                f.create_dataset(key, data=value.numpy().reshape(-1))
    net = load_h5(tmp_path / "seed.h5")
    config = model.config
    assert (net.config.width, net.config.depth, net.config.prior, net.config.norm) == (config.width, config.depth, config.prior, norm)
    if config.equivariant or config.baseline != "none":
        return  # not read from shapes: a config-less file is a plain model
    x = signals(37)
    assert relative_error(net.forward(x, bn_mode="fixed"), torch_forward(model, x, "fixed")) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("name", ["w4-d5-equivariant-median", "w4-d5-no-norm"])
def test_onnx_export_runs_in_onnx_runtime(models, converted, tmp_path, name):
    """The deeper, wider models with every switch (prior, equivariant, median), with BN and without a norm."""
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    pth2onnx = load_script(REPO_ROOT / "pth2onnx.py", "pth2onnx_capacity")
    model = models[name]
    pth, _ = converted[name]
    pth2onnx.main([str(pth), str(tmp_path / "w4-d5.onnx"), "--bn-mode", "fixed", "--prior-input"])  # its self-check runs L = 33 and 100
    session = onnxruntime.InferenceSession(str(tmp_path / "w4-d5.onnx"), providers=["CPUExecutionProvider"])
    for length in lengths(model.config):
        x = signals(length, seed=2)
        feed = {"x": x, "h": prior_of(model, x).astype(np.float32)}
        assert_float32_parity(session.run(None, feed)[0], model, x, "fixed")


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("name", ["w4-d5", "w4-d5-equivariant-median", "w4-d5-no-norm"])
def test_exact_jacobian_matches_torch_autograd(models, name, mode):
    """A wider, deeper model than the original: the prior's reverse pass carries 64·3 cotangents, more than L = 37."""
    model = copy.deepcopy(models[name]).double()
    net = numpy_twin(models[name], np.float64)
    rng = np.random.default_rng(3)
    y = 3.0 * rng.standard_normal((3, 37)) + 6.0 * (rng.random((3, 37)) < 0.2)
    exact = jacobians(net, y, mode, tangent_dtype=np.float64)["jacobian"]
    errors = relative_errors(exact, torch_reference(model, y, mode))
    assert np.median(errors) <= MEDIAN_LIMIT and errors.max() <= P95_LIMIT, errors


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("width", 0), ("width", 257), ("width", 2.0), ("width", True), ("width", "2"),
                                         ("width", None), ("depth", 0), ("depth", 9), ("depth", 4.5), ("depth", False)])
def test_bad_width_or_depth_is_refused_naming_the_field(field, value):
    with pytest.raises(InputError, match=rf"w\.h5: model config field '{field}' must be an integer from 1 to"):
        ModelConfig.from_dict({field: value}, "w.h5")


def test_a_config_over_the_weight_cap_is_refused(tmp_path):
    assert weight_count(ModelConfig(width=8, depth=5)) <= MAX_WEIGHT_VALUES < weight_count(_unchecked(16, 5))
    with pytest.raises(InputError, match=r"'width' 16 and 'depth' 5 give \d+ weights, more than 1000000"):
        ModelConfig(width=16, depth=5)
    write_weights(tmp_path / "big.h5", {}, {"model": {"width": 16, "depth": 5}}, {})
    with pytest.raises(InputError, match=r"big\.h5: model config fields 'width' 16 and 'depth' 5"):
        read_weights(tmp_path / "big.h5")


def _unchecked(width: int, depth: int) -> ModelConfig:
    """A config built without validation, to count the weights of one the validation refuses."""
    config = copy.copy(ModelConfig())
    config.width, config.depth = width, depth
    return config


def test_train_length_must_reach_the_minimum_length():
    assert ModelConfig(width=1, depth=8, train_length=256).train_length == 256
    with pytest.raises(InputError, match=r"'train_length' must be an integer >= 256"):
        ModelConfig(width=1, depth=8)


def test_signals_shorter_than_two_to_the_depth_are_refused(models):
    model = models["w4-d5"]
    net = numpy_twin(model)
    short = signals(31)
    message = r"signals must have length >= 32 \(2\^depth, depth 5\), got 31"
    with pytest.raises(ValueError, match=message):
        model(torch.from_numpy(short))
    with pytest.raises(InputError, match=message):
        net.forward(short)
    with pytest.raises(InputError, match=message):
        net.denoise(short[:, 0])
    assert net.denoise(signals(32)[:, 0]).shape == (4, 32)

"""Tests of icnn/spec.py: ModelConfig, the expected weight shapes, check_weights, check_bn_mode, config_from_keys."""
from __future__ import annotations

import pytest

from icnn.spec import COUNTER_SUFFIX, ModelConfig, check_bn_mode, check_weights, config_from_keys, expected_shapes
from Pytorch_V1.model import ICNN_s
from deepdenoise1d.errors import InputError


def test_model_config_round_trip():
    cfg = ModelConfig(prior=False, norm="sparse_bn", bn_mode="unfixed", sigma_range=[0.5, 5])
    assert ModelConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg
    assert cfg.to_dict() == {"prior": False, "norm": "sparse_bn", "bn_mode": "unfixed", "sigma_range": [0.5, 5.0],
                             "train_length": 100, "input_scale": 1.0, "equivariant": False, "baseline": "none", "width": 2, "depth": 4}
    assert ModelConfig(sigma_range=3).sigma_range == [3.0, 3.0]  # one sigma s is [s, s]
    assert ModelConfig.from_dict({}, train_sigma=[1, 2]).sigma_range == [1.0, 2.0]
    assert ModelConfig.from_dict({}, train_sigma="auto").sigma_range is None  # nothing derived from a non-number


@pytest.mark.parametrize("config", [ModelConfig(), ModelConfig(prior=False), ModelConfig(norm="sparse_bn")])
def test_expected_shapes_match_a_fresh_icnn_s_state_dict(config):
    state = ICNN_s(config).state_dict()
    weights = {k: tuple(v.shape) for k, v in state.items() if not k.endswith(COUNTER_SUFFIX)}
    expected = expected_shapes(config)
    assert expected == weights
    assert list(expected) == list(weights)  # in state-dict order
    check_weights({k: tuple(v.shape) for k, v in state.items()}, config, "fresh")  # the counters are allowed
    assert config_from_keys(state) == ModelConfig(prior=config.prior, norm=config.norm)


def test_check_weights_names_the_first_wrong_key():
    shapes = expected_shapes(ModelConfig())
    with pytest.raises(InputError, match=r"w\.pth: missing tensor 'wienernet\.beta'"):
        check_weights({k: v for k, v in shapes.items() if k != "wienernet.beta"}, ModelConfig(), "w.pth")
    with pytest.raises(InputError, match="unexpected tensor 'extra.weight'"):
        check_weights({**shapes, "extra.weight": (2,)}, ModelConfig(), "w.pth")
    flat = {**shapes, "outc.conv.weight": (2,)}
    with pytest.raises(InputError, match=r"'outc\.conv\.weight' has shape \(2,\), expected \(1, 2, 1\)"):
        check_weights(flat, ModelConfig(), "w.pth")
    check_weights(flat, ModelConfig(), "w.h5", flat_ok=True)  # the .h5 stores tensors flat


def test_check_bn_mode_refuses_an_unknown_mode():
    assert check_bn_mode("fixed") == "fixed" and check_bn_mode("unfixed") == "unfixed"
    for bad in ("train", "FIXED", "", None, 3):
        with pytest.raises(InputError, match="bn mode"):
            check_bn_mode(bad)


def test_train_length_defaults_to_100_and_round_trips():
    assert ModelConfig.from_dict({"prior": True}).train_length == 100  # files written before it was recorded
    assert ModelConfig.from_dict(ModelConfig(train_length=256).to_dict()).train_length == 256


@pytest.mark.parametrize("bad", [15, 0, -3, 100.0, True, "100", None])
def test_train_length_must_be_an_integer_of_at_least_the_minimum_length(bad):
    with pytest.raises(InputError, match="train_length"):
        ModelConfig.from_dict({"train_length": bad}, "w.h5")


def test_a_negative_running_var_is_blamed_on_the_weights_file():
    import numpy as np

    from icnn.spec import check_weight_values

    arrays = {"inc.double_conv.1.running_var": np.array([1.0, -0.5]), "inc.double_conv.1.weight": np.array([-3.0, 1.0])}
    with pytest.raises(InputError, match=r"w\.h5: tensor 'inc\.double_conv\.1\.running_var' holds a negative variance"):
        check_weight_values(arrays, "w.h5")
    arrays["inc.double_conv.1.running_var"][1] = 0.0
    check_weight_values(arrays, "w.h5")  # weights may be negative, variances 0 or more


# --- input_scale: the model was trained on data divided by it ---


def test_input_scale_defaults_to_one_when_a_file_lacks_it():
    config = ModelConfig.from_dict({"prior": True, "norm": "bn"})
    assert config.input_scale == 1.0 and ModelConfig().input_scale == 1.0
    assert ModelConfig.from_dict({"input_scale": 7.5}).input_scale == 7.5
    assert ModelConfig.from_dict({"input_scale": 3}).to_dict()["input_scale"] == 3.0  # a float after the check


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "7.5", None, [7.5]])
def test_input_scale_must_be_positive_and_finite(value):
    with pytest.raises(InputError, match="input_scale"):
        ModelConfig.from_dict({"input_scale": value}, "w.h5")
    with pytest.raises(InputError, match="input_scale"):
        ModelConfig(input_scale=value)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_equivariant_must_be_a_bool(value):
    with pytest.raises(InputError, match="'equivariant' must be true or false"):
        ModelConfig.from_dict({"equivariant": value})
    assert ModelConfig.from_dict({}).equivariant is False  # files written before the field: the plain model

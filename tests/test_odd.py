"""The symmetric models: odd, f(y) = (w(y) − w(−y)) / 2, and time-reversal symmetric, f(y) = (w(y) + R·w(R·y)) / 2:
both backends, the exact Jacobian, the .h5 and ONNX files, train.py's --odd and --reversal, and the default untouched
(the original ICNN_s and every shipped model stay as they were)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO_ROOT, make_model
from icnn.spec import ModelConfig, symmetric_part, symmetry_passes
from Numpy_V2.model import NumpyICNN, load_h5

torch = pytest.importorskip("torch")

from Pytorch_V1.inference import denoise as torch_denoise  # noqa: E402
from test_jacobian import MEDIAN_LIMIT, P95_LIMIT, relative_errors, torch_reference  # noqa: E402

ODD = {"odd": True, "equivariant": True, "baseline": "median", "norm": "none", "width": 3, "depth": 3,
       "train_length": 64}


# each symmetry alone and both: the passes (sign, reversed) the model averages
SYMMETRIES = [{"odd": True, "reversal": False}, {"odd": False, "reversal": True}, {"odd": True, "reversal": True}]


def pair(seed: int = 0, **config):
    """A seeded odd torch model and the NumPy model of its weights (float32, as shipped)."""
    model = make_model(seed, **{**ODD, **config})
    return model, NumpyICNN({k: v.numpy() for k, v in model.state_dict().items()}, model.config)


def record(length: int = 300, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((3, length)), axis=1) + 0.4 * rng.standard_normal((3, length)) + 5.0


def test_the_default_is_not_symmetric_and_files_without_the_fields_read_as_before():
    assert ModelConfig().odd is False and ModelConfig().reversal is False
    assert ModelConfig.from_dict({"norm": "bn"}).odd is False and ModelConfig.from_dict({"norm": "bn"}).reversal is False
    assert "odd" not in ModelConfig().to_dict() and "reversal" not in ModelConfig().to_dict()
    calls = []
    assert symmetric_part(ModelConfig(), lambda x, h: calls.append(x) or x, np.ones(3)) is not None and len(calls) == 1
    assert symmetry_passes(ModelConfig(odd=True, reversal=True)) == [(1, False), (1, True), (-1, False), (-1, True)]


@pytest.mark.parametrize("symmetry", SYMMETRIES, ids=["odd", "reversal", "odd+reversal"])
def test_the_passes_as_one_batch_combine_as_one_by_one(symmetry):
    """symmetric_part(batched=True) calls w once on the 2 or 4 passes stacked and gives what the nested passes give,
    for NumPy arrays and torch tensors, with a w that is neither odd nor symmetric in time."""
    config = ModelConfig(**symmetry)
    ramp = np.linspace(0.5, 2.0, 40)

    def w(x, h, calls):
        calls.append(x.shape[0])
        return x**2 * ramp + np.tanh(x) if isinstance(x, np.ndarray) else x**2 * torch.from_numpy(ramp) + torch.tanh(x)

    x = np.random.default_rng(0).standard_normal((3, 1, 40))
    for signals in (x, torch.from_numpy(x)):
        one, together = [], []
        expected = symmetric_part(config, lambda xs, hs: w(xs, hs, one), signals)
        got = symmetric_part(config, lambda xs, hs: w(xs, hs, together), signals, batched=True)
        assert together == [3 * len(symmetry_passes(config))] and one == [3] * len(symmetry_passes(config))
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=0, atol=1e-15)


@pytest.mark.parametrize("norm, calls", [("none", [4 * 2]), ("bn", [2, 2, 2, 2])])
def test_a_symmetric_model_batches_its_passes_in_training_only_and_never_with_batch_statistics(monkeypatch, norm,
                                                                                                     calls):
    model = make_model(0, **{**ODD, "reversal": True, "norm": norm, "equivariant": False, "baseline": "none"})
    seen = []
    whole = type(model)._whole
    monkeypatch.setattr(type(model), "_whole", lambda self, x, h, mode: seen.append(x.shape[0]) or whole(self, x, h, mode))
    x = torch.randn(2, 1, 64)
    model.train()
    model(x)
    assert seen == calls
    seen.clear()
    model.eval()
    model(x)
    assert seen == [2, 2, 2, 2]  # inference: one pass at a time, as every backend


def test_a_reversal_model_is_symmetric_in_time_window_by_window_in_both_backends():
    model, net = pair(odd=False, reversal=True)
    window = record(64)  # one window of the model: exact; a longer record's blended windows fall on another grid
    out = net.denoise(window)
    np.testing.assert_allclose(net.denoise(window[:, ::-1])[:, ::-1], out, rtol=0, atol=1e-12 * np.abs(out).max())
    assert np.abs(net.denoise(-window) + out).max() > 1e-3 * np.abs(out).max()  # not odd unless asked
    plain = NumpyICNN({k: v.numpy() for k, v in model.state_dict().items()}, ModelConfig(**{**ODD, "odd": False}))
    np.testing.assert_allclose(out, (plain.denoise(window) + plain.denoise(window[:, ::-1])[:, ::-1]) / 2, rtol=0,
                               atol=1e-12 * np.abs(out).max())
    y = record()
    peak = np.abs(net.denoise(y)).max()
    np.testing.assert_allclose(torch_denoise(model, y), net.denoise(y), rtol=0, atol=1e-5 * peak)


@pytest.mark.parametrize("prior", [True, False])
@pytest.mark.parametrize("symmetry", [SYMMETRIES[0], SYMMETRIES[2]], ids=["odd", "odd+reversal"])
def test_an_odd_model_is_odd_offset_free_and_scales_in_both_backends(prior, symmetry):
    model, net = pair(prior=prior, **symmetry)
    y = record()
    out = net.denoise(y)
    peak = np.abs(out).max()
    np.testing.assert_allclose(net.denoise(-y), -out, rtol=0, atol=1e-12 * peak)  # exact by construction
    np.testing.assert_allclose(net.denoise(y + 1e3), out + 1e3, rtol=0, atol=1e-9 * peak)
    np.testing.assert_allclose(net.denoise(7.5 * y), 7.5 * out, rtol=1e-6, atol=0)
    np.testing.assert_allclose(torch_denoise(model, y), out, rtol=0, atol=1e-5 * peak)  # windows of 64, blended
    y32 = y.astype(np.float32)
    np.testing.assert_allclose(torch_denoise(model, y32), net.denoise(y32), rtol=0, atol=1e-5 * peak)


def test_odd_is_the_mean_of_the_model_and_its_mirror():
    model, net = pair(prior=False)
    plain = NumpyICNN({k: v.numpy() for k, v in model.state_dict().items()}, ModelConfig(**{**ODD, "odd": False,
                                                                                             "prior": False}))
    y = record()
    np.testing.assert_allclose(net.denoise(y), (plain.denoise(y) - plain.denoise(-y)) / 2, rtol=0,
                               atol=1e-12 * np.abs(y).max())


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("symmetry", SYMMETRIES, ids=["odd", "reversal", "odd+reversal"])
def test_the_jacobian_of_a_symmetric_model_matches_torch_autograd(mode, symmetry):
    from Numpy_V2.jacobian import jacobians

    model, _ = pair(prior=False, **symmetry)
    net = NumpyICNN({k: v.numpy() for k, v in model.state_dict().items()}, model.config, dtype=np.float64)
    model = model.double()
    y = record(64)
    result = jacobians(net, y, mode, tangent_dtype=np.float64)
    errors = relative_errors(result["jacobian"], torch_reference(model, y, mode))
    assert np.median(errors) <= MEDIAN_LIMIT and np.percentile(errors, 95) <= P95_LIMIT, errors
    np.testing.assert_allclose(result["output"], net.denoise(y), rtol=0, atol=1e-9 * np.abs(y).max())


def _checkpoint(tmp_path, model):
    path = tmp_path / "odd.pth"
    torch.save({"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict()}}, path)
    return path


@pytest.mark.parametrize("symmetry", SYMMETRIES, ids=["odd", "reversal", "odd+reversal"])
def test_a_symmetric_model_round_trips_through_h5_and_the_self_contained_onnx_graph(tmp_path, symmetry):
    pytest.importorskip("onnxruntime")
    from conftest import load_script
    from deepdenoise1d.errors import InputError
    from deepdenoise1d.onnx_runner import denoise_onnx

    model, net = pair(**symmetry)
    pth = _checkpoint(tmp_path, model)
    load_script(REPO_ROOT / "pth2h5.py", "pth2h5_odd").main([str(pth), str(tmp_path / "odd.h5")])
    loaded = load_h5(tmp_path / "odd.h5")
    assert (loaded.config.odd, loaded.config.reversal) == (symmetry["odd"], symmetry["reversal"])
    y = record()
    np.testing.assert_array_equal(loaded.denoise(y), net.denoise(y))
    onnx_script = load_script(REPO_ROOT / "pth2onnx.py", "pth2onnx_odd")
    onnx_script.main([str(pth), str(tmp_path / "odd.onnx")])
    got = denoise_onnx(tmp_path / "odd.onnx", y)
    np.testing.assert_allclose(got, net.denoise(y), rtol=0, atol=1e-5 * np.abs(y).max())
    with pytest.raises(InputError, match="--prior-input cannot export an odd model" if symmetry["odd"] else
                       "--prior-input cannot export a time-reversal symmetric model"):
        onnx_script.export(pth, tmp_path / "pair.onnx", prior_input=True)
    assert not (tmp_path / "pair.onnx").exists()


@pytest.mark.parametrize("flag", ["odd", "reversal"])
def test_train_switches_a_symmetry_on_for_an_init_and_resume_keeps_it(tmp_path, flag):
    from conftest import run_script

    start = make_model(0, **{**ODD, "odd": False})  # neither symmetry
    init = _checkpoint(tmp_path, start)
    run = tmp_path / "run"
    common = ["--train-prior", "broad", "--crop-length", "64", "--loss", "rmse", "--batch-size", "4",
              "--val-size", "8", "--eval-every", "2", "--run-dir", str(run)]
    done = run_script(REPO_ROOT / "Pytorch_V1" / "train.py", "--init", str(init), f"--{flag}", "--steps", "2", *common,
                      cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    saved = torch.load(run / "ckpt_last.pth", weights_only=True)
    assert saved["config"]["model"][flag] is True
    resumed = run_script(REPO_ROOT / "Pytorch_V1" / "train.py", "--run-dir", str(run), "--resume", "--steps", "4",
                         cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(run / "ckpt_last.pth", weights_only=True)["config"]["model"][flag] is True

"""The trust region of an equivariant model at inference (``icnn.spec.TRUST_REGION``): a sample the network
would move by more than TRUST_REGION·s(y) keeps its noisy value, in PyTorch, NumPy, ONNX and the exact
Jacobian (an identity row there). Inputs with a jump of 10⁶ σ make a random network move samples that far."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import FLOAT32_TOLERANCE, REPO_ROOT, convert, load_script, make_model, relative_error  # noqa: E402
from icnn.spec import TRUST_REGION  # noqa: E402
from Numpy_V2.jacobian import jacobians  # noqa: E402
from Numpy_V2.model import NumpyICNN, noise_scale  # noqa: E402
from test_jacobian import MEDIAN_LIMIT, P95_LIMIT, relative_errors, torch_reference  # noqa: E402

CONFIG = dict(width=4, depth=5, norm="none", equivariant=True, baseline="median")


def jumps(length: int = 64, n: int = 3, seed: int = 0) -> np.ndarray:
    """Unit noise on a jump of 10⁶ half-way, (n, length) float64."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, length)) + 1e6 * (np.arange(length) >= length // 2)


@pytest.fixture(scope="module")
def model():
    return make_model(11, **CONFIG)


def test_the_trust_region_keeps_the_noisy_samples_the_network_would_move_too_far(model):
    y = jumps()
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        out = exact(torch.from_numpy(y[:, None]))[:, 0].numpy()
        free = exact.train()(torch.from_numpy(y[:, None]))[:, 0].numpy()  # in training: no trust region
    centred = y - np.sort(y, axis=-1)[:, (y.shape[-1] - 1) // 2][:, None]
    s = noise_scale(centred[:, None])[:, 0]
    far = np.abs(free - y) > TRUST_REGION * s
    assert far.any() and not far.all()  # the jump drives some samples out, not all
    # the noisy value there, up to the rounding of taking the median off and adding it back
    np.testing.assert_allclose(out[far], y[far], rtol=1e-15, atol=1e-9)
    np.testing.assert_array_equal(out[~far], free[~far])


def test_numpy_and_onnx_apply_it_as_pytorch_does(model, tmp_path):
    y = jumps(seed=1).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(y[:, None]))[:, 0].numpy()
    net = NumpyICNN({k: v.detach().numpy() for k, v in model.state_dict().items()}, model.config)
    assert relative_error(net.forward(y[:, None])[:, 0], expected) <= FLOAT32_TOLERANCE
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    pth2h5 = load_script(REPO_ROOT / "pth2h5.py", "pth2h5_trust")
    pth, _ = convert(pth2h5, model, tmp_path, "trust")
    pth2onnx = load_script(REPO_ROOT / "pth2onnx.py", "pth2onnx_trust")
    pth2onnx.main([str(pth), str(tmp_path / "trust.onnx"), "--prior-input"])  # the network given h
    session = onnxruntime.InferenceSession(str(tmp_path / "trust.onnx"), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(y[:, None])
    got = session.run(None, {"x": y[:, None], "h": model.prior(x).numpy()})[0][:, 0]
    assert relative_error(got, expected) <= FLOAT32_TOLERANCE


def test_the_exact_jacobian_has_identity_rows_where_it_keeps_the_input(model):
    y = jumps(length=40, seed=2)
    net = NumpyICNN({k: v.detach().numpy() for k, v in model.state_dict().items()}, model.config, dtype=np.float64)
    exact = jacobians(net, y, "fixed", tangent_dtype=np.float64)["jacobian"]
    errors = relative_errors(exact, torch_reference(copy.deepcopy(model).double(), y, "fixed"))
    assert np.median(errors) <= MEDIAN_LIMIT and errors.max() <= P95_LIMIT, errors
    assert np.isclose(exact, np.eye(y.shape[1])[None]).all(axis=2).any()  # rows e_i: samples kept as they are

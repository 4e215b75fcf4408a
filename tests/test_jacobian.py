"""Numpy_V2/jacobian.py: exact Jacobians of the NumPy network, SURE, the Bayes derivative.

The reference is independent of the NumPy code: float64 autograd through the
PyTorch model for ∂f/∂y (h held fixed) and ∂f/∂h, plus dh/dy by central
differences of ``wiener_inverse_response`` (the torch model computes h with
NumPy, outside autograd): J = ∂f/∂y + ∂f/∂h · dh/dy.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import REPO_ROOT, load_script
from Numpy_V2.jacobian import bayes_jacobian_diagonal, filter_numbers, jacobians, sure
from Numpy_V2.model import NumpyICNN, load_h5
from deepdenoise1d.classical import bayes_posterior_mean, wiener_inverse_response
from deepdenoise1d.synthesis import benchmark_signals


CKPT = REPO_ROOT / "ckpt"
MEDIAN_LIMIT, P95_LIMIT = 1e-5, 1e-4  # the required per-signal relative max error (median, 95th percentile)
N_SIGNALS = 32
REFERENCE_STEP = 3e-7  # dh/dy step of the reference, relative to 1 + RMS (explain.py uses 1e-6)


def torch_reference(model, y: np.ndarray, mode: str) -> np.ndarray:
    """J (N, L, L) by float64 torch autograd, plus dh/dy by central differences."""
    import torch

    n, length = y.shape
    x = torch.tensor(y[:, None, :], dtype=torch.float64, requires_grad=True)
    leaves = [x]
    h = None
    prior = wiener_inverse_response
    if model.config.baseline == "median":  # an offset-free model's prior is of y − m(y), m the lower median
        prior = lambda v: wiener_inverse_response(v - np.sort(v, axis=-1)[:, (v.shape[-1] - 1) // 2 : (v.shape[-1] + 1) // 2])  # noqa: E731
    if model.wienernet is not None:
        h = torch.tensor(prior(y)[:, None, :], dtype=torch.float64, requires_grad=True)
        leaves.append(h)
    out = model(x, h, bn_mode=mode)[:, 0]  # (N, L)
    rows = [torch.autograd.grad(out[:, i].sum(), leaves, retain_graph=True) for i in range(length)]
    jac = np.stack([r[0][:, 0].numpy() for r in rows], axis=1)  # [n, i, j]
    if h is not None:
        jac_h = np.stack([r[1][:, 0].numpy() for r in rows], axis=1)
        delta = REFERENCE_STEP * (1.0 + np.sqrt(np.mean(y**2, axis=1)))
        dh = np.empty((n, length, length))
        for j in range(length):
            step = np.zeros(length)
            step[j] = 1.0
            plus = prior(y + delta[:, None] * step)
            minus = prior(y - delta[:, None] * step)
            dh[:, :, j] = (plus - minus) / (2 * delta[:, None])
        jac = jac + jac_h @ dh
    return jac


def relative_errors(jac: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per signal: max |J − J_ref| / max |J_ref|."""
    return np.abs(jac - ref).max(axis=(1, 2)) / np.abs(ref).max(axis=(1, 2))


@pytest.fixture(scope="module")
def h5_files(tmp_path_factory):
    """The shipped .h5, the same weights in the original repository's layout (no attributes), and the other architectures."""
    folder = tmp_path_factory.mktemp("weights")
    seed = folder / "seed_layout.h5"
    with h5py.File(CKPT / "ckpt_best.h5", "r") as src, h5py.File(seed, "w") as dst:
        for key, item in src.items():
            dst.create_dataset(key, data=np.asarray(item[()]).ravel())  # flat datasets, no attributes
        assert not dst.attrs
    files = {"shipped": (CKPT / "ckpt_best.h5", CKPT / "ckpt_best.pth"), "original-layout": (seed, CKPT / "ckpt_best.pth")}
    pytest.importorskip("torch")
    pth2h5 = load_script(REPO_ROOT / "pth2h5.py", "pth2h5_for_explain")
    for name in ("noprior", "sparse"):
        pth = CKPT / f"ckpt_{name}.pth"
        pth2h5.convert(pth, folder / f"{name}.h5")
        files[name] = (folder / f"{name}.h5", pth)
    # ckpt_sparse's prior branch outputs exactly 1 on held-out signals (its thresholds silence it),
    # so a freshly initialised sparse model keeps the prior-times-threshold path covered.
    import torch

    from Pytorch_V1.checkpoint import save_checkpoint
    from Pytorch_V1.model import ICNN_s, ModelConfig

    torch.manual_seed(11)
    model = ICNN_s(ModelConfig(prior=True, norm="sparse_bn"))
    save_checkpoint(folder / "fresh_sparse.pth", {"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict()}})
    pth2h5.convert(folder / "fresh_sparse.pth", folder / "fresh_sparse.h5")
    files["fresh-sparse"] = (folder / "fresh_sparse.h5", folder / "fresh_sparse.pth")
    return files


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("name,n", [("shipped", N_SIGNALS), ("original-layout", N_SIGNALS), ("noprior", 8), ("sparse", 8),
                                    ("fresh-sparse", 8)])
def test_jacobian_matches_torch_autograd(h5_files, name, n, mode):
    torch = pytest.importorskip("torch")
    from Pytorch_V1.checkpoint import load_model

    h5, pth = h5_files[name]
    _, y = benchmark_signals(2026, n, 3.0)
    result = jacobians(load_h5(h5, dtype=np.float64), y, mode)
    model, _ = load_model(pth, "cpu")
    if name == "original-layout":  # a file without attributes reads as the plain network: compare like with like
        import dataclasses

        model.config = dataclasses.replace(model.config, equivariant=False, baseline="none")
    with torch.no_grad():
        model = model.double()
    errors = relative_errors(result["jacobian"], torch_reference(model, y, mode))
    median, p95 = np.median(errors), np.percentile(errors, 95)
    print(f"{name} {mode}: median {median:.2e}, 95th percentile {p95:.2e}, max {errors.max():.2e}")
    assert median <= MEDIAN_LIMIT and p95 <= P95_LIMIT, (median, p95)


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_odd_length_matches_torch_autograd(mode):
    """L = 37: pooling drops a sample, upsampling is padded back, the prior pools adaptively."""
    torch = pytest.importorskip("torch")
    from Pytorch_V1.checkpoint import load_model

    rng = np.random.default_rng(37)
    y = 3.0 * rng.standard_normal((4, 37)) + 6.0 * (rng.random((4, 37)) < 0.2)
    model, _ = load_model(CKPT / "ckpt_best.pth", "cpu")
    with torch.no_grad():
        model = model.double()
    errors = relative_errors(jacobians(load_h5(CKPT / "ckpt_best.h5", dtype=np.float64), y, mode)["jacobian"],
                             torch_reference(model, y, mode))
    assert np.median(errors) <= MEDIAN_LIMIT and errors.max() <= P95_LIMIT, errors


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_output_and_offset(mode):
    net = load_h5(CKPT / "ckpt_best.h5", dtype=np.float64)
    _, y = benchmark_signals(2026, 20, 3.0)
    result = jacobians(net, y, mode, block=7)  # a block size that does not divide N
    centred = y - np.sort(y, axis=-1)[:, (y.shape[-1] - 1) // 2][:, None] if net.config.baseline == "median" else y
    h = wiener_inverse_response(centred)[:, None, :]  # the prior as the model computes it, in float64
    np.testing.assert_allclose(result["output"], net.forward(y[:, None, :], h, bn_mode=mode)[:, 0], rtol=0, atol=1e-10)
    linear = np.einsum("nij,nj->ni", result["jacobian"], y)
    np.testing.assert_allclose(result["offset"], result["output"] - linear, rtol=0, atol=1e-12)
    if net.config.equivariant:
        # f(αy) = α f(y) in both modes, so Euler's theorem for degree-1 functions gives J(y)·y = f(y): no offset.
        np.testing.assert_allclose(net.forward(2 * y[:, None, :], h, bn_mode=mode)[:, 0], 2 * result["output"], atol=1e-6)
        assert np.abs(result["offset"]).max() <= 1e-6 * np.abs(result["output"]).max()
    elif mode == "unfixed":
        # Every path starts with a per-signal normalisation and h(αy) = h(y): f(αy) = f(y)
        # (up to BN's eps), so Euler's theorem for degree-0 functions gives J(y)·y = 0.
        np.testing.assert_allclose(net.forward(2 * y[:, None, :], h, bn_mode=mode)[:, 0], result["output"], atol=1e-4)
        assert np.abs(linear).max() <= 1e-4 * np.abs(result["output"]).max()
    # One block or many: each signal's Jacobian is its own.
    single = jacobians(net, y[5:6], mode)["jacobian"][0]
    np.testing.assert_allclose(result["jacobian"][5], single, rtol=0, atol=1e-9)


def test_bayes_derivative_is_posterior_variance_over_sigma_squared():
    y = np.linspace(-6, 16, 301)
    for sigma in (0.5, 3.0):
        mean, slope = bayes_jacobian_diagonal(y, sigma)
        np.testing.assert_allclose(mean, bayes_posterior_mean(y, sigma), atol=1e-12)
        step = 1e-5
        numeric = (bayes_posterior_mean(y + step, sigma) - bayes_posterior_mean(y - step, sigma)) / (2 * step)
        np.testing.assert_allclose(slope, numeric, atol=1e-7)


def test_sure_with_exact_divergence_tracks_the_true_mse():
    """SURE's root-mean matches the true RMSE within 5 % on 192 signals (scripts/explain_results.py reports 2000)."""
    net = load_h5(CKPT / "ckpt_best.h5", dtype=np.float64)
    clean, y = benchmark_signals(2026, 192, 3.0)
    result = jacobians(net, y, "fixed")
    numbers = filter_numbers(result["jacobian"], result["output"], result["offset"])
    estimate = np.sqrt(np.mean(sure(y, result["output"], numbers["trace_per_sample"] * y.shape[1], 3.0)))
    truth = np.sqrt(np.mean((result["output"] - clean) ** 2))
    assert abs(estimate / truth - 1) < 0.05, (estimate, truth)
    assert np.all((numbers["diagonal_fraction"] > 0) & (numbers["diagonal_fraction"] <= 1))


# --- equivariant models: J_f = J_g(u) + (g(u) − J_g(u)·u) ∇sᵀ, u = y / s(y) ---


def fresh_pair(equivariant: bool, seed: int = 0, baseline: str = "none"):
    """A fresh seeded torch model in float64 (BN statistics randomised) and NumpyICNN of its weights in float64."""
    torch = pytest.importorskip("torch")
    from conftest import make_model

    model = make_model(seed, equivariant=equivariant, baseline=baseline)
    net = NumpyICNN({k: v.numpy() for k, v in model.state_dict().items()}, model.config, dtype=np.float64)
    with torch.no_grad():
        return model.double(), net


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("length", [100, 37])
def test_equivariant_jacobian_matches_torch_autograd(mode, length):
    """Autograd differentiates s(y) too (topk routes the gradient to the selected difference)."""
    model, net = fresh_pair(True)
    rng = np.random.default_rng(length)
    y = 3.0 * rng.standard_normal((6, length)) + 6.0 * (rng.random((6, length)) < 0.2)
    result = jacobians(net, y, mode, tangent_dtype=np.float64)
    errors = relative_errors(result["jacobian"], torch_reference(model, y, mode))
    median, p95 = np.median(errors), np.percentile(errors, 95)
    assert median <= MEDIAN_LIMIT and p95 <= P95_LIMIT, (median, p95)


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("equivariant", [True, False])
def test_offset_free_jacobian_matches_torch_autograd(mode, equivariant):
    """f(y) = m + F(y − m): autograd routes m's gradient through topk to the median sample; rows of J sum to 1."""
    model, net = fresh_pair(equivariant, baseline="median")
    rng = np.random.default_rng(5)
    y = 3.0 * rng.standard_normal((6, 64)) + 6.0 * (rng.random((6, 64)) < 0.2) + 40.0
    result = jacobians(net, y, mode, tangent_dtype=np.float64)
    errors = relative_errors(result["jacobian"], torch_reference(model, y, mode))
    median, p95 = np.median(errors), np.percentile(errors, 95)
    assert median <= MEDIAN_LIMIT and p95 <= P95_LIMIT, (median, p95)
    np.testing.assert_allclose(result["jacobian"].sum(axis=2), 1.0, atol=1e-9)  # f(y + c·1) = f(y) + c


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_euler_identity_holds_exactly_when_equivariant(mode):
    """f homogeneous of degree 1 ⇒ J(y)·y = f(y) and the offset f − J·y is 0. A plain model is not: in fixed
    mode its biases leave an offset, in unfixed mode it is degree 0 (J·y ≈ 0, offset ≈ f)."""
    _, y = benchmark_signals(2026, 8, 3.0)
    for equivariant in (True, False):
        _, net = fresh_pair(equivariant)
        result = jacobians(net, y, mode, tangent_dtype=np.float64)
        peak = np.abs(result["output"]).max()
        linear = np.einsum("nij,nj->ni", result["jacobian"], y)
        if equivariant:
            assert np.abs(linear - result["output"]).max() <= 1e-4 * peak
            assert np.abs(result["offset"]).max() <= 1e-4 * peak
        else:
            assert np.abs(linear - result["output"]).max() > 1e-2 * peak
            assert np.abs(result["offset"]).max() > 1e-2 * peak


def test_explain_results_reference_differentiates_the_models_own_prior():
    """scripts/explain_results.py's float64 reference (the accuracy table of demo/FILTER.md) is the model's own
    Jacobian: for an offset-free model its prior is of y − m(y), and the exact Jacobian agrees with it."""
    explain = load_script(REPO_ROOT / "scripts" / "explain_results.py", "explain_for_reference")
    model, net = fresh_pair(True, baseline="median")
    rng = np.random.default_rng(7)
    y = 3.0 * rng.standard_normal((4, 48)) + 6.0 * (rng.random((4, 48)) < 0.2) + 40.0
    for mode in ("fixed", "unfixed"):
        reference, _, _ = explain.reference_jacobians(model, y, mode)
        errors = relative_errors(jacobians(net, y, mode, tangent_dtype=np.float64)["jacobian"], reference)
        assert np.median(errors) <= MEDIAN_LIMIT and np.percentile(errors, 95) <= P95_LIMIT, (mode, errors)

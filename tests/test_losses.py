"""Tests of Pytorch_V1/losses.py: SURE's unbiasedness, the R2R loss, UNSURE's learned noise variance (UnsureEta) and the per-signal loss weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from Pytorch_V1.losses import UnsureEta, loss_weights, sure_per_signal
from deepdenoise1d.synthesis import noisy_pairs


# ---------------------------------------------------------------------------
# SURE


def _sure_and_mse(denoiser, sigma: float, n: int = 20000, seed: int = 0, central: bool = False, probes: int = 0):
    clean, noisy, _ = noisy_pairs(np.random.default_rng(seed), n, sigma)
    x = torch.tensor(noisy, dtype=torch.float64)[:, None]
    shape = (probes, *noisy.shape) if probes else noisy.shape  # (P, N, L): P probes averaged
    probe = torch.tensor(np.random.default_rng(seed + 1).standard_normal(shape)).unsqueeze(-2)
    pred = denoiser(x, None)
    epsilon = 0.1 if central else 1e-3  # antithetic probes: bias O(ε²), so a large step is fine
    sure = sure_per_signal(denoiser, x, pred, torch.full((n,), sigma, dtype=torch.float64), probe, epsilon, False,
                           central=central)
    mse = ((pred[:, 0].numpy() - clean) ** 2).mean(axis=1)
    return sure.numpy(), mse


def test_probes_through_the_model_together_give_each_probes_divergence_as_one_at_a_time():
    """probe_divergences with batch_probes (groups of PROBE_BATCH // N probes, here several groups) equals
    one call per probe, probe by probe, for a model that couples neighbours, and its mean is mc_divergence."""
    from Pytorch_V1 import losses

    calls = []

    def denoiser(x, h):
        calls.append(x.shape[0])
        return torch.relu(x - 0.5) * 0.7 + 0.2 * torch.roll(x, 1, dims=-1)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 32, generator=gen, dtype=torch.float64)
    probe = torch.randn(7, 5, 1, 32, generator=gen, dtype=torch.float64)
    step = torch.full((5,), 1e-3, dtype=torch.float64)
    pred = denoiser(x, None)
    one = losses.probe_divergences(denoiser, x, pred, step, probe, False, central=True)
    calls.clear()
    old, losses.PROBE_BATCH = losses.PROBE_BATCH, 15  # three probes (15 signals) a call: groups of 3, 3 and 1
    try:
        together = losses.probe_divergences(denoiser, x, pred, step, probe, False, central=True, batch_probes=True)
    finally:
        losses.PROBE_BATCH = old
    assert calls == [15, 15, 15, 15, 5, 5] and together.shape == (7, 5)  # plus and minus per group
    assert torch.allclose(together, one, rtol=1e-12, atol=1e-9)
    mean = losses.mc_divergence(denoiser, x, pred, step, probe, False, central=True)
    assert torch.allclose(mean, one.mean(dim=0), rtol=1e-12)


@pytest.mark.parametrize("denoiser", [
    lambda x, h: 0.6 * x,  # linear: divergence 0.6·L exactly
    lambda x, h: F.softshrink(x, 3.0),  # soft threshold: divergence = number of |y| > T
    lambda x, h: torch.relu(x - 2.0) + 0.1 * torch.roll(x, 1, dims=-1),  # couples neighbours
])
@pytest.mark.parametrize("central, probes", [(False, 0), (True, 0), (True, 3)])
def test_sure_is_an_unbiased_estimate_of_the_mse(denoiser, central, probes):
    sure, mse = _sure_and_mse(denoiser, 3.0, central=central, probes=probes)
    diff = sure - mse
    stderr = diff.std(ddof=1) / np.sqrt(diff.size)
    assert abs(diff.mean()) < 4 * stderr, (sure.mean(), mse.mean(), stderr)
    assert abs(sure.mean() / mse.mean() - 1) < 0.03


def test_sure_is_not_the_plain_residual():
    # Without the divergence term the "risk" of the identity would be 0, not sigma².
    sure, mse = _sure_and_mse(lambda x, h: x, 2.0, n=5000)
    assert abs(sure.mean() - 4.0) < 0.15 and abs(mse.mean() - 4.0) < 0.15


# ---------------------------------------------------------------------------
# R2R and UNSURE


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_r2r_loss_is_the_clean_loss_at_the_recorrupted_noise_plus_a_constant(alpha):
    # ŷ = y + ασz and ȳ = y − σz/α have independent noises, so E‖f(ŷ) − ȳ‖²/L = E‖f(ŷ) − x‖²/L + σ²(1 + 1/α²).
    from Pytorch_V1.losses import r2r_per_signal

    sigma, n = 2.0, 20000
    clean, noisy, _ = noisy_pairs(np.random.default_rng(5), n, sigma)
    x = torch.tensor(noisy, dtype=torch.float64)[:, None]
    z = torch.tensor(np.random.default_rng(6).standard_normal(x.shape))
    denoiser = lambda v, h: torch.relu(v - 2.0) + 0.1 * torch.roll(v, 1, dims=-1)  # noqa: E731
    loss = r2r_per_signal(denoiser, x, torch.full((n,), sigma, dtype=torch.float64), z, alpha, False).numpy()
    clean_loss = ((denoiser(x + alpha * sigma * z, None)[:, 0].numpy() - clean) ** 2).mean(axis=1)
    diff = loss - clean_loss - sigma**2 * (1 + 1 / alpha**2)
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(n), diff.mean()


def test_unsure_raises_eta_while_the_divergence_is_positive_and_lowers_it_when_negative():
    eta = UnsureEta()
    assert eta.start(torch.full((4, 1, 10), 2.0)) == pytest.approx(0.25 * 4.0)
    start = eta.value
    for _ in range(5):
        eta.update(0.3)
    assert eta.value > start
    high = eta.value
    for _ in range(40):
        eta.update(-0.3)
    assert 0 < eta.value < high
    restored = UnsureEta()
    restored.load_state_dict(eta.state_dict())
    assert restored.state_dict() == eta.state_dict()


# ---------------------------------------------------------------------------
# loss weights


def test_loss_weights_balance_noise_levels():
    sigmas = np.array([0.5, 1.0, 5.0])
    assert loss_weights("none", sigmas) is None
    for kind in ("sigma2", "bayes"):
        w = loss_weights(kind, sigmas)
        assert w.mean() == pytest.approx(1.0) and w[0] > w[1] > w[2]  # the noisiest signals weigh least


# ---------------------------------------------------------------------------
# SURE's floor and its probes


def test_floored_sure_keeps_honest_values_and_reflects_gamed_ones():
    from Pytorch_V1.losses import floored_sure

    variance, length = torch.tensor([4.0, 4.0, 4.0]), 50
    floor = -3.0 * 4.0 * np.sqrt(2 / length)
    sure = torch.tensor([1.0, floor + 0.01, floor - 2.0], requires_grad=True)
    out = floored_sure(sure, variance, length, 3.0)
    assert out[0] == 1.0 and out[1] == sure[1]
    assert out[2].item() == pytest.approx(floor + 2.0)  # reflected: lower than the floor costs more
    out.sum().backward()
    assert sure.grad.tolist() == [1.0, 1.0, -1.0]
    assert torch.equal(floored_sure(sure, variance, length, 0.0), sure)  # 0: off


@pytest.mark.parametrize("joint", [False, True])
def test_each_sure_step_draws_fresh_probes(joint):
    """Two steps on the same batch give different SURE values (new probes), the same rng state the same value."""
    from types import SimpleNamespace

    from Pytorch_V1.losses import label_free_loss
    from Pytorch_V1.train import TrainConfig

    _, noisy, _ = noisy_pairs(np.random.default_rng(0), 8, 1.0)
    x = torch.tensor(noisy, dtype=torch.float32)[:, None]
    net = lambda y, h: torch.relu(y - 1.0) * torch.sigmoid(torch.roll(y, 1, dims=-1))  # noqa: E731
    parts = SimpleNamespace(net=net, flip_rng=np.random.default_rng(5), device=torch.device("cpu"), eta=None,
                            model=SimpleNamespace(signals_independent=joint))
    cfg = TrainConfig(loss="sure")
    first, second = (label_free_loss(cfg, parts, x, None, np.ones(8)) for _ in range(2))
    assert not torch.equal(first, second)
    parts.flip_rng = np.random.default_rng(5)
    assert torch.equal(label_free_loss(cfg, parts, x, None, np.ones(8)), first)


@pytest.mark.parametrize("central, probes", [(True, 1), (True, 3), (False, 2)])
def test_sure_terms_in_one_call_are_the_terms_call_by_call(central, probes):
    """A model without batch statistics (the universal kind: offset-free, equivariant, odd, reversal, prior)
    in training: f(y) and its divergence, and their gradients, the same whether y and its perturbed copies go
    through it together (h recomputed by the model) or call by call with the prior given for y."""
    from conftest import make_model
    from Pytorch_V1.losses import sure_terms

    model = make_model(3, norm="none", equivariant=True, baseline="median", odd=True, reversal=True,
                       width=2, depth=3).double().train()  # float64: rounding does not hide a difference
    assert model.signals_independent and not make_model(3).signals_independent
    gen = torch.Generator().manual_seed(4)
    x = 3 * torch.randn(5, 1, 64, generator=gen, dtype=torch.float64) + 2
    probe = torch.randn(probes, 5, 1, 64, generator=gen, dtype=torch.float64)
    step = torch.full((5,), 0.3, dtype=torch.float64)
    results = []
    for joint in (False, True):
        model.zero_grad()
        pred, divergence = sure_terms(model, x, model.prior(x), step, probe, central, joint)
        (pred.square().mean() + divergence.mean()).backward()
        results.append((pred.detach(), divergence.detach(), [p.grad.clone() for p in model.parameters()]))
    (pred0, div0, grads0), (pred1, div1, grads1) = results
    torch.testing.assert_close(pred1, pred0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(div1, div0, rtol=1e-8, atol=1e-8)
    for g1, g0 in zip(grads1, grads0):
        torch.testing.assert_close(g1, g0, rtol=1e-8, atol=1e-10)

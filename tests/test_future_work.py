"""Issue 6: σ-range (blind) sampling, the SURE loss, σ estimation, and torchrun scale-out."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO_ROOT
from Pytorch_V1.checkpoint import load_checkpoint, save_checkpoint
from Pytorch_V1.data import SyntheticStream
from Pytorch_V1.sure import sure_per_signal
from signals.classical import estimate_sigma
from signals.synthesis import draw_sigmas, noisy_pairs, parse_sigma

TRAIN = REPO_ROOT / "Pytorch_V1" / "train.py"


def test_sigma_range_is_parsed_and_sampled_uniformly():
    assert parse_sigma("0.5:5") == (0.5, 5.0)
    assert parse_sigma("3") == 3.0
    for bad in ("5:0.5", "-1", "a:b", "1:2:3"):
        with pytest.raises(ValueError):
            parse_sigma(bad)
    sigmas = draw_sigmas(np.random.default_rng(0), 100_000, (0.5, 5.0))
    assert sigmas.min() >= 0.5 and sigmas.max() <= 5.0
    assert abs(sigmas.mean() - 2.75) < 0.02 and abs(sigmas.std() - 4.5 / np.sqrt(12)) < 0.02


def test_blind_stream_gives_each_signal_its_own_sigma():
    noisy, clean, sigmas = SyntheticStream(1, 4000, (0.5, 5.0)).next_batch()
    assert len(np.unique(sigmas)) == 4000
    # The residual's spread follows each signal's sigma.
    spread = (noisy - clean).std(axis=1)
    assert np.corrcoef(spread, sigmas)[0, 1] > 0.97
    assert abs(np.mean(spread / sigmas) - 1) < 0.01


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


@pytest.mark.parametrize("sigma", [1.0, 3.0, 5.0])
def test_sigma_is_estimated_from_noisy_signals_alone(sigma):
    _, noisy, _ = noisy_pairs(np.random.default_rng(3), 1000, sigma)
    assert abs(estimate_sigma(noisy) / sigma - 1) < 0.04


def _torchrun(args, tmp_path, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(TRAIN), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_two_cpu_workers_train_and_resume(tmp_path):
    ckpt = tmp_path / "ckpt"
    common = ["--batch-size", "16", "--val-size", "50", "--eval-every", "5", "--save-every", "5", "--ckpt-dir", str(ckpt)]
    run = _torchrun(["--steps", "10", *common], tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    last = load_checkpoint(ckpt / "ckpt_last.pth")
    assert last["step"] == 10 and last["config"]["world_size"] == 2
    # Each rank's data stream is saved, and the two differ (distinct synthetic streams).
    streams = last["rng_state"]["stream"]
    assert len(streams) == 2 and streams[0] != streams[1]
    rows = (ckpt / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["5", "10"]  # rank 0 alone writes the log

    # Extend the saved run to 15 global steps and resume it on two workers.
    last["config"]["train"]["steps"] = 15
    save_checkpoint(ckpt / "ckpt_last.pth", last)
    resumed = _torchrun(["--resume", "--ckpt-dir", str(ckpt)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = load_checkpoint(ckpt / "ckpt_last.pth")
    assert after["step"] == 15
    changed = [k for k, v in after["net_state_dict"].items() if v.is_floating_point()
               and not torch.equal(v, last["net_state_dict"][k])]
    assert changed, "resumed steps did not change the weights"
    assert [r.split(",")[0] for r in (ckpt / "train_log.csv").read_text().splitlines()[1:]] == ["5", "10", "15"]


def test_uneven_batch_over_workers_is_a_clear_error(tmp_path):
    run = _torchrun(["--steps", "2", "--batch-size", "15", "--ckpt-dir", str(tmp_path / "c")], tmp_path)
    assert run.returncode != 0
    assert "must divide evenly" in run.stderr


def test_sparse_bn_thresholds_learn_under_the_l1_penalty():
    from Pytorch_V1.model import ICNN_s, ModelConfig

    model = ICNN_s(ModelConfig(norm="sparse_bn")).train()
    before = [bn.threshold.detach().clone() for bn in model.batch_norms()]
    _, noisy, _ = noisy_pairs(np.random.default_rng(0), 32, 3.0)
    x = torch.tensor(noisy, dtype=torch.float32)[:, None]
    out = model(x)
    loss = out.pow(2).mean() + 1e-2 * model.sparsity_penalty()
    loss.backward()
    grads = [bn.threshold.grad for bn in model.batch_norms()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads), "a threshold got no gradient"
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(not torch.equal(b, bn.threshold) for b, bn in zip(before, model.batch_norms()))

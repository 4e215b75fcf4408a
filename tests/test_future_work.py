"""σ-range (blind) sampling, the SURE loss, σ estimation, and torchrun scale-out."""
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
from Pytorch_V1.losses import UnsureEta, sure_per_signal
from deepdenoise1d.noise import estimate_sigma
from deepdenoise1d.synthesis import draw_sigmas, noisy_pairs, parse_sigma

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
    # PYTHONFAULTHANDLER: a worker that aborts (SIGABRT was seen once in CI) prints where it was.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(TRAIN), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_two_cpu_workers_train_and_resume(tmp_path):
    ckpt = tmp_path / "ckpt"
    common = ["--batch-size", "16", "--val-size", "50", "--eval-every", "5", "--save-every", "5", "--run-dir", str(ckpt)]
    run = _torchrun(["--steps", "10", *common], tmp_path)
    assert run.returncode == 0, run.stderr[-8000:]
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
    resumed = _torchrun(["--resume", "--run-dir", str(ckpt)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-8000:]
    after = load_checkpoint(ckpt / "ckpt_last.pth")
    assert after["step"] == 15
    changed = [k for k, v in after["net_state_dict"].items() if v.is_floating_point()
               and not torch.equal(v, last["net_state_dict"][k])]
    assert changed, "resumed steps did not change the weights"
    assert [r.split(",")[0] for r in (ckpt / "train_log.csv").read_text().splitlines()[1:]] == ["5", "10", "15"]


def test_uneven_batch_over_workers_is_a_clear_error(tmp_path):
    run = _torchrun(["--steps", "2", "--batch-size", "15", "--run-dir", str(tmp_path / "c")], tmp_path)
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


def test_unsure_run_learns_a_noise_level_and_resumes_it(tmp_path):
    import Pytorch_V1.train as train_mod

    args = ["--loss", "unsure", "--steps", "6", "--batch-size", "16", "--val-size", "40", "--eval-every", "3",
            "--save-every", "3", "--device", "cpu", "--run-dir", str(tmp_path / "run")]
    val = train_mod.train(train_mod.config_from_args(train_mod.get_args(args)), tmp_path / "run")
    saved = load_checkpoint(tmp_path / "run" / "ckpt_last.pth")["unsure"]
    assert np.isfinite(saved["eta"]) and saved["eta"] > 0 and val["unsure_sigma"] == pytest.approx(np.sqrt(saved["eta"]))
    cfg = train_mod.config_from_args(train_mod.get_args(["--steps", "9", "--run-dir", str(tmp_path / "run")]))
    train_mod.train(cfg, tmp_path / "run", resume=True, given={"steps"})
    resumed = load_checkpoint(tmp_path / "run" / "ckpt_last.pth")
    assert resumed["step"] == 9 and resumed["unsure"]["eta"] != saved["eta"]  # it went on from the saved η


@pytest.mark.parametrize("loss", ["r2r", "unsure"])
def test_every_label_free_loss_gets_the_label_free_recipe_and_needs_no_labels(loss, tmp_path):
    import Pytorch_V1.train as train_mod
    from deepdenoise1d.dataset import write_folder_dataset

    cfg = train_mod.config_from_args(train_mod.get_args(["--loss", loss]))
    assert (cfg.steps, cfg.batch_size, cfg.lr) == (1500, 512, 1e-2)
    _, noisy, _ = noisy_pairs(np.random.default_rng(2), 150, 2.0)
    write_folder_dataset(tmp_path / "ds", noisy, None)
    run = dict(steps=4, batch_size=16, eval_every=2, save_every=2, device="cpu", loss=loss, data=str(tmp_path / "ds"),
               val_size=30)
    val = train_mod.train(train_mod.TrainConfig(**run), tmp_path / "run")
    assert np.isfinite(val["sure_fixed"]) and "fixed" not in val  # no labels: selected by SURE alone


def test_label_free_study_reports_r2r_recorruption_mean_and_unsure_learned_sigma(tmp_path, capsys):
    import Pytorch_V1.train as train_mod
    from conftest import load_script

    for loss in ("r2r", "unsure"):
        args = ["--loss", loss, "--steps", "4", "--batch-size", "16", "--val-size", "40", "--eval-every", "2",
                "--device", "cpu"]
        train_mod.train(train_mod.config_from_args(train_mod.get_args(args)), tmp_path / loss)
    study = load_script(REPO_ROOT / "scripts" / "label_free_study.py", "label_free_study")
    out = tmp_path / "table.md"
    study.main([str(tmp_path / "r2r" / "ckpt_best.pth"), str(tmp_path / "unsure" / "ckpt_last.pth"),
                "--n", "20", "--draws", "2", "--score", "0.5:5", "--output", str(out)])
    scores = [line for line in capsys.readouterr().out.splitlines() if line.startswith("label-free score")]
    assert len(scores) == 2 and all(np.isfinite(float(line.split("): ")[1].split()[0])) for line in scores)
    rows = __import__("json").loads(out.with_suffix(".json").read_text())
    assert [(r["loss"], r["inference"]) for r in rows] == [("r2r", "f(y)"), ("r2r", "mean of 2 f(y + ασz)"),
                                                           ("unsure", "f(y)")]
    assert rows[2]["learned_sigma"] > 0 and all(np.isfinite(r["rmse"]) and r["vs_bayes"] > 0.9 for r in rows)
    assert rows[0]["rmse"] != rows[1]["rmse"]  # the recorruption mean is computed, not copied
    assert "| 3 |" in out.read_text()


@pytest.mark.parametrize("folder", [False, True])
def test_shrunk_sigma_estimate_fits_its_prior_on_noisy_training_signals_only(folder, tmp_path):
    import Pytorch_V1.train as train_mod
    from deepdenoise1d.dataset import write_folder_dataset

    run = dict(steps=3, batch_size=16, eval_every=3, save_every=3, device="cpu", loss="sure", sigma_estimate="shrunk",
               val_size=40)
    if folder:
        _, noisy, _ = noisy_pairs(np.random.default_rng(4), 300, (0.5, 5.0))
        write_folder_dataset(tmp_path / "ds", noisy, None)  # no labels, no σ anywhere
        run.update(data=str(tmp_path / "ds"), sigma=None)
    else:
        run.update(sigma=[0.5, 5.0])
    val = train_mod.train(train_mod.TrainConfig(**run), tmp_path / "run")
    assert np.isfinite(val["sure_fixed"])
    assert load_checkpoint(tmp_path / "run" / "ckpt_last.pth")["config"]["train"]["sigma_estimate"] == "shrunk"


@pytest.mark.parametrize("script, args", [
    ("blind_study.py", lambda ckpt: ["--sure", ckpt, "--blind", "none.pth", "--blind-sure", "none.pth"]),
    ("label_free_study.py", lambda ckpt: [ckpt]),
])
def test_study_scripts_refuse_to_write_over_a_checkpoint_they_read(script, args, tmp_path, run_main):
    from conftest import assert_one_line_error, load_script

    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes((REPO_ROOT / "ckpt" / "ckpt_sure.pth").read_bytes())
    before = ckpt.read_bytes()
    module = load_script(REPO_ROOT / "scripts" / script, script[:-3])
    code, out, err = run_main(module, [*args(str(ckpt)), "--n", "10", "--sigma", "3", "--output", str(ckpt)])
    assert_one_line_error(code, err, "refusing to overwrite")
    assert ckpt.read_bytes() == before and out == ""  # refused before any work

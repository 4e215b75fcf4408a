"""Adapting a trained model to one record (train.py --data REC --init CKPT --loss sure): the run takes the start's
architecture and a fine-tune's recipe, validates the start at step 0 and hands it back when no step beats it
(on a record built so that adapting hurts), runs on .npy and .csv records, resumes, and prints the commands
that denoise the record with the adapted model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import Pytorch_V1.train as train_mod
from conftest import TINY, read_log
from Pytorch_V1.adapt import ADAPT_RECIPE
from Pytorch_V1.checkpoint import load_checkpoint
from Pytorch_V1.train import TrainConfig, get_args, train
from icnn.shipped import default_weights

START_MODEL = {"prior": True, "norm": "none", "equivariant": True, "baseline": "median", "width": 3, "depth": 3}


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> str:
    """A small trained model of a non-default architecture: the checkpoint an adaptation starts from."""
    folder = tmp_path_factory.mktemp("start")
    train(TrainConfig(**{**TINY, "steps": 20}, model=dict(START_MODEL)), folder / "run")
    return str(folder / "run" / "ckpt_best.pth")


def spikes_record(length: int, seed: int = 0) -> np.ndarray:
    """Sparse spikes of 3..8 in white noise of σ 1."""
    rng = np.random.default_rng(seed)
    clean = np.zeros(length)
    at = rng.choice(length, length // 20, replace=False)
    clean[at] = rng.uniform(3, 8, at.size) * rng.choice([-1, 1], at.size)
    return clean + rng.standard_normal(length)


def adapt_args(record, start, run_dir, *extra) -> list[str]:
    return ["--data", str(record), "--init", start, "--loss", "sure", "--run-dir", str(run_dir),
            "--device", "cpu", *map(str, extra)]


def test_an_adaptation_takes_the_start_architecture_and_a_fine_tune_recipe(start, tmp_path):
    np.save(tmp_path / "rec.npy", spikes_record(2048))
    cfg = train_mod.config_from_args(get_args(adapt_args(tmp_path / "rec.npy", start, tmp_path / "run")))
    saved = load_checkpoint(start)["config"]["model"]
    assert {k: cfg.model[k] for k in START_MODEL} == START_MODEL
    assert cfg.model["train_length"] == saved["train_length"] == cfg.crop_length
    assert (cfg.batch_size, cfg.lr, cfg.adapt) == (ADAPT_RECIPE["batch_size"], ADAPT_RECIPE["lr"], "all")
    # without --data it is a fine-tune on synthetic signals: the same architecture, the usual recipe
    plain = train_mod.config_from_args(get_args(["--init", start, "--device", "cpu"]))
    assert plain.model["width"] == 3 and plain.batch_size == TrainConfig().batch_size


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_an_adaptation_runs_on_a_record_and_says_how_to_denoise_it(start, tmp_path, suffix, capsys):
    record = spikes_record(2048)
    path = tmp_path / f"record{suffix}"
    if suffix == ".npy":
        np.save(path, record)
    else:
        np.savetxt(path, record, header="value", comments="")
    train_mod.main(adapt_args(path, start, tmp_path / "run", "--steps", 6, "--eval-every", 3))
    out, err = capsys.readouterr()
    best = load_checkpoint(tmp_path / "run" / "ckpt_best.pth")
    assert best["config"]["train"]["init"] == start and best["config"]["model"]["width"] == 3
    assert best["config"]["model"]["train_length"] == load_checkpoint(start)["config"]["model"]["train_length"]
    assert [row["step"] for row in read_log(tmp_path / "run" / "train_log.csv")] == ["0", "3", "6"]
    assert f"--input {path} --output" in out and "--method net" in out  # the next step denoises the record itself


def test_the_start_is_handed_back_when_adapting_hurts(tmp_path, capsys):
    """Adapting the shipped spike model at a learning rate of 1 wrecks it at every evaluation: ckpt_best.pth
    must then be the start, weight for weight, and the run must say so."""
    start = str(default_weights(".pth", "ckpt_best"))
    np.save(tmp_path / "rec.npy", spikes_record(2048))
    train_mod.main(adapt_args(tmp_path / "rec.npy", start, tmp_path / "run", "--steps", 20, "--eval-every", 5,
                              "--lr", 1, "--sigma", 1))
    err = capsys.readouterr().err
    rows = read_log(tmp_path / "run" / "train_log.csv")
    scores = [float(r["val_sure_root_mse_fixed"]) for r in rows]
    assert rows[0]["step"] == "0" and all(s > scores[0] for s in scores[1:])  # it did hurt, at every evaluation
    best = load_checkpoint(tmp_path / "run" / "ckpt_best.pth")
    start_weights = load_checkpoint(start)["net_state_dict"]
    assert best["step"] == 0 and all(torch.equal(best["net_state_dict"][k], v) for k, v in start_weights.items())
    assert "no step with a divergence ≥ 0 beat the starting model" in err and start in err


def test_biases_only_leaves_every_other_weight_as_it_was(start, tmp_path):
    np.save(tmp_path / "rec.npy", spikes_record(2048))
    train_mod.main(adapt_args(tmp_path / "rec.npy", start, tmp_path / "run", "--steps", 4, "--eval-every", 2,
                              "--adapt", "biases", "--lr", 1e-2))
    before = load_checkpoint(start)["net_state_dict"]
    after = load_checkpoint(tmp_path / "run" / "ckpt_last.pth")["net_state_dict"]
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.endswith(".bias") for k in moved)


def test_an_adaptation_resumes_to_more_steps(start, tmp_path, run_main):
    np.save(tmp_path / "rec.npy", spikes_record(2048))
    args = adapt_args(tmp_path / "rec.npy", start, tmp_path / "run", "--eval-every", 2)
    assert run_main(train_mod, [*args, "--steps", 4])[0] == 0
    code, _, err = run_main(train_mod, [*args, "--steps", 6, "--resume"])
    assert code == 0 and "resuming at step 4 of 6" in err
    assert load_checkpoint(tmp_path / "run" / "ckpt_last.pth")["step"] == 6
    assert [r["step"] for r in read_log(tmp_path / "run" / "train_log.csv")] == ["0", "2", "4", "6"]


def test_a_short_record_adapts_on_shorter_crops_and_says_so(start, tmp_path, capsys):
    np.save(tmp_path / "rec.npy", spikes_record(600))  # 4 validation windows of 100 leave no room: crops of 50
    train_mod.main(adapt_args(tmp_path / "rec.npy", start, tmp_path / "run", "--steps", 2, "--eval-every", 1))
    err = capsys.readouterr().err
    assert "training on crops of 50" in err and "on records under 8192 samples adaptation gained nothing" in err
    cfg = load_checkpoint(tmp_path / "run" / "ckpt_best.pth")["config"]
    assert cfg["train"]["crop_length"] == 50 and cfg["model"]["train_length"] == 100  # it still denoises in its windows


def test_the_guard_asks_a_step_to_beat_the_start_by_more_than_noise_probes_and_sigmas_error_move_it():
    """Its margin: GUARD_SDS SDs of the noise in the mean-SURE difference, 2σ‖f − f₀‖/(N·L), and of the P probes'
    estimate of the divergences' difference, 2σ²·sd_p(div_p f − div_p f₀)/√P/(N·L), together, plus what an
    error of SIGMA_DOUBT·σ² moves it, 2·SIGMA_DOUBT·σ²·|div f − div f₀|/(N·L). 0 for the start itself; a change
    of output must lower the mean SURE by more than that to replace the start."""
    from icnn.spec import ModelConfig
    from Pytorch_V1.adapt import GUARD_SDS, SIGMA_DOUBT, StartGuard
    from Pytorch_V1.losses import validation_outputs
    from Pytorch_V1.data import Validation
    from Pytorch_V1.model import ICNN_s

    torch.manual_seed(0)
    model = ICNN_s(ModelConfig(norm="none", width=2, depth=2))
    x = torch.randn(4, 1, 64)
    val = Validation(x, model.prior(x), None, torch.full((4,), 2.0), torch.randn(3, 4, 1, 64), None, "test")
    if float(validation_outputs(model, val, "fixed")[1].mean()) < 0:  # the guard refuses a negative divergence: give it a sign
        with torch.no_grad():  # the guard takes (the last layer is linear, so the divergence changes sign with it)
            for param in model.outc.parameters():
                param.neg_()
    guard = StartGuard.of(model, val)
    evaluated = train_mod.evaluate(model, val)["sure_fixed"]  # the start's SURE is the validation's own
    assert guard.start_sure["fixed"] == pytest.approx(math.copysign(evaluated**2, evaluated), rel=1e-6)
    assert guard.margin(model, val, "fixed") == 0.0
    before, div_before = validation_outputs(model, val, "fixed")
    with torch.no_grad():
        model.outc.conv.weight *= 1.5  # the output moves, and so does its divergence
    after, div_after = validation_outputs(model, val, "fixed")
    assert div_after.shape == (3, 4)  # one divergence per probe and signal
    noise = 2 * 2.0 * float((after - before).double().pow(2).sum().sqrt())
    per_probe = 4.0 * (div_after - div_before).double().sum(dim=1).numpy()  # σ² Σ_n Δdiv, one value per probe
    probes = 2 * np.std(per_probe, ddof=1) / np.sqrt(3)
    doubt = 2 * SIGMA_DOUBT * abs(per_probe.mean())
    expected = (GUARD_SDS * np.hypot(noise, probes) + doubt) / (4 * 64)
    assert guard.margin(model, val, "fixed") == pytest.approx(expected, rel=1e-9) and min(noise, probes, doubt) > 0
    sure0 = guard.start_sure["fixed"]
    lower = lambda by: math.copysign(math.sqrt(abs(sure0 - by)), sure0 - by)  # noqa: E731  a signed √(mean SURE)
    assert not guard.allows(model, val, "fixed", lower(0.5 * expected))
    assert guard.allows(model, val, "fixed", lower(1.5 * expected))
    kept = {}  # what evaluate computed SURE from is what the guard would compute: the verdict reuses it
    train_mod.evaluate(model, val, keep=kept)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(kept["fixed"], (after, div_after)))
    for by in (0.5 * expected, 1.5 * expected):
        assert guard.verdict(model, val, "fixed", lower(by), kept["fixed"]) == guard.verdict(model, val, "fixed", lower(by))


def test_the_guard_refuses_a_step_whose_divergence_is_negative_however_low_its_sure():
    """A posterior mean's divergence is never negative: a model whose held-out divergence estimate is below zero
    does not replace the start, even at a SURE far below the start's; the same change of sign back is allowed."""
    from icnn.spec import ModelConfig
    from Pytorch_V1.adapt import StartGuard, denoises_like_a_posterior_mean
    from Pytorch_V1.losses import validation_outputs
    from Pytorch_V1.data import Validation
    from Pytorch_V1.model import ICNN_s

    torch.manual_seed(0)
    model = ICNN_s(ModelConfig(norm="none", width=2, depth=2))
    x = torch.randn(4, 1, 64)
    val = Validation(x, model.prior(x), None, torch.full((4,), 2.0), torch.randn(3, 4, 1, 64), None, "test")
    guard = StartGuard.of(model, val)
    far_below = -1e6  # a signed √(mean SURE) no margin could refuse
    divergence = float(validation_outputs(model, val, "fixed")[1].double().mean())
    allowed = guard.allows(model, val, "fixed", far_below)
    with torch.no_grad():  # the last layer is linear: flipping its sign flips the output's, and the divergence's
        for param in model.outc.parameters():
            param.neg_()
    flipped = float(validation_outputs(model, val, "fixed")[1].double().mean())
    assert flipped == pytest.approx(-divergence, rel=1e-4) and divergence != 0  # one of the two is negative
    assert allowed == (divergence > 0) and guard.allows(model, val, "fixed", far_below) == (flipped > 0)
    assert not denoises_like_a_posterior_mean(torch.tensor([[-abs(divergence)]]))
    assert denoises_like_a_posterior_mean(torch.tensor([[abs(divergence)]]))


def test_a_record_built_to_make_adaptation_hurt_gets_the_start_back(tmp_path, capsys):
    """``ckpt_universal`` adapted on a record whose training crops are white noise alone and whose held-out
    windows hold every bit of signal (a sine of 4σ): adapting teaches it that there is nothing to keep,
    every step is worse on the held-out windows, and ckpt_best.pth is the start, weight for weight."""
    from Pytorch_V1.data import record_split

    start = str(default_weights(".pth", "ckpt_universal"))
    length, crop = 8192, load_checkpoint(start)["config"]["model"]["train_length"]
    rng = np.random.default_rng(3)
    record = rng.standard_normal(length)
    for s in record_split(length, crop)[0]:
        record[s : s + crop] += 4 * np.sin(2 * np.pi * np.arange(crop) / 64)
    np.save(tmp_path / "rec.npy", record)
    train_mod.main(adapt_args(tmp_path / "rec.npy", start, tmp_path / "run", "--steps", 30, "--eval-every", 10,
                              "--lr", 1e-3))
    err = capsys.readouterr().err
    scores = [float(r["val_sure_root_mse_fixed"]) for r in read_log(tmp_path / "run" / "train_log.csv")]
    assert len(scores) == 4 and all(s > scores[0] for s in scores[1:])  # it did hurt, at every evaluation
    best = load_checkpoint(tmp_path / "run" / "ckpt_best.pth")
    start_weights = load_checkpoint(start)["net_state_dict"]
    assert best["step"] == 0 and all(torch.equal(best["net_state_dict"][k], v) for k, v in start_weights.items())
    assert "no step with a divergence ≥ 0 beat the starting model" in err


def test_overwrite_never_deletes_the_checkpoint_or_record_the_run_reads(start, tmp_path, run_main):
    """Adapting again into the same folder, from its own ckpt_best.pth or a record kept there: --overwrite
    would clear the file the run reads, so it is refused in one line before anything is deleted."""
    from conftest import assert_one_line_error

    run = tmp_path / "run"
    np.save(tmp_path / "rec.npy", spikes_record(2048))
    assert run_main(train_mod, adapt_args(tmp_path / "rec.npy", start, run, "--steps", 2, "--eval-every", 1))[0] == 0
    before = (run / "ckpt_best.pth").read_bytes()
    code, _, err = run_main(train_mod, adapt_args(tmp_path / "rec.npy", str(run / "ckpt_best.pth"), run,
                                                  "--steps", 2, "--overwrite"))
    assert_one_line_error(code, err, "--overwrite would delete", "--init")
    np.save(run / "kept.npy", spikes_record(2048))
    code, _, err = run_main(train_mod, adapt_args(run / "kept.npy", start, run, "--steps", 2, "--overwrite"))
    assert_one_line_error(code, err, "--overwrite would delete", "--data")
    assert (run / "ckpt_best.pth").read_bytes() == before and (run / "ckpt_last.pth").is_file()


def test_patience_counts_from_the_lowest_validation_not_from_the_kept_step():
    """Under the guard the kept step can stay at the start while held-out SURE keeps falling: the run goes on
    while it falls (a gain too small to certify early can grow past the margin) and stops once it stalls."""
    from types import SimpleNamespace

    from Pytorch_V1.checkpoint import TrainState
    from Pytorch_V1.schedule import stalled

    cfg, workers = SimpleNamespace(patience=5, eval_every=40), SimpleNamespace(world_size=1)
    assert not stalled(cfg, TrainState(step=400, best_step=0, lowest_step=360), workers)
    assert stalled(cfg, TrainState(step=400, best_step=0, lowest_step=200), workers)

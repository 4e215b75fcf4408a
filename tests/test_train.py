"""Tests of Pytorch_V1/train.py: a short run learns and writes its files, checkpoints hold plain data,
--resume (in process, through the CLI, after kill -9) continues bit for bit and honours or refuses each flag,
the flags and their one-line errors, the label-free recipes, --init and --ema."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import Pytorch_V1.train as train_mod
from conftest import (
    RUN_FILES,
    TINY,
    assert_one_line_error,
    finish_training,
    kill_9,
    output_names,
    read_log,
    start_training,
    wait_for,
)
from icnn.spec import ModelConfig
from Pytorch_V1.checkpoint import load_checkpoint, load_model
from Pytorch_V1.data import VAL_STREAM, SyntheticStream, validation
from Pytorch_V1.distributed import Workers
from Pytorch_V1.inference import denoise
from Pytorch_V1.model import ICNN_s
from Pytorch_V1.rundir import LOCK_NAME, MARKER
from Pytorch_V1.train import TrainConfig, evaluate, get_args, get_lr, train
from deepdenoise1d.errors import InputError
from deepdenoise1d.metrics import rmse
from deepdenoise1d.synthesis import noisy_pairs


REQUIRED_KEYS = {"net_state_dict", "optim_state_dict", "step", "config", "validation", "val_metric", "best_val_score",
                 "format_version", "rng_state"}


SHORT = dict(steps=40, batch_size=32, val_size=200, eval_every=20, save_every=20, device="cpu")


def strip_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def assert_plain(value, where="config"):
    """Only plain Python types, all the way down (what json or any reader can take)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r} is {type(key).__name__}"
            assert_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            assert_plain(item, f"{where}[{i}]")
    else:
        assert value is None or type(value) in (bool, int, float, str), f"{where} is {type(value).__name__}"


def assert_same_weights(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def synthetic_validation(seed: int, n: int, sigma: float = 3.0):
    clean, noisy, _ = noisy_pairs(np.random.default_rng([seed, VAL_STREAM]), n, sigma)
    return noisy, clean


def untrained_val_rmse(cfg: TrainConfig) -> dict[str, float]:
    """The validation RMSE of the network train() starts from (same seed, same validation set)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = ICNN_s(ModelConfig())
    noisy, clean = synthetic_validation(cfg.seed, cfg.val_size)
    val = validation(replace(cfg, sigma=[3.0, 3.0]), noisy, clean, np.full(len(noisy), 3.0), None, "", torch.device("cpu"))
    return evaluate(model, val)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One uninterrupted 40-step run: (config, folder, returned validation RMSEs)."""
    folder = tmp_path_factory.mktemp("short_run") / "run"
    cfg = TrainConfig(**SHORT)
    val = train(cfg, folder)
    return cfg, folder, val


class Crash(Exception):
    """Stands in for a crash right after a checkpoint was written."""


def crash_after_step(monkeypatch, step: int):
    real = train_mod.save_checkpoint

    def write_then_crash(path, ckpt):
        real(path, ckpt)
        if Path(path).name == "ckpt_last.pth" and ckpt["step"] == step:
            raise Crash

    monkeypatch.setattr(train_mod, "save_checkpoint", write_then_crash)
    return lambda: monkeypatch.setattr(train_mod, "save_checkpoint", real)


def count_batches(monkeypatch) -> list[int]:
    sizes = []
    real_next = SyntheticStream.next_batch

    def counting_next(self):
        noisy, clean, sigmas = real_next(self)
        sizes.append(noisy.shape[0])
        return noisy, clean, sigmas

    monkeypatch.setattr(SyntheticStream, "next_batch", counting_next)
    return sizes


# ---------------------------------------------------------------------------
# a short run


def test_short_training_lowers_validation_rmse(short_run):
    cfg, folder, val = short_run
    before = untrained_val_rmse(replace(cfg, val_size=200))
    for mode in ("fixed", "unfixed"):
        assert val[mode] < before[mode] - 0.05, (mode, val[mode], before[mode])
    rows = read_log(folder / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [20, 40]
    assert float(rows[-1]["val_rmse_fixed"]) == pytest.approx(val["fixed"], abs=1e-5)
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_validation_is_the_seeded_synthetic_draw(short_run):
    """The default run validates on default_rng([seed, VAL_STREAM]): an independent evaluation of the
    best checkpoint on that draw gives the logged number."""
    cfg, folder, _ = short_run
    model, ckpt = load_model(folder / "ckpt_best.pth")
    noisy, clean = synthetic_validation(cfg.seed, cfg.val_size)
    mode = ckpt["config"]["model"]["bn_mode"]
    independent = float(rmse(denoise(model, noisy, bn_mode=mode), clean).mean())
    assert independent == pytest.approx(ckpt["validation"][mode], rel=1e-5)


def test_short_training_writes_its_files(short_run):
    cfg, folder, _ = short_run
    assert set(output_names(folder)) == RUN_FILES | {LOCK_NAME, MARKER}
    assert (folder / "train_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last, best = load_checkpoint(folder / "ckpt_last.pth"), load_checkpoint(folder / "ckpt_best.pth")
    for ckpt in (last, best):
        assert REQUIRED_KEYS <= set(ckpt)
        assert_plain(ckpt["config"])
        assert_plain(ckpt["validation"], "validation")
        assert set(ckpt["validation"]) >= {"fixed", "unfixed"} and ckpt["val_metric"] == "rmse"
        assert set(ckpt["net_state_dict"]) == set(ICNN_s().state_dict())
        train_cfg = ckpt["config"]["train"]
        assert (train_cfg["steps"], train_cfg["batch_size"], train_cfg["seed"]) == (40, 32, 666)
        assert train_cfg["sigma"] == [3.0, 3.0] and train_cfg["data"] is None
        model_cfg = ckpt["config"]["model"]
        assert model_cfg == ModelConfig.from_dict(model_cfg).to_dict()
        assert model_cfg["sigma_range"] == [3.0, 3.0]
        assert len(ckpt["optim_state_dict"]["state"]) > 0
    assert last["step"] == cfg.steps and best["step"] in (20, 40)
    # The best checkpoint holds the lowest validation RMSE that the log shows, in its recorded BN mode.
    rows = read_log(folder / "train_log.csv")
    lowest = min(min(float(r["val_rmse_fixed"]), float(r["val_rmse_unfixed"])) for r in rows)
    mode = best["config"]["model"]["bn_mode"]
    assert best["validation"][mode] == pytest.approx(lowest, abs=1e-5) == best["best_val_score"]
    model, _ = load_model(folder / "ckpt_best.pth")
    assert model.config.bn_mode == mode


def test_logged_lr_follows_get_lr(short_run):
    cfg, folder, _ = short_run
    for row in read_log(folder / "train_log.csv"):
        assert float(row["lr"]) == pytest.approx(get_lr(int(row["step"]), cfg), rel=1e-3)


def test_lr_schedule_rule():
    cfg = TrainConfig(steps=1000, lr=1.0)
    assert get_lr(0, cfg) == pytest.approx(1 / 50)  # warm-up over 5 % of the steps
    assert get_lr(49, cfg) == pytest.approx(1.0)
    assert get_lr(1000, cfg) == pytest.approx(0.01)  # 1 % of the peak at the last step
    lrs = [get_lr(s, cfg) for s in range(50, 1001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    # A pure function of (step, steps): extending re-stretches what is left of the decay.
    assert get_lr(500, replace(cfg, steps=2000)) > get_lr(500, cfg)


def test_cpu_training_is_deterministic(tmp_path):
    cfg = TrainConfig(**TINY)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    assert_same_weights(load_checkpoint(tmp_path / "a" / "ckpt_last.pth")["net_state_dict"],
                        load_checkpoint(tmp_path / "b" / "ckpt_last.pth")["net_state_dict"])


# ---------------------------------------------------------------------------
# resume


def test_crash_then_resume_equals_the_uninterrupted_run(short_run, tmp_path, monkeypatch, run_main):
    """Crash right after the step-20 checkpoint, then `train.py --resume`: only the remaining 20 steps
    run, and the weights and the log are the uninterrupted run's, bit for bit."""
    cfg, reference, _ = short_run
    folder = tmp_path / "run"
    undo = crash_after_step(monkeypatch, 20)
    with pytest.raises(Crash):
        train(cfg, folder)
    undo()
    assert load_checkpoint(folder / "ckpt_last.pth")["step"] == 20
    batches = count_batches(monkeypatch)
    code, out, err = run_main(train_mod, ["--resume", "--run-dir", folder, "--device", "cpu"])
    assert code == 0, err
    assert batches == [cfg.batch_size] * 20
    assert "resuming at step 20 of 40" in err
    last, ref = load_checkpoint(folder / "ckpt_last.pth"), load_checkpoint(reference / "ckpt_last.pth")
    assert last["step"] == 40 and last["config"] == ref["config"]
    assert_same_weights(last["net_state_dict"], ref["net_state_dict"])
    assert strip_seconds(read_log(folder / "train_log.csv")) == strip_seconds(read_log(reference / "train_log.csv"))
    assert "test:" in out and "pth2h5.py" in out and "cp " not in out  # nothing proposes copying over ckpt/


@pytest.mark.parametrize("new_steps", [15, 25])
def test_resume_with_steps_ends_at_that_step(tmp_path, monkeypatch, run_main, new_steps):
    """A 20-step run stopped at step 10, resumed with --steps 15 (shorter) or 25 (longer): it ends there,
    and from step 10 on its learning rate is the one of a fresh run of that many steps."""
    folder = tmp_path / "run"
    undo = crash_after_step(monkeypatch, 10)
    with pytest.raises(Crash):
        train(TrainConfig(**{**TINY, "steps": 20}), folder)
    undo()
    batches = count_batches(monkeypatch)
    code, _, err = run_main(train_mod, ["--resume", "--run-dir", folder, "--steps", new_steps])
    assert code == 0, err
    assert len(batches) == new_steps - 10
    last = load_checkpoint(folder / "ckpt_last.pth")
    assert last["step"] == new_steps and last["config"]["train"]["steps"] == new_steps
    rows = read_log(folder / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(5, new_steps + 1, 5))
    fresh = replace(TrainConfig(**TINY), steps=new_steps)
    for row in rows[2:]:
        assert float(row["lr"]) == pytest.approx(get_lr(int(row["step"]), fresh), rel=1e-3)


def test_resume_in_process_finished_run_does_nothing(tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY)
    train(cfg, tmp_path)
    batches = count_batches(monkeypatch)
    train(cfg, tmp_path, resume=True)
    assert batches == []
    with pytest.raises(InputError, match="before the saved step 10"):
        train(replace(cfg, steps=5), tmp_path, resume=True)


def test_resume_recreates_a_missing_log(tmp_path, run_main):
    train(TrainConfig(**TINY), tmp_path / "run")
    (tmp_path / "run" / "train_log.csv").unlink()
    code, _, err = run_main(train_mod, ["--resume", "--run-dir", tmp_path / "run", "--steps", 15])
    assert code == 0, err
    assert [int(r["step"]) for r in read_log(tmp_path / "run" / "train_log.csv")] == [15]


@pytest.mark.parametrize("flags, named", [
    (["--seed", "1234"], "--seed"), (["--batch-size", "8"], "--batch-size"), (["--lr", "0.1"], "--lr"),
    (["--sigma", "2"], "--sigma"), (["--loss", "smoothl1"], "--loss"), (["--no-prior"], "--no-prior"),
    (["--norm", "sparse_bn"], "--norm"), (["--data", "elsewhere"], "--data"), (["--val-size", "7"], "--val-size"),
])
def test_resume_refuses_a_flag_that_changes_the_run(finished_tiny_run, run_main, flags, named):
    before = (finished_tiny_run / "ckpt_last.pth").read_bytes()
    code, _, err = run_main(train_mod, ["--resume", "--run-dir", finished_tiny_run, "--steps", "12", *flags])
    assert_one_line_error(code, err, named, "resume")
    assert (finished_tiny_run / "ckpt_last.pth").read_bytes() == before


def test_resume_accepts_a_flag_equal_to_the_saved_one(finished_tiny_run, run_main):
    code, _, err = run_main(train_mod, ["--resume", "--run-dir", finished_tiny_run, "--seed", "5", "--batch-size", "16"])
    assert code == 0, err


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, run_main):
    code, _, err = run_main(train_mod, ["--resume", "--run-dir", tmp_path / "none"])
    assert_one_line_error(code, err, "ckpt_last.pth")
    assert not (tmp_path / "none").exists()
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(train_mod, ["--resume", "--run-dir", tmp_path / "empty"])
    assert_one_line_error(code, err, "ckpt_last.pth")
    assert (tmp_path / "empty").is_dir()  # a folder the run did not make is never removed


def test_resume_from_a_config_less_checkpoint_is_a_clear_error(tmp_path, run_main):
    """A file in the original repository's layout (no saved config, no optimiser/RNG state) as ckpt_last.pth: one clear line."""
    torch.save({"epoch": 1, "net_state_dict": ICNN_s().state_dict(), "optim_state_dict": {}, "loss": 0.1},
               tmp_path / "ckpt_last.pth")
    code, _, err = run_main(train_mod, ["--resume", "--run-dir", tmp_path, "--device", "cpu"])
    assert_one_line_error(code, err, "ckpt_last.pth")


# ---------------------------------------------------------------------------
# resume after kill -9 (train.py in a subprocess)


TRAIN_FLAGS = ["--steps", "40", "--batch-size", "16", "--val-size", "100", "--eval-every", "10",
               "--save-every", "10", "--device", "cpu", "--seed", "5"]


def test_killed_and_resumed_run_equals_uninterrupted_run_bit_for_bit(tmp_path, no_stray_trainings):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    proc_whole = start_training(whole, *TRAIN_FLAGS)  # runs alongside; one thread each
    proc = start_training(broken, *TRAIN_FLAGS)
    wait_for(broken / "ckpt_last.pth", proc)
    kill_9(proc)
    killed_at = load_checkpoint(broken / "ckpt_last.pth")["step"]
    assert 10 <= killed_at < 40
    (broken / ".ckpt_last.pth.k1ll3d.tmp").write_bytes(b"left by a kill -9 mid-write")
    proc = start_training(broken, *TRAIN_FLAGS, "--resume")
    finish_training(proc, tmp_path / "broken.log")
    finish_training(proc_whole, tmp_path / "whole.log")
    assert not list(broken.glob(".*.tmp"))
    a = load_checkpoint(whole / "ckpt_last.pth")
    b = load_checkpoint(broken / "ckpt_last.pth")
    assert a["step"] == b["step"] == 40
    assert set(a["net_state_dict"]) == set(b["net_state_dict"])
    for key, value in a["net_state_dict"].items():
        assert torch.equal(value, b["net_state_dict"][key]), key
    for pid, state in a["optim_state_dict"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optim_state_dict"]["state"][pid][name]), (pid, name)
    assert a["validation"] == b["validation"]


# ---------------------------------------------------------------------------
# flags


def test_defaults():
    args = get_args([])
    cfg = train_mod.config_from_args(args)
    assert cfg == TrainConfig()  # the shipped recipe
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.seed, cfg.sigma) == (3000, 256, 6e-3, 666, None)
    assert args.run_dir is None and args.resume is False and args.overwrite is False
    assert train_mod.given_flags(args) == {"device"}


def test_every_flag_parses(tmp_path):
    args = get_args([
        "--steps", "7", "--batch-size", "5", "--lr", "0.01", "--optimizer", "sgd", "--loss", "smoothl1",
        "--sigma", "2.5", "--seed", "11", "--norm", "sparse_bn", "--sparsity-weight", "0.2", "--no-prior",
        "--no-equivariant", "--baseline", "none", "--width", "3", "--depth", "5", "--train-prior", "broad",
        "--weight-by", "sigma2", "--bn-train", "signal", "--bn-mode", "unfixed", "--data", str(tmp_path), "--val-size", "9",
        "--eval-every", "3", "--save-every", "4", "--device", "cpu", "--threads", "2", "--run-dir", str(tmp_path / "c"),
    ])
    cfg = train_mod.config_from_args(args)
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.optimizer, cfg.loss) == (7, 5, 0.01, "sgd", "smoothl1")
    assert (cfg.sigma, cfg.seed, cfg.sparsity_weight, cfg.bn_train, cfg.bn_mode) == ([2.5, 2.5], 11, 0.2, "signal", "unfixed")
    assert (cfg.data, cfg.val_size, cfg.eval_every, cfg.save_every, cfg.device) == (str(tmp_path), 9, 3, 4, "cpu")
    assert cfg.model == {"prior": False, "norm": "sparse_bn", "equivariant": False, "baseline": "none", "width": 3,
                         "depth": 5} and cfg.weight_by == "sigma2" and cfg.train_prior == "broad"
    assert train_mod.config_from_args(get_args([])).model["equivariant"] is True  # new models work in any units
    assert args.run_dir == tmp_path / "c" and args.threads == 2


@pytest.mark.parametrize("text, expected", [("0.5:5", [0.5, 5.0]), ("3", [3.0, 3.0]), ("auto", "auto")])
def test_sigma_forms(text, expected):
    assert get_args(["--sigma", text, "--data", "d"]).sigma == expected


@pytest.mark.parametrize("argv, fragment", [
    (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr", "inf"], "--lr"), (["--sigma", "inf"], "--sigma"),
    (["--sigma", "0"], "--sigma"), (["--sigma", "0:5"], "--sigma"), (["--sigma", "nan"], "--sigma"),
    (["--seed", "-1"], "--seed"), (["--steps", "0"], "--steps"), (["--steps", "abc"], "--steps"),
    (["--batch-size", "-1"], "--batch-size"), (["--eval-every", "0"], "--eval-every"),
    (["--save-every", "0"], "--save-every"), (["--val-size", "0"], "--val-size"), (["--threads", "0"], "--threads"),
    (["--sparsity-weight", "-1"], "--sparsity-weight"), (["--optimizer", "rmsprop"], "--optimizer"),
    (["--loss", "l2"], "--loss"), (["--norm", "layer"], "--norm"), (["--bn-train", "never"], "--bn-train"),
    (["--bn-mode", "train"], "--bn-mode"), (["--device", "tpu"], "--device"), (["--sigma", "abc"], "--sigma"),
    (["--sigma", "5:1"], "--sigma"), (["--sigma", "auto"], "--sigma auto"), (["--unknown-flag"], "unknown"),
    (["--no-prior=1"], "--no-prior"), (["--resume=true"], "--resume"), (["extra"], "extra"),
    (["--resume"], "--run-dir"), (["--resume", "--overwrite", "--run-dir", "x"], "--overwrite"),
    (["--ema", "1"], "--ema"), (["--ema", "-0.1"], "--ema"),
])
def test_bad_flags_are_one_line(argv, fragment, run_main, tmp_path):
    code, _, err = run_main(train_mod, argv)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(tmp_path, run_main):
    code, _, err = run_main(train_mod, ["--device", "cuda", "--run-dir", tmp_path / "run", "--steps", 1])
    assert_one_line_error(code, err, "cuda", "not available")
    assert not (tmp_path / "run").exists()


def test_sure_and_blind_recipe_flags_reach_the_config():
    args = get_args(["--loss", "sure", "--sigma", "0.5:5", "--sigma-estimate", "signal", "--weight-by", "bayes",
                     "--sure-probes", "3", "--sure-one-sided", "--sure-epsilon", "0.002", "--lr-final", "0.05"])
    cfg = train_mod.config_from_args(args)
    assert (cfg.sigma_estimate, cfg.weight_by, cfg.sure_probes, cfg.sure_central) == ("signal", "bayes", 3, False)
    assert (cfg.sure_epsilon, cfg.lr_final) == (0.002, 0.05)
    default = train_mod.config_from_args(get_args([]))
    assert (default.sure_central, default.sure_probes, default.sigma_estimate, default.weight_by) == (True, 1, "true", "none")
    assert (default.steps, default.batch_size, default.lr) == (3000, 256, 6e-3)
    sure = train_mod.config_from_args(get_args(["--loss", "sure"]))
    assert (sure.steps, sure.batch_size, sure.lr) == (1500, 512, 1e-2)  # the label-free recipe
    assert train_mod.config_from_args(get_args(["--loss", "sure", "--steps", "7"])).steps == 7


# ---------------------------------------------------------------------------
# label-free runs


def test_blind_label_free_run_never_needs_the_true_sigma(tmp_path):
    # --sigma-estimate signal: SURE gets each signal's own estimate; a tiny run trains and validates.
    val = train_mod.train(train_mod.config_from_args(get_args([
        "--loss", "sure", "--sigma", "0.5:5", "--sigma-estimate", "signal", "--weight-by", "bayes", "--steps", "6",
        "--batch-size", "16", "--val-size", "40", "--eval-every", "3", "--device", "cpu"])), tmp_path / "run")
    assert np.isfinite(val["sure_fixed"]) and np.isfinite(val["fixed"])


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


# ---------------------------------------------------------------------------
# --init


def test_init_starts_from_the_given_weights_and_records_the_file(tmp_path):
    source = tmp_path / "source.pth"
    train(TrainConfig(**TINY), tmp_path / "a")
    (tmp_path / "a" / "ckpt_last.pth").rename(source)
    cfg = train_mod.config_from_args(get_args(["--init", str(source), "--steps", "3", "--device", "cpu"]))
    assert cfg.init == str(source) and len(cfg.init_sha256) == 64
    parts = train_mod.build_parts(cfg, Workers(), torch.device("cpu"))
    assert_same_weights(parts.model.state_dict(), load_checkpoint(source)["net_state_dict"])
    seeded = train_mod.build_parts(replace(cfg, init=None), Workers(), torch.device("cpu"))
    assert not torch.equal(seeded.model.state_dict()["outc.conv.bias"], parts.model.state_dict()["outc.conv.bias"])
    source.write_bytes(source.read_bytes() + b"x")  # the file changed after the run was set up
    with pytest.raises(InputError, match="changed"):
        train_mod.build_parts(cfg, Workers(), torch.device("cpu"))


def test_init_takes_its_architecture_and_a_flag_asking_another_is_one_line(tmp_path, run_main, capsys):
    train(TrainConfig(**TINY, model={"prior": False, "norm": "bn"}), tmp_path / "noprior")
    capsys.readouterr()  # that run's own progress lines
    init = tmp_path / "noprior" / "ckpt_last.pth"
    cfg = train_mod.config_from_args(get_args(["--init", str(init), "--device", "cpu"]))
    assert cfg.model["prior"] is False and cfg.model["norm"] == "bn"  # no flag needed: the start's architecture
    code, _, err = run_main(train_mod, ["--init", init, "--norm", "none", "--steps", 2,
                                        "--run-dir", tmp_path / "run", "--device", "cpu"])
    assert_one_line_error(code, err, "norm=bn", "--norm")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# --ema: the weights are averaged; the optimiser's trajectory is untouched


def test_ema_averages_the_weights_without_changing_what_is_trained(tmp_path):
    plain = train(TrainConfig(**TINY), tmp_path / "plain")
    averaged = train(TrainConfig(**TINY, ema=0.9), tmp_path / "ema")
    p, e = (load_checkpoint(tmp_path / name / "ckpt_last.pth") for name in ("plain", "ema"))
    assert_same_weights(e["train_state_dict"], p["net_state_dict"])  # same steps, same data, same weights
    assert e["ema_count"] == TINY["steps"] and "train_state_dict" not in p
    # What is validated and loaded for use is the average, not the last step's weights.
    key = "outc.conv.weight"
    assert not torch.equal(e["net_state_dict"][key], e["train_state_dict"][key])
    assert averaged["fixed"] != plain["fixed"]
    model = load_model(tmp_path / "ema" / "ckpt_last.pth", "cpu")[0]
    assert torch.equal(model.state_dict()[key], e["net_state_dict"][key])


def test_ema_is_the_running_average_of_the_trained_weights(tmp_path, monkeypatch):
    """Record the weights after every step and average them by hand: the saved average matches."""
    seen = []
    real = train_mod.train_step

    def recording_step(cfg, parts, batch, step):
        value = real(cfg, parts, batch, step)
        seen.append({k: v.detach().double().clone() for k, v in parts.model.state_dict().items()})
        return value

    monkeypatch.setattr(train_mod, "train_step", recording_step)
    train(TrainConfig(**TINY, ema=0.3), tmp_path / "run")
    expected = dict(seen[0])
    for n, weights in enumerate(seen[1:], start=1):
        d = min(0.3, (1 + n) / (10 + n))  # warms up to the cap at n = 3: the random init fades fast
        expected = {k: d * expected[k] + (1 - d) * w if w.is_floating_point() else w for k, w in weights.items()}
    saved = load_checkpoint(tmp_path / "run" / "ckpt_last.pth")["net_state_dict"]
    for key, value in saved.items():
        if value.is_floating_point():
            torch.testing.assert_close(value.double(), expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_ema_run_resumes_bit_for_bit(tmp_path, monkeypatch, run_main):
    cfg = TrainConfig(**{**TINY, "ema": 0.9})
    train(cfg, tmp_path / "ref")
    undo = crash_after_step(monkeypatch, 5)
    with pytest.raises(Crash):
        train(cfg, tmp_path / "run")
    undo()
    code, _, err = run_main(train_mod, ["--resume", "--run-dir", tmp_path / "run", "--device", "cpu"])
    assert code == 0, err
    last, ref = (load_checkpoint(tmp_path / name / "ckpt_last.pth") for name in ("run", "ref"))
    assert_same_weights(last["train_state_dict"], ref["train_state_dict"])
    assert_same_weights(last["net_state_dict"], ref["net_state_dict"])


def test_the_training_length_is_recorded(finished_tiny_run):
    ckpt = load_checkpoint(finished_tiny_run / "ckpt_best.pth")
    assert ckpt["config"]["model"]["train_length"] == 100  # synthetic signals
    model, _ = load_model(finished_tiny_run / "ckpt_best.pth", torch.device("cpu"))
    assert model.config.train_length == 100


def test_a_folder_run_records_the_folders_signal_length(tmp_path):
    from Pytorch_V1.data import load_data
    from Pytorch_V1.train import TrainConfig

    for sub in ("data", "labels"):
        (tmp_path / "set" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(120):
        clean = np.abs(rng.normal(size=64))
        np.savetxt(tmp_path / "set" / "labels" / f"{k}.txt", clean)
        np.savetxt(tmp_path / "set" / "data" / f"{k}.txt", clean + rng.normal(size=64))
    cfg = TrainConfig(**{**TINY, "data": str(tmp_path / "set"), "sigma": [1.0, 1.0]})
    cfg, _, _ = load_data(cfg, Workers(), torch.device("cpu"))
    assert cfg.model["train_length"] == 64


def test_a_batch_that_cannot_fit_is_refused_before_any_folder(tmp_path, run_main, monkeypatch):
    monkeypatch.setenv("DEEPDENOISE1D_MEMORY_LIMIT", "2G")
    code, _, err = run_main(train_mod, ["--batch-size", "100000", "--device", "cpu", "--run-dir", tmp_path / "run"],
                            prog="train.py")
    assert_one_line_error(code, err, "--batch-size 100000 (signals of length 100) needs about", "limit of 2.0 GiB",
                          "smaller --batch-size")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# the budget follows the data; patience; the negative-SURE warning


def test_steps_follow_passes_over_the_data_within_bounds(capsys):
    from types import SimpleNamespace

    from Pytorch_V1.schedule import DATA_EVALS, MIN_DATA_STEPS, budget_from_data

    one = Workers()
    cfg = TrainConfig(steps=1500, batch_size=512, passes=30.0, eval_every=0, patience=5, data="x")
    small = budget_from_data(cfg, SimpleNamespace(size=900), one)
    assert small.steps == MIN_DATA_STEPS and small.eval_every == MIN_DATA_STEPS // DATA_EVALS
    assert "warning: 900 training signals are few" in capsys.readouterr().err
    assert budget_from_data(cfg, SimpleNamespace(size=10**6), one).steps == 1500  # bounded by the default
    middle = budget_from_data(cfg, SimpleNamespace(size=20000), one)
    assert middle.steps == int(np.ceil(30 * 20000 / 512)) and "warning" not in capsys.readouterr().err
    given = budget_from_data(replace(cfg, passes=None, steps=77, eval_every=7), SimpleNamespace(size=10**6), one)
    assert (given.steps, given.eval_every) == (77, 7)


def test_a_run_stops_when_validation_stalls_for_patience_evaluations(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: {"fixed": 1.0, "unfixed": 1.0})
    train(TrainConfig(**{**TINY, "steps": 20, "eval_every": 2, "save_every": 100}, patience=3), tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "ckpt_last.pth")["step"] == 8  # best at step 2, then 3 evaluations
    assert load_checkpoint(tmp_path / "run" / "ckpt_best.pth")["step"] == 2
    assert "stopping at step 8 of 20" in capsys.readouterr().err
    assert [r["step"] for r in read_log(tmp_path / "run" / "train_log.csv")] == ["2", "4", "6", "8"]


def test_negative_validation_sure_warns_once_per_evaluation(tmp_path, monkeypatch, capsys):
    fake = {"sure_fixed": 0.0, "sure_unfixed": 0.0, "raw_sure": -0.5}
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: dict(fake))
    train(TrainConfig(**{**TINY, "steps": 4, "eval_every": 2}, loss="sure"), tmp_path / "run")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "validation SURE is negative" in line]
    assert len(warnings) == 2 and warnings[0].startswith("train.py: warning:")


@pytest.mark.parametrize("root_sure, warns", [(5.0, True), (0.1, False)])
def test_a_label_free_model_no_better_than_the_noisy_input_warns(tmp_path, monkeypatch, capsys, root_sure, warns):
    """The noisy input's SURE is σ² exactly: a best validation √SURE at or above σ is a model that harms."""
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: {"sure_fixed": root_sure, "sure_unfixed": root_sure})
    train(TrainConfig(**{**TINY, "steps": 2, "eval_every": 1}, loss="sure", sigma=[2.0, 2.0]), tmp_path / "run")
    lines = [line for line in capsys.readouterr().err.splitlines() if "makes the data worse" in line]
    assert len(lines) == int(warns)
    if warns:
        assert "noisy input's 2" in lines[0]

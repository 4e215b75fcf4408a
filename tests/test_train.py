"""Pytorch_V1/train.py: a short run learns and writes its files, checkpoints hold plain data,
--resume continues at the saved step with the saved config, flags, and folder training."""
from __future__ import annotations

import copy
import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import Pytorch_V1.train as train_mod
from Pytorch_V1.checkpoint import load_checkpoint, load_model
from Pytorch_V1.data import SyntheticStream, to_tensor
from Pytorch_V1.model import ICNN_s, ModelConfig, wiener_prior
from Pytorch_V1.train import TrainConfig, evaluate, get_args, train, validation_set
from signals.errors import InputError
from signals.io import write_folder_dataset
from signals.synthesis import noisy_pairs

REQUIRED_KEYS = {"net_state_dict", "optim_state_dict", "sched_state_dict", "step", "config", "val_rmse",
                 "format_version"}
SHORT = dict(steps=40, batch_size=32, val_size=200, eval_every=20, save_every=20, device="cpu")


def short_config(**overrides) -> TrainConfig:
    return TrainConfig(**{**SHORT, **overrides})


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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


def untrained_val_rmse(cfg: TrainConfig) -> dict[str, float]:
    """The validation RMSE of the network train() starts from (same seed, same validation set)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = ICNN_s(ModelConfig.from_dict(cfg.model))
    noisy, clean, _ = validation_set(cfg)
    x = to_tensor(noisy, torch.device("cpu"))
    return evaluate(model, x, wiener_prior(x), clean)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One uninterrupted 40-step run: (config, folder, returned validation RMSEs)."""
    folder = tmp_path_factory.mktemp("short_run")
    cfg = short_config()
    val = train(copy.deepcopy(cfg), folder)
    return cfg, folder, val


class Crash(Exception):
    """Stands in for a crash right after a checkpoint was written."""


def test_short_training_lowers_validation_rmse(short_run):
    cfg, folder, val = short_run
    before = untrained_val_rmse(cfg)
    for mode in ("fixed", "unfixed"):
        assert val[mode] < before[mode] - 0.05, (mode, val[mode], before[mode])
    rows = read_log(folder / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [20, 40]
    assert float(rows[-1]["val_rmse_fixed"]) == pytest.approx(val["fixed"], abs=1e-5)
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_short_training_writes_its_files(short_run):
    cfg, folder, _ = short_run
    assert {p.name for p in folder.iterdir()} == {"ckpt_last.pth", "ckpt_best.pth", "train_log.csv",
                                                  "train_curve.png"}
    assert (folder / "train_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last, best = load_checkpoint(folder / "ckpt_last.pth"), load_checkpoint(folder / "ckpt_best.pth")
    for ckpt in (last, best):
        assert REQUIRED_KEYS <= set(ckpt)
        assert isinstance(ckpt["format_version"], int)
        assert_plain(ckpt["config"])
        assert_plain(ckpt["val_rmse"], "val_rmse")
        assert set(ckpt["val_rmse"]) >= {"fixed", "unfixed"}
        assert set(ckpt["net_state_dict"]) == set(ICNN_s().state_dict())
        assert ckpt["config"]["train"]["steps"] == cfg.steps
        assert ckpt["config"]["train"]["batch_size"] == cfg.batch_size
        assert ckpt["config"]["model"] == ModelConfig.from_dict(ckpt["config"]["model"]).to_dict()
        assert len(ckpt["sched_state_dict"]) > 0 and len(ckpt["optim_state_dict"]["state"]) > 0
    assert last["step"] == cfg.steps
    assert best["step"] in (20, 40)
    # The best checkpoint holds the lowest validation RMSE that the log shows, in its recorded BN mode.
    rows = read_log(folder / "train_log.csv")
    lowest = min(min(float(r["val_rmse_fixed"]), float(r["val_rmse_unfixed"])) for r in rows)
    mode = best["config"]["model"]["bn_mode"]
    assert best["val_rmse"][mode] == pytest.approx(lowest, abs=1e-5)
    model, _ = load_model(folder / "ckpt_best.pth")  # strict, with its recorded architecture
    assert model.config.bn_mode == mode


def test_cpu_training_is_deterministic(tmp_path):
    cfg = short_config(steps=10, eval_every=5, save_every=5, val_size=50, batch_size=16)
    train(copy.deepcopy(cfg), tmp_path / "a")
    train(copy.deepcopy(cfg), tmp_path / "b")
    a = load_checkpoint(tmp_path / "a" / "ckpt_last.pth")["net_state_dict"]
    b = load_checkpoint(tmp_path / "b" / "ckpt_last.pth")["net_state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_continues_at_saved_step_with_saved_config(short_run, tmp_path, monkeypatch, capsys):
    """Crash right after the step-20 checkpoint, then `train.py --resume` with other flags: the saved
    config wins, only the remaining 20 steps run, and the result is the uninterrupted run's, bit for bit."""
    cfg, reference_folder, _ = short_run
    folder = tmp_path / "run"
    real_save = train_mod.save_checkpoint

    def save_then_crash(path, ckpt):
        real_save(path, ckpt)
        if Path(path).name == "ckpt_last.pth" and ckpt["step"] == 20:
            raise Crash

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train(copy.deepcopy(cfg), folder)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    assert load_checkpoint(folder / "ckpt_last.pth")["step"] == 20

    batches = []
    real_next = SyntheticStream.next_batch

    def counting_next(self):
        noisy, clean, sigmas = real_next(self)
        batches.append(noisy.shape[0])
        return noisy, clean, sigmas

    monkeypatch.setattr(SyntheticStream, "next_batch", counting_next)
    monkeypatch.setattr(sys, "argv", ["train.py", "--resume", "--ckpt-dir", str(folder), "--device", "cpu",
                                      "--steps", "1000", "--batch-size", "7", "--lr", "1"])
    train_mod.main()
    assert batches == [cfg.batch_size] * (cfg.steps - 20)
    assert "resum" in capsys.readouterr().err

    last = load_checkpoint(folder / "ckpt_last.pth")
    reference = load_checkpoint(reference_folder / "ckpt_last.pth")
    assert last["step"] == cfg.steps
    assert last["config"]["train"] == reference["config"]["train"]
    for key, value in reference["net_state_dict"].items():
        assert torch.equal(last["net_state_dict"][key], value), key
    # The log is the uninterrupted run's log, with no duplicated rows.
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_log(folder / "train_log.csv")) == strip(read_log(reference_folder / "train_log.csv"))


def test_resume_in_process_continues_from_step(tmp_path, monkeypatch):
    """train(cfg, resume=True) starts at ckpt_last.pth's step: only the missing steps run."""
    first = short_config(steps=10, eval_every=5, save_every=5, val_size=50, batch_size=16)
    train(copy.deepcopy(first), tmp_path)
    calls = []
    real_next = SyntheticStream.next_batch
    monkeypatch.setattr(SyntheticStream, "next_batch", lambda self: calls.append(1) or real_next(self))
    train(copy.deepcopy(first), tmp_path, resume=True)  # already finished: nothing to do
    assert calls == []
    longer = copy.deepcopy(first)
    longer.steps = 15
    train(longer, tmp_path, resume=True)
    assert len(calls) == 5
    assert load_checkpoint(tmp_path / "ckpt_last.pth")["step"] == 15
    assert [int(r["step"]) for r in read_log(tmp_path / "train_log.csv")] == [5, 10, 15]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, run_call, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "--resume", "--ckpt-dir", str(tmp_path / "none")])
    code, err = run_call(train_mod.main)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "ckpt_last.pth" in err


def test_resume_from_a_config_less_checkpoint_is_a_clear_error(tmp_path, run_call, monkeypatch):
    """A seed-layout file (no saved config, no optimiser/RNG state to continue from) as ckpt_last.pth:
    one clear line and exit 2, not a KeyError traceback."""
    torch.save({"epoch": 1, "net_state_dict": ICNN_s().state_dict(), "optim_state_dict": {}, "loss": 0.1},
               tmp_path / "ckpt_last.pth")
    monkeypatch.setattr(sys, "argv", ["train.py", "--resume", "--ckpt-dir", str(tmp_path), "--device", "cpu"])
    code, err = run_call(train_mod.main)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "ckpt_last.pth" in err


# ---------------------------------------------------------------------------
# flags


def test_defaults():
    cfg, ckpt_dir, resume = get_args([])
    assert (cfg.model["prior"], cfg.model["norm"], resume) == (True, "bn", False)
    assert cfg.weight_by_sigma is False
    assert ckpt_dir == Path("ckpt")
    assert cfg.data is None and cfg.device == "auto"


def test_every_flag_parses(tmp_path):
    cfg, ckpt_dir, resume = get_args([
        "--steps", "7", "--batch-size", "5", "--lr", "0.01", "--optimizer", "sgd", "--loss", "smoothl1",
        "--sigma", "2.5", "--seed", "11", "--norm", "sparse_bn", "--sparsity-weight", "0.2", "--no-prior",
        "--weight-by-sigma",        "--bn-train", "signal", "--bn-mode", "unfixed", "--data", str(tmp_path), "--val-size", "9",
        "--eval-every", "3", "--save-every", "4", "--device", "cpu", "--ckpt-dir", str(tmp_path / "c"), "--resume",
    ])
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.optimizer, cfg.loss) == (7, 5, 0.01, "sgd", "smoothl1")
    assert (cfg.sigma, cfg.seed, cfg.sparsity_weight, cfg.bn_train, cfg.bn_mode) == (2.5, 11, 0.2, "signal", "unfixed")
    assert (cfg.data, cfg.val_size, cfg.eval_every, cfg.save_every, cfg.device) == (str(tmp_path), 9, 3, 4, "cpu")
    assert cfg.model == {"prior": False, "norm": "sparse_bn", "bn_mode": "unfixed"}
    assert cfg.weight_by_sigma is True
    assert ckpt_dir == tmp_path / "c" and resume is True
    assert_plain(cfg.model)


@pytest.mark.parametrize("text, expected", [("0.5:5", [0.5, 5.0]), ("3", 3.0), ("0", 0.0)])
def test_sigma_forms(text, expected):
    assert get_args(["--sigma", text])[0].sigma == expected


def test_sigma_auto_with_data(tmp_path):
    assert get_args(["--sigma", "auto", "--data", str(tmp_path)])[0].sigma == "auto"


@pytest.mark.parametrize("argv", [
    ["--steps", "0"], ["--steps", "abc"], ["--batch-size", "-1"], ["--eval-every", "0"], ["--save-every", "0"],
    ["--val-size", "0"], ["--lr", "fast"], ["--optimizer", "rmsprop"], ["--loss", "l2"], ["--norm", "layer"],
    ["--bn-train", "never"], ["--bn-mode", "train"], ["--device", "tpu"], ["--sigma", "abc"], ["--sigma", "5:1"],
    ["--sigma", "-1"], ["--sigma", "auto"], ["--unknown-flag"], ["--no-prior", "false"], ["--no-prior=1"],
    ["--resume=true"], ["--weight-by-sigma=yes"], ["extra"],
])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        get_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


# ---------------------------------------------------------------------------
# folder training


def write_dataset(folder: Path, n: int, labels: bool, seed: int = 0) -> None:
    clean, noisy, _ = noisy_pairs(np.random.default_rng(seed), n, 3.0)
    write_folder_dataset(folder, noisy, clean if labels else None)


FOLDER_RUN = dict(steps=8, batch_size=16, val_size=100, eval_every=4, save_every=4, device="cpu")


def test_folder_training(tmp_path):
    write_dataset(tmp_path / "ds", 40, labels=True)
    cfg = TrainConfig(**FOLDER_RUN, data=str(tmp_path / "ds"))
    val = train(cfg, tmp_path / "ckpt")
    ckpt = load_checkpoint(tmp_path / "ckpt" / "ckpt_last.pth")
    assert ckpt["step"] == 8 and ckpt["config"]["train"]["data"] == str(tmp_path / "ds")
    assert ckpt["epoch"] >= 3  # 8 batches of 16 from 40 signals: several passes
    assert np.isfinite(val["fixed"]) and np.isfinite(val["unfixed"])
    assert (tmp_path / "ckpt" / "ckpt_best.pth").is_file()


def test_folder_training_with_sure_needs_no_labels(tmp_path):
    write_dataset(tmp_path / "ds", 32, labels=False)
    assert not (tmp_path / "ds" / "labels").exists()
    cfg = TrainConfig(**FOLDER_RUN, data=str(tmp_path / "ds"), loss="sure")
    val = train(cfg, tmp_path / "ckpt")
    ckpt = load_checkpoint(tmp_path / "ckpt" / "ckpt_last.pth")
    assert ckpt["step"] == 8 and ckpt["config"]["train"]["loss"] == "sure"
    assert all(np.isfinite(v) for v in val.values())


def test_folder_without_labels_and_mse_is_a_clear_error(tmp_path, run_call, monkeypatch):
    write_dataset(tmp_path / "ds", 16, labels=False)
    with pytest.raises(InputError, match="labels"):
        train(TrainConfig(**FOLDER_RUN, data=str(tmp_path / "ds")), tmp_path / "ckpt")
    monkeypatch.setattr(sys, "argv", ["train.py", "--data", str(tmp_path / "ds"), "--ckpt-dir", str(tmp_path / "c2"),
                                      "--device", "cpu", "--steps", "2"])
    code, err = run_call(train_mod.main)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "labels" in err
    assert not (tmp_path / "c2").exists()


def test_missing_data_folder_is_a_clear_error(tmp_path, run_call, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "--data", str(tmp_path / "nope"), "--ckpt-dir",
                                      str(tmp_path / "c"), "--device", "cpu"])
    code, err = run_call(train_mod.main)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope" in err

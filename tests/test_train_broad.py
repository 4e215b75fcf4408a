"""train.py on the broad prior: --train-prior broad, --width/--depth, --loss rmse, BN re-estimation; tiny runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_model
from deepdenoise1d.errors import InputError

import Pytorch_V1.train as train_mod
from Pytorch_V1.checkpoint import load_model
from Pytorch_V1.data import BroadStream


def test_a_broad_prior_run_records_its_architecture_and_window(tmp_path):
    args = train_mod.get_args(["--train-prior", "broad", "--width", "3", "--depth", "3", "--loss", "rmse",
                               "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--val-size", "12",
                               "--crop-length", "64"])
    cfg = train_mod.config_from_args(args)
    assert cfg.train_prior == "broad" and cfg.crop_length == 64 and cfg.model["width"] == 3
    train_mod.train(cfg, tmp_path / "run")
    model, ckpt = load_model(tmp_path / "run" / "ckpt_best.pth", "cpu")
    c = model.config
    assert (c.width, c.depth, c.train_length, c.baseline, c.equivariant) == (3, 3, 64, "median", True)
    assert c.sigma_range is None  # no spike range to warn about
    assert ckpt["config"]["train"]["train_prior"] == "broad" and np.isfinite(ckpt["best_val_score"])
    assert train_mod.config_from_args(train_mod.get_args(["--train-prior", "broad"])).crop_length == train_mod.BROAD_LENGTH


def test_the_broad_prior_needs_an_equivariant_offset_free_model(tmp_path):
    cfg = train_mod.config_from_args(train_mod.get_args(["--train-prior", "broad", "--baseline", "none",
                                                         "--steps", "2", "--batch-size", "2", "--val-size", "4"]))
    with pytest.raises(InputError, match="offset-free"):
        train_mod.train(cfg, tmp_path / "run")


def test_broad_stream_is_in_units_of_sigma_and_resumes():
    stream = BroadStream(5, 8, 128)
    first = [stream.next_batch() for _ in range(3)]
    noisy, clean, sigmas = first[0]
    assert noisy.shape == clean.shape == (8, 128) and np.all(sigmas == 1)
    assert 0.5 < float(np.std(noisy - clean)) < 1.5  # noise of unit σ
    resumed = BroadStream(5, 8, 128)
    resumed.load_state({"batch": 2})
    np.testing.assert_array_equal(resumed.next_batch()[0], first[2][0])


def test_a_spike_share_mixes_the_benchmark_into_each_batch_and_resumes():
    plain = BroadStream(5, 8, 128).next_batch()
    stream = BroadStream(5, 8, 128, spike_share=0.25)
    first = [stream.next_batch() for _ in range(3)]
    noisy, clean, sigmas = first[0]
    assert noisy.shape == clean.shape == (8, 128) and np.all(sigmas == 1)
    spiky = clean[6:]
    assert np.all(spiky >= 0) and 0.1 < (spiky != 0).mean() < 0.3  # the benchmark's density, in units of σ
    np.testing.assert_array_equal(noisy[:6], plain[0][:6])  # the broad part: the prior's own draws
    assert not np.array_equal(noisy[6:], plain[0][6:])
    resumed = BroadStream(5, 8, 128, spike_share=0.25)
    resumed.load_state({"batch": 2})
    np.testing.assert_array_equal(resumed.next_batch()[0], first[2][0])
    assert BroadStream(5, 4, 64, spike_share=0.99).spikes == 3  # one signal of the prior is always left


def test_a_spike_share_run_validates_on_the_same_share(tmp_path):
    args = train_mod.get_args(["--train-prior", "broad", "--spike-share", "0.25", "--width", "2", "--depth", "3",
                               "--loss", "rmse", "--steps", "2", "--eval-every", "2", "--batch-size", "4",
                               "--val-size", "12", "--crop-length", "64"])
    cfg = train_mod.config_from_args(args)
    assert cfg.spike_share == 0.25
    train_mod.train(cfg, tmp_path / "run")
    _, ckpt = load_model(tmp_path / "run" / "ckpt_best.pth", "cpu")
    assert ckpt["config"]["train"]["spike_share"] == 0.25
    from Pytorch_V1.data import load_data
    from Pytorch_V1.distributed import Workers
    _, _, val = load_data(cfg, Workers(), torch.device("cpu"))
    assert val.x.shape == (16, 1, 64) and "4 of the benchmark's spikes" in val.description


@pytest.mark.parametrize("flags", [["--spike-share", "0.2"], ["--spike-share", "0.2", "--train-prior", "broad", "--data", "x.npy"]])
def test_a_spike_share_needs_the_broad_prior(flags):
    with pytest.raises(InputError, match="--spike-share"):
        train_mod.get_args(flags)


def test_recalibration_replaces_running_statistics_by_their_plain_average():
    model = make_model(3, equivariant=True, baseline="median")
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.normal(size=(4, 1, 64)).astype(np.float32) * k) for k in (1.0, 3.0)]
    train_mod.recalibrate_batch_norm(model, batches)
    first = model.batch_norms()[0]
    assert not model.training and first.momentum == 0.1 and int(first.num_batches_tracked) == 2
    # the same statistics again from the same batches: a plain average, independent of what was there before
    stats = first.running_var.clone()
    first.running_var.fill_(123.0)
    train_mod.recalibrate_batch_norm(model, batches)
    torch.testing.assert_close(first.running_var, stats)


def test_rmse_loss_weighs_each_signal_by_its_root():
    from types import SimpleNamespace

    from Pytorch_V1.losses import compute_loss

    x = torch.zeros(2, 1, 16)
    clean = torch.zeros(2, 1, 16)
    clean[1] = 2.0  # errors 0 and 2: MSE mean 2, RMSE mean about 1
    net = lambda x, h: torch.zeros_like(x)  # noqa: E731
    parts = SimpleNamespace(net=net, device=torch.device("cpu"), model=None)
    cfg = SimpleNamespace(sigma_estimate="true", loss="rmse", weight_by="none", sparsity_weight=0.0)
    assert float(compute_loss(cfg, parts, x, None, clean, np.ones(2))) == pytest.approx(1.0, abs=1e-4)
    cfg.loss = "mse"
    assert float(compute_loss(cfg, parts, x, None, clean, np.ones(2))) == pytest.approx(2.0)


@pytest.mark.parametrize("flags", [["--train-prior", "broad", "--crop-length", "8"],
                                   ["--train-prior", "broad", "--crop-length", "20", "--depth", "5"]])
def test_a_crop_shorter_than_the_network_takes_is_one_line(flags, tmp_path):
    cfg = train_mod.config_from_args(train_mod.get_args([*flags, "--steps", "1", "--batch-size", "2", "--val-size", "4"]))
    with pytest.raises(InputError, match="--crop-length .* below the network's minimum length"):
        train_mod.train(cfg, tmp_path / "run")

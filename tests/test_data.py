"""Tests of Pytorch_V1/data.py: the synthetic and folder streams, the held-out validation split, the RNG stream ids, and training on a --data folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import Pytorch_V1.train as train_mod
from conftest import assert_one_line_error
from Pytorch_V1.checkpoint import load_checkpoint, load_model
from Pytorch_V1.data import (
    FOLDER_STREAM,
    MIN_VAL,
    PRIOR_STREAM,
    RECORRUPT_STREAM,
    SPLIT_STREAM,
    STEP_STREAM,
    VAL_FRACTION,
    VAL_PROBE_STREAM,
    VAL_STREAM,
    FolderStream,
    SyntheticStream,
    held_out_size,
    split_indices,
)
from Pytorch_V1.inference import denoise
from Pytorch_V1.train import TrainConfig, train
from deepdenoise1d.dataset import read_folder_dataset, write_folder_dataset
from deepdenoise1d.metrics import rmse
from deepdenoise1d.synthesis import benchmark_signals, noisy_pairs


# ---------------------------------------------------------------------------
# streams


def test_synthetic_stream_same_seed_same_batches_and_resumes_from_its_state():
    a, b = SyntheticStream(7, 16, 3.0), SyntheticStream(7, 16, 3.0)
    for _ in range(3):
        for x, y in zip(a.next_batch(), b.next_batch()):
            np.testing.assert_array_equal(x, y)
    noisy, clean, sigmas = a.next_batch()
    assert noisy.shape == clean.shape and noisy.shape[0] == 16 and sigmas.shape == (16,) and (sigmas == 3.0).all()
    assert not np.array_equal(SyntheticStream(8, 16, 3.0).next_batch()[0], SyntheticStream(7, 16, 3.0).next_batch()[0])
    ranks = [SyntheticStream(7, 16, 3.0, rank=r, world_size=2).next_batch()[0] for r in range(2)]
    assert not np.array_equal(ranks[0], ranks[1])  # each worker its own stream
    state = a.state()
    expected = a.next_batch()
    restored = SyntheticStream(0, 16, 3.0)
    restored.load_state(state)
    for x, y in zip(restored.next_batch(), expected):
        np.testing.assert_array_equal(x, y)


def test_folder_stream_epochs_cover_the_folder_once_split_over_ranks():
    n = 40
    noisy = np.arange(n * 20, dtype=np.float64).reshape(n, 20)  # row i starts with 20 i: the signal's index
    streams = [FolderStream(noisy, None, 1, 5, 2.0, rank=r, world_size=2) for r in range(2)]
    seen = [[], []]
    for rank, stream in enumerate(streams):
        for _ in range(4):  # 20 signals per rank and epoch, batches of 5
            x, clean, sigmas = stream.next_batch()
            assert clean is None and x.shape == (5, 20) and (sigmas == 2.0).all()
            seen[rank] += [int(v) // 20 for v in x[:, 0]]
    assert sorted(seen[0] + seen[1]) == list(range(n))  # one epoch: every signal once, over both ranks
    assert streams[0].epoch == streams[1].epoch == 1
    state = streams[0].state()
    expected = streams[0].next_batch()[0]
    restored = FolderStream(noisy, None, 1, 5, 2.0, rank=0, world_size=2)
    restored.load_state(state)
    np.testing.assert_array_equal(restored.next_batch()[0], expected)


def test_blind_stream_gives_each_signal_its_own_sigma():
    noisy, clean, sigmas = SyntheticStream(1, 4000, (0.5, 5.0)).next_batch()
    assert len(np.unique(sigmas)) == 4000
    # The residual's spread follows each signal's sigma.
    spread = (noisy - clean).std(axis=1)
    assert np.corrcoef(spread, sigmas)[0, 1] > 0.97
    assert abs(np.mean(spread / sigmas) - 1) < 0.01


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


# ---------------------------------------------------------------------------
# the validation split of a folder, and the RNG stream ids


def test_held_out_size_is_ten_percent_but_at_least_100():
    assert (VAL_FRACTION, MIN_VAL) == (0.1, 100)  # the documented rule: "10 %, at least 100"
    assert held_out_size(500, None) == 100  # 10 % would be 50
    assert held_out_size(1000, None) == 100
    assert held_out_size(1200, None) == 120
    assert held_out_size(5004, None) == 500 and held_out_size(5006, None) == 501  # 10 %, rounded
    assert held_out_size(50, 7) == 7 and held_out_size(5000, 30) == 30  # --val-size, when given, wins


def test_split_indices_are_a_disjoint_seeded_reproducible_partition():
    train_idx, val_idx = split_indices(1000, 120, 3)
    assert len(val_idx) == 120 and len(train_idx) == 880
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(np.union1d(train_idx, val_idx), np.arange(1000))
    assert (np.diff(train_idx) > 0).all() and (np.diff(val_idx) > 0).all()  # each sorted
    again_train, again_val = split_indices(1000, 120, 3)
    np.testing.assert_array_equal(again_train, train_idx)
    np.testing.assert_array_equal(again_val, val_idx)
    assert not np.array_equal(split_indices(1000, 120, 4)[1], val_idx)  # another seed, another split
    # The rule a checkpoint records: default_rng([seed, SPLIT_STREAM]).permutation(n_signals)[:n_val].
    np.testing.assert_array_equal(val_idx, np.sort(np.random.default_rng([3, SPLIT_STREAM]).permutation(1000)[:120]))
    assert val_idx.min() < 100 and val_idx.max() > 900  # spread over the folder, not its first or last signals


def test_stream_ids_are_distinct():
    """Each random draw of a run is default_rng([seed, STREAM, ...]): no two kinds of draw may share an id."""
    ids = [STEP_STREAM, FOLDER_STREAM, SPLIT_STREAM, RECORRUPT_STREAM, PRIOR_STREAM, VAL_PROBE_STREAM, VAL_STREAM]
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------
# training on a --data folder: the held-out split, its σ, its labels


def write_dataset(folder: Path, n: int, labels: bool, sigma: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    clean, noisy, _ = noisy_pairs(np.random.default_rng(seed), n, sigma)
    write_folder_dataset(folder, noisy, clean if labels else None)
    return noisy, clean


FOLDER_RUN = dict(steps=8, batch_size=16, eval_every=4, save_every=4, device="cpu")


def write_plain_folder(folder: Path, noisy: np.ndarray, clean: np.ndarray) -> None:
    """The original repository's layout, one float per line, written plainly (write_folder_dataset fsyncs every file: slow)."""
    for sub, signals in (("data", noisy), ("labels", clean)):
        (folder / sub).mkdir(parents=True)
        for i, signal in enumerate(signals):
            (folder / sub / f"{i}.txt").write_text("".join(f"{v:.9g}\n" for v in signal))


@pytest.fixture(scope="module")
def sigma2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sigma2") / "ds"
    clean, noisy, _ = noisy_pairs(np.random.default_rng(3), 1200, 2.0)
    write_plain_folder(folder, noisy, clean)
    return folder, noisy, clean


def test_folder_run_validates_on_its_held_out_split(sigma2_folder, tmp_path, capsys):
    """VAL_FRACTION (at least MIN_VAL) of the folder is held out; the printed validation RMSE is what an independent
    evaluation of the best checkpoint on exactly those signals gives; σ is estimated; no Bayes line."""
    folder, noisy, clean = sigma2_folder
    run = tmp_path / "run"
    val = train(TrainConfig(**{**FOLDER_RUN, "steps": 40, "eval_every": 20, "save_every": 20}, data=str(folder)), run)
    out, err = capsys.readouterr()
    assert "validation on 120 held-out signals of" in err and "validation on 120 held-out signals of" in out
    assert "Bayes" not in out + err
    best = load_checkpoint(run / "ckpt_best.pth")
    train_cfg = best["config"]["train"]
    assert train_cfg["data"] == str(folder) and train_cfg["val_size"] == 120
    assert train_cfg["split"]["n_signals"] == 1200 and train_cfg["split"]["n_val"] == 120
    assert abs(train_cfg["sigma"][0] / 2.0 - 1) < 0.05 and train_cfg["sigma"][0] == train_cfg["sigma"][1]
    assert best["config"]["model"]["sigma_range"] == train_cfg["sigma"]
    _, val_idx = split_indices(1200, 120, train_cfg["seed"])
    model, _ = load_model(run / "ckpt_best.pth")
    mode = best["config"]["model"]["bn_mode"]
    noisy, clean = read_folder_dataset(folder)  # as the files hold them
    independent = float(rmse(denoise(model, noisy[val_idx], bn_mode=mode), clean[val_idx]).mean())
    assert independent == pytest.approx(best["validation"][mode], rel=1e-4)
    # ... and it predicts the error on fresh signals of the folder's noise level.
    fresh_clean, fresh_noisy = benchmark_signals(2026, 3000, 2.0)
    fresh = float(rmse(denoise(model, fresh_noisy, bn_mode=mode), fresh_clean).mean())
    assert abs(fresh / best["validation"][mode] - 1) < 0.05, (fresh, best["validation"][mode])
    assert np.isfinite(val["fixed"]) and np.isfinite(val["unfixed"])


def test_folder_sigma_that_disagrees_with_the_estimate_warns(sigma2_folder, tmp_path, capsys):
    folder, _, _ = sigma2_folder
    train(TrainConfig(**{**FOLDER_RUN, "steps": 2}, data=str(folder), sigma=[3.0, 3.0]), tmp_path / "run")
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--sigma 3" in warnings[0] and "differs" in warnings[0]
    train(TrainConfig(**{**FOLDER_RUN, "steps": 2}, data=str(folder), sigma=[2.1, 2.1]), tmp_path / "run2")
    assert "warning" not in capsys.readouterr().err


def test_folder_training_with_sure_needs_no_labels(tmp_path):
    write_dataset(tmp_path / "ds", 150, labels=False)
    assert not (tmp_path / "ds" / "labels").exists()
    val = train(TrainConfig(**FOLDER_RUN, data=str(tmp_path / "ds"), loss="sure", val_size=30), tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "ckpt_last.pth")
    assert ckpt["step"] == 8 and ckpt["config"]["train"]["loss"] == "sure"
    assert set(val) == {"sure_fixed", "sure_unfixed"} and all(np.isfinite(v) for v in val.values())


def test_folder_of_varying_sigma_uses_per_signal_estimates_for_sure(tmp_path, capsys):
    clean, noisy, _ = noisy_pairs(np.random.default_rng(1), 400, (0.5, 5.0))
    write_folder_dataset(tmp_path / "ds", noisy, None)
    train(TrainConfig(**{**FOLDER_RUN, "steps": 2}, data=str(tmp_path / "ds"), loss="sure"), tmp_path / "run")
    assert "each signal's own estimate" in capsys.readouterr().err
    cfg = load_checkpoint(tmp_path / "run" / "ckpt_last.pth")["config"]["train"]
    assert cfg["sigma_per_signal"] is True and cfg["sigma"][0] < 1.0 < 4.0 < cfg["sigma"][1]


def test_too_small_folder_is_a_clear_error(tmp_path, run_main):
    write_dataset(tmp_path / "ds", 60, labels=True)
    code, _, err = run_main(train_mod, ["--data", tmp_path / "ds", "--run-dir", tmp_path / "run", "--steps", 2])
    assert_one_line_error(code, err, "60 signals", "validation")


def test_folder_without_labels_and_mse_is_a_clear_error(tmp_path, run_main):
    write_dataset(tmp_path / "ds", 16, labels=False)
    code, _, err = run_main(train_mod, ["--data", tmp_path / "ds", "--run-dir", tmp_path / "c2", "--steps", 2])
    assert_one_line_error(code, err, "labels")
    assert not (tmp_path / "c2" / "ckpt_last.pth").exists()


def test_labels_of_a_different_length_are_a_clear_error(tmp_path, run_main):
    noisy, clean = write_dataset(tmp_path / "ds", 8, labels=True)
    np.savetxt(tmp_path / "ds" / "labels" / "0.txt", clean[0, :90])  # labels/0.txt is shorter than data/0.txt
    code, _, err = run_main(train_mod, ["--data", tmp_path / "ds", "--run-dir", tmp_path / "c", "--steps", 2])
    assert_one_line_error(code, err, "0.txt")


def test_missing_data_folder_is_a_clear_error(tmp_path, run_main):
    code, _, err = run_main(train_mod, ["--data", tmp_path / "nope", "--run-dir", tmp_path / "c", "--device", "cpu"])
    assert_one_line_error(code, err, "nope")


def test_an_explicit_sigma_never_needs_an_estimate_and_auto_names_odd_signals(capsys):
    from Pytorch_V1.data import resolve_folder_sigma
    from Pytorch_V1.distributed import Workers
    from deepdenoise1d.synthesis import noisy_pairs

    _, noisy, _ = noisy_pairs(np.random.default_rng(21), 300, 3.0)
    offset = noisy + 100  # no sample <= 0 anywhere: the spike estimator reads nothing
    for loss in ("mse", "sure"):
        cfg, sigmas = resolve_folder_sigma(TrainConfig(data="f/", sigma=[2.5, 2.5], loss=loss), offset, Workers())
        assert cfg.sigma == [2.5, 2.5] and np.all(sigmas == 2.5)
    noisy[7] += 50  # one odd signal with an offset
    noisy[9] = 0.0  # one degenerate signal
    cfg, sigmas = resolve_folder_sigma(TrainConfig(data="f/", sigma=None), noisy, Workers())
    err = capsys.readouterr().err
    assert abs(cfg.sigma[0] / 3.0 - 1) < 0.05 and np.isfinite(sigmas).all()
    assert "σ estimated per signal" in err and "wavelet MAD on" in err
    assert "1 of 300 signal(s) are degenerate" in err and "signal(s) 9" in err


# ---------------------------------------------------------------------------
# --data FILE: one record trained on random crops, validated on its held-out tail


from hypothesis import given, strategies as st  # noqa: E402

from conftest import FUZZ  # noqa: E402
from Pytorch_V1.data import RECORD_STREAM, RECORD_VAL_CROPS, RecordStream, record_split  # noqa: E402
from deepdenoise1d.errors import InputError  # noqa: E402


def bumps_record(length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """(clean, noisy, sigma): pywt's Bumps at rsnr 7."""
    import pywt

    clean = pywt.data.demo_signal("Bumps", length)
    sigma = float(clean.std() / 7)
    return clean, clean + sigma * np.random.default_rng(seed).standard_normal(length), sigma


def test_record_split_holds_out_a_tenth_in_windows_spread_along_the_record_but_at_least_four():
    starts, _ = record_split(10000, 100)
    assert starts.size == 10 and np.array_equal(starts, 450 + 1000 * np.arange(10))  # one per tenth, centred
    assert record_split(2048, 100)[0].size == RECORD_VAL_CROPS  # a tenth is fewer than 4 windows
    assert record_split(5001, 100)[0].size == 6  # ceil(500.1 / 100) windows
    with pytest.raises(InputError, match="too short"):
        record_split(700, 100)


@FUZZ
@given(length=st.integers(200, 5000), crop=st.integers(20, 120), seed=st.integers(0, 2**32 - 1))
def test_no_training_crop_ever_shares_a_sample_with_a_validation_window(length, crop, seed):
    """Every crop of the stream misses every validation window; the windows lie in the record, disjoint, at
    least RECORD_VAL_CROPS of them; almost every sample outside them can be trained on."""
    try:
        val_starts, allowed = record_split(length, crop)
    except InputError:
        assert length / max(RECORD_VAL_CROPS, np.ceil(0.1 * length / crop)) < 2 * crop
        return
    held_out = np.zeros(length, dtype=bool)
    for start in val_starts:
        assert 0 <= start and start + crop <= length and not held_out[start : start + crop].any()
        held_out[start : start + crop] = True
    assert val_starts.size >= RECORD_VAL_CROPS and held_out.sum() >= min(0.1 * length, val_starts.size * crop)
    record = np.arange(length, dtype=np.float64)  # each sample is its own index
    stream = RecordStream(record, crop, allowed, seed, 64, 1.0)
    for _ in range(5):
        crops, clean, sigmas = stream.next_batch()
        assert clean is None and crops.shape == (64, crop) and np.all(sigmas == 1.0)
        assert np.all(np.diff(crops, axis=1) == 1) and not held_out[crops.astype(int)].any()
    covered = np.zeros(length, dtype=bool)
    for start in allowed:
        covered[start : start + crop] = True
    # Only gaps shorter than a crop (at most one per window, plus the ends) go unused.
    assert not (covered & held_out).any() and covered.sum() > (~held_out).sum() - (val_starts.size + 1) * crop


def test_record_stream_resumes_from_its_state_and_counts_passes():
    record = np.random.default_rng(0).standard_normal(1000)
    allowed = np.arange(901)
    a = RecordStream(record, 100, allowed, 3, 8, 1.0)
    a.next_batch()
    state = a.state()
    expected = a.next_batch()[0]
    b = RecordStream(record, 100, allowed, 3, 8, 1.0)
    b.load_state(state)
    assert np.array_equal(b.next_batch()[0], expected) and b.drawn == 16
    assert a.size == 10 and a.epoch == 1  # 16 crops of 100 over 1000 samples
    assert RECORD_STREAM not in (STEP_STREAM, FOLDER_STREAM, SPLIT_STREAM, RECORRUPT_STREAM, PRIOR_STREAM,
                                 VAL_PROBE_STREAM, VAL_STREAM)


RECORD_RUN = dict(steps=4, batch_size=16, eval_every=2, save_every=2, device="cpu", loss="sure")


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_a_record_trains_label_free_and_records_its_crop_length_and_scale(tmp_path, suffix, capsys):
    _, noisy, sigma = bumps_record(2048)
    path = tmp_path / f"record{suffix}"
    if suffix == ".npy":
        np.save(path, noisy)
    else:
        np.savetxt(path, noisy, header="value", comments="")
    train(TrainConfig(**RECORD_RUN, data=str(path), crop_length=64), tmp_path / "run")
    err = capsys.readouterr().err
    cfg = load_checkpoint(tmp_path / "run" / "ckpt_best.pth")["config"]
    assert cfg["model"]["train_length"] == 64
    assert abs(cfg["train"]["input_scale"] / sigma - 1) < 0.15  # the estimated σ
    assert cfg["train"]["sigma"] == [1.0, 1.0]  # the network saw noise of std 1
    val_starts, _ = record_split(2048, 64)
    assert cfg["train"]["split"]["val_starts"] == val_starts.tolist() and cfg["train"]["val_size"] == val_starts.size
    assert f"{val_starts.size} windows of 64" in err


def test_an_n_by_l_file_trains_like_a_folder_without_labels(tmp_path):
    _, noisy, _ = noisy_pairs(np.random.default_rng(2), 300, 2.0)
    np.save(tmp_path / "signals.npy", noisy)
    train(TrainConfig(**RECORD_RUN, data=str(tmp_path / "signals.npy"), val_size=30), tmp_path / "run")
    cfg = load_checkpoint(tmp_path / "run" / "ckpt_last.pth")["config"]["train"]
    assert cfg["split"]["n_signals"] == 300 and cfg["val_size"] == 30 and abs(cfg["sigma"][0] / 2 - 1) < 0.1


def test_a_signal_file_with_a_supervised_loss_is_a_clear_error(tmp_path, run_main):
    np.save(tmp_path / "record.npy", bumps_record(2048)[1])
    code, _, err = run_main(train_mod, ["--data", tmp_path / "record.npy", "--run-dir", tmp_path / "run"])
    assert_one_line_error(code, err, "record.npy", "label-free")


def test_a_record_too_short_for_its_crops_is_a_clear_error(tmp_path, run_main):
    np.save(tmp_path / "short.npy", bumps_record(2048)[1][:700])
    code, _, err = run_main(train_mod, ["--data", tmp_path / "short.npy", "--loss", "sure", "--sigma", "auto",
                                        "--run-dir", tmp_path / "run"])
    assert_one_line_error(code, err, "too short", "--crop-length 100")


def test_a_record_in_large_units_is_denoised_in_its_units(tmp_path):
    _, noisy, sigma = bumps_record(2048)
    record = 1000 * noisy  # units where σ is far from the network's: the model's input_scale undoes them
    np.save(tmp_path / "record.npy", record)
    # enough steps (about 20 s on a CPU) for the output to leave the untrained net's near-zero start
    run = {**RECORD_RUN, "steps": 500, "eval_every": 250, "save_every": 250}
    # the plain network, which sees absolute values: input_scale is what carries it across units
    plain = {"prior": True, "norm": "bn", "equivariant": False}
    train(TrainConfig(**run, data=str(tmp_path / "record.npy"), crop_length=64, model=plain), tmp_path / "run")
    model, ckpt = load_model(tmp_path / "run" / "ckpt_best.pth")
    assert abs(model.config.input_scale / (1000 * sigma) - 1) < 0.15  # recorded in the model config
    assert ckpt["config"]["model"]["input_scale"] == model.config.input_scale

    def rms_ratio(out):
        return float(np.sqrt(np.mean(out ** 2) / np.mean(record ** 2)))

    ratio = rms_ratio(denoise(model, record[None])[0])
    assert 0.5 < ratio < 2, ratio
    model.config.input_scale = 1.0  # the record fed as is, the way every denoise path did before
    assert rms_ratio(denoise(model, record[None])[0]) < ratio / 5


def record_run_args(record, run_dir, *extra) -> list:
    return ["--data", record, "--loss", "sure", "--steps", 2, "--batch-size", 8, "--eval-every", 2, "--crop-length", 64,
            "--device", "cpu", "--run-dir", run_dir, *extra]


def printed_next_steps(out: str) -> list[str]:
    """The command lines after train.py's ``next (...)`` header, without their label and trailing note."""
    lines = out[out.index("next ("):].splitlines()[1:]
    return [line.split(None, 1)[1].split("   (")[0] for line in lines]


def test_a_record_runs_next_steps_denoise_that_record_and_compare_every_candidate(tmp_path, run_main, monkeypatch):
    """After train.py --data REC (from scratch, then --init from that run), the next steps convert ckpt_best.pth,
    denoise REC itself with the new model (--method net) and score it beside every candidate on REC (--method
    auto), never a synthetic benchmark or a HELD_OUT.npy the user does not have; each runs as printed."""
    import shlex

    from conftest import REPO_ROOT, load_script

    monkeypatch.chdir(tmp_path)
    np.save("rec.npy", bumps_record(2048)[1])
    scripts = {"pth2h5.py": load_script(REPO_ROOT / "pth2h5.py", "pth2h5_next_steps"),
               "Numpy_test.py": load_script(REPO_ROOT / "Numpy_V2" / "Numpy_test.py", "numpy_test_next_steps")}
    for run, extra in (("run", []), ("adapted", ["--init", "run/ckpt_best.pth"])):
        code, out, err = run_main(train_mod, record_run_args("rec.npy", run, *extra))
        assert code == 0, err
        steps = printed_next_steps(out)
        assert "HELD_OUT" not in out and "--random" not in out and "Pytorch_V1/test.py" not in out
        assert steps[0].endswith(f"pth2h5.py {run}/ckpt_best.pth {run}/ckpt_best.h5")
        assert steps[1].endswith(f"Numpy_test.py --input rec.npy --output rec_denoised.npy --weights {run}/ckpt_best.h5 "
                                 "--method net")
        assert steps[2].endswith(f"Numpy_test.py --input rec.npy --output rec_auto.npy --weights {run}/ckpt_best.h5 "
                                 "--method auto")
        for step in steps:
            command = shlex.split(step)
            code, _, err = run_main(scripts[Path(command[1]).name], command[2:])
            assert code == 0, (step, err)
        assert np.load("rec_denoised.npy").shape == np.load("rec_auto.npy").shape == (2048,)


def test_next_steps_of_other_runs_are_unchanged_and_a_tracked_record_is_never_written_beside(tmp_path):
    """A synthetic run is scored on the benchmark's draw and a folder run on the user's held-out signals, as before;
    a record inside a tracked folder (TestSamples/) gets its outputs in the run folder."""
    from types import SimpleNamespace

    from Pytorch_V1 import trainlog

    run = SimpleNamespace(path=tmp_path / "run", file=lambda name: tmp_path / "run" / name)
    assert "--random" in "\n".join(trainlog.next_steps(run, None))
    assert "HELD_OUT.npy" in "\n".join(trainlog.next_steps(run, "my_folder"))
    tracked = trainlog.REPO / "TestSamples" / "rec.npy"
    text = "\n".join(trainlog.next_steps(run, str(tracked), adapted=True, record=True))
    assert f"--output {tmp_path / 'run' / 'rec_denoised.npy'}" in text and f"--output {tmp_path / 'run' / 'rec_auto.npy'}" in text
    assert f"--input {tracked}" in text


@FUZZ
@given(starts=st.lists(st.integers(0, 3000), min_size=0, max_size=60, unique=True), crop=st.integers(1, 200))
def test_covered_samples_counts_the_union_of_the_crops(starts, crop):
    """The training samples of a record, counted without listing every crop's samples (memory independent of
    the crop length): the same as the plain union."""
    from Pytorch_V1.data import covered_samples

    starts = np.array(starts, dtype=np.int64)
    plain = np.unique(starts[:, None] + np.arange(crop)).size if starts.size else 0
    assert covered_samples(starts, crop) == plain

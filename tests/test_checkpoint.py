"""Tests of Pytorch_V1/checkpoint.py: loading the original repository's layout and CUDA-saved files, strict and typed loading, refusing non-checkpoints and pickled code, the atomic save, and the shipped checkpoints."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest
import torch

import deepdenoise1d.safewrite
import Pytorch_V1.train as train_mod
from conftest import (batch_of_100, kill_9, log_tail, make_model, output_names, start_training, wait_for,
                      write_cuda_checkpoint)
from Pytorch_V1.checkpoint import load_checkpoint, load_model, load_state_dict_strict, save_checkpoint
from Pytorch_V1.model import ICNN_s, ModelConfig
from Pytorch_V1.train import get_args, train
from deepdenoise1d.errors import InputError


# ---------------------------------------------------------------------------
# the original repository's layout, CUDA-saved files, strict loading


def test_original_layout_checkpoint_loads_strictly(tmp_path):
    model = make_model(12)
    optim = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-6)
    model.train()
    model(batch_of_100(1)).pow(2).mean().backward()
    optim.step()
    model.eval()
    path = tmp_path / "seed.pth"
    torch.save({"epoch": 199, "net_state_dict": model.state_dict(), "optim_state_dict": optim.state_dict(),
                "loss": 0.123}, path)
    loaded, ckpt = load_model(path)
    assert not loaded.training
    assert (loaded.config.prior, loaded.config.norm) == (True, "bn")
    assert ckpt["epoch"] == 199
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = batch_of_100(3)
    with torch.no_grad():
        for mode in ("fixed", "unfixed"):
            assert torch.equal(loaded(x, bn_mode=mode), model(x, bn_mode=mode))


@pytest.mark.parametrize("config", [dict(prior=False), dict(norm="sparse_bn")])
def test_original_layout_variants_infer_their_architecture(tmp_path, config):
    model = make_model(13, **config)
    torch.save({"epoch": 1, "net_state_dict": model.state_dict(), "optim_state_dict": {}, "loss": 0.0},
               tmp_path / "v.pth")
    loaded, _ = load_model(tmp_path / "v.pth")
    assert {k: getattr(loaded.config, k) for k in config} == config


def test_cuda_saved_checkpoint_loads_on_cpu(tmp_path):
    model = make_model(14)
    path = tmp_path / "cuda.pth"
    write_cuda_checkpoint(path, {"epoch": 10, "net_state_dict": model.state_dict(), "loss": 0.5})
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # the fake is real: the storages ask for CUDA
    loaded, ckpt = load_model(path)
    assert ckpt["epoch"] == 10
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.device.type == "cpu" and torch.equal(got, value), key


def test_strict_loading_names_missing_and_unexpected_keys():
    model = ICNN_s()
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "up2.conv.double_conv.4.running_var"}
    with pytest.raises(InputError, match=r"missing tensor 'up2\.conv\.double_conv\.4\.running_var'"):
        load_state_dict_strict(ICNN_s(), missing, "x.pth")
    extra = {**state, "down9.weight": torch.zeros(1)}
    with pytest.raises(InputError, match=r"unexpected tensor 'down9\.weight'"):
        load_state_dict_strict(ICNN_s(), extra, "x.pth")
    with pytest.raises(InputError, match=r"'wienernet\.beta'.*\(2,\).*\(1,\)"):
        load_state_dict_strict(ICNN_s(), {**state, "wienernet.beta": torch.zeros(2)}, "x.pth")
    # A prior checkpoint into a no-prior model, and the other way round.
    with pytest.raises(InputError, match="unexpected tensor 'wienernet"):
        load_state_dict_strict(ICNN_s(ModelConfig(prior=False)), state, "x.pth")
    with pytest.raises(InputError, match="missing tensor 'wienernet"):
        load_state_dict_strict(ICNN_s(), ICNN_s(ModelConfig(prior=False)).state_dict(), "x.pth")
    # A config-less checkpoint without the BN step counters still loads (they stay 0).
    load_state_dict_strict(ICNN_s(), {k: v for k, v in state.items() if "num_batches" not in k}, "x.pth")


def test_load_checkpoint_refuses_non_checkpoints(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "nodict.pth")
    with pytest.raises(InputError, match="net_state_dict"):
        load_checkpoint(tmp_path / "nodict.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(InputError, match="text.pth"):
        load_checkpoint(tmp_path / "text.pth")


class Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_checkpoint_never_runs_pickled_code(tmp_path):
    marker = tmp_path / "ran.txt"
    torch.save({"net_state_dict": {}, "x": Payload(marker)}, tmp_path / "evil_zip.pth")  # zip format
    marker.unlink(missing_ok=True)  # torch.save itself does not run it, but be sure
    with open(tmp_path / "evil_raw.pth", "wb") as f:
        pickle.dump({"net_state_dict": Payload(marker)}, f)  # legacy raw pickle
    for name in ["evil_zip.pth", "evil_raw.pth"]:
        with pytest.raises(InputError, match=name):
            load_checkpoint(tmp_path / name)
        assert not marker.exists()


# ---------------------------------------------------------------------------
# the atomic save


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    first = {"net_state_dict": ICNN_s().state_dict(), "step": 1}
    save_checkpoint(path, first)
    assert output_names(tmp_path) == ["ckpt.pth"]
    good = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(deepdenoise1d.safewrite.os, "fsync", broken_fsync)
    with pytest.raises(InputError, match="No space left"):
        save_checkpoint(path, {"net_state_dict": ICNN_s().state_dict(), "step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert output_names(tmp_path) == ["ckpt.pth"]  # no temp file left behind
    assert load_checkpoint(path)["step"] == 1
    assert os.stat(path).st_size > 0


def test_kill_9_while_checkpointing_every_step_never_corrupts(tmp_path, no_stray_trainings):
    """With a checkpoint written every step, a kill lands while ckpt_last.pth is being replaced,
    again and again: what is on disk must always load."""
    run_dir = tmp_path / "run"
    flags = ["--steps", "2000", "--batch-size", "16", "--val-size", "100", "--eval-every", "1000",
             "--save-every", "1", "--device", "cpu"]
    last = run_dir / "ckpt_last.pth"
    steps = []
    for round_, delay in enumerate([0.05, 0.237]):
        proc = start_training(run_dir, *flags, *(["--resume"] if round_ else []))
        if round_:  # wait until the resumed run has moved past its starting step
            deadline = time.monotonic() + 120
            while load_checkpoint(last)["step"] <= steps[-1]:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the resumed run made no progress:\n{log_tail(run_dir)}")
                time.sleep(0.005)
        else:
            wait_for(last, proc)
        time.sleep(delay)
        kill_9(proc)
        ckpt = load_checkpoint(last)  # never truncated, never half-written
        assert set(ckpt["net_state_dict"]) == set(ICNN_s().state_dict())
        steps.append(ckpt["step"])
    assert 1 <= steps[0] < steps[1] < 2000


# ---------------------------------------------------------------------------
# config and tensor types


def save_raw(path, content) -> None:
    torch.save(content, path)


@pytest.mark.parametrize("config,fragment", [
    (["model"], "'config' must be a dict"),
    ("prior", "'config' must be a dict"),
    ({"model": ["bn"]}, "model config must be a dict"),
    ({"model": {"prior": "yes"}}, "'prior'"),
    ({"model": {"norm": 3}}, "'norm'"),
    ({"model": {"bn_mode": ["fixed"]}}, "'bn_mode'"),
    ({"model": {"sigma_range": [5, 1]}}, "'sigma_range'"),
    ({"model": {"sigma_range": "wide"}}, "'sigma_range'"),
])
def test_checkpoint_config_of_the_wrong_type_is_named(tmp_path, config, fragment):
    save_raw(tmp_path / "c.pth", {"net_state_dict": ICNN_s().state_dict(), "config": config})
    with pytest.raises(InputError, match=fragment):
        load_model(tmp_path / "c.pth")


@pytest.mark.parametrize("bad,fragment", [
    (torch.full((1,), float("nan")), "non-finite"),
    (torch.full((1,), float("inf")), "non-finite"),
    (torch.ones(1, dtype=torch.int64), "floating point"),
    (torch.ones(1).to_sparse(), "dense"),
    ("0.1", "not a named tensor"),
])
def test_checkpoint_tensors_are_checked(tmp_path, bad, fragment):
    state = {**ICNN_s().state_dict(), "wienernet.beta": bad}
    save_raw(tmp_path / "t.pth", {"net_state_dict": state})
    with pytest.raises(InputError, match=fragment):
        load_model(tmp_path / "t.pth")


def test_text_file_as_checkpoint_gets_a_clear_message(tmp_path):
    (tmp_path / "signal.txt").write_text("101.5\n3.25\n")
    with pytest.raises(InputError, match=r"signal\.txt: not a PyTorch checkpoint \(text\)"):
        load_model(tmp_path / "signal.txt")


# ---------------------------------------------------------------------------
# the shipped checkpoints


def test_shipped_configs_load_and_fill_sigma_range():
    """The shipped checkpoints predate sigma_range: it comes from the recorded training sigma."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "ckpt"
    paths = sorted(folder.glob("*.pth"))
    if not paths:
        pytest.skip("no shipped checkpoints")
    for path in paths:
        model, ckpt = load_model(path)
        sigma = ckpt["config"]["train"]["sigma"]  # None for a broad-prior run: its σ follows each signal's SNR
        expected = (None if sigma is None else [float(sigma)] * 2 if isinstance(sigma, (int, float))
                    else [float(s) for s in sigma])
        assert model.config.sigma_range == expected, path.name


def test_a_shipped_checkpoint_resumes_and_its_old_key_names_are_read(tmp_path):
    """A run saved before the validation/best_val_score keys (with val_rmse/best_val_rmse) resumes and keeps its best."""
    import torch

    shipped = load_checkpoint(Path(__file__).resolve().parent.parent / "ckpt" / "ckpt_best.pth")
    renames = {"validation": "val_rmse", "best_val_score": "best_val_rmse"}
    saved = {renames.get(k, k): v for k, v in shipped.items() if k != "val_metric"}  # the older layout
    if "val_rmse" not in saved:  # a shipped file already in the older layout
        saved = shipped
    assert "val_rmse" in saved and "validation" not in saved
    (tmp_path / "run").mkdir()
    torch.save(saved, tmp_path / "run" / "ckpt_last.pth")
    cfg = train_mod.config_from_args(get_args(["--steps", str(saved["step"] + 1), "--eval-every", "100000",
                                               "--run-dir", str(tmp_path / "run"), "--resume", "--device", "cpu"]))
    train(cfg, tmp_path / "run", resume=True, given={"steps", "eval_every", "device"})
    resumed = load_checkpoint(tmp_path / "run" / "ckpt_last.pth")
    assert resumed["step"] == saved["step"] + 1 and resumed["val_metric"] == "rmse"
    assert resumed["best_val_score"] <= saved["best_val_rmse"]  # the saved best is carried on, not forgotten


# ---------------------------------------------------------------------------
# Size before work: a small zip that unpacks to a lot, and --init on files that are not files


def _zip_bomb(path: Path, unpacked: int) -> None:
    """A torch.save-like zip whose one member, all zeros, unpacks to ``unpacked`` bytes (deflated)."""
    import zipfile

    block = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as member:
            for _ in range(unpacked >> 20):
                member.write(block)


def test_a_zip_that_unpacks_beyond_the_bound_is_refused_before_loading(tmp_path):
    from Pytorch_V1.checkpoint import MAX_CHECKPOINT_BYTES

    path = tmp_path / "bomb.pth"
    _zip_bomb(path, MAX_CHECKPOINT_BYTES + (1 << 20))
    assert path.stat().st_size < MAX_CHECKPOINT_BYTES // 100  # small on disk: the amplification is the attack
    with pytest.raises(InputError, match="unpacks to .* refused before loading"):
        load_checkpoint(path)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_a_zip_bomb_is_refused_with_little_memory(tmp_path):
    """In a fresh process, so its peak RSS is the refusal's own."""
    import subprocess
    import sys

    path = tmp_path / "bomb.pth"
    _zip_bomb(path, 1 << 30)
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak (here pytest's) across exec
    code = ("import sys\nfrom Pytorch_V1.checkpoint import load_checkpoint\n"
            "from deepdenoise1d.errors import InputError\n"
            "try:\n    load_checkpoint(sys.argv[1])\nexcept InputError as e:\n    print('refused:', e)\n"
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    lines = out.stdout.splitlines()
    assert any(line.startswith("refused:") for line in lines), out.stdout + out.stderr
    peak_kib = int(lines[-1])
    assert peak_kib < 450 * 1024, f"peak RSS {peak_kib} KiB"  # torch's import is most of it; 1 GiB never unpacked


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_init_hashes_only_regular_files(tmp_path, kind):
    from Pytorch_V1.checkpoint import file_sha256

    path = {"fifo": tmp_path / "pipe", "device": Path("/dev/zero"), "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    start = time.monotonic()
    with pytest.raises(InputError):
        file_sha256(str(path))
    assert time.monotonic() - start < 5  # neither hangs on the FIFO nor reads /dev/zero forever


def test_file_sha256_reads_in_chunks_and_matches_hashlib(tmp_path):
    import hashlib

    from Pytorch_V1.checkpoint import HASH_CHUNK, file_sha256

    data = os.urandom(HASH_CHUNK * 2 + 123)
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(str(tmp_path / "f")) == hashlib.sha256(data).hexdigest()

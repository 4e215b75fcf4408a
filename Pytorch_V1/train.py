"""Train ICNN_s on sparse-spike signals.

    python Pytorch_V1/train.py                       # the shipped recipe, CPU-friendly
    python Pytorch_V1/train.py --sigma 0.5:5         # blind: a noise level per signal
    python Pytorch_V1/train.py --loss sure           # no clean labels (Stein's unbiased risk)
    torchrun --standalone --nproc-per-node=2 Pytorch_V1/train.py   # DistributedDataParallel

Writes to --ckpt-dir: ckpt_last.pth (atomic, every --save-every steps and at
the end), ckpt_best.pth (best validation RMSE), train_log.csv and
train_curve.png. --resume continues from ckpt_last.pth at its step, with
model, optimiser, scheduler and data-stream state restored.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from Pytorch_V1.checkpoint import FORMAT_VERSION, load_checkpoint, load_state_dict_strict, save_checkpoint
from Pytorch_V1.data import FolderStream, SyntheticStream, to_tensor
from Pytorch_V1.inference import resolve_device
from Pytorch_V1.model import BN_TRAIN_STATS, ICNN_s, ModelConfig, wiener_prior
from Pytorch_V1.sure import estimate_sigma, sure_per_signal
from signals.classical import bayes_posterior_mean
from signals.errors import InputError, run_cli
from signals.io import read_folder_dataset, remove_stale_temps
from signals.metrics import mse, rmse
from signals.synthesis import noisy_pairs, parse_sigma

REPO = Path(__file__).resolve().parent.parent


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as plain types in every checkpoint."""

    steps: int = 3000
    batch_size: int = 256
    lr: float = 6e-3
    optimizer: str = "adam"
    loss: str = "mse"
    sigma: float | list | str = 3.0  # a number, [low, high] for blind training, or "auto" (estimated)
    seed: int = 666
    bn_train: str = "batch"  # BN statistics while training: batch, signal or mixed
    bn_mode: str | None = None  # inference BN mode to record; None picks the better on validation
    sparsity_weight: float = 0.0  # L1 weight on normalised activations (sparse_bn)
    weight_by_sigma: bool = False  # divide each signal's squared error by its σ² (blind runs)
    sure_epsilon: float = 1e-3  # Monte-Carlo divergence step, times sigma
    data: str | None = None
    val_size: int = 1000
    eval_every: int = 250
    save_every: int = 500
    warmup: float = 0.05  # fraction of steps with a linear warm-up
    device: str = "auto"
    model: dict = field(default_factory=lambda: ModelConfig().to_dict())


def get_args(argv=None) -> tuple[TrainConfig, Path, bool]:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=d.steps, help="total (global) optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="signals per step, over all workers (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default %(default)s)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer, help="adam, or sgd with momentum 0.9 like the seed")
    p.add_argument("--loss", choices=["mse", "smoothl1", "sure"], default=d.loss,
                   help="mse, smoothl1 (the seed's), or sure: label-free Stein's unbiased risk estimate")
    p.add_argument("--sigma", default=str(d.sigma),
                   help="noise std of the training signals, LOW:HIGH to draw one per signal (blind), "
                        "or auto to estimate it from --data (default 3)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for weights, data and validation (default %(default)s)")
    p.add_argument("--norm", choices=["bn", "sparse_bn"], default="bn", help="plain BN, or BN with a learnable soft threshold")
    p.add_argument("--sparsity-weight", type=float, default=d.sparsity_weight,
                   help="L1 penalty weight on normalised activations, for --norm sparse_bn (default %(default)s)")
    p.add_argument("--no-prior", action="store_true", help="switch the Wiener prior branch off (ablation)")
    p.add_argument("--weight-by-sigma", action="store_true",
                   help="divide each signal's squared error by its sigma^2, so a blind run (--sigma LOW:HIGH) "
                        "is not dominated by its noisiest signals")
    p.add_argument("--bn-train", choices=BN_TRAIN_STATS, default=d.bn_train,
                   help="BN statistics in training: batch, per signal, or a coin flip per step (default %(default)s)")
    p.add_argument("--bn-mode", choices=["fixed", "unfixed"], default=None,
                   help="BN mode recorded as this model's inference default (default: the better one on validation)")
    p.add_argument("--data", default=None,
                   help="train on a folder in the seed's layout (data/N.txt, labels/N.txt; labels optional with --loss sure)")
    p.add_argument("--val-size", type=int, default=d.val_size, help="signals in the fixed validation set (default %(default)s)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="validate every N steps (default %(default)s)")
    p.add_argument("--save-every", type=int, default=d.save_every, help="write ckpt_last.pth every N steps (default %(default)s)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device, help="auto picks CUDA when present")
    p.add_argument("--ckpt-dir", default="ckpt", help="where checkpoints, log and curve go (default %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue from CKPT_DIR/ckpt_last.pth at its step, with the config saved there (other flags are ignored)")
    a = p.parse_args(argv)
    if a.sigma == "auto":
        if a.data is None:
            p.error("--sigma auto (estimate the noise level) needs --data")
        sigma = "auto"
    else:
        try:
            sigma = parse_sigma(a.sigma)
        except ValueError as err:
            p.error(str(err))
    if a.steps < 1 or a.batch_size < 1 or a.eval_every < 1 or a.save_every < 1 or a.val_size < 1:
        p.error("--steps, --batch-size, --eval-every, --save-every and --val-size must be positive")
    model = ModelConfig(prior=not a.no_prior, norm=a.norm, bn_mode=a.bn_mode or "fixed")
    cfg = TrainConfig(
        steps=a.steps, batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer, loss=a.loss,
        sigma=list(sigma) if isinstance(sigma, tuple) else sigma, seed=a.seed, bn_train=a.bn_train,
        bn_mode=a.bn_mode, sparsity_weight=a.sparsity_weight, weight_by_sigma=a.weight_by_sigma, data=a.data, val_size=a.val_size, eval_every=a.eval_every,
        save_every=a.save_every, device=a.device, model=model.to_dict(),
    )
    return cfg, Path(a.ckpt_dir), a.resume


def sigma_arg(sigma):
    return tuple(sigma) if isinstance(sigma, list) else sigma


def validation_set(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed validation set, from its own seed stream, never from training data."""
    clean, noisy, sigmas = noisy_pairs(np.random.default_rng([cfg.seed, 999]), cfg.val_size, sigma_arg(cfg.sigma))
    return noisy, clean, sigmas


@torch.no_grad()
def evaluate(model: ICNN_s, x: torch.Tensor, h: torch.Tensor | None, clean: np.ndarray,
             sure: tuple[torch.Tensor, torch.Tensor, float] | None = None) -> dict[str, float]:
    """Validation RMSE in both BN modes; with ``sure=(sigma, probe, eps)`` also the label-free SURE RMSE."""
    model.eval()
    out = {}
    for mode in ("fixed", "unfixed"):
        model.set_bn_mode(mode)
        pred = model(x, h)
        out[mode] = float(rmse(pred[:, 0].double().cpu().numpy(), clean).mean())
        if sure is not None:
            # Compare sqrt(mean SURE) with sqrt(mean MSE): per-signal SURE is too noisy to root.
            sigma, probe, eps = sure
            risk = sure_per_signal(model, x, pred, sigma, probe, eps, with_prior=h is not None)
            out[f"sure_{mode}"] = float(risk.mean().clamp_min(0).sqrt())
            out[f"root_mse_{mode}"] = float(np.sqrt(mse(pred[:, 0].double().cpu().numpy(), clean).mean()))
    model.train()
    return out


def make_lr_lambda(cfg: TrainConfig):
    """Linear warm-up, then cosine decay to 1 % of the peak."""
    warm = max(1, int(cfg.warmup * cfg.steps))

    def lr_lambda(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, cfg.steps - warm)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return lr_lambda


def supervised_loss(pred: torch.Tensor, clean: torch.Tensor, kind: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over signals; ``weights`` (N,) rescales each signal's loss."""
    if kind == "smoothl1":
        per_signal = F.smooth_l1_loss(pred, clean, reduction="none").mean(dim=(1, 2))
    else:
        per_signal = F.mse_loss(pred, clean, reduction="none").mean(dim=(1, 2))
    if weights is not None:
        per_signal = per_signal * weights
    return per_signal.mean()


def init_distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size); starts a process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world_size


def train(cfg: TrainConfig, ckpt_dir: Path, resume: bool = False) -> dict:
    """Run training; returns the final validation RMSEs. Only rank 0 writes files."""
    rank, local_rank, world_size = init_distributed()
    is_main = rank == 0
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    use_amp = device.type == "cuda" and cfg.loss != "sure"  # SURE's finite difference needs float32
    if cfg.batch_size % world_size:
        raise InputError(f"--batch-size {cfg.batch_size} must divide evenly over {world_size} workers")
    local_batch = cfg.batch_size // world_size
    if cfg.data is not None:
        noisy, clean = read_folder_dataset(cfg.data, require_labels=cfg.loss != "sure")
        if cfg.sigma == "auto":
            cfg.sigma = round(estimate_sigma(noisy), 4)
            if is_main:
                print(f"estimated noise sigma of {cfg.data}: {cfg.sigma}", file=sys.stderr)
        elif not np.isscalar(sigma_arg(cfg.sigma)):
            raise InputError("--data needs one --sigma value (the folder's noise level) or --sigma auto")
        stream = FolderStream(noisy, clean, cfg.seed, local_batch, cfg.sigma, rank, world_size)
    else:
        stream = SyntheticStream(cfg.seed, local_batch, sigma_arg(cfg.sigma), rank, world_size)

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if is_main:
        remove_stale_temps(ckpt_dir)
    model_cfg = ModelConfig.from_dict(cfg.model)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching global RNG state
        torch.manual_seed(cfg.seed)
        model = ICNN_s(model_cfg)
    model.to(device).train()
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)  # one kernel for all tiny tensors
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, make_lr_lambda(cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    flip_rng = np.random.default_rng([cfg.seed, 5, rank])  # the BN-statistics coin in "mixed"

    step, best = 0, float("inf")
    last_path, best_path = ckpt_dir / "ckpt_last.pth", ckpt_dir / "ckpt_best.pth"
    log_path = ckpt_dir / "train_log.csv"
    if resume:
        ckpt = load_checkpoint(last_path, device)
        load_state_dict_strict(model, ckpt["net_state_dict"], str(last_path))
        model.config = ModelConfig.from_dict(ckpt["config"]["model"])
        optimizer.load_state_dict(ckpt["optim_state_dict"])
        scheduler.load_state_dict(ckpt["sched_state_dict"])
        if use_amp and "scaler_state_dict" in ckpt:
            scaler.load_state_dict(ckpt["scaler_state_dict"])
        step, best = ckpt["step"], ckpt.get("best_val_rmse", float("inf"))
        resumed_val = ckpt.get("val_rmse") or {}
        stream.load_state(ckpt["rng_state"]["stream"][rank] if world_size > 1 else ckpt["rng_state"]["stream"])
        flip_rng.bit_generator.state = ckpt["rng_state"]["flip"]
    ddp_model = model
    if world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    val_noisy, val_clean, val_sigmas = validation_set(cfg)
    val_x = to_tensor(val_noisy, device)
    val_h = wiener_prior(val_x) if model.wienernet is not None else None
    bayes_val = float(rmse(bayes_posterior_mean(val_noisy, val_sigmas[:, None]), val_clean).mean())
    val_sure = None
    if cfg.loss == "sure":  # label-free model selection: the validation labels are only reported
        val_sure = (torch.as_tensor(val_sigmas, dtype=torch.float32, device=device),
                    to_tensor(np.random.default_rng([cfg.seed, 998]).standard_normal(val_noisy.shape), device),
                    cfg.sure_epsilon)

    def gather_stream_state():
        state = stream.state()
        if world_size == 1:
            return state
        states = [None] * world_size
        dist.all_gather_object(states, state)
        return states

    def checkpoint(val: dict, stream_state) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "step": step,
            "epoch": getattr(stream, "epoch", 0),
            "net_state_dict": model.state_dict(),
            "optim_state_dict": optimizer.state_dict(),
            "sched_state_dict": scheduler.state_dict(),
            "scaler_state_dict": scaler.state_dict() if use_amp else {},
            "config": {"model": model.config.to_dict(), "train": asdict(cfg), "world_size": world_size},
            "val_rmse": val,
            "best_val_rmse": best,
            "loss": last_loss,
            "rng_state": {"stream": stream_state, "flip": flip_rng.bit_generator.state},
            "torch_version": str(torch.__version__),
        }

    if is_main and resume:
        truncate_log(log_path, step)
    if is_main and not resume:
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(["step", "loss", "lr", "val_rmse_fixed", "val_rmse_unfixed",
                                    "val_root_mse_fixed", "val_sure_root_mse_fixed", "seconds"])
    start = time.time()
    last_loss = float("nan")
    loss_sum, loss_count = 0.0, 0  # the mean training loss since the last log row
    val = resumed_val if resume else {}
    bar = tqdm(total=cfg.steps, initial=step, disable=not is_main, desc="train", dynamic_ncols=True, file=sys.stderr)
    while step < cfg.steps:
        noisy, clean, sigmas = stream.next_batch()
        x = to_tensor(noisy, device)
        h = wiener_prior(x) if model.wienernet is not None else None
        per_signal = cfg.bn_train == "signal" or (cfg.bn_train == "mixed" and flip_rng.random() < 0.5)
        model.set_signal_stats(per_signal)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            pred = ddp_model(x, h)
            if cfg.loss == "sure":
                sig = torch.as_tensor(sigmas, dtype=torch.float32, device=device)
                probe = to_tensor(flip_rng.standard_normal(noisy.shape), device)
                loss = sure_per_signal(ddp_model, x, pred.float(), sig, probe, cfg.sure_epsilon,
                                       with_prior=model.wienernet is not None).mean()
            else:
                weights = torch.as_tensor(1.0 / sigmas**2, dtype=torch.float32, device=device) if cfg.weight_by_sigma else None
                loss = supervised_loss(pred.float(), to_tensor(clean, device), cfg.loss, weights)
            if cfg.sparsity_weight > 0:
                loss = loss + cfg.sparsity_weight * model.sparsity_penalty()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        last_loss = float(loss.detach())
        loss_sum, loss_count = loss_sum + last_loss, loss_count + 1
        if not math.isfinite(last_loss):
            raise RuntimeError(f"training diverged at step {step} (loss {last_loss}); try a lower --lr")
        bar.update(1)
        evaluate_now = step % cfg.eval_every == 0 or step == cfg.steps
        save_now = step % cfg.save_every == 0 or step == cfg.steps
        if evaluate_now or save_now:
            stream_state = gather_stream_state()  # a collective: every rank joins
        if evaluate_now and is_main:
            val = evaluate(model, val_x, val_h, val_clean, val_sure)
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([step, f"{loss_sum / loss_count:.6f}", f"{scheduler.get_last_lr()[0]:.3e}",
                                        f"{val['fixed']:.5f}", f"{val['unfixed']:.5f}",
                                        f"{val.get('root_mse_fixed', float('nan')):.5f}",
                                        f"{val.get('sure_fixed', float('nan')):.5f}", f"{time.time() - start:.1f}"])
            loss_sum, loss_count = 0.0, 0
            bar.set_postfix(loss=f"{last_loss:.3f}", fixed=f"{val['fixed']:.4f}", unfixed=f"{val['unfixed']:.4f}",
                            bayes=f"{bayes_val:.4f}")
            # Select on what training may see: SURE for label-free runs, else validation RMSE.
            scores = {m: val[f"sure_{m}" if val_sure else m] for m in ("fixed", "unfixed")}
            choose_bn_mode = cfg.bn_mode is None
            score = min(scores.values()) if choose_bn_mode else scores[model.config.bn_mode]
            if score < best:
                best = score
                if choose_bn_mode:
                    model.config.bn_mode = min(scores, key=scores.get)
                save_checkpoint(best_path, checkpoint(val, stream_state))
        if save_now and is_main:
            save_checkpoint(last_path, checkpoint(val, stream_state))
    bar.close()
    if is_main:
        plot_curve(log_path, ckpt_dir / "train_curve.png", bayes_val)
        print(f"done: {step} steps in {time.time() - start:.1f} s; validation RMSE fixed {val.get('fixed', float('nan')):.4f}, "
              f"unfixed {val.get('unfixed', float('nan')):.4f} (Bayes {bayes_val:.4f}); best {best:.4f} -> {best_path}")
    if world_size > 1:
        dist.destroy_process_group()
    return val


def truncate_log(log_path: Path, step: int) -> None:
    """Drop log rows written after ``step`` by a run that was killed before its next checkpoint."""
    if not log_path.is_file():
        return
    with open(log_path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with open(log_path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def resume_config(ckpt_dir: Path) -> TrainConfig:
    """The saved config of the run in ``ckpt_dir``: a resumed run is the run it was."""
    path = ckpt_dir / "ckpt_last.pth"
    ckpt = load_checkpoint(path)
    missing = [k for k in ("config", "optim_state_dict", "sched_state_dict", "rng_state", "step") if k not in ckpt]
    if missing or "train" not in (ckpt["config"] or {}):
        raise InputError(f"{path}: not a resumable train.py checkpoint (no {(missing or ['config.train'])[0]!r})")
    saved = dict(ckpt["config"]["train"])
    return TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})


def plot_curve(log_path: Path, png_path: Path, bayes_rmse: float) -> None:
    """Training loss and validation RMSE (both BN modes) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    ax_loss.plot(steps, [float(r["loss"]) for r in rows], color="tab:gray")
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax_val.plot(steps, [float(r["val_rmse_fixed"]) for r in rows], label="fixed BN")
    ax_val.plot(steps, [float(r["val_rmse_unfixed"]) for r in rows], label="unfixed BN")
    sure = [float(r["val_sure_root_mse_fixed"]) for r in rows]
    if not all(math.isnan(v) for v in sure):  # label-free run: does SURE track the true error?
        ax_val.plot(steps, [float(r["val_root_mse_fixed"]) for r in rows], color="tab:green", ls=":",
                    label="√(mean MSE), fixed BN (uses labels)")
        ax_val.plot(steps, sure, color="tab:red", ls="-.", label="√(mean SURE), fixed BN (no labels)")
    ax_val.axhline(bayes_rmse, color="k", ls="--", lw=1, label=f"Bayes limit {bayes_rmse:.3f}")
    lo = bayes_rmse - 0.02
    ax_val.set_ylim(lo, max(lo + 0.3, min(2.5, max(float(r["val_rmse_unfixed"]) for r in rows) + 0.02)))
    ax_val.set(xlabel="step", ylabel="validation RMSE", title="Validation RMSE")
    ax_val.legend()
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)


def main() -> None:
    cfg, ckpt_dir, resume = get_args()
    if resume:
        device = cfg.device
        cfg = resume_config(ckpt_dir)
        cfg.device = device
        print(f"resuming {ckpt_dir / 'ckpt_last.pth'} with its saved config", file=sys.stderr)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train(cfg, ckpt_dir, resume)


if __name__ == "__main__":
    run_cli(main, "train.py")

"""Blind denoising study: every model against both Bayes oracles, σ = 0.25 .. 8.

    python scripts/blind_study.py                      # 2000 held-out signals per σ (seed 2026)
    python scripts/blind_study.py --n 500 --output runs/blind_study.md

For each σ the held-out draw is ``deepdenoise1d.synthesis.benchmark_signals(seed, n, σ)``. Rows:
the σ-aware Bayes posterior mean (told σ), the blind oracle (σ marginalised over the
training range 0.5..5, ``deepdenoise1d.classical.bayes_blind_posterior_mean``), and each
checkpoint: supervised blind (``ckpt/ckpt_blind.pth``), label-free blind
(``ckpt/ckpt_blind_sure.pth``) and label-free at σ = 3 (``ckpt/ckpt_sure.pth``). RMSE is the
mean over signals of each signal's RMSE; the ratios divide by the oracle's RMSE on the same
signals. σ = 0.25, 6 and 8 lie outside the blind models' training range. A missing
checkpoint is reported and skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from deepdenoise1d.budget import check_memory
from deepdenoise1d.classical import bayes_blind_posterior_mean, bayes_posterior_mean
from deepdenoise1d.cli import add_overwrite_arg, output_file
from deepdenoise1d.errors import run_cli
from deepdenoise1d.safewrite import write_policy
from deepdenoise1d.metrics import rmse
from deepdenoise1d.synthesis import BLIND_SIGMA_RANGE, DEFAULT_SEED, SIGNAL_LENGTH, benchmark_signals

REPO = Path(__file__).resolve().parent.parent
SIGMAS = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 8.0)
# Memory per sample of the --n signals of one σ (one σ at a time): the draw (clean, noisy, float64), a network's
# input copy and output, and the working set of a Bayes oracle, the largest step (bayes_posterior_mean 522 and
# bayes_blind_posterior_mean 539 bytes per sample, measured).
ORACLE_WORK_BYTES_PER_SAMPLE = 560
STUDY_BYTES_PER_SAMPLE = 8 * (2 + 2) + ORACLE_WORK_BYTES_PER_SAMPLE
MODELS = {  # label -> default checkpoint
    "supervised blind": REPO / "ckpt" / "ckpt_blind.pth",
    "label-free blind": REPO / "ckpt" / "ckpt_blind_sure.pth",
    "label-free σ=3": REPO / "ckpt" / "ckpt_sure.pth",
}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="held-out signals per σ (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the held-out draw (default %(default)s)")
    p.add_argument("--sigma", type=float, nargs="+", default=list(SIGMAS), help="noise levels (default: %(default)s)")
    p.add_argument("--blind", type=Path, default=MODELS["supervised blind"], help="supervised blind checkpoint")
    p.add_argument("--blind-sure", type=Path, default=MODELS["label-free blind"], help="label-free blind checkpoint")
    p.add_argument("--sure", type=Path, default=MODELS["label-free σ=3"], help="label-free σ = 3 checkpoint")
    p.add_argument("--n-grid", type=int, default=96, help="σ grid of the blind oracle (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--output", type=output_file, default=None, help="also write the table (Markdown) and a .json beside it")
    add_overwrite_arg(p)
    a = p.parse_args(argv)
    if a.n < 1 or a.n_grid < 1 or a.threads < 1 or any(not np.isfinite(s) or s <= 0 for s in a.sigma):
        p.error("--n, --n-grid, --threads and every --sigma must be positive")
    return a


def check_budget(a: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, an --n whose signals cannot be scored in memory."""
    check_memory(a.n * SIGNAL_LENGTH * STUDY_BYTES_PER_SAMPLE, f"--n {a.n} signals per σ", "use a smaller --n")


def load_network(path: Path):
    """(model in eval mode, checkpoint dict)."""
    from Pytorch_V1.checkpoint import load_model

    return load_model(path, "cpu")


def run_network(model, noisy: np.ndarray) -> np.ndarray:
    """Denoise with the model's recorded BN mode (fixed for every shipped blind/SURE model)."""
    from Pytorch_V1.inference import denoise

    return denoise(model, noisy)


def training_summary(ckpt: dict) -> str:
    """Steps, batch, lr, loss and σ of a train.py checkpoint, as recorded in it."""
    train = (ckpt.get("config") or {}).get("train") or {}
    keys = ("loss", "sigma", "steps", "batch_size", "lr", "weight_by", "weight_by_sigma", "sure_epsilon", "sure_probes",
            "sure_central", "sigma_estimate", "seed", "ema", "init")
    shown = {k: train[k] for k in keys if k in train and not (k in ("ema", "init") and not train[k])}  # only when used
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "no training config recorded"


def study(sigmas, n: int, seed: int, models: dict, n_grid: int) -> list[dict]:
    """One dict per σ: oracle RMSEs and, per model, RMSE and its ratio to both oracles."""
    rows = []
    for sigma in sigmas:
        clean, noisy = benchmark_signals(seed, n, sigma)
        aware = float(rmse(bayes_posterior_mean(noisy, sigma), clean).mean())
        blind = float(rmse(bayes_blind_posterior_mean(noisy, BLIND_SIGMA_RANGE, n_grid), clean).mean())
        row = {"sigma": sigma, "bayes": aware, "blind_oracle": blind}
        for label, model in models.items():
            value = float(rmse(run_network(model, noisy), clean).mean())
            row[label] = {"rmse": value, "vs_bayes": value / aware, "vs_blind_oracle": value / blind}
        rows.append(row)
        print(f"σ={sigma:g} done", file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], labels: list[str], n: int, seed: int) -> str:
    head = "| σ | Bayes (σ told) | blind oracle | " + " | ".join(
        f"{label}: RMSE, ×Bayes, ×blind oracle" for label in labels) + " |"
    lines = [f"Held-out: {n} signals per σ, seed {seed}; blind oracle prior σ ∈ {BLIND_SIGMA_RANGE}.", "",
             head, "|" + "---|" * (3 + len(labels))]
    for r in rows:
        flag = "" if BLIND_SIGMA_RANGE[0] <= r["sigma"] <= BLIND_SIGMA_RANGE[1] else " (out of range)"
        cells = [f"{r[l]['rmse']:.4f}, {r[l]['vs_bayes']:.4f}, {r[l]['vs_blind_oracle']:.4f}" for l in labels]
        lines.append(f"| {r['sigma']:g}{flag} | {r['bayes']:.4f} | {r['blind_oracle']:.4f} "
                     f"({r['blind_oracle'] / r['bayes']:.4f}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    a = get_args(argv)
    check_budget(a)
    with write_policy(overwrite=a.overwrite):  # every write below: deepdenoise1d.safewrite's policy
        produce(a)


def produce(a: argparse.Namespace) -> None:
    """Evaluate every model at every σ; print the table and write the files --output names."""
    import torch

    torch.set_num_threads(a.threads)
    reads = [path for path in (a.blind, a.blind_sure, a.sure) if path.is_file()]
    if a.output is not None:  # refuse an output that is one of the checkpoints before the work, not after
        from deepdenoise1d.safewrite import guard_output

        guard_output(a.output, reads, kind="text")
        guard_output(a.output.with_suffix(".json"), reads, kind="json")
    models, lines = {}, []
    for label, path in (("supervised blind", a.blind), ("label-free blind", a.blind_sure), ("label-free σ=3", a.sure)):
        if not path.is_file():
            print(f"blind_study.py: {label}: no checkpoint at {path}, skipped", file=sys.stderr)
            continue
        models[label], ckpt = load_network(path)
        lines.append(f"- {label}: `{path}` ({training_summary(ckpt)})")
    rows = study(a.sigma, a.n, a.seed, models, a.n_grid)
    text = markdown(rows, list(models), a.n, a.seed) + "\n" + "\n".join(lines) + "\n"
    print(text)
    if a.output is not None:
        from deepdenoise1d.safewrite import atomic_write

        atomic_write(a.output, lambda f: f.write(text.encode()), reads=reads)
        atomic_write(a.output.with_suffix(".json"), lambda f: f.write(json.dumps(rows, indent=1).encode()), reads=reads)


if __name__ == "__main__":
    run_cli(main, "blind_study.py")

"""Adapting a network to each record without labels: the table, and the gain against the record's length.

    python scripts/adapt_study.py --suite tuning --flags "--adapt biases --lr 1e-3"   # choose the recipe here
    python scripts/adapt_study.py --suite field --output runs/adapt/field.md
    python scripts/adapt_study.py --suite lengths --output runs/adapt/lengths.md --figure runs/adapt/gain.png

Per record, the user's command ``train.py --data REC --init START --loss sure [--flags]`` adapts START
(default ``ckpt/ckpt_universal.pth``) in its own run folder under ``--work``; then the start and the
adapted model denoise the whole record (PyTorch, blended windows, what ``test.py --method net`` writes)
and are scored against the clean signal, which the adaptation never sees. Also: the held-out SURE of the
start and of the returned model (the run's step-0 row and its best), the best classical peer with its
best parameter in hindsight (as in ``field_table.py``), and the run's steps and seconds.

Suites:

- ``tuning``: one record of 8192 samples per family of the broad prior (seed 4242, apart from every
  training and validation seed), σ = std / 4. The recipe (``--adapt``, ``--lr``, ...) is chosen on
  these: the field's records are the exam, never a tuning set.
- ``field``: the field table's records, the Donoho–Johnstone signals at n = 2048 and 8192 and the ECG,
  at rsnr 7 and 3 (``field_table.make_records``, the same noise).
- ``lengths``: the four Donoho–Johnstone signals at n = 2048 .. 32768, rsnr 3: the gain against length.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from field_table import make_records, peers  # noqa: E402

from deepdenoise1d.broad_prior import FAMILIES, draw_noisy  # noqa: E402
from deepdenoise1d.cli import add_overwrite_arg  # noqa: E402
from deepdenoise1d.errors import InputError, run_cli  # noqa: E402
from deepdenoise1d.safewrite import atomic_write, guard_output, write_policy  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SUITES = ("tuning", "field", "lengths")
TUNING_SEED, TUNING_LENGTH, TUNING_SNR = 4242, 8192, 4.0
LENGTHS = (2048, 4096, 8192, 16384, 32768)
LONG = 8192  # the targets are on records at least this long
SAME = 1e-4  # a ratio within this of 1 is the start itself (the record's scale leaves float32 rounding)


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="adapt_study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=SUITES, default="field", help="which records (default field)")
    p.add_argument("--start", type=Path, default=REPO / "ckpt" / "ckpt_universal.pth", help="the model to adapt")
    p.add_argument("--flags", default="", help="more train.py flags, one string (e.g. \"--adapt biases --lr 1e-3\")")
    p.add_argument("--records", nargs="+", metavar="NAME", help="only these records")
    p.add_argument("--work", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE.md", help="also write the table and FILE.json")
    p.add_argument("--figure", type=Path, default=None, metavar="PNG", help="the adapted ÷ start ratio against length")
    add_overwrite_arg(p)
    return p.parse_args(argv)


def suite_records(suite: str) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{name: (clean, noisy, σ)}`` of a suite."""
    if suite == "field":
        return make_records([2048, 8192], [7.0, 3.0], seed=2026)
    if suite == "lengths":
        return {name: v for name, v in make_records(list(LENGTHS), [3.0], seed=2026).items() if not name.startswith("ecg")}
    records = {}
    for i, family in enumerate(FAMILIES):
        clean, noisy, sigma, _ = draw_noisy(np.random.default_rng([TUNING_SEED, i]), TUNING_LENGTH,
                                            (TUNING_SNR, TUNING_SNR), families=[family])
        records[family] = (clean, noisy, sigma)
    return records


def rmse(estimate: np.ndarray, clean: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(estimate, dtype=np.float64) - clean) ** 2)))


def held_out_sure(log: Path, step: int) -> tuple[float, float]:
    """Signed √(mean SURE) on the run's held-out windows of the start (step 0) and of the returned model (``step``)."""
    with open(log, newline="") as f:
        rows = {int(r["step"]): float(r["val_sure_root_mse_fixed"]) for r in csv.DictReader(f)}
    return rows[0], rows[step]


def adapt(noisy: np.ndarray, run: Path, start: Path, flags: list[str]) -> tuple[Path, float, str]:
    """Run the user's adaptation command on ``noisy``; (its ckpt_best.pth, seconds, its last stderr line)."""
    record = run.with_suffix(".npy")
    np.save(record, noisy)
    command = [sys.executable, str(REPO / "Pytorch_V1" / "train.py"), "--data", str(record), "--init", str(start),
               "--loss", "sure", "--run-dir", str(run), *flags]
    begin = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - begin
    if done.returncode != 0:
        raise InputError(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    notes = [line for line in done.stderr.splitlines() if line.startswith("train.py:")]
    return run / "ckpt_best.pth", seconds, notes[-1] if notes else ""


def study(args: argparse.Namespace, work: Path) -> list[dict]:
    from Pytorch_V1.checkpoint import load_model
    from Pytorch_V1.inference import denoise

    records = suite_records(args.suite)
    if args.records:
        unknown = sorted(set(args.records) - set(records))
        if unknown:
            raise InputError(f"unknown record(s) {', '.join(unknown)}; choose from {', '.join(records)}")
        records = {k: v for k, v in records.items() if k in args.records}
    start_model, _ = load_model(args.start)
    flags = shlex.split(args.flags)
    rows = []
    for name, (clean, noisy, sigma) in records.items():
        best_path, seconds, last_note = adapt(noisy, work / name, args.start, flags)
        adapted, ckpt = load_model(best_path)
        start_out, adapted_out = denoise(start_model, noisy), denoise(adapted, noisy)
        best_step = int(ckpt["best_step"])
        sure_start, sure_best = held_out_sure(work / name / "train_log.csv", best_step)
        scores, _ = peers(clean, noisy, sigma) if args.suite != "tuning" else ({}, None)
        peer = min(scores, key=lambda c: scores[c][0]) if scores else None
        row = {"record": name, "samples": int(clean.size), "sigma": sigma, "noisy": rmse(noisy, clean),
               "start": rmse(start_out, clean), "adapted": rmse(adapted_out, clean),
               "peer": scores[peer][0] if peer else math.nan, "peer_name": peer or "",
               "sure_start": sure_start, "sure_best": sure_best, "best_step": best_step,
               "steps": int(ckpt["config"]["train"]["steps"]), "seconds": seconds, "kept_start": best_step == 0}
        row["ratio"] = row["adapted"] / row["start"]
        rows.append(row)
        print(f"{name}: start {row['start']:.4g}, adapted {row['adapted']:.4g} ({row['ratio']:.3f}×), "
              f"peer {row['peer']:.4g}; held-out √SURE {sure_start:.4g} -> {sure_best:.4g} (step {best_step}); "
              f"{seconds:.0f} s", file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict], label: str) -> str:
    """Geometric mean and range of adapted ÷ start; how often worse; wins over the peer where there is one."""
    if not rows:
        return f"{label}: no records"
    ratios = np.array([r["ratio"] for r in rows])
    text = (f"{label}: adapted ÷ start geometric mean {np.exp(np.log(ratios).mean()):.3f} "
            f"(range {ratios.min():.3f}–{ratios.max():.3f}); worse than the start on "
            f"{int((ratios > 1 + SAME).sum())} of {len(rows)}; the start kept on {sum(r['kept_start'] for r in rows)}")
    if all(math.isfinite(r["peer"]) for r in rows):
        text += (f"; beats the best peer on {sum(r['adapted'] < r['peer'] for r in rows)} of {len(rows)} "
                 f"(the start on {sum(r['start'] < r['peer'] for r in rows)})")
    return text


def table(rows: list[dict]) -> list[str]:
    lines = ["| record | samples | noisy | best peer (hindsight) | start | adapted | ÷ start | ÷ peer "
             "| held-out √SURE: start → returned (step) | seconds |", "|---|" + "---|" * 9]
    for r in rows:
        peer = f"{r['peer']:.4g} ({r['peer_name']})" if r["peer_name"] else "—"
        vs_peer = f"{r['adapted'] / r['peer']:.3f}" if r["peer_name"] else "—"
        lines.append(f"| {r['record']} | {r['samples']} | {r['noisy']:.4g} | {peer} | {r['start']:.4g} | "
                     f"{r['adapted']:.4g} | {r['ratio']:.3f} | {vs_peer} | {r['sure_start']:.4g} → "
                     f"{r['sure_best']:.4g} ({r['best_step']}) | {r['seconds']:.0f} |")
    return lines


def gain_figure(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    from deepdenoise1d.plots import save_figure

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for signal in sorted({r["record"].split("_")[0] for r in rows}):
        mine = sorted((r for r in rows if r["record"].startswith(signal + "_")), key=lambda r: r["samples"])
        ax.plot([r["samples"] for r in mine], [r["ratio"] for r in mine], "o-", label=signal)
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("record length (samples)")
    ax.set_ylabel("RMSE adapted ÷ start")
    ax.set_title("Label-free adaptation of the network to its record, rsnr 3")
    ax.legend()
    save_figure(fig, path)


def main(argv=None) -> list[dict]:
    args = get_args(argv)
    with write_policy(overwrite=args.overwrite):
        for path in (args.output, args.output.with_suffix(".json") if args.output else None, args.figure):
            if path is not None:
                guard_output(path)
        with tempfile.TemporaryDirectory(prefix="adapt_study-") as scratch:
            work = args.work if args.work is not None else Path(scratch)
            work.mkdir(parents=True, exist_ok=True)
            rows = study(args, work)
        lines = table(rows) + ["", summary(rows, "all records"),
                               summary([r for r in rows if r["samples"] >= LONG], f"records of ≥ {LONG} samples")]
        print("\n".join(lines))
        if args.output is not None:
            head = [f"# Adaptation: suite {args.suite}, start {args.start.name}, flags {args.flags or '(none)'}", ""]
            atomic_write(args.output, lambda f: f.write(("\n".join(head + lines) + "\n").encode()))
            atomic_write(args.output.with_suffix(".json"), lambda f: f.write(json.dumps(rows, indent=2).encode()))
        if args.figure is not None:
            gain_figure(rows, args.figure)
    return rows


if __name__ == "__main__":
    run_cli(main, "adapt_study.py")

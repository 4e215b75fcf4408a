"""Does training stall when another process shares the cores? Quiet vs loaded, per thread count.

    python scripts/bench_threads.py                  # 200 steps, threads 1 and 2
    python scripts/bench_threads.py --steps 100 --threads 1 2 4

For each thread count, times ``--steps`` training steps of the shipped recipe
(batch 256, synthetic σ = 3) twice in the same run: on the machine as it is
("quiet"), then with one CPU-bound process (``while True: pass``) beside it
("loaded"). Each timing is a fresh ``train.py`` run, so torch's thread pools
start clean. Prints a table and the loaded/quiet ratio; the goal for the
default (1 thread, :mod:`deepdenoise1d.threads`) is a ratio of at most 1.5.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "Pytorch_V1" / "train.py"
BURNER = "while True: pass"


def get_args(argv=None) -> argparse.Namespace:
    from deepdenoise1d.cli import positive_int

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=200, help="training steps per timing (default 200)")
    p.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2], help="thread counts to time (default 1 2)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="signals per step (default 256)")
    return p.parse_args(argv)


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any run, a --batch-size whose training step cannot fit in memory: train.py's
    own estimate (``Pytorch_V1.data.check_training_memory``, signals of the benchmark's length), which would
    otherwise stop every timed train.py run."""
    from Pytorch_V1.data import check_training_memory
    from deepdenoise1d.synthesis import SIGNAL_LENGTH

    check_training_memory(args.batch_size, SIGNAL_LENGTH)


def timed_run(steps: int, threads: int, batch_size: int, loaded: bool) -> float:
    """Seconds of ``steps`` steps of a fresh ``train.py`` run (its log's ``seconds``: the loop alone, no setup
    and no validation), optionally with a CPU burner beside it."""
    burner = subprocess.Popen([sys.executable, "-c", BURNER]) if loaded else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            subprocess.run([sys.executable, str(TRAIN), "--steps", str(steps), "--batch-size", str(batch_size),
                            "--threads", str(threads), "--eval-every", str(steps), "--save-every", str(steps),
                            "--device", "cpu", "--run-dir", str(run)], cwd=REPO, capture_output=True, text=True,
                           check=True)
            with open(run / "train_log.csv", newline="") as f:
                return float(list(csv.DictReader(f))[-1]["seconds"])
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()


def main(argv=None) -> None:
    args = get_args(argv)
    check_budget(args)
    from deepdenoise1d.threads import available_cores, resolve_threads

    print(f"{args.steps} training steps, batch {args.batch_size}; {available_cores()} cores available; "
          f"default threads {resolve_threads()}")
    print(f"{'threads':>7}  {'quiet s':>8}  {'loaded s':>8}  {'loaded/quiet':>12}")
    for threads in args.threads:
        quiet = timed_run(args.steps, threads, args.batch_size, loaded=False)
        loaded = timed_run(args.steps, threads, args.batch_size, loaded=True)
        print(f"{threads:>7}  {quiet:8.2f}  {loaded:8.2f}  {loaded / quiet:12.2f}", flush=True)


if __name__ == "__main__":
    from deepdenoise1d.errors import run_cli

    run_cli(main, "bench_threads.py")

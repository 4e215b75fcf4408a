"""Does training stall when another process shares the cores? Quiet vs loaded, per thread count.

    python scripts/bench_threads.py                  # 200 steps, threads 1 and 2
    python scripts/bench_threads.py --steps 100 --threads 1 2 4

For each thread count, times ``--steps`` training steps of the shipped recipe
(batch 256, synthetic σ = 3) twice in the same run: on the machine as it is
("quiet"), then with one CPU-bound process (``while True: pass``) beside it
("loaded"). Each timing runs in a fresh interpreter so torch's thread pools
start clean. Prints a table and the loaded/quiet ratio; the goal for the
default (1 thread, :mod:`deepdenoise1d.threads`) is a ratio of at most 1.5.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BURNER = "while True: pass"


def get_args(argv=None) -> argparse.Namespace:
    from deepdenoise1d.cli import positive_int

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=200, help="training steps per timing (default 200)")
    p.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2], help="thread counts to time (default 1 2)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="signals per step (default 256)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one timing, in this process
    return p.parse_args(argv)


def time_steps(steps: int, threads: int, batch_size: int) -> float:
    """Seconds for ``steps`` optimiser steps of train.py's loop body (after one warm-up step)."""
    import torch

    from Pytorch_V1 import train as t
    from Pytorch_V1.inference import configure_threads

    configure_threads(threads)
    cfg = t.TrainConfig(steps=steps + 1, batch_size=batch_size, device="cpu")
    workers, device = t.Workers(), torch.device("cpu")
    cfg, stream, _ = t.load_data(cfg, workers, device)
    trainer = t.build_trainer(cfg, workers, device)
    t.train_step(cfg, trainer, t.get_batch(stream, trainer), 0)  # first-call allocations
    start = time.perf_counter()
    for step in range(1, steps + 1):
        t.train_step(cfg, trainer, t.get_batch(stream, trainer), step)
    return time.perf_counter() - start


def timed_run(steps: int, threads: int, batch_size: int, loaded: bool) -> float:
    """One timing in a fresh interpreter, optionally with a CPU burner beside it."""
    burner = subprocess.Popen([sys.executable, "-c", BURNER]) if loaded else None
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps), "--threads", str(threads),
                              "--batch-size", str(batch_size)], cwd=REPO, capture_output=True, text=True, check=True)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = get_args(argv)
    if args.worker:
        print(f"{time_steps(args.steps, args.threads[0], args.batch_size):.3f}")
        return
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

"""`make demo`: the whole pipeline, stage by stage, with the time each took.

1. train.py with its defaults into runs/demo/ (the shipped ckpt/ is never overwritten)
2. test.py: TestK figures and the σ = 3 table, PyTorch side
3. pth2h5.py: runs/demo/ckpt_best.pth -> runs/demo/ckpt_best.h5
4. Numpy_test.py: the same figures and table from the HDF5 weights, NumPy side
5. results.py: every shipped checkpoint and this run on held-out signals -> demo/RESULTS.md

Figures land in demo/. Each stage is the command a user would type; a failing
stage stops the demo with its exit code.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=REPO / "runs" / "demo", help="where the fresh run goes")
    p.add_argument("--fig-dir", type=Path, default=REPO / "demo", help="where figures and RESULTS.md go")
    p.add_argument("--n", type=int, default=2000, help="signals in the σ = 3 tables (default %(default)s)")
    p.add_argument("--seed", type=int, default=2026, help="seed of the held-out signals (default %(default)s)")
    p.add_argument("--skip-train", action="store_true", help="reuse the run already in --run-dir")
    return p.parse_args(argv)


def stage(name: str, cmd: list, timings: dict) -> None:
    print(f"\n=== {name}: {' '.join(str(c) for c in cmd)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], cwd=REPO)
    timings[name] = time.perf_counter() - start
    if result.returncode != 0:
        print(f"demo: stage '{name}' failed with exit code {result.returncode}", file=sys.stderr)
        sys.exit(result.returncode)
    print(f"=== {name}: {timings[name]:.1f} s", flush=True)


def main() -> None:
    args = get_args()
    timings: dict[str, float] = {}
    run, figs = args.run_dir, args.fig_dir
    pth, h5 = run / "ckpt_best.pth", run / "ckpt_best.h5"
    if not args.skip_train:
        if run.exists():
            shutil.rmtree(run)  # a demo run starts fresh; the shipped ckpt/ is untouched
        stage("train", [PY, "Pytorch_V1/train.py", "--ckpt-dir", run], timings)
    figs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "train_curve.png", figs / "train_curve.png")
    stage("test.py figures", [PY, "Pytorch_V1/test.py", "--checkpoint", pth, "--fig-dir", figs], timings)
    stage("test.py table", [PY, "Pytorch_V1/test.py", "--checkpoint", pth, "--random", args.n, "--seed", args.seed,
                            "--json", figs / "results_torch.json", "--plots", "--fig-dir", figs], timings)
    stage("pth2h5", [PY, "pth2h5.py", pth, h5], timings)
    stage("Numpy_test.py figures", [PY, "Numpy_V2/Numpy_test.py", "--weights", h5, "--fig-dir", figs], timings)
    stage("Numpy_test.py table", [PY, "Numpy_V2/Numpy_test.py", "--weights", h5, "--random", args.n, "--seed",
                                  args.seed, "--json", figs / "results_numpy.json", "--plots", "--fig-dir", figs], timings)
    stage("results", [PY, "scripts/results.py", "--n", args.n, "--seed", args.seed, "--extra", f"demo_run={pth}",
                      "--out", figs / "RESULTS.md", "--fig-dir", figs], timings)

    install = REPO / ".venv" / ".install_seconds"
    print("\n=== summary")
    if install.is_file():
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(install.stat().st_mtime))
        print(f"{'install (last, ' + when + ')':<28} {float(install.read_text()):7.1f} s")
    for name, seconds in timings.items():
        print(f"{name:<28} {seconds:7.1f} s")
    print(f"{'total (after install)':<28} {sum(timings.values()):7.1f} s")
    print(f"\nfigures and RESULTS.md in {figs}; this run in {run}.")
    print(f"to promote this run: cp {pth} ckpt/ckpt_best.pth && python pth2h5.py")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

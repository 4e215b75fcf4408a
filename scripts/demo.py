"""`make demo`: the whole pipeline, stage by stage, with the time each took.

1. train.py with its defaults into RUN/train/ (the shipped ckpt/ is never touched)
2. test.py: TestK figures and the σ = 3 table, PyTorch side
3. pth2h5.py: RUN/train/ckpt_best.pth -> RUN/train/ckpt_best.h5
4. Numpy_test.py: the same figures and table from the HDF5 weights, NumPy side
5. backend_figures.py: each picture once, both backends in it (TestK.png, methods.png, filter.png)
6. results.py: every shipped checkpoint and this run on held-out signals -> RUN/RESULTS.md
7. explain_results.py: this run read as a filter through its exact Jacobian -> RUN/filter/

Everything goes under RUN (--run-dir, default runs/demo/, ignored by git): after
`make demo`, `git status --porcelain` is empty. `make demo-refresh` (--refresh) then
copies the committed set (RESULTS.md, the both-backend figures, the tables, the
training curve) into demo/; nothing else ever writes there.

RUN is demo.py's own: it is created with a marker file (.demo-run), and a later demo
replaces it only when that marker is there. Any other existing, non-empty folder is
refused, never deleted. Each stage is the command a user would type; a failing stage
stops the demo with one line.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from deepdenoise1d import cli
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.safewrite import BOOKKEEPING, atomic_write, write_policy

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MARKER = ".demo-run"
MARKER_TEXT = "made by scripts/demo.py; a later demo may delete this folder\n"
# What earlier demos put in demo/ and the both-backend figures replace (one picture, one file).
SUPERSEDED = tuple(f"{stem}_{side}.png" for stem in (*(f"Test{k}" for k in range(6)), "methods", "filter")
                   for side in ("torch", "numpy"))
FILTER_FIGURES = tuple(f"filter_{name}.png" for name in
                       ("adaptive_filters", "jacobian_heatmaps", "offset", "feature_maps", "effective_dimension"))
COMMITTED = ("RESULTS.md", "FILTER.md", "blind_curve.png", "train_curve.png", "results_torch.json", "results_numpy.json",
             *(f"Test{k}.png" for k in range(6)), "methods.png", "filter.png", *FILTER_FIGURES)


def get_args(argv=None):
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=REPO / "runs" / "demo", metavar="DIR",
                   help="where the whole demo goes (default runs/demo/ in the repository; ignored by git)")
    cli.add_n_arg(p, 2000)
    cli.add_seed_arg(p, what="the held-out signals")
    p.add_argument("--skip-train", action="store_true", help="reuse the training run already in --run-dir")
    p.add_argument("--refresh", action="store_true",
                   help="then copy the committed set into --demo-dir (what `make demo-refresh` does)")
    p.add_argument("--demo-dir", type=Path, default=REPO / "demo", metavar="DIR",
                   help="the committed folder --refresh writes (default demo/ in the repository)")
    return p.parse_args(argv)


def claim_run_dir(run: Path, keep: bool) -> None:
    """Make ``run`` this demo's folder: new, empty, or an earlier demo's (marker present).

    An earlier demo's folder is emptied unless ``keep`` (--skip-train); any other
    non-empty folder is refused and left as it is.
    """
    if run.exists() and not run.is_dir():
        raise InputError(f"{run}: exists and is not a folder")
    ours = (run / MARKER).is_file()
    if run.exists() and any(run.iterdir()) and not ours:
        raise InputError(f"{run}: exists and was not made by demo.py (no {MARKER} marker); "
                         "pass another --run-dir, or remove it yourself")
    if keep:
        if not ours:
            raise InputError(f"{run}: no earlier demo run to reuse (--skip-train)")
        return
    if ours:
        shutil.rmtree(run)  # only a folder this script created and marked
    run.mkdir(parents=True, exist_ok=True)
    atomic_write(run / MARKER, lambda f: f.write(MARKER_TEXT.encode()))


def stage(name: str, cmd: list, timings: dict, log: Path) -> None:
    """Run one stage as a user would type it; a failure is one line (exit 2 under run_cli)."""
    print(f"\n=== {name}: {' '.join(str(c) for c in cmd)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], cwd=REPO)
    timings[name] = time.perf_counter() - start
    if result.returncode != 0:
        raise InputError(f"stage '{name}' failed with exit code {result.returncode} (its output is above; "
                         f"this run is in {log.parent})")
    print(f"=== {name}: {timings[name]:.1f} s", flush=True)


def stages(args, run: Path, timings: dict) -> None:
    """Every stage after training, each writing under ``run``."""
    train, figs = run / "train", run / "figures"
    pth, h5, log = train / "ckpt_best.pth", train / "ckpt_best.h5", run / "timings.md"
    table = ["--random", "--n", args.n, "--seed", args.seed, "--plots"]
    stage("test.py figures", [PY, "Pytorch_V1/test.py", "--weights", pth, "--fig-dir", figs / "torch"], timings, log)
    stage("test.py table", [PY, "Pytorch_V1/test.py", "--weights", pth, *table, "--json", run / "results_torch.json",
                            "--fig-dir", figs / "torch"], timings, log)
    stage("pth2h5", [PY, "pth2h5.py", pth, h5], timings, log)
    stage("Numpy_test.py figures", [PY, "Numpy_V2/Numpy_test.py", "--weights", h5, "--fig-dir", figs / "numpy"],
          timings, log)
    stage("Numpy_test.py table", [PY, "Numpy_V2/Numpy_test.py", "--weights", h5, *table, "--json",
                                  run / "results_numpy.json", "--fig-dir", figs / "numpy"], timings, log)
    stage("figures, both backends", [PY, "scripts/backend_figures.py", "--weights", pth, h5, "--n", args.n,
                                     "--seed", args.seed, "--fig-dir", figs], timings, log)
    stage("results", [PY, "scripts/results.py", "--n", args.n, "--seed", args.seed, "--extra", f"demo_run={pth}",
                      "--output", run / "RESULTS.md", "--fig-dir", run], timings, log)
    stage("network as a filter", [PY, "scripts/explain_results.py", "--weights", pth, "--n", args.n, "--seed", args.seed,
                                  "--output", run / "filter"], timings, log)


def write_timings(run: Path, timings: dict) -> str:
    """The timing summary, printed and written to RUN/timings.md (never into demo/)."""
    lines = ["| stage | seconds |", "|---|---|"]
    install = REPO / ".venv" / ".install_seconds"
    if install.is_file():
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(install.stat().st_mtime))
        lines.append(f"| install (last, {when}) | {float(install.read_text()):.1f} |")
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()]
    lines.append(f"| total (after install) | {sum(timings.values()):.1f} |")
    text = "\n".join(lines) + "\n"
    atomic_write(run / "timings.md", lambda f: f.write(text.encode()))
    return text


def committed_sources(run: Path) -> dict[str, Path]:
    """Name in demo/ -> the file of this run it comes from."""
    figs = run / "figures"
    sources = {"RESULTS.md": run / "RESULTS.md", "blind_curve.png": run / "blind_curve.png",
               "train_curve.png": run / "train" / "train_curve.png",
               "results_torch.json": run / "results_torch.json", "results_numpy.json": run / "results_numpy.json"}
    sources["FILTER.md"] = run / "filter" / "explain_results.md"
    sources.update({name: run / "filter" / name for name in FILTER_FIGURES})
    sources.update({name: figs / name for name in COMMITTED if name.endswith(".png") and name not in sources})
    return sources


def refresh(run: Path, demo_dir: Path) -> list[str]:
    """Copy the committed set into ``demo_dir``; return the byte-identical pairs there (should be none).

    Files of the old per-backend layout (:data:`SUPERSEDED`) are named with the command that
    removes them from the repository, not deleted here.
    """
    # --refresh is the flag that lets this copy into the tracked demo/ and replace its files (same kind only).
    with write_policy(overwrite=True, tracked_ok=True):
        for name, source in committed_sources(run).items():
            if source.is_file():
                data = source.read_bytes()
                atomic_write(demo_dir / name, lambda f, data=data: f.write(data), reads=(source,))
                print(f"wrote {demo_dir / name}")
    stale = [demo_dir / name for name in SUPERSEDED if (demo_dir / name).is_file()]
    if stale:
        print("superseded by the both-backend figures; remove with: git rm " + " ".join(str(p) for p in stale))
    digests: dict[str, str] = {}
    same = []
    for path in sorted(p for p in demo_dir.iterdir() if p.is_file() and p.name not in SUPERSEDED + BOOKKEEPING):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in digests:
            same.append(f"{digests[digest]} = {path.name}")
        digests.setdefault(digest, path.name)
    return same


def main(argv=None) -> None:
    args = get_args(argv)
    run = args.run_dir
    claim_run_dir(run, keep=args.skip_train)
    timings: dict[str, float] = {}
    if not args.skip_train:
        stage("train", [PY, "Pytorch_V1/train.py", "--run-dir", run / "train"], timings, run / "timings.md")
    stages(args, run, timings)
    print("\n=== summary\n" + write_timings(run, timings))
    print(f"this run, its figures and tables: {run}")
    if args.refresh:
        same = refresh(run, args.demo_dir)
        if same:
            raise InputError(f"{args.demo_dir}: byte-identical files: {'; '.join(same)}")
    else:
        print("to refresh the committed demo/ from it: make demo-refresh")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_cli(main, "demo.py")

"""The alternatives to batch norm, trained with one budget and the same seeds, and scored on two benchmarks.

    python scripts/norm_study.py train --root runs/norms --worker 0/2 &   # two queues, one core each
    python scripts/norm_study.py train --root runs/norms --worker 1/2 &
    python scripts/norm_study.py report --root runs/norms --output runs/norms/norm_study.md

``train`` runs ``Pytorch_V1/train.py`` once per benchmark, norm and seed into ``ROOT/BENCHMARK/NORM_sSEED``
(resumed where a run folder holds an unfinished run; skipped where it is finished):

- ``spikes``: the benchmark's prior at σ = 3, train.py's default recipe;
- ``blind``: the same recipe over σ ∈ [0.5, 5] with Bayes-weighted losses;
- ``broad``: the broad prior of 1-D signals (``ckpt_universal``'s families), a small U-Net (width 4, depth 5)
  for 3000 steps of 32 crops: a short budget, the same for every norm.

``report`` scores each run's ``ckpt_best.pth`` (in NumPy, the mode it records): ``spikes`` on 2000 held-out
signals at σ = 3 against the Bayes posterior mean; ``blind`` at σ = 1..5 (2000 signals each, the Bayes
estimator told σ); ``broad`` on the field table's records (the Donoho–Johnstone signals at 2048 and 8192
samples and the ECG, rsnr 7 and 3; never trained or selected on) against the best classical peer with its
best parameter in hindsight. Each row is a norm: the median over seeds, then every seed's value. It also
reads every model as a filter on spikes (exact Jacobians, ``Numpy_V2.jacobian``): the degrees of freedom
tr J, the diagonal fraction of J, and the share of activations switched off.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepdenoise1d.cli import positive_int  # noqa: E402
from deepdenoise1d.errors import InputError, run_cli  # noqa: E402
from deepdenoise1d.safewrite import atomic_write, guard_output, write_policy  # noqa: E402

STUDIED_NORMS = ("bn", "none", "shrink", "sigma_shrink", "bias_free", "frn")
SEEDS = (1, 2, 3)  # the report takes every finished run among them
BENCHMARKS = {
    "spikes": ["--steps", "3000"],
    "blind": ["--steps", "3000", "--sigma", "0.5:5", "--weight-by", "bayes"],
    "broad": ["--train-prior", "broad", "--width", "4", "--depth", "5", "--loss", "rmse", "--steps", "3000",
              "--batch-size", "32", "--lr", "1e-3"],
}
HELD_OUT_SEED, HELD_OUT_N = 2026, 2000
BLIND_SIGMAS = (1.0, 2.0, 3.0, 4.0, 5.0)
FILTER_SIGMAS = (1.0, 3.0, 5.0)  # where each blind model is read as a filter
FILTER_N = 64
TAPS_HALF_WIDTH = 10  # the local filter: samples within this lag of the output sample


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="norm_study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train every (benchmark, norm, seed) not yet finished")
    t.add_argument("--root", type=Path, required=True, help="folder of the run folders")
    t.add_argument("--worker", type=worker_share, default=(0, 1), metavar="K/N",
                   help="this process takes every N-th run from the K-th, so N processes share the runs (default 0/1)")
    t.add_argument("--benchmarks", nargs="+", choices=tuple(BENCHMARKS), default=list(BENCHMARKS))
    t.add_argument("--norms", nargs="+", default=list(STUDIED_NORMS))
    t.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    t.add_argument("--steps", type=positive_int, default=None,
                   help="replace every benchmark's budget (a quick check of the study)")
    r = sub.add_parser("report", help="score the finished runs and write the table")
    r.add_argument("--root", type=Path, required=True)
    r.add_argument("--output", type=Path, required=True, metavar="FILE.md", help="the table; its numbers go beside it as .json")
    r.add_argument("--fig-dir", type=Path, default=None,
                   help="also draw, per norm, its blind model's adaptive filters at σ = 1, 3, 5, and tr J against σ for all")
    r.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    return p.parse_args(argv)


def worker_share(text: str) -> tuple[int, int]:
    """argparse type: ``K/N`` with 0 <= K < N."""
    parts = text.split("/")
    if len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts) and 0 <= int(parts[0]) < int(parts[1]):
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")


# ---------------------------------------------------------------- train


def run_folder(root: Path, benchmark: str, norm: str, seed: int) -> Path:
    return root / benchmark / f"{norm}_s{seed}"


def finished(folder: Path) -> bool:
    """A run this script trained to its end: it writes the seconds it took only then."""
    return (folder / "study_seconds.txt").is_file() and (folder / "ckpt_best.pth").is_file()


def flags_of(benchmark: str, steps: int | None) -> list[str]:
    """train.py's flags for ``benchmark``; ``steps`` replaces its budget (a quick check of the study itself)."""
    flags = list(BENCHMARKS[benchmark])
    if steps is not None:
        flags[flags.index("--steps") + 1] = str(steps)
    return flags


def train(args) -> None:
    k, n = args.worker
    jobs = [(b, norm, seed) for b in args.benchmarks for norm in args.norms for seed in args.seeds]
    for index, (benchmark, norm, seed) in enumerate(jobs):
        if index % n != k:
            continue
        folder = run_folder(args.root, benchmark, norm, seed)
        if finished(folder):
            continue
        command = [sys.executable, str(REPO / "Pytorch_V1" / "train.py"), "--run-dir", str(folder)]
        if folder.exists():
            if not started_here(folder):  # never resume (or touch) a run this study did not start
                print(f"{folder}: exists and was not started by norm_study.py; skipped", flush=True)
                continue
            command.append("--resume")
        else:
            atomic_write(started_marker(folder), lambda f: f.write(b"started by norm_study.py\n"))
            command += ["--norm", norm, "--seed", str(seed), *flags_of(benchmark, args.steps)]
        start = time.time()
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"{folder}: train.py failed: {last}", flush=True)
            continue
        atomic_write(folder / "study_seconds.txt", lambda f: f.write(f"{time.time() - start:.0f}\n".encode()))
        print(f"{folder}: {time.time() - start:.0f} s", flush=True)


def started_marker(folder: Path) -> Path:
    """Beside a run folder (train.py wants its folder to itself): this study started that run."""
    return folder.with_name(f".{folder.name}.norm_study")


def started_here(folder: Path) -> bool:
    """A run this study started (its marker), or one it finished before markers existed (its seconds)."""
    return started_marker(folder).is_file() or (folder / "study_seconds.txt").is_file()


# ---------------------------------------------------------------- report


def load(folder: Path):
    """A run's ``ckpt_best.pth`` as the NumPy model (the backend whose exact Jacobians read it as a filter)."""
    from Numpy_V2.model import NumpyICNN
    from Pytorch_V1.checkpoint import load_model

    model, _ = load_model(folder / "ckpt_best.pth")
    return NumpyICNN({k: v.numpy() for k, v in model.state_dict().items()}, model.config)


def spike_ratio(net, sigma: float) -> float:
    """RMSE of ``net`` over the Bayes posterior mean's on the held-out spike signals at ``sigma``."""
    from deepdenoise1d.classical import bayes_posterior_mean
    from deepdenoise1d.synthesis import benchmark_signals

    clean, noisy = benchmark_signals(HELD_OUT_SEED, HELD_OUT_N, sigma)
    out = net.denoise(noisy)
    bayes = bayes_posterior_mean(noisy, sigma)
    return float(np.sqrt(np.mean((out - clean) ** 2)) / np.sqrt(np.mean((bayes - clean) ** 2)))


def field_peers(root: Path) -> dict:
    """The field table's records and each one's best classical peer (hindsight), computed once into ROOT."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("field_table", REPO / "scripts" / "field_table.py")
    field = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(field)
    records = field.make_records([2048, 8192], [7.0, 3.0], field.DEFAULT_SEED)
    cache = root / "field_peers.json"
    if cache.is_file():
        best = json.loads(cache.read_text())
    else:
        best = {name: min(v[0] for v in field.peers(clean, noisy, sigma)[0].values())
                for name, (clean, noisy, sigma) in records.items()}
        atomic_write(cache, lambda f: f.write(json.dumps(best, indent=2).encode()))
    return records, best


def field_ratio(net, records, best) -> tuple[float, int, list[float]]:
    """Geometric mean of RMSE / best peer over the field records, wins, and the per-record ratios."""
    ratios = []
    for name, (clean, noisy, _) in records.items():
        out = net.denoise(noisy[None])[0]
        ratios.append(float(np.sqrt(np.mean((out - clean) ** 2)) / best[name]))
    return float(np.exp(np.mean(np.log(ratios)))), int(sum(r < 1 for r in ratios)), ratios


def filter_reading(net, sigma: float) -> dict:
    """Degrees of freedom tr J / L, diagonal fraction of J, and the share of activations switched off, on spikes."""
    from Numpy_V2.jacobian import filter_numbers, jacobians
    from deepdenoise1d.synthesis import benchmark_signals

    _, noisy = benchmark_signals(HELD_OUT_SEED + 1, FILTER_N, sigma)
    result = jacobians(net, noisy)
    numbers = filter_numbers(result["jacobian"], result["output"], result["offset"])
    counts = [0, 0]  # activations switched off, all activations
    parts = _parts(net)
    for part in parts:
        part.bn1, part.bn2 = (_Counted(bn, part.relu, counts) for bn in (part.bn1, part.bn2))
    try:
        net.denoise(noisy)
    finally:
        for part in parts:
            part.bn1, part.bn2 = part.bn1.inner, part.bn2.inner
    return {"dof": float(np.mean(numbers["trace_per_sample"])),
            "diagonal": float(np.mean(numbers["diagonal_fraction"])),
            "taps": effective_taps(result["jacobian"]),
            "off": counts[0] / max(counts[1], 1)}


def effective_taps(jacobian: np.ndarray, half_width: int = TAPS_HALF_WIDTH) -> float:
    """The local filters' effective length: per row of J, (Σ|J_ij|)² / Σ J_ij² over |j − i| ≤ ``half_width``
    (1 for a single tap, k for k equal taps), the median over rows with any weight there.

    Local: an offset-free model's rows also hold the column of the median sample (J·1 = 1), wherever it is.
    """
    n, length, _ = jacobian.shape
    i, j = np.indices((length, length))
    near = np.abs(i - j) <= half_width
    local = np.where(near[None], jacobian, 0.0)
    l1, l2 = np.abs(local).sum(axis=2), np.square(local).sum(axis=2)
    live = l2 > 0
    return float(np.median(l1[live] ** 2 / l2[live])) if live.any() else float("nan")


class _Counted:
    """A normalisation step that counts the activations it leaves switched off: where the nonlinearity after it
    (ReLU, or the step's own threshold or floor) is flat, so the sample passes nothing on to the next layer's filter."""

    def __init__(self, inner, relu: bool, counts: list[int]):
        self.inner, self.relu, self.counts = inner, relu, counts

    def __call__(self, x, mode):
        z = self.inner(x, mode)
        if self.relu:
            off = z <= 0
        elif hasattr(self.inner, "tau"):  # a thresholded linear unit: at its floor τ
            off = z == self.inner.tau.astype(z.dtype)[None, :, None]
        else:  # a two-sided soft threshold: inside its dead zone
            off = z == 0
        self.counts[0] += int(np.count_nonzero(off))
        self.counts[1] += z.size
        return z


def _parts(net) -> list:
    """Every DoubleConv of a NumPy model, its own (``icnn.spec``'s encoder and decoder parts) and the prior
    branch's; a Down or an Up holds its DoubleConv as ``.conv``."""
    from icnn.spec import decoder_parts, encoder_parts
    from Numpy_V2.model import DoubleConv

    parts = [getattr(net, name) for name, _, _ in (*encoder_parts(net.config), *decoder_parts(net.config))]
    if net.wienernet is not None:
        parts += [getattr(net.wienernet, name) for name in net.wienernet.part_names]
    return [part if isinstance(part, DoubleConv) else part.conv for part in parts]


def figures(root: Path, fig_dir: Path) -> list[Path]:
    """Per norm, its first seed's blind model read as a filter at σ = 1, 3, 5 on one spike signal; and tr J
    against σ for every norm and the Bayes posterior mean."""
    from deepdenoise1d.filter_plots import effective_dimension_figure, filters_by_sigma_figure, pick_rows
    from deepdenoise1d.plots import save_figure
    from deepdenoise1d.synthesis import benchmark_signals, clean_spikes
    from Numpy_V2.jacobian import bayes_jacobian_diagonal, filter_numbers, jacobians

    rng = np.random.default_rng(HELD_OUT_SEED + 2)
    clean = clean_spikes(rng, 1)[0]
    noise = rng.standard_normal(clean.shape)
    rows = pick_rows(clean)
    sweep = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
    curves, paths = {}, []
    for norm in STUDIED_NORMS:
        folder = run_folder(root, "blind", norm, SEEDS[0])
        if not finished(folder):
            continue
        net = load(folder)
        panels = []
        for sigma in FILTER_SIGMAS:
            result = jacobians(net, (clean + sigma * noise)[None])
            panels.append((sigma, clean, clean + sigma * noise, result["output"][0], result["jacobian"][0]))
        fig = filters_by_sigma_figure(panels, rows, title=f"norm {norm}: the blind model's adaptive filters on one signal")
        paths.append(save_figure(fig, fig_dir / f"filters_{norm}.png"))
        curves[norm] = {"trace": [], "frobenius_squared": []}
        for sigma in sweep:
            _, y = benchmark_signals(HELD_OUT_SEED + 1, FILTER_N, sigma)
            result = jacobians(net, y)
            numbers = filter_numbers(result["jacobian"], result["output"], result["offset"])
            curves[norm]["trace"].append(numbers["trace_per_sample"] * y.shape[1])
            curves[norm]["frobenius_squared"].append(numbers["frobenius_squared"])
    if curves:
        bayes = {"trace": [], "frobenius_squared": []}
        for sigma in sweep:
            _, y = benchmark_signals(HELD_OUT_SEED + 1, FILTER_N, sigma)
            _, slope = bayes_jacobian_diagonal(y, sigma)
            bayes["trace"].append(slope.sum(axis=1))
            bayes["frobenius_squared"].append(np.sum(slope**2, axis=1))
        curves["Bayes posterior mean"] = bayes
        fig = effective_dimension_figure(np.array(sweep), {k: {m: np.array(v) for m, v in c.items()} for k, c in curves.items()},
                                         clean.size)
        paths.append(save_figure(fig, fig_dir / "trace_by_sigma.png"))
    return paths


def seconds_of(folder: Path) -> float:
    path = folder / "study_seconds.txt"
    return float(path.read_text()) if path.is_file() else float("nan")


def summary(values: list[float]) -> str:
    """The median over seeds and every seed's value: a run that failed to train stands out instead of
    hiding in a mean."""
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "–"
    return f"**{float(np.median(values)):.4f}** ({', '.join(f'{v:.4f}' for v in values)})"


def report(args) -> None:
    guard_output(args.output)
    guard_output(args.output.with_suffix(".json"))
    numbers: dict = {}
    records = best = None
    for benchmark in BENCHMARKS:
        for norm in STUDIED_NORMS:
            for seed in SEEDS:
                folder = run_folder(args.root, benchmark, norm, seed)
                if not finished(folder):
                    continue
                net = load(folder)
                row = {"seconds": seconds_of(folder), "bn_mode": net.config.bn_mode}
                if benchmark == "spikes":
                    row["ratio_sigma3"] = spike_ratio(net, 3.0)
                    row["filter_sigma3"] = filter_reading(net, 3.0)
                elif benchmark == "blind":
                    row["ratios"] = {f"{s:g}": spike_ratio(net, s) for s in BLIND_SIGMAS}
                    row["geomean"] = float(np.exp(np.mean(np.log(list(row["ratios"].values())))))
                    row["filter"] = {f"{s:g}": filter_reading(net, s) for s in FILTER_SIGMAS}
                else:
                    if records is None:
                        records, best = field_peers(args.root)
                    row["geomean"], row["wins"], row["ratios"] = field_ratio(net, records, best)
                numbers.setdefault(benchmark, {}).setdefault(norm, {})[str(seed)] = row
                print(f"{benchmark} {norm} seed {seed}: {json.dumps({k: v for k, v in row.items() if k in ('ratio_sigma3', 'geomean', 'wins')})}",
                      file=sys.stderr, flush=True)
    lines = table(numbers)
    if args.fig_dir is not None:
        args.fig_dir.mkdir(parents=True, exist_ok=True)
        lines += ["", *(f"![{path.stem}]({path.name})" for path in figures(args.root, args.fig_dir))]
    atomic_write(args.output, lambda f: f.write(("\n".join(lines) + "\n").encode()))
    atomic_write(args.output.with_suffix(".json"), lambda f: f.write(json.dumps(numbers, indent=2).encode()))
    print("\n".join(lines))
    print(f"wrote {args.output} and {args.output.with_suffix('.json')}", file=sys.stderr)


def table(numbers: dict) -> list[str]:
    lines = ["Median over seeds (each seed's value in brackets).", "",
             "| norm | spikes σ = 3, × Bayes | blind σ = 1..5, × Bayes (geometric mean) | broad prior, × best peer "
             "(geometric mean of 18 field records) | field wins | training s (spikes / blind / broad) |",
             "|---|---|---|---|---|---|"]
    for norm in STUDIED_NORMS:
        spikes = numbers.get("spikes", {}).get(norm, {})
        blind = numbers.get("blind", {}).get(norm, {})
        broad = numbers.get("broad", {}).get(norm, {})
        secs = " / ".join(f"{np.nanmean([r['seconds'] for r in runs.values()]):.0f}" if runs else "–"
                          for runs in (spikes, blind, broad))
        lines.append(f"| {norm} | {summary([r['ratio_sigma3'] for r in spikes.values()])} "
                     f"| {summary([r['geomean'] for r in blind.values()])} "
                     f"| {summary([r['geomean'] for r in broad.values()])} "
                     f"| {', '.join(str(r['wins']) for r in broad.values()) or '–'} | {secs} |")
    lines += ["", "Filter reading on spikes (exact Jacobians, 64 signals; median over seeds): degrees of freedom "
              "tr J / L, diagonal fraction of J, effective taps of the local filter (rows of J within ±10 samples: "
              "(Σ|J_ij|)² / Σ J_ij², median over rows), share of activations switched off (ReLU at 0, inside a "
              "soft threshold's dead zone, or at a TLU's floor).", "",
              "| norm | σ = 3 model: tr J / L, diagonal, taps, off | blind at σ = 1 | blind at σ = 3 | blind at σ = 5 |",
              "|---|---|---|---|---|"]
    for norm in STUDIED_NORMS:
        cells = []
        spikes = numbers.get("spikes", {}).get(norm, {})
        blind = numbers.get("blind", {}).get(norm, {})
        readings = [[r["filter_sigma3"] for r in spikes.values()]] + [[r["filter"][f"{s:g}"] for r in blind.values()]
                                                                      for s in FILTER_SIGMAS]
        for group in readings:
            if not group:
                cells.append("–")
                continue
            cells.append(", ".join(f"{np.median([g[k] for g in group]):{fmt}}"
                                   for k, fmt in (("dof", ".3f"), ("diagonal", ".2f"), ("taps", ".2f"), ("off", ".0%"))))
        lines.append(f"| {norm} | " + " | ".join(cells) + " |")
    lines += ["", "Blind models per σ (× Bayes told σ, median over seeds):", "",
              "| norm | " + " | ".join(f"σ = {s:g}" for s in BLIND_SIGMAS) + " |", "|---" * (len(BLIND_SIGMAS) + 1) + "|"]
    for norm in STUDIED_NORMS:
        blind = numbers.get("blind", {}).get(norm, {})
        if blind:
            lines.append(f"| {norm} | " + " | ".join(f"{np.median([r['ratios'][f'{s:g}'] for r in blind.values()]):.4f}"
                                                     for s in BLIND_SIGMAS) + " |")
    return lines


def main(argv=None) -> None:
    args = get_args(argv)
    if args.command == "train":
        unknown = sorted(set(args.norms) - set(STUDIED_NORMS))
        if unknown:
            raise InputError(f"unknown norm(s) {', '.join(unknown)}; choose from {', '.join(STUDIED_NORMS)}")
        train(args)
    else:
        if args.output.suffix.lower() != ".md":
            raise InputError("--output must end in .md (its numbers go beside it as .json)")
        with write_policy(overwrite=args.overwrite):
            report(args)


if __name__ == "__main__":
    run_cli(main, "norm_study.py")

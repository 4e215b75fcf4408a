"""The field table: the field's own test signals, every classical peer at its best, the networks, and
what the default command writes.

    python scripts/field_table.py --output runs/field/field_table.md --fig-dir runs/field

Records (clean signals generated here, nothing downloaded): ``pywt.data.demo_signal`` Bumps, Blocks,
HeaviSine and Doppler at each of ``--sizes`` and ``pywt.data.ecg()`` (1024 samples), each with one draw of
white Gaussian noise of σ = std(clean) / rsnr for each of ``--rsnr`` (seeded). These signals are the
exam: nothing in this project is trained or selected on them.

``--suite outside`` scores records unlike every family of the broad prior the networks were trained on
(:func:`outside_records`): noise on a constant, a random walk, a white (structureless) signal, a sine
near the Nyquist frequency, the alternating sequence ±1, exponential growth over three decades, a jump
of 10⁶ σ, a CO2-like monthly series (trend and seasons) and a sunspot-like yearly series.

Columns (true RMSE against the clean signal):
- ``noisy``: the input itself;
- peers with their best parameter in hindsight (chosen with the clean signal, as no user can):
  Wiener over odd windows 3..33, exact TV over a 1/8-octave grid of weights, translation-invariant
  sym8 soft shrinkage with each level's BayesShrink or SURE threshold times a factor 0.25..2.8
  (quarter octaves), and the decimated wavelets (db4/sym8, BayesShrink/VisuShrink), each row's best;
- the same peers as a user runs them, parameters from the record: ``tv`` (weight by SURE) and
  ``wavelet_ti_sym8_{bayes,sure}``;
- each of ``--models`` (shipped NumPy weights, fixed BN, blended windows), and below the table its ratio
  to the best peer (geometric mean, wins) and how often it is worse than the noisy input;
- the default command, ``Numpy_test.py --input REC --output OUT`` run as a user would (σ estimated, no
  ``--method``): what it chose, its RMSE, its gap to the best of the candidates it scored, and its
  ratio to the noisy input.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from deepdenoise1d import classical, scoreboard, swt, tv
from deepdenoise1d.budget import check_memory
from deepdenoise1d.cli import add_overwrite_arg, positive_int, rsnr_float
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.frontend import missing_weights_message
from deepdenoise1d.safewrite import atomic_write, guard_output, write_policy
from deepdenoise1d.synthesis import DEFAULT_SEED
from icnn.spec import inference_modes, min_length

DEMOS = ("Bumps", "Blocks", "HeaviSine", "Doppler")
WIENER_GRID = tuple(range(3, 35, 2))
TV_GRID = tuple(2.0 ** (k / 8) for k in range(-24, 57))  # 0.125σ .. 128σ
TI_GRID = tuple(np.round(2.0 ** np.arange(-2, 1.51, 0.25), 4))  # × each level's BayesShrink or SURE threshold
GAP_LIMIT = 0.03
SUITES = ("field", "outside")
OUTSIDE_LENGTH = 4096
# Memory of the field suite, per sample: every record is made at once (the four demo signals at each of --sizes,
# clean once and noisy once per --rsnr value, float64); then one record at a time is scored. Scoring holds the
# default command's --method auto (its scoreboard: 311 MB measured at 10^6 samples), which outweighs the peers'
# grids (130 bytes per sample at most, the translation-invariant wavelets), and beside it float64 outputs of the
# record's length: one per network, the best peer's, and the default command's written and read back.
SCORE_BYTES_PER_SAMPLE = 330
OUTPUT_COPIES = 3


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="field_table.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=SUITES, default="field",
                   help="field: the Donoho–Johnstone signals and the ECG (default); outside: records unlike every "
                   "family of the broad prior (--sizes and --rsnr apply to the field suite)")
    p.add_argument("--sizes", type=positive_int, nargs="+", default=[2048, 8192], metavar="N",
                   help="lengths of the Donoho–Johnstone signals (default: 2048 8192)")
    p.add_argument("--rsnr", type=rsnr_float, nargs="+", default=[7.0, 3.0], metavar="R",
                   help="σ = std(clean) / R, one record per value (default: 7 3)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the noise (default %(default)s)")
    p.add_argument("--models", nargs="*", default=["ckpt_universal", "ckpt_blind", "ckpt_best"], metavar="NAME",
                   help="shipped NumPy weights (ckpt/NAME.h5) or paths of .h5 files, fixed BN "
                   "(default: ckpt_universal ckpt_blind ckpt_best)")
    p.add_argument("--records", nargs="+", default=None, metavar="NAME", help="only these (e.g. Blocks_2048_r7 ecg_r3)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE.md",
                   help="also write the table (Markdown) and FILE.json beside it")
    p.add_argument("--fig-dir", type=Path, default=None, help="one figure per record: clean, noisy, best peer, default command")
    add_overwrite_arg(p)
    args = p.parse_args(argv)
    if args.output is not None and args.output.suffix.lower() != ".md":
        p.error("--output must end in .md (its numbers go beside it as .json)")
    return args


def field_bytes(sizes, n_rsnr: int, n_models: int) -> int:
    """Estimated peak memory of the field suite (:data:`SCORE_BYTES_PER_SAMPLE`)."""
    return (8 * len(DEMOS) * sum(sizes) * (1 + n_rsnr)
            + max(sizes) * (SCORE_BYTES_PER_SAMPLE + 8 * (n_models + OUTPUT_COPIES)))


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, --sizes (and --rsnr values) whose records cannot be made and scored
    in memory; the outside suite's records have a fixed length."""
    if args.suite != "field":
        return
    check_memory(field_bytes(args.sizes, len(args.rsnr), len(args.models)),
                 f"--sizes up to {max(args.sizes)} samples ({len(args.sizes)} size(s) × {len(DEMOS)} signals × "
                 f"{len(args.rsnr)} --rsnr value(s))", "use smaller --sizes or fewer --rsnr values")


def make_records(sizes, rsnrs, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{name: (clean, noisy, σ)}`` for every signal, size and rsnr."""
    import pywt

    cleans = {f"{name}_{n}": np.asarray(pywt.data.demo_signal(name, n), dtype=np.float64) for n in sizes for name in DEMOS}
    cleans["ecg"] = np.asarray(pywt.data.ecg(), dtype=np.float64)
    records = {}
    for r_index, rsnr in enumerate(rsnrs):
        for c_index, (name, clean) in enumerate(cleans.items()):
            sigma = float(clean.std() / rsnr)
            noise = np.random.default_rng([seed, c_index, r_index]).standard_normal(clean.shape)
            records[f"{name}_r{rsnr:g}"] = (clean, clean + sigma * noise, sigma)
    return records


def outside_records(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{name: (clean, noisy, σ)}`` for signals unlike every family of the broad prior (module docstring).

    σ = std(clean) / 3 (``_r3``), except the constant and the jump, whose σ is 1.
    """
    n = OUTSIDE_LENGTH
    t = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng([seed, 7])
    month = np.arange(800, dtype=np.float64)  # CO2-like: a monthly series of 66 years
    year = np.arange(300, dtype=np.float64)  # sunspot-like: yearly, cycles of 9..13 years of random height
    cycle_start = np.cumsum(rng.uniform(9, 13, 40))
    phase = np.searchsorted(cycle_start, year)
    within = (year - np.concatenate([[0.0], cycle_start])[phase]) / np.diff(np.concatenate([[0.0], cycle_start]))[phase]
    cleans = {
        "constant": (np.full(n, 5.0), 1.0),
        "random_walk": (np.cumsum(rng.standard_normal(n)), None),
        "white": (rng.standard_normal(n), None),
        "near_nyquist_sine": (np.sin(2 * np.pi * 0.43 * t), None),
        "alternating": (np.where(t % 2 == 0, 1.0, -1.0), None),
        "exp_growth": (np.exp(t * np.log(1e3) / n), None),
        "jump_1e6": (1e6 * (t >= n // 2) + 5 * np.sin(2 * np.pi * t / 500), 1.0),
        "co2_like": (315 + 0.07 * month + 1e-4 * month**2 + 3 * np.sin(2 * np.pi * month / 12)
                     + 0.8 * np.sin(4 * np.pi * month / 12 + 1), None),
        "sunspot_like": (rng.uniform(40, 200, 41)[phase] * np.sin(np.pi * within) ** 2 * np.exp(-within), None),
    }
    records = {}
    for index, (name, (clean, sigma)) in enumerate(cleans.items()):
        sigma = float(clean.std() / 3) if sigma is None else sigma
        noise = np.random.default_rng([seed, 100 + index]).standard_normal(clean.shape)
        records[name if name in ("constant", "jump_1e6") else f"{name}_r3"] = (clean, clean + sigma * noise, sigma)
    return records


def rmse(estimate: np.ndarray, clean: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(estimate, dtype=np.float64).reshape(clean.shape) - clean) ** 2)))


def best_of(grid, estimate, clean) -> tuple[float, object]:
    """The lowest true RMSE over ``grid`` and the parameter that gives it."""
    scores = {g: rmse(estimate(g), clean) for g in grid}
    best = min(scores, key=scores.get)
    return scores[best], best


def peers(clean: np.ndarray, noisy: np.ndarray, sigma: float) -> tuple[dict[str, tuple[float, str]], np.ndarray]:
    """``{column: (true RMSE, parameter)}`` for the hindsight-best and the as-run classical peers, and the
    output of the best of them."""
    out, outputs = {}, {}
    r, w = best_of(WIENER_GRID, lambda w: classical.wiener(noisy, w), clean)
    out["wiener (best window)"] = (r, f"window {w}")
    outputs["wiener (best window)"] = lambda: classical.wiener(noisy, w)
    r, g = best_of(TV_GRID, lambda g: tv.denoise_tv(noisy, g * sigma), clean)
    out["TV (best weight)"] = (r, f"{g:.3g}σ")
    outputs["TV (best weight)"] = lambda: tv.denoise_tv(noisy, g * sigma)
    ti = {(method, k): rmse(swt.denoise_swt(noisy, sigma, "sym8", method, threshold_scale=k), clean)
          for method in swt.METHODS for k in TI_GRID}
    method, k = min(ti, key=ti.get)
    out["TI sym8 (best threshold)"] = (ti[method, k], f"{k:g}× {method}")
    outputs["TI sym8 (best threshold)"] = lambda: swt.denoise_swt(noisy, sigma, "sym8", method, threshold_scale=k)
    dwt = {f"wavelet_{w}_{s}": (rmse(classical.wavelet(noisy, sigma, m, w), clean), w, m)
           for w in scoreboard.WAVELETS for s, m in scoreboard.SHRINKS.items()}
    _, wavelet, shrink = dwt[dwt_best := min(dwt, key=lambda key: dwt[key][0])]
    out["decimated wavelet (best)"] = (dwt[dwt_best][0], dwt_best)
    outputs["decimated wavelet (best)"] = lambda: classical.wavelet(noisy, sigma, shrink, wavelet)
    as_run = scoreboard.classical_candidates(sigma)
    for name in (scoreboard.TV, "wavelet_ti_sym8_bayes", "wavelet_ti_sym8_sure"):
        out[name] = (rmse(as_run[name](noisy), clean), "σ given")
        outputs[name] = partial(as_run[name], noisy)
    best = min(out, key=lambda column: out[column][0])
    return out, np.asarray(outputs[best](), dtype=np.float64).reshape(clean.shape)


def model_summary(rows: list[dict], model: str) -> str:
    """One line: the model's RMSE over the best peer's (in hindsight) per record, and against the noisy input."""
    ratios = np.array([r["networks"][model] / min(v[0] for v in r["peers"].values()) for r in rows])
    worse = sum(r["networks"][model] > r["noisy"] for r in rows)
    return (f"`{model}` ÷ best peer: geometric mean {np.exp(np.mean(np.log(ratios))):.3f}, range "
            f"{ratios.min():.3f}–{ratios.max():.3f}; beats it on {int((ratios < 1).sum())} of {len(rows)} records; "
            f"worse than the noisy input on {worse}")


def default_command(noisy: np.ndarray, clean: np.ndarray, work: Path, name: str, net) -> dict:
    """Run ``Numpy_test.py --input REC --output OUT --json J`` (no --method) and score what it wrote; ``net`` is the
    default weights' NumPy model, to rebuild the candidates it scored."""
    from Numpy_V2 import Numpy_test

    rec, out, report = work / f"{name}.npy", work / f"{name}_out.npy", work / f"{name}.json"
    np.save(rec, noisy)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        Numpy_test.main(["--input", str(rec), "--output", str(out), "--json", str(report)])
    seconds = time.perf_counter() - start
    summary = json.loads(report.read_text())
    denoised = np.load(out)
    record = noisy[None]
    truths = {k: rmse(f(record), clean) for k, f in _candidates_of(summary, net).items()}
    best = min(truths, key=truths.get)
    return {"chosen": summary["chosen"], "rmse": rmse(denoised, clean), "sigma": summary["sigma"],
            "best_candidate": best, "best_rmse": truths[best], "seconds": seconds, "output": denoised}


def _candidates_of(summary: dict, net) -> dict:
    """The candidates the default command scored, rebuilt at its σ (``net``: the default weights' model)."""
    out = scoreboard.classical_candidates(summary["sigma"])
    out.update(scoreboard.network_candidates(lambda y, mode: net.denoise(y, bn_mode=mode), inference_modes(net.config),
                                             train_length=net.config.train_length))
    return {k: v for k, v in out.items() if k in summary["estimates"]}


def table(rows: list[dict], model_names) -> list[str]:
    peer_cols = list(rows[0]["peers"])
    head = ["record", "σ", "noisy", *peer_cols, *[f"`{m}`" for m in model_names], "default command: choice",
            "its RMSE", "gap to best candidate", "÷ noisy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        best_peer = min(v[0] for v in r["peers"].values())
        cells = [r["record"], f"{r['sigma']:.4g}", f"{r['noisy']:.4g}"]
        for col in peer_cols:
            value, param = r["peers"][col]
            text = f"{value:.4g} ({param})" if "best" in col else f"{value:.4g}"
            cells.append(f"**{text}**" if value == best_peer else text)
        cells += [f"{r['networks'][m]:.4g}" for m in model_names]
        d = r["default"]
        cells += [d["chosen"], f"{d['rmse']:.4g}", f"{100 * d['gap']:.1f} %", f"{d['rmse'] / r['noisy']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def draw_figure(name: str, clean, noisy, row: dict, best_peer, model: str | None, model_output, path: Path) -> Path:
    """Clean, noisy, the best classical peer (in hindsight) and the first of ``--models``; the default command's
    choice in the title."""
    from matplotlib.figure import Figure

    from deepdenoise1d import plots

    fig = Figure(figsize=(12, 3.8))
    ax = fig.add_subplot()
    t = np.arange(clean.size)
    ax.plot(t, noisy, color="0.78", lw=0.5, label=f"noisy ({row['noisy']:.3g})")
    ax.plot(t, clean, color="black", lw=0.9, label="clean")
    column = min(row["peers"], key=lambda c: row["peers"][c][0])
    ax.plot(t, best_peer, color="tab:blue", lw=0.8, label=f"best peer: {column} ({row['peers'][column][0]:.3g})")
    if model is not None:
        ax.plot(t, model_output, color="tab:red", lw=0.8, label=f"{Path(model).stem} ({row['networks'][model]:.3g})")
    d = row["default"]
    ax.set_title(f"{name}: σ = {row['sigma']:.3g}; true RMSE in brackets; the default command chose {d['chosen']} "
                 f"({d['rmse']:.3g})")
    ax.set_xlabel("sample")
    ax.set_ylabel("amplitude")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return plots.save_figure(fig, path)


def main(argv=None) -> list[dict]:
    args = get_args(argv)
    check_budget(args)
    with write_policy(overwrite=args.overwrite):  # every write below: deepdenoise1d.safewrite's policy
        return produce(args)


def produce(args: argparse.Namespace) -> list[dict]:
    if args.output is not None:
        guard_output(args.output)
        guard_output(args.output.with_suffix(".json"))
    records = make_records(args.sizes, args.rsnr, args.seed) if args.suite == "field" else outside_records(args.seed)
    if args.records:
        unknown = sorted(set(args.records) - set(records))
        if unknown:
            raise InputError(f"unknown record(s) {', '.join(unknown)}; choose from {', '.join(records)}")
        records = {k: v for k, v in records.items() if k in args.records}
    from icnn.shipped import default_weights_for, weights_dir
    from Numpy_V2.model import load_h5

    models = {}
    for name in args.models:  # a shipped name, or the path of any .h5
        path = Path(name) if name.endswith(".h5") else weights_dir() / f"{name}.h5"
        if not path.is_file():
            raise InputError(missing_weights_message(path))
        models[path.stem if path.parent == weights_dir() else str(path)] = load_h5(path)
    default_net = load_h5(default_weights_for(".h5", record=True))  # what the default command's network candidates use
    shortest = max(min_length(net.config) for net in (*models.values(), default_net))
    if args.suite == "field" and min(args.sizes) < shortest:  # before any work: the networks take no shorter signal
        raise InputError(f"--sizes must be at least {shortest} (the networks' shortest signal)")
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="field_table-") as work:
        for name, (clean, noisy, sigma) in records.items():
            scores, best_peer = peers(clean, noisy, sigma)
            outputs = {m: net.denoise(noisy[None], bn_mode="fixed")[0] for m, net in models.items()}
            row = {"record": name, "sigma": sigma, "samples": clean.size, "noisy": rmse(noisy, clean),
                   "peers": scores, "networks": {m: rmse(out, clean) for m, out in outputs.items()},
                   "default": default_command(noisy, clean, Path(work), name, default_net)}
            d = row["default"]
            d["gap"] = d["rmse"] / d["best_rmse"] - 1
            rows.append(row)
            print(f"{name}: noisy {row['noisy']:.4g}, best peer {min(v[0] for v in row['peers'].values()):.4g}, "
                  f"default {d['chosen']} {d['rmse']:.4g} (gap {100 * d['gap']:.1f} %, {d['seconds']:.1f} s)",
                  file=sys.stderr, flush=True)
            if args.fig_dir is not None:
                first = next(iter(models), None)
                draw_figure(name, clean, noisy, row, best_peer, first, outputs.get(first),
                            args.fig_dir / f"{name}.png")
    seconds = time.perf_counter() - start
    lines = table(rows, list(models))
    within = sum(r["default"]["gap"] <= GAP_LIMIT for r in rows)
    worse = sum(r["default"]["rmse"] > r["noisy"] for r in rows)
    footer = [f"default command within {100 * GAP_LIMIT:g} % of its best candidate on {within} of {len(rows)} records; "
              f"worse than the noisy input on {worse}; {seconds:.0f} s in all", "",
              *(model_summary(rows, m) for m in models)]
    print("\n".join(lines + [""] + footer))
    if args.output is not None:
        text = "\n".join([f"# Field table (seed {args.seed})", "", *lines, "", *footer]) + "\n"
        for r in rows:
            r["default"].pop("output")
        atomic_write(args.output, lambda f: f.write(text.encode()))
        atomic_write(args.output.with_suffix(".json"), lambda f: f.write(json.dumps(rows, indent=2).encode()))
        print(f"wrote {args.output} and {args.output.with_suffix('.json')}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    run_cli(main, "field_table.py")

"""The label-free scoreboard against the truth: SURE's RMSE estimate vs the true RMSE of every candidate.

    python scripts/scoreboard_study.py --output runs/scoreboard.md --fig-dir runs/scoreboard
    python scripts/scoreboard_study.py --sizes 2048 --repeats 5 --models    # quick, classical only

Records (clean signals generated here, nothing downloaded): the synthetic spikes
(``deepdenoise1d.synthesis.benchmark_signals(--seed, rows)``, rows of 100 samples, σ = 3 as the
benchmark), ``pywt.data.demo_signal`` Bumps, Blocks, HeaviSine and Doppler at each of ``--sizes``, and
``pywt.data.ecg()`` (1024 samples); every record but the spikes gets Gaussian noise of
σ = std(clean) / ``--rsnr``. Candidates: ``deepdenoise1d.scoreboard.classical_candidates`` (σ given)
and each of ``--models`` (shipped NumPy weights) in both BN modes; records longer than a model's
training length go through its blended windows, as the front-ends' ``--input`` mode sends them.

Each record is drawn ``--repeats`` times with fresh noise (and fresh probes). The table of a record
gives, per candidate, the first draw's true RMSE and SURE estimate ± its standard error, then over
the draws: the mean true RMSE, the measured spread sd(estimate − truth) beside the rms of the
predicted standard errors, and the mean error in units of its own standard error (a bias test).
The summary gives the auto choice's gap to the best true RMSE. One figure per record (noisy, clean,
the chosen output of the first draw) goes into ``--fig-dir``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from deepdenoise1d import scoreboard
from deepdenoise1d.budget import check_memory
from deepdenoise1d.cli import markdown_file, positive_int, rsnr_float
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.frontend import missing_weights_message
from deepdenoise1d.safewrite import atomic_write, guard_output
from deepdenoise1d.synthesis import DEFAULT_SEED, SIGMA, benchmark_signals

DEMOS = ("Bumps", "Blocks", "HeaviSine", "Doppler")
SPIKE_ROWS = (20, 80)  # 2000 and 8000 samples, near the demo sizes
GAP_LIMIT = 0.03  # the auto choice must be within 3 % of the best true RMSE
NOISE_STREAM, PROBE_STREAM = 0, 1  # default_rng([seed, record, draw, stream])
# Memory, per sample of a record: every record is made at once (the four demo signals at each of --sizes,
# float64), then one record at a time is scored. Scoring holds the scoreboard's working set (the record and every
# candidate's probe outputs: 311 MB measured at 10^6 samples, as deepdenoise1d.frontend's --method auto counts
# it) and, per candidate, its output of the draw (float64), beside the draw and the first draw's two copies.
SCORE_BYTES_PER_SAMPLE = 330
RECORD_COPIES = 3  # the noisy draw, and the first draw's noisy record and chosen output


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scoreboard_study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=positive_int, nargs="+", default=[2048, 8192], metavar="N",
                   help="lengths of the pywt demo signals (default: 2048 8192)")
    p.add_argument("--repeats", type=positive_int, default=20, metavar="R",
                   help="noise draws per record (default %(default)s)")
    p.add_argument("--probes", type=positive_int, default=scoreboard.PROBES, metavar="K",
                   help="antithetic probe pairs per candidate, >= 2 (default %(default)s)")
    p.add_argument("--rsnr", type=rsnr_float, default=7.0, help="σ = std(clean) / RSNR (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of noise and probes (default %(default)s)")
    p.add_argument("--models", nargs="*", default=["ckpt_best", "ckpt_blind"], metavar="NAME",
                   help="shipped NumPy weights (ckpt/NAME.h5) to add, both BN modes (default: ckpt_best ckpt_blind; "
                   "none: give the flag alone)")
    p.add_argument("--records", nargs="+", default=None, metavar="NAME",
                   help="only these records (e.g. Bumps_2048 ecg spikes_20x100)")
    p.add_argument("--output", type=markdown_file, default=None, help="also write the tables (Markdown) and a .json beside it")
    p.add_argument("--fig-dir", type=Path, default=None, help="where the per-record figures go (default: none drawn)")
    args = p.parse_args(argv)
    if args.probes < 2:
        p.error("--probes must be >= 2")
    return args


def study_bytes(sizes, held: int) -> int:
    """Estimated peak memory of a study of the demo records at ``sizes``: the records themselves, and the scoring of
    the longest one with ``held`` float64 arrays of its length kept beside the scoreboard's working set."""
    return 8 * len(DEMOS) * sum(sizes) + max(sizes) * (SCORE_BYTES_PER_SAMPLE + 8 * held)


def check_sizes(sizes, held: int) -> None:
    """Refuse, in one line and before any work, ``--sizes`` whose records cannot be made and scored in memory."""
    check_memory(study_bytes(sizes, held), f"--sizes up to {max(sizes)} samples ({len(sizes)} size(s), "
                 f"{len(DEMOS)} signals each)", "use smaller --sizes")


def candidate_count(models) -> int:
    """How many candidates :func:`candidates_for` gives with ``models``: the classical ones, and each model in
    both BN modes."""
    from icnn.spec import BN_MODES

    return len(scoreboard.classical_candidates(1.0)) + len(BN_MODES) * len(models)


def check_budget(args: argparse.Namespace) -> None:
    """The study's memory (:func:`study_bytes`) against the budget, before any work."""
    check_sizes(args.sizes, candidate_count(args.models) + RECORD_COPIES)


def make_records(sizes, rsnr: float, seed: int) -> dict[str, tuple[np.ndarray, float]]:
    """``{name: (clean, σ)}``: spikes, the four demo signals at each size, and the ECG."""
    import pywt

    records = {}
    for rows in SPIKE_ROWS:
        records[f"spikes_{rows}x100"] = (benchmark_signals(seed, rows, SIGMA)[0], SIGMA)
    for n in sizes:
        for name in DEMOS:
            clean = np.asarray(pywt.data.demo_signal(name, n), dtype=np.float64)
            records[f"{name}_{n}"] = (clean, float(clean.std() / rsnr))
    ecg = np.asarray(pywt.data.ecg(), dtype=np.float64)
    records["ecg"] = (ecg, float(ecg.std() / rsnr))
    return records


def load_models(names) -> dict:
    """``{name: (denoise(noisy, bn_mode), train_length)}`` from the shipped NumPy weights."""
    from icnn.shipped import weights_dir
    from Numpy_V2.model import load_h5

    models = {}
    for name in names:
        path = weights_dir() / f"{name}.h5"
        if not path.is_file():
            raise InputError(missing_weights_message(path))
        net = load_h5(path)
        models[name] = (lambda noisy, mode, net=net: net.denoise(noisy, bn_mode=mode), net.config.train_length)
    return models


def candidates_for(sigma: float, models: dict) -> dict:
    """The classical candidates at σ, then each model in both BN modes (named MODEL_MODE), windowed as the
    front-ends' file mode does for records longer than its training length."""
    from icnn.spec import BN_MODES

    out = scoreboard.classical_candidates(sigma)
    for name, (denoise, train_length) in models.items():
        out.update(scoreboard.network_candidates(denoise, BN_MODES, prefix=name, train_length=train_length))
    return out


def true_rmse(f, y: np.ndarray, clean: np.ndarray) -> tuple[float, np.ndarray]:
    """RMSE of f(y) against the clean record over every sample, and f(y)."""
    out = np.asarray(f(y), dtype=np.float64).reshape(y.shape)
    return float(np.sqrt(np.mean((out - clean) ** 2))), out


def study_record(index: int, clean: np.ndarray, sigma: float, candidates: dict, repeats: int, probes: int,
                 seed: int) -> dict:
    """Every draw's estimates and true RMSEs of one record, the auto gaps, and the first draw's arrays."""
    start = time.perf_counter()
    draws = []
    first = None
    for r in range(repeats):
        y = clean + sigma * np.random.default_rng([seed, index, r, NOISE_STREAM]).standard_normal(clean.shape)
        ranking = scoreboard.rank(candidates, y, sigma, probes, seed=[seed, index, r, PROBE_STREAM])
        truths, outputs = {}, {}
        for name, f in candidates.items():
            truths[name], outputs[name] = true_rmse(f, y, clean)
        best = min(truths, key=truths.get)
        draws.append({"chosen": ranking.chosen, "best": best, "gap": truths[ranking.chosen] / truths[best] - 1,
                      "true": truths, "estimate": {k: e.rmse for k, e in ranking.estimates.items()},
                      "se": {k: e.se for k, e in ranking.estimates.items()},
                      "probe_se": {k: e.probe_se for k, e in ranking.estimates.items()},
                      "length_se": {k: e.length_se for k, e in ranking.estimates.items()}})
        if first is None:
            first = {"noisy": y, "chosen": outputs[ranking.chosen]}
    return {"draws": draws, "first": first, "seconds": time.perf_counter() - start}


def candidate_stats(draws: list[dict], name: str) -> dict:
    """First draw's numbers and, over the draws, the spread of estimate − truth against its predicted se."""
    true = np.array([d["true"][name] for d in draws])
    est = np.array([d["estimate"][name] for d in draws])
    se = np.array([d["se"][name] for d in draws])
    err = est - true
    r = len(draws)
    spread = float(err.std(ddof=1)) if r > 1 else math.nan
    return {"true": true[0], "estimate": est[0], "se": se[0], "mean_true": float(true.mean()),
            "mean_estimate": float(est.mean()), "measured_sd": spread, "predicted_se": float(np.sqrt(np.mean(se**2))),
            "mean_error": float(err.mean()),
            "bias_z": float(err.mean() / (spread / math.sqrt(r))) if r > 1 and spread > 0 else math.nan,
            "within_3se": float(np.mean(np.abs(err) <= 3 * se)), "probe_se": draws[0]["probe_se"][name],
            "length_se": draws[0]["length_se"][name]}


def record_summary(name: str, sigma: float, clean: np.ndarray, result: dict) -> dict:
    draws = result["draws"]
    gaps = np.array([d["gap"] for d in draws])
    d0 = draws[0]
    return {"record": name, "sigma": sigma, "samples": int(clean.size), "chosen": d0["chosen"],
            "chosen_true": d0["true"][d0["chosen"]], "best": d0["best"], "best_true": d0["true"][d0["best"]],
            "gap": float(gaps[0]), "mean_gap": float(gaps.mean()), "max_gap": float(gaps.max()),
            "within_limit": int(np.sum(gaps <= GAP_LIMIT)), "repeats": len(draws), "seconds": result["seconds"],
            "candidates": {k: candidate_stats(draws, k) for k in d0["true"]}}


def summary_table(summaries: list[dict]) -> list[str]:
    lines = ["| record | σ | samples | auto choice | its true RMSE | best (true) | best true RMSE | gap | "
             "gap over draws: mean / max | draws within 3 % | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['record']} | {s['sigma']:.4g} | {s['samples']} | {s['chosen']} | {s['chosen_true']:.4g} | "
                     f"{s['best']} | {s['best_true']:.4g} | {100 * s['gap']:.2f} % | {100 * s['mean_gap']:.2f} % / "
                     f"{100 * s['max_gap']:.2f} % | {s['within_limit']}/{s['repeats']} | {s['seconds']:.1f} |")
    return lines


def record_table(s: dict) -> list[str]:
    lines = [f"### {s['record']} (σ = {s['sigma']:.4g}, {s['samples']} samples, {s['repeats']} draws; "
             f"auto choice {s['chosen']}, best {s['best']})", "",
             "| candidate | true RMSE | SURE RMSE ± se | se: probes / length | mean true | sd(est − true) measured | "
             "se predicted (rms) | mean error / its se | draws within 3 se |", "|---|---|---|---|---|---|---|---|---|"]
    for name, c in s["candidates"].items():
        mark = " *" if name == s["chosen"] else ""
        lines.append(f"| {name}{mark} | {c['true']:.4g} | {c['estimate']:.4g} ± {c['se']:.2g} | "
                     f"{c['probe_se']:.1e} / {c['length_se']:.1e} | {c['mean_true']:.4g} | {c['measured_sd']:.2g} | "
                     f"{c['predicted_se']:.2g} | {c['bias_z']:+.1f} | {c['within_3se']:.0%} |")
    return lines + [""]


def markdown(summaries: list[dict], args: argparse.Namespace, seconds: float) -> str:
    head = ["# Label-free scoreboard (SURE) vs true RMSE", "",
            f"{args.repeats} noise draws per record, {args.probes} antithetic probe pairs, σ given "
            f"(std(clean)/{args.rsnr:g}; spikes: σ = {SIGMA:g}), seed {args.seed}, models: "
            f"{', '.join(args.models) or 'none'}. SURE RMSE ± se and the true RMSE are of the first draw "
            "(in MSE units, the probes' and the finite length's se are shown apart). The mean error / its se "
            "is a bias test (|z| < 3 expected). * = auto choice. Total time "
            f"{seconds:.1f} s.", "", "## Auto choice", ""]
    body = summary_table(summaries) + ["", "## Per record", ""]
    for s in summaries:
        body += record_table(s)
    return "\n".join(head + body) + "\n"


def draw_figure(name: str, clean: np.ndarray, summary: dict, first: dict, path: Path) -> Path:
    """Noisy, clean and the chosen output of the first draw, one panel."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    from deepdenoise1d import plots

    fig = Figure(figsize=(12, 3.6))
    ax = fig.add_subplot()
    t = np.arange(clean.size)
    ax.plot(t, first["noisy"].ravel(), color="0.75", lw=0.6, label="noisy")
    ax.plot(t, clean.ravel(), color="black", lw=0.9, label="clean")
    ax.plot(t, first["chosen"].ravel(), color="tab:red", lw=0.8,
            label=f"chosen: {summary['chosen']} (true RMSE {summary['chosen_true']:.3g})")
    ax.set_title(f"{name}: σ = {summary['sigma']:.3g}; chosen {summary['chosen']} by SURE, best by truth "
                 f"{summary['best']} ({summary['best_true']:.3g}); gap {100 * summary['gap']:.1f} %")
    ax.set_xlabel("sample (rows of 100 joined)" if clean.ndim == 2 else "sample")
    ax.set_ylabel("amplitude")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return plots.save_figure(fig, path)


def main(argv=None) -> None:
    args = get_args(argv)
    check_budget(args)
    if args.output is not None:
        guard_output(args.output)
        guard_output(args.output.with_suffix(".json"))
    records = make_records(args.sizes, args.rsnr, args.seed)
    if args.records:
        unknown = sorted(set(args.records) - set(records))
        if unknown:
            raise InputError(f"unknown record(s) {', '.join(unknown)}; choose from {', '.join(records)}")
        records = {k: v for k, v in records.items() if k in args.records}
    models = load_models(args.models)
    start = time.perf_counter()
    summaries = []
    for index, (name, (clean, sigma)) in enumerate(records.items()):
        result = study_record(index, clean, sigma, candidates_for(sigma, models), args.repeats, args.probes, args.seed)
        summary = record_summary(name, sigma, clean, result)
        summaries.append(summary)
        print("\n".join(record_table(summary)), flush=True)
        if args.fig_dir is not None:
            print(f"wrote {draw_figure(name, clean, summary, result['first'], args.fig_dir / f'{name}.png')}",
                  file=sys.stderr)
    seconds = time.perf_counter() - start
    text = markdown(summaries, args, seconds)
    print("\n".join(summary_table(summaries)))
    print(f"total {seconds:.1f} s")
    if args.output is not None:
        write_report(args.output, text, summaries)
    return summaries


def write_report(output: Path, text: str, summaries: list[dict]) -> None:
    """The Markdown report at ``output`` and its numbers as JSON beside it (``.json``), each written atomically."""
    atomic_write(output, lambda f: f.write(text.encode()))
    atomic_write(output.with_suffix(".json"), lambda f: f.write(json.dumps(summaries, indent=2, allow_nan=True).encode()))
    print(f"wrote {output} and {output.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main, "scoreboard_study.py")

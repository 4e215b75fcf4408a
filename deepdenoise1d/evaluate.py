"""The spike benchmark's report, shared by both front-ends' --random mode and ``scripts/results.py``.

- scoring: :func:`evaluate_methods`, :func:`build_report`, :func:`random_benchmark` on the
  one held-out draw :func:`deepdenoise1d.synthesis.benchmark_signals`, with the methods of
  :mod:`deepdenoise1d.methods`;
- the table: :func:`format_table` / :func:`table_rows`, one row format (names, decimals)
  for test.py, Numpy_test.py and results.py; :func:`write_report_json` for its numbers.

The file pipeline is :mod:`deepdenoise1d.streaming`, the out-of-range check :mod:`deepdenoise1d.range_check`.
No argparse here (that is :mod:`deepdenoise1d.cli`).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from deepdenoise1d.budget import check_memory
from deepdenoise1d.errors import InputError
from deepdenoise1d.methods import Method
from deepdenoise1d.metrics import mean_ci95, psnr, psnr_paper, rmse
from deepdenoise1d.progress import Progress
from deepdenoise1d.safewrite import atomic_write
from deepdenoise1d.synthesis import SIGNAL_LENGTH, benchmark_signals

# Row names of every table, keyed as in the JSON report. Network rows of other models
# (results.py) follow the same "NAME (MODE BN)" pattern through :func:`net_row_name`.
ROW_NAMES = {
    "wiener": "wiener",
    "l1": "l1",
    "gmc": "gmc",
    "wavelet": "wavelet (BayesShrink)",
    "soft": "soft (T = σ)",
    "bayes": "bayes",
}
TABLE_HEADER = ("| method | RMSE ± CI95 | vs Bayes | paper PSNR | PSNR (dB) |", "|---|---|---|---|---|")


def net_row_name(model: str, mode: str) -> str:
    """Table name of a network row: ``"net (fixed BN)"``."""
    return f"{model} ({mode} BN)"


def row_name(key: str) -> str:
    """Table name of a report key (``net_fixed`` -> ``net (fixed BN)``)."""
    if key.startswith("net_"):
        return net_row_name("net", key[len("net_"):])
    return ROW_NAMES.get(key, key)


def score(estimate: np.ndarray, clean: np.ndarray) -> dict:
    """``{"rmse", "rmse_ci95", "psnr_paper", "psnr"}``: means over signals (CI: 95 % half-width)."""
    estimate = np.asarray(estimate, dtype=np.float64)
    mean_rmse, ci95 = mean_ci95(rmse(estimate, clean))
    return {"rmse": mean_rmse, "rmse_ci95": ci95, "psnr_paper": float(np.mean(psnr_paper(estimate, clean))),
            "psnr": float(np.mean(psnr(estimate, clean)))}


def evaluate_methods(
    clean: np.ndarray, noisy: np.ndarray, methods: dict[str, Method], progress: bool = True
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Run and time each method on the same signals and score it.

    Parameters
    ----------
    clean, noisy : np.ndarray
        Shape (N, L).
    methods : dict
        ``{key: callable(noisy) -> estimate}``.
    progress : bool
        Report progress over methods on stderr (:class:`deepdenoise1d.progress.Progress`).

    Returns
    -------
    scores : dict
        ``{key: {"rmse", "rmse_ci95", "psnr_paper", "psnr", "seconds_per_signal"}}``.
    estimates : dict
        ``{key: estimate (N, L)}``.
    """
    n = noisy.shape[0]
    scores, estimates = {}, {}
    with Progress(len(methods), "methods", "method", every=10.0, enabled=progress) as bar:
        for key, method in methods.items():
            bar.set_postfix(key)
            start = time.perf_counter()
            estimate = np.asarray(method(noisy))
            elapsed = time.perf_counter() - start
            if estimate.shape != noisy.shape:
                raise ValueError(f"method {key!r} returned shape {estimate.shape}, expected {noisy.shape}")
            scores[key] = {**score(estimate, clean), "seconds_per_signal": elapsed / n}
            estimates[key] = estimate
            bar.update(1)
    return scores, estimates


def build_report(sigma: float, n: int, seed: int | None, scores: dict[str, dict], **about) -> dict:
    """The JSON report: ``{"sigma", "n", "seed", "methods": {key: scores}, **about}``.

    ``about`` records what made it (``backend``, ``weights``, ``classical_sigma``).
    """
    return {"sigma": float(sigma), "n": int(n), "seed": seed, "methods": scores, **about}


def table_rows(rows: list[tuple[str, dict]], bayes_rmse: float | None, timing: bool = False) -> list[str]:
    """Markdown table: RMSE ± CI95 (4 decimals), vs Bayes, paper PSNR, PSNR (2 decimals).

    Parameters
    ----------
    rows : list of (name, scores)
        ``scores`` as from :func:`score`.
    bayes_rmse : float or None
        The oracle's RMSE on the same signals; None leaves "vs Bayes" empty.
    timing : bool
        Add a seconds-per-signal column (the only column that changes between runs).
    """
    header, rule = TABLE_HEADER
    if timing:
        header, rule = header + " s / signal |", rule + "---|"
    lines = [header, rule]
    for name, s in rows:
        versus = f"{100 * (s['rmse'] / bayes_rmse - 1):+.1f} %" if bayes_rmse else ""
        line = (f"| {name} | {s['rmse']:.4f} ± {s['rmse_ci95']:.4f} | {versus} | {s['psnr_paper']:.2f} "
                f"| {s['psnr']:.2f} |")
        lines.append(line + (f" {s['seconds_per_signal']:.2e} |" if timing else ""))
    return lines


def format_table(report: dict) -> str:
    """The report as a caption line and a Markdown table (with timings), rows in report order."""
    methods = report["methods"]
    bayes = methods.get("bayes", {}).get("rmse")
    about = ", ".join(f"{k} {report[k]}" for k in ("backend", "weights") if report.get(k))
    caption = f"σ = {report['sigma']:g}, {report['n']} signals, seed {report['seed']}" + (f"; {about}" if about else "")
    rows = [(row_name(k), s) for k, s in methods.items()]
    return "\n".join([caption, "", *table_rows(rows, bayes, timing=True)])


def report_json_bytes(report: dict) -> bytes:
    """The report as indented JSON (NaN, e.g. a CI from one signal, becomes null)."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return (json.dumps(clean(report), indent=2, allow_nan=False) + "\n").encode()


def write_report_json(path: str | os.PathLike, report: dict, reads: tuple = ()) -> Path:
    """Write the report as JSON through the guarded, atomic write path."""
    data = report_json_bytes(report)
    atomic_write(Path(path), lambda f: f.write(data), reads=reads)
    return Path(path)


# Bytes per sample of a benchmark: clean and noisy signals, and each method's estimate kept for the
# table and figures (float64), plus a method's working arrays (the classical solvers hold several copies).
BENCH_BYTES_PER_SAMPLE = 16 + 8
BENCH_WORK_BYTES_PER_SAMPLE = 200


def benchmark_bytes(n: int, n_methods: int) -> int:
    """Estimated peak memory of :func:`random_benchmark` on ``n`` signals of SIGNAL_LENGTH with ``n_methods`` methods."""
    return n * SIGNAL_LENGTH * (BENCH_BYTES_PER_SAMPLE + 8 * n_methods + BENCH_WORK_BYTES_PER_SAMPLE)


def random_benchmark(
    n: int, sigma: float, seed: int, methods: dict[str, Method], progress: bool = True, classical_sigma: str = "given",
    **about,
) -> tuple[dict, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Evaluate every method on the held-out draw ``benchmark_signals(seed, n, sigma)``.

    Returns
    -------
    report : dict
        See :func:`build_report`.
    clean, noisy : np.ndarray
        The drawn signals, (n, L).
    estimates : dict
        ``{key: estimate (n, L)}``.
    """
    if n < 1:
        raise InputError(f"--n needs at least 1 signal, got {n}")
    if not sigma > 0:
        raise InputError(f"--sigma must be > 0, got {sigma}")
    check_memory(benchmark_bytes(n, len(methods)), f"--n {n} signals", "use a smaller --n")
    clean, noisy = benchmark_signals(seed, n, sigma)
    scores, estimates = evaluate_methods(clean, noisy, methods, progress)
    report = build_report(sigma, n, seed, scores, classical_sigma=classical_sigma, **about)
    return report, clean, noisy, estimates

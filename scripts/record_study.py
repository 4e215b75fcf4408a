"""One network per record, trained label-free on that record alone, against the classical methods.

    python scripts/record_study.py                                   # every record, full training
    python scripts/record_study.py --records Bumps_2048 ecg --models --train-args "--steps 200"
    python scripts/record_study.py --reuse                           # tables again, no retraining

Records: those of ``scripts/scoreboard_study.py`` (``make_records(--sizes, --rsnr, --seed)``) but the
synthetic spikes: ``pywt.data.demo_signal`` Bumps, Blocks, HeaviSine and Doppler at each of ``--sizes``
and ``pywt.data.ecg()``, nothing downloaded; ``--records`` keeps only the named ones. Each record gets
ONE noise draw of σ = std(clean) / ``--rsnr``: scoreboard_study's first draw,
``default_rng([seed, index, 0, 0])`` with ``index`` the record's place among ALL of ``make_records``
(spikes included), so it is the noise an unfiltered ``scoreboard_study.py`` run with the same
``--sizes``, ``--rsnr`` and ``--seed`` draws first (scoreboard_study numbers the records after its
``--records`` filter, so a filtered run of it draws other noise).

Per record, in ``--work-dir``/NAME: the noisy record is saved (``noisy.npy``) and
``Pytorch_V1/train.py --data noisy.npy --loss sure --sigma auto --run-dir run`` (plus
``--train-args``) trains a network on it alone, with no label and no given σ; its wall time is
measured. A folder that already holds a run is refused before any training, unless ``--overwrite``
(train.py ``--overwrite`` replaces it) or ``--reuse``: a finished one (``run/ckpt_best.pth``) is taken as it is, provided it was trained on
this same noisy draw. ``pth2h5.py`` converts ``ckpt_best.pth`` to ``run/ckpt_best.h5``, which
``Numpy_V2.model.load_h5`` loads: the candidate ``record_net`` (fixed BN, windows of its training
length as the shipped models get). A training that fails is reported as such and the study goes on.

Candidates: ``scoreboard_study.candidates_for`` (the classical ones at σ given, then each of
``--models`` in both BN modes) and ``record_net``. Each gets, on the noisy record, its true RMSE
against the clean signal and its SURE estimate ± standard error (``deepdenoise1d.scoreboard.rank``
with ``--probes`` antithetic probe pairs; probes seeded as scoreboard_study's first draw). σ for
SURE is the TRUE σ of the draw (given, as scoreboard_study does; only the training estimates it).
The auto choice is the lowest SURE (``rank``'s choice, as ``--method auto`` picks).

Output: ``--output`` (Markdown; default WORK/record_study.md) with a summary row per record and a
table of every candidate per record, the count of records on which record_net beats the best
classical method by true RMSE, and the numbers as JSON beside it; one figure per record in
``--fig-dir`` (a stretch of clean, noisy, record_net and the best classical output).
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from deepdenoise1d import scoreboard
from deepdenoise1d.cli import markdown_file, positive_float, positive_int, seed_int
from deepdenoise1d.errors import InputError, run_cli, show_path
from deepdenoise1d.safewrite import atomic_write, guard_output
from deepdenoise1d.synthesis import DEFAULT_SEED

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "Pytorch_V1" / "train.py"
PTH2H5 = REPO / "pth2h5.py"
RECORD_NET = "record_net"
RECORD_NET_MODE = "fixed"
STRETCH = 512  # samples shown in a record's figure
DEFAULT_WORK_DIR = Path("runs") / "record_study"
TAIL_LINES = 5  # lines of a failed subprocess kept for the report
# Float64 arrays of a record's length held beside scoreboard_study's (study.RECORD_COPIES and one output per
# candidate): the draw trained on, the saved draw read back by --reuse, and the figure's two outputs.
STUDY_COPIES = 4


def load_scoreboard_study():
    """``scripts/scoreboard_study.py`` as a module (a script beside this one, not a package module)."""
    spec = importlib.util.spec_from_file_location("scoreboard_study", Path(__file__).with_name("scoreboard_study.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = load_scoreboard_study()


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="record_study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=positive_int, nargs="+", default=[2048, 8192], metavar="N",
                   help="lengths of the pywt demo signals (default: 2048 8192)")
    p.add_argument("--rsnr", type=positive_float, default=7.0, help="σ = std(clean) / RSNR (default %(default)s)")
    p.add_argument("--seed", type=seed_int, default=DEFAULT_SEED, metavar="K",
                   help="seed of the noise and the probes (default %(default)s, as scoreboard_study.py)")
    p.add_argument("--records", nargs="+", default=None, metavar="NAME",
                   help="only these records (e.g. Bumps_2048 ecg)")
    p.add_argument("--models", nargs="*", default=["ckpt_best", "ckpt_blind"], metavar="NAME",
                   help="shipped NumPy weights (ckpt/NAME.h5) to add, both BN modes (default: ckpt_best ckpt_blind; "
                   "none: give the flag alone)")
    p.add_argument("--probes", type=positive_int, default=scoreboard.PROBES, metavar="K",
                   help="antithetic probe pairs per candidate, >= 2 (default %(default)s)")
    p.add_argument("--train-args", default="", metavar="ARGS",
                   help='more train.py flags, one string split as a shell does (e.g. "--steps 300 --threads 2", or '
                   '--train-args=--resume for one flag without a space; default none: train.py\'s defaults for one '
                   "record)")
    p.add_argument("--reuse", action="store_true",
                   help="take a finished run (WORK/NAME/run/ckpt_best.pth) as it is instead of training again")
    p.add_argument("--overwrite", action="store_true",
                   help="train again where WORK/NAME/run already holds a run, replacing it (without it, or --reuse, "
                   "such a folder is refused)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, metavar="DIR",
                   help="noisy records and training runs, one folder per record (default %(default)s)")
    p.add_argument("--output", type=markdown_file, default=None, metavar="PATH.md",
                   help="the Markdown tables, and a .json beside it (default WORK/record_study.md)")
    p.add_argument("--fig-dir", type=Path, default=None, metavar="DIR", help="the figures (default WORK/figs)")
    args = p.parse_args(argv)
    if args.probes < 2:
        p.error("--probes must be >= 2")
    try:
        args.train_args = shlex.split(args.train_args)
    except ValueError as err:
        p.error(f"--train-args: {err}")
    args.output = args.output if args.output is not None else args.work_dir / "record_study.md"
    args.fig_dir = args.fig_dir if args.fig_dir is not None else args.work_dir / "figs"
    return args


def select_records(args) -> dict[str, tuple[int, np.ndarray, float]]:
    """``{name: (index, clean, σ)}``, index the record's place in all of ``make_records`` (the noise stream)."""
    every = study.make_records(args.sizes, args.rsnr, args.seed)
    records = {name: (index, clean, sigma) for index, (name, (clean, sigma)) in enumerate(every.items())
               if not name.startswith("spikes_")}
    if args.records:
        unknown = sorted(set(args.records) - set(records))
        if unknown:
            raise InputError(f"unknown record(s) {', '.join(unknown)}; choose from {', '.join(records)}")
        records = {k: v for k, v in records.items() if k in args.records}
    return records


def noise_draw(index: int, clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """scoreboard_study.study_record's first draw of record ``index``."""
    rng = np.random.default_rng([seed, index, 0, study.NOISE_STREAM])
    return clean + sigma * rng.standard_normal(clean.shape)


def stream(command: list[str], name: str) -> tuple[int, list[str]]:
    """Run ``command``; its output goes to our stderr line by line, prefixed ``[name]``. Exit code, last lines."""
    tail: list[str] = []
    with subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="backslashreplace", bufsize=1) as proc:
        for line in proc.stdout:
            line = line.rstrip("\n")
            print(f"[{name}] {line}", file=sys.stderr, flush=True)
            tail = (tail + [line])[-TAIL_LINES:]
    return proc.returncode, tail


def train_record(name: str, y: np.ndarray, folder: Path, extra: list[str], reuse: bool) -> dict:
    """Save the noisy record, train on it (or reuse the finished run), convert ckpt_best.pth to .h5.

    Returns ``{"status": "trained" | "reused" | "training failed" | "conversion failed", "seconds", "weights",
    "message"}``; ``weights`` is the .h5 path when there is a model.
    """
    noisy, run = folder / "noisy.npy", folder / "run"
    best = run / "ckpt_best.pth"
    if reuse and best.is_file():
        if not (noisy.is_file() and np.array_equal(np.load(noisy), y)):
            raise InputError(f"{show_path(best)}: --reuse: that run was not trained on this noisy record "
                             f"({show_path(noisy)} differs or is missing); drop --reuse to train again")
        status, seconds = "reused", None
    else:
        atomic_write(noisy, lambda f: np.save(f, y))
        command = [sys.executable, TRAIN, "--data", noisy, "--loss", "sure", "--sigma", "auto", "--run-dir", run,
                   *extra]
        if (run / ".train-run").is_file() and not {"--resume", "--overwrite"} & set(extra):
            command.append("--overwrite")  # main checked that the user asked for it (refuse_earlier_runs)
        print(f"[{name}] {shlex.join(map(str, command))}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        code, tail = stream(command, name)
        seconds = time.perf_counter() - start
        if code != 0 or not best.is_file():
            return {"status": "training failed", "seconds": seconds, "weights": None,
                    "message": f"train.py exit {code}: {tail[-1] if tail else ''}"}
        status = "trained"
    weights = run / "ckpt_best.h5"
    code, tail = stream([sys.executable, PTH2H5, best, weights], name)
    if code != 0:
        return {"status": "conversion failed", "seconds": seconds, "weights": None,
                "message": f"pth2h5.py exit {code}: {tail[-1] if tail else ''}"}
    return {"status": status, "seconds": seconds, "weights": weights, "message": ""}


def record_net_candidate(weights: Path) -> dict:
    """``{"record_net": Candidate}``: the record's own network in fixed BN mode, windowed as the shipped models."""
    from Numpy_V2.model import load_h5

    net = load_h5(weights)
    made = scoreboard.network_candidates(lambda noisy, mode: net.denoise(noisy, bn_mode=mode), (RECORD_NET_MODE,),
                                         prefix=RECORD_NET, train_length=net.config.train_length)
    return {RECORD_NET: made[f"{RECORD_NET}_{RECORD_NET_MODE}"]}


def is_classical(name: str) -> bool:
    return name in scoreboard.classical_candidates(1.0) and name != scoreboard.NOISY


def best_of(candidates: dict, names) -> tuple[str | None, float | None]:
    names = [n for n in names if n in candidates]
    if not names:
        return None, None
    name = min(names, key=lambda n: candidates[n]["true"])
    return name, candidates[name]["true"]


def summarise(name: str, sigma: float, clean: np.ndarray, result: dict, training: dict, models) -> dict:
    """One draw's numbers of every candidate (scoreboard_study.record_summary), the best classical and shipped
    candidates, record_net's and the auto choice's numbers."""
    full = study.record_summary(name, sigma, clean, result)
    candidates = {k: {key: c[key] for key in ("true", "estimate", "se", "probe_se", "length_se")}
                  for k, c in full["candidates"].items()}
    classical, classical_true = best_of(candidates, [k for k in candidates if is_classical(k)])
    shipped, shipped_true = best_of(candidates, [k for k in candidates if any(k.startswith(f"{m}_") for m in models)])
    net = candidates.get(RECORD_NET)
    beats = None if net is None else bool(net["true"] < classical_true)
    return {"record": name, "sigma": sigma, "samples": int(clean.size),
            "noisy_true": candidates[scoreboard.NOISY]["true"],
            "best_classical": classical, "best_classical_true": classical_true,
            "shipped_best": shipped, "shipped_best_true": shipped_true,
            "record_net": net, "record_net_beats_classical": beats,
            "chosen": full["chosen"], "chosen_true": full["chosen_true"], "best": full["best"],
            "best_true": full["best_true"], "gap": full["gap"], "training": training["status"],
            "training_seconds": training["seconds"], "training_message": training["message"],
            "study_seconds": full["seconds"], "candidates": candidates}


def _num(value, fmt=".4g") -> str:
    return "—" if value is None else format(value, fmt)


def _training_cell(s: dict) -> str:
    if s["training"] == "reused":
        return "reused"
    if s["training"] == "trained":
        return f"{s['training_seconds']:.1f}"
    return f"{s['training']} ({s['training_seconds']:.1f} s)" if s["training_seconds"] is not None else s["training"]


def summary_table(summaries: list[dict]) -> list[str]:
    lines = ["| record | σ | samples | noisy | best classical (true RMSE) | record_net true RMSE (SURE est) | "
             "shipped best (true RMSE) | auto choice (true RMSE) | auto gap to best | training seconds | "
             "record_net beats best classical? |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        net = s["record_net"]
        net_cell = s["training"] if net is None else f"{net['true']:.4g} ({net['estimate']:.4g} ± {net['se']:.2g})"
        shipped = "—" if s["shipped_best"] is None else f"{s['shipped_best']} ({s['shipped_best_true']:.4g})"
        beats = {None: "—", True: "yes", False: "no"}[s["record_net_beats_classical"]]
        lines.append(f"| {s['record']} | {s['sigma']:.4g} | {s['samples']} | {s['noisy_true']:.4g} | "
                     f"{s['best_classical']} ({s['best_classical_true']:.4g}) | {net_cell} | {shipped} | "
                     f"{s['chosen']} ({s['chosen_true']:.4g}) | {100 * s['gap']:.2f} % | {_training_cell(s)} | "
                     f"{beats} |")
    return lines


def record_table(s: dict) -> list[str]:
    lines = [f"### {s['record']} (σ = {s['sigma']:.4g}, {s['samples']} samples; auto choice {s['chosen']}, "
             f"best {s['best']}; training: {_training_cell(s)})", ""]
    if s["training_message"]:
        lines += [f"record_net: {s['training_message']}", ""]
    lines += ["| candidate | true RMSE | SURE RMSE ± se | se of SURE (MSE units): probes / length |",
              "|---|---|---|---|"]
    for name, c in s["candidates"].items():
        marks = (" *" if name == s["chosen"] else "") + (" (best)" if name == s["best"] else "")
        lines.append(f"| {name}{marks} | {c['true']:.4g} | {c['estimate']:.4g} ± {c['se']:.2g} | "
                     f"{c['probe_se']:.1e} / {c['length_se']:.1e} |")
    return lines + [""]


def verdict(summaries: list[dict]) -> str:
    trained = [s for s in summaries if s["record_net"] is not None]
    wins = sum(bool(s["record_net_beats_classical"]) for s in trained)
    failed = len(summaries) - len(trained)
    return (f"record_net beats the best classical method on {wins} of {len(trained)} records"
            + (f" ({failed} more: no record_net, training failed)" if failed else ""))


def markdown(summaries: list[dict], args: argparse.Namespace, seconds: float) -> str:
    head = ["# A network per record, trained label-free on it alone, vs the classical methods", "",
            f"One noise draw per record (σ = std(clean)/{args.rsnr:g}, seed {args.seed}); {args.probes} antithetic "
            f"probe pairs; SURE with the true σ given. record_net: Pytorch_V1/train.py --loss sure --sigma auto on "
            f"the noisy record alone{' ' + shlex.join(args.train_args) if args.train_args else ''}, fixed BN. "
            f"Shipped models: {', '.join(args.models) or 'none'}. Best classical: lowest true RMSE of the classical "
            "candidates (noisy excluded). Auto choice: lowest SURE (* below); its gap is to the lowest true RMSE of "
            f"all candidates. Total time {seconds:.1f} s.", "", "## Summary", ""]
    body = summary_table(summaries) + ["", verdict(summaries), "", "## Per record", ""]
    for s in summaries:
        body += record_table(s)
    return "\n".join(head + body + [verdict(summaries)]) + "\n"


def draw_figure(s: dict, clean: np.ndarray, noisy: np.ndarray, outputs: dict, path: Path) -> Path:
    """A stretch of clean, noisy, record_net and the best classical output: the STRETCH samples where the clean
    signal varies most."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    from deepdenoise1d import plots

    n = clean.size
    width = min(STRETCH, n)
    variation = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(clean)))])
    start = int(np.argmax(variation[width - 1:] - variation[: n - width + 1]))
    t = np.arange(start, start + width)
    fig = Figure(figsize=(12, 3.8))
    ax = fig.add_subplot()
    ax.plot(t, noisy[t], color="0.75", lw=0.6, label=f"noisy ({s['noisy_true']:.3g})")
    ax.plot(t, clean[t], color="black", lw=1.0, label="clean")
    name = s["best_classical"]
    ax.plot(t, outputs[name][t], color="tab:blue", lw=0.8,
            label=f"best classical: {name} ({s['best_classical_true']:.3g})")
    if RECORD_NET in outputs:
        ax.plot(t, outputs[RECORD_NET][t], color="tab:red", lw=0.8,
                label=f"record_net ({s['record_net']['true']:.3g}; SURE {s['record_net']['estimate']:.3g})")
    ax.set_title(plots.fit_title(f"{s['record']}: σ = {s['sigma']:.3g}, samples {start}..{start + width - 1} of {n}; "
                                 f"true RMSE in brackets; auto choice {s['chosen']} ({s['chosen_true']:.3g}); "
                                 f"training: {_training_cell(s)}", 12, 10), fontsize=10)
    ax.set_xlabel("sample")
    ax.set_ylabel("amplitude")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return plots.save_figure(fig, path)


def refuse_earlier_runs(args, records: dict) -> None:
    """One line, before any training, when a record's folder holds a run this study would replace unasked."""
    for name in records:
        run = args.work_dir / name / "run"
        kept = args.reuse and (run / "ckpt_best.pth").is_file()
        if run.exists() and not kept and not args.overwrite and "--resume" not in args.train_args:
            raise InputError(f"{show_path(run)} already holds a run: --reuse scores a finished one as it is, "
                             "--overwrite trains again and replaces it")


def check_budget(args: argparse.Namespace) -> None:
    """Before any folder, file or training: the records and their scoring (``scoreboard_study.study_bytes``, with
    record_net among the candidates) must fit in memory; train.py checks its own batch."""
    study.check_sizes(args.sizes, study.candidate_count(args.models) + 1 + study.RECORD_COPIES + STUDY_COPIES)


def main(argv=None) -> list[dict]:
    args = get_args(argv)
    check_budget(args)
    for path in (args.output, args.output.with_suffix(".json")):
        guard_output(path)
    records = select_records(args)
    refuse_earlier_runs(args, records)
    models = study.load_models(args.models)
    start = time.perf_counter()
    summaries = []
    for name, (index, clean, sigma) in records.items():
        y = noise_draw(index, clean, sigma, args.seed)
        training = train_record(name, y, args.work_dir / name, args.train_args, args.reuse)
        candidates = study.candidates_for(sigma, models)
        if training["weights"] is not None:
            candidates.update(record_net_candidate(training["weights"]))
        result = study.study_record(index, clean, sigma, candidates, 1, args.probes, args.seed)
        if not np.array_equal(result["first"]["noisy"], y):  # the network was trained on the draw scored here
            raise RuntimeError(f"{name}: the scored noise draw is not the one trained on")
        summary = summarise(name, sigma, clean, result, training, args.models)
        summaries.append(summary)
        print("\n".join(record_table(summary)), flush=True)
        shown = [summary["best_classical"]] + ([RECORD_NET] if RECORD_NET in candidates else [])
        outputs = {k: study.true_rmse(candidates[k], y, clean)[1] for k in shown}
        print(f"wrote {draw_figure(summary, clean, y, outputs, args.fig_dir / f'{name}.png')}", file=sys.stderr)
    seconds = time.perf_counter() - start
    text = markdown(summaries, args, seconds)
    print("\n".join(summary_table(summaries)))
    print(verdict(summaries))
    print(f"total {seconds:.1f} s")
    study.write_report(args.output, text, summaries)
    return summaries


if __name__ == "__main__":
    run_cli(main, "record_study.py")

"""The application shared by the two test front-ends (Pytorch_V1/test.py, Numpy_V2/Numpy_test.py).

One set of flags, three run modes. The front-end builds a :class:`Backend` (its network
and what it knows about it); everything else is here, so both scripts behave the same
way. Torch-free: the PyTorch front-end passes its network in.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from deepdenoise1d import evaluate, field_formats, noise, range_check, scoreboard, streaming
from deepdenoise1d.methods import classical_methods, network_methods
from deepdenoise1d.budget import check_memory
from deepdenoise1d.magnitude import power_of_two
from deepdenoise1d.cli import (DEFAULT_FIG_DIR, add_bn_mode_arg, add_n_arg, add_overwrite_arg, add_seed_arg, add_threads_arg,
                               output_file, positive_float, sigma_or_auto)
from deepdenoise1d.dataset import read_test_samples
from deepdenoise1d.errors import InputError, show_path
from deepdenoise1d.io import scan_gaps, short_stretches_note, write_signals
from deepdenoise1d.safewrite import guard_output, write_policy
from deepdenoise1d.synthesis import SIGMA

DRAW_SIGMA = SIGMA  # --random draws at the benchmark σ when --sigma is auto or not given
FIGURE_METHODS = ("wiener", "l1", "gmc")  # classical panels of the per-sample figures
PLOT_SAMPLES = 1000  # --plot draws this many samples unless --plot-range says otherwise
PLOT_FORMATS = (".png", ".svg", ".pdf")  # --plot: a raster for a glance, vectors for a paper
MAX_PLOT_SAMPLES = 10**6  # --plot-range: more points than a figure can show, and matplotlib's memory grows with them
# --method auto holds the record and every candidate's probe outputs in memory: 311 MB measured at 10^6 samples
AUTO_BYTES_PER_SAMPLE = 330
PROGRESS_SAMPLES = 2**18  # the scoreboard reports progress on records longer than this
# --method auto scores a longer record on evenly spaced stretches of it, this many samples in all (a 10^7-sample
# record scored whole had not finished after 590 s; 10^6 took 85 s)
SCORED_SAMPLES = 2**18
SCORED_STRETCHES = 4
UNIT_RANGE = (2.0**-100, 2.0**100)  # magnitudes scored as they are; beyond, divided by a power of two (exact)


@dataclass
class Backend:
    """What a front-end knows about its network.

    ``denoise(noisy (n, L), bn_mode or None) -> (n, L)`` keeps the float dtype; None when
    there is no network (the NumPy side without its default weights). ``bn_mode`` is the
    mode the weights record; ``sigma_range`` the [low, high] noise range they were trained on.
    """

    prog: str
    name: str
    suffix: str
    weights: Path | None
    denoise: Callable | None
    bn_mode: str | None
    sigma_range: list | None
    min_length: int
    chunk: int
    bn_modes: tuple
    train_length: int | None = None  # longer --input signals go through windows of it (None: whole)
    jacobian: Callable | None = None  # jacobian(rows (n, L), bn_mode) -> (n, L, L): exact SURE for --method auto
    input_scale: float = 1.0  # the model's input_scale s: denoise applies it; sigma_range is compared with σ̂ / s
    equivariant: bool = False  # f(a·y) = a·f(y): any units; the range warning speaks of signal-to-noise, not σ
    offset_free: bool = False  # f(y + c) = f(y) + c: the range and peak warnings measure from each signal's median

    def label(self) -> str:
        """``PyTorch, ckpt/ckpt_best.pth`` (what made a table or a figure)."""
        return f"{self.name}, {shown_path(self.weights)}" if self.weights is not None else f"{self.name}, no weights"


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def add_test_args(parser: argparse.ArgumentParser, samples: Path, fig_suffix: str, bn_modes: tuple) -> None:
    """Every flag the two test front-ends share (their weights and device flags are their own)."""
    add_bn_mode_arg(parser, bn_modes)
    add_threads_arg(parser)
    parser.add_argument("--sigma", type=sigma_or_auto, default=None, metavar="S|auto",
                        help=f"noise level of the --random draw (default {DRAW_SIGMA:g}) and the σ given to the soft "
                        "threshold (T = σ) and the Bayes oracle; auto estimates σ for each noisy signal "
                        f"(deepdenoise1d.noise.estimate_sigma_auto; --random then draws at σ = {DRAW_SIGMA:g}); with "
                        "--input and --method other than net: the σ of the record for SURE and the classical "
                        "candidates (default auto: one estimate over the whole record)")
    figures = parser.add_argument_group("figure mode (the default)")
    figures.add_argument("--samples", type=Path, default=samples, metavar="DIR",
                         help="folder of TestK_data.txt / TestK_label.txt pairs (default: the repository's TestSamples/)")
    figures.add_argument("--fig-dir", type=Path, default=DEFAULT_FIG_DIR, metavar="DIR",
                         help=f"where figures go, created if missing: TestK_{fig_suffix}.png, and with --random --plots "
                         f"methods_{fig_suffix}.png and filter_{fig_suffix}.png (default: {DEFAULT_FIG_DIR}/ under the "
                         "current folder)")
    bench = parser.add_argument_group("random benchmark mode")
    bench.add_argument("--random", action="store_true",
                       help="draw --n held-out signals (deepdenoise1d.synthesis.benchmark_signals(--seed, --n, --sigma); "
                       "the same signals in test.py, Numpy_test.py and scripts/results.py) and print a table of every method")
    add_n_arg(bench, 2000)
    add_seed_arg(bench)
    bench.add_argument("--plots", action="store_true",
                       help=f"with --random: also draw methods_{fig_suffix}.png and filter_{fig_suffix}.png into --fig-dir")
    files = parser.add_argument_group("denoise-a-file mode")
    files.add_argument("--input", type=Path, metavar="IN",
                       help="signals to denoise: a record (.npy of shape [L], or .txt/.csv with one value per line and "
                       "an optional header row) or signals (.npy [N, L], or one signal per row); streamed in chunks, "
                       "so any size fits in memory; signals longer than the model's training length are denoised in "
                       "overlapping windows of it, blended. NaN runs are gaps: kept as NaN, each stretch between "
                       "them denoised on its own. Field records: .wav, .mseed/.sac (pip install "
                       "'research-on-deep-denoising[seismo]'), WFDB .hea (the [wfdb] extra), each channel with its "
                       "own σ and choice, --fs from the file")
    files.add_argument("--output", type=output_file, metavar="OUT",
                       help="where the denoised signals go (.txt, .csv or .npy, the input's shape; float32 in, float32 "
                       "out; or the field format of --input, its header kept); never the input or the weights")
    files.add_argument("--column", metavar="NAME|K",
                       help="with a .txt/.csv table (what instruments export, e.g. time_s,counts with a header row): "
                       "the column to denoise, by its header name or its 0-based index; the output is the same "
                       "table with that column denoised (header, time and other columns kept as they were), or "
                       "the column alone for a .npy output")
    files.add_argument("--channels", action="store_true",
                       help="the rows of --input ([C, L]) are channels of one recording (a 3-component seismogram, "
                       "a 12-lead ECG): each gets its own σ and, with auto, its own method (default: the rows share "
                       "one σ and one method, as a batch of signals from one source)")
    files.add_argument("--fs", type=positive_float, metavar="HZ",
                       help="sampling rate of --input in Hz: --plot draws time in seconds, --json records it")
    files.add_argument("--plot", type=Path, metavar="FILE.png|.svg|.pdf",
                       help="also draw a stretch of the noisy and the denoised record (the first "
                       f"{PLOT_SAMPLES} samples, or --plot-range)")
    files.add_argument("--plot-range", type=plot_range, metavar="A:B",
                       help="with --plot: the samples A..B-1 to draw (signals of an [N, L] file laid end to end)")
    files.add_argument("--method", choices=("net", "auto") + scoreboard.candidate_names(bn_modes), default=None,
                       metavar="NAME", help="what denoises --input: auto (the default: estimate every candidate's RMSE "
                       "on this record by SURE, with no clean signal, print the table and write the best one's output; "
                       "the network is one candidate), net (the network alone, whatever the record), or one "
                       "candidate: " + ", ".join(scoreboard.candidate_names(bn_modes)))
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help="with --random: the table as JSON; with --input: what was done (counts, dtype, BN mode, "
                        "σ warning). Never the weights or the input")
    add_overwrite_arg(parser)


def check_test_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flag combinations that mix modes or that a mode would ignore (argparse error, exit 2)."""
    if args.random and args.input is not None:
        parser.error("--random and --input are different modes; give one")
    if (args.input is None) != (args.output is None):
        parser.error("--input and --output go together")
    if getattr(args, "channels", False) and getattr(args, "column", None) is not None:
        parser.error("--channels and --column exclude each other (a column is one channel)")
    for flag in ("column", "fs", "channels"):
        if getattr(args, flag, None) not in (None, False) and args.input is None:
            parser.error(f"--{flag} needs --input/--output")
    if getattr(args, "column", None) is not None and args.input.suffix.lower() not in (".txt", ".csv"):
        parser.error("--column picks a column of a .txt/.csv table; a .npy record has none")
    if getattr(args, "plot", None) is not None and args.input is None:
        parser.error("--plot needs --input/--output")
    if getattr(args, "plot_range", None) is not None and getattr(args, "plot", None) is None:
        parser.error("--plot-range needs --plot FILE.png")
    if getattr(args, "plot_range", None) is not None and args.plot_range[1] - args.plot_range[0] > MAX_PLOT_SAMPLES:
        parser.error(f"--plot-range draws at most {MAX_PLOT_SAMPLES} samples; give a shorter range")
    if getattr(args, "plot", None) is not None and args.plot.suffix.lower() not in PLOT_FORMATS:
        parser.error(f"--plot must end in {', '.join(PLOT_FORMATS)}, got {show_path(args.plot.name)}")
    if args.plots and not args.random:
        parser.error("--plots needs --random")
    if args.json is not None and not (args.random or args.input is not None):
        parser.error("--json needs --random or --input/--output")
    args.repo_samples = args.samples.resolve() == Path(parser.get_default("samples")).resolve()
    if getattr(args, "method", None) is not None and args.input is None:
        parser.error("--method needs --input/--output")
    # Safe by default: with no --method, --input is denoised by whichever candidate SURE rates best on the
    # record itself (the networks among them), never by a network that this record may be far from.
    args.method_chosen_for_you = args.input is not None and getattr(args, "method", None) is None
    if args.method_chosen_for_you:
        args.method = "auto"
    if args.input is not None and args.sigma not in (None, "auto") and not uses_scoreboard(args):
        parser.error("--sigma S applies to --random and the figures; with --input σ is estimated per signal "
                     "(for the out-of-range warning)")


def run_test_cli(args: argparse.Namespace, backend: Backend) -> None:
    """Run the mode the flags ask for: --input/--output, --random, or the TestK figures."""
    reads = tuple(p for p in (backend.weights, args.input) if p is not None)
    with write_policy(overwrite=getattr(args, "overwrite", False)):  # the policy of every write below: deepdenoise1d.safewrite
        if args.input is not None:
            run_file_mode(args, backend, reads)
        elif args.random:
            run_random_mode(args, backend, reads)
        else:
            run_figure_mode(args, backend, reads + (args.samples,))


def shown_modes(args: argparse.Namespace, backend: Backend) -> tuple:
    """BN modes the table and figures show: --bn-mode alone when given, else every mode."""
    return (args.bn_mode,) if args.bn_mode else tuple(backend.bn_modes)


def methods_of(args: argparse.Namespace, backend: Backend, sigma) -> dict:
    """Network rows (when there is a network) then the classical ones."""
    methods = {}
    if backend.denoise is not None:
        methods.update(network_methods(backend.denoise, shown_modes(args, backend)))
    methods.update(classical_methods(sigma))
    return methods


def warn(backend: Backend, line: str | None) -> None:
    """One warning line on stderr, named by the script."""
    if line:
        print(f"{backend.prog}: {line}", file=sys.stderr)


def check_sigma_range(backend: Backend, noisy, sigma=None) -> None:
    """Warn once when ``noisy`` lies outside the noise range the weights were trained on (or peaks far above
    its spikes, or holds constant signals); with ``sigma`` "auto", also say how σ was estimated."""
    check = range_check.sigma_range_check(backend.sigma_range if backend.denoise is not None else None, noisy,
                                       scale=backend.input_scale, equivariant=backend.equivariant,
                                       offset_free=backend.offset_free)
    lines = check.notes()
    if sigma != "auto":
        lines = [line for line in lines if line.startswith("warning:")]
    for line in lines:
        warn(backend, line)


def show_notes(backend: Backend, result: streaming.FileResult) -> None:
    """The σ estimate and every warning of a denoised file, one line each on stderr."""
    for line in result.notes or ((result.warning,) if result.warning else ()):
        warn(backend, line)


def run_random_mode(args: argparse.Namespace, backend: Backend, reads: tuple) -> dict:
    """Benchmark every method on the held-out draw: table on stdout, optional JSON and figures."""
    if args.json is not None:
        guard_output(args.json, reads, kind="json", make_parent=False)  # fail before the work; no folder made yet
    draw = DRAW_SIGMA if args.sigma in (None, "auto") else args.sigma
    given = args.sigma if args.sigma is not None else draw
    report, _, noisy, estimates = evaluate.random_benchmark(
        args.n, draw, args.seed, methods_of(args, backend, given),
        classical_sigma="estimated" if given == "auto" else "given", backend=backend.name,
        weights=str(backend.weights) if backend.weights else None)
    check_sigma_range(backend, noisy, given)
    print(evaluate.format_table(report))
    if args.json is not None:
        evaluate.write_report_json(args.json, report, reads)
        print(f"wrote {show_path(args.json)}", file=sys.stderr)
    if args.plots:
        for path in draw_random_figures(args, backend, report, noisy, estimates, reads):
            print(f"wrote {show_path(path)}", file=sys.stderr)
    return report


def draw_random_figures(args, backend: Backend, report: dict, noisy, estimates: dict, reads: tuple) -> list[Path]:
    """methods_{suffix}.png and filter_{suffix}.png, titled with backend, weights and seed."""
    from deepdenoise1d import plots  # matplotlib only when drawing

    made_by = f"{backend.label()}; seed {args.seed}, {args.n} signals"
    shown = {k: v for k, v in estimates.items() if k.startswith("net_")} or {"wiener": estimates["wiener"]}
    sigma = report["sigma"]
    return [
        plots.save_figure(plots.methods_chart(report, made_by), args.fig_dir / f"methods_{backend.suffix}.png", reads=reads),
        plots.save_figure(plots.filter_figure(noisy, shown, sigma, made_by=made_by),
                          args.fig_dir / f"filter_{backend.suffix}.png", reads=reads),
    ]


def run_figure_mode(args: argparse.Namespace, backend: Backend, reads: tuple) -> list[Path]:
    """One comparison figure per TestK sample: the network (when loaded) and Wiener, L1, GMC."""
    from deepdenoise1d import plots  # matplotlib only when drawing

    sigma = args.sigma if args.sigma is not None else DRAW_SIGMA
    methods = methods_of(args, backend, sigma)
    shown = {k: m for k, m in methods.items() if k.startswith("net_") or k in FIGURE_METHODS}
    samples = read_test_samples(args.samples)
    check_sigma_range(backend, np.stack([noisy for _, noisy, _ in samples]), sigma)
    written = plots.draw_test_sample_figures(samples, args.fig_dir, backend.suffix, shown,
                                             made_by=backend.label(), reads=reads, samples_dir=args.samples,
                                             seeded=args.repo_samples)
    for path in written:
        print(f"wrote {show_path(path)}")
    return written


def run_file_mode(args: argparse.Namespace, backend: Backend, reads: tuple) -> streaming.FileResult:
    """Denoise --input into --output, streaming; one warning line when σ is out of the trained range."""
    if backend.denoise is None and not uses_scoreboard(args):
        raise InputError("--input needs the network: pass --weights")
    field = field_formats.check_pair(args.input, args.output)  # a field format out needs the same format in
    if args.json is not None:
        if os.path.abspath(args.json) == os.path.abspath(args.output):
            raise InputError(f"{args.json}: --json and --output name the same file; give two paths")
        guard_output(args.json, reads + (args.output,), kind="json", make_parent=False)  # folders only when written
    guard_plot(args, reads)
    if field is not None:
        return run_field_mode(args, backend, reads)
    args.table_column = input_column(args)
    if uses_scoreboard(args):
        return run_method_mode(args, backend, reads)
    result = streaming.denoise_file(args.input, args.output, lambda noisy: backend.denoise(noisy, args.bn_mode),
                                   backend.min_length, backend.chunk, reads, backend.sigma_range,
                                   train_length=backend.train_length, input_scale=backend.input_scale,
                                   equivariant=backend.equivariant, offset_free=backend.offset_free,
                                   column=args.table_column, gaps=True)
    show_notes(backend, result)
    for line in result.gap_notes:
        warn(backend, line)
    mode = args.bn_mode or backend.bn_mode
    windowed = f", in windows of {backend.train_length}" if backend.train_length and result.length > backend.train_length else ""
    what = f"{mode} BN" if len(backend.bn_modes) > 1 else "the network"  # one mode: a model without running statistics
    print(f"denoised {result.n} signal(s) of length {result.length} ({result.dtype}) with {what} "
          f"({backend.label()}{windowed}) -> {show_path(args.output)}")
    draw_record_plot(args, backend, f"net_{mode}", reads)
    if args.json is not None:
        summary = file_summary(args, backend, result.n, result.length, result.dtype, bn_mode=mode,
                               sigma_range=backend.sigma_range, sigma_warning=result.warning, gaps=result.gaps)
        evaluate.write_report_json(args.json, summary, reads + (args.output,))
    return result


def run_field_mode(args: argparse.Namespace, backend: Backend, reads: tuple) -> streaming.FileResult:
    """A WAV, miniSEED, SAC or WFDB --input (:mod:`deepdenoise1d.field_formats`): read whole, each channel
    denoised on its own (its own σ and choice, as --channels), written in the output's format; --fs defaults
    to the file's sampling rate."""
    args.table_column = None
    record, meta = field_formats.read_field_record(args.input)
    reads = reads + tuple(meta.files)
    if getattr(args, "fs", None) is None and meta.fs is not None:
        args.fs = meta.fs
    if field_formats.field_format(args.output) is None:
        suffix = Path(args.output).suffix.lower()
        guard_output(args.output, reads, kind="npy" if suffix == ".npy" else "text" if suffix in (".txt", ".csv")
                     else None, make_parent=False)
        if suffix not in (".npy", ".txt", ".csv"):
            raise InputError(f"{show_path(args.output)}: unsupported output format {Path(args.output).suffix!r} (use "
                             f"{Path(args.input).suffix.lower()}, .npy, .txt or .csv)")
    else:
        guard_output(args.output, reads, make_parent=False)
        if meta.format == "wfdb":  # OUT.hea names OUT.dat, written beside it
            guard_output(Path(args.output).with_suffix(".dat"), reads, make_parent=False)
    if np.isnan(record).all():
        raise InputError(f"{show_path(args.input)}: every value is NaN (all gap): nothing to denoise")
    need = record.size * (AUTO_BYTES_PER_SAMPLE if args.method == "auto" else 64)
    check_memory(need, f"--method {args.method} on {record.size} samples of {show_path(args.input)}",
                 "denoise a shorter stretch of the record")
    return run_channel_mode(args, backend, reads, record, meta)


def input_column(args: argparse.Namespace):
    """The column of a text --input that is the record (``--column``, or the one column under a header); None
    for a .npy or a header-less text file, whose rows are signals (:func:`deepdenoise1d.columns.find_column`)."""
    from deepdenoise1d import columns

    if not columns.is_table(args.input):
        return None
    return columns.find_column(args.input, getattr(args, "column", None))


def file_summary(args: argparse.Namespace, backend: Backend, n: int, length: int, dtype: str, **fields) -> dict:
    """What --json says of a denoised file: backend, weights, the two files, size and type, then ``fields`` and
    :func:`record_fields`."""
    return {"backend": backend.name, "weights": str(backend.weights) if backend.weights else None,
            "input": str(args.input), "output": str(args.output), "n": n, "length": length, "dtype": dtype,
            **fields, **record_fields(args)}


def record_fields(args: argparse.Namespace) -> dict:
    """What --json says of the record beyond its size: its column and sampling rate, when known."""
    column = getattr(args, "table_column", None)
    return {"column": column.label() if column else None, "fs": getattr(args, "fs", None)}


def uses_scoreboard(args: argparse.Namespace) -> bool:
    """--method auto (the default of --input) or a named candidate: anything but --method net."""
    return getattr(args, "method", None) not in (None, "net")


def run_method_mode(args: argparse.Namespace, backend: Backend, reads: tuple) -> streaming.FileResult:
    """--method auto|NAME: SURE table of every candidate on the whole record (auto), then the chosen one's output.

    A record with NaN gaps: σ is estimated on its long-enough stretches laid end to end, each candidate's SURE
    is summed over those stretches (each denoised alone, as it will be written), and the chosen one denoises
    each stretch on its own (:func:`rank_stretches`)."""
    suffix = Path(args.output).suffix.lower()
    # refuse a bad output before the scoring, as the network's path does before its work
    guard_output(args.output, reads, kind="npy" if suffix == ".npy" else "text" if suffix in (".txt", ".csv") else None,
                 make_parent=False)
    record, _ = scoreboard.read_record(args.input, args.table_column, allow_gaps=True)
    gaps = scan_gaps(record, show_path(args.input))
    if gaps is not None and gaps.samples() == record.size:
        raise InputError(f"{show_path(args.input)}: every value is NaN (all gap): nothing to denoise")
    if record.shape[-1] < scoreboard.MIN_SCORED_LENGTH:
        hint = (" (a table without a header is read one row per signal: pick the column to denoise with --column K)"
                if args.table_column is None and Path(args.input).suffix.lower() in (".txt", ".csv") else "")
        raise InputError(f"{show_path(args.input)}: signals have length {record.shape[-1]}, need at least "
                         f"{scoreboard.MIN_SCORED_LENGTH}{hint}")
    check_memory(record.size * AUTO_BYTES_PER_SAMPLE * (args.method == "auto"), f"--method auto on {record.size} samples",
                 "give --method NAME (one method, streamed) or score a stretch of the record")
    if getattr(args, "channels", False):
        return run_channel_mode(args, backend, reads, record)
    minimum = None
    if gaps is None:
        scored, pieces = record, excerpt(record)
    else:
        stretches = [(row, a, b) for row in range(record.shape[0]) for a, b in gaps.stretches(row)]
        longest = max(b - a for _, a, b in stretches)
        minimum = stretch_minimum(args, backend, longest)
        pieces = [(row, a, b) for row, a, b in stretches if b - a >= minimum]
        if not pieces:
            raise InputError(f"{show_path(args.input)}: no stretch between the NaN gaps is {minimum} samples long "
                             f"(the longest: {longest}); nothing to score")
        scored = np.concatenate([record[row, a:b] for row, a, b in pieces])[None]
    sigma, source, how = scoreboard.record_sigma(scored, args.sigma)
    candidates = method_candidates(args, backend, record.shape[-1] if gaps is None else longest, sigma, announce=True)
    if gaps is None:
        warn(backend, rows_differ_note(record) if args.sigma in (None, "auto") else None)
    if getattr(args, "method_chosen_for_you", False):
        print(f"{backend.prog}: no --method given: every candidate is scored on this record by SURE and the best one "
              "written (--method net: the network alone)", file=sys.stderr)
    if source == "estimated":
        where = " (on the stretches between the NaN gaps)" if gaps is not None else ""
        print(f"{backend.prog}: {how}{where}; SURE uses their median {sigma:.4g}", file=sys.stderr)
    warn(backend, scoreboard.sigma_note(scored, sigma))
    ranking = None
    if args.method == "auto":
        if pieces is not None and gaps is None:
            print(f"{backend.prog}: the record's {record.size} samples are scored on {len(pieces)} evenly spaced "
                  f"stretches of {pieces[0][2] - pieces[0][1]} (SURE is a mean over samples); the choice is applied to "
                  "all of it", file=sys.stderr)
        ranking = rank_in_units(args, backend, candidates, record, pieces, sigma,
                                record.shape[-1] if gaps is None else longest, progress=scored.size > PROGRESS_SAMPLES)
        print(ranking.table())
    name = ranking.chosen if ranking else args.method
    network = name.startswith("net_")
    result = streaming.denoise_file(args.input, args.output, candidates[name], backend.min_length if network else 1,
                                   backend.chunk, reads, backend.sigma_range if network else None,
                                   train_length=backend.train_length if network else None,
                                   input_scale=backend.input_scale if network else 1.0,
                                   equivariant=backend.equivariant and network,
                                   offset_free=backend.offset_free and network, column=args.table_column,
                                   network=network, gaps=gaps is not None, gap_min_length=minimum)
    for line in [line for line in result.notes if line.startswith("warning:")] or [result.warning]:
        warn(backend, line)  # the σ line was printed above
    for line in result.gap_notes:
        warn(backend, line)
    draw_record_plot(args, backend, name, reads)
    print(f"denoised {result.n} signal(s) of length {result.length} ({result.dtype}) with {name} "
          f"(σ = {sigma:.6g}, {source}{'; ' + backend.label() if network else ''}) -> {show_path(args.output)}")
    if args.json is not None:
        summary = file_summary(args, backend, result.n, result.length, result.dtype, method=args.method, chosen=name,
                               sigma=sigma, sigma_source=source, sigma_warning=result.warning, gaps=result.gaps)
        summary.update(ranking.summary() if ranking else {})
        evaluate.write_report_json(args.json, summary, reads + (args.output,))
    return result


def stretch_minimum(args: argparse.Namespace, backend: Backend, longest: int) -> int:
    """The shortest stretch between NaN gaps that is scored and denoised: what SURE needs
    (:data:`deepdenoise1d.scoreboard.MIN_SCORED_LENGTH`), or the network's minimum when the network is among
    the candidates (so every candidate is scored on the same stretches it would denoise). Shorter stretches are
    written back unchanged."""
    if args.method == "net":
        return backend.min_length
    network = backend.denoise is not None and (args.method.startswith("net_")
                                               or (args.method == "auto" and longest >= backend.min_length))
    return max(scoreboard.MIN_SCORED_LENGTH, backend.min_length) if network else scoreboard.MIN_SCORED_LENGTH


def excerpt(record: np.ndarray) -> list | None:
    """None for a record of at most :data:`SCORED_SAMPLES` samples (scored whole); else :data:`SCORED_STRETCHES`
    evenly spaced stretches of it, (row, start, stop), that many samples in all: the scoreboard's time and memory
    stay bounded whatever the record's length."""
    if record.size <= SCORED_SAMPLES:
        return None
    rows, length = record.shape
    size = min(SCORED_SAMPLES // SCORED_STRETCHES, length)
    flat_starts = np.linspace(0, rows * length - size, SCORED_STRETCHES).astype(np.int64)
    pieces = []
    for start in flat_starts:  # a stretch never crosses from one row into the next
        row, a = divmod(int(start), length)
        a = min(a, length - size)
        pieces.append((row, a, a + size))
    return sorted(set(pieces))


def rank_in_units(args: argparse.Namespace, backend: Backend, candidates: dict, record: np.ndarray, pieces: list | None,
                  sigma: float, length: int, progress: bool = False) -> scoreboard.Ranking:
    """--method auto's ranking of ``record`` (N, L) by ``candidates`` at ``sigma``, on ``pieces`` when given (the
    stretches between NaN gaps, or an excerpt: :func:`rank_stretches`). SURE's squares leave float64 for a record
    whose magnitude lies outside :data:`UNIT_RANGE`: such a record is scored divided by a power of two (exact), by
    the candidates at σ over that power (``length`` is what :func:`method_candidates` needs), and the ranking comes
    back in the record's own units."""
    unit = 1.0
    peak = float(np.nanmax(np.abs(record)))
    if not UNIT_RANGE[0] <= peak <= UNIT_RANGE[1]:
        unit = float(power_of_two(np.array([peak]), axis=None).ravel()[0])
        candidates, record, sigma = method_candidates(args, backend, length, sigma / unit), record / unit, sigma / unit
    ranking = (scoreboard.rank(candidates, record, sigma, progress=progress) if pieces is None
               else rank_stretches(candidates, record, pieces, sigma, progress=progress))
    return ranking.in_units(unit)


def rank_stretches(candidates: dict, record: np.ndarray, pieces: list, sigma: float,
                   progress: bool = False) -> scoreboard.Ranking:
    """:func:`deepdenoise1d.scoreboard.rank` over the stretches between NaN gaps, each denoised alone.

    Each stretch is ranked on its own (its (1, m) record: exact divergences stay exact), and every candidate's
    SURE over their union is the samples-weighted mean of its stretches' (SURE is a sum over samples); the
    standard errors add in quadrature, the stretches' noise being independent. The chosen candidate has the
    lowest SURE over the union. One stretch gives :func:`~deepdenoise1d.scoreboard.rank`'s own result.
    """
    if len(pieces) == 1:
        row, a, b = pieces[0]
        return scoreboard.rank(candidates, record[row : row + 1, a:b], sigma, progress=progress)
    total = sum(b - a for _, a, b in pieces)
    # probe pairs as for one record of the union's length: samples × pairs, and so the time, as scoring it whole
    budget = {"probes": scoreboard.probe_budget(total, scoreboard.PROBES),
              "refine": scoreboard.probe_budget(total, scoreboard.REFINE_PROBES)}
    sums: dict[str, dict] = {}
    probes = 0
    for row, a, b in pieces:
        ranking = scoreboard.rank(candidates, record[row : row + 1, a:b], sigma, progress=progress, **budget)
        probes = max(probes, ranking.probes)
        weight = (b - a) / total
        for name, e in ranking.estimates.items():
            s = sums.setdefault(name, {"sure": 0.0, "probe": 0.0, "length": 0.0, "div": 0.0, "seconds": 0.0,
                                       "exact": True, "probes": 0})
            s["sure"] += weight * e.sure
            s["probe"] += (weight * e.probe_se) ** 2
            s["length"] += (weight * e.length_se) ** 2
            s["div"] += weight * e.divergence
            s["seconds"] += e.seconds
            s["exact"] &= e.exact
            s["probes"] = max(s["probes"], e.probes)
    estimates = {}
    for name, s in sums.items():
        probe_se, length_se = s["probe"] ** 0.5, s["length"] ** 0.5
        sure_se = float(np.hypot(probe_se, length_se))
        rmse, se = scoreboard.rmse_and_se(s["sure"], sure_se)
        estimates[name] = scoreboard.Estimate(rmse, se, s["sure"], sure_se, probe_se, length_se, s["div"], s["exact"],
                                              s["seconds"], s["probes"])
    chosen = min(estimates, key=lambda k: estimates[k].sure)
    return scoreboard.Ranking(estimates, chosen, float(sigma), probes, total,
                              notes=[f"SURE summed over {len(pieces)} stretches between NaN gaps"])


def method_candidates(args: argparse.Namespace, backend: Backend, length: int, sigma: float,
                      announce: bool = False) -> dict:
    """The classical candidates at ``sigma`` and the network's (when loaded and ``length`` is long enough for
    it); refused in one line when the --method asked for is not among them."""
    candidates = scoreboard.classical_candidates(sigma)
    too_short = length < backend.min_length
    if backend.denoise is not None and not (too_short and args.method == "auto"):
        candidates.update(scoreboard.network_candidates(backend.denoise, shown_modes(args, backend),
                                                        train_length=backend.train_length, jacobian=backend.jacobian))
    elif backend.denoise is not None and announce:
        print(f"{backend.prog}: the record's {length} samples are fewer than the network's "
              f"{backend.min_length}: classical candidates only", file=sys.stderr)
    if args.method != "auto" and args.method not in candidates:
        raise InputError(f"--method {args.method} needs the network in that BN mode (pass --weights; check --bn-mode)")
    return candidates


MAX_CHANNEL_ROWS = 64  # the rows-differ note looks at files of at most this many rows (channels, not a batch)


def rows_differ_note(record: np.ndarray) -> str | None:
    """One line when the rows of a few-row record differ in noise level by more than 2×: one σ for them all
    (the default) is then wrong for some, and they are likely channels of one recording."""
    if not 2 <= record.shape[0] <= MAX_CHANNEL_ROWS:
        return None
    sigmas = noise.estimate_sigma_auto(record).sigma
    sigmas = sigmas[np.isfinite(sigmas) & (sigmas > 0)]
    if sigmas.size < 2 or sigmas.max() <= 2 * sigmas.min():
        return None
    return (f"the {record.shape[0]} rows differ in noise level (σ̂ {sigmas.min():.4g}..{sigmas.max():.4g}) but share one "
            "σ and one method; if they are channels of one recording, give --channels (each its own σ and choice)")


@dataclass
class ChannelResult:
    """One channel denoised by :func:`denoise_channel`: its output and what --json and the log say of it."""

    values: np.ndarray
    info: dict
    line: str
    gap_notes: tuple = ()


def denoise_channel(args: argparse.Namespace, backend: Backend, values: np.ndarray, label: str,
                    announce: bool = False) -> ChannelResult:
    """One channel (L,) with its own σ and (auto) its own choice; NaN gaps kept, each stretch between them
    denoised alone, stretches shorter than the method's minimum (:func:`stretch_minimum`) kept as they were."""
    gaps = scan_gaps(values[None], label)
    stretches = gaps.stretches(0) if gaps is not None else [(0, values.size)]
    out = values.copy()
    if not stretches:
        return ChannelResult(out, {"chosen": None, "sigma": None, "note": "every value is NaN"},
                             f"{label}: every value is NaN, kept as it was")
    longest = max(b - a for a, b in stretches)
    ranking = None
    if args.method == "net":
        mode = args.bn_mode or backend.bn_mode
        name, sigma, source = f"net_{mode}", None, None
        minimum = backend.min_length
        candidates = scoreboard.network_candidates(backend.denoise, (mode,), train_length=backend.train_length,
                                                   jacobian=backend.jacobian)
    else:
        minimum = stretch_minimum(args, backend, longest)
        pieces = [(0, a, b) for a, b in stretches if b - a >= minimum]
        if not pieces:
            return ChannelResult(out, {"chosen": None, "sigma": None, "note": f"no stretch of {minimum} samples"},
                                 f"{label}: no stretch of {minimum} samples (the longest: {longest}), kept as it was")
        scored = np.concatenate([values[a:b] for _, a, b in pieces])[None]
        sigma, source, _ = scoreboard.record_sigma(scored, args.sigma)
        candidates = method_candidates(args, backend, longest, sigma, announce=announce)
        if args.method == "auto":
            ranking = rank_in_units(args, backend, candidates, values[None], pieces, sigma, longest)
        name = ranking.chosen if ranking else args.method
    denoised = short = 0
    for a, b in stretches:
        if b - a < minimum:
            short += 1
            continue
        out[a:b] = np.asarray(candidates[name](values[a:b][None]), dtype=np.float64).reshape(-1)
        denoised += 1
    estimate = f", estimated RMSE {ranking.estimates[name].rmse:.4g}" if ranking else ""
    how = f"σ = {sigma:.6g}, {source}{estimate}" if sigma is not None else backend.label()
    notes = tuple(f"{label}: {line}" for line in ((gaps.note(denoised) if gaps is not None else None),
                                                  short_stretches_note(short, minimum)) if line)
    info = {"chosen": name, "sigma": sigma, "sigma_source": source,
            **({"estimates": ranking.summary()["estimates"]} if ranking else {}),
            **({"gaps": gaps.count(), "nan_samples": gaps.samples()} if gaps is not None else {}),
            "stretches_denoised": denoised, "stretches_unchanged": short}
    return ChannelResult(out, info, f"{label}: {name} ({how})", notes)


def run_channel_mode(args: argparse.Namespace, backend: Backend, reads: tuple, record: np.ndarray,
                     meta=None) -> streaming.FileResult:
    """--channels (and every field format): each row of the record its own σ and (with auto) its own choice, in
    memory, then one write; ``meta`` (:class:`deepdenoise1d.field_formats.FieldMeta`) for a field record, whose
    channels may differ in length (NaN-padded) and go back in its format when the output's suffix is its own."""
    if meta is None:
        from deepdenoise1d.io import compute_dtype, open_signals

        stored, stored_shape = open_signals(args.input, allow_nan=True)
        dtype = compute_dtype(stored.dtype)
        lengths, names = [record.shape[1]] * record.shape[0], [None] * record.shape[0]
    else:
        dtype, stored_shape = meta.output_dtype(), record.shape
        lengths, names = meta.lengths, meta.names
    out = np.full(record.shape, np.nan)
    chosen = []
    for c, row in enumerate(record):
        label = f"channel {c}" + (f" ({names[c]})" if names[c] and names[c] != f"channel {c}" else "")
        result = denoise_channel(args, backend, row[: lengths[c]], label, announce=c == 0)
        out[c, : lengths[c]] = result.values
        print(result.line)
        for line in result.gap_notes:
            warn(backend, line)
        chosen.append({"channel": c, **({"name": names[c]} if names[c] else {}), **result.info})
    if meta is not None and field_formats.field_format(args.output) is not None:
        field_formats.write_field_record(args.output, out, meta, reads, note=lambda line: warn(backend, line))
    else:
        write_signals(args.output, out.astype(dtype), like_shape=tuple(stored_shape), reads=reads)
    start, stop = getattr(args, "plot_range", None) or (0, PLOT_SAMPLES)
    first, last = start // record.shape[1], (stop - 1) // record.shape[1]  # the stretch's channels (laid end to end)
    shown = (f"channel {first}{' (' + names[first] + ')' if names[first] else ''}: {chosen[first]['chosen']}"
             if first == last and first < len(chosen) else "each channel its own method")
    draw_record_plot(args, backend, shown, reads)
    what = f"{field_formats.NAMES[meta.format]} " if meta is not None else ""
    how = "each on its own by the network" if args.method == "net" else "each with its own σ and method"
    print(f"denoised {record.shape[0]} {what}channel(s) of length {max(lengths)} ({np.dtype(dtype).name}), {how} "
          f"-> {show_path(args.output)}")
    if args.json is not None:
        summary = file_summary(args, backend, record.shape[0], record.shape[1], np.dtype(dtype).name,
                               method=args.method, channels=chosen, **(meta.summary() if meta is not None else {}))
        evaluate.write_report_json(args.json, summary, reads + (args.output,))
    return streaming.FileResult(record.shape[0], record.shape[1], np.dtype(dtype).name, None, ())


def plot_range(text: str) -> tuple[int, int]:
    """argparse type: ``A:B`` with integers 0 <= A < B (the samples A..B-1)."""
    match = re.fullmatch(r"([0-9]+):([0-9]+)", text)  # ASCII digits only: int() would take "1_0" and other scripts' digits
    start, stop = (int(match[1]), int(match[2])) if match else (None, None)
    if start is None or not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"expected A:B with integers 0 <= A < B, got {text!r}")
    return start, stop


def guard_plot(args: argparse.Namespace, reads: tuple) -> None:
    """Refuse a bad --plot path before the work, not after."""
    plot = getattr(args, "plot", None)
    if plot is None:
        return
    if os.path.abspath(plot) in (os.path.abspath(args.output), os.path.abspath(args.json or args.output)):
        raise InputError(f"{plot}: --plot names the same file as --output or --json; give another path")
    guard_output(plot, reads + (args.output,), kind="png" if plot.suffix.lower() == ".png" else None,
                 make_parent=False)


def draw_record_plot(args: argparse.Namespace, backend: Backend, method: str, reads: tuple) -> Path | None:
    """--plot: a stretch of --input and --output, read back from the files (only that stretch is loaded)."""
    if getattr(args, "plot", None) is None:
        return None
    from deepdenoise1d import plots  # matplotlib only when drawing
    from deepdenoise1d.io import open_signals

    from deepdenoise1d.columns import read_column

    column = getattr(args, "table_column", None)
    if field_formats.field_format(args.input) is not None:  # a field record: its channels laid end to end
        noisy = field_formats.read_field_record(args.input)[0]
        denoised = (field_formats.read_field_record(args.output)[0] if field_formats.field_format(args.output)
                    else open_signals(args.output, allow_nan=True)[0])
    else:
        noisy, _ = read_column(args.input, column, True) if column else open_signals(args.input, allow_nan=True)
        text_out = Path(args.output).suffix.lower() != ".npy"
        denoised, _ = (read_column(args.output, column, True) if column and text_out
                       else open_signals(args.output, allow_nan=True))
    total = noisy.size
    start, stop = args.plot_range or (0, PLOT_SAMPLES)
    if start >= total:
        raise InputError(f"--plot-range {start}:{stop} starts past the end of {args.input} ({total} samples)")
    stop = min(stop, total)
    network = method.startswith("net")
    label = "network" if network and len(backend.bn_modes) == 1 else plots.method_label(method)
    fig = plots.record_figure(noisy.reshape(-1)[start:stop], denoised.reshape(-1)[start:stop], start, label,
                              backend.label() if network else "", signal_length=noisy.shape[1] if noisy.shape[0] > 1 else None,
                              fs=getattr(args, "fs", None), ylabel=column.label() if column else None)
    path = plots.save_figure(fig, args.plot, reads=reads + (args.output,))
    print(f"wrote {show_path(path)}", file=sys.stderr)
    return path


def missing_weights_message(path: Path) -> str:
    """One line for a weights file that does not exist, with the command that makes it."""
    if path.suffix.lower() == ".h5":
        source = path.with_suffix(".pth")
        src = str(source) if source.is_file() else "SRC.pth"
        return f"{path}: no such weights file; make it from a checkpoint with: python pth2h5.py {src} {path}"
    return f"{path}: no such checkpoint file; train one with Pytorch_V1/train.py, or pass --weights"

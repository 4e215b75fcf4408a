"""Print every candidate's SURE estimate of its RMSE on a record file; nothing is written but --json.

    deepdenoise1d scoreboard rec.npy
    deepdenoise1d scoreboard quake.csv --column counts [--sigma S] [--weights ckpt_blind] [--json J]

The table is the one ``--method auto`` prints before it writes the best candidate's output
(:func:`Numpy_V2.api.scoreboard`); the record is read as the denoise command reads it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepdenoise1d import cli
from deepdenoise1d.columns import find_column
from deepdenoise1d.errors import run_cli, show_path
from deepdenoise1d.safewrite import write_policy
from deepdenoise1d.scoreboard import read_record
from icnn.shipped import resolve_weights

PROG = "scoreboard"


def get_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Score every denoiser (the classical peers and the "
                                     "network) on a record by SURE, with no clean signal, and print the table.")
    parser.add_argument("input", type=Path, metavar="IN", help="the record: .npy ([L] or [N, L]) or .txt/.csv")
    parser.add_argument("--column", metavar="NAME|K", help="with a .txt/.csv table: the column to score (its header "
                        "name or 0-based index)")
    parser.add_argument("--sigma", type=cli.sigma_or_auto, default="auto", metavar="S|auto",
                        help="the noise's standard deviation (default auto: estimated from the record)")
    cli.add_weights_arg(parser, None, "HDF5 weights of the network candidate (default: the shipped ckpt_universal)")
    cli.add_threads_arg(parser)
    parser.add_argument("--json", type=cli.output_file, metavar="PATH", help="also write the table as JSON")
    cli.add_overwrite_arg(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    from Numpy_V2.api import scoreboard

    args = get_args(argv)
    record, _ = read_record(args.input, find_column(args.input, args.column) if args.input.suffix.lower() in
                            (".txt", ".csv") else None)
    weights = resolve_weights(args.weights, ".h5") if args.weights is not None else None
    ranking = scoreboard(record, sigma=args.sigma, weights=weights, threads=args.threads or 1)
    print(ranking.table())
    if args.json is not None:
        from deepdenoise1d.evaluate import write_report_json

        reads = tuple(p for p in (args.input, weights) if p is not None)
        with write_policy(overwrite=args.overwrite):
            write_report_json(args.json, {"input": str(args.input), **ranking.summary()}, reads)
        print(f"wrote {show_path(args.json)}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main, PROG)

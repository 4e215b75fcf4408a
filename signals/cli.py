"""The one command-line convention every script shares.

Same flag, same meaning, everywhere:

``--weights PATH``   the trained network (.pth for PyTorch scripts, .h5 for NumPy ones)
``--bn MODE``        batch-norm statistics, fixed or unfixed (default: what the weights record)
``--n N``            how many signals to draw
``--seed K``         seed of the drawn signals (default :data:`signals.synthesis.DEFAULT_SEED`)
``--sigma S``        noise level: a number, LOW:HIGH, or auto (estimated)
``--device D``       auto, cpu or cuda (PyTorch scripts)
``--threads N``      compute threads (default :data:`signals.threads.DEFAULT_THREADS`)
``--output PATH``    the main result file

Every script has ``get_args(argv)`` and ``main(argv)`` and ends with
``run_cli(main, prog)``, so bad input is one line on stderr and exit 2.
This module is the command-line layer; the library modules of ``signals`` hold no argparse.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from signals.errors import InputError, run_cli  # noqa: F401  (re-exported: one import for scripts)
from signals.synthesis import DEFAULT_SEED

BN_CHOICES = ("fixed", "unfixed")  # checked against icnn.spec.BN_MODES by a test


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return _bounded_int(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return _bounded_int(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _bounded_int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return value


def add_weights_arg(parser: argparse.ArgumentParser, default: Path | None, kind: str) -> None:
    """``--weights PATH``; ``kind`` says which file ("a .pth checkpoint", "HDF5 weights (.h5)")."""
    shown = f" (default {default})" if default is not None else ""
    parser.add_argument("--weights", type=Path, default=default, metavar="PATH", help=f"{kind} to load{shown}")


def add_bn_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bn", choices=BN_CHOICES, default=None,
                        help="batch-norm statistics: fixed (running, from training) or unfixed (each signal's own); "
                        "default: the mode the weights record")


def add_n_arg(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--n", type=positive_int, default=default, metavar="N",
                        help=f"number of signals to draw (default {default})")


def add_seed_arg(parser: argparse.ArgumentParser, default: int = DEFAULT_SEED, what: str = "the drawn signals") -> None:
    parser.add_argument("--seed", type=nonnegative_int, default=default, metavar="K",
                        help=f"seed of {what} (default {default}; the same seed gives the same signals in every script)")


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="compute threads (default 1: this small network gains ~9 %% from a second thread on a "
                        "quiet machine and loses many times that when another process shares the cores; "
                        "capped at the cores this process may use)")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs; auto picks CUDA when available (default auto)")

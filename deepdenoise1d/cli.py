"""The one command-line convention every script shares: argparse types and ``add_*_arg`` helpers.

Same flag, same meaning, everywhere:

``--weights PATH``    the trained network (.pth for PyTorch scripts, .h5 for NumPy ones)
``--bn-mode MODE``    batch-norm statistics, fixed or unfixed (default: what the weights record)
``--n N``             how many signals to draw
``--seed K``          seed of the drawn signals (default :data:`deepdenoise1d.synthesis.DEFAULT_SEED`)
``--sigma S``         noise level: a number, LOW:HIGH, or auto (estimated)
``--device D``        auto, cpu or cuda (PyTorch scripts)
``--threads N``       compute threads (default :data:`deepdenoise1d.threads.DEFAULT_THREADS`)
``--output PATH``     the main result file
``--fig-dir DIR``     the folder figures go to

Every script has ``get_args(argv)`` and ``main(argv)`` and ends with
``deepdenoise1d.errors.run_cli(main, prog)``, so bad input is one line on stderr and exit 2.
This module is the command-line layer; the library modules of ``deepdenoise1d`` hold no argparse.
The application shared by the two test front-ends is :mod:`deepdenoise1d.frontend`.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from deepdenoise1d.synthesis import DEFAULT_SEED, parse_sigma
from deepdenoise1d.threads import DEFAULT_THREADS

DEFAULT_FIG_DIR = Path("runs") / "figures"  # --fig-dir's default: under the current folder, never a tracked one


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return _bounded_int(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return _bounded_int(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _finite_float(text, "> 0", lambda v: v > 0)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _finite_float(text, ">= 0", lambda v: v >= 0)


def decay_float(text: str) -> float:
    """argparse type: a number in [0, 1), such as a moving average's decay per step."""
    return _finite_float(text, "in [0, 1)", lambda v: 0 <= v < 1)


def _finite_float(text: str, bound: str, within) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or not within(value):
        raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
    return value


def _bounded_int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return value


def sigma_or_auto(text: str) -> float | str:
    """argparse type: ``auto`` or a finite number > 0."""
    return "auto" if text.strip().lower() == "auto" else positive_float(text)


def sigma_range_or_auto(text: str) -> list[float] | str:
    """argparse type: ``auto``, or a finite σ > 0, or LOW:HIGH, as [low, high]."""
    if text == "auto":
        return text
    try:
        value = parse_sigma(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    low, high = value if isinstance(value, tuple) else (value, value)
    if not (math.isfinite(high) and low > 0):
        raise argparse.ArgumentTypeError(f"sigma must be finite and > 0, got {text!r}")
    return [float(low), float(high)]


def add_weights_arg(parser: argparse.ArgumentParser, default: Path | None, kind: str) -> None:
    """``--weights PATH``; ``kind`` says which file ("a .pth checkpoint", "HDF5 weights (.h5)")."""
    shown = f" (default {default})" if default is not None else ""
    parser.add_argument("--weights", type=Path, default=default, metavar="PATH", help=f"{kind} to load{shown}")


def add_bn_mode_arg(parser: argparse.ArgumentParser, modes: tuple) -> None:
    """``--bn-mode MODE``; ``modes`` is ``icnn.spec.BN_MODES`` (passed in: deepdenoise1d/ does not import icnn)."""
    parser.add_argument("--bn-mode", choices=modes, default=None,
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
                        help=f"compute threads (default {DEFAULT_THREADS}; capped at the cores this process may use)")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs; auto picks CUDA when available (default auto)")

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
import re
from pathlib import Path

from deepdenoise1d.safewrite import output_path_text
from deepdenoise1d.io import parse_number
from deepdenoise1d.synthesis import DEFAULT_SEED
from deepdenoise1d.threads import DEFAULT_THREADS

DEFAULT_FIG_DIR = Path("runs") / "figures"  # --fig-dir's default: under the current folder, never a tracked one


# Upper bounds of counts and sizes, checked at parsing: far above any use, far below what breaks.
MAX_COUNT = 10**9  # steps, evaluation intervals, any other count
MAX_SIGNALS = 10**8  # signals drawn or held out (--n, --val-size)
MAX_BATCH = 2**20  # signals per training step
MAX_THREADS = 4096
MAX_SEED = 2**63 - 1  # a seed fits a signed 64-bit integer (JSON readers, NumPy)
# σ flags: signals are spikes of amplitude 2..10; a σ this far outside is a unit mistake (σ² under- or overflows).
SIGMA_MIN, SIGMA_MAX = 1e-6, 1e6
_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() also takes "1_000" and non-ASCII digits


def positive_int(text: str) -> int:
    """argparse type: an integer in [1, :data:`MAX_COUNT`]."""
    return _bounded_int(text, 1, MAX_COUNT)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer in [0, :data:`MAX_COUNT`]."""
    return _bounded_int(text, 0, MAX_COUNT)


def signal_count(text: str) -> int:
    """argparse type: a number of signals, in [1, :data:`MAX_SIGNALS`]."""
    return _bounded_int(text, 1, MAX_SIGNALS)


def batch_size(text: str) -> int:
    """argparse type: signals per step, in [1, :data:`MAX_BATCH`]."""
    return _bounded_int(text, 1, MAX_BATCH)


def thread_count(text: str) -> int:
    """argparse type: compute threads, in [1, :data:`MAX_THREADS`]."""
    return _bounded_int(text, 1, MAX_THREADS)


def seed_int(text: str) -> int:
    """argparse type: a seed, in [0, :data:`MAX_SEED`]."""
    return _bounded_int(text, 0, MAX_SEED)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _finite_float(text, "> 0", lambda v: v > 0)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _finite_float(text, ">= 0", lambda v: v >= 0)


RSNR_RANGE = (1e-3, 1e6)  # σ = std(clean) / rsnr: from noise a thousand times the signal to none worth the name


def rsnr_float(text: str) -> float:
    """argparse type: a signal-to-noise ratio std(clean) / σ within :data:`RSNR_RANGE`."""
    low, high = RSNR_RANGE
    return _finite_float(text, f"in [{low:g}, {high:g}]", lambda v: low <= v <= high)


def decay_float(text: str) -> float:
    """argparse type: a number in [0, 1), such as a moving average's decay per step."""
    return _finite_float(text, "in [0, 1)", lambda v: 0 <= v < 1)


def _finite_float(text: str, bound: str, within) -> float:
    try:
        value = parse_number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ASCII decimal number, got {text!r}") from None
    if not math.isfinite(value) or not within(value):
        raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
    return value


def _bounded_int(text: str, low: int, high: int) -> int:
    stripped = text.strip(" \t")
    if _INTEGER.fullmatch(stripped) is None:
        raise argparse.ArgumentTypeError(f"expected an integer in ASCII digits, got {text!r}")
    value = int(stripped)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text!r}")
    return value


def sigma_value(text: str) -> float:
    """argparse type: a noise level σ in [:data:`SIGMA_MIN`, :data:`SIGMA_MAX`]."""
    return _finite_float(text, f"from {SIGMA_MIN:g} to {SIGMA_MAX:g} (rescale signals far outside)",
                         lambda v: SIGMA_MIN <= v <= SIGMA_MAX)


def sigma_or_auto(text: str) -> float | str:
    """argparse type: ``auto`` or a σ (:func:`sigma_value`)."""
    return "auto" if text.strip().lower() == "auto" else sigma_value(text)


def sigma_range_or_auto(text: str) -> list[float] | str:
    """argparse type: ``auto``, or a σ, or LOW:HIGH (each a :func:`sigma_value`, LOW <= HIGH), as [low, high]."""
    if text.strip().lower() == "auto":
        return "auto"
    parts = text.split(":")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"sigma must be a number or LOW:HIGH, got {text!r}")
    low, high = (sigma_value(part) for part in (parts * 2)[:2])
    if low > high:
        raise argparse.ArgumentTypeError(f"sigma LOW:HIGH needs LOW <= HIGH, got {text!r}")
    return [low, high]


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
    parser.add_argument("--n", type=signal_count, default=default, metavar="N",
                        help=f"number of signals to draw (default {default})")


def add_seed_arg(parser: argparse.ArgumentParser, default: int = DEFAULT_SEED, what: str = "the drawn signals") -> None:
    parser.add_argument("--seed", type=seed_int, default=default, metavar="K",
                        help=f"seed of {what} (default {default}; the same seed gives the same signals in every script)")


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=thread_count, default=None, metavar="N",
                        help=f"compute threads (default {DEFAULT_THREADS}; capped at the cores this process may use)")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs; auto picks CUDA when available (default auto)")


def output_file(text: str) -> Path:
    """argparse type: an output file path; one that ends in a separator (``foo.npy/``) names a folder.

    The refusal is an :class:`InputError` (argparse lets it through): one line under ``run_cli``,
    as the same path gets from the writers.
    """
    return output_path_text(text)


def markdown_file(text: str) -> Path:
    """argparse type: a report's path, ending in ``.md``: its numbers (``.json``) and figures (``.png``) go beside
    it under other suffixes, so no sibling output can land on it."""
    path = output_path_text(text)
    if path.suffix.lower() != ".md":
        raise argparse.ArgumentTypeError(f"expected a Markdown path ending in .md (its numbers go beside it as "
                                         f".json), got {text!r}")
    return path


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace an existing output that this command did not write (same kind only)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output file that this command did not write, when it holds the "
                        "same kind of data (npy, png, JSON, text); never a checkpoint or HDF5 file. Without it such "
                        "a file is refused; this command's own earlier output of the same kind, unchanged since, is "
                        "replaced either way")

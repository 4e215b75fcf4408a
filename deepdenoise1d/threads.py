"""How many threads a command uses: one rule for PyTorch and NumPy alike.

This network is tiny: a second intra-op thread buys a little on a quiet machine
and costs dearly when another process is busy on the same cores
(``scripts/bench_threads.py`` measures both). So the default is one thread, and
``--threads N`` asks for more, capped at the cores this process may actually run on.
"""
from __future__ import annotations

import os

DEFAULT_THREADS = 1


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS / Windows
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int | None = None) -> int:
    """Threads to use: ``requested`` capped at :func:`available_cores`, else :data:`DEFAULT_THREADS`.

    Parameters
    ----------
    requested : int, optional
        What the user asked for (``--threads``); must be ≥ 1 when given.

    Returns
    -------
    int
        Between 1 and the available cores.
    """
    if requested is None:
        return min(DEFAULT_THREADS, available_cores())
    if requested < 1:
        raise ValueError(f"threads must be >= 1, got {requested}")
    return min(requested, available_cores())

"""Thread control for NumPy inference: a pool of Python threads, each with a one-thread BLAS.

Blocks of signals are independent, and NumPy releases the GIL inside its kernels,
so blocks run on a thread pool. The BLAS is held to one thread meanwhile
(``threadpoolctl``, portable across OpenBLAS, MKL and BLIS): small GEMMs split
over BLAS threads stall badly when the cores are shared, and threads × BLAS
threads would oversubscribe them. The limit is restored on exit, so nothing
changes process-wide outside a call.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from threadpoolctl import threadpool_limits

from deepdenoise1d.errors import InputError
from deepdenoise1d.threads import resolve_threads


def worker_count(threads: int | None) -> int:
    """``deepdenoise1d.threads.resolve_threads`` (default 1, capped at the usable cores), as an InputError when < 1."""
    try:
        return resolve_threads(threads)
    except (TypeError, ValueError) as err:
        raise InputError(f"threads: {err}") from None


def run_blocks(work: Callable[[int], None], starts: Sequence[int], threads: int | None = None) -> None:
    """Call ``work(start)`` for every start, on ``threads`` workers, with a one-thread BLAS.

    A worker's exception is re-raised here.
    """
    workers = min(worker_count(threads), max(1, len(starts)))
    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            for start in starts:
                work(start)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(work, starts))  # list(): re-raise a worker's error here

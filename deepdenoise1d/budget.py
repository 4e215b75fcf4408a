"""Memory budget: estimate a job's memory from its shapes and refuse it, in one line, before allocating.

Every command that allocates from user-given sizes (a number of signals, a batch
size, a signal length) calls :func:`check_memory` with an estimate first, so a job
that cannot fit stops at once with the limit and the way round, before any file,
folder or lock is created. The limit is :data:`DEFAULT_FRACTION` of physical
memory, or the value of the environment variable :data:`LIMIT_ENV` (bytes, or a
number with a K/M/G/T suffix) when it is set.
"""
from __future__ import annotations

import os

from deepdenoise1d.errors import InputError

DEFAULT_FRACTION = 0.5  # of physical memory: room for the OS and page cache around one job
FALLBACK_LIMIT = 4 * 2**30  # when physical memory cannot be read
LIMIT_ENV = "DEEPDENOISE1D_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def parse_size(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1000000"`` as bytes (binary units; a trailing B or iB is allowed).

    Raises
    ------
    InputError
        Not a positive size.
    """
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _UNITS and raw[-1:] else ""
    number = raw[: len(raw) - len(unit)]
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        value = float("nan")
    if not value >= 1 or value == float("inf"):
        raise InputError(f"{LIMIT_ENV}={text!r}: expected a memory size such as 8G or 512M")
    return int(value)


def memory_limit() -> tuple[int, str]:
    """The limit in bytes and where it comes from (for the message)."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if text:
        return parse_size(text), f"set by {LIMIT_ENV}"
    total = physical_memory()
    if total is None:
        return FALLBACK_LIMIT, f"the default; set {LIMIT_ENV} to change it"
    return int(total * DEFAULT_FRACTION), (f"{DEFAULT_FRACTION:.0%} of the {human_bytes(total)} of physical memory; "
                                           f"set {LIMIT_ENV} to change it")


def human_bytes(n: float) -> str:
    """``1.5 GiB``: binary units, one decimal above bytes."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def check_memory(need: float, what: str, way_round: str) -> None:
    """Refuse a job whose estimated memory ``need`` exceeds :func:`memory_limit`.

    Parameters
    ----------
    need : float
        Estimated peak bytes of the job (from its shapes; may be huge or inf).
    what : str
        The job, as the message's subject: ``"--n 10000000000 signals"``.
    way_round : str
        What to do instead: ``"use a smaller --n"``.

    Raises
    ------
    InputError
        ``{what} needs about X of memory, over the limit of Y (...); {way_round}``.
    """
    limit, source = memory_limit()
    if need > limit:
        shown = human_bytes(need) if need < 2**70 else "more than 1 ZiB"
        raise InputError(f"{what} needs about {shown} of memory, over the limit of {human_bytes(limit)} "
                         f"({source}); {way_round}")

"""Progress on long work that shows in a terminal and in a log file alike.

On a terminal: a tqdm bar. Anywhere else (a pipe, ``nohup``, CI): one plain line
on stderr at most every ``every`` seconds, so a log gets a readable trail rather
than thousands of carriage returns.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress:
    """Count work done; draw a bar on a terminal, else print periodic lines.

    Parameters
    ----------
    total : int
        Units of work expected.
    desc : str
        What is being done ("denoising", "train").
    unit : str
        Name of one unit of work.
    initial : int
        Units already done (a resumed run).
    every : float
        Seconds between plain lines when stderr is not a terminal.
    enabled : bool
        False shows nothing.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, every: float = 10.0, enabled: bool = True):
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.every = every
        self.enabled = enabled
        self.start = self.last = time.monotonic()
        self.postfix = ""
        is_terminal = enabled and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr) if is_terminal else None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and (now - self.last >= self.every or self.done >= self.total):
            self.last = now
            self._print_line(now)

    def set_postfix(self, text: str) -> None:
        """Extra status (e.g. the latest validation RMSE), shown with the count."""
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _print_line(self, now: float) -> None:
        elapsed = now - self.start
        pct = 100.0 * self.done / self.total if self.total else 100.0
        extra = f"; {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.0f} %, {elapsed:.0f} s){extra}", file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Iterable[T], total: int, desc: str, unit: str = "it", every: float = 10.0, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a :class:`Progress` over them."""
    with Progress(total, desc, unit, every=every, enabled=enabled) as p:
        for item in items:
            yield item
            p.update(1)

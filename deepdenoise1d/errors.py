"""One clear line on stderr and exit code 2 for bad input, never a traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad user input: a missing, empty, malformed or unsafe file or argument."""


def show_path(path: str | os.PathLike) -> str:
    """The path as text for a one-line message (control characters escaped)."""
    text = os.fsdecode(path)
    return text if text.isprintable() else ascii(text)


def os_reason(err: Exception) -> str:
    """An OS error's reason on one line (its strerror, else its text, else its type)."""
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(reason.split())


def run_cli(main: Callable[[], object], prog: str) -> None:
    """Run ``main`` and turn an :class:`InputError` into ``prog: error: ...`` and exit 2."""
    try:
        main()
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)

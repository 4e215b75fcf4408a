"""One clear line on stderr and exit code 2 for bad input, never a traceback."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

EXIT_BAD_INPUT = 2
EXIT_TERMINATED = 128 + signal.SIGTERM


class InputError(Exception):
    """Bad user input: a missing, empty, malformed or unsafe file or argument."""


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` (temp-file clean-up) runs."""


def _terminate(signum, frame):
    raise Terminated()


def show_path(path: str | os.PathLike) -> str:
    """The path as text for a one-line message (control characters escaped)."""
    text = os.fsdecode(path)
    return text if text.isprintable() else ascii(text)


def os_reason(err: Exception) -> str:
    """An OS error's reason on one line (its strerror, else its text, else its type)."""
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(reason.split())


def survive_any_encoding() -> None:
    """Print what the terminal cannot encode (σ under an ASCII locale) as escapes, never a traceback."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def run_cli(main: Callable[[], object], prog: str) -> None:
    """Run ``main`` and turn an :class:`InputError` into ``prog: error: ...`` and exit 2.

    SIGTERM is handled like Ctrl-C for the run (temp files are removed either way), and output
    survives any locale or ``PYTHONIOENCODING``.
    """
    survive_any_encoding()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        sys.exit(EXIT_TERMINATED)

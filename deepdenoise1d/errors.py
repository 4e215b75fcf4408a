"""One clear line on stderr and exit code 2 for bad input, never a traceback."""
from __future__ import annotations

import sys
from typing import Callable

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad user input: a missing, empty, malformed or unsafe file or argument."""


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

"""Generic helpers for the CLI tests: load a script as a module, run its main in-process
the way its ``__main__`` block does, or run it in a fresh interpreter (optionally with
torch made unimportable)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepdenoise1d.errors import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]


def use_scripts_thread_count() -> None:
    """Torch computes with the scripts' default thread count. A CLI run sets it (``configure_threads``)
    and float sums depend on it, so without this a bit-for-bit comparison of an in-process run with
    a CLI run held only when some earlier test had run a CLI first."""
    torch = sys.modules.get("torch")
    if torch is not None:
        from deepdenoise1d.threads import resolve_threads

        torch.set_num_threads(resolve_threads(None))


@pytest.fixture(autouse=True, scope="session")
def scripts_thread_count_for_shared_fixtures():
    use_scripts_thread_count()  # before module-scoped fixtures (shared reference runs) are built


@pytest.fixture(autouse=True)
def scripts_thread_count():
    use_scripts_thread_count()  # again per test: an in-process CLI test may have asked for more

# Runs `python -c BLOCK_TORCH script args...`: a meta-path finder refuses torch and
# torch.*, then the script runs as __main__. (sys.modules['torch'] = None would instead
# break SciPy's array-API checks, which probe for torch.)
BLOCK_TORCH = r"""
import runpy, sys

class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is unimportable in this test ({name})")
        return None

sys.meta_path.insert(0, RefuseTorch())
try:
    import torch
except ImportError:
    pass
else:
    sys.exit("the torch import hook did not work")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def load_script(path: Path, name: str):
    """Import a script file (not a package module) under ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script: Path, *args: str, cwd: Path, block_torch: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a script in a fresh interpreter from ``cwd``; text output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    prefix = ["-c", BLOCK_TORCH] if block_torch else []
    command = [sys.executable, *prefix, str(script), *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(code, stderr: str, *fragments: str) -> None:
    """Exit code 2, exactly one stderr line, no traceback, and each fragment in the message."""
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def run_main(capsys):
    """``run_main(module, argv)`` -> (exit code, stdout, stderr), as ``run_cli(main)`` would exit."""

    def run(module, argv, prog="prog"):
        code = 0
        try:
            run_cli(lambda: module.main([str(a) for a in argv]), prog)
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def run_call(capsys):
    """``run_call(fn)`` runs any callable under ``run_cli`` -> (exit code, stderr)."""

    def run(fn):
        code = 0
        try:
            run_cli(fn, "prog")
        except SystemExit as exit_:
            code = exit_.code
        return code, capsys.readouterr().err

    return run

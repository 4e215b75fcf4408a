"""Where the shipped weights live: found from this file, so the API works from any folder."""
from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "ckpt_best"  # the σ = 3 model of the original repository's recipe


def weights_dir() -> Path:
    """The folder of the shipped ``.pth`` and ``.h5`` files.

    An installed wheel carries the repository's ``ckpt/`` as ``icnn/ckpt`` (package data, see
    pyproject.toml); a checkout or an editable install has it beside ``icnn/``.
    """
    here = Path(__file__).resolve().parent
    installed = here / "ckpt"
    return installed if installed.is_dir() else here.parent / "ckpt"


def default_weights(suffix: str, name: str = DEFAULT_MODEL) -> Path:
    """The shipped model ``name`` in one format: ``default_weights(".h5")`` is ``ckpt/ckpt_best.h5``."""
    return weights_dir() / f"{name}{suffix}"

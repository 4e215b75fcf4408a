"""Where the shipped weights live: found from this file, so the API works from any folder."""
from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "ckpt_best"  # the σ = 3 model of the original repository's recipe: the spike benchmark's network
RECORD_MODEL = "ckpt_universal"  # trained on the broad prior, blind: the network a user's record (--input) gets


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


def default_weights_for(suffix: str, record: bool) -> Path:
    """The test front-ends' default network: :data:`RECORD_MODEL` for a user's record, else :data:`DEFAULT_MODEL`."""
    return default_weights(suffix, RECORD_MODEL if record else DEFAULT_MODEL)


def resolve_weights(path: Path, suffix: str) -> Path:
    """``path`` when it exists; else the shipped model it names (``ckpt_blind``, ``ckpt/ckpt_blind.h5``), so
    the README's paths work from any folder after ``pip install``; else ``path`` (the caller says it is missing)."""
    path = Path(path)
    if path.exists() or path.parent not in (Path("."), Path("ckpt")):
        return path
    shipped = default_weights(suffix, path.stem if path.suffix.lower() == suffix else path.name)
    return shipped if shipped.is_file() else path

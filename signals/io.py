"""Signal files: one value per line (``.txt``, the seed's format) or ``.npy`` ([L] or [N, L]).

Every reader raises :class:`signals.errors.InputError` with one clear line on bad input.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from signals.errors import InputError
from signals.synthesis import noisy_pairs

_UMASK = os.umask(0)
os.umask(_UMASK)


def read_txt(path: str | os.PathLike) -> np.ndarray:
    """Read one signal written one float per line. Blank lines are skipped. Shape (L,)."""
    path = Path(path)
    _check_file(path)
    values = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                values.append(float(text))
            except ValueError:
                raise InputError(f"{path}: line {lineno} is not a number: {text[:40]!r}") from None
    if not values:
        raise InputError(f"{path}: file holds no values")
    signal = np.asarray(values, dtype=np.float64)
    check_finite(signal[None], str(path))
    return signal


def write_txt(path: str | os.PathLike, signal: np.ndarray) -> None:
    """Write one signal, one float per line, atomically."""
    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise InputError(f"{path}: a .txt file holds one signal, got shape {signal.shape}")
    text = "".join(f"{v:.9g}\n" for v in signal)
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """Read ``[L]`` or ``[N, L]`` from ``.npy`` (no pickles). Returns as stored."""
    path = Path(path)
    _check_file(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy array ({err})") from None
    if array.ndim not in (1, 2) or array.size == 0:
        raise InputError(f"{path}: expected a non-empty [L] or [N, L] array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"{path}: expected real numbers, got dtype {array.dtype}")
    check_finite(np.atleast_2d(array), str(path))
    return array


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as ``.npy``, atomically."""
    atomic_write(Path(path), lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def read_signals(path: str | os.PathLike) -> np.ndarray:
    """Read ``.txt`` or ``.npy`` and return float64 of shape (N, L) (N = 1 for one signal)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".txt":
        return read_txt(path)[None, :]
    if suffix == ".npy":
        return np.atleast_2d(read_npy(path)).astype(np.float64)
    raise InputError(f"{path}: unsupported signal format {suffix!r} (use .txt or .npy)")


def write_signals(path: str | os.PathLike, signals: np.ndarray, like_shape: tuple[int, ...] | None = None) -> None:
    """Write (N, L) signals as ``.txt`` (N must be 1) or ``.npy`` (reshaped to ``like_shape``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if signals.shape[0] != 1:
            raise InputError(f"{path}: a .txt output holds one signal, got {signals.shape[0]}; use .npy")
        write_txt(path, signals[0])
    elif suffix == ".npy":
        write_npy(path, signals.reshape(like_shape) if like_shape is not None else signals)
    else:
        raise InputError(f"{path}: unsupported output format {suffix!r} (use .txt or .npy)")


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike) -> Path:
    """Refuse an output that would overwrite an input; create its folder if missing."""
    output = Path(output)
    for inp in inputs:
        # samefile also catches ./ spellings, symlinks and hard links.
        if Path(inp).exists() and output.exists() and os.path.samefile(output, inp):
            raise InputError(f"{output}: refusing to overwrite the input file")
    if output.exists() and output.is_dir():
        raise InputError(f"{output}: is a folder, expected a file path")
    output.parent.mkdir(parents=True, exist_ok=True)
    return output


def check_finite(signals: np.ndarray, source: str) -> None:
    """Raise naming the first signal and index that holds NaN or inf."""
    bad = ~np.isfinite(signals)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{source}: signal {row} has a non-finite value ({signals[row, col]}) at index {col}")


def check_length(signals: np.ndarray, min_length: int, source: str) -> None:
    """Raise when signals are shorter than the model can take."""
    if signals.shape[-1] < min_length:
        raise InputError(f"{source}: signals have length {signals.shape[-1]}, need at least {min_length}")


def read_folder_dataset(folder: str | os.PathLike, require_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the seed's folder layout: ``data/N.txt`` paired by file name with ``labels/N.txt``.

    Returns ``(noisy, clean)``, each (N, L) float64; ``clean`` is None when the
    folder has no ``labels/`` and ``require_labels`` is False.
    """
    folder = Path(folder)
    data_dir, label_dir = folder / "data", folder / "labels"
    if not data_dir.is_dir():
        raise InputError(f"{folder}: no data/ folder")
    data_names = _txt_names(data_dir)
    if not data_names:
        raise InputError(f"{data_dir}: no .txt files")
    has_labels = label_dir.is_dir()
    if require_labels and not has_labels:
        raise InputError(f"{folder}: no labels/ folder")
    if has_labels:
        label_names = _txt_names(label_dir)
        if data_names != label_names:
            only_data = sorted(set(data_names) - set(label_names))[:3]
            only_labels = sorted(set(label_names) - set(data_names))[:3]
            raise InputError(
                f"{folder}: data/ and labels/ do not pair up "
                f"(only in data/: {only_data or 'none'}; only in labels/: {only_labels or 'none'})"
            )
    noisy = _stack([read_txt(data_dir / n) for n in data_names], data_dir)
    clean = _stack([read_txt(label_dir / n) for n in data_names], label_dir) if has_labels else None
    return noisy, clean


def write_folder_dataset(folder: str | os.PathLike, noisy: np.ndarray, clean: np.ndarray | None) -> None:
    """Write pairs in the seed's folder layout, ``data/i.txt`` and ``labels/i.txt``."""
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for i, signal in enumerate(noisy):
        write_txt(folder / "data" / f"{i}.txt", signal)
    if clean is not None:
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        for i, signal in enumerate(clean):
            write_txt(folder / "labels" / f"{i}.txt", signal)


TEST_SAMPLE_SEEDS = tuple(range(1000, 1006))


def write_test_samples(folder: str | os.PathLike, sigma: float = 3.0) -> list[Path]:
    """Write ``TestK_data.txt`` / ``TestK_label.txt`` (K = 0..5) from fixed seeds."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, seed in enumerate(TEST_SAMPLE_SEEDS):
        clean, noisy, _ = noisy_pairs(np.random.default_rng(seed), 1, sigma)
        for kind, signal in (("data", noisy[0]), ("label", clean[0])):
            path = folder / f"Test{k}_{kind}.txt"
            write_txt(path, signal)
            written.append(path)
    return written


def read_test_samples(folder: str | os.PathLike) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Read every ``TestK_data.txt`` with its ``TestK_label.txt``: [(name, noisy, clean)]."""
    folder = Path(folder)
    pairs = []
    for data_path in sorted(folder.glob("Test*_data.txt")):
        name = data_path.name[: -len("_data.txt")]
        label_path = folder / f"{name}_label.txt"
        if not label_path.is_file():
            raise InputError(f"{data_path}: no matching {label_path.name}")
        pairs.append((name, read_txt(data_path), read_txt(label_path)))
    if not pairs:
        raise InputError(f"{folder}: no TestK_data.txt files")
    return pairs


def _txt_names(folder: Path) -> list[str]:
    names = [p.name for p in folder.iterdir() if p.suffix == ".txt"]
    # Numeric names sort as numbers (2.txt before 10.txt), others by text.
    return sorted(names, key=lambda n: (0, int(n[:-4]), n) if n[:-4].isdigit() else (1, 0, n))


def _stack(signals: list[np.ndarray], source: Path) -> np.ndarray:
    lengths = {s.shape[0] for s in signals}
    if len(lengths) != 1:
        raise InputError(f"{source}: signals have different lengths {sorted(lengths)[:5]}")
    return np.stack(signals)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")


def atomic_write(path: Path, write) -> None:
    """Temp file in the same folder, fsync, then os.replace: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files left by an interrupted :func:`atomic_write` in ``folder``."""
    folder = Path(folder)
    stale = list(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale

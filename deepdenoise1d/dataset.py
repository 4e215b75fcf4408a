"""The original repository's folder layout and the TestK samples.

``data/N.txt`` paired by file name with ``labels/N.txt`` (training and test sets), and
``TestK_data.txt`` / ``TestK_label.txt`` drawn from fixed seeds (the committed
``TestSamples/``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepdenoise1d.errors import InputError, os_reason, show_path
from deepdenoise1d.io import PathLike, read_signals, read_txt, write_txt
from deepdenoise1d.safewrite import atomic_write
from deepdenoise1d.synthesis import SIGMA, noisy_pairs


def read_folder_dataset(folder: PathLike, require_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the original repository's folder layout: ``data/N.txt`` paired by file name with ``labels/N.txt``.

    Every data file is checked against its label file and against the first
    data file before anything is stacked; the first file that differs is named.
    Hidden files are skipped; a symbolic link is read only when it stays inside ``folder``.

    Returns
    -------
    noisy, clean : np.ndarray
        Each (N, L) float64; ``clean`` is None when the folder has no
        ``labels/`` and ``require_labels`` is False.
    """
    folder = Path(folder)
    data_dir, label_dir = folder / "data", folder / "labels"
    if not data_dir.is_dir():
        raise InputError(f"{show_path(folder)}: no data/ folder")
    try:
        data_names = _txt_names(data_dir, folder)
        label_names = _txt_names(label_dir, folder) if label_dir.is_dir() else None
    except OSError as err:
        raise InputError(f"{show_path(folder)}: cannot list files ({os_reason(err)})") from None
    if not data_names:
        raise InputError(f"{show_path(data_dir)}: no .txt files")
    has_labels = label_names is not None
    if require_labels and not has_labels:
        raise InputError(f"{show_path(folder)}: no labels/ folder")
    if has_labels:
        _check_pairing(folder, data_names, label_names)
    noisy, clean = [], []
    for name in data_names:
        noisy.append(read_signals(data_dir / name)[0])
        _check_same_length(noisy[-1], noisy[0], data_dir / name, data_dir / data_names[0])
        if has_labels:
            clean.append(read_signals(label_dir / name)[0])
            _check_same_shape(clean[-1], noisy[-1], label_dir / name, data_dir / name)
    return np.concatenate(noisy), (np.concatenate(clean) if has_labels else None)


def _check_pairing(folder: Path, data_names: list[str], label_names: list[str]) -> None:
    if data_names != label_names:
        only_data = sorted(set(data_names) - set(label_names))[:3]
        only_labels = sorted(set(label_names) - set(data_names))[:3]
        raise InputError(
            f"{show_path(folder)}: data/ and labels/ do not pair up "
            f"(only in data/: {only_data or 'none'}; only in labels/: {only_labels or 'none'})"
        )


def _check_same_length(signals: np.ndarray, reference: np.ndarray, path: Path, reference_path: Path) -> None:
    if signals.shape[1] != reference.shape[1]:
        raise InputError(
            f"{show_path(path)}: signals have length {signals.shape[1]}, but {show_path(reference_path)} has {reference.shape[1]}"
        )


def _check_same_shape(signals: np.ndarray, reference: np.ndarray, path: Path, reference_path: Path) -> None:
    _check_same_length(signals, reference, path, reference_path)
    if signals.shape[0] != reference.shape[0]:
        raise InputError(f"{show_path(path)}: holds {signals.shape[0]} signals, but {show_path(reference_path)} holds {reference.shape[0]}")


def write_folder_dataset(folder: PathLike, noisy: np.ndarray, clean: np.ndarray | None) -> None:
    """Write pairs in the original repository's folder layout, ``data/i.txt`` and ``labels/i.txt``.

    Each file is atomic but not fsynced: a dataset is made again more cheaply
    than thousands of fsyncs cost.
    """
    folder = Path(folder)
    for i, signal in enumerate(noisy):
        write_txt(folder / "data" / f"{i}.txt", signal, durable=False)
    if clean is not None:
        for i, signal in enumerate(clean):
            write_txt(folder / "labels" / f"{i}.txt", signal, durable=False)


TEST_SAMPLE_SEEDS = tuple(range(1000, 1006))


def write_test_samples(folder: PathLike, sigma: float = SIGMA) -> list[Path]:
    """Write ``TestK_data.txt`` / ``TestK_label.txt`` (K = 0..5) from fixed seeds."""
    folder = Path(folder)
    written = []
    for k, seed in enumerate(TEST_SAMPLE_SEEDS):
        clean, noisy, _ = noisy_pairs(np.random.default_rng(seed), 1, sigma)
        for kind, signal in (("data", noisy[0]), ("label", clean[0])):
            written.append(_write_sample(folder / f"Test{k}_{kind}.txt", signal))
    return written


def _write_sample(path: Path, signal: np.ndarray) -> Path:
    # The committed samples use 9 significant digits; keep their bytes stable.
    text = "".join(f"{v:.9g}\n" for v in signal)
    return atomic_write(path, lambda f: f.write(text.encode()))


def read_test_samples(folder: PathLike) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Read every ``TestK_data.txt`` with its ``TestK_label.txt``: [(name, noisy, clean)]."""
    folder = Path(folder)
    pairs = []
    for data_path in sorted(folder.glob("Test*_data.txt")):
        name = data_path.name[: -len("_data.txt")]
        label_path = folder / f"{name}_label.txt"
        if not label_path.is_file():
            raise InputError(f"{show_path(data_path)}: no matching {label_path.name}")
        pairs.append((name, read_txt(data_path), read_txt(label_path)))
    if not pairs:
        raise InputError(f"{show_path(folder)}: no TestK_data.txt files")
    return pairs


def _txt_names(folder: Path, root: Path | None = None) -> list[str]:
    """The ``.txt`` files of ``folder`` in numeric order; hidden files (``.name``, AppleDouble ``._N.txt``) skipped.

    A symbolic link is followed only when it resolves to a file inside ``root`` (the dataset
    folder); one that leads outside it is refused, so a folder never reads files it does not hold.
    """
    root = (root or folder).resolve()
    names = []
    for path in folder.iterdir():
        if path.suffix != ".txt" or path.name.startswith("."):
            continue
        if path.is_symlink() and not _resolves_inside(path, root):
            raise InputError(f"{show_path(path)}: a symbolic link to outside {show_path(root)}, refused "
                             "(copy the file into the folder)")
        names.append(path.name)
    # Numeric names (ASCII digits) sort as numbers (2.txt before 10.txt), others by text.
    return sorted(names, key=lambda n: (0, int(n[:-4]), n) if _ascii_digits(n[:-4]) else (1, 0, n))


def _ascii_digits(text: str) -> bool:
    # str.isdigit is also true for "²" or "٣", which int() refuses or reads as another number
    return text.isascii() and text.isdigit()


def _resolves_inside(path: Path, root: Path) -> bool:
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a link loop
        return False
    return root in target.parents

"""The HDF5 weights format that ``pth2h5.py`` writes and ``Numpy_V2`` reads.

Layout: one float32 dataset per state-dict tensor at the root, named by its key
(dots kept), stored flat (the original repository's converter did the same; a dataset of the
tensor's own shape is accepted too). Root attributes:

``format`` (str, :data:`WEIGHTS_FORMAT`), ``format_version`` (int, ≤ :data:`FORMAT_VERSION`),
``config`` (str, JSON ``{"model": ModelConfig.to_dict(), "train": {...}, ...}``),
``source_sha256`` and ``torch_version`` (str), written by ``pth2h5.py``.

A file with no attributes at all is the original repository's converter's: its architecture is
read from its keys and shapes (:func:`icnn.spec.config_from_keys`). Every dataset's shape comes
from :func:`icnn.spec.expected_shapes` of the config, whatever its width and depth.

The reader is hardened against hostile files: only hard-linked datasets stored
inside the file are read (no external raw storage, external or soft links,
virtual datasets or groups); every dataset's dtype and shape is checked against
the architecture before a byte of it is read; attribute types and sizes are
checked before they are read; the config JSON is bounded and parsed without
recursion errors escaping. HDF5 never loads a filter plugin for these files: the
plugin search path is emptied before a file is opened, and a dataset whose filter
pipeline names anything but HDF5's built-in filters is refused before it is read.
Every problem is one :class:`InputError` line.
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import h5py
import numpy as np

from icnn.spec import (COUNTER_SUFFIX, MAX_WEIGHT_VALUES, ModelConfig, check_weight_values, check_weights,
                       config_from_keys, expected_shapes)
from deepdenoise1d.errors import InputError
from deepdenoise1d.safewrite import atomic_write

WEIGHTS_FORMAT = "icnn_s-weights"
FORMAT_VERSION = 1
MAX_DATASETS = 1024  # the original ICNN_s has 159 (185 with sparse BN), depth 8 about 400; bounds the link walk
MAX_ATTRIBUTE_BYTES = 1 << 16  # each attribute, checked before it is read
MAX_CONFIG_CHARS = 1 << 16
STRING_ATTRIBUTES = ("format", "config", "source_sha256", "torch_version")
# HDF5's built-in filters (deflate, shuffle, fletcher32, szip, nbit, scaleoffset): no plugin runs them.
BUILTIN_FILTERS = {
    h5py.h5z.FILTER_DEFLATE: "deflate", h5py.h5z.FILTER_SHUFFLE: "shuffle", h5py.h5z.FILTER_FLETCHER32: "fletcher32",
    h5py.h5z.FILTER_SZIP: "szip", h5py.h5z.FILTER_NBIT: "nbit", h5py.h5z.FILTER_SCALEOFFSET: "scaleoffset",
}


def disable_filter_plugins() -> None:
    """Empty HDF5's plugin search path, so no shared library is ever loaded for a filter.

    h5py offers no switch for plugin loading; a path table with no entry is the same in effect
    (``HDF5_PLUGIN_PATH`` only seeds that table). Called before any weights file is opened.
    """
    while h5py.h5pl.size() > 0:
        h5py.h5pl.remove(0)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], ModelConfig, dict]:
    """Read an HDF5 weights file safely.

    Parameters
    ----------
    path : str or os.PathLike
        Written by ``pth2h5.py`` (or by the original repository's converter: no attributes).

    Returns
    -------
    arrays : dict[str, np.ndarray]
        Every weight as float32, reshaped to its tensor shape (BN counters left out).
    config : ModelConfig
        Recorded in ``config`` (``sigma_range`` filled from the recorded training sigma
        when absent; width 2 and depth 4 when absent), or read from the keys and shapes for an
        attribute-less file.
    metadata : dict
        The root attributes, ``config`` parsed; empty for an attribute-less file.

    Raises
    ------
    InputError
        One line naming the file and the first problem found.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a weights file (.h5)")
    if path.exists() and not path.is_file():  # a device, FIFO or socket: never opened (it may not end)
        raise InputError(f"{path}: not a regular file, expected a weights file (.h5)")
    if not path.is_file():
        raise InputError(f"{path}: no such weights file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: weights file is empty")
    disable_filter_plugins()
    try:
        with h5py.File(path, "r") as f:
            return _read_open_file(f, str(path))
    except InputError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:  # not HDF5, truncated, unreadable
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: not a readable HDF5 weights file ({type(err).__name__}: {reason[:160]})") from None


def _read_open_file(f: h5py.File, source: str) -> tuple[dict[str, np.ndarray], ModelConfig, dict]:
    datasets = _plain_datasets(f, source)
    metadata = _read_attributes(f, source)
    config = _config_of(metadata, datasets, source)
    check_weights({k: d.shape for k, d in datasets.items()}, config, source, flat_ok=True)
    shapes = expected_shapes(config)
    arrays = {key: _read_dataset(datasets[key], key, shape, source) for key, shape in shapes.items()}
    check_weight_values(arrays, source)
    return arrays, config, metadata


def _plain_datasets(f: h5py.File, source: str) -> dict[str, h5py.Dataset]:
    """Every root member, refused unless it is a hard-linked, contiguous-in-file, non-virtual dataset."""
    names = list(f.keys())  # names only: no link is followed here
    if len(names) > MAX_DATASETS:
        raise InputError(f"{source}: {len(names)} root members, more than an ICNN_s file can hold ({MAX_DATASETS})")
    datasets, total = {}, 0
    for name in names:
        link = f.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            kind = type(link).__name__
            raise InputError(f"{source}: {name!r} is a {kind}, refused: weights must be stored inside the file")
        item = f[name]
        if not isinstance(item, h5py.Dataset):
            raise InputError(f"{source}: {name!r} is a {type(item).__name__}, expected a dataset per tensor")
        _check_dataset(item, name, source)
        total += math.prod(item.shape)
        if total > MAX_WEIGHT_VALUES:
            raise InputError(f"{source}: datasets declare more than {MAX_WEIGHT_VALUES} values, "
                             "more than any ICNN_s this reader builds")
        datasets[name] = item
    return datasets


def _check_dataset(item: h5py.Dataset, name: str, source: str) -> None:
    """Where the data lives, its dtype and its shape, from the metadata only."""
    if item.is_virtual:
        raise InputError(f"{source}: dataset {name!r} is a virtual dataset, refused: weights must be stored inside the file")
    if item.external:
        raise InputError(f"{source}: dataset {name!r} is stored in an external file, refused: weights must be stored inside the file")
    if item.shape is None or math.prod(item.shape) == 0:
        raise InputError(f"{source}: dataset {name!r} is empty")
    plist = item.id.get_create_plist()
    for index in range(plist.get_nfilters()):
        filter_id = plist.get_filter(index)[0]
        if filter_id not in BUILTIN_FILTERS:
            raise InputError(f"{source}: dataset {name!r} needs HDF5 filter {filter_id}, refused: "
                             f"only the built-in filters are read ({', '.join(BUILTIN_FILTERS.values())})")
    if name.endswith(COUNTER_SUFFIX):
        if item.dtype.kind not in "iuf":
            raise InputError(f"{source}: dataset {name!r} holds {item.dtype}, expected a number")
    elif item.dtype.kind != "f":
        raise InputError(f"{source}: dataset {name!r} holds {item.dtype}, expected floating point")


def _read_dataset(item: h5py.Dataset, key: str, shape: tuple[int, ...], source: str) -> np.ndarray:
    """The dataset as float32 of ``shape`` (its size already checked); refused unless finite and in float32 range."""
    array = np.asarray(item[()])  # the stored float type: HDF5's own narrowing would clip silently
    if not np.isfinite(array).all():
        raise InputError(f"{source}: dataset {key!r} holds non-finite values (NaN or inf)")
    if array.dtype.itemsize > 4 and np.abs(array).max() > np.finfo(np.float32).max:
        raise InputError(f"{source}: dataset {key!r} holds values beyond the float32 range")
    return array.astype(np.float32).reshape(shape)


def _read_attributes(f: h5py.File, source: str) -> dict:
    """Root attributes as plain Python, each type- and size-checked before it is read."""
    metadata = {}
    for name in f.attrs.keys():
        attr = f.attrs.get_id(name)
        if attr.get_storage_size() > MAX_ATTRIBUTE_BYTES:
            raise InputError(f"{source}: attribute {name!r} is larger than {MAX_ATTRIBUTE_BYTES} bytes")
        if attr.shape not in ((), None) and attr.shape != (1,):
            raise InputError(f"{source}: attribute {name!r} has shape {attr.shape}, expected a single value")
        value = _plain(f.attrs[name], name, source)
        if isinstance(value, str) and len(value.encode("utf-8")) > MAX_ATTRIBUTE_BYTES:  # variable-length text
            raise InputError(f"{source}: attribute {name!r} is larger than {MAX_ATTRIBUTE_BYTES} bytes")
        metadata[name] = value
    return metadata


def _plain(value, name: str, source: str):
    """One attribute value -> str, int or float; anything else refused."""
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "SUiuf":
            raise InputError(f"{source}: attribute {name!r} has type {value.dtype}{value.shape}, expected a single value")
        value = value.reshape(()).item() if value.dtype.kind != "S" else value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{source}: attribute {name!r} is not UTF-8 text") from None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(f"{source}: attribute {name!r} has type {type(value).__name__}, expected text or a number")
    if name in STRING_ATTRIBUTES and not isinstance(value, str):
        raise InputError(f"{source}: attribute {name!r} must be text, got {type(value).__name__}")
    return value


def _config_of(metadata: dict, datasets: dict, source: str) -> ModelConfig:
    """The recorded model config, checked; or, with no attributes at all, the original repository's model from the keys."""
    if not metadata:
        return config_from_keys(datasets)
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise InputError(f"{source}: format attribute is {str(metadata.get('format'))[:60]!r}, expected {WEIGHTS_FORMAT!r}")
    version = metadata.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise InputError(f"{source}: format_version {str(version)[:20]} is not supported (this reader knows 1 to {FORMAT_VERSION})")
    recorded = _parse_config(metadata.get("config"), source)
    metadata["config"] = recorded
    train = recorded.get("train")
    train_sigma = train.get("sigma") if isinstance(train, dict) else None
    if "model" not in recorded:
        raise InputError(f"{source}: config attribute has no 'model' entry")
    return ModelConfig.from_dict(recorded["model"], source, train_sigma=train_sigma)


def _parse_config(text, source: str) -> dict:
    if not isinstance(text, str):
        raise InputError(f"{source}: config attribute is missing or not text")
    if len(text) > MAX_CONFIG_CHARS:
        raise InputError(f"{source}: config attribute is {len(text)} characters, more than {MAX_CONFIG_CHARS}")
    try:
        recorded = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError; deep nesting recurses
        raise InputError(f"{source}: config attribute is not valid JSON ({type(err).__name__}: {str(err)[:80]})") from None
    if not isinstance(recorded, dict):
        raise InputError(f"{source}: config attribute must be a JSON object, got {type(recorded).__name__}")
    return recorded


def write_weights(path: str | os.PathLike, arrays: dict[str, np.ndarray], config: dict, attributes: dict,
                  reads=(), replace_weights: bool = False) -> Path:
    """Write ``arrays`` (flat float32 datasets) with the format attributes, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.h5`` to write (guarded: never one of ``reads``).
    arrays : dict[str, np.ndarray]
        Key -> finite tensor, in the order to store.
    config : dict
        JSON-able; must hold ``"model"`` (a ``ModelConfig.to_dict()``).
    attributes : dict
        Extra root attributes (str or number), e.g. ``source_sha256``.
    reads : iterable of path
        Files the command reads.
    replace_weights : bool
        The caller checked that an existing ``path`` is weights of this format; with
        ``--overwrite`` in force it may be replaced (``deepdenoise1d.safewrite.guard_output``).
    """
    try:
        config_json = json.dumps(config, allow_nan=False, default=str)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: config cannot be written as JSON ({err})") from None
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:  # built in memory so the write to disk is one atomic replace
        f.attrs["format"] = WEIGHTS_FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["config"] = config_json
        for name, value in attributes.items():
            f.attrs[name] = value
        for key, array in arrays.items():
            f.create_dataset(key, data=np.asarray(array, dtype=np.float32).reshape(-1))
    payload = buffer.getvalue()
    return atomic_write(path, lambda out: out.write(payload), reads=reads, replace_weights=replace_weights)

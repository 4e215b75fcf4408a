"""Convert a PyTorch checkpoint (.pth) to the HDF5 weights that Numpy_V2 reads.

Usage: python pth2h5.py [SRC.pth] [DST.h5] [--csv PATH]

Every tensor of ``net_state_dict`` except ``num_batches_tracked`` becomes a flat
float32 dataset at the root, named by its state-dict key (dots kept), as the
seed's converter wrote them. Root attributes: ``format``, ``format_version``,
``config`` (JSON, with the model config, inferred for the seed's config-less
checkpoints), ``source_sha256`` and ``torch_version``.

The source is loaded with ``weights_only=True`` on the CPU, so a malicious
pickle is refused rather than run; the output is written atomically. Bad input
gives one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
from pathlib import Path

import h5py
import numpy as np
import torch

from Numpy_V2.model import SUPPORTED_FORMAT_VERSION, WEIGHTS_FORMAT
from Pytorch_V1.checkpoint import load_checkpoint, model_config_of
from signals.errors import InputError, run_cli
from signals.io import atomic_write, check_output_path

DEFAULT_SOURCE = Path(__file__).resolve().parent / "ckpt" / "ckpt_best.pth"
SKIPPED_SUFFIX = "num_batches_tracked"  # a step counter, not a weight


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pth2h5.py", description="Convert an ICNN_s checkpoint (.pth) to HDF5 weights (.h5).")
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE, help=f"checkpoint to read (default {DEFAULT_SOURCE})")
    parser.add_argument("destination", nargs="?", type=Path, default=None, help="HDF5 file to write (default: SOURCE with .h5)")
    parser.add_argument("--csv", type=Path, default=None, metavar="PATH", help="also write a per-tensor summary (name, shape, mean, std)")
    return parser.parse_args(argv)


def weight_arrays(state_dict: dict, source: Path) -> dict[str, np.ndarray]:
    """Every tensor except the BN step counters, as float32 NumPy arrays, in state-dict order."""
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(f"{source}: net_state_dict entry {key!r} is not a named tensor")
        if key.endswith(SKIPPED_SUFFIX):
            continue
        if not (value.is_floating_point() or value.dtype in (torch.int64, torch.int32)):
            raise InputError(f"{source}: tensor {key!r} has dtype {value.dtype}, expected floats")
        array = value.detach().to("cpu", torch.float32).numpy()
        if not np.isfinite(array).all():
            raise InputError(f"{source}: tensor {key!r} holds non-finite values")
        arrays[key] = array
    if not arrays:
        raise InputError(f"{source}: net_state_dict holds no tensors")
    return arrays


def checkpoint_config(ckpt: dict) -> dict:
    """The checkpoint's config with the model config filled in (inferred for the seed's layout)."""
    recorded = ckpt.get("config")
    config = dict(recorded) if isinstance(recorded, dict) else {}
    config["model"] = model_config_of(ckpt).to_dict()
    return config


def h5_bytes(arrays: dict[str, np.ndarray], attributes: dict) -> bytes:
    """The whole HDF5 file, built in memory so the write to disk can be atomic."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for name, value in attributes.items():
            f.attrs[name] = value
        for key, array in arrays.items():
            f.create_dataset(key, data=array.reshape(-1))
    return buffer.getvalue()


def summary_rows(arrays: dict[str, np.ndarray]) -> list[list]:
    """name, shape, mean, std per tensor (statistics in float64)."""
    rows = [["name", "shape", "mean", "std"]]
    for key, array in arrays.items():
        values = array.astype(np.float64)
        rows.append([key, "x".join(str(d) for d in array.shape), f"{values.mean():.9g}", f"{values.std():.9g}"])
    return rows


def write_csv(path: Path, rows: list[list]) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode("utf-8")))


def convert(source: Path, destination: Path, csv_path: Path | None = None) -> dict[str, np.ndarray]:
    """Read ``source`` safely and write ``destination`` (and the CSV summary) atomically."""
    source_bytes = _read_bytes(source)
    ckpt = load_checkpoint(source, "cpu")  # weights_only=True: never runs code from the file
    arrays = weight_arrays(ckpt["net_state_dict"], source)
    try:
        config_json = json.dumps(checkpoint_config(ckpt), default=str)
    except (TypeError, ValueError) as err:
        raise InputError(f"{source}: checkpoint config cannot be written as JSON ({err})") from None
    attributes = {
        "format": WEIGHTS_FORMAT,
        "format_version": SUPPORTED_FORMAT_VERSION,
        "config": config_json,
        "source_sha256": hashlib.sha256(source_bytes).hexdigest(),
        "torch_version": str(torch.__version__),
    }
    payload = h5_bytes(arrays, attributes)
    check_output_path(destination, source)
    if csv_path is not None:
        check_output_path(csv_path, source)
    try:
        atomic_write(destination, lambda f: f.write(payload))
        if csv_path is not None:
            write_csv(csv_path, summary_rows(arrays))
    except OSError as err:
        raise InputError(f"{err.filename or destination}: cannot write ({err.strerror or err})") from None
    return arrays


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    destination = args.destination or args.source.with_suffix(".h5")
    arrays = convert(args.source, destination, args.csv)
    print(f"wrote {destination} ({len(arrays)} tensors)")
    if args.csv is not None:
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    run_cli(main, "pth2h5.py")

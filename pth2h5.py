"""Convert a PyTorch checkpoint (.pth) to the HDF5 weights that Numpy_V2 reads.

Usage: python pth2h5.py [SRC.pth] [DST.h5] [--csv PATH]

Every tensor of ``net_state_dict`` except ``num_batches_tracked`` becomes a flat
float32 dataset at the root, named by its state-dict key (dots kept), as the
original repository's converter wrote them. Root attributes: ``format``,
``format_version``, ``config`` (JSON, with the model config, inferred for the original
repository's config-less checkpoints), ``source_sha256`` and ``torch_version``.

The source is loaded with ``weights_only=True`` on the CPU, so a malicious
pickle is refused rather than run; a state dict that does not build the model it
records is refused with the message ``Numpy_V2`` would give
(``icnn.spec.check_weights``). The format is ``icnn.h5weights``; the output is
written atomically and never over the source. Bad input gives one line on stderr
and exit status 2.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from icnn.h5weights import write_weights
from icnn.shipped import default_weights
from icnn.spec import COUNTER_SUFFIX, ModelConfig
from Pytorch_V1.checkpoint import check_state_dict, load_checkpoint, model_config_of
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.safewrite import atomic_write

DEFAULT_SOURCE = default_weights(".pth")


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pth2h5.py", description="Convert an ICNN_s checkpoint (.pth) to HDF5 weights (.h5).")
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE, help=f"checkpoint to read (default {DEFAULT_SOURCE})")
    parser.add_argument("destination", nargs="?", type=Path, default=None, help="HDF5 file to write (default: SOURCE with .h5, only when no such file exists; name an existing file to replace it)")
    parser.add_argument("--csv", type=Path, default=None, metavar="PATH", help="also write a per-tensor summary (name, shape, mean, std)")
    return parser.parse_args(argv)


def weight_arrays(state_dict: dict) -> dict[str, np.ndarray]:
    """Every tensor except the BN step counters, as float32 NumPy arrays, in state-dict order.

    ``state_dict`` has passed ``check_state_dict`` (dense, floating, finite, the model's shapes).
    """
    return {key: value.detach().to("cpu", torch.float32).numpy()
            for key, value in state_dict.items() if not key.endswith(COUNTER_SUFFIX)}


def checkpoint_config(ckpt: dict, model: ModelConfig) -> dict:
    """The checkpoint's config with the checked model config filled in (inferred for the original repository's layout)."""
    recorded = ckpt.get("config")
    config = dict(recorded) if isinstance(recorded, dict) else {}
    config["model"] = model.to_dict()
    return config


def summary_rows(arrays: dict[str, np.ndarray]) -> list[list]:
    """name, shape, mean, std per tensor (statistics in float64)."""
    rows = [["name", "shape", "mean", "std"]]
    for key, array in arrays.items():
        values = array.astype(np.float64)
        rows.append([key, "x".join(str(d) for d in array.shape), f"{values.mean():.9g}", f"{values.std():.9g}"])
    return rows


def write_csv(path: Path, rows: list[list], reads=()) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode("utf-8")), reads=reads)


def convert(source: Path, destination: Path, csv_path: Path | None = None) -> dict[str, np.ndarray]:
    """Read ``source`` safely, check that it builds the model, write ``destination`` (and the CSV) atomically.

    Raises
    ------
    InputError
        An unsafe or foreign source, a config of the wrong type, a state dict that
        does not build the model (the message ``Numpy_V2`` would give), or an output
        that is one of the inputs or cannot be written.
    """
    source_bytes = _read_bytes(source)
    ckpt = load_checkpoint(source, "cpu")  # weights_only=True: never runs code from the file
    model_config = model_config_of(ckpt, str(source))
    check_state_dict(ckpt["net_state_dict"], model_config, str(source))
    config = checkpoint_config(ckpt, model_config)
    arrays = weight_arrays(ckpt["net_state_dict"])
    attributes = {"source_sha256": hashlib.sha256(source_bytes).hexdigest(), "torch_version": str(torch.__version__)}
    write_weights(destination, arrays, config, attributes, reads=(source,))
    if csv_path is not None:
        write_csv(csv_path, summary_rows(arrays), reads=(source, destination))
    return arrays


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None


def main(argv: list[str] | None = None) -> None:
    args = get_args(argv)
    destination = args.destination or args.source.with_suffix(".h5")
    if args.destination is None and destination.exists():
        # The default never replaces a file (the shipped ckpt/*.h5 among them): replacing is asked for by name.
        raise InputError(f"{destination} exists; to replace it, name it: python pth2h5.py {args.source} {destination}")
    arrays = convert(args.source, destination, args.csv)
    print(f"wrote {destination} ({len(arrays)} tensors)")
    if args.csv is not None:
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    run_cli(main, "pth2h5.py")

"""Convert a PyTorch checkpoint (.pth) to the HDF5 weights that Numpy_V2 reads.

Usage: python pth2h5.py [SRC.pth] [DST.h5] [--csv PATH] [--overwrite]

Every tensor of ``net_state_dict`` except ``num_batches_tracked`` becomes a flat
float32 dataset at the root, named by its state-dict key (dots kept), as the
original repository's converter wrote them. Root attributes: ``format``,
``format_version``, ``config`` (JSON, with the model config, its width and depth among it,
inferred for the original repository's config-less checkpoints), ``source_sha256`` and
``torch_version``. The tensors are those :func:`icnn.spec.expected_shapes` lists for that config.

The source is loaded with ``weights_only=True`` on the CPU, so a malicious
pickle is refused rather than run; a state dict that does not build the model it
records is refused with the message ``Numpy_V2`` would give
(``icnn.spec.check_weights``). The format is ``icnn.h5weights``; the output is
written atomically and never over the source. The destination must end in ``.h5`` or
``.hdf5``; an existing one is replaced only when this command wrote it and it is unchanged
since (the user's record of outputs, ``deepdenoise1d.safewrite``), or with ``--overwrite`` when it is HDF5 weights of
this format; a checkpoint or any other file is never replaced. Bad input gives one line
on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import h5py
import numpy as np
import torch

from icnn.h5weights import WEIGHTS_FORMAT, disable_filter_plugins, write_weights
from icnn.shipped import default_weights
from icnn.spec import COUNTER_SUFFIX, ModelConfig
from Pytorch_V1.checkpoint import check_state_dict, file_sha256, load_checkpoint, model_config_of
from deepdenoise1d.cli import add_overwrite_arg, output_file
from deepdenoise1d.errors import InputError, run_cli, show_path
from deepdenoise1d.safewrite import atomic_write, guard_output, is_recorded, write_policy

DEFAULT_SOURCE = default_weights(".pth")
H5_SUFFIXES = (".h5", ".hdf5")


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pth2h5.py", description="Convert an ICNN_s checkpoint (.pth) to HDF5 weights (.h5).")
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE, help=f"checkpoint to read (default {DEFAULT_SOURCE})")
    parser.add_argument("destination", nargs="?", type=output_file, default=None,
                        help="HDF5 file to write, ending in .h5 or .hdf5 (default: SOURCE with .h5, only when no such "
                        "file exists). An existing file is replaced only when pth2h5.py wrote it, or with --overwrite "
                        "when it holds HDF5 weights of this format; never a checkpoint")
    parser.add_argument("--csv", type=output_file, default=None, metavar="PATH",
                        help="also write a per-tensor summary (name, shape, mean, std)")
    add_overwrite_arg(parser)
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


def is_weights_file(path: Path) -> bool:
    """True when ``path`` is an HDF5 file whose root ``format`` attribute is this project's weights format.

    Opened read-only with HDF5's filter plugins off; any error means no.
    """
    disable_filter_plugins()
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("format")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return value == WEIGHTS_FORMAT


def check_destination(destination: Path, source: Path, overwrite: bool) -> bool:
    """Refuse a destination that is not ``.h5``/``.hdf5`` or that the write policy keeps.

    Returns
    -------
    bool
        Whether an existing destination may be replaced under ``--overwrite``
        (it holds HDF5 weights of this format).
    """
    if destination.suffix.lower() not in H5_SUFFIXES:
        guard_output(destination, (source,), kind="hdf5", make_parent=False)  # its reason first: an input, a checkpoint
        raise InputError(f"{destination}: the destination must end in .h5 or .hdf5 (HDF5 weights)")
    weights = destination.is_file() and is_weights_file(destination)
    if weights and not overwrite and not is_recorded(destination):
        raise InputError(f"{destination}: holds HDF5 weights that pth2h5.py did not write here; "
                         "pass --overwrite to replace them")
    replace_weights = overwrite and weights
    guard_output(destination, (source,), kind="hdf5", replace_weights=replace_weights, make_parent=False)
    return replace_weights


def convert(source: Path, destination: Path, csv_path: Path | None = None,
            replace_weights: bool = False) -> dict[str, np.ndarray]:
    """Read ``source`` safely, check that it builds the model, write ``destination`` (and the CSV) atomically.

    Raises
    ------
    InputError
        An unsafe or foreign source, a config of the wrong type, a state dict that
        does not build the model (the message ``Numpy_V2`` would give), or an output
        that is one of the inputs or cannot be written.
    """
    ckpt = load_checkpoint(source, "cpu")  # size-checked, weights_only=True: never runs code from the file
    model_config = model_config_of(ckpt, str(source))
    check_state_dict(ckpt["net_state_dict"], model_config, str(source))
    config = checkpoint_config(ckpt, model_config)
    arrays = weight_arrays(ckpt["net_state_dict"])
    attributes = {"source_sha256": file_sha256(source), "torch_version": str(torch.__version__)}
    write_weights(destination, arrays, config, attributes, reads=(source,), replace_weights=replace_weights)
    if csv_path is not None:
        write_csv(csv_path, summary_rows(arrays), reads=(source, destination))
    return arrays


def main(argv: list[str] | None = None) -> None:
    args = get_args(argv)
    destination = args.destination or args.source.with_suffix(".h5")
    if args.destination is None and destination.exists():
        # The default never replaces a file (the shipped ckpt/*.h5 among them): replacing is asked for by name.
        raise InputError(f"{destination} exists; to replace it, name it: python pth2h5.py {args.source} {destination}")
    with write_policy(overwrite=args.overwrite):
        replace_weights = check_destination(destination, args.source, args.overwrite)  # before the work
        if args.csv is not None:
            guard_output(args.csv, (args.source, destination), kind="text", make_parent=False)
        arrays = convert(args.source, destination, args.csv, replace_weights)
    print(f"wrote {show_path(destination)} ({len(arrays)} tensors)")
    if args.csv is not None:
        print(f"wrote {show_path(args.csv)}")


if __name__ == "__main__":
    run_cli(main, "pth2h5.py")

"""``deepdenoise1d``: the one command that ``pip install`` puts on the PATH.

    deepdenoise1d denoise IN OUT [--column NAME] [--method auto|net|tv|...]   # as Numpy_V2/Numpy_test.py --input IN --output OUT
    deepdenoise1d scoreboard IN [--column NAME]     # every candidate's SURE estimate on IN, nothing written
    deepdenoise1d train --run-dir R ...             # Pytorch_V1/train.py (needs the [torch] extra)
    deepdenoise1d to-h5 SRC.pth DST.h5              # pth2h5.py
    deepdenoise1d to-onnx SRC.pth DST.onnx          # pth2onnx.py (needs the [torch] and [onnx] extras)

Each subcommand hands the rest of its arguments to the script it names, so ``deepdenoise1d train --help``
is train.py's help and the original paths (``python Pytorch_V1/train.py``) keep working unchanged. It sits
at the top, beside the converters, because it reaches every layer; each layer is imported only when its
subcommand runs, so the NumPy subcommands work without torch.
"""
from __future__ import annotations

import importlib
import sys

PROG = "deepdenoise1d"
# subcommand -> (module with main(argv), the extra it needs or None, one line of help)
SUBCOMMANDS = {
    "denoise": ("Numpy_V2.Numpy_test", None, "denoise a record file: IN OUT, then Numpy_test.py's flags"),
    "scoreboard": ("Numpy_V2.scoreboard_cli", None, "print every candidate's SURE estimate on a record file"),
    "train": ("Pytorch_V1.train", "torch", "train or adapt a network (Pytorch_V1/train.py)"),
    "to-h5": ("pth2h5", "torch", "convert a .pth checkpoint to the HDF5 weights the NumPy side reads"),
    "to-onnx": ("pth2onnx", "torch,onnx", "export a .pth checkpoint to ONNX"),
}


def usage() -> str:
    lines = [f"usage: {PROG} SUBCOMMAND [ARGS...]   ({PROG} SUBCOMMAND --help for its flags)", "", "subcommands:"]
    lines += [f"  {name:<11} {text}" for name, (_, _, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def denoise_argv(rest: list[str]) -> list[str]:
    """``IN OUT [flags]`` -> Numpy_test.py's ``--input IN --output OUT [flags]`` (flags alone pass through)."""
    positional = []
    while rest and len(positional) < 2 and not rest[0].startswith("-"):
        positional.append(rest.pop(0))
    if len(positional) == 1:
        return ["--input", positional[0], *rest]  # Numpy_test.py then says --output is missing
    return (["--input", positional[0], "--output", positional[1]] if positional else []) + rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"{PROG}: error: unknown subcommand {name!r}\n{usage()}", file=sys.stderr)
        return 2
    module_name, extra, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if extra is None or err.name not in ("torch", "onnx", "onnxruntime", "onnxscript"):
            raise
        print(f"{PROG} {name}: error: needs {err.name}, which is not installed: "
              f"pip install 'research-on-deep-denoising[{extra}]'", file=sys.stderr)
        return 2
    if name == "denoise":
        rest = denoise_argv(rest)
    from deepdenoise1d.errors import run_cli

    run_cli(lambda: module.main(rest), f"{PROG} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

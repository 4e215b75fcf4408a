"""Export a PyTorch checkpoint (.pth) to an ONNX graph that ONNX Runtime runs.

Usage: python pth2onnx.py SRC.pth [DST.onnx] [--bn-mode fixed|unfixed] [--overwrite]

The graph computes ``ICNN_s.forward(x, h, bn_mode)`` for one BN mode (``--bn-mode``,
default the mode the checkpoint records; ``unfixed`` normalises each signal by its own
statistics inside the graph), one graph per file. Inputs and output are float32:

- ``x``: (N, 1, L) noisy signals; N and L are dynamic (named ``batch`` and ``length``),
  L >= 2^depth (``icnn.spec.min_length``: 16 for the original) as for the other backends;
- ``h``: (N, 1, L) the Wiener prior of each signal, computed by the caller with
  ``deepdenoise1d.classical.wiener_inverse_response`` (float64, then float32); absent for
  a model without the prior branch;
- ``denoised``: (N, 1, L).

A model whose config records ``input_scale`` s ≠ 1 (trained on a record divided by s)
divides ``x`` by s inside the graph and multiplies the output by s, as the other backends
do; h is scale-invariant, so the caller computes it from ``x`` as given. An offset-free model
(``baseline`` "median") takes each signal's lower median off inside the graph and adds it back;
its h is the prior of the centred signal, ``wiener_inverse_response(x − m)`` with m the lower median
of each row (sorted index (L − 1) // 2), as ``NumpyICNN.prior`` computes it.

Why ``h`` is an input, not part of the graph: h is
``|ifft(fft(wiener(x)) / fft(x))|`` where ``wiener`` is SciPy's local-statistics filter
(a data-dependent noise estimate and a ``where``), computed in float64 by both other
backends. Inside the graph it would need that filter rewritten in ONNX operators and
float64 DFTs; as an input all three runtimes share the same h bit for bit, so parity
measures the network alone (max error against torch in float64: tests/test_pth2onnx.py).

Pinned choices:

- exporter: ``torch.onnx.export(dynamo=True)``, because the TorchScript exporter traces
  shapes as tensors and cannot keep the length symbolic through ``pad_to_match``;
- opset 18: the opset the dynamo exporter translates to natively (no version-conversion
  pass), and which ONNX Runtime runs fully.

Two parts are traced in an equivalent, export-friendly form (same arithmetic up to
float32 rounding order): the bottleneck's per-signal kernel, a grouped convolution with
one group per signal in PyTorch, is traced as a batched matrix product (ONNX's ``group``
is a constant, so the batch would be fixed); ``nn.MaxPool1d(2)`` is traced as a 2-D
pooling over (1, 2) (the same maxima; the exporter fixes the length through the 1-D one).

The source is loaded with ``weights_only=True`` and checked as ``pth2h5.py`` does. The
ONNX metadata holds ``format``, ``config`` (JSON, the checkpoint's config with the model
config), ``bn_mode``, ``source_sha256`` and ``torch_version``. The graph must pass
``onnx.checker.check_model(full_check=True)``, keep both axes dynamic and match PyTorch
on a few signals in ONNX Runtime before it is written, atomically and never over the
source, a checkpoint or a file this project did not write (``--overwrite`` for the
latter). Bad input gives one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import Pytorch_V1.model as torch_model
from icnn.spec import BN_MODES, TRAIN_LENGTH, ModelConfig, min_length
from Pytorch_V1.checkpoint import check_state_dict, file_sha256, load_checkpoint, load_state_dict_strict, model_config_of
from Pytorch_V1.model import ICNN_s
from deepdenoise1d.cli import add_bn_mode_arg, add_overwrite_arg, output_file
from deepdenoise1d.errors import InputError, run_cli, show_path
from deepdenoise1d.safewrite import atomic_write, guard_output, write_policy
from deepdenoise1d.synthesis import SpikePrior, noisy_pairs

OPSET = 18  # the dynamo exporter's own opset: no version-conversion pass
ONNX_FORMAT = "icnn_s-onnx"
ONNX_SUFFIX = ".onnx"
BATCH_AXIS, LENGTH_AXIS = "batch", "length"
SELF_CHECK_TOLERANCE = 1e-3  # relative; float32 rounding is ~1e-6, an export error is O(1)


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pth2onnx.py", description="Export an ICNN_s checkpoint (.pth) to ONNX (.onnx) for ONNX Runtime.")
    parser.add_argument("source", type=Path, help="checkpoint to read")
    parser.add_argument("destination", nargs="?", type=output_file, default=None,
                        help="ONNX file to write, ending in .onnx (default: SOURCE with .onnx, only when no such file "
                        "exists). An existing file is replaced only when this project wrote it, or with --overwrite; "
                        "never a checkpoint")
    add_bn_mode_arg(parser, BN_MODES)
    add_overwrite_arg(parser)
    return parser.parse_args(argv)


def checkpoint_config(ckpt: dict, model: ModelConfig) -> dict:
    """The checkpoint's config with the checked model config filled in (as pth2h5.py records it)."""
    recorded = ckpt.get("config")
    config = dict(recorded) if isinstance(recorded, dict) else {}
    config["model"] = model.to_dict()
    return config


class _Exported(nn.Module):
    """``model(x, h, bn_mode)`` with the mode fixed: the graph's inputs are the tensors only."""

    def __init__(self, model: ICNN_s, bn_mode: str):
        super().__init__()
        self.model = model
        self.bn_mode = bn_mode
        self.scale = model.config.input_scale

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return scaled_forward(self.model, x, h, self.bn_mode, self.scale)


class _ExportedNoPrior(_Exported):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_forward(self.model, x, None, self.bn_mode, self.scale)


def scaled_forward(model: ICNN_s, x: torch.Tensor, h: torch.Tensor | None, bn_mode: str, scale: float) -> torch.Tensor:
    """``scale · model(x / scale, h)``, as the other backends denoise; at scale 1 the model alone (no extra nodes)."""
    if scale == 1.0:
        return model(x, h, bn_mode)
    return model(x / scale, h, bn_mode) * scale


class _PairMaxPool(nn.Module):
    """``nn.MaxPool1d(k)`` (stride k, no padding) as a 2-D pooling over (1, k): the same maxima."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x[:, :, None], (1, self.kernel))[:, :, 0]


def batched_modulated_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """``Pytorch_V1.model.modulated_conv1d`` as one batched matrix product (no group count in the graph).

    x: (N, C_in, L); weight: (C_out, C_in, K); scale: (N, C_out, K). Signal n's kernel
    ``weight · scale[n]`` times its K shifted copies of x (zero padding K // 2).
    """
    n, c_in, length = x.shape
    c_out, _, k = weight.shape
    kernels = (weight[None] * scale[:, :, None, :]).reshape(n, c_out, c_in * k)
    padded = F.pad(x, [k // 2, k // 2])
    patches = torch.stack([padded[:, :, i : i + length] for i in range(k)], dim=2).reshape(n, c_in * k, length)
    y = torch.matmul(kernels, patches)
    return y if bias is None else y + bias[None, :, None]


def self_check_lengths(config: ModelConfig) -> tuple[int, int]:
    """An odd and an even length, both at least the model's minimum: both sides of ``pad_to_match``."""
    shortest = min_length(config)
    return shortest + 1, max(TRAIN_LENGTH, 2 * shortest)


def export_form(model: ICNN_s) -> ICNN_s:
    """A copy of ``model`` whose 1-D max-pools are the 2-D equivalent (see the module docstring)."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MaxPool1d):
                kernel = int(np.ravel(child.kernel_size)[0])
                stride = int(np.ravel(child.stride)[0])
                if (stride, int(np.ravel(child.padding)[0]), int(np.ravel(child.dilation)[0]), child.ceil_mode) != (kernel, 0, 1, False):
                    raise InputError(f"cannot export a max-pool other than kernel = stride, no padding ({child})")
                setattr(module, name, _PairMaxPool(kernel))
    return model


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress lines, warnings and log records are not the user's business."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_graph(model: ICNN_s, bn_mode: str):
    """The ONNX ModelProto of ``model`` in ``bn_mode``, with dynamic batch and length.

    Raises
    ------
    InputError
        The exporter failed, or fixed an axis that must stay dynamic.
    """
    import onnx  # noqa: F401  (the exporter needs it; a missing package is reported below)

    prior = model.wienernet is not None
    wrapper = (_Exported if prior else _ExportedNoPrior)(export_form(model), bn_mode).eval()
    names = ["x", "h"] if prior else ["x"]
    example = spike_batch(3, self_check_lengths(model.config)[1])
    args = (example, model.prior(example)) if prior else (example,)
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    length = torch.export.Dim(LENGTH_AXIS, min=min_length(model.config))
    dynamic = {name: {0: batch, 2: length} for name in names}
    try:
        with _quiet_exporter(), mock.patch.object(torch_model, "modulated_conv1d", batched_modulated_conv1d):
            program = torch.onnx.export(wrapper, args, dynamo=True, opset_version=OPSET, input_names=names,
                                        output_names=["denoised"], dynamic_shapes=dynamic, verbose=False)
    except Exception as err:  # the exporter's failures share no type
        raise InputError(f"ONNX export failed ({type(err).__name__}: {_first_line(err)})") from None
    proto = program.model_proto
    check_dynamic(proto)
    name_output_axes(proto)
    return proto


def _first_line(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0][:200] if lines else "no message"


def graph_shapes(proto) -> dict[str, list]:
    """Each graph input's and output's shape: an int per fixed axis, the name of each dynamic one."""
    shapes = {}
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in dims]
    return shapes


def check_dynamic(proto) -> None:
    """Refuse a graph whose inputs or output lost a dynamic batch or length axis."""
    for name, shape in graph_shapes(proto).items():
        if len(shape) != 3 or isinstance(shape[0], int) or shape[1] != 1 or isinstance(shape[2], int):
            raise InputError(f"ONNX export fixed an axis of {name!r} ({shape}); expected (batch, 1, length)")


def name_output_axes(proto) -> None:
    """Name the output's axes as the input's: its length is the input's, as every pad only restores a skip's
    length (the exporter writes it as a nest of Max terms that are all 0; :func:`self_check` runs two lengths)."""
    (output,) = proto.graph.output
    batch, _, length = output.type.tensor_type.shape.dim
    batch.dim_param, length.dim_param = BATCH_AXIS, LENGTH_AXIS


def add_metadata(proto, config: dict, bn_mode: str, source_sha256: str) -> None:
    import onnx

    values = {"format": ONNX_FORMAT, "config": json.dumps(config, sort_keys=True), "bn_mode": bn_mode,
              "source_sha256": source_sha256, "torch_version": str(torch.__version__)}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, values)


def check_graph(proto) -> None:
    """``onnx.checker.check_model(full_check=True)`` (strict shape inference included), one line on failure."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise InputError(f"the exported graph fails the ONNX checker ({_first_line(err)})") from None


def spike_batch(n: int, length: int, seed: int = 0) -> torch.Tensor:
    """``n`` seeded noisy spike signals (σ 3), float32 (n, 1, length)."""
    noisy = noisy_pairs(np.random.default_rng(seed), n, prior=SpikePrior(length=length))[1]
    return torch.from_numpy(noisy.astype(np.float32))[:, None]


def self_check(data: bytes, model: ICNN_s, bn_mode: str) -> None:
    """Run the graph in ONNX Runtime on a few signals of two lengths; refuse it when it is not the model."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    for length in self_check_lengths(model.config):
        x = spike_batch(2, length, seed=length)
        feed = {"x": x.numpy()}
        h = model.prior(x)
        if h is not None:
            feed["h"] = h.numpy()
        with torch.no_grad():
            expected = scaled_forward(model, x, h, bn_mode, model.config.input_scale).numpy()
        got = session.run(None, feed)[0]
        error = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))
        if got.shape != expected.shape or not error <= SELF_CHECK_TOLERANCE:
            raise InputError(f"the exported graph does not compute the model at L = {length} "
                             f"(relative error {error:.2e}, shape {got.shape})")


def export(source: Path, destination: Path, bn_mode: str | None = None) -> dict:
    """Read ``source`` safely, export it in ``bn_mode`` (None: its recorded mode), check, write ``destination``.

    Returns
    -------
    dict
        The graph's input and output shapes (:func:`graph_shapes`) and its ``bn_mode``.

    Raises
    ------
    InputError
        An unsafe or foreign source, a state dict that does not build the model, a failed
        export or check, or an output the write policy refuses.
    """
    ckpt = load_checkpoint(source, "cpu")  # size-checked, weights_only=True: never runs code from the file
    model_config = model_config_of(ckpt, str(source))
    check_state_dict(ckpt["net_state_dict"], model_config, str(source))
    model = ICNN_s(model_config)
    load_state_dict_strict(model, ckpt["net_state_dict"], str(source))
    model.eval()
    mode = bn_mode or model_config.bn_mode
    proto = export_graph(model, mode)
    add_metadata(proto, checkpoint_config(ckpt, model_config), mode, file_sha256(source))
    check_graph(proto)
    data = proto.SerializeToString()
    self_check(data, model, mode)
    atomic_write(destination, lambda f: f.write(data), reads=(source,))
    return {"shapes": graph_shapes(proto), "bn_mode": mode}


def check_destination(destination: Path, source: Path) -> None:
    """Refuse a destination that is not ``.onnx`` or that the write policy keeps (before the export's work)."""
    if destination.suffix.lower() != ONNX_SUFFIX:
        raise InputError(f"{destination}: the destination must end in {ONNX_SUFFIX}")
    guard_output(destination, (source,))


def _missing_packages() -> list[str]:
    import importlib.util

    return [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> None:
    args = get_args(argv)
    destination = args.destination or args.source.with_suffix(ONNX_SUFFIX)
    if args.destination is None and destination.exists():
        # The default never replaces a file: replacing is asked for by name.
        raise InputError(f"{destination} exists; to replace it, name it: python pth2onnx.py {args.source} {destination}")
    missing = _missing_packages()
    if missing:
        raise InputError(f"needs {', '.join(missing)} (pip install -r requirements.txt)")
    with write_policy(overwrite=args.overwrite):
        check_destination(destination, args.source)
        result = export(args.source, destination, args.bn_mode)
    shapes = ", ".join(f"{name} {shape}" for name, shape in result["shapes"].items())
    print(f"wrote {show_path(destination)} (opset {OPSET}, bn {result['bn_mode']}; {shapes})")


if __name__ == "__main__":
    run_cli(main, "pth2onnx.py")

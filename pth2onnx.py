"""Export a PyTorch checkpoint (.pth) to an ONNX graph that ONNX Runtime runs.

Usage: python pth2onnx.py SRC.pth [DST.onnx] [--bn-mode fixed|unfixed] [--prior-input] [--overwrite]

By default the graph is self-contained: ONE input, ONE output, for one BN mode (``--bn-mode``,
default the mode the checkpoint records; ``unfixed`` normalises each signal by its own statistics
inside the graph), one graph per file:

- ``x``: float64 (N, 1, L) noisy signals; N and L are dynamic (named ``batch`` and ``length``),
  L >= 2^depth (``icnn.spec.min_length``: 16 for the original, 32 for ckpt_universal);
- ``denoised``: float64 (N, 1, L).

Float64, because the command line keeps a float64 record in float64 around a scale-equivariant
network (its median, s(y), the prior and the way back; only the normalised signal meets the float32
network), so a record at an offset of 1e3 and a scale of 1e-3 loses nothing to float32; a float32
record is fed as float64 exactly. The graph computes, per signal, what
``Numpy_V2.model.NumpyICNN.denoise`` does to a float64 window (:func:`denoise_window`):

- a scale-equivariant model (NumPy's float64 path): x / ``input_scale``, an offset-free model's lower
  median m off, the Wiener prior h of that, s(y) (median |Δy| / SCALE_MAD, else the RMS) and
  z = x / s in float64, the float32 network g(z, h), s·g in float64 with the trust region (a sample
  that s·g moves by more than TRUST_REGION·s keeps its noisy value), m back on, · ``input_scale``;
- any other model (NumPy's float32 path): m off in float64 and the difference rounded to float32,
  / ``input_scale``, h of that, ``ICNN_s.forward(x, h)`` in float32, · ``input_scale``, m back on in
  float64.

A record longer than the model's ``train_length`` is not one window: run it as the command line
does (``deepdenoise1d.streaming``: half-overlapping windows in the type it computes in, blended
with a Hann cross-fade) with ``deepdenoise1d.onnx_runner.denoise_onnx``, which reads
``train_length`` from the metadata.

The prior inside the graph (:func:`graph_prior`) is ``wiener_inverse_response``
(``deepdenoise1d.classical``) written in torch operators and computed in float64: SciPy's
local-statistics Wiener filter (window 3, zero padding, noise = the mean local variance),
then ``|ifft(W·conj(X) / (|X|² + (1e-3·max|X|)²))|`` with X, W the FFTs (ONNX ``DFT``) of
the signal and of its filtered version, the inverse taken as ``|fft(conj(T))| / L`` (ONNX
Runtime 1.32's inverse DFT is accurate to float32 only at lengths that are no power of two).
Only h itself is rounded to float32, as the other backends round it: the graph's h is NumPy's
float64 h rounded to float32 (tests/test_onnx_self_contained.py).

``--prior-input`` exports the earlier form instead, the network given the prior: inputs
``x`` and ``h``, float32 (N, 1, L), h computed by the caller with
``deepdenoise1d.classical.wiener_inverse_response`` (float64, then float32) of x less its lower
median for an offset-free model (``NumpyICNN.prior``); output ``denoised``; a model without the
prior branch has ``x`` alone. That graph computes ``s · ICNN_s.forward(x / s, h)`` (s =
``input_scale``) and leaves the windows to the caller; its parity against PyTorch given the
same h is tests/test_pth2onnx.py.

Pinned choices:

- exporter: ``torch.onnx.export(dynamo=True)``, because the TorchScript exporter traces
  shapes as tensors and cannot keep the length symbolic through ``pad_to_match``;
- opset 18: the opset the dynamo exporter translates to natively (no version-conversion
  pass), and which ONNX Runtime runs fully (``DFT`` in float64 included).

One part is traced in an equivalent, export-friendly form: ``nn.MaxPool1d(2)`` as a 2-D pooling over
(1, 2) (the same maxima; the exporter fixes the length through the 1-D one).

The source is loaded with ``weights_only=True`` and checked as ``pth2h5.py`` does. The
ONNX metadata holds ``format``, ``graph`` (``self_contained`` or ``prior_input``), ``config``
(JSON, the checkpoint's config with the model config: ``config["model"]["train_length"]`` is the
window the runner uses), ``min_length``, ``bn_mode``, ``source_sha256`` and ``torch_version``.
The graph must pass ``onnx.checker.check_model(full_check=True)``, keep both axes dynamic and
match PyTorch (given NumPy's float64 prior) on a few signals in ONNX Runtime before it is
written, atomically and never over the source, a checkpoint or a file this project did not
write (``--overwrite`` for the latter). Bad input gives one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import Pytorch_V1.model as torch_model
from icnn.spec import BN_MODES, SCALE_MAD, TRAIN_LENGTH, TRUST_REGION, ModelConfig, min_length, symmetric_part
from Pytorch_V1.checkpoint import check_state_dict, file_sha256, load_checkpoint, load_state_dict_strict, model_config_of
from Pytorch_V1.model import ICNN_s
from deepdenoise1d.classical import WIENER_WINDOW, wiener_inverse_response
from deepdenoise1d.cli import add_bn_mode_arg, add_overwrite_arg, output_file
from deepdenoise1d.errors import InputError, run_cli, show_path
from deepdenoise1d.safewrite import atomic_write, guard_output, write_policy
from deepdenoise1d.synthesis import SpikePrior, noisy_pairs

OPSET = 18  # the dynamo exporter's own opset: no version-conversion pass
ONNX_FORMAT = "icnn_s-onnx"
ONNX_SUFFIX = ".onnx"
BATCH_AXIS, LENGTH_AXIS = "batch", "length"
SELF_CHECK_TOLERANCE = 1e-3  # relative; float32 rounding is ~1e-6, an export error is O(1)
SELF_CONTAINED, PRIOR_INPUT = "self_contained", "prior_input"  # the metadata's ``graph``: one input, or x and h
# wiener_inverse_response's Tikhonov floor, relative to max|X|: read from it, so the graph cannot drift from it
REL_FLOOR = inspect.signature(wiener_inverse_response).parameters["rel_floor"].default


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pth2onnx.py", description="Export an ICNN_s checkpoint (.pth) to ONNX (.onnx) for ONNX Runtime.")
    parser.add_argument("source", type=Path, help="checkpoint to read")
    parser.add_argument("destination", nargs="?", type=output_file, default=None,
                        help="ONNX file to write, ending in .onnx (default: SOURCE with .onnx, only when no such file "
                        "exists). An existing file is replaced only when this project wrote it, or with --overwrite; "
                        "never a checkpoint")
    add_bn_mode_arg(parser, BN_MODES)
    parser.add_argument("--prior-input", action="store_true",
                        help="export the network alone, as earlier versions did: inputs x and h, the Wiener prior "
                        "computed by the caller, no windows (default: one input x; the prior, the median and scale "
                        "normalisation are inside the graph)")
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


def f64(value: float) -> torch.Tensor:
    """A float64 constant for the graph: the exporter stores a Python float as float32 first (1e-3 would become
    1.0000000475e-3 in a float64 product)."""
    return torch.tensor(value, dtype=torch.float64)


def power_of_two(x: torch.Tensor) -> torch.Tensor:
    """A power of two near max|x| along the last axis (kept), 1 where that is all zero: x / it is exact
    (``deepdenoise1d.magnitude.power_of_two``; any power of two gives NumPy's bits, it only keeps squares finite)."""
    peak = x.abs().amax(dim=-1, keepdim=True)
    safe = torch.where(peak > 0, peak, torch.ones_like(peak))
    return torch.pow(f64(2.0), torch.floor(torch.log2(safe)))


def graph_prior(x: torch.Tensor) -> torch.Tensor:
    """The Wiener prior h of (N, 1, L) signals in exportable torch operators, computed in float64, h float32.

    ``deepdenoise1d.classical.wiener_inverse_response`` step by step, on x divided by a power of two (exact;
    h is scale-free): SciPy's local-statistics Wiener filter (window ``WIENER_WINDOW``, zero padding: local
    mean μ and variance v = mean(x²) − μ² over the window, noise ν = the signal's mean v, then μ where v ≤ ν,
    else μ + (1 − ν / v)(x − μ)); then ``|ifft(W·conj(X) / (|X|² + (REL_FLOOR·max|X|)²))|`` with X and W the
    FFTs of x and of the filtered x (the floor 1 where X is all zero: h = 0), the inverse taken as a forward
    DFT of the conjugate.
    """
    z = x[:, 0].double()
    z = z / power_of_two(z)
    length = z.shape[-1]
    half = WIENER_WINDOW // 2
    padded = F.pad(z, [half, half])
    taps = [padded[:, i : i + length] for i in range(WIENER_WINDOW)]
    total, squares = taps[0], taps[0] * taps[0]
    for tap in taps[1:]:
        total, squares = total + tap, squares + tap * tap
    mean = total / WIENER_WINDOW
    var = squares / WIENER_WINDOW - mean * mean
    noise = var.mean(dim=-1, keepdim=True)
    # where v = ν = 0 the unused branch is 0/0; Where picks μ there, as NumPy's ``where`` does
    filtered = torch.where(var <= noise, mean, mean + (1.0 - noise / var) * (z - mean))
    spectrum, response = torch.fft.fft(z), torch.fft.fft(filtered)
    xr, xi, wr, wi = spectrum.real, spectrum.imag, response.real, response.imag
    power = xr * xr + xi * xi
    peak = power.amax(dim=-1, keepdim=True).sqrt()
    denominator = power + torch.where(peak > 0, (f64(REL_FLOOR) * peak) ** 2, torch.ones_like(peak))
    # T = W·conj(X) / denominator and h = |ifft(T)| = |fft(conj(T))| / L: ONNX Runtime 1.32's inverse DFT of a
    # length that is no power of two is accurate to float32 only (~1e-7), its forward DFT to float64 (~1e-14)
    conj_transfer = torch.complex((wr * xr + wi * xi) / denominator, (wr * xi - wi * xr) / denominator)
    return (torch.fft.fft(conj_transfer).abs() / length).float()[:, None]


def noise_scale64(x: torch.Tensor) -> torch.Tensor:
    """s(y) of float64 (N, 1, L) signals as (N, 1, 1): ``icnn.equivariance.noise_scale`` in float64 (the lower
    median of |Δy| / SCALE_MAD, else the RMS, summed at a magnitude near 1)."""
    diffs = (x[..., 1:] - x[..., :-1]).abs()
    # the last of the k + 1 smallest, k = (L − 2) // 2: topk exports to ONNX, kthvalue does not
    median = torch.topk(diffs, (x.shape[-1] - 2) // 2 + 1, dim=-1, largest=False).values[..., -1:] / f64(SCALE_MAD)
    p = power_of_two(x)
    rms = p * ((x / p) ** 2).mean(dim=-1, keepdim=True).sqrt()
    return torch.where(median > 0, median, rms)


def denoise_window(model: ICNN_s, x: torch.Tensor, bn_mode: str) -> torch.Tensor:
    """``Numpy_V2.model.NumpyICNN.denoise`` of float64 (N, 1, L) signals of one window, float64 out.

    An equivariant model takes NumPy's float64 path (``wide``): x / ``input_scale``, its lower median m off
    (offset-free), h of that, s(y) and z = x / s in float64, the float32 network g on z, s·g in float64 with
    the trust region (x kept where s·g moves it by more than TRUST_REGION·s), m back on, · ``input_scale``.
    Any other model takes NumPy's float32 path: m off in float64, the difference rounded to float32, / the
    scale, h of that, ``model(x, h)`` in float32, · the scale, and m back on in float64.
    """
    config = model.config
    scale = config.input_scale
    offset_free = config.baseline == "median"
    if config.equivariant:
        if scale != 1.0:
            x = x / f64(scale)
        m = torch_model.baseline(x) if offset_free else None
        if m is not None:
            x = x - m
        h = graph_prior(x) if model.wienernet is not None else None
        s = noise_scale64(x)
        z = x / torch.where(s > 0, s, torch.ones_like(s))
        out = s * model.unet(z.float(), h, bn_mode).double()
        out = torch.where((out - x).abs() > f64(TRUST_REGION) * s, x, out)
        if m is not None:
            out = out + m
        return out * f64(scale) if scale != 1.0 else out
    m = torch_model.baseline(x) if offset_free else None
    z = (x if m is None else x - m).float()
    if scale != 1.0:
        z = z / scale  # a float32 constant, as NumPy's self.dtype.type(scale)
    h = graph_prior(z) if model.wienernet is not None else None
    y = model._whole(z, h, bn_mode)  # odd models: _SelfContained takes the odd part of this whole window
    if scale != 1.0:
        y = y * scale
    y = y.double()
    return y if m is None else y + m


class _SelfContained(nn.Module):
    """:func:`denoise_window` of the model in ``bn_mode``: the graph's one input is x, float64."""

    def __init__(self, model: ICNN_s, bn_mode: str):
        super().__init__()
        self.model = model
        self.bn_mode = bn_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return symmetric_part(self.model.config, lambda xs, _: denoise_window(self.model, xs, self.bn_mode), x)


class _PairMaxPool(nn.Module):
    """``nn.MaxPool1d(k)`` (stride k, no padding) as a 2-D pooling over (1, k): the same maxima."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x[:, :, None], (1, self.kernel))[:, :, 0]


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


def export_graph(model: ICNN_s, bn_mode: str, self_contained: bool = True):
    """The ONNX ModelProto of ``model`` in ``bn_mode``, with dynamic batch and length: self-contained (one
    input x) or, with ``self_contained`` False, the network given the prior (inputs x and h).

    Raises
    ------
    InputError
        The exporter failed, or fixed an axis that must stay dynamic.
    """
    import onnx  # noqa: F401  (the exporter needs it; a missing package is reported below)

    prior = model.wienernet is not None and not self_contained
    if self_contained:
        wrapper = _SelfContained(export_form(model), bn_mode).eval()
    else:
        wrapper = (_Exported if prior else _ExportedNoPrior)(export_form(model), bn_mode).eval()
    names = ["x", "h"] if prior else ["x"]
    example = spike_batch(3, self_check_lengths(model.config)[1])
    args = (example, model.prior(example)) if prior else (example.double() if self_contained else example,)
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    length = torch.export.Dim(LENGTH_AXIS, min=min_length(model.config))
    dynamic = {name: {0: batch, 2: length} for name in names}
    try:
        with _quiet_exporter():
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


def add_metadata(proto, config: dict, bn_mode: str, source_sha256: str, graph: str = SELF_CONTAINED,
                 shortest: int | None = None) -> None:
    """The metadata_props: ``config`` (JSON) carries ``model.train_length``, the window
    ``deepdenoise1d.onnx_runner`` cuts long records into; ``min_length`` the shortest signal the graph takes."""
    import onnx

    values = {"format": ONNX_FORMAT, "graph": graph, "config": json.dumps(config, sort_keys=True), "bn_mode": bn_mode,
              "source_sha256": source_sha256, "torch_version": str(torch.__version__)}
    if shortest is not None:
        values["min_length"] = str(shortest)
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


def numpy_reference(model: ICNN_s):
    """The model in NumPy (``Numpy_V2.model.NumpyICNN`` from its state dict): what the command line runs."""
    from Numpy_V2.model import NumpyICNN

    arrays = {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}
    return NumpyICNN(arrays, model.config, source="the checkpoint")


def self_check(data: bytes, model: ICNN_s, bn_mode: str, self_contained: bool = True) -> None:
    """Run the graph in ONNX Runtime on a few signals of two lengths; refuse it when it is not the model
    (self-contained: against ``NumpyICNN.denoise`` of the same float64 signals, prior and all)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    reference = numpy_reference(model) if self_contained else None
    for length in self_check_lengths(model.config):
        x = spike_batch(2, length, seed=length)
        feed = {"x": x.numpy()}
        if self_contained:  # one window: NumPy's denoise of a signal no longer than train_length
            x = x[..., : model.config.train_length].double()
            feed = {"x": x.numpy()}
            expected = reference.denoise(x.numpy()[:, 0], bn_mode)[:, None]
        else:
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


def export(source: Path, destination: Path, bn_mode: str | None = None, prior_input: bool = False) -> dict:
    """Read ``source`` safely, export it in ``bn_mode`` (None: its recorded mode), check, write ``destination``.

    The graph is self-contained (one input), or with ``prior_input`` the network given the prior (x and h).

    Returns
    -------
    dict
        The graph's input and output shapes (:func:`graph_shapes`), its ``bn_mode`` and ``graph``.

    Raises
    ------
    InputError
        An unsafe or foreign source, a state dict that does not build the model, a failed
        export or check, or an output the write policy refuses.
    """
    ckpt = load_checkpoint(source, "cpu")  # size-checked, weights_only=True: never runs code from the file
    model_config = model_config_of(ckpt, str(source))
    if prior_input and (model_config.odd or model_config.reversal):
        what = "an odd model (its −x pass needs the prior of −x" if model_config.odd else \
            "a time-reversal symmetric model (its reversed pass needs the prior of the reversed record"
        raise InputError(f"{source}: --prior-input cannot export {what}, which the caller does not give); export the "
                         "default self-contained graph")
    check_state_dict(ckpt["net_state_dict"], model_config, str(source))
    model = ICNN_s(model_config)
    load_state_dict_strict(model, ckpt["net_state_dict"], str(source))
    model.eval()
    mode = bn_mode or model_config.bn_mode
    proto = export_graph(model, mode, self_contained=not prior_input)
    graph = PRIOR_INPUT if prior_input else SELF_CONTAINED
    add_metadata(proto, checkpoint_config(ckpt, model_config), mode, file_sha256(source), graph,
                 min_length(model_config))
    check_graph(proto)
    data = proto.SerializeToString()
    self_check(data, model, mode, self_contained=not prior_input)
    atomic_write(destination, lambda f: f.write(data), reads=(source,))
    return {"shapes": graph_shapes(proto), "bn_mode": mode, "graph": graph}


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
        result = export(args.source, destination, args.bn_mode, args.prior_input)
    shapes = ", ".join(f"{name} {shape}" for name, shape in result["shapes"].items())
    what = "prior inside" if result["graph"] == SELF_CONTAINED else "prior h an input"
    print(f"wrote {show_path(destination)} (opset {OPSET}, bn {result['bn_mode']}, {what}; {shapes})")


if __name__ == "__main__":
    run_cli(main, "pth2onnx.py")

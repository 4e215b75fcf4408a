"""Denoise records of any length with a self-contained ONNX graph written by ``pth2onnx.py``, as the command line does.

The graph (one input ``x``, float64 (N, 1, L), one output ``denoised``, float64) denoises one window as
``Numpy_V2.model.NumpyICNN.denoise`` does: the Wiener prior, the median and scale normalisation and the trust
region are inside it. A record longer than the model's ``train_length`` goes through it as
``Numpy_V2/Numpy_test.py --method net`` sends it through the NumPy network (``deepdenoise1d.streaming``):
windows of ``train_length`` (read from the graph's metadata), half-overlapping, in the type the command line
computes in (float32 for a network that is not scale-equivariant, else the record's own: float32 or
float64), blended with a Hann cross-fade by :func:`deepdenoise1d.windows.denoise_windows`. Torch-free;
``onnxruntime`` is imported inside the functions only, so this package imports without it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from deepdenoise1d.errors import InputError
from deepdenoise1d.io import check_span, compute_dtype
from deepdenoise1d.windows import DEFAULT_BATCH, denoise_windows

FORMAT = "icnn_s-onnx"  # pth2onnx.py's metadata ``format``
SELF_CONTAINED = "self_contained"  # its ``graph`` for the one-input graph
RUN_BLOCK = 1024  # windows per session.run: bounds ONNX Runtime's activations (the blend is unchanged)


@dataclass
class OnnxModel:
    """An ONNX Runtime session of a self-contained graph and what its metadata says.

    ``train_length``: the window of long records; ``min_length``: the shortest signal the graph takes;
    ``bn_mode``: the BN mode fixed in the graph; ``config``: the checkpoint's config (JSON, decoded);
    ``equivariant``: the model is scale-equivariant (the command line then computes in the record's own type).
    """

    session: object
    config: dict
    train_length: int
    min_length: int
    bn_mode: str
    source: str
    equivariant: bool = False

    def work_dtype(self, dtype) -> np.dtype:
        """What the command line computes signals stored as ``dtype`` in (``deepdenoise1d.streaming``)."""
        return compute_dtype(dtype) if self.equivariant else np.dtype(np.float32)


def load_onnx(path: str | os.PathLike, threads: int = 1) -> OnnxModel:
    """Open a graph written by ``pth2onnx.py`` (its default, one-input form) in ONNX Runtime on the CPU.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file.
    threads : int
        ONNX Runtime's intra-op threads (one inter-op thread).

    Returns
    -------
    OnnxModel

    Raises
    ------
    InputError
        onnxruntime is missing, the file does not open, is not pth2onnx.py's, or is the two-input graph of
        ``pth2onnx.py --prior-input`` (whose caller computes h).
    """
    try:
        import onnxruntime
    except ImportError:
        raise InputError("denoise_onnx needs onnxruntime (pip install onnxruntime)") from None
    if int(threads) < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    source = os.fspath(path)
    try:
        session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime's load errors share no public type
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputError(f"{source}: not an ONNX graph ONNX Runtime opens ({first})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != FORMAT:
        raise InputError(f"{source}: not written by pth2onnx.py (metadata format {meta.get('format')!r})")
    inputs = [i.name for i in session.get_inputs()]
    if meta.get("graph") != SELF_CONTAINED or inputs != ["x"]:
        raise InputError(f"{source}: a graph with inputs {inputs} (the prior h given by the caller); export the "
                         "self-contained one: python pth2onnx.py SRC.pth DST.onnx (without --prior-input)")
    try:
        config = json.loads(meta["config"])
        model = config["model"]
        return OnnxModel(session, config, int(model["train_length"]), int(meta["min_length"]), meta["bn_mode"], source,
                         bool(model.get("equivariant", False)))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{source}: its metadata lacks the model config ({type(err).__name__}: {err})") from None


def denoise_onnx(path, y, threads: int = 1, overlap: int | None = None, batch: int = DEFAULT_BATCH) -> np.ndarray:
    """Denoise a record of any length with a self-contained ONNX graph, as the command line does.

    ``python Numpy_V2/Numpy_test.py --input y.npy --output out.npy --method net`` with the ``.h5`` of the
    same checkpoint gives the same values to float32 rounding (tests/test_onnx_self_contained.py): signals
    longer than the model's ``train_length`` are cut into windows of it that overlap by half a window, the last
    one ending at the signal's end; each window is converted to the type the command line computes in (float32
    for a network that is not scale-equivariant, else the record's own) and denoised by the graph (prior,
    median and scale normalisation inside, float64 around the float32 network), its output rounded to that
    type; the windows are blended with a Hann cross-fade (:func:`deepdenoise1d.windows.denoise_windows`).
    Shorter signals go through the graph whole.

    Parameters
    ----------
    path : str, os.PathLike or OnnxModel
        A ``.onnx`` written by ``pth2onnx.py`` (without ``--prior-input``), or :func:`load_onnx`'s result.
    y : array_like
        (L,) or (N, L) real values, finite (and within float32's range unless the model is scale-equivariant and
        ``y`` float64 or integer), L >= the graph's ``min_length``. A memory map is read window batch by batch.
        NaN is refused, as ``Numpy_V2.denoise`` refuses it (the command line reads a NaN run in a file as a
        gap and denoises each finite stretch alone: pass the stretches one by one for that).
    threads : int
        ONNX Runtime's intra-op threads when ``path`` is a file.
    overlap : int, optional
        Samples shared by neighbouring windows (default half a window, as the command line).
    batch : int
        Windows blended at a time (the command line's chunk); they run through ONNX Runtime
        ``RUN_BLOCK`` at a time.

    Returns
    -------
    np.ndarray
        ``y``'s shape; float32 for float32 (or float16) input, float64 otherwise, as the command line writes.

    Raises
    ------
    InputError
        A graph :func:`load_onnx` refuses, a signal shorter than ``min_length``, a non-finite value or one beyond
        the range of the type computed in (named by signal and index), or a window whose output overflows.

    Examples
    --------
    >>> import numpy as np
    >>> from deepdenoise1d.onnx_runner import denoise_onnx
    >>> y = np.load("record.npy")                                  # doctest: +SKIP
    >>> clean = denoise_onnx("runs/ckpt_universal.onnx", y)        # doctest: +SKIP
    >>> np.save("clean.npy", clean)                                # doctest: +SKIP
    """
    model = path if isinstance(path, OnnxModel) else load_onnx(path, threads)
    signals = y if isinstance(y, np.ndarray) else np.asarray(y)
    if signals.ndim not in (1, 2) or signals.dtype.kind not in "iuf":
        raise InputError(f"expected real signals of shape (L,) or (N, L), got shape {signals.shape} ({signals.dtype})")
    rows = signals.reshape(1, -1) if signals.ndim == 1 else signals
    n, length = rows.shape
    if length < model.min_length:
        raise InputError(f"signals must have length >= {model.min_length} (the graph's min_length), got {length}")
    out = np.empty(rows.shape, compute_dtype(signals.dtype))
    if n == 0:
        return out.reshape(signals.shape)
    session, work = model.session, model.work_dtype(signals.dtype)

    def run(windows: np.ndarray) -> np.ndarray:  # windows already in ``work``; the graph takes them as float64
        estimate = np.empty(windows.shape, work)
        for start in range(0, windows.shape[0], RUN_BLOCK):
            block = np.ascontiguousarray(windows[start : start + RUN_BLOCK], dtype=np.float64)[:, None, :]
            estimate[start : start + block.shape[0]] = session.run(None, {"x": block})[0][:, 0]
        if not np.isfinite(estimate).all():  # finite input that overflows inside the network
            raise InputError(f"{model.source}: the values overflow inside the network (they are too large); "
                             "rescale the input")
        return estimate

    denoise_windows(rows, run, model.train_length, overlap, batch=batch, out=out, dtype=work,
                    check=lambda raw, flat: check_span(raw, flat, length, "input", work))
    return out.reshape(signals.shape)

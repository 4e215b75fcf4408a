"""Batched, chunked, stateless inference with a trained ICNN_s on NumPy signals."""
from __future__ import annotations

import numpy as np
import torch

from icnn.equivariance import normalised_forward, real_signals
from icnn.spec import CHUNK, baseline, check_bn_mode, symmetric_part
from Pytorch_V1.model import ICNN_s
from deepdenoise1d.errors import InputError
from deepdenoise1d.io import check_chunk, check_span
from deepdenoise1d.windows import denoise_windows


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without CUDA is an :class:`InputError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name} asked for, but CUDA is not available on this machine (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise InputError(f"--device {name!r} is not a device torch knows ({err})") from None


def configure_threads(n: int) -> None:
    """Use ``n`` intra-op threads, and one inter-op thread when torch still allows setting it.

    Call from a script's ``main``, never at import (importing changes no process state).
    """
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable once, before any inter-op work
        pass


def output_dtype(dtype: np.dtype) -> np.dtype:
    """The input's float dtype (float32 stays float32); anything else becomes float64."""
    return np.dtype(dtype) if np.dtype(dtype) in (np.float32, np.float64) else np.dtype(np.float64)


# Signals per forward pass: at most this many first-level activation values (signal length × width), so a
# forward's activations stay near 100 MB for any model (ICNN_s: 10,485 signals of 100 samples, more than a
# chunk; ckpt_universal: 372 windows of 512, where a whole chunk of windows took 4 GB).
FORWARD_VALUES = 2**21


def forward_block(model: ICNN_s) -> int:
    """Signals per forward pass for ``model``'s windows (:data:`FORWARD_VALUES`)."""
    return max(1, FORWARD_VALUES // (model.config.train_length * model.config.width))


@torch.no_grad()
def denoise(model: ICNN_s, noisy: np.ndarray, bn_mode: str | None = None, chunk: int = CHUNK) -> np.ndarray:
    """Denoise (N, L) signals in chunks of ``chunk``, without changing the model.

    Parameters
    ----------
    model : ICNN_s
        Evaluated in eval mode (set here).
    noisy : np.ndarray
        Shape (N, L) or (L,); the network computes in float32. float64 (or integer) signals into an
        equivariant model keep float64 through its baseline m(y), scale s(y) and the way back, and the
        network sees only (y − m) / s (:func:`icnn.equivariance.normalised_forward`, as the NumPy model
        does), so any magnitude float64 holds works; other signals are computed in float32. Signals
        longer than the model's ``config.train_length`` go through overlapping windows of it, blended
        (:func:`deepdenoise1d.windows.denoise_windows`). NaN, inf and, where computed in float32,
        values beyond float32's range are refused (InputError naming signal and index). A model
        with ``config.input_scale`` s ≠ 1 gives s · net(noisy / s).
    bn_mode : {"fixed", "unfixed"}, optional
        Defaults to the mode the model's config records.
    chunk : int
        Signals per forward pass (bounds memory).

    Returns
    -------
    np.ndarray
        Shape (N, L), in the input's float dtype (float32 or float64; others give float64).
    """
    mode = check_bn_mode(bn_mode or model.config.bn_mode)
    if chunk < 1:
        raise InputError(f"chunk must be >= 1, got {chunk}")
    device = next(model.parameters()).device
    model.eval()
    noisy = real_signals(noisy)
    out = np.empty(noisy.shape, dtype=output_dtype(noisy.dtype))
    wide = out.dtype == np.float64 and model.config.equivariant  # as Numpy_V2.model.NumpyICNN.wide
    limit = np.float64 if wide else np.float32  # the range the values must fit: float32's unless kept float64
    window = model.config.train_length
    if noisy.shape[-1] > window:  # longer than the training signals: overlapping windows of that length, blended
        length = noisy.shape[-1]
        return denoise_windows(noisy, lambda block: denoise(model, block, mode, chunk), window, batch=chunk, out=out,
                               dtype=out.dtype,
                               check=lambda raw, flat: check_span(raw, flat, length, "input", limit))
    scale = model.config.input_scale  # applied per window (the windowed path above recurses here)
    step = min(chunk, forward_block(model))
    for start in range(0, noisy.shape[0], step):
        raw = noisy[start : start + step]
        check_chunk(raw, start, "input", limit)  # finite, and inside the computed range: never NaN out
        if wide:  # m(y), s(y) and the way back in float64, the float32 network on (y − m) / s
            x = np.asarray(raw, dtype=np.float64)[:, None, :]
            x = x / scale if scale != 1.0 else x
            y = symmetric_part(model.config, lambda xs, hs: normalised_forward(
                xs, model.config, lambda z, h: network(model, z, h, mode, device), np.float32, hs), x)[:, 0]
            out[start : start + step] = y * scale if scale != 1.0 else y
            continue
        # an offset-free model's baseline comes off in the input's precision, so a float64 offset loses nothing
        m = baseline(np.asarray(raw, dtype=np.float64)) if model.config.baseline == "median" else None
        x = torch.from_numpy(np.ascontiguousarray(raw if m is None else raw - m, dtype=np.float32))[:, None].to(device)
        if scale != 1.0:  # trained on data divided by it: the net (and its prior h) sees y / s
            x = x / scale
        y = model(x, model.prior(x), mode)[:, 0]
        y = (y * scale if scale != 1.0 else y).cpu().numpy()
        out[start : start + step] = y if m is None else y + m
    return out


def network(model: ICNN_s, z: np.ndarray, h: np.ndarray | None, mode: str, device: torch.device) -> np.ndarray:
    """The model's network g (``ICNN_s.unet``) on normalised NumPy signals z (N, 1, L) float32, prior h or None."""
    x = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)).to(device)
    prior = None if h is None else torch.from_numpy(np.ascontiguousarray(h, dtype=np.float32)).to(device)
    return model.unet(x, prior, mode).cpu().numpy()

"""ICNN_s in pure NumPy, inference only, from HDF5 weights (format: :mod:`icnn.h5weights`).

The forward computes what ``Pytorch_V1.model.ICNN_s.forward`` does, with the
same part names (inc, down1..down{depth}, up1..up{depth}, outc, wienernet), widths and skip
connections, all read from :mod:`icnn.spec` for the config's width and depth, and reads each
weight by its state-dict key. Inference is stateless: the BN mode is an argument. Thread control lives in
:mod:`Numpy_V2.parallel`. It never imports torch.
"""
from __future__ import annotations

import os

import numpy as np

from icnn.h5weights import read_weights
from icnn.spec import (
    ACTIVATING_NORMS,
    BIAS_FREE_NORMS,
    CHUNK,
    KERNEL_SIZE,
    PRIOR_TAPS,
    baseline,
    ModelConfig,
    check_bn_mode,
    check_weights,
    decoder_parts,
    encoder_parts,
    min_length,
    modulated_part,
    symmetric_part,
    outc_part,
    prior_encoder_parts,
    skip_parts,
)
from Numpy_V2.layers import (
    adaptive_max_pool1d,
    adaptive_shrink,
    batch_innermost,
    batch_norm,
    bias_free_norm,
    concat_channels,
    conv1d,
    filter_response_norm,
    max_pool1d,
    modulated_conv1d,
    pad_to_match,
    relu,
    soft_threshold,
    upsample_linear,
)
from Numpy_V2.parallel import run_blocks
# noise_scale, the trust region and the prior live with the normalisation both backends share; named here too
from icnn.equivariance import (beyond_trust, noise_scale, normalised_forward, real_signals, trust_region,  # noqa: F401
                               wiener_prior)
from deepdenoise1d.errors import InputError
from deepdenoise1d.io import check_chunk, check_span
from deepdenoise1d.windows import denoise_windows

# First-level activation values (signals × length × width) per forward pass inside a chunk: 1 MB of float32,
# so a block's working set stays near the core's cache (ckpt_universal, windows of 512: 46 signals a pass ran
# twice as fast as 1024, whose first layers' tap products, 69 MB each, went to main memory and fresh pages).
FORWARD_VALUES = 2**18


def forward_block(length: int, width: int) -> int:
    """Signals per forward pass for signals of ``length`` into a model of ``width``: :data:`FORWARD_VALUES`, at least one."""
    return max(1, FORWARD_VALUES // (length * width))


class Weights:
    """The weights of one model, handed out by key in their tensor shapes.

    Checked as a whole first (:func:`icnn.spec.check_weights`: the same message
    torch and pth2h5 give), so :meth:`take` only reshapes.
    """

    def __init__(self, arrays: dict[str, np.ndarray], config: ModelConfig, source: str):
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        check_weights({k: v.shape for k, v in arrays.items()}, config, source, flat_ok=True)
        for key, value in arrays.items():
            if value.dtype.kind != "f" and not key.endswith("num_batches_tracked"):
                raise InputError(f"{source}: tensor {key!r} holds {value.dtype}, expected floating point")
        self.arrays = arrays
        self.source = source

    def take(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        return self.arrays[key].reshape(shape)


class Conv1d:
    """Weights of one ``nn.Conv1d`` (prefix ``….0``, ``….3`` or ``outc.conv``)."""

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int, kernel_size: int,
                 bias: bool = True):
        self.weight = weights.take(f"{prefix}.weight", (out_channels, in_channels, kernel_size))
        # a bias-free network's convolutions add nothing: zeros, so one code path serves both
        self.bias = weights.take(f"{prefix}.bias", (out_channels,)) if bias else np.zeros(out_channels, self.weight.dtype)
        self.padding = kernel_size // 2

    def __call__(self, x: np.ndarray, kernel_scale: np.ndarray | None = None) -> np.ndarray:
        if kernel_scale is None:
            return conv1d(x, self.weight, self.bias, self.padding)
        return modulated_conv1d(x, self.weight, self.bias, kernel_scale)


class SignalBatchNorm1d:
    """Weights of one ``SignalBatchNorm1d``: BN in fixed or unfixed mode, then the sparse threshold if any."""

    def __init__(self, weights: Weights, prefix: str, channels: int, sparse: bool):
        shape = (channels,)
        self.weight = weights.take(f"{prefix}.weight", shape)
        self.bias = weights.take(f"{prefix}.bias", shape)
        self.running_mean = weights.take(f"{prefix}.running_mean", shape)
        self.running_var = weights.take(f"{prefix}.running_var", shape)
        self.threshold = weights.take(f"{prefix}.threshold", shape) if sparse else None

    def __call__(self, x: np.ndarray, mode: str) -> np.ndarray:
        z = batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, mode)
        if self.threshold is not None:
            z = soft_threshold(z, self.threshold)
        return z


class NoNorm:
    """``norm="none"``: the normalisation step passes its input on (no weights)."""

    def __call__(self, x: np.ndarray, mode: str) -> np.ndarray:
        return x


class Shrink:
    """``norm="shrink"``: soft threshold at sigmoid(α_c)·mean |x_c| of each signal (``layers.adaptive_shrink``)."""

    def __init__(self, weights: Weights, prefix: str, channels: int):
        self.alpha = weights.take(f"{prefix}.alpha", (channels,))

    def __call__(self, x: np.ndarray, mode: str) -> np.ndarray:
        return adaptive_shrink(x, self.alpha)


class SigmaShrink:
    """``norm="sigma_shrink"``: soft threshold at |λ_c|, in units of the signal's noise scale."""

    def __init__(self, weights: Weights, prefix: str, channels: int):
        self.threshold = weights.take(f"{prefix}.threshold", (channels,))

    def __call__(self, x: np.ndarray, mode: str) -> np.ndarray:
        return soft_threshold(x, self.threshold)


class BiasFreeNorm:
    """``norm="bias_free"``: γ·x / sqrt(var + eps) with the running or the signal's own variance."""

    def __init__(self, weights: Weights, prefix: str, channels: int):
        self.weight = weights.take(f"{prefix}.weight", (channels,))
        self.running_var = weights.take(f"{prefix}.running_var", (channels,))

    def __call__(self, x: np.ndarray, mode: str) -> np.ndarray:
        return bias_free_norm(x, self.weight, self.running_var, mode)


class FilterResponseNorm:
    """``norm="frn"``: filter response normalisation, then a thresholded linear unit."""

    def __init__(self, weights: Weights, prefix: str, channels: int):
        self.weight = weights.take(f"{prefix}.weight", (channels,))
        self.bias = weights.take(f"{prefix}.bias", (channels,))
        self.tau = weights.take(f"{prefix}.tau", (channels,))

    def __call__(self, x: np.ndarray, mode: str) -> np.ndarray:
        return filter_response_norm(x, self.weight, self.bias, self.tau)


def make_norm(weights: Weights, prefix: str, channels: int, norm: str):
    """The normalisation step of ``norm`` (``icnn.spec.NORMS``) whose tensors sit at ``prefix``."""
    if norm == "none":
        return NoNorm()
    per_norm = {"shrink": Shrink, "sigma_shrink": SigmaShrink, "bias_free": BiasFreeNorm, "frn": FilterResponseNorm}
    if norm in per_norm:
        return per_norm[norm](weights, prefix, channels)
    return SignalBatchNorm1d(weights, prefix, channels, norm == "sparse_bn")


class DoubleConv:
    """(conv → norm → ReLU) × 2, Sequential ``double_conv`` indices 0..5. The first kernel can be scaled per signal.

    A norm that is itself the nonlinearity (``icnn.spec.ACTIVATING_NORMS``) has no ReLU after it.
    """

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int, mid_channels: int | None, norm: str):
        mid = mid_channels or out_channels
        bias = norm not in BIAS_FREE_NORMS
        self.conv1 = Conv1d(weights, f"{prefix}.double_conv.0", in_channels, mid, KERNEL_SIZE, bias)
        self.bn1 = make_norm(weights, f"{prefix}.double_conv.1", mid, norm)
        self.conv2 = Conv1d(weights, f"{prefix}.double_conv.3", mid, out_channels, KERNEL_SIZE, bias)
        self.bn2 = make_norm(weights, f"{prefix}.double_conv.4", out_channels, norm)
        self.relu = norm not in ACTIVATING_NORMS

    def activate(self, x: np.ndarray) -> np.ndarray:
        """The ReLU after a normalisation step, in place; the step's output itself after an activating norm."""
        return relu(x, inplace=True) if self.relu else x

    def __call__(self, x: np.ndarray, mode: str, kernel_scale: np.ndarray | None = None) -> np.ndarray:
        x = self.activate(self.bn1(self.conv1(x, kernel_scale), mode))
        return self.activate(self.bn2(self.conv2(x), mode))


class Down:
    """Max-pool by 2, then DoubleConv (Sequential ``maxpool_conv``, the conv at index 1)."""

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int, norm: str):
        self.conv = DoubleConv(weights, f"{prefix}.maxpool_conv.1", in_channels, out_channels, None, norm)

    def __call__(self, x: np.ndarray, mode: str, kernel_scale: np.ndarray | None = None) -> np.ndarray:
        return self.conv(max_pool1d(x, 2), mode, kernel_scale)


class Up:
    """Linear upsampling ×2 (align_corners), pad to the skip's length, concat [skip, up], DoubleConv."""

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int, norm: str):
        self.conv = DoubleConv(weights, f"{prefix}.conv", in_channels, out_channels, in_channels // 2, norm)

    def __call__(self, x1: np.ndarray, x2: np.ndarray, mode: str) -> np.ndarray:
        x1 = upsample_linear(x1, 2)
        x1, x2 = pad_to_match(x1, x2)
        return self.conv(concat_channels([x2, x1]), mode)


class OutConv:
    """1×1 convolution to the output channels."""

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int, bias: bool = True):
        self.conv = Conv1d(weights, f"{prefix}.conv", in_channels, out_channels, 1, bias)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.conv(x)


class WienerNet:
    """Prior branch: encodes h and pools it to one factor per (channel, tap) of the bottleneck's first kernel
    (``icnn.spec.modulated_part``)."""

    def __init__(self, weights: Weights, prefix: str, config: ModelConfig):
        norm = config.norm
        parts = prior_encoder_parts(config)
        self.part_names = tuple(name for name, _, _ in parts)  # inc, down1..down{depth−1}, in forward order
        (_, a, b), *downs = parts
        self.inc = DoubleConv(weights, f"{prefix}.inc", a, b, None, norm)
        for name, cin, cout in downs:
            setattr(self, name, Down(weights, f"{prefix}.{name}", cin, cout, norm))
        self.beta = weights.take(f"{prefix}.beta", (1,))

    def __call__(self, h: np.ndarray, mode: str) -> np.ndarray:  # (N, 1, L) -> (N, c_{depth−1}, 3)
        p = h
        for name in self.part_names:
            p = getattr(self, name)(p, mode)
        # At L = 100, depth 4 this is the original repository's max-pool 4 (12 -> 3); else it pools adaptively.
        pooled = adaptive_max_pool1d(p, PRIOR_TAPS)
        return pooled.dtype.type(1.0) + self.beta.astype(pooled.dtype) * pooled


class NumpyICNN:
    """ICNN_s of the original repository, of the config's width and depth, inference only.
    Input and output (N, 1, L), L ≥ ``icnn.spec.min_length(config)`` (2^depth: 16 for the original).

    Build it with :func:`load_h5`, or from arrays: ``NumpyICNN(arrays, config)``.
    ``config`` is the :class:`icnn.spec.ModelConfig`; ``metadata`` the file's
    attributes. ``dtype`` is float32 (as torch's forward) or float64 (to check the arithmetic).
    """

    def __init__(self, arrays: dict[str, np.ndarray], config: ModelConfig, metadata: dict | None = None,
                 dtype: type = np.float32, source: str = "weights"):
        self.config = config
        self.metadata = metadata or {}
        self.dtype = np.dtype(dtype)
        weights = Weights(arrays, config, source)
        norm = config.norm
        (_, a, b), *downs = encoder_parts(config)
        self.inc = DoubleConv(weights, "inc", a, b, None, norm)
        for name, cin, cout in downs:
            setattr(self, name, Down(weights, name, cin, cout, norm))
        for name, cin, cout in decoder_parts(config):
            setattr(self, name, Up(weights, name, cin, cout, norm))
        self.outc = OutConv(weights, *outc_part(config), bias=config.norm not in BIAS_FREE_NORMS)
        self.wienernet = WienerNet(weights, "wienernet", config) if config.prior else None

    def forward(self, x: np.ndarray, h: np.ndarray | None = None, bn_mode: str | None = None) -> np.ndarray:
        """Denoise a batch.

        Parameters
        ----------
        x : np.ndarray
            Noisy signals, shape (N, 1, L), L ≥ ``min_length(config)``.
        h : np.ndarray, optional
            The Wiener prior of each signal, shape (N, 1, L); computed from x when omitted.
        bn_mode : {"fixed", "unfixed"}, optional
            Batch-norm statistics; defaults to ``config.bn_mode``.

        Returns
        -------
        np.ndarray
            Shape (N, 1, L), of the model's ``dtype``; float64 for float64 x into an equivariant or offset-free
            model, whose baseline m(y), scale s(y) and way back stay in float64 (only the normalised
            signal is computed in ``dtype``: :func:`icnn.equivariance.normalised_forward`).
        """
        return self._forward(x, h, check_bn_mode(bn_mode or self.config.bn_mode))

    __call__ = forward

    def _forward(self, x: np.ndarray, h: np.ndarray | None, mode: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[1] != 1:
            raise InputError(f"expected input of shape (N, 1, L), got {x.shape}")
        self.check_length(x.shape[2])
        return symmetric_part(self.config, lambda xs, hs: self._whole(xs, hs, mode), x, h)

    def _whole(self, x: np.ndarray, h: np.ndarray | None, mode: str) -> np.ndarray:
        """The model w before :func:`icnn.spec.symmetric_part`: the network, or its baseline and scale normalisation."""
        if not (self.config.equivariant or self.config.baseline == "median"):
            return self.unet(x, h, mode)
        # float64 in keeps m(y), s(y) and the way back in float64; the network sees only (y − m) / s
        outer = np.float64 if x.dtype == np.float64 else self.dtype
        return normalised_forward(np.asarray(x, dtype=outer), self.config, lambda z, hz: self.unet(z, hz, mode),
                                  self.dtype, h)

    def prior(self, x: np.ndarray) -> np.ndarray | None:
        """The Wiener prior h that :meth:`forward` computes for (N, 1, L) signals x (None without the branch):
        of x itself, or of x − m(x) for an offset-free model."""
        if self.wienernet is None:
            return None
        x = np.asarray(x)
        return wiener_prior(x - baseline(x) if self.config.baseline == "median" else x)

    def unet(self, x: np.ndarray, h: np.ndarray | None, mode: str) -> np.ndarray:
        """The network g on (N, 1, L) signals, without the scale normalisation of an equivariant model."""
        x = batch_innermost(x, self.dtype)
        kernel_scale = None
        if self.wienernet is not None:
            h = wiener_prior(x) if h is None else np.asarray(h)
            if h.shape != x.shape:
                raise InputError(f"h must have the input's shape {x.shape}, got {h.shape}")
            kernel_scale = self.wienernet(batch_innermost(h, self.dtype), mode)  # (N, c_{depth−1}, 3)
        bottleneck = modulated_part(self.config)
        encoded = {}
        # inc gives (N, c_0, L), each down_k halves L to (N, c_k, L / 2^k); the bottleneck keeps c_{depth−1}
        for name, _, _ in encoder_parts(self.config):
            x = encoded[name] = getattr(self, name)(x, mode, kernel_scale if name == bottleneck else None)
        # each up_k doubles L back, joined with its mirror level's output; the last gives (N, c_0, L)
        for name, skip in skip_parts(self.config):
            x = getattr(self, name)(x, encoded[skip], mode)
        return self.outc(x)  # (N, 1, L)

    def wide(self, dtype) -> bool:
        """Whether :meth:`denoise` keeps signals of ``dtype`` (its output dtype) in float64 around the network:
        float64 into an equivariant model, whose float32 network then sees only the normalised signal."""
        return np.dtype(dtype) == np.float64 and self.config.equivariant

    def check_length(self, length: int) -> None:
        """Refuse signals shorter than the model takes: ``depth`` halvings must leave a sample."""
        if length < min_length(self.config):
            raise InputError(f"signals must have length >= {min_length(self.config)} "
                             f"(2^depth, depth {self.config.depth}), got {length}")

    def denoise(self, noisy: np.ndarray, bn_mode: str | None = None, threads: int | None = None,
                chunk: int = CHUNK) -> np.ndarray:
        """Denoise (N, L) signals, as ``Pytorch_V1.inference.denoise`` does.

        Blocks of :func:`forward_block` signals (prior h, then forward) are independent,
        so they run on ``threads`` workers (:func:`Numpy_V2.parallel.run_blocks`).
        The result does not depend on ``threads``; ``chunk`` moves block boundaries,
        which can change results by float32 rounding (BLAS kernels vary with width).

        Parameters
        ----------
        noisy : np.ndarray
            Shape (N, L) or (L,), finite, L ≥ ``min_length(config)``. float64 (or integer) signals into an
            equivariant model keep float64 through its baseline and scale (:meth:`wide`), at any magnitude
            float64 holds; otherwise they are computed in the model's dtype and must lie within its range.
            Signals longer than ``config.train_length`` are denoised in overlapping windows of it,
            blended (:func:`deepdenoise1d.windows.denoise_windows`). A model with
            ``config.input_scale`` s ≠ 1 gives s · net(noisy / s).
        bn_mode : {"fixed", "unfixed"}, optional
            Defaults to ``config.bn_mode``.
        threads : int, optional
            Worker threads (``deepdenoise1d.threads.resolve_threads``: default 1).
        chunk : int
            Signals handed to the pool at a time.

        Returns
        -------
        np.ndarray
            Shape (N, L), in the input's float dtype (float32 or float64; others give float64).
        """
        mode = check_bn_mode(bn_mode or self.config.bn_mode)
        noisy = real_signals(noisy)
        if noisy.ndim != 2:
            raise InputError(f"expected signals of shape (N, L), got {noisy.shape}")
        self.check_length(noisy.shape[1])
        if chunk < 1:
            raise InputError(f"chunk must be >= 1, got {chunk}")
        out = np.empty(noisy.shape, dtype=noisy.dtype if noisy.dtype in (np.float32, np.float64) else np.float64)
        wide = self.wide(out.dtype)
        limit = np.float64 if wide else self.dtype  # the range the values must fit: float32's unless kept float64
        window = self.config.train_length
        if noisy.shape[1] > window:  # longer than the training signals: overlapping windows of that length, blended
            length = noisy.shape[1]
            return denoise_windows(noisy, lambda block: self.denoise(block, mode, threads, chunk), window,
                                   batch=chunk, out=out, dtype=out.dtype,
                                   check=lambda raw, flat: check_span(raw, flat, length, "input", limit))
        scale = self.config.input_scale  # applied per window (the windowed path above recurses here)
        block = forward_block(noisy.shape[1], self.config.width)

        def denoise_block(start: int) -> None:
            raw = noisy[start : start + block]
            check_chunk(raw, start, "input", limit)
            if wide:  # m(y), s(y) and the way back in float64, the network on (y − m) / s (normalised_forward)
                x = np.asarray(raw, dtype=np.float64)[:, None, :]
                x = x / scale if scale != 1.0 else x
                y = self._forward(x, None, mode)[:, 0]
                out[start : start + x.shape[0]] = y * scale if scale != 1.0 else y
                return
            # an offset-free model's baseline comes off in the input's precision, so a float64 offset loses nothing
            m = baseline(np.asarray(raw, dtype=np.float64)) if self.config.baseline == "median" else None
            x = (raw if m is None else raw - m).astype(self.dtype)[:, None, :]  # (n, 1, L)
            if scale != 1.0:  # trained on data divided by it: the net (and its prior h) sees y / s
                x = x / self.dtype.type(scale)
            y = self._forward(x, self.prior(x), mode)[:, 0]
            y = y * self.dtype.type(scale) if scale != 1.0 else y
            out[start : start + x.shape[0]] = y if m is None else y + m

        for chunk_start in range(0, noisy.shape[0], chunk):
            stop = min(chunk_start + chunk, noisy.shape[0])
            run_blocks(denoise_block, range(chunk_start, stop, block), threads)
        return out


def load_h5(path: str | os.PathLike, dtype: type = np.float32) -> NumpyICNN:
    """Build :class:`NumpyICNN` from an HDF5 weights file (this repository's or the original repository's).

    Parameters
    ----------
    path : str or os.PathLike
        File written by ``pth2h5.py`` or by the original repository's converter.
    dtype : type
        Compute type: float32 (default, as torch) or float64.

    Returns
    -------
    NumpyICNN
        The model, its ``config`` from the file's attributes or inferred from its keys.

    Raises
    ------
    InputError
        From :func:`icnn.h5weights.read_weights`: missing, unreadable, hostile or
        mis-shaped files, named in one line.
    """
    arrays, config, metadata = read_weights(path)
    return NumpyICNN(arrays, config, metadata, dtype, str(path))

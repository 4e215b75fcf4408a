"""Inference-only NumPy layers with PyTorch semantics, in PyTorch's (N, C, L) layout.

Every function takes and returns arrays indexed ``[signal, channel, position]``
exactly as ``torch.nn.functional`` does, and gives the same result for any
memory order. For speed the model keeps its activations *batch-innermost*:
an (N, C, L) array that is a transposed view of a contiguous (C, L, N)
buffer (see :func:`batch_innermost`), the way torch's ``channels_last`` is a
memory format rather than a different shape. In that order

- a convolution over the whole batch is one large GEMM, (K·C_out, C_in) @ (C_in, L·N),
  instead of N tiny ones, and its taps are shifted slabs of that product;
- pooling, upsampling, padding and concatenation move whole contiguous rows of N values;
- every element-wise step runs over contiguous memory.

Results keep the input's float dtype (float32 like torch's float32 forward,
or float64 for checking the arithmetic); other inputs become float32. No Python
loop runs over signals, channels or positions; the only loops are over kernel
taps or window offsets (≤ 3).
"""
from __future__ import annotations

import numpy as np

from icnn.spec import BN_EPS, BN_MODES, FRN_EPS


def batch_innermost(x: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """The same (N, C, L) array, stored as a contiguous (C, L, N) buffer.

    Parameters
    ----------
    x : np.ndarray
        Activations, shape (N, C, L), any memory order.
    dtype : np.dtype
        float32 (default) or float64.

    Returns
    -------
    np.ndarray
        Equal to ``x`` (as ``dtype``), shape (N, C, L), memory order (C, L, N).
    """
    return _from_cln(np.ascontiguousarray(_to_cln(x), dtype=dtype))


def _float_type(x: np.ndarray) -> np.dtype:
    """float64 stays float64; everything else computes in float32."""
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _to_cln(x: np.ndarray) -> np.ndarray:
    """(N, C, L) -> a (C, L, N) view; contiguous when x is batch-innermost."""
    return x.transpose(1, 2, 0)


def _from_cln(y: np.ndarray) -> np.ndarray:
    """(C, L, N) buffer -> the (N, C, L) view of it."""
    return y.transpose(2, 0, 1)


def _tap_products(x_cln: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Every kernel tap applied to every position: one GEMM for all taps.

    x_cln: (C_in, L, N) contiguous; weight: (C_out, C_in, K). Returns (K, C_out, L, N)
    with ``[k, o, l, n] = Σ_c weight[o, c, k] · x[c, l, n]``.
    """
    c_in, length, n = x_cln.shape
    c_out, _, k = weight.shape
    stacked = np.ascontiguousarray(weight.transpose(2, 0, 1), dtype=x_cln.dtype).reshape(k * c_out, c_in)
    x_2d = x_cln.reshape(c_in, length * n)
    if c_in == 1:
        # An outer product: BLAS is slow at inner dimension 1, a broadcast multiply is not.
        products = np.multiply(stacked, x_2d)  # (K·C_out, L·N)
    else:
        products = stacked @ x_2d  # (K·C_out, L·N)
    return products.reshape(k, c_out, length, n)


def _tap_range(tap: int, padding: int, in_len: int, out_len: int) -> tuple[int, int]:
    """Output positions [lo, hi) that tap ``tap`` reaches; they read input lo + tap - padding ..."""
    return max(0, padding - tap), min(out_len, in_len + padding - tap)


def _sum_taps(taps: np.ndarray, padding: int, bias: np.ndarray | None, tap_scale: np.ndarray | None) -> np.ndarray:
    """Shift-and-add the per-tap products into the convolution output, (C_out, L_out, N).

    ``tap_scale`` (C_out, K, N), when given, multiplies tap k of output channel o
    of signal n (the per-signal kernel of :func:`modulated_conv1d`).
    """
    k, c_out, in_len, n = taps.shape
    out_len = in_len + 2 * padding - k + 1
    if out_len < 1:
        raise ValueError(f"conv1d: input length {in_len} is too short for kernel {k} with padding {padding}")
    ranges = [_tap_range(tap, padding, in_len, out_len) for tap in range(k)]

    def shifted(tap: int) -> np.ndarray:  # tap's products at the output positions it reaches
        lo, hi = ranges[tap]
        part = taps[tap, :, lo + tap - padding : hi + tap - padding]  # (C_out, hi - lo, N)
        return part if tap_scale is None else part * tap_scale[:, tap, None, :]

    bias_column = np.zeros((c_out, 1, 1), taps.dtype) if bias is None else bias.astype(taps.dtype)[:, None, None]
    # Start from a tap that reaches every output (the centre one for "same" padding):
    # one pass fewer than zero-filling first.
    full = [tap for tap, (lo, hi) in enumerate(ranges) if (lo, hi) == (0, out_len)]
    if full:
        out = np.add(shifted(full[0]), bias_column)  # (C_out, L_out, N)
    else:
        out = np.broadcast_to(bias_column, (c_out, out_len, n)).copy()
    for tap, (lo, hi) in enumerate(ranges):  # taps, not positions: k ≤ 3 here
        if lo < hi and tap not in full[:1]:
            out[:, lo:hi] += shifted(tap)
    return out


def conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, padding: int = 0) -> np.ndarray:
    """``torch.nn.functional.conv1d`` with stride 1, dilation 1, one group, zero padding.

    Parameters
    ----------
    x : np.ndarray
        Input, shape (N, C_in, L).
    weight : np.ndarray
        Kernels, shape (C_out, C_in, K); any K ≥ 1.
    bias : np.ndarray, optional
        Shape (C_out,).
    padding : int
        Zeros added at both ends of the length axis.

    Returns
    -------
    np.ndarray
        Shape (N, C_out, L + 2·padding − K + 1), batch-innermost.
    """
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv1d: input has {x.shape[1]} channels, weight expects {weight.shape[1]}")
    x_cln = np.ascontiguousarray(_to_cln(x), dtype=_float_type(x))  # (C_in, L, N)
    return _from_cln(_sum_taps(_tap_products(x_cln, weight), padding, bias, None))


def modulated_conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Conv1d (padding K // 2) with a per-signal kernel ``weight · scale[n]``.

    Mirror of ``Pytorch_V1.model.modulated_conv1d``: the shared kernel's per-tap products
    are scaled per signal, since Σ_c (w[o,c,k]·s[n,o,k])·x = s[n,o,k]·Σ_c w[o,c,k]·x.

    Parameters
    ----------
    x : np.ndarray
        Input, shape (N, C_in, L).
    weight : np.ndarray
        Shared kernel, shape (C_out, C_in, K).
    bias : np.ndarray
        Shape (C_out,), not scaled.
    scale : np.ndarray
        Per-signal factors, shape (N, C_out, K), broadcast over C_in.

    Returns
    -------
    np.ndarray
        Shape (N, C_out, L) for odd K, batch-innermost.
    """
    n, c_out, k = scale.shape
    if n != x.shape[0] or (c_out, k) != (weight.shape[0], weight.shape[2]):
        raise ValueError(f"modulated_conv1d: scale shape {scale.shape} does not fit input {x.shape} and weight {weight.shape}")
    x_cln = np.ascontiguousarray(_to_cln(x), dtype=_float_type(x))  # (C_in, L, N)
    tap_scale = scale.transpose(1, 2, 0).astype(x_cln.dtype)  # (C_out, K, N)
    return _from_cln(_sum_taps(_tap_products(x_cln, weight), k // 2, bias, tap_scale))


def batch_norm(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    mode: str = "fixed",
    eps: float = BN_EPS,
) -> np.ndarray:
    """BatchNorm1d at inference, with the running statistics ("fixed") or each signal's own ("unfixed").

    Parameters
    ----------
    x : np.ndarray
        Shape (N, C, L).
    weight, bias, running_mean, running_var : np.ndarray
        Per-channel parameters and running statistics, shape (C,).
    mode : {"fixed", "unfixed"}
        ``fixed`` normalises with the running statistics (torch's eval mode);
        ``unfixed`` with each signal's own mean and biased variance per channel
        over the length axis (torch's train-mode BN on a batch of one).
    eps : float
        Added to the variance.

    Returns
    -------
    np.ndarray
        Shape (N, C, L), batch-innermost.
    """
    x_cln = _to_cln(x)  # (C, L, N)
    dtype = _float_type(x)
    gamma = weight.astype(dtype)[:, None, None]
    beta = bias.astype(dtype)[:, None, None]
    if mode == "fixed":
        # As torch's CPU kernel: y = x·α + (β − mean·α), α = γ / sqrt(var + eps).
        alpha = gamma / np.sqrt(running_var.astype(dtype)[:, None, None] + dtype.type(eps))
        shift = beta - running_mean.astype(dtype)[:, None, None] * alpha
        out = np.multiply(x_cln, alpha, dtype=dtype)
        out += shift
    elif mode == "unfixed":
        out, var = _centred_and_variance(x_cln, dtype)
        out *= gamma / np.sqrt(var + dtype.type(eps))
        out += beta
    else:
        raise ValueError(f"batch_norm mode must be one of {BN_MODES}, got {mode!r}")
    return _from_cln(out)


def _centred_and_variance(x_cln: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Each signal's channels less their mean, (C, L, N), and their biased variance, (C, 1, N), in ``dtype``.

    The mean is summed in float64 and rounded once: a signal's mean can be large next to its spread, and
    its rounding error, divided by the spread, would show in the output. The variance has no such
    cancellation.
    """
    length = x_cln.shape[1]
    mean = (x_cln.sum(axis=1, keepdims=True, dtype=np.float64) / length).astype(dtype)  # (C, 1, N)
    centred = np.subtract(x_cln, mean, dtype=dtype)
    return centred, np.square(centred).sum(axis=1, keepdims=True) / dtype.type(length)


def soft_threshold(z: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """The sparse-BN shrinkage sign(z)·relu(|z| − |threshold|), per channel.

    Parameters
    ----------
    z : np.ndarray
        Shape (N, C, L).
    threshold : np.ndarray
        Shape (C,); its absolute value is the threshold λ.

    Returns
    -------
    np.ndarray
        Shape (N, C, L).
    """
    dtype = _float_type(z)
    lam = np.abs(threshold.astype(dtype))[:, None, None]
    z_cln = _to_cln(z)  # (C, L, N)
    # z − clip(z, −λ, λ) is sign(z)·max(|z| − λ, 0), bit for bit, in two passes.
    out = np.subtract(z_cln, np.clip(z_cln, -lam, lam), dtype=dtype)
    return _from_cln(out)


def adaptive_shrink(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Soft threshold at τ_c = sigmoid(α_c)·mean_l |x_c|, per signal and channel (``norm="shrink"``).

    Parameters
    ----------
    x : np.ndarray
        Shape (N, C, L).
    alpha : np.ndarray
        Shape (C,): the logit of each channel's threshold, as a fraction of its mean magnitude.

    Returns
    -------
    np.ndarray
        Shape (N, C, L), batch-innermost: x − clip(x, −τ, τ).
    """
    dtype = _float_type(x)
    x_cln = _to_cln(x)  # (C, L, N)
    fraction = (1.0 / (1.0 + np.exp(-alpha.astype(np.float64)))).astype(dtype)[:, None, None]
    tau = fraction * (np.abs(x_cln).sum(axis=1, keepdims=True, dtype=dtype) / dtype.type(x_cln.shape[1]))  # (C, 1, N)
    return _from_cln(np.subtract(x_cln, np.clip(x_cln, -tau, tau), dtype=dtype))


def bias_free_norm(x: np.ndarray, weight: np.ndarray, running_var: np.ndarray, mode: str = "fixed",
                   eps: float = BN_EPS) -> np.ndarray:
    """γ·x / sqrt(var + eps), neither centred nor shifted (``norm="bias_free"``).

    Parameters
    ----------
    x : np.ndarray
        Shape (N, C, L).
    weight, running_var : np.ndarray
        Shape (C,).
    mode : {"fixed", "unfixed"}
        ``fixed`` divides by the running variance; ``unfixed`` by each signal's own biased variance
        per channel (about its mean, which is not subtracted from the output).
    eps : float
        Added to the variance.

    Returns
    -------
    np.ndarray
        Shape (N, C, L), batch-innermost.
    """
    x_cln = _to_cln(x)  # (C, L, N)
    dtype = _float_type(x)
    gamma = weight.astype(dtype)[:, None, None]
    if mode == "fixed":
        var = running_var.astype(dtype)[:, None, None]
    elif mode == "unfixed":
        var = _centred_and_variance(x_cln, dtype)[1]
    else:
        raise ValueError(f"bias_free_norm mode must be one of {BN_MODES}, got {mode!r}")
    return _from_cln(np.multiply(x_cln, gamma / np.sqrt(var + dtype.type(eps)), dtype=dtype))


def filter_response_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, tau: np.ndarray,
                         eps: float = FRN_EPS) -> np.ndarray:
    """max(γ·x / sqrt(mean_l x² + eps) + β, τ) per signal and channel (``norm="frn"``: FRN, then a TLU).

    Parameters
    ----------
    x : np.ndarray
        Shape (N, C, L).
    weight, bias, tau : np.ndarray
        Shape (C,).
    eps : float
        Added to the mean square.

    Returns
    -------
    np.ndarray
        Shape (N, C, L), batch-innermost.
    """
    x_cln = _to_cln(x)  # (C, L, N)
    dtype = _float_type(x)
    mean_square = np.square(x_cln, dtype=dtype).sum(axis=1, keepdims=True) / dtype.type(x_cln.shape[1])
    out = np.multiply(x_cln, 1.0 / np.sqrt(mean_square + dtype.type(eps)), dtype=dtype)
    out *= weight.astype(dtype)[:, None, None]
    out += bias.astype(dtype)[:, None, None]
    return _from_cln(np.maximum(out, tau.astype(dtype)[:, None, None]))


def relu(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """max(x, 0), element-wise; ``inplace`` overwrites ``x``."""
    x_cln = _to_cln(x)  # iterate in memory order: contiguous for batch-innermost x
    # A row of zeros, not the scalar 0: NumPy's fast SIMD maximum loop needs a contiguous second operand.
    zeros = np.zeros(x_cln.shape[-1], dtype=x.dtype)
    if inplace:
        np.maximum(x_cln, zeros, out=x_cln)
        return x
    return _from_cln(np.maximum(x_cln, zeros))


def max_pool1d(x: np.ndarray, kernel_size: int = 2) -> np.ndarray:
    """``F.max_pool1d(x, k)``: stride k, no padding, a trailing partial window dropped (floor).

    Parameters
    ----------
    x : np.ndarray
        Shape (N, C, L), L ≥ k.
    kernel_size : int
        Window and stride.

    Returns
    -------
    np.ndarray
        Shape (N, C, L // k), batch-innermost.
    """
    x_cln = _to_cln(x)  # (C, L, N)
    out_len = x_cln.shape[1] // kernel_size
    if out_len < 1:
        raise ValueError(f"max_pool1d: length {x_cln.shape[1]} is shorter than the window {kernel_size}")
    span = out_len * kernel_size
    out = np.array(x_cln[:, 0:span:kernel_size], dtype=_float_type(x), order="C")  # (C, L//k, N)
    for offset in range(1, kernel_size):  # window offsets, not positions
        np.maximum(out, x_cln[:, offset:span:kernel_size], out=out)
    return _from_cln(out)


def adaptive_max_pool1d(x: np.ndarray, output_size: int) -> np.ndarray:
    """``F.adaptive_max_pool1d``: bin i covers [floor(i·L/out), ceil((i+1)·L/out)).

    Parameters
    ----------
    x : np.ndarray
        Shape (N, C, L).
    output_size : int
        Number of bins; may exceed L (bins then repeat samples).

    Returns
    -------
    np.ndarray
        Shape (N, C, output_size).
    """
    x_cln = _to_cln(x)  # (C, L, N)
    gathered = x_cln[:, adaptive_bin_index(x_cln.shape[1], output_size)]  # (C, out, widest, N)
    return _from_cln(np.ascontiguousarray(gathered.max(axis=2), dtype=_float_type(x)))


def adaptive_bin_index(length: int, output_size: int) -> np.ndarray:
    """Positions of each adaptive-pooling bin, ``[floor(i·L/out), ceil((i+1)·L/out))``, shape (out, widest).

    Each bin is ``widest`` indices long; shorter bins repeat their last position, which
    changes neither their maximum nor the position of its first occurrence.
    """
    bins = np.arange(output_size)
    start = (bins * length) // output_size
    end = -((-(bins + 1) * length) // output_size)  # ceil
    widest = int((end - start).max())
    return np.minimum(start[:, None] + np.arange(widest), end[:, None] - 1)


def upsample_linear(x: np.ndarray, scale_factor: int = 2) -> np.ndarray:
    """``nn.Upsample(scale_factor, mode="linear", align_corners=True)``.

    Output sample i reads source position i·(L − 1)/(L_out − 1), interpolated
    between its two neighbours, as torch's CPU kernel does.

    Parameters
    ----------
    x : np.ndarray
        Shape (N, C, L).
    scale_factor : int
        Integer length multiplier.

    Returns
    -------
    np.ndarray
        Shape (N, C, L·scale_factor), batch-innermost.
    """
    x_cln = _to_cln(x)  # (C, L, N)
    dtype = _float_type(x)
    in_len = x_cln.shape[1]
    out_len = in_len * scale_factor
    step = dtype.type((in_len - 1) / (out_len - 1)) if out_len > 1 else dtype.type(0)
    source = step * np.arange(out_len, dtype=dtype)
    left = np.minimum(source.astype(np.int64), in_len - 1)
    right = np.minimum(left + 1, in_len - 1)
    right_weight = (source - left.astype(dtype))[None, :, None]  # (1, L_out, 1)
    left_weight = dtype.type(1) - right_weight
    # np.take gathers whole rows faster than fancy indexing; the products are then formed in place
    out = np.take(x_cln, left, axis=1).astype(dtype, copy=False)  # (C, L_out, N)
    out *= left_weight
    right_part = np.take(x_cln, right, axis=1).astype(dtype, copy=False)
    right_part *= right_weight
    out += right_part
    return _from_cln(out)


def pad_length(x: np.ndarray, left: int, right: int) -> np.ndarray:
    """Zero-pad the length axis: ``F.pad(x, [left, right])`` for left, right ≥ 0."""
    x_cln = _to_cln(x)  # (C, L, N)
    c, length, n = x_cln.shape
    out = np.zeros((c, left + length + right, n), dtype=_float_type(x))
    out[:, left : left + length] = x_cln
    return _from_cln(out)


def pad_to_match(x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad the shorter of the two along length: left diff//2, right the rest.

    Mirror of ``Pytorch_V1.model.pad_to_match``; returns ``(x1, x2)``.
    """
    diff = x2.shape[2] - x1.shape[2]
    if diff > 0:
        x1 = pad_length(x1, diff // 2, diff - diff // 2)
    elif diff < 0:
        x2 = pad_length(x2, -diff // 2, -diff - (-diff // 2))
    return x1, x2


def concat_channels(parts: list[np.ndarray]) -> np.ndarray:
    """``torch.cat(parts, dim=1)`` for (N, C_i, L) arrays of equal N and L."""
    return _from_cln(np.concatenate([_to_cln(p) for p in parts], axis=0).astype(_float_type(parts[0]), copy=False))

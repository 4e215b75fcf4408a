"""Exact Jacobians of ICNN_s in plain NumPy, by forward-mode differentiation.

Each ``*_dual`` function takes a value and its tangents and returns both. A
value is an (N, C, L) activation, batch-innermost as in :mod:`Numpy_V2.layers`
(a view of a contiguous (C, L, N) buffer). Its tangents carry D directions
(D = L, one per input sample) as an (N·D, C, L) view of a contiguous
(C, L, N, D) buffer: the tangents form one batch axis of N·D columns, so each
convolution is one GEMM for all of them (:func:`conv_tangents`) and upsampling,
padding and concatenation use the value's layer functions, without bias;
piecewise-linear layers (ReLU, max-pool, fixed BN, soft threshold) pass them by
the value's mask; the per-signal normalisations (unfixed BN, FRN, adaptive shrinkage)
and the prior's kernel modulation have closed-form derivatives. The directions are
innermost because masks and statistics are per signal: broadcast over D they run as
long contiguous loops (with N innermost, each such loop would be only a block of
signals long).

Each layer's value is computed by the model's own part (``Numpy_V2.model``: its
``Conv1d`` and ``SignalBatchNorm1d``), and the parts are walked in the order and
with the names :mod:`icnn.spec` gives, so the forward is written once.

The Jacobian is the *total* derivative of f(y): it includes the path through
the Wiener prior h(y) (``deepdenoise1d.classical.wiener_inverse_response``), whose
derivative dh/dy is exact (:func:`prior_dual`), and through the prior's encoder,
differentiated in reverse mode (:func:`wienernet_dual`: C·3 outputs per signal for the
bottleneck's C channels, 48 for the original, as a rule fewer than L inputs). Values are
computed in float64, tangents in float32 (``TANGENT_DTYPE``). Torch is never imported.
"""
from __future__ import annotations

import threading

import numpy as np
from scipy.ndimage import uniform_filter1d

from icnn.spec import (BN_EPS, FRN_EPS, PRIOR_TAPS, SCALE_MAD, baseline_index, encoder_parts, modulated_part,
                       skip_parts, symmetric_mean, symmetry_input, symmetry_passes)
from Numpy_V2 import layers
from Numpy_V2.model import BiasFreeNorm, FilterResponseNorm, NoNorm, Shrink, SigmaShrink, beyond_trust
from deepdenoise1d.classical import WIENER_WINDOW, tikhonov_floor, wiener, wiener_inverse_response
from deepdenoise1d.magnitude import rms as root_mean_square

# Signals per forward-mode block (each carries D = L tangent columns): the fastest size tried at L = 100.
JACOBIAN_BLOCK = 24
# Tangent precision: float32 halves the memory traffic that bounds every tangent pass and
# stays within the accuracy tests/test_explain.py requires; values, masks and dh/dy stay float64.
TANGENT_DTYPE = np.float32


# ---------------------------------------------------------------- layout helpers
def _cln(x: np.ndarray) -> np.ndarray:
    """(N, C, L) batch-innermost view -> its contiguous (C, L, N) buffer."""
    return np.ascontiguousarray(x.transpose(1, 2, 0))


def _t4(t: np.ndarray, n: int) -> np.ndarray:
    """Tangents (N·D, C, L) -> the (C, L, N, D) buffer."""
    c_l_nd = _cln(t)
    return c_l_nd.reshape(c_l_nd.shape[0], c_l_nd.shape[1], n, -1)


def _t3(t4: np.ndarray) -> np.ndarray:
    """(C, L, N, D) buffer -> the (N·D, C, L) tangent view of it."""
    c, length, n, d = t4.shape
    return np.ascontiguousarray(t4).reshape(c, length, n * d).transpose(2, 0, 1)


# ---------------------------------------------------------------- layers
def _tap_ranges(k: int, length: int):
    """For each tap of a "same" convolution: (tap, shift, lo, hi), output positions [lo, hi) read input + shift."""
    for tap in range(k):
        shift = tap - k // 2
        lo, hi = max(0, -shift), min(length, length - shift)
        if lo < hi:
            yield tap, shift, lo, hi


def conv_tangents(t: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The tangents (N·D, C_in, L) through a bias-free "same" convolution (odd K), as (N·D, C_out, L).

    Fewer passes than ``layers.conv1d`` over these wide buffers: when C_in < C_out
    the K shifted inputs are stacked and one GEMM writes the output once (im2col);
    otherwise one GEMM gives every tap's products and the centre tap's slab *is*
    the output, the others added in place.
    """
    x = _cln(t)  # (C_in, L, N·D)
    c_in, length, _ = x.shape
    c_out, _, k = weight.shape
    if c_in < c_out and k > 1:
        stacked = np.zeros((k, *x.shape), t.dtype)
        for tap, shift, lo, hi in _tap_ranges(k, length):
            stacked[tap, :, lo:hi] = x[:, lo + shift : hi + shift]
        kernel = np.ascontiguousarray(weight.transpose(0, 2, 1), dtype=t.dtype).reshape(c_out, k * c_in)
        return (kernel @ stacked.reshape(k * c_in, -1)).reshape(c_out, *x.shape[1:]).transpose(2, 0, 1)
    kernel = np.ascontiguousarray(weight.transpose(2, 0, 1), dtype=t.dtype).reshape(k * c_out, c_in)
    x_2d = x.reshape(c_in, -1)
    # Inner dimension 1 is an outer product: a broadcast multiply beats BLAS there.
    products = (np.multiply(kernel, x_2d) if c_in == 1 else kernel @ x_2d).reshape(k, c_out, *x.shape[1:])
    out = products[k // 2]
    for tap, shift, lo, hi in _tap_ranges(k, length):
        if tap != k // 2:
            out[:, lo:hi] += products[tap, :, lo + shift : hi + shift]
    return out.transpose(2, 0, 1)


def conv_dual(conv, x: np.ndarray, t: np.ndarray, scale=None, t_scale=None) -> tuple[np.ndarray, np.ndarray]:
    """A ``Numpy_V2.model.Conv1d`` and its tangents; optionally with the per-signal kernel scale.

    ``scale`` (N, C_out, K) multiplies the kernel per signal; ``t_scale``
    (C_out, K, N, D) is its tangent (product rule: the kernel moves with y through h).
    """
    if scale is None:
        return conv(x), conv_tangents(t, conv.weight)
    n, c_out, k = scale.shape
    zero_bias = np.zeros(c_out, t.dtype)
    y = conv(x, scale)
    d = t.shape[0] // n
    ty4 = _t4(layers.modulated_conv1d(t, conv.weight, zero_bias, np.repeat(scale, d, axis=0).astype(t.dtype)), n)
    for tap in range(k):  # taps, not positions: ∂y/∂scale[n, o, tap] is tap's shifted products
        one_hot = np.zeros_like(scale)
        one_hot[:, :, tap] = 1.0
        shifted = _cln(layers.modulated_conv1d(x, conv.weight, zero_bias, one_hot))  # (C_out, L, N)
        ty4 += shifted[..., None].astype(t.dtype) * t_scale[:, tap, None]
    return y, _t3(ty4)


def norm_state(double, bn, x: np.ndarray, mode: str, dtype) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """A normalisation step of the DoubleConv ``double`` and the ReLU after it (if any): value and local slope.

    The slope of every norm has one form, J = diag(scale)·(I − U·Vᵀ / L) per signal and channel over
    the L positions: ``scale`` is the pointwise slope, zero where the output is flat (ReLU, thresholds);
    U, V of rank k are the correction for statistics the signal itself sets. Fixed BN, bias-free BN with
    the running variance, the noise-scaled threshold and no norm are pointwise (no U, V). Unfixed BN
    z = (x − μ)/s: U = V = [1, z], scale γ/s. Bias-free unfixed x/s: U = [x/s], V = [(x − μ)/s], scale γ/s.
    FRN x/r, r² = mean x² + eps: U = V = [x/r], scale γ/r. Adaptive shrinkage at τ = a·mean|x|:
    U = [a·sign x], V = [sign x], scale 1 where |x| > τ.

    Returns
    -------
    y : np.ndarray
        The value, (N, C, L).
    scale : np.ndarray
        (C, L, N) in ``dtype``.
    low_rank : tuple of np.ndarray or None
        (U, V), each (C, L, N, k) in ``dtype``; None for a pointwise slope.
    """
    y = double.activate(bn(x, mode))
    live = _cln(y) != 0 if not double.relu else _cln(y) > 0  # (C, L, N): where the output moves with x
    if isinstance(bn, (NoNorm, SigmaShrink)):  # ReLU or a fixed soft threshold: slope 1 where live
        return y, live.astype(dtype), None
    x_cln = _cln(x).astype(np.float64)  # (C, L, N)
    if isinstance(bn, FilterResponseNorm):
        r = np.sqrt(np.mean(x_cln * x_cln, axis=1, keepdims=True) + FRN_EPS)
        live = _cln(y) > bn.tau.astype(np.float64)[:, None, None]  # the TLU passes where it exceeds τ
        u = x_cln / r
        return y, (bn.weight.astype(np.float64)[:, None, None] / r * live).astype(dtype), _pair(u, u, dtype)
    if isinstance(bn, Shrink):
        fraction = 1.0 / (1.0 + np.exp(-bn.alpha.astype(np.float64)))
        sign = np.sign(x_cln)
        return y, live.astype(dtype), _pair(fraction[:, None, None] * sign, sign, dtype)
    gamma = bn.weight.astype(np.float64)[:, None, None]
    if mode == "fixed":
        alpha = gamma / np.sqrt(bn.running_var.astype(np.float64)[:, None, None] + BN_EPS)
        return y, (alpha * live).astype(dtype), None
    u = x_cln - x_cln.mean(axis=1, keepdims=True)
    s = np.sqrt(np.mean(u * u, axis=1, keepdims=True) + BN_EPS)  # (C, 1, N)
    scale = (gamma / s * live).astype(dtype)
    if isinstance(bn, BiasFreeNorm):
        return y, scale, _pair(x_cln / s, u / s, dtype)
    z = u / s
    return y, scale, _pair(np.ones_like(u), np.ones_like(u), dtype, z, z)


def _pair(u: np.ndarray, v: np.ndarray, dtype, *more: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, V) of :func:`norm_state` from (C, L, N) columns: (u, v) for rank 1; (u1, v1, u2, v2) for rank 2."""
    us, vs = (u, *more[0::2]), (v, *more[1::2])
    return np.stack(us, axis=3).astype(dtype), np.stack(vs, axis=3).astype(dtype)


def norm_linear(t4: np.ndarray, scale: np.ndarray, low_rank: tuple | None, adjoint: bool = False) -> np.ndarray:
    """:func:`norm_state`'s slope on (C, L, N, D) tangents, in place: scale·(t − U·mean_L(V·t)).

    With ``adjoint`` its transpose, (I − V·Uᵀ / L)·(scale·t).
    """
    if adjoint or low_rank is None:
        t4 *= scale[..., None]
    if low_rank is None:
        return t4
    u, v = reversed(low_rank) if adjoint else low_rank
    # mean_L(V·t) for every (channel, signal) in one batched GEMM -> (C, N, k, D), then U times it as a second one
    weights = v.transpose(0, 2, 3, 1) / t4.dtype.type(v.shape[1])  # (C, N, k, L)
    means = np.matmul(weights, t4.transpose(0, 2, 1, 3))  # (C, N, k, D)
    correction = np.empty_like(t4)
    np.matmul(u.transpose(0, 2, 1, 3), means, out=correction.transpose(0, 2, 1, 3))  # written straight into t's layout
    t4 -= correction
    if not adjoint:
        t4 *= scale[..., None]
    return t4


def norm_dual(double, bn, x: np.ndarray, t: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`norm_state`'s value, and the tangents through its slope (t is the conv's fresh output: in place)."""
    y, scale, low_rank = norm_state(double, bn, x, mode, t.dtype)
    return y, _t3(norm_linear(_t4(t, x.shape[0]), scale, low_rank))


def max_pool_dual(x: np.ndarray, t: np.ndarray, kernel_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Max-pool: each window passes the tangent of its first maximum (torch's tie rule)."""
    n = x.shape[0]
    x_cln, t4 = _cln(x), _t4(t, n)
    span = (x_cln.shape[1] // kernel_size) * kernel_size
    best = x_cln[:, 0:span:kernel_size].copy()
    out = t4[:, 0:span:kernel_size].copy()
    for offset in range(1, kernel_size):  # window offsets, not positions
        candidate = x_cln[:, offset:span:kernel_size]
        better = candidate > best
        out = np.where(better[..., None], t4[:, offset:span:kernel_size], out)
        np.maximum(best, candidate, out=best)
    return layers.max_pool1d(x, kernel_size), _t3(out)


def max_pool_adjoint(x: np.ndarray, g4: np.ndarray, kernel_size: int = 2) -> np.ndarray:
    """Cotangents (C, L // k, N, P) of a max-pool's output -> its input's (C, L, N, P): each window's first maximum."""
    x_cln = _cln(x)
    span = (x_cln.shape[1] // kernel_size) * kernel_size
    out = np.zeros((x_cln.shape[0], x_cln.shape[1], *g4.shape[2:]), g4.dtype)  # a dropped tail sample gets 0
    best = x_cln[:, 0:span:kernel_size].copy()
    choice = np.zeros(best.shape, dtype=np.intp)
    for offset in range(1, kernel_size):  # window offsets, not positions
        candidate = x_cln[:, offset:span:kernel_size]
        choice[candidate > best] = offset
        np.maximum(best, candidate, out=best)
    for offset in range(kernel_size):
        np.multiply(g4, (choice == offset)[..., None], out=out[:, offset:span:kernel_size])
    return out


def adaptive_positions(x: np.ndarray, output_size: int) -> np.ndarray:
    """Adaptive max-pool (torch's bins): the position of each bin's first maximum, (C, output_size, N)."""
    x_cln = _cln(x)
    index = layers.adaptive_bin_index(x_cln.shape[1], output_size)  # (out, widest), as layers.adaptive_max_pool1d
    pick = x_cln[:, index].argmax(axis=2)  # (C, out, N): first maximum
    return index[np.arange(output_size)[None, :, None], pick]


# ---------------------------------------------------------------- parts
def double_conv_dual(part, x, t, mode, scale=None, t_scale=None):
    """``DoubleConv``: (conv → BN → ReLU) × 2; the first kernel optionally scaled per signal."""
    x, t = norm_dual(part, part.bn1, *conv_dual(part.conv1, x, t, scale, t_scale), mode)
    return norm_dual(part, part.bn2, *conv_dual(part.conv2, x, t), mode)


def down_dual(part, x, t, mode, scale=None, t_scale=None):
    """``Down``: max-pool by 2, then DoubleConv."""
    return double_conv_dual(part.conv, *max_pool_dual(x, t, 2), mode, scale, t_scale)


def up_dual(part, x1, t1, x2, t2, mode):
    """``Up``: upsample ×2, pad to the skip's length, concat [skip, up], DoubleConv (all linear but the last)."""
    x1, t1 = layers.upsample_linear(x1, 2), layers.upsample_linear(t1, 2)
    x1p, x2p = layers.pad_to_match(x1, x2)
    t1p, t2p = layers.pad_to_match(t1, t2)
    return double_conv_dual(part.conv, layers.concat_channels([x2p, x1p]), layers.concat_channels([t2p, t1p]), mode)


def wienernet_dual(part, h: np.ndarray, dh: np.ndarray, mode: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``WienerNet``: the kernel scale 1 + β·pool(encode(h)) (N, C, 3) and its tangent (C, 3, N, D).

    Reverse mode: the scale has C·3 entries per signal (48 for the original's C = 16), as a rule
    fewer than the L directions of y, so C·3 cotangents go back through the encoder (the value
    pass records each layer's slope), and d scale/dh is then multiplied by dh/dy (N, D, L).
    """
    tape, p = [], h
    for index, name in enumerate(part.part_names):
        stage = getattr(part, name)
        if index:
            tape.append(("pool", p))
            p = layers.max_pool1d(p, 2)
        double = stage if index == 0 else stage.conv
        for conv, bn in ((double.conv1, double.bn1), (double.conv2, double.bn2)):
            tape.append(("conv", conv.weight))
            p, scale, low_rank = norm_state(double, bn, conv(p), mode, dtype)
            tape.append(("bn", scale, low_rank))
    channels, n = p.shape[1], p.shape[0]
    position = adaptive_positions(p, PRIOR_TAPS)  # (C, taps, N)
    c, tap, sig = np.meshgrid(np.arange(channels), np.arange(PRIOR_TAPS), np.arange(n), indexing="ij")
    g4 = np.zeros((channels, p.shape[2], n, channels * PRIOR_TAPS), dtype)
    g4[c, position, sig, c * PRIOR_TAPS + tap] = 1.0  # one cotangent per (channel, tap): its picked sample
    for entry in reversed(tape):
        if entry[0] == "bn":
            g4 = norm_linear(g4, entry[1], entry[2], adjoint=True)
        elif entry[0] == "conv":  # a "same" convolution's transpose: channels swapped, taps reversed
            g4 = _t4(conv_tangents(_t3(g4), entry[1].transpose(1, 0, 2)[:, :, ::-1]), n)
        else:
            g4 = max_pool_adjoint(entry[1], g4, 2)
    beta = float(np.asarray(part.beta, dtype=np.float64).ravel()[0])
    pooled = np.take_along_axis(_cln(p), position, axis=1).transpose(2, 0, 1)  # (N, C, taps)
    d_scale = np.matmul(g4[0].transpose(1, 2, 0).astype(np.float64), dh.transpose(0, 2, 1))  # (N, C·3, D)
    t_scale = (beta * d_scale).astype(dtype).transpose(1, 0, 2).reshape(channels, PRIOR_TAPS, n, -1)
    return 1.0 + beta * pooled, t_scale


def wiener_dual(y: np.ndarray, window: int = WIENER_WINDOW) -> np.ndarray:
    """The exact derivative of ``deepdenoise1d.classical.wiener`` at y (N, L): d[n, j, i] = ∂wiener_i/∂y_j.

    With the box mean m = A·y, local variance v = A(y²) − m², noise ν = mean(v)
    and gain g = 1 − ν/v, the output is m + g·(y − m) where v > ν, else m; so
    d = A(1 − g) + g·I + (ν·dv − v·dν)·(y − m)/v² there, with dv = A·2(y_j − m)
    and dν = mean(dv) (A is the same 3-tap box for every signal: it is built once).
    """
    n, length = y.shape
    local_mean = uniform_filter1d(y, window, axis=-1, mode="constant")
    local_var = uniform_filter1d(y * y, window, axis=-1, mode="constant") - local_mean**2
    noise = local_var.mean(axis=-1, keepdims=True)
    box = uniform_filter1d(np.eye(length), window, axis=-1, mode="constant")  # [j, i] = ∂m_i/∂y_j
    d_var = box * (2.0 * (y[:, :, None] - local_mean[:, None, :]))  # (N, j, i)
    d_noise = d_var.mean(axis=-1, keepdims=True)
    passing = local_var > noise  # wiener's own switch (its `<=` branch is the box mean)
    safe_var = np.where(passing, local_var, 1.0)
    gain = np.where(passing, 1.0 - noise / safe_var, 0.0)
    resid = np.where(passing, (y - local_mean) / safe_var**2, 0.0)
    out = d_var * (noise * resid)[:, None, :]
    out -= d_noise * (safe_var * resid)[:, None, :]
    out += box * (1.0 - gain)[:, None, :]
    diagonal = np.arange(length)
    out[:, diagonal, diagonal] += gain
    return out


def prior_dual(y: np.ndarray, rel_floor: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """h(y) = ``wiener_inverse_response(y)`` and its exact derivative, in float64.

    The FFTs are linear, the Tikhonov floor moves with the largest |Y_k| (a
    conjugate pair for real y, so no kink), and for real y the transfer
    T = fft(wiener(y))·conj(Y)/(|Y|² + floor) is Hermitian: t = ifft(T) is real
    and h = |t|, dh = sign(t)·dt. Real FFTs therefore carry every tangent.

    Parameters
    ----------
    y : np.ndarray
        Signals, shape (N, L), float64.
    rel_floor : float
        ``wiener_inverse_response``'s floor, relative to max |Y_k|.

    Returns
    -------
    h : np.ndarray
        Shape (N, L).
    dh : np.ndarray
        Shape (N, L, L), ``dh[n, j, i] = ∂h_i/∂y_j`` (direction first, as tangents).
    """
    n, length = y.shape
    rows = np.arange(n)
    spectrum = np.fft.rfft(y, axis=-1)
    d_spectrum = np.fft.rfft(np.eye(length), axis=-1)  # [j, k]: the same for every signal
    filtered = np.fft.rfft(wiener(y), axis=-1)
    d_filtered = np.fft.rfft(wiener_dual(y), axis=-1)  # (N, j, k)
    magnitude = np.abs(spectrum)
    peak = magnitude.argmax(axis=-1)
    floor = tikhonov_floor(magnitude[rows, peak], rel_floor)  # relative, as wiener_inverse_response's
    d_floor = 2 * rel_floor**2 * np.real(np.conj(spectrum[rows, peak])[:, None] * d_spectrum[:, peak].T)  # (N, j)
    power = magnitude**2 + floor[:, None]
    transfer = filtered * np.conj(spectrum) / power
    d_power = 2 * np.real(np.conj(spectrum)[:, None] * d_spectrum) + d_floor[:, :, None]
    # dT = (dW·conj(Y) + W·conj(dY) − T·dP) / P, accumulated in dW's buffer.
    d_filtered *= (np.conj(spectrum) / power)[:, None]
    d_filtered += (filtered / power)[:, None] * np.conj(d_spectrum)
    d_filtered -= (transfer / power)[:, None] * d_power
    t = np.fft.irfft(transfer, n=length, axis=-1)
    dt = np.fft.irfft(d_filtered, n=length, axis=-1)
    dt *= np.sign(t)[:, None]
    return wiener_inverse_response(y), dt


# ---------------------------------------------------------------- the network
def bn_mode_of(net, bn_mode: str | None) -> str:
    """The requested mode, else the one the weights record (``config`` as dict or dataclass)."""
    if bn_mode is not None:
        return bn_mode
    config = net.config
    recorded = config.get("bn_mode") if isinstance(config, dict) else getattr(config, "bn_mode", None)
    return recorded or "fixed"


def network_dual(net, y: np.ndarray, mode: str, features: dict | None = None,
                 tangent_dtype: type | None = None) -> tuple[np.ndarray, np.ndarray]:
    """f(y) and its total Jacobian for one block of signals.

    Parameters
    ----------
    net : Numpy_V2.model.NumpyICNN
        The model (its parts are read; its compute dtype is not used: values are float64).
    y : np.ndarray
        Noisy signals, shape (N, L), L ≥ ``icnn.spec.min_length(net.config)``.
    mode : {"fixed", "unfixed"}
        Batch-norm statistics.
    features : dict, optional
        When given, receives the value at each U-Net level (inc, down1.., up1..), in network order,
        shape (N, C, L').
    tangent_dtype : type, optional
        Precision of the tangents (default ``TANGENT_DTYPE``); np.float64 for a tighter check.

    Returns
    -------
    output : np.ndarray
        f(y), shape (N, L).
    jacobian : np.ndarray
        Shape (N, L, L), ``jacobian[n, i, j] = ∂f_i/∂y_j``.
    """
    y = np.asarray(y, dtype=np.float64)
    if getattr(net.config, "baseline", "none") == "median":
        # f(y) = m + F(y − m·1), m = y_k the lower median: J_f = J_F(I − 1 e_kᵀ) + 1 e_kᵀ = J_F + (1 − J_F 1) e_kᵀ
        k = np.argpartition(y, baseline_index(y.shape[-1]), axis=-1)[:, baseline_index(y.shape[-1])]
        rows = np.arange(y.shape[0])
        m = y[rows, k][:, None]
        out, jac = _scaled_dual(net, y - m, mode, features, tangent_dtype)
        jac[rows, :, k] += 1.0 - jac.sum(axis=2)
        return out + m, jac
    return _scaled_dual(net, y, mode, features, tangent_dtype)


def _scaled_dual(net, y: np.ndarray, mode: str, features: dict | None, tangent_dtype) -> tuple[np.ndarray, np.ndarray]:
    """:func:`network_dual` after the baseline: s(y)·g(y / s(y)) for an equivariant model, else g(y)."""
    if not getattr(net.config, "equivariant", False):
        return unet_dual(net, y, mode, features, tangent_dtype)
    # f(y) = s(y)·g(u), u = y / s: J_f = J_g(u) + (g(u) − J_g(u)·u) ∇sᵀ, since J_g(u)·(∂u/∂y) = J_g(I − u ∇sᵀ)/s.
    s, grad_s = noise_scale_dual(y)
    u = y / np.where(s > 0, s, 1.0)[:, None]
    out, jac = unet_dual(net, u, mode, features, tangent_dtype)
    offset = out - np.einsum("nij,nj->ni", jac, u)
    jac = jac + offset[:, :, None] * grad_s[:, None, :]
    jac[s == 0] = 0.0  # y = 0 gives 0 (s·J_g + g ∇sᵀ with s = 0 and ∇s = 0), as torch's autograd says
    out = s[:, None] * out
    kept = beyond_trust(y, out, s[:, None])  # the trust region: those samples are y itself, rows of I
    if kept.any():
        signal, sample = np.nonzero(kept)
        jac[signal, sample, :] = 0.0
        jac[signal, sample, sample] = 1.0
        out = np.where(kept, y, out)
    return out, jac


def noise_scale_dual(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s(y) of (N, L) signals (``icnn.spec``'s scale rule), shape (N,), and its gradient ∂s/∂y, shape (N, L)."""
    n, length = y.shape
    diffs = np.diff(y, axis=-1)
    k = (length - 2) // 2
    at = np.argpartition(np.abs(diffs), k, axis=-1)[:, k]  # Δ_at = y[at + 1] − y[at] holds the lower median
    rows = np.arange(n)
    median = np.abs(diffs[rows, at]) / SCALE_MAD
    grad = np.zeros((n, length))
    sign = np.sign(diffs[rows, at]) / SCALE_MAD
    grad[rows, at + 1] += sign
    grad[rows, at] -= sign
    rms = root_mean_square(y)[:, 0]  # the squares at a magnitude near 1: no overflow at 1e200
    fallback = median <= 0  # over half the differences are 0: the RMS instead (its gradient y / (L·rms))
    grad[fallback] = y[fallback] / (length * np.where(rms[fallback] > 0, rms[fallback], 1.0))[:, None]
    return np.where(fallback, rms, median), grad


def unet_dual(net, y: np.ndarray, mode: str, features: dict | None = None,
              tangent_dtype: type | None = None) -> tuple[np.ndarray, np.ndarray]:
    """g(y) and its total Jacobian: :func:`network_dual` without an equivariant model's scale normalisation."""
    tangent_dtype = np.dtype(tangent_dtype or TANGENT_DTYPE)
    n, length = y.shape
    x = layers.batch_innermost(y[:, None, :], np.float64)
    t = _t3(np.broadcast_to(np.eye(length, dtype=tangent_dtype)[None, :, None, :], (1, length, n, length)))  # δ_ij
    scale = t_scale = None
    if net.wienernet is not None:
        h, dh = prior_dual(y)
        scale, t_scale = wienernet_dual(net.wienernet, layers.batch_innermost(h[:, None, :], np.float64), dh, mode,
                                        tangent_dtype)
    encoded = {}
    bottleneck = modulated_part(net.config)
    for index, (name, _, _) in enumerate(encoder_parts(net.config)):
        modulation = (scale, t_scale) if name == bottleneck else (None, None)
        dual = double_conv_dual if index == 0 else down_dual  # the first part has no max-pool
        x, t = dual(getattr(net, name), x, t, mode, *modulation)
        encoded[name] = x, t
        if features is not None:
            features[name] = x
    for name, skip in skip_parts(net.config):
        x, t = up_dual(getattr(net, name), x, t, *encoded[skip], mode)
        if features is not None:
            features[name] = x
    out, t_out = conv_dual(getattr(net.outc, "conv", net.outc), x, t)
    return np.array(out[:, 0]), _t4(t_out, n)[0].transpose(1, 0, 2)


def jacobians(net, y: np.ndarray, bn_mode: str | None = None, block: int = JACOBIAN_BLOCK,
              threads: int | None = None, progress=None, tangent_dtype: type | None = None) -> dict[str, np.ndarray]:
    """f(y), J(y) and the offset b(y) = f(y) − J(y)·y for every signal, in blocks.

    Parameters
    ----------
    net : Numpy_V2.model.NumpyICNN
        The model.
    y : np.ndarray
        Noisy signals, shape (N, L).
    bn_mode : {"fixed", "unfixed"}, optional
        Defaults to the mode the weights record.
    block : int
        Signals per forward-mode pass (memory ~ block · L² · 4 bytes per activation channel).
    threads : int, optional
        Blocks run on this many threads, each with a one-thread BLAS (default 1).
    progress : deepdenoise1d.progress.Progress, optional
        Updated with the number of signals done.
    tangent_dtype : type, optional
        Precision of the tangents (default ``TANGENT_DTYPE``, float32); np.float64 is more accurate and slower.

    Returns
    -------
    dict
        ``output`` (N, L), ``jacobian`` (N, L, L), ``offset`` (N, L), all float64.
    """
    from Numpy_V2.parallel import run_blocks  # the one thread-pool rule of Numpy_V2

    mode = bn_mode_of(net, bn_mode)
    n, length = y.shape
    output = np.empty((n, length))
    jacobian = np.empty((n, length, length))

    lock = threading.Lock()  # blocks may finish on several threads; the progress counter is shared

    def work(start: int) -> None:
        stop = min(start + block, n)
        rows = np.asarray(y[start:stop], dtype=np.float64)
        values, tangents = {}, {}
        # f(y) = mean of s·R·w(s·R·y) over the passes, so J_f(y) = mean of R·J_w(s·R·y)·R (the signs cancel)
        for sign, flip in symmetry_passes(net.config):
            value, tangents[sign, flip] = network_dual(net, symmetry_input(rows, sign, flip), mode,
                                                       tangent_dtype=tangent_dtype)
            values[sign, flip] = sign * value
        output[start:stop] = symmetric_mean(net.config, values)
        jacobian[start:stop] = symmetric_mean(net.config, tangents, lambda t: t[:, ::-1, ::-1])
        if progress is not None:
            with lock:
                progress.update(stop - start)

    run_blocks(work, range(0, n, block), threads)
    offset = output - np.einsum("nij,nj->ni", jacobian, np.asarray(y, dtype=np.float64))
    return {"output": output, "jacobian": jacobian, "offset": offset}


def denoise_jacobians(net, rows: np.ndarray, mode: str) -> np.ndarray:
    """The Jacobian (N, L, L) of each signal of what ``net.denoise`` computes: exact SURE for ``--method auto``.
    With input_scale s it denoises as s · g(y / s), whose Jacobian is J_g(y / s)."""
    scale = net.config.input_scale
    return jacobians(net, rows / scale if scale != 1.0 else rows, mode)["jacobian"]


def feature_maps(net, y: np.ndarray, bn_mode: str | None = None) -> dict[str, np.ndarray]:
    """The value at each U-Net level (inc, down1..down{depth}, up1..up{depth}) for signals y (N, L):
    {name: (N, C, L')} in network order, float64."""
    features: dict[str, np.ndarray] = {}
    network_dual(net, np.atleast_2d(y), bn_mode_of(net, bn_mode), features)
    return {name: np.array(value) for name, value in features.items()}


# ---------------------------------------------------------------- the known optimum
def bayes_jacobian_diagonal(y: np.ndarray, sigma: float | np.ndarray, prior=None) -> tuple[np.ndarray, np.ndarray]:
    """The Bayes posterior mean E[x|y] and its exact derivative Var[x|y]/σ², sample by sample.

    The benchmark prior is i.i.d. per sample, so the minimum-MSE denoiser
    (``deepdenoise1d.classical.bayes_posterior_mean``) is pointwise and its Jacobian is
    diagonal: d E[x|y]/dy = Var[x|y]/σ² (Tweedie's formula, differentiated).

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, any shape.
    sigma : float or np.ndarray
        Noise level, scalar or broadcastable to ``y``.
    prior : deepdenoise1d.synthesis.SpikePrior, optional
        The clean-signal distribution (default: the benchmark's).

    Returns
    -------
    mean, derivative : np.ndarray
        Same shape as ``y``.
    """
    from scipy.special import softmax

    from deepdenoise1d.synthesis import SpikePrior

    prior = prior or SpikePrior()
    y = np.asarray(y, dtype=np.float64)
    support = np.concatenate([[0.0], prior.amplitudes])
    p0 = prior.zero_probability
    log_w = np.log(np.concatenate([[p0], np.full(prior.amplitudes.size, (1 - p0) / prior.amplitudes.size)]))
    sigma = np.asarray(sigma, dtype=np.float64)
    weights = softmax(log_w - 0.5 * ((y[..., None] - support) / sigma[..., None]) ** 2, axis=-1)
    mean = weights @ support
    variance = weights @ support**2 - mean**2
    return mean, variance / sigma**2


def filter_numbers(jacobian: np.ndarray, output: np.ndarray, offset: np.ndarray) -> dict[str, np.ndarray]:
    """Per-signal summaries of J (N, L, L): diagonal-mass fraction, tr J / L, mean row sum, ‖J‖²_F, ‖b‖ / ‖f(y)‖.

    The mean row sum, mean_i Σ_j ∂f_i/∂y_j, is the response to adding a constant to y.
    """
    diagonal = np.diagonal(jacobian, axis1=1, axis2=2)
    frobenius = np.sum(jacobian**2, axis=(1, 2))
    return {
        "diagonal_fraction": np.sum(diagonal**2, axis=1) / frobenius,
        "trace_per_sample": diagonal.sum(axis=1) / jacobian.shape[1],
        "row_sum": jacobian.sum(axis=2).mean(axis=1),
        "frobenius_squared": frobenius,
        "offset_relative": np.linalg.norm(offset, axis=1) / np.linalg.norm(output, axis=1),
    }


def sure(noisy: np.ndarray, output: np.ndarray, trace: np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
    """Stein's unbiased risk estimate per signal: ‖f(y) − y‖²/L − σ² + 2σ²·tr J/L (estimates ‖f(y) − x‖²/L)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    length = noisy.shape[-1]
    return np.mean((output - noisy) ** 2, axis=-1) - sigma**2 + 2 * sigma**2 * np.asarray(trace) / length

"""Exact Jacobians of ICNN_s in plain NumPy, by forward-mode differentiation.

Each ``*_dual`` function takes a value and its tangents and returns both. A
value is an (N, C, L) activation, batch-innermost as in :mod:`Numpy_V2.layers`
(a view of a contiguous (C, L, N) buffer). Its tangents carry D directions
(D = L, one per input sample) as a (D·N, C, L) view of a contiguous
(C, L, D, N) buffer: the directions are an outer batch axis, so every linear
layer (convolution, upsampling, padding, concatenation) pushes them through the
same layer function as the value, without bias; piecewise-linear layers
(ReLU, max-pool, fixed BN, soft threshold) pass them by the value's mask;
unfixed BN and the prior's kernel modulation have closed-form derivatives.

The Jacobian is the *total* derivative of f(y): it includes the path through
the Wiener prior h(y) (``signals.classical.wiener_inverse_response``), whose
derivative dh/dy is taken by a float64 central difference of that one function.
Everything is computed in float64. Torch is never imported.
"""
from __future__ import annotations

import threading

import numpy as np

from icnn.spec import BN_EPS, PRIOR_TAPS
from Numpy_V2.layers import (
    batch_innermost,
    batch_norm,
    concat_channels,
    conv1d,
    max_pool1d,
    modulated_conv1d,
    pad_to_match,
    relu,
    soft_threshold,
    upsample_linear,
)
from signals.classical import wiener_inverse_response

# Signals per forward-mode block: D = L tangents each, so a block of 8 signals of
# length 100 carries 800 columns per activation (stays in cache; measured 8 > 4, 16, 32).
JACOBIAN_BLOCK = 8
# Central-difference step of dh/dy, times 1 + each signal's RMS: truncation error
# ~step² and rounding ~1e-16/step both stay below 1e-9, and a kink of h (Wiener's gain
# switch, |·| near 0) lies within one step of y rarely.
PRIOR_STEP = 1e-6


# ---------------------------------------------------------------- layout helpers
def _cln(x: np.ndarray) -> np.ndarray:
    """(N, C, L) batch-innermost view -> its contiguous (C, L, N) buffer."""
    return np.ascontiguousarray(x.transpose(1, 2, 0))


def _t4(t: np.ndarray, n: int) -> np.ndarray:
    """Tangents (D·N, C, L) -> the (C, L, D, N) buffer."""
    c_l_dn = _cln(t)
    return c_l_dn.reshape(c_l_dn.shape[0], c_l_dn.shape[1], -1, n)


def _t3(t4: np.ndarray) -> np.ndarray:
    """(C, L, D, N) buffer -> the (D·N, C, L) tangent view of it."""
    c, length, d, n = t4.shape
    return np.ascontiguousarray(t4).reshape(c, length, d * n).transpose(2, 0, 1)


# ---------------------------------------------------------------- layers
def conv_dual(conv, x: np.ndarray, t: np.ndarray, scale=None, t_scale=None) -> tuple[np.ndarray, np.ndarray]:
    """A ``Numpy_V2.model.Conv1d`` and its tangents; optionally with the per-signal kernel scale.

    ``scale`` (N, C_out, K) multiplies the kernel per signal; ``t_scale``
    (C_out, K, D, N) is its tangent (product rule: the kernel moves with y through h).
    """
    pad = conv.weight.shape[2] // 2
    if scale is None:
        return conv1d(x, conv.weight, conv.bias, pad), conv1d(t, conv.weight, None, pad)
    n, c_out, k = scale.shape
    zero_bias = np.zeros(c_out)
    y = modulated_conv1d(x, conv.weight, conv.bias, scale)
    d = t.shape[0] // n
    ty4 = _t4(modulated_conv1d(t, conv.weight, zero_bias, np.tile(scale, (d, 1, 1))), n)
    for tap in range(k):  # taps, not positions: ∂y/∂scale[n, o, tap] is tap's shifted products
        one_hot = np.zeros_like(scale)
        one_hot[:, :, tap] = 1.0
        shifted = _cln(modulated_conv1d(x, conv.weight, zero_bias, one_hot))  # (C_out, L, N)
        ty4 += shifted[:, :, None, :] * t_scale[:, tap, None, :, :]
    return y, _t3(ty4)


def bn_relu_dual(bn, x: np.ndarray, t: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``SignalBatchNorm1d`` (BN, then the sparse soft threshold if any), then ReLU, with tangents.

    The three are fused for the tangents: where the output is positive, the soft
    threshold and ReLU pass their input's tangent unchanged, elsewhere nothing.
    Fixed BN is an affine map per channel. Unfixed BN is z = (x − μ)/s with the
    signal's own μ and s = sqrt(var + eps) per channel; its derivative is
    dz = (dx − mean(dx) − z·mean(z·dx)) / s (using mean(z) = 0).
    """
    n = x.shape[0]
    gamma = bn.weight.astype(np.float64)
    y = batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, mode)
    if bn.threshold is not None:
        y = soft_threshold(y, bn.threshold)
    y = relu(y, inplace=True)
    positive = _cln(y) > 0  # (C, L, N)
    t4 = _t4(t, n)
    if mode == "fixed":
        alpha = gamma / np.sqrt(bn.running_var.astype(np.float64) + BN_EPS)
        return y, _t3(t4 * (alpha[:, None, None] * positive)[:, :, None, :])
    x_cln = _cln(x)  # (C, L, N)
    u = x_cln - x_cln.mean(axis=1, keepdims=True)
    s = np.sqrt(np.mean(u * u, axis=1, keepdims=True) + BN_EPS)  # (C, 1, N)
    z = u / s
    length = x_cln.shape[1]
    mean_t = t4.mean(axis=1, keepdims=True)  # (C, 1, D, N)
    mean_zt = np.einsum("cln,cldn->cdn", z, t4)[:, None] / length  # (C, 1, D, N)
    out = z[:, :, None, :] * mean_zt
    out += mean_t
    np.subtract(t4, out, out=out)
    out *= (gamma[:, None, None] / s * positive)[:, :, None, :]
    return y, _t3(out)


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
        out = np.where(better[:, :, None, :], t4[:, offset:span:kernel_size], out)
        np.maximum(best, candidate, out=best)
    return max_pool1d(x, kernel_size), _t3(out)


def adaptive_max_pool_dual(x: np.ndarray, t: np.ndarray, output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive max-pool (torch's bins): each bin passes the tangent of its first maximum."""
    n = x.shape[0]
    x_cln, t4 = _cln(x), _t4(t, n)
    length = x_cln.shape[1]
    bins = np.arange(output_size)
    start = (bins * length) // output_size
    end = -((-(bins + 1) * length) // output_size)  # ceil
    widest = int((end - start).max())
    index = np.minimum(start[:, None] + np.arange(widest), end[:, None] - 1)  # (out, widest)
    gathered = x_cln[:, index]  # (C, out, widest, N)
    pick = gathered.argmax(axis=2)  # (C, out, N): first maximum
    position = index[np.arange(output_size)[None, :, None], pick]  # (C, out, N)
    value = np.take_along_axis(x_cln, position, axis=1)
    tangent = np.take_along_axis(t4, position[:, :, None, :], axis=1)  # (C, out, D, N)
    return value.transpose(2, 0, 1), _t3(tangent)


# ---------------------------------------------------------------- parts
def double_conv_dual(part, x, t, mode, scale=None, t_scale=None):
    """``DoubleConv``: (conv → BN → ReLU) × 2; the first kernel optionally scaled per signal."""
    x, t = bn_relu_dual(part.bn1, *conv_dual(part.conv1, x, t, scale, t_scale), mode)
    return bn_relu_dual(part.bn2, *conv_dual(part.conv2, x, t), mode)


def down_dual(part, x, t, mode, scale=None, t_scale=None):
    """``Down``: max-pool by 2, then DoubleConv."""
    return double_conv_dual(part.conv, *max_pool_dual(x, t, 2), mode, scale, t_scale)


def up_dual(part, x1, t1, x2, t2, mode):
    """``Up``: upsample ×2, pad to the skip's length, concat [skip, up], DoubleConv (all linear but the last)."""
    x1, t1 = upsample_linear(x1, 2), upsample_linear(t1, 2)
    x1p, x2p = pad_to_match(x1, x2)
    t1p, t2p = pad_to_match(t1, t2)
    return double_conv_dual(part.conv, concat_channels([x2p, x1p]), concat_channels([t2p, t1p]), mode)


def wienernet_dual(part, h, th, mode):
    """``WienerNet``: the kernel scale 1 + β·pool(encode(h)) (N, 16, 3) and its tangent (16, 3, D, N)."""
    p, tp = double_conv_dual(part.inc, h, th, mode)
    for down in (part.down1, part.down2, part.down3):
        p, tp = down_dual(down, p, tp, mode)
    pooled, t_pooled = adaptive_max_pool_dual(p, tp, PRIOR_TAPS)
    beta = float(np.asarray(part.beta, dtype=np.float64).ravel()[0])
    return 1.0 + beta * pooled, beta * _t4(t_pooled, h.shape[0])


def prior_dual(y: np.ndarray, step: float = PRIOR_STEP) -> tuple[np.ndarray, np.ndarray]:
    """h(y) and dh/dy by a float64 central difference of ``wiener_inverse_response``.

    Parameters
    ----------
    y : np.ndarray
        Signals, shape (N, L), float64.
    step : float
        Step relative to each signal's RMS (plus one, so an all-zero signal has a step).

    Returns
    -------
    h : np.ndarray
        Shape (N, L).
    dh : np.ndarray
        Shape (N, L, L), ``dh[n, i, j] = ∂h_i/∂y_j``.
    """
    n, length = y.shape
    delta = step * (1.0 + np.sqrt(np.mean(y * y, axis=1)))  # (N,)
    shift = delta[:, None, None] * np.eye(length)  # (N, j, L)
    plus = wiener_inverse_response((y[:, None, :] + shift).reshape(-1, length)).reshape(n, length, length)
    minus = wiener_inverse_response((y[:, None, :] - shift).reshape(-1, length)).reshape(n, length, length)
    dh = ((plus - minus) / (2.0 * delta[:, None, None])).transpose(0, 2, 1)  # [n, i, j]
    return wiener_inverse_response(y), dh


# ---------------------------------------------------------------- the network
LEVELS = ("inc", "down1", "down2", "down3", "down4", "up1", "up2", "up3", "up4")


def bn_mode_of(net, bn_mode: str | None) -> str:
    """The requested mode, else the one the weights record (``config`` as dict or dataclass)."""
    if bn_mode is not None:
        return bn_mode
    config = net.config
    recorded = config.get("bn_mode") if isinstance(config, dict) else getattr(config, "bn_mode", None)
    return recorded or "fixed"


def network_dual(net, y: np.ndarray, mode: str, features: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """f(y) and its total Jacobian for one block of signals.

    Parameters
    ----------
    net : Numpy_V2.model.NumpyICNN
        The model (its parts are read; its compute dtype is not used: all float64).
    y : np.ndarray
        Noisy signals, shape (N, L), L ≥ 16.
    mode : {"fixed", "unfixed"}
        Batch-norm statistics.
    features : dict, optional
        When given, receives the value at each U-Net level (``LEVELS``), shape (N, C, L').

    Returns
    -------
    output : np.ndarray
        f(y), shape (N, L).
    jacobian : np.ndarray
        Shape (N, L, L), ``jacobian[n, i, j] = ∂f_i/∂y_j``.
    """
    y = np.asarray(y, dtype=np.float64)
    n, length = y.shape
    x = batch_innermost(y[:, None, :], np.float64)
    t = _t3(np.broadcast_to(np.eye(length)[None, :, :, None], (1, length, length, n)))  # [0, i, j, n] = δ_ij
    scale = t_scale = None
    if net.wienernet is not None:
        h, dh = prior_dual(y)
        th = _t3(dh.transpose(1, 2, 0)[None])  # (1, L_i, D_j, N)
        scale, t_scale = wienernet_dual(net.wienernet, batch_innermost(h[:, None, :], np.float64), th, mode)
    skips = []
    for name in LEVELS[:5]:
        part = getattr(net, name)
        if name == "inc":
            x, t = double_conv_dual(part, x, t, mode)
        else:
            x, t = down_dual(part, x, t, mode, *((scale, t_scale) if name == "down4" else (None, None)))
        skips.append((x, t))
        if features is not None:
            features[name] = x
    for name, (skip, t_skip) in zip(LEVELS[5:], reversed(skips[:4])):
        x, t = up_dual(getattr(net, name), x, t, skip, t_skip, mode)
        if features is not None:
            features[name] = x
    out, t_out = conv_dual(getattr(net.outc, "conv", net.outc), x, t)
    return np.array(out[:, 0]), np.ascontiguousarray(_t4(t_out, n)[0].transpose(2, 0, 1))


def jacobians(net, y: np.ndarray, bn_mode: str | None = None, block: int = JACOBIAN_BLOCK,
              threads: int | None = None, progress=None) -> dict[str, np.ndarray]:
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
        Signals per forward-mode pass (memory ~ block · L² · 8 bytes per activation channel).
    threads : int, optional
        Blocks run on this many threads, each with a one-thread BLAS (default 1).
    progress : signals.progress.Progress, optional
        Updated with the number of signals done.

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
        output[start:stop], jacobian[start:stop] = network_dual(net, np.asarray(y[start:stop], dtype=np.float64), mode)
        if progress is not None:
            with lock:
                progress.update(stop - start)

    run_blocks(work, range(0, n, block), threads)
    offset = output - np.einsum("nij,nj->ni", jacobian, np.asarray(y, dtype=np.float64))
    return {"output": output, "jacobian": jacobian, "offset": offset}


def feature_maps(net, y: np.ndarray, bn_mode: str | None = None) -> dict[str, np.ndarray]:
    """The value at each U-Net level (``LEVELS``) for signals y (N, L): {name: (N, C, L')}, float64."""
    features: dict[str, np.ndarray] = {}
    network_dual(net, np.atleast_2d(y), bn_mode_of(net, bn_mode), features)
    return {name: np.array(features[name]) for name in LEVELS}


# ---------------------------------------------------------------- the known optimum
def bayes_jacobian_diagonal(y: np.ndarray, sigma: float | np.ndarray, prior=None) -> tuple[np.ndarray, np.ndarray]:
    """The Bayes posterior mean E[x|y] and its exact derivative Var[x|y]/σ², sample by sample.

    The benchmark prior is i.i.d. per sample, so the minimum-MSE denoiser
    (``signals.classical.bayes_posterior_mean``) is pointwise and its Jacobian is
    diagonal: d E[x|y]/dy = Var[x|y]/σ² (Tweedie's formula, differentiated).

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, any shape.
    sigma : float or np.ndarray
        Noise level, scalar or broadcastable to ``y``.
    prior : signals.synthesis.SpikePrior, optional
        The clean-signal distribution (default: the benchmark's).

    Returns
    -------
    mean, derivative : np.ndarray
        Same shape as ``y``.
    """
    from scipy.special import softmax

    from signals.synthesis import SpikePrior

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

"""The baseline and scale normalisation around the network, in NumPy, shared by both backends.

An equivariant model computes f(y) = m(y) + s(y)·g((y − m(y)) / s(y)) (m = 0 unless it is offset-free,
``baseline: median``; s from :data:`icnn.spec.SCALE_MAD`). :func:`normalised_forward` computes m, s, the
Wiener prior h and the way back in the input's own dtype, so a float64 record keeps float64's range and
precision at any magnitude (1e-200 or 1e200), and hands the network g, in its own dtype (float32), only
the normalised signal, which is O(1). The NumPy model (``Numpy_V2.model``) and the PyTorch inference
path (``Pytorch_V1.inference``) both call it with their own g, so the two agree. Torch-free.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from icnn.spec import SCALE_MAD, TRUST_REGION, ModelConfig, baseline
from deepdenoise1d.classical import wiener_inverse_response
from deepdenoise1d.errors import InputError
from deepdenoise1d.magnitude import rms

# The network g: (normalised signals (N, 1, L) in its dtype, Wiener prior h (N, 1, L) float32 or None) -> (N, 1, L).
Network = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


def real_signals(noisy) -> np.ndarray:
    """``noisy`` as an array of at least two axes, refused in one line unless it holds real numbers.

    Both backends' ``denoise`` start here: a complex array would otherwise lose its imaginary part to a cast
    with no more than NumPy's warning.
    """
    noisy = np.atleast_2d(np.asarray(noisy))
    if noisy.dtype.kind == "c":
        raise InputError("the signals are complex; denoise their real and imaginary parts separately")
    if noisy.dtype.kind not in "fiub":
        raise InputError(f"the signals hold {noisy.dtype}, expected real numbers")
    return noisy


def noise_scale(x: np.ndarray) -> np.ndarray:
    """s(y) of (N, 1, L) signals as (N, 1, 1), in x's dtype: median |Δy| / SCALE_MAD, else the RMS (``icnn.spec``).

    The RMS is summed in float64 at a magnitude near 1 (:func:`deepdenoise1d.magnitude.rms`): a sparse record
    at 3e20 has an RMS that float32 holds, but not its squares.
    """
    diffs = np.abs(np.diff(x, axis=-1))
    k = (x.shape[-1] - 2) // 2  # the lower median, as Pytorch_V1.model.noise_scale picks it
    median = np.partition(diffs, k, axis=-1)[..., k : k + 1] / x.dtype.type(SCALE_MAD)
    return np.where(median > 0, median, rms(x).astype(x.dtype))


def beyond_trust(x: np.ndarray, out: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Where ``out`` moves x by more than ``icnn.spec.TRUST_REGION``·s (s broadcast against x)."""
    return np.abs(out - x) > TRUST_REGION * s


def trust_region(x: np.ndarray, out: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``out``, except where it moves x beyond the trust region (:func:`beyond_trust`): there x itself."""
    return np.where(beyond_trust(x, out, s), x, out)


def wiener_prior(x: np.ndarray) -> np.ndarray:
    """h of each signal (``deepdenoise1d.classical.wiener_inverse_response``), float32 (N, 1, L) like x.

    Computed in float64 from x as given, as ``Pytorch_V1.model.wiener_prior`` does; h is scale-free
    (its floor is relative), so the h of y and of y / s(y) agree to rounding.
    """
    h = wiener_inverse_response(np.asarray(x)[:, 0].astype(np.float64))
    return h.astype(np.float32)[:, None, :]


def normalised_forward(x: np.ndarray, config: ModelConfig, network: Network, dtype,
                       h: np.ndarray | None = None) -> np.ndarray:
    """f(y) of an equivariant or offset-free model: m and s, h and the way back in x's dtype, g in ``dtype``.

    Parameters
    ----------
    x : np.ndarray
        Signals (N, 1, L), float32 or float64: m(y), s(y), h(y − m) and m + s·g are computed in this dtype.
    config : icnn.spec.ModelConfig
        ``baseline`` ("median": m is the lower median, else 0), ``equivariant`` (s(y), else 1) and ``prior``.
    network : callable
        g(z, h) on the normalised signals z in ``dtype``, returning (N, 1, L).
    dtype : dtype-like
        The network's compute dtype (float32 for the shipped models).
    h : np.ndarray, optional
        The Wiener prior (N, 1, L) of y − m; computed here when omitted and the model has the prior branch.

    Returns
    -------
    np.ndarray
        f(y), (N, 1, L), in x's dtype where x is float64 (else ``dtype``), with every sample the network
        would move beyond the trust region (:func:`trust_region`) kept as y.
    """
    offset_free = config.baseline == "median"
    m = baseline(x) if offset_free else None
    if offset_free:
        x = x - m
    # h needs no rescaling: the Wiener filter is homogeneous and its floor relative, so h(a·y) = h(y); from y − m.
    if h is None and config.prior:
        h = wiener_prior(x)
    if config.equivariant:
        s = noise_scale(x)
        z = x / np.where(s > 0, s, x.dtype.type(1))
        out = trust_region(x, s * network(z.astype(dtype, copy=False), h), s)
    else:
        out = network(x.astype(dtype, copy=False), h)
    return out + m if offset_free else out

"""Sums of squares at any magnitude: per-signal powers of two that bring float64 values near 1.

A record in units of 1e-200 or 1e200 is valid float64, but its squares underflow to 0 or overflow
to inf. Dividing by a power of two is exact (away from subnormals), so an estimator computed on
y / p and multiplied back by p gives the same bits as on y wherever y's squares fit float64, and the
right answer where they do not. Torch-free.
"""
from __future__ import annotations

import numpy as np


def power_of_two(x: np.ndarray, axis=-1) -> np.ndarray:
    """2^e with max|x| / 2^e in [1, 2) along ``axis`` (kept as 1), float64; 1 where that is all zero.

    Parameters
    ----------
    x : np.ndarray
        Finite values, any real float or integer dtype.
    axis : int, tuple of int or None
        The axes reduced (None: one power for the whole array).

    Returns
    -------
    np.ndarray
        float64, ``x``'s shape with ``axis`` of length 1.
    """
    peak = np.max(np.abs(np.asarray(x, dtype=np.float64)), axis=axis, keepdims=True)
    # frexp gives peak = f·2^e with f in [0.5, 1); 2^(e − 1) stays finite up to float64's largest value
    exponent = np.frexp(peak)[1] - 1
    return np.where(peak > 0, np.ldexp(1.0, exponent), 1.0)


def rms(x: np.ndarray, axis=-1) -> np.ndarray:
    """Root mean square along ``axis`` (kept as 1) in float64, free of overflow and underflow.

    Parameters
    ----------
    x : np.ndarray
        Finite values.
    axis : int, tuple of int or None
        The axes reduced.

    Returns
    -------
    np.ndarray
        float64, ``x``'s shape with ``axis`` of length 1; 0 where ``x`` is all zero.
    """
    x = np.asarray(x, dtype=np.float64)
    p = power_of_two(x, axis)
    return p * np.sqrt(np.mean(np.square(x / p), axis=axis, keepdims=True))

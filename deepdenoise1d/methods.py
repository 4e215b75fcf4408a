"""The methods of the benchmark table: ordered dicts ``{key: callable(noisy (N, L)) -> estimate (N, L)}``.

:func:`classical_methods` (Wiener, L1, GMC, wavelet, soft threshold, the Bayes oracle) and
:func:`network_methods` (one per BN mode of a front-end's network); the table follows their order.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from deepdenoise1d import classical, noise
from deepdenoise1d.errors import InputError

Method = Callable[[np.ndarray], np.ndarray]


def classical_methods(sigma: float | str) -> dict[str, Method]:
    """The classical denoisers, keyed as in the JSON report.

    Parameters
    ----------
    sigma : float or "auto"
        Noise level given to the wavelet shrinkage, the soft threshold (T = σ) and the Bayes oracle; ``"auto"``
        estimates it for each signal with :func:`deepdenoise1d.noise.estimate_sigma_auto`.
    """
    def level(noisy: np.ndarray):
        if sigma != "auto":
            return sigma
        each = per_signal_sigma(noisy)
        missing = ~np.isfinite(each)
        if missing.all():
            raise InputError("--sigma auto: every signal is constant (no noise to estimate); give --sigma S")
        each[missing] = np.median(each[~missing])  # degenerate signals (the front-end warns): the others' level
        return each[:, None]

    return {
        "wiener": classical.wiener,
        "l1": classical.l1_srls,
        "gmc": classical.gmc,
        "wavelet": lambda noisy: classical.wavelet(noisy, level(noisy)),
        "soft": lambda noisy: classical.soft_threshold(noisy, threshold=level(noisy)),
        "bayes": lambda noisy: classical.bayes_posterior_mean(noisy, level(noisy)),
    }


def per_signal_sigma(noisy: np.ndarray) -> np.ndarray:
    """σ estimated for each signal (:func:`deepdenoise1d.noise.estimate_sigma_auto`); NaN where the signal is degenerate."""
    return noise.estimate_sigma_auto(noisy).sigma


def network_methods(denoise: Callable[[np.ndarray, str], np.ndarray], bn_modes: tuple[str, ...]) -> dict[str, Method]:
    """``net_fixed``, ``net_unfixed`` (one per mode) from a ``denoise(noisy, bn_mode)`` callable."""
    return {f"net_{mode}": (lambda noisy, m=mode: denoise(noisy, m)) for mode in bn_modes}

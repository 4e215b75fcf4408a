"""Per-signal error metrics and their mean with a 95 % confidence interval."""
from __future__ import annotations

import numpy as np

PEAK = 10.0


def mse(estimate: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Mean squared error per signal over the last axis."""
    return np.mean((np.asarray(estimate) - np.asarray(clean)) ** 2, axis=-1)


def rmse(estimate: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Root-mean-square error per signal over the last axis."""
    return np.sqrt(mse(estimate, clean))


def psnr_paper(estimate: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """The seed paper's "PSNR": 20·log10(10 / MSE), with MSE (not RMSE) inside."""
    return 20.0 * np.log10(PEAK / mse(estimate, clean))


def psnr(estimate: np.ndarray, clean: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Standard PSNR in dB: 10·log10(peak² / MSE)."""
    return 10.0 * np.log10(peak**2 / mse(estimate, clean))


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean over signals and the half-width of its normal-approximation 95 % CI."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))

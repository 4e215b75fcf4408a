"""deepdenoise1d/metrics.py: RMSE, the paper's PSNR, PSNR and the 95 % confidence interval."""
from __future__ import annotations

import numpy as np
import pytest

from deepdenoise1d.metrics import mean_ci95, psnr, psnr_paper, rmse


def test_metrics_formulas():
    clean = np.zeros((1, 4))
    estimate = np.array([[2.0, 0, 0, 0]])  # MSE 1
    assert rmse(estimate, clean)[0] == pytest.approx(1.0)
    assert psnr_paper(estimate, clean)[0] == pytest.approx(20.0)  # 20·log10(10 / 1)
    assert psnr(estimate, clean)[0] == pytest.approx(20.0)  # 10·log10(100 / 1)
    mean, ci = mean_ci95(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and ci == pytest.approx(1.96 / np.sqrt(3))

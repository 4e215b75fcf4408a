"""Batched, chunked inference with a trained ICNN_s on NumPy signals."""
from __future__ import annotations

import numpy as np
import torch

from Pytorch_V1.model import ICNN_s, wiener_prior

CHUNK = 8192


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but CUDA is not available")
    return torch.device(name)


@torch.no_grad()
def denoise(model: ICNN_s, noisy: np.ndarray, bn_mode: str | None = None, chunk: int = CHUNK) -> np.ndarray:
    """Denoise (N, L) signals in chunks; returns float64 (N, L).

    ``bn_mode`` defaults to the mode the model's config records.
    """
    device = next(model.parameters()).device
    model.eval()
    model.set_bn_mode(bn_mode or model.config.bn_mode)
    noisy = np.atleast_2d(noisy)
    out = np.empty(noisy.shape, dtype=np.float64)
    for start in range(0, noisy.shape[0], chunk):
        x = torch.from_numpy(noisy[start : start + chunk].astype(np.float32))[:, None].to(device)
        h = wiener_prior(x) if model.wienernet is not None else None
        out[start : start + chunk] = model(x, h)[:, 0].double().cpu().numpy()
    return out

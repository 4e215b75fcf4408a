"""Checkpoint files: safe loading (weights_only), strict key/shape checks, atomic saving.

A checkpoint is a dict. The seed's layout has ``epoch``, ``net_state_dict``,
``optim_state_dict`` and ``loss``; ours adds ``format_version``, ``step``,
``config`` (plain types), ``sched_state_dict``, ``val_rmse`` and ``rng_state``.
Only ``net_state_dict`` is required.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

from Pytorch_V1.model import ICNN_s, ModelConfig
from signals.errors import InputError
from signals.io import atomic_write

FORMAT_VERSION = 1


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True`` (never unsafe) onto ``device``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: checkpoint file is empty")
    try:
        with warnings.catch_warnings():
            # torch warns about a foreign pickle protocol before refusing it: keep stderr to one line.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated zip, foreign file, or a pickle that wants to run code
        raise InputError(f"{path}: not a loadable checkpoint ({load_error_reason(err)})") from None
    if not isinstance(ckpt, dict) or "net_state_dict" not in ckpt:
        raise InputError(f"{path}: not a checkpoint (no 'net_state_dict' entry)")
    if not isinstance(ckpt["net_state_dict"], dict):
        raise InputError(f"{path}: 'net_state_dict' is not a dict of tensors")
    return ckpt


def load_error_reason(err: Exception) -> str:
    """The telling line of a torch.load error (the unpickler's verdict when there is one)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    telling = [ln for ln in lines if "WeightsUnpickler error" in ln or "Unsupported global" in ln]
    text = (telling or lines or [type(err).__name__])[0]
    text = text.replace("WeightsUnpickler error: ", "refused by the weights-only unpickler: ")
    return f"{type(err).__name__}: {text[:200]}"


def config_from_state_dict(state_dict: dict) -> ModelConfig:
    """Infer the architecture of a config-less (seed) checkpoint from its keys."""
    return ModelConfig(
        prior="wienernet.beta" in state_dict,
        norm="sparse_bn" if any(k.endswith(".threshold") for k in state_dict) else "bn",
    )


def model_config_of(ckpt: dict) -> ModelConfig:
    """The model config recorded in a checkpoint, or inferred for the seed's layout."""
    recorded = (ckpt.get("config") or {}).get("model")
    if recorded is None:
        return config_from_state_dict(ckpt["net_state_dict"])
    try:
        return ModelConfig.from_dict(recorded)
    except (TypeError, ValueError) as err:
        raise InputError(f"checkpoint config is invalid: {err}") from None


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict, source: str) -> None:
    """Copy weights after checking every key and shape; name the first one that differs."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        raise InputError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing in all)")
    if unexpected:
        raise InputError(f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in all)")
    for key, ref in expected.items():
        got = state_dict[key]
        if not isinstance(got, torch.Tensor):
            raise InputError(f"{source}: {key!r} is not a tensor")
        if got.shape != ref.shape:
            raise InputError(f"{source}: shape mismatch for {key!r}: checkpoint {tuple(got.shape)}, model {tuple(ref.shape)}")
    model.load_state_dict(state_dict, strict=True)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ICNN_s, dict]:
    """Build ICNN_s from a checkpoint (ours or the seed's), in eval mode on ``device``."""
    ckpt = load_checkpoint(path, device)
    model = ICNN_s(model_config_of(ckpt)).to(device)
    load_state_dict_strict(model, ckpt["net_state_dict"], str(path))
    model.eval()
    return model, ckpt


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> None:
    """Write a checkpoint atomically (temp file in the same folder, fsync, os.replace)."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    atomic_write(Path(path), lambda f: f.write(buffer.getbuffer()))

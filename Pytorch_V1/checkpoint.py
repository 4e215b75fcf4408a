"""Checkpoint files: safe loading (weights_only), type and shape checks, atomic saving.

A checkpoint is a dict. The seed's layout has ``epoch``, ``net_state_dict``,
``optim_state_dict`` and ``loss``; ours adds ``format_version``, ``step``,
``config`` (plain types: ``{"model": ModelConfig.to_dict(), "train": {...}}``),
``sched_state_dict``, ``val_rmse`` and ``rng_state``. Only ``net_state_dict`` is
required; a config-less (seed) checkpoint's architecture is read from its keys
(:func:`icnn.spec.config_from_keys`).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

from icnn.spec import COUNTER_SUFFIX, ModelConfig, check_weights, config_from_keys
from Pytorch_V1.model import ICNN_s
from deepdenoise1d.errors import InputError
from deepdenoise1d.io import atomic_write

FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format
PICKLE_PROTOCOL_2_PLUS = 0x80  # a legacy torch.save starts with the PROTO opcode


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True`` (never unsafe) onto ``device``.

    Raises
    ------
    InputError
        Missing, empty, text or foreign file, a pickle that wants to run code,
        or no ``net_state_dict`` dict in it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: checkpoint file is empty")
    _check_magic(path)
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


def _check_magic(path: Path) -> None:
    """Refuse, by its first bytes, a file that is neither a zip nor a pickle (a text file, an .h5, ...)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if head.startswith(ZIP_MAGIC) or head[:1] == bytes([PICKLE_PROTOCOL_2_PLUS]):
        return
    kind = "HDF5 weights (use Numpy_V2)" if head.startswith(b"\x89HDF") else (
        "text" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "not a zip or pickle")
    raise InputError(f"{path}: not a PyTorch checkpoint ({kind}); expected a file written by torch.save")


def load_error_reason(err: Exception) -> str:
    """The telling line of a torch.load error (the unpickler's verdict when there is one)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    telling = [ln for ln in lines if "WeightsUnpickler error" in ln or "Unsupported global" in ln]
    text = (telling or lines or [type(err).__name__])[0]
    text = text.replace("WeightsUnpickler error: ", "refused by the weights-only unpickler: ")
    return f"{type(err).__name__}: {text[:200]}"


def model_config_of(ckpt: dict, source: str = "checkpoint") -> ModelConfig:
    """The model config recorded in a checkpoint, type-checked; inferred from the keys for the seed's layout.

    A recorded config without ``sigma_range`` gets it from the recorded training sigma
    (``config["train"]["sigma"]``) when that is a number or [low, high].
    """
    config = ckpt.get("config")
    if config is None:
        return config_from_keys(str(k) for k in ckpt["net_state_dict"])
    if not isinstance(config, dict):
        raise InputError(f"{source}: checkpoint 'config' must be a dict, got {type(config).__name__}")
    recorded = config.get("model")
    if recorded is None:
        return config_from_keys(str(k) for k in ckpt["net_state_dict"])
    train = config.get("train")
    train_sigma = train.get("sigma") if isinstance(train, dict) else None
    return ModelConfig.from_dict(recorded, source, train_sigma=train_sigma)


def check_state_dict(state_dict: dict, config: ModelConfig, source: str) -> None:
    """Every entry a named, dense, finite floating tensor (counters: integer scalars), shaped for ``config``."""
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(f"{source}: net_state_dict entry {str(key)[:80]!r} is not a named tensor")
        if value.layout != torch.strided or value.is_quantized:
            raise InputError(f"{source}: tensor {key!r} is not a dense tensor ({value.layout})")
        if key.endswith(COUNTER_SUFFIX):
            continue  # a BN step counter, not a weight; check_weights bounds its size
        if not value.is_floating_point():
            raise InputError(f"{source}: tensor {key!r} has dtype {value.dtype}, expected floating point")
        if not bool(torch.isfinite(value).all()):
            raise InputError(f"{source}: tensor {key!r} holds non-finite values (NaN or inf)")
    check_weights({k: tuple(v.shape) for k, v in state_dict.items()}, config, source)


def load_state_dict_strict(model: ICNN_s, state_dict: dict, source: str) -> None:
    """Copy weights after checking every key, type and shape (:func:`check_state_dict`)."""
    check_state_dict(state_dict, model.config, source)
    # Missing keys can only be BN step counters (check_weights refuses any other): they stay 0.
    model.load_state_dict(state_dict, strict=False)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ICNN_s, dict]:
    """Build ICNN_s from a checkpoint (ours or the seed's), in eval mode on ``device``.

    Raises
    ------
    InputError
        The file is not a safe checkpoint, its config has a field of the wrong type,
        or a tensor is missing, unexpected, mis-shaped, sparse, non-float or non-finite.
    """
    ckpt = load_checkpoint(path, device)
    model = ICNN_s(model_config_of(ckpt, str(path))).to(device)
    load_state_dict_strict(model, ckpt["net_state_dict"], str(path))
    model.eval()
    return model, ckpt


def save_checkpoint(path: str | os.PathLike, ckpt: dict, reads=()) -> None:
    """Write a checkpoint atomically (temp file in the same folder, fsync, os.replace).

    ``reads`` are the files the command reads: the guarded write refuses to replace them.
    """
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    atomic_write(Path(path), lambda f: f.write(buffer.getbuffer()), reads=reads)

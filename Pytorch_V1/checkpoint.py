"""Checkpoint files: safe loading (weights_only), type and shape checks, one atomic writer, and resume.

A checkpoint is a dict. The original repository's layout has ``epoch``, ``net_state_dict``,
``optim_state_dict`` and ``loss``; train.py's adds ``format_version``, ``step``,
``config`` (plain types: ``{"model": ModelConfig.to_dict(), "train": {...}}``),
``validation`` (the last validation result), ``val_metric`` and ``best_val_score``
(what picked ckpt_best.pth: validation RMSE, or SURE for label-free runs) and ``rng_state``;
runs saved before those names have ``val_rmse`` and ``best_val_rmse`` instead, read alike.
Only ``net_state_dict`` is required; a config-less (original repository's) checkpoint's
architecture is read from its keys (:func:`icnn.spec.config_from_keys`).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import zipfile
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from icnn.spec import COUNTER_SUFFIX, ModelConfig, check_weight_values, check_weights, config_from_keys
from Pytorch_V1.distributed import Workers
from Pytorch_V1.losses import LABEL_FREE, UnsureEta
from Pytorch_V1.model import ICNN_s
from deepdenoise1d.errors import InputError
from deepdenoise1d.safewrite import atomic_write

FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format
PICKLE_PROTOCOL_2_PLUS = 0x80  # a legacy torch.save starts with the PROTO opcode
# ICNN_s with its optimiser state is about 1 MB; a zip that unpacks to more is refused before it is read.
MAX_CHECKPOINT_BYTES = 256 << 20
HASH_CHUNK = 1 << 20


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
        what = "a folder" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
        raise InputError(f"{path}: {what}, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: checkpoint file is empty")
    _check_magic(path)
    _check_declared_size(path)
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


def _check_declared_size(path: Path) -> None:
    """Refuse a checkpoint whose file, or whose zip's declared uncompressed members, exceed the bound."""
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise InputError(f"{path}: {size} bytes, more than a checkpoint of this model can be "
                         f"({MAX_CHECKPOINT_BYTES >> 20} MiB)")
    if not zipfile.is_zipfile(path):
        return  # a legacy pickle: its size in memory follows its size on disk
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise InputError(f"{path}: not a loadable checkpoint (a damaged zip: {err})") from None
    if declared > MAX_CHECKPOINT_BYTES:
        raise InputError(f"{path}: unpacks to {declared} bytes, more than a checkpoint of this model can be "
                         f"({MAX_CHECKPOINT_BYTES >> 20} MiB); refused before loading")


def load_error_reason(err: Exception) -> str:
    """The telling line of a torch.load error (the unpickler's verdict when there is one)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    telling = [ln for ln in lines if "WeightsUnpickler error" in ln or "Unsupported global" in ln]
    text = (telling or lines or [type(err).__name__])[0]
    text = text.replace("WeightsUnpickler error: ", "refused by the weights-only unpickler: ")
    return f"{type(err).__name__}: {text[:200]}"


def model_config_of(ckpt: dict, source: str = "checkpoint") -> ModelConfig:
    """The model config recorded in a checkpoint, type-checked; inferred from the keys for the original repository's layout.

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
    check_weight_values(state_dict, source)


def load_state_dict_strict(model: ICNN_s, state_dict: dict, source: str) -> None:
    """Copy weights after checking every key, type and shape (:func:`check_state_dict`)."""
    check_state_dict(state_dict, model.config, source)
    # Missing keys can only be BN step counters (check_weights refuses any other): they stay 0.
    model.load_state_dict(state_dict, strict=False)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ICNN_s, dict]:
    """Build ICNN_s from a checkpoint (train.py's or the original repository's), in eval mode on ``device``.

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


# ---------------------------------------------------------------------------
# what a training checkpoint saves and restores


@dataclass
class Parts:
    """What one step changes: the model, its optimiser, the AMP scaler and the coin/probe generator."""

    model: ICNN_s
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    flip_rng: np.random.Generator  # BN-statistics coin ("mixed"), SURE probes, R2R recorruption
    device: torch.device
    use_amp: bool
    eta: UnsureEta | None = None  # --loss unsure: the noise variance it learns
    sigma_prior: tuple | None = None  # --sigma-estimate shrunk (Validation.sigma_prior)
    average: AveragedModel | None = None  # --ema: the moving average of model's weights

    @property
    def deployed(self) -> ICNN_s:
        """The weights that are validated and saved for use: the average with --ema, else the model."""
        return self.model if self.average is None else self.average.module


@dataclass
class TrainState:
    """What the loop changes besides the parts; restored on resume."""

    step: int = 0
    best: float = math.inf
    best_step: int = 0
    # the lowest validation score and its step, which patience counts from: with a guard the kept best can lag
    # behind a run that is still improving
    lowest: float = math.inf
    lowest_step: int = 0
    bn_mode: str = "fixed"  # the recorded inference mode: --bn-mode, or the better on validation at the best step
    val: dict = field(default_factory=dict)
    last_loss: float = math.nan
    loss_sum: float = 0.0  # training loss since the last log row
    loss_count: int = 0


def trained_model_config(cfg, state: TrainState) -> ModelConfig:
    """The ModelConfig saved with the weights: architecture, chosen BN mode and the σ range trained on."""
    # an adapted model keeps the σ range of the model it started from (the record's σ is its input_scale)
    sigma_range = cfg.model["sigma_range"] if "sigma_range" in cfg.model else cfg.sigma
    return ModelConfig.from_dict({**cfg.model, "bn_mode": state.bn_mode, "sigma_range": sigma_range}, "train config")


def checkpoint_dict(cfg, parts: Parts, state: TrainState, stream, stream_state, workers: Workers) -> dict:
    """Everything a resume needs, and the weights users load; ``cfg`` is the run's TrainConfig."""
    return {
        "format_version": FORMAT_VERSION,
        "step": state.step,
        "epoch": stream.epoch,
        "net_state_dict": parts.deployed.state_dict(),
        # --ema: the weights the optimiser trains, which a resume continues (net_state_dict is their average)
        **({"train_state_dict": parts.model.state_dict(), "ema_count": int(parts.average.n_averaged)}
           if parts.average is not None else {}),
        "optim_state_dict": parts.optimizer.state_dict(),
        "scaler_state_dict": parts.scaler.state_dict() if parts.use_amp else {},
        "config": {"model": trained_model_config(cfg, state).to_dict(), "train": asdict(cfg),
                   "world_size": workers.world_size},
        "validation": state.val,
        "val_metric": "sure" if cfg.loss in LABEL_FREE else "rmse",
        "best_val_score": state.best,
        "best_step": state.best_step,
        "lowest_val_score": state.lowest,
        "lowest_step": state.lowest_step,
        "loss": state.last_loss,
        "rng_state": {"stream": stream_state, "flip": parts.flip_rng.bit_generator.state},
        **({"unsure": parts.eta.state_dict()} if parts.eta is not None else {}),
        "torch_version": str(torch.__version__),
    }


def load_resume_point(path: Path) -> dict:
    """ckpt_last.pth of the run being resumed, checked to hold what a resume needs."""
    ckpt = load_checkpoint(path)
    missing = [k for k in ("config", "optim_state_dict", "rng_state", "step") if k not in ckpt]
    if missing or not isinstance(ckpt["config"], dict) or not isinstance(ckpt["config"].get("train"), dict):
        raise InputError(f"{path}: not a resumable train.py checkpoint (no {(missing or ['config.train'])[0]!r})")
    return ckpt


def restore(ckpt: dict, parts: Parts, stream, workers: Workers, source: Path) -> TrainState:
    """Load weights, optimiser and data-stream state; the loop continues at the saved step."""
    saved_world = ckpt["config"].get("world_size", 1)
    if saved_world != workers.world_size:
        raise InputError(f"{source}: saved by {saved_world} workers; resume it with the same number (now {workers.world_size})")
    load_state_dict_strict(parts.model, ckpt.get("train_state_dict", ckpt["net_state_dict"]), str(source))
    if parts.average is not None:
        load_state_dict_strict(parts.average.module, ckpt["net_state_dict"], str(source))
        parts.average.n_averaged.fill_(int(ckpt.get("ema_count", ckpt["step"])))
    parts.optimizer.load_state_dict(ckpt["optim_state_dict"])
    if parts.use_amp and ckpt.get("scaler_state_dict"):
        parts.scaler.load_state_dict(ckpt["scaler_state_dict"])
    streams = ckpt["rng_state"]["stream"]
    stream.load_state(streams[workers.rank] if workers.world_size > 1 else streams)
    parts.flip_rng.bit_generator.state = ckpt["rng_state"]["flip"]
    if parts.eta is not None:
        parts.eta.load_state_dict(ckpt.get("unsure"))
    best = ckpt.get("best_val_score", ckpt.get("best_val_rmse", math.inf))  # best_val_rmse: saved before the rename
    best_step = ckpt.get("best_step", 0)
    return TrainState(step=ckpt["step"], best=best, best_step=best_step,
                      lowest=ckpt.get("lowest_val_score", best), lowest_step=ckpt.get("lowest_step", best_step),
                      bn_mode=ckpt["config"]["model"].get("bn_mode", "fixed"),
                      val=ckpt.get("validation", ckpt.get("val_rmse")) or {}, last_loss=ckpt.get("loss", math.nan))


def file_sha256(path: str, what: str = "a checkpoint") -> str:
    """sha256 of a regular file, read in chunks; anything else (a FIFO, a device, a folder) is refused
    (``what``: the file expected, for the message)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path}: not a regular file, expected {what}")
    with os.fdopen(fd, "rb") as f:
        digest = hashlib.sha256()
        try:
            for block in iter(lambda: f.read(HASH_CHUNK), b""):
                digest.update(block)
        except OSError as err:
            raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    return digest.hexdigest()


def load_initial_weights(model: ICNN_s, cfg) -> None:
    """--init: the weights of a checkpoint of the same architecture, checked to be the file the config names."""
    if file_sha256(cfg.init) != cfg.init_sha256:
        raise InputError(f"{cfg.init}: changed since the run was set up (sha256 differs)")
    ckpt = load_checkpoint(cfg.init)
    theirs = model_config_of(ckpt, cfg.init)
    if (theirs.prior, theirs.norm) != (cfg.model["prior"], cfg.model["norm"]):
        raise InputError(f"{cfg.init}: a model with prior={theirs.prior}, norm={theirs.norm}; this run builds "
                         f"prior={cfg.model['prior']}, norm={cfg.model['norm']} (match --no-prior and --norm)")
    load_state_dict_strict(model, ckpt["net_state_dict"], cfg.init)


# ---------------------------------------------------------------------------
# resume: the saved config, and the flags that may change it


# Flags that define the run: with --resume they must match the saved run (else refused).
# Each maps to its value in a TrainConfig.
RUN_FLAGS = {
    "seed": lambda c: c.seed, "batch_size": lambda c: c.batch_size, "lr": lambda c: c.lr,
    "optimizer": lambda c: c.optimizer, "loss": lambda c: c.loss, "sigma": lambda c: c.sigma,
    "norm": lambda c: c.model["norm"], "no_prior": lambda c: not c.model["prior"],
    "baseline": lambda c: c.model.get("baseline", "none"), "train_prior": lambda c: c.train_prior,
    "width": lambda c: c.model.get("width", 2), "depth": lambda c: c.model.get("depth", 4),
    "odd": lambda c: c.model.get("odd", False), "reversal": lambda c: c.model.get("reversal", False),
    "sparsity_weight": lambda c: c.sparsity_weight, "weight_by": lambda c: c.weight_by,
    "sure_epsilon": lambda c: c.sure_epsilon, "sure_probes": lambda c: c.sure_probes,
    "sure_central": lambda c: c.sure_central, "sigma_estimate": lambda c: c.sigma_estimate,
    "r2r_alpha": lambda c: c.r2r_alpha,
    "lr_final": lambda c: c.lr_final, "ema": lambda c: c.ema,
    "bn_train": lambda c: c.bn_train, "bn_mode": lambda c: c.bn_mode, "data": lambda c: c.data, "init": lambda c: c.init,
    "val_size": lambda c: c.val_size, "adapt": lambda c: c.adapt,
}
RESUMABLE = ("steps", "eval_every", "save_every", "device")  # honoured by --resume


def resumed_config(saved: dict, asked, given: set[str] | None, source: Path):
    """The saved run's config (a TrainConfig like ``asked``), with the flags a resume may change taken from ``asked``.

    ``given`` names the flags the user typed (None: all of them, for library calls):
    a run-defining one that differs from the saved run is refused, a RESUMABLE one is honoured.
    """
    config_type = type(asked)
    try:
        recorded = saved["config"]["train"]
        known = {k: v for k, v in recorded.items() if k in {f.name for f in fields(config_type)}}
        if "weight_by" not in recorded and recorded.get("weight_by_sigma"):  # runs saved before --weight-by
            known["weight_by"] = "sigma2"
        known["sigma"] = saved_sigma(known.get("sigma"))
        cfg = config_type(**known)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{source}: not a resumable train.py checkpoint (config: {err})") from None
    for name in sorted(set(RUN_FLAGS) if given is None else given & set(RUN_FLAGS)):
        if name == "sigma" and asked.sigma is None:
            continue  # --sigma auto: the saved run's σ was estimated
        mine, theirs = RUN_FLAGS[name](asked), RUN_FLAGS[name](cfg)
        if mine != theirs:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} would change the resumed run (saved: {theirs}, asked: {mine}); "
                             f"resume without {flag}, or start a new run in another --run-dir")
    cfg = replace(cfg, **{k: getattr(asked, k) for k in RESUMABLE if given is None or k in given})
    if cfg.steps < saved["step"]:
        raise InputError(f"--steps {cfg.steps} is before the saved step {saved['step']} of {source}; "
                         "a resumed run can only end at or after it")
    return cfg


def saved_sigma(value) -> list[float] | None:
    """A recorded sigma (one number, [low, high], or None) as [low, high]."""
    if value is None or value == "auto":
        return None
    low, high = (value, value) if np.isscalar(value) else value
    return [float(low), float(high)]

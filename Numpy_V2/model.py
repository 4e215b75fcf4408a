"""ICNN_s in pure NumPy, read from the HDF5 weights that ``pth2h5.py`` writes.

The forward mirrors ``Pytorch_V1.model.ICNN_s.forward`` line for line, with the
same part names (inc, down1..down4, up1..up4, outc, wienernet), and reads each
weight by its state-dict key. It never imports torch.

HDF5 layout: one flat float32 dataset per state-dict tensor at the root, named
by its key (dots kept); root attributes ``format``, ``format_version`` and
``config`` (JSON). A file without attributes (the seed's converter) is read as
the seed's ICNN_s, its architecture inferred from the keys as
``Pytorch_V1.checkpoint.config_from_state_dict`` does.
"""
from __future__ import annotations

import ctypes
import json
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np

from Numpy_V2.layers import (
    BN_MODES,
    adaptive_max_pool1d,
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
from signals.errors import InputError
from signals.io import check_finite

WEIGHTS_FORMAT = "icnn_s-weights"
SUPPORTED_FORMAT_VERSION = 1
MIN_LENGTH = 16  # four halvings must leave at least one sample
PRIOR_TAPS = 3  # one factor per tap of the bottleneck's first kernel
NORMS = ("bn", "sparse_bn")
CHUNK = 8192
# Signals per forward pass inside a chunk: about 1 MB of float32 activations per
# layer, so one block's activations stay in cache (measured: 1024 is ~1.4x faster than 8192).
FORWARD_BLOCK = 1024


class Weights:
    """The datasets of one file, handed out by key with their expected shapes recorded.

    Parts ask for every tensor they use with :meth:`take`; after the model is
    built, :meth:`check` names whatever was missing, mis-shaped or left unused.
    """

    def __init__(self, arrays: dict[str, np.ndarray], source: str):
        self.arrays = arrays
        self.source = source
        self.expected: dict[str, tuple[int, ...]] = {}
        self.missing: list[str] = []
        self.misshaped: list[str] = []

    def take(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        self.expected[key] = shape
        if key not in self.arrays:
            self.missing.append(key)
            return np.zeros(shape, dtype=np.float32)
        stored = self.arrays[key]
        # The converter writes flat datasets; an unflattened tensor of the right shape is fine too.
        if stored.shape not in ((int(np.prod(shape)),), shape):
            self.misshaped.append(f"{key!r} has shape {stored.shape}, expected {shape} ({int(np.prod(shape))} values)")
            return np.zeros(shape, dtype=np.float32)
        return stored.reshape(shape)

    def check(self) -> None:
        if self.missing:
            names = ", ".join(repr(k) for k in self.missing[:3])
            raise InputError(f"{self.source}: missing dataset {names} ({len(self.missing)} missing in all)")
        if self.misshaped:
            raise InputError(f"{self.source}: dataset {self.misshaped[0]} ({len(self.misshaped)} mis-shaped in all)")
        unexpected = sorted(set(self.arrays) - set(self.expected))
        if unexpected:
            names = ", ".join(repr(k) for k in unexpected[:3])
            raise InputError(f"{self.source}: unexpected dataset {names} ({len(unexpected)} unexpected in all)")


class Conv1d:
    """Weights of one ``nn.Conv1d`` (prefix ``….0``, ``….3`` or ``outc.conv``)."""

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int, kernel_size: int):
        self.weight = weights.take(f"{prefix}.weight", (out_channels, in_channels, kernel_size))
        self.bias = weights.take(f"{prefix}.bias", (out_channels,))
        self.padding = kernel_size // 2

    def __call__(self, x: np.ndarray, kernel_scale: np.ndarray | None = None) -> np.ndarray:
        if kernel_scale is None:
            return conv1d(x, self.weight, self.bias, self.padding)
        return modulated_conv1d(x, self.weight, self.bias, kernel_scale)


class SignalBatchNorm1d:
    """Weights of one ``SignalBatchNorm1d``: BN in fixed or unfixed mode, then the sparse threshold if any."""

    def __init__(self, weights: Weights, prefix: str, channels: int, sparse: bool):
        shape = (channels,)
        self.weight = weights.take(f"{prefix}.weight", shape)
        self.bias = weights.take(f"{prefix}.bias", shape)
        self.running_mean = weights.take(f"{prefix}.running_mean", shape)
        self.running_var = weights.take(f"{prefix}.running_var", shape)
        self.threshold = weights.take(f"{prefix}.threshold", shape) if sparse else None

    def __call__(self, x: np.ndarray, mode: str) -> np.ndarray:
        z = batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, mode)
        if self.threshold is not None:
            z = soft_threshold(z, self.threshold)
        return z


class DoubleConv:
    """(conv → BN → ReLU) × 2, Sequential ``double_conv`` indices 0..5. The first kernel can be scaled per signal."""

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int, mid_channels: int | None, sparse: bool):
        mid = mid_channels or out_channels
        self.conv1 = Conv1d(weights, f"{prefix}.double_conv.0", in_channels, mid, 3)
        self.bn1 = SignalBatchNorm1d(weights, f"{prefix}.double_conv.1", mid, sparse)
        self.conv2 = Conv1d(weights, f"{prefix}.double_conv.3", mid, out_channels, 3)
        self.bn2 = SignalBatchNorm1d(weights, f"{prefix}.double_conv.4", out_channels, sparse)

    def __call__(self, x: np.ndarray, mode: str, kernel_scale: np.ndarray | None = None) -> np.ndarray:
        x = relu(self.bn1(self.conv1(x, kernel_scale), mode), inplace=True)
        return relu(self.bn2(self.conv2(x), mode), inplace=True)


class Down:
    """Max-pool by 2, then DoubleConv (Sequential ``maxpool_conv``, the conv at index 1)."""

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int, sparse: bool):
        self.conv = DoubleConv(weights, f"{prefix}.maxpool_conv.1", in_channels, out_channels, None, sparse)

    def __call__(self, x: np.ndarray, mode: str, kernel_scale: np.ndarray | None = None) -> np.ndarray:
        return self.conv(max_pool1d(x, 2), mode, kernel_scale)


class Up:
    """Linear upsampling ×2 (align_corners), pad to the skip's length, concat [skip, up], DoubleConv."""

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int, sparse: bool):
        self.conv = DoubleConv(weights, f"{prefix}.conv", in_channels, out_channels, in_channels // 2, sparse)

    def __call__(self, x1: np.ndarray, x2: np.ndarray, mode: str) -> np.ndarray:
        x1 = upsample_linear(x1, 2)
        x1, x2 = pad_to_match(x1, x2)
        return self.conv(concat_channels([x2, x1]), mode)


class OutConv:
    """1×1 convolution to the output channels."""

    def __init__(self, weights: Weights, prefix: str, in_channels: int, out_channels: int):
        self.conv = Conv1d(weights, f"{prefix}.conv", in_channels, out_channels, 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.conv(x)


class WienerNet:
    """Prior branch: encodes h and pools it to one factor per (channel, tap) of down4's first kernel."""

    def __init__(self, weights: Weights, prefix: str, sparse: bool):
        self.inc = DoubleConv(weights, f"{prefix}.inc", 1, 2, None, sparse)
        self.down1 = Down(weights, f"{prefix}.down1", 2, 4, sparse)
        self.down2 = Down(weights, f"{prefix}.down2", 4, 8, sparse)
        self.down3 = Down(weights, f"{prefix}.down3", 8, 16, sparse)
        self.beta = weights.take(f"{prefix}.beta", (1,))

    def __call__(self, h: np.ndarray, mode: str) -> np.ndarray:  # (N, 1, L) -> (N, 16, 3)
        p1 = self.inc(h, mode)
        p2 = self.down1(p1, mode)
        p3 = self.down2(p2, mode)
        p4 = self.down3(p3, mode)
        # For L = 100 this is the seed's max-pool 4 (12 -> 3); other lengths pool adaptively.
        pooled = adaptive_max_pool1d(p4, PRIOR_TAPS)
        return pooled.dtype.type(1.0) + self.beta.astype(pooled.dtype) * pooled


class NumpyICNN:
    """The seed's ICNN_s, inference only. Input and output (N, 1, L), L ≥ 16.

    Build it with :func:`load_h5`. ``config`` holds the model switches
    (``prior``, ``norm``, ``bn_mode``); ``metadata`` the file's attributes.
    ``dtype`` is float32 (as torch's forward) or float64 (to check the arithmetic).
    """

    def __init__(self, weights: Weights, config: dict, metadata: dict | None = None, dtype: type = np.float32):
        self.config = config
        self.metadata = metadata or {}
        self.dtype = np.dtype(dtype)
        sparse = config["norm"] == "sparse_bn"
        self.inc = DoubleConv(weights, "inc", 1, 2, None, sparse)
        self.down1 = Down(weights, "down1", 2, 4, sparse)
        self.down2 = Down(weights, "down2", 4, 8, sparse)
        self.down3 = Down(weights, "down3", 8, 16, sparse)
        self.down4 = Down(weights, "down4", 16, 16, sparse)
        self.up1 = Up(weights, "up1", 32, 8, sparse)
        self.up2 = Up(weights, "up2", 16, 4, sparse)
        self.up3 = Up(weights, "up3", 8, 2, sparse)
        self.up4 = Up(weights, "up4", 4, 2, sparse)
        self.outc = OutConv(weights, "outc", 2, 1)
        self.wienernet = WienerNet(weights, "wienernet", sparse) if config["prior"] else None
        weights.check()

    def forward(self, x: np.ndarray, h: np.ndarray | None = None, bn_mode: str | None = None) -> np.ndarray:
        """Denoise a batch.

        Parameters
        ----------
        x : np.ndarray
            Noisy signals, shape (N, 1, L), L ≥ 16.
        h : np.ndarray, optional
            The Wiener prior of each signal, shape (N, 1, L); computed from x when omitted.
        bn_mode : {"fixed", "unfixed"}, optional
            Batch-norm statistics; defaults to ``config["bn_mode"]``.

        Returns
        -------
        np.ndarray
            Shape (N, 1, L), of the model's ``dtype``.
        """
        mode = self._bn_mode(bn_mode)
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[1] != 1:
            raise InputError(f"expected input of shape (N, 1, L), got {x.shape}")
        if x.shape[2] < MIN_LENGTH:
            raise InputError(f"signals must have length >= {MIN_LENGTH}, got {x.shape[2]}")
        x = batch_innermost(x, self.dtype)
        kernel_scale = None
        if self.wienernet is not None:
            h = wiener_prior(x) if h is None else np.asarray(h)
            if h.shape != x.shape:
                raise InputError(f"h must have the input's shape {x.shape}, got {h.shape}")
            kernel_scale = self.wienernet(batch_innermost(h, self.dtype), mode)  # (N, 16, 3)
        x1 = self.inc(x, mode)  # (N, 2, L)
        x2 = self.down1(x1, mode)  # (N, 4, L/2)
        x3 = self.down2(x2, mode)  # (N, 8, L/4)
        x4 = self.down3(x3, mode)  # (N, 16, L/8)
        x5 = self.down4(x4, mode, kernel_scale)  # (N, 16, L/16)
        x = self.up1(x5, x4, mode)  # (N, 8, L/8)
        x = self.up2(x, x3, mode)  # (N, 4, L/4)
        x = self.up3(x, x2, mode)  # (N, 2, L/2)
        x = self.up4(x, x1, mode)  # (N, 2, L)
        return self.outc(x)  # (N, 1, L)

    __call__ = forward

    def denoise(self, noisy: np.ndarray, bn_mode: str | None = None, chunk: int = CHUNK, threads: int | None = None) -> np.ndarray:
        """Denoise (N, L) signals in chunks, as ``Pytorch_V1.inference.denoise`` does.

        Each block of ``FORWARD_BLOCK`` signals (prior h, then forward) is independent
        of the others, so blocks run on a pool of threads, each with a one-thread
        BLAS: NumPy releases the GIL, and small GEMMs split over BLAS threads
        stall badly when the cores are shared. The result does not depend on
        ``threads``; ``chunk`` moves block boundaries, which can change results
        by float32 rounding (BLAS kernels vary with the matrix width).

        Parameters
        ----------
        noisy : np.ndarray
            Shape (N, L) or (L,), finite, L ≥ 16.
        bn_mode : {"fixed", "unfixed"}, optional
            Defaults to ``config["bn_mode"]``.
        chunk : int
            Signals converted to float32 at a time (bounds memory).
        threads : int, optional
            Worker threads; default OMP_NUM_THREADS when set (as torch reads it),
            else every core. One when the BLAS's thread count cannot be pinned.

        Returns
        -------
        np.ndarray
            Denoised signals, float64, shape (N, L).
        """
        mode = self._bn_mode(bn_mode)
        noisy = np.atleast_2d(np.asarray(noisy))
        if noisy.ndim != 2:
            raise InputError(f"expected signals of shape (N, L), got {noisy.shape}")
        if noisy.shape[1] < MIN_LENGTH:
            raise InputError(f"signals must have length >= {MIN_LENGTH}, got {noisy.shape[1]}")
        check_finite(noisy, "input")
        if chunk < 1:
            raise InputError(f"chunk must be >= 1, got {chunk}")
        out = np.empty(noisy.shape, dtype=np.float64)

        def denoise_block(start: int) -> None:
            x = noisy[start : start + FORWARD_BLOCK].astype(np.float32)[:, None, :]  # (n, 1, L)
            h = wiener_prior(x) if self.wienernet is not None else None
            out[start : start + x.shape[0]] = self.forward(x, h, mode)[:, 0]

        workers = threads or default_threads()
        pin_blas = one_blas_thread_initializer() if workers > 1 else None
        if pin_blas is None:
            workers = 1
        for chunk_start in range(0, noisy.shape[0], chunk):
            starts = range(chunk_start, min(chunk_start + chunk, noisy.shape[0]), FORWARD_BLOCK)
            if workers == 1 or len(starts) == 1:
                for start in starts:
                    denoise_block(start)
            else:
                with ThreadPoolExecutor(min(workers, len(starts)), initializer=pin_blas) as pool:
                    list(pool.map(denoise_block, starts))  # list(): re-raise a worker's error here
        return out

    def _bn_mode(self, bn_mode: str | None) -> str:
        mode = bn_mode or self.config.get("bn_mode", "fixed")
        if mode not in BN_MODES:
            raise InputError(f"bn mode must be one of {BN_MODES}, got {mode!r}")
        return mode


def default_threads() -> int:
    """OMP_NUM_THREADS when set (as torch reads it), else every core."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def one_blas_thread_initializer():
    """A function that makes the calling thread's OpenBLAS calls single-threaded, or None.

    Uses ``openblas_set_num_threads_local`` (OpenBLAS ≥ 0.3.27, the library that
    NumPy's wheels bundle). Without it (another BLAS, an older OpenBLAS) denoise
    stays on one thread rather than risk threads × BLAS-threads oversubscription.
    """
    libraries = Path(np.__file__).parent.parent / "numpy.libs"
    for path in sorted(libraries.glob("*openblas*")) if libraries.is_dir() else []:
        try:
            set_local = ctypes.CDLL(str(path)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        set_local.argtypes, set_local.restype = [ctypes.c_int], ctypes.c_int
        return lambda: set_local(1)
    return None


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every state-dict key the forward reads for ``config``, with its shape.

    The BN step counters (``num_batches_tracked``) are not among them.
    """
    probe = Weights({}, "expected")
    try:
        NumpyICNN(probe, config)
    except InputError:  # an empty probe misses every key, by design
        pass
    return probe.expected


def wiener_prior(x: np.ndarray) -> np.ndarray:
    """h of each signal (``signals.classical.wiener_inverse_response``), float32 (N, 1, L) like x.

    Computed from the float32 input, as ``Pytorch_V1.model.wiener_prior`` does.
    """
    h = wiener_inverse_response(np.asarray(x)[:, 0].astype(np.float64))
    return h.astype(np.float32)[:, None, :]


def load_h5(path: str | os.PathLike, dtype: type = np.float32) -> NumpyICNN:
    """Build :class:`NumpyICNN` from an HDF5 weights file (ours or the seed's).

    Parameters
    ----------
    path : str or os.PathLike
        File written by ``pth2h5.py`` or by the seed's converter.
    dtype : type
        Compute type: float32 (default, as torch) or float64.

    Returns
    -------
    NumpyICNN
        The model, its ``config`` from the file's attributes or inferred from its keys.

    Raises
    ------
    InputError
        When the file is missing, not HDF5, truncated, of another format, or
        lacks or mis-shapes an expected dataset (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: weights file is empty")
    arrays, attributes = _read_h5(path)
    metadata, config = _config_of(path, arrays, attributes)
    return NumpyICNN(Weights(arrays, str(path)), config, metadata, dtype)


def _read_h5(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Every root dataset as a float32 array, and the root attributes."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            attributes = {name: _plain(value) for name, value in f.attrs.items()}
            for key, item in f.items():
                if not isinstance(item, h5py.Dataset):
                    raise InputError(f"{path}: {key!r} is a group, expected a flat dataset per tensor")
                if key.endswith("num_batches_tracked"):
                    continue  # a counter, not used at inference
                if item.dtype.kind not in "fiu":
                    raise InputError(f"{path}: dataset {key!r} holds {item.dtype}, expected numbers")
                arrays[key] = np.asarray(item[()], dtype=np.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # truncated file, not HDF5, unreadable chunk
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: not a readable HDF5 weights file ({reason[:160]})") from None
    for key, array in arrays.items():
        if not np.isfinite(array).all():
            raise InputError(f"{path}: dataset {key!r} holds non-finite values")
    return arrays, attributes


def _plain(value):
    """HDF5 attribute -> plain Python (bytes decoded, 0-d arrays unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _config_of(path: Path, arrays: dict[str, np.ndarray], attributes: dict) -> tuple[dict, dict]:
    """(metadata, model config): recorded in the attributes, or the seed's ICNN_s inferred from keys."""
    if not attributes:  # the seed's converter wrote no attributes
        config = {
            "prior": "wienernet.beta" in arrays,
            "norm": "sparse_bn" if any(k.endswith(".threshold") for k in arrays) else "bn",
            "bn_mode": "fixed",
        }
        return {}, config
    file_format = attributes.get("format")
    if file_format != WEIGHTS_FORMAT:
        raise InputError(f"{path}: format attribute is {file_format!r}, expected {WEIGHTS_FORMAT!r}")
    version = attributes.get("format_version")
    if not isinstance(version, int) or version > SUPPORTED_FORMAT_VERSION:
        raise InputError(f"{path}: format_version {version!r} is not supported (this reader knows up to {SUPPORTED_FORMAT_VERSION})")
    try:
        recorded = json.loads(attributes.get("config", "{}"))
    except (TypeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: config attribute is not valid JSON ({err})") from None
    model = recorded.get("model") if isinstance(recorded, dict) else None
    if not isinstance(model, dict):
        raise InputError(f"{path}: config attribute has no 'model' entry")
    config = {
        "prior": model.get("prior", True),
        "norm": model.get("norm", "bn"),
        "bn_mode": model.get("bn_mode", "fixed"),
    }
    if not isinstance(config["prior"], bool):
        raise InputError(f"{path}: config 'prior' must be true or false, got {config['prior']!r}")
    if config["norm"] not in NORMS:
        raise InputError(f"{path}: config 'norm' must be one of {NORMS}, got {config['norm']!r}")
    if config["bn_mode"] not in BN_MODES:
        raise InputError(f"{path}: config 'bn_mode' must be one of {BN_MODES}, got {config['bn_mode']!r}")
    metadata = dict(attributes)
    metadata["config"] = recorded
    return metadata, config

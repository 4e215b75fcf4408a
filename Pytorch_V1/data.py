"""Training data and validation: a seeded stream of fresh synthetic pairs, or a folder in the
original repository's layout with a seeded held-out validation split; the fixed validation set."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from Pytorch_V1.adapt import residual_sigma, short_record_note
from Pytorch_V1.checkpoint import load_model
from Pytorch_V1.distributed import Workers, note
from Pytorch_V1.losses import LABEL_FREE
from icnn.spec import ModelConfig, min_length
from Pytorch_V1.model import model_prior
from deepdenoise1d.broad_prior import BroadPrior
from deepdenoise1d.budget import check_memory
from deepdenoise1d.classical import bayes_posterior_mean
from deepdenoise1d.dataset import read_folder_dataset
from deepdenoise1d.errors import InputError
from deepdenoise1d.io import check_chunk, read_signals
from deepdenoise1d.metrics import rmse
from deepdenoise1d.noise import estimate_sigma_auto, folder_sigmas, per_signal_sigma, sigma_prior
from deepdenoise1d.synthesis import BLIND_SIGMA_RANGE, SIGMA, SIGNAL_LENGTH, noisy_pairs, spike_records

VAL_FRACTION = 0.1  # of a --data folder, held out for validation
MIN_VAL = 100  # at least this many held-out signals
SYNTHETIC_VAL = 1000  # validation signals on synthetic data
SIGMA_MISMATCH = 0.2  # warn when --sigma and the folder's estimate differ by more than this fraction
PRIOR_SIGNALS = 20000  # noisy signals that --sigma-estimate shrunk fits the σ distribution on
# Validation SURE picks the label-free checkpoint: 8 antithetic probes (16 forward passes, no gradient)
# rank checkpoints more reliably than one; no gradient flows, so the step (losses.VAL_EPSILON) can be small.
VAL_PROBES = 8
# A record's few held-out windows get more (up to 64), so that probes times windows reaches this: the
# difference of two models' divergences errs by the probes' spread over √P, which decides the guard's margin.
VAL_PROBE_SIGNALS = 256
MAX_VAL_PROBES = 64
# Memory of one training step: activations kept for the backward pass, their gradients and the
# batch (about 1 kB per sample measured on CPU at length 100), above a base for torch and validation.
TRAIN_BYTES_PER_SAMPLE = 1200
TRAIN_BASE_BYTES = 512 * 2**20


def check_training_memory(batch_size: int, length: int) -> None:
    """Refuse (one line, :func:`deepdenoise1d.budget.check_memory`) a batch whose step cannot fit in memory."""
    need = TRAIN_BASE_BYTES + batch_size * length * TRAIN_BYTES_PER_SAMPLE
    check_memory(need, f"--batch-size {batch_size} (signals of length {length})", "use a smaller --batch-size")

# Stream ids: each random draw of a run is default_rng([seed, STREAM, ...]), so no two draws share numbers.
STEP_STREAM = 5  # per worker [seed, 5, rank]: BN-statistics coin, SURE probes, R2R recorruption
FOLDER_STREAM = 7  # the epoch permutations of a folder (the same on every worker)
SPLIT_STREAM = 11  # the split permutation of a folder
RECORRUPT_STREAM = 77  # scripts/label_free_study.py: R2R's recorruption mean at inference
PRIOR_STREAM = 997  # the noisy signals --sigma-estimate shrunk fits its σ distribution on
VAL_PROBE_STREAM = 998  # validation SURE's probes
VAL_STREAM = 999  # the synthetic validation signals
BROAD_RANK_STRIDE = 7919  # the broad prior's stream of worker r is seeded seed + this·r
BN_CALIBRATION_OFFSET = 104729  # the broad prior's BN-calibration batches: seed + this, apart from training's
SPIKE_STREAM = 19  # --spike-share: [seed, 19, batch] the benchmark's spikes of a broad batch; [seed, 19] their validation


class SyntheticStream:
    """Endless batches of fresh (noisy, clean) pairs from one seeded generator.

    ``rank`` and ``world_size`` give each distributed worker its own stream.
    """

    def __init__(self, seed: int, batch_size: int, sigma, rank: int = 0, world_size: int = 1):
        self.rng = np.random.default_rng([seed, rank, world_size])
        self.batch_size = batch_size
        self.sigma = sigma
        self.epoch = 0

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(noisy, clean, sigmas), shapes (B, L), (B, L), (B,)."""
        clean, noisy, sigmas = noisy_pairs(self.rng, self.batch_size, self.sigma)
        return noisy, clean, sigmas

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class FolderStream:
    """Shuffled batches from a folder dataset (``data/`` with optional ``labels/``).

    Each epoch is a fresh permutation; with ``world_size`` > 1 each rank takes
    every ``world_size``-th index of it, as a DistributedSampler would.
    ``sigmas`` is one noise level for all signals, or one per signal (N,).
    """

    def __init__(self, noisy: np.ndarray, clean: np.ndarray | None, seed: int, batch_size: int,
                 sigmas: float | np.ndarray, rank: int = 0, world_size: int = 1):
        self.noisy, self.clean = noisy, clean
        self.sigmas = np.broadcast_to(np.asarray(sigmas, dtype=np.float64), noisy.shape[:1])
        self.rng = np.random.default_rng([seed, FOLDER_STREAM])  # same permutation on every rank
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.order = np.empty(0, dtype=int)
        self.cursor = 0

    @property
    def size(self) -> int:
        """Training signals (on all workers): what one pass over the data is."""
        return self.noisy.shape[0]

    def _new_epoch(self) -> None:
        perm = self.rng.permutation(self.noisy.shape[0])
        self.order = perm[self.rank :: self.world_size]
        self.cursor = 0
        self.epoch += 1

    def next_batch(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        if self.cursor + self.batch_size > self.order.size:
            self._new_epoch()
        idx = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        clean = self.clean[idx] if self.clean is not None else None
        return self.noisy[idx], clean, self.sigmas[idx].copy()

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "epoch": self.epoch,
                "order": self.order.tolist(), "cursor": self.cursor}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self.order = np.asarray(state["order"], dtype=int)


class BroadStream:
    """Endless batches of :class:`deepdenoise1d.broad_prior.BroadPrior`, each signal divided by its own σ.

    Only a scale-equivariant, offset-free model trains on it: to such a model the division changes
    nothing but the loss, which then weighs every signal alike (in units of its σ) whatever its scale.
    Batch k of worker ``rank`` is the prior's batch k of seed ``seed + BROAD_RANK_STRIDE·rank``: resumable.
    ``spike_share`` of each batch (rounded) is the benchmark's spikes instead, joined to the crop's length
    (:func:`deepdenoise1d.synthesis.spike_records`, σ over the blind models' range), drawn per batch k too.
    """

    def __init__(self, seed: int, batch_size: int, length: int, rank: int = 0, spike_share: float = 0.0):
        self.prior = BroadPrior(dtype=np.float64)
        self.seed, self.batch_size, self.length = seed + BROAD_RANK_STRIDE * rank, batch_size, length
        self.spikes = spike_count(spike_share, batch_size)
        self.epoch = 0
        self.load_state({"batch": 0})

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clean, noisy, sigma = next(self.batches)
        if self.spikes:
            rng = np.random.default_rng([self.seed, SPIKE_STREAM, self.batch])
            spiky = spike_records(rng, self.spikes, self.length)
            clean, noisy, sigma = (np.concatenate(pair) for pair in zip((clean, noisy, sigma), spiky))
        self.batch += 1
        return noisy / sigma[:, None], clean / sigma[:, None], np.ones_like(sigma)

    def calibration_batches(self, count: int, device: torch.device):
        """``count`` fixed batches of noisy signals (B, 1, L) on ``device``, from their own seeded stream."""
        batches = self.prior.batches(self.seed + BN_CALIBRATION_OFFSET, self.batch_size, self.length)
        for _ in range(count):
            _, noisy, sigma = next(batches)
            yield to_tensor(noisy / sigma[:, None], device)

    def state(self) -> dict:
        return {"batch": self.batch}

    def load_state(self, state: dict) -> None:
        self.batch = int(state["batch"])
        self.batches = self.prior.batches(self.seed, self.batch_size - self.spikes, self.length, start=self.batch)


def spike_count(share: float, batch_size: int) -> int:
    """How many of a broad batch's ``batch_size`` signals are the benchmark's spikes at ``share`` (rounded;
    at least one signal of the broad prior is left)."""
    return min(int(round(share * batch_size)), batch_size - 1)


def check_crop_length(cfg) -> int:
    """``cfg.crop_length`` when the run's model takes signals that long (2^depth samples at least), else InputError."""
    model = ModelConfig.from_dict(cfg.model, "train config")
    if cfg.crop_length < min_length(model):
        raise InputError(f"--crop-length {cfg.crop_length} is below the network's minimum length {min_length(model)} "
                         f"(2^depth, depth {model.depth})")
    return cfg.crop_length


def broad_data(cfg, workers: Workers, device: torch.device, local_batch: int):
    """The broad prior's stream and a fixed validation set from it, in units of each signal's σ."""
    model = ModelConfig.from_dict(cfg.model, "train config")
    if not (model.equivariant and model.baseline == "median"):
        raise InputError("--train-prior broad trains scale-equivariant, offset-free models only "
                         "(drop --no-equivariant and --baseline none)")
    length = check_crop_length(cfg)
    cfg = replace(cfg, sigma=None, val_size=cfg.val_size or SYNTHETIC_VAL, model={**cfg.model, "train_length": length})
    clean, noisy, sigma, _ = BroadPrior(dtype=np.float64).validation_set(cfg.seed + VAL_STREAM, cfg.val_size, length)
    what = (f"{cfg.val_size} broad-prior signals of {length} samples (seed {cfg.seed + VAL_STREAM}), "
            "RMSE in units of each signal's σ")
    extra = int(round(cfg.spike_share / (1 - cfg.spike_share) * cfg.val_size))  # the validation's share = training's
    if extra:
        spiky = spike_records(np.random.default_rng([cfg.seed + VAL_STREAM, SPIKE_STREAM]), extra, length)
        clean, noisy, sigma = (np.concatenate(pair) for pair in zip((clean, noisy, sigma), spiky))
        what += f", and {extra} of the benchmark's spikes joined to that length (σ {format_sigma(BLIND_SIGMA_RANGE)})"
    val = validation(cfg, noisy / sigma[:, None], clean / sigma[:, None], np.ones(len(sigma)), None, what, device)
    return cfg, BroadStream(cfg.seed, local_batch, length, workers.rank, cfg.spike_share), val


def held_out_size(n_signals: int, requested: int | None) -> int:
    """Validation signals to hold out of a folder: ``requested``, else :data:`VAL_FRACTION` but at least :data:`MIN_VAL`."""
    return requested if requested is not None else max(MIN_VAL, int(round(VAL_FRACTION * n_signals)))


def split_indices(n_signals: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices of a folder: a seeded permutation, validation first, each sorted."""
    perm = np.random.default_rng([seed, SPLIT_STREAM]).permutation(n_signals)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def to_tensor(signals: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, L) float NumPy -> (B, 1, L) float32 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(signals, dtype=np.float32))[:, None].to(device)


# ---------------------------------------------------------------------------
# a run's data: the training stream and the validation set


@dataclass
class Validation:
    """The fixed validation set, as tensors; ``clean`` None when the folder has no labels."""

    x: torch.Tensor
    h: torch.Tensor | None
    clean: np.ndarray | None
    sigmas: torch.Tensor
    probe: torch.Tensor | None  # SURE's Monte-Carlo probe (label-free model selection)
    bayes: float | None  # the Bayes limit: only where the prior is known (synthetic data)
    description: str
    sigma_prior: tuple | None = None  # --sigma-estimate shrunk: the σ distribution fitted on noisy training signals


def sigma_spec(sigma: list[float]) -> float | tuple[float, float]:
    """[low, high] as deepdenoise1d.synthesis takes it: one number when low == high (draws nothing)."""
    low, high = sigma
    return low if low == high else (low, high)


def format_sigma(sigma: list[float]) -> str:
    return f"{sigma[0]:g}" if sigma[0] == sigma[1] else f"{sigma[0]:g}..{sigma[1]:g}"


def load_data(cfg, workers: Workers, device: torch.device):
    """(config with sigma and val_size resolved, training stream, Validation) for ``cfg``, a TrainConfig."""
    if cfg.batch_size % workers.world_size:
        raise InputError(f"--batch-size {cfg.batch_size} must divide evenly over {workers.world_size} workers")
    local_batch = cfg.batch_size // workers.world_size
    if cfg.data is not None and Path(cfg.data).is_file():
        return file_data(cfg, workers, device, local_batch)
    if cfg.data is not None:
        return folder_data(cfg, workers, device, local_batch)
    if cfg.train_prior == "broad":
        return broad_data(cfg, workers, device, local_batch)
    cfg = replace(cfg, sigma=cfg.sigma or [SIGMA, SIGMA], val_size=cfg.val_size or SYNTHETIC_VAL,
                  model={**cfg.model, "train_length": SIGNAL_LENGTH})  # recorded: longer inputs go through windows of it
    stream = SyntheticStream(cfg.seed, local_batch, sigma_spec(cfg.sigma), workers.rank, workers.world_size)
    clean, noisy, sigmas = noisy_pairs(np.random.default_rng([cfg.seed, VAL_STREAM]), cfg.val_size, sigma_spec(cfg.sigma))
    bayes = float(rmse(bayes_posterior_mean(noisy, sigmas[:, None]), clean).mean())
    what = f"{cfg.val_size} synthetic signals (default_rng([{cfg.seed}, {VAL_STREAM}]), sigma {format_sigma(cfg.sigma)})"
    prior = None
    if cfg.sigma_estimate == "shrunk":  # fitted on noisy training-like signals only, never their σ
        prior_rng = np.random.default_rng([cfg.seed, PRIOR_STREAM])
        prior = sigma_prior(noisy_pairs(prior_rng, PRIOR_SIGNALS, sigma_spec(cfg.sigma))[1])
    return cfg, stream, validation(cfg, noisy, clean, sigmas, bayes, what, device, prior)


def folder_data(cfg, workers: Workers, device: torch.device, local_batch: int):
    """Read the folder, resolve its σ, hold out the validation split."""
    noisy, clean = read_folder_dataset(cfg.data, require_labels=cfg.loss not in LABEL_FREE)
    return signals_data(cfg, workers, device, local_batch, noisy, clean)


def signals_data(cfg, workers: Workers, device: torch.device, local_batch: int, noisy: np.ndarray,
                 clean: np.ndarray | None):
    """Resolve σ of (N, L) signals and hold out the validation split (a folder, or an (N, L) file)."""
    check_training_memory(cfg.batch_size, noisy.shape[1])
    n = noisy.shape[0]
    n_val = held_out_size(n, cfg.val_size)
    if n_val >= n:
        raise InputError(f"{cfg.data}: {n} signals; holding out {n_val} for validation leaves none to train on "
                         f"(validation takes {100 * VAL_FRACTION:g} %, at least {MIN_VAL}; or set --val-size)")
    if cfg.split is not None and cfg.split.get("n_signals") != n:  # a resumed run
        raise InputError(f"{cfg.data}: holds {n} signals now, the run was trained on {cfg.split.get('n_signals')}")
    cfg, sigmas = resolve_folder_sigma(cfg, noisy, workers)
    train_idx, val_idx = split_indices(n, n_val, cfg.seed)
    split = {"n_signals": n, "n_val": n_val, "rule": f"default_rng([seed, {SPLIT_STREAM}]).permutation(n_signals)[:n_val]"}
    cfg = replace(cfg, val_size=n_val, split=split, model={**cfg.model, "train_length": int(noisy.shape[1])})
    pick = lambda a, idx: None if a is None else a[idx]  # noqa: E731
    stream = FolderStream(noisy[train_idx], pick(clean, train_idx), cfg.seed, local_batch, sigmas[train_idx],
                          workers.rank, workers.world_size)
    what = f"{n_val} held-out signals of {cfg.data}"
    prior = sigma_prior(noisy[train_idx]) if cfg.sigma_estimate == "shrunk" else None
    return cfg, stream, validation(cfg, noisy[val_idx], pick(clean, val_idx), sigmas[val_idx], None, what, device, prior)


def resolve_folder_sigma(cfg, noisy: np.ndarray, workers: Workers):
    """(config with sigma set, σ of each signal): the given --sigma, else the folder's estimate.

    A given --sigma needs no estimate (it is only compared with one, when one can be made);
    with --sigma auto, degenerate signals are named and get the pooled value, never blocking the folder.
    """
    if cfg.sigma is not None and cfg.sigma[0] != cfg.sigma[1] and not cfg.sigma_per_signal:
        raise InputError("--data needs one --sigma value (the folder's noise level) or --sigma auto")
    if cfg.sigma is not None and not cfg.sigma_per_signal:
        try:
            pooled, per_signal = folder_sigmas(noisy, cfg.data)
        except InputError:  # nothing to compare with: the given value stands
            return cfg, np.full(noisy.shape[0], cfg.sigma[0])
    else:
        auto = estimate_sigma_auto(noisy)
        note(f"{cfg.data}: {auto.summary()}", workers)
        odd = auto.degenerate_warning()
        if odd:
            note(f"{odd}; they get the folder's pooled σ", workers)
        pooled, per_signal = folder_sigmas(noisy, cfg.data)
    if cfg.sigma_per_signal or (cfg.sigma is None and per_signal is not None):
        if per_signal is None:  # a resumed run that found σ varying: the same per-signal estimates
            per_signal = per_signal_sigma(noisy, cfg.data)
        low, high = (round(float(v), 4) for v in np.percentile(per_signal, [1, 99]))
        note(f"sigma varies across {cfg.data}: per-signal estimates {low}..{high} (1st-99th percentile); "
             "each signal's own estimate is used", workers)
        return replace(cfg, sigma=[low, high], sigma_per_signal=True), per_signal
    if cfg.sigma is None:
        cfg = replace(cfg, sigma=[round(pooled, 4)] * 2)
        note(f"noise sigma of {cfg.data} estimated at {pooled:.4f} (pooled over all {noisy.shape[0]} signals)", workers)
    elif abs(cfg.sigma[0] / pooled - 1) > SIGMA_MISMATCH:
        note(f"warning: --sigma {cfg.sigma[0]:g} differs from the folder's estimated {pooled:.3f} by "
             f"{100 * abs(cfg.sigma[0] / pooled - 1):.0f} % (omit --sigma to use the estimate)", workers)
    return cfg, np.full(noisy.shape[0], cfg.sigma[0])


def validation(cfg, noisy, clean, sigmas, bayes, description, device, prior=None) -> Validation:
    """The Validation of ``cfg`` (a TrainConfig): tensors on ``device``, with SURE's fixed probes for label-free runs."""
    x = to_tensor(noisy, device)
    probe = None
    if cfg.loss in LABEL_FREE:  # label-free model selection: SURE needs fixed probes
        count = min(MAX_VAL_PROBES, max(VAL_PROBES, -(-VAL_PROBE_SIGNALS // noisy.shape[0])))
        probes = np.random.default_rng([cfg.seed, VAL_PROBE_STREAM]).standard_normal((count, *noisy.shape))
        probe = torch.from_numpy(probes.astype(np.float32))[:, :, None].to(device)  # (P, N, 1, L)
        if cfg.sigma_estimate != "true":
            sigmas = per_signal_sigma(noisy, "validation signals", prior)
    return Validation(x, model_prior(x, ModelConfig.from_dict(cfg.model, "train config")), clean,
                      torch.as_tensor(sigmas, dtype=torch.float32, device=device), probe, bayes, description, prior)


# ---------------------------------------------------------------------------
# --data FILE: one record (random crops) or (N, L) noisy signals

RECORD_VAL_FRACTION = 0.1  # of a record, held out for validation
RECORD_VAL_CROPS = 4  # ... at least this many crop lengths
RECORD_STREAM = 13  # per worker [seed, 13, rank]: the crop offsets of a record


class RecordStream:
    """Endless batches of random crops of one record, each starting at one of ``allowed`` offsets
    (none overlaps a validation window), all of noise level ``sigma``.

    ``epoch`` counts passes: samples drawn over the training samples.
    """

    def __init__(self, record: np.ndarray, crop: int, allowed: np.ndarray, seed: int, batch_size: int,
                 sigma: float, rank: int = 0, world_size: int = 1):
        if allowed.size == 0:
            raise InputError(f"a record of {record.size} samples leaves no crop of {crop} outside its validation windows")
        self.record, self.crop, self.allowed = record, crop, allowed
        self.rng = np.random.default_rng([seed, RECORD_STREAM, rank])
        self.batch_size, self.sigma = batch_size, float(sigma)
        self.drawn = 0
        self.train_samples = covered_samples(allowed, crop)

    @property
    def size(self) -> int:
        """Non-overlapping crops in the training samples: what one pass over them is."""
        return self.train_samples // self.crop

    @property
    def epoch(self) -> int:
        return self.drawn * self.crop // self.train_samples

    def starts(self, n: int) -> np.ndarray:
        """``n`` random crop offsets among the allowed ones."""
        return self.allowed[self.rng.integers(0, self.allowed.size, n)]

    def next_batch(self) -> tuple[np.ndarray, None, np.ndarray]:
        """(crops, None, sigmas), shapes (B, crop), (B,)."""
        idx = self.starts(self.batch_size)[:, None] + np.arange(self.crop)
        self.drawn += self.batch_size
        return self.record[idx], None, np.full(self.batch_size, self.sigma)

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "drawn": self.drawn}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.drawn = int(state["drawn"])


def covered_samples(starts: np.ndarray, crop: int) -> int:
    """Samples in the union of the crops [s, s + crop) for ``starts``, in O(len(starts)) memory: each crop
    adds what lies before the next one's start, the last its whole length (a long record's crops, listed
    sample by sample, would take len(starts) · crop integers)."""
    if starts.size == 0:
        return 0
    ordered = np.sort(starts)
    return int(np.minimum(np.diff(ordered), crop).sum()) + crop


def record_split(length: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation window starts, allowed training crop starts) of a record.

    :data:`RECORD_VAL_FRACTION` of the record, at least :data:`RECORD_VAL_CROPS` windows of ``crop``,
    each centred in one of as many equal segments: a record's content changes along it (a flat
    tail would be an unrepresentative judge), so validation samples all of it. No training crop
    shares a sample with a validation window.
    """
    n_val = validation_windows(length, crop)
    segment = length / n_val
    if not record_fits(length, crop):
        raise InputError(f"a record of {length} samples is too short for --crop-length {crop}: {n_val} validation "
                         f"windows leave no room for training crops between them")
    val_starts = (np.arange(n_val) * segment + (segment - crop) / 2).astype(int)
    allowed = np.ones(length - crop + 1, dtype=bool)
    for start in val_starts:
        allowed[max(0, start - crop + 1) : start + crop] = False
    return val_starts, np.flatnonzero(allowed)


def fitting_crop(cfg, length: int, workers: Workers) -> int:
    """The crop length of a record: ``cfg.crop_length``; a run with ``--init`` halves it (to the network's
    minimum at most) until the record holds its validation windows and training crops between them."""
    crop = check_crop_length(cfg)
    if cfg.init is None:
        return crop
    smallest = min_length(ModelConfig.from_dict(cfg.model, "train config"))
    fitted = crop
    while fitted // 2 >= smallest and not record_fits(length, fitted):
        fitted //= 2
    if fitted != crop:
        note(f"a record of {length} samples is short for crops of {crop}: training on crops of {fitted}", workers)
    return fitted


def validation_windows(length: int, crop: int) -> int:
    """How many validation windows of ``crop`` :func:`record_split` holds out of a record of ``length``."""
    return max(RECORD_VAL_CROPS, math.ceil(RECORD_VAL_FRACTION * length / crop))


def record_fits(length: int, crop: int) -> bool:
    """Whether :func:`record_split` can hold out validation windows of ``crop`` and leave crops to train on."""
    return length / validation_windows(length, crop) >= 2 * crop


def file_data(cfg, workers: Workers, device: torch.device, local_batch: int):
    """--data FILE: one record (``.npy`` (L,) or a one-column text file), or (N, L) noisy signals."""
    if cfg.loss not in LABEL_FREE:
        raise InputError(f"{cfg.data}: a signal file holds no clean labels; train on it with a label-free --loss "
                         f"({', '.join(LABEL_FREE)})")
    signals, stored_shape = read_signals(cfg.data)
    signals = np.asarray(signals, dtype=np.float64)
    check_chunk(signals, 0, cfg.data)
    if len(stored_shape) == 1 or signals.shape[0] == 1:
        return record_data(cfg, workers, device, local_batch, signals[0])
    return signals_data(cfg, workers, device, local_batch, signals, None)


def record_sigma(cfg, record: np.ndarray, workers: Workers) -> float:
    """σ of a record in its own units: the given --sigma (a resumed run's, times its scale), else its estimate."""
    if cfg.sigma is not None:
        if cfg.sigma[0] != cfg.sigma[1]:
            raise InputError("a record needs one --sigma value (its noise level) or --sigma auto")
        return cfg.sigma[0] * cfg.input_scale
    auto = estimate_sigma_auto(record[None])
    sigma = float(auto.sigma[0])
    if not np.isfinite(sigma):
        raise InputError(f"{cfg.data}: the record is constant (no noise to estimate); give --sigma")
    if cfg.init is not None:  # a trained start reads σ better from its residual than the wavelet details do
        first, sigma = sigma, residual_sigma(load_model(cfg.init)[0], record, sigma, cfg.seed)
        note(f"noise sigma of {cfg.data} estimated at {sigma:.4g} from the residual of {cfg.init} "
             f"(wavelet MAD: {first:.4g})", workers)
        return sigma
    note(f"noise sigma of {cfg.data} estimated at {sigma:.4g} ({auto.summary()})", workers)
    return sigma


def record_data(cfg, workers: Workers, device: torch.device, local_batch: int, record: np.ndarray):
    """Random crops of the record to train on, windows spread along it (:func:`record_split`) to validate on.

    The record is divided by one scale, its σ, so the network trains at noise level 1 whatever the
    record's units; the scale is recorded as ``input_scale`` (denoise y as f(y / scale) · scale).
    """
    if cfg.init is not None and (short := short_record_note(record.size)) is not None:
        note(short, workers)
    crop = fitting_crop(cfg, record.size, workers)
    check_training_memory(cfg.batch_size, crop)
    val_starts, allowed = record_split(record.size, crop)
    sigma = record_sigma(cfg, record, workers)
    scaled = record / sigma
    n_val = int(val_starts.size)
    split = {"n_signals": int(record.size), "n_val": n_val, "val_starts": val_starts.tolist(),
             "rule": "validation: windows of crop_length at val_starts; training crops share no sample with them"}
    # an adapted model keeps the window length it was trained for; a new one denoises in windows of its crops
    train_length = cfg.model.get("train_length", crop) if cfg.init is not None else crop
    cfg = replace(cfg, sigma=[1.0, 1.0], input_scale=float(sigma), val_size=n_val, split=split, crop_length=crop,
                  model={**cfg.model, "train_length": train_length, "input_scale": float(sigma)})  # both backends apply it
    stream = RecordStream(scaled, crop, allowed, cfg.seed, local_batch, 1.0, workers.rank, workers.world_size)
    windows = scaled[val_starts[:, None] + np.arange(crop)]
    what = f"{n_val} windows of {crop} spread along {cfg.data} (in no training crop)"
    return cfg, stream, validation(cfg, windows, None, np.ones(n_val), None, what, device)

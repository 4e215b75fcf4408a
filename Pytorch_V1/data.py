"""Training data: a seeded stream of fresh synthetic pairs, or a folder in the seed's layout
with a seeded held-out validation split."""
from __future__ import annotations

import numpy as np
import torch

from deepdenoise1d.synthesis import noisy_pairs

VAL_FRACTION = 0.1  # of a --data folder, held out for validation
MIN_VAL = 100  # at least this many held-out signals
SPLIT_STREAM = 11  # the split permutation is default_rng([seed, SPLIT_STREAM])


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
        self.rng = np.random.default_rng([seed, 7])  # same permutation on every rank
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.order = np.empty(0, dtype=int)
        self.cursor = 0

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


def held_out_size(n_signals: int, requested: int | None) -> int:
    """Validation signals to hold out of a folder: ``requested``, else 10 % but at least 100."""
    return requested if requested is not None else max(MIN_VAL, int(round(VAL_FRACTION * n_signals)))


def split_indices(n_signals: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices of a folder: a seeded permutation, validation first, each sorted."""
    perm = np.random.default_rng([seed, SPLIT_STREAM]).permutation(n_signals)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def to_tensor(signals: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, L) float NumPy -> (B, 1, L) float32 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(signals, dtype=np.float32))[:, None].to(device)

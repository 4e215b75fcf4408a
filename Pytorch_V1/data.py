"""Training data: a seeded stream of fresh synthetic pairs, or a folder in the seed's layout."""
from __future__ import annotations

import numpy as np
import torch

from signals.synthesis import noisy_pairs


class SyntheticStream:
    """Endless batches of fresh (noisy, clean) pairs from one seeded generator.

    ``rank`` and ``world_size`` give each distributed worker its own stream.
    """

    def __init__(self, seed: int, batch_size: int, sigma, rank: int = 0, world_size: int = 1):
        self.rng = np.random.default_rng([seed, rank, world_size])
        self.batch_size = batch_size
        self.sigma = sigma

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
    """

    def __init__(self, noisy: np.ndarray, clean: np.ndarray | None, seed: int, batch_size: int,
                 sigma: float, rank: int = 0, world_size: int = 1):
        self.noisy, self.clean = noisy, clean
        self.rng = np.random.default_rng([seed, 7])  # same permutation on every rank
        self.batch_size = batch_size
        self.sigma = sigma
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
        sigmas = np.full(idx.size, float(self.sigma))
        return self.noisy[idx], clean, sigmas

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "epoch": self.epoch,
                "order": self.order.tolist(), "cursor": self.cursor}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self.order = np.asarray(state["order"], dtype=int)


def to_tensor(signals: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, L) float64 NumPy -> (B, 1, L) float32 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(signals, dtype=np.float32))[:, None].to(device)

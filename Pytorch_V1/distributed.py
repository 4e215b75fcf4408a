"""train.py's workers: one process, or a DistributedDataParallel process group started by torchrun."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deepdenoise1d.errors import InputError


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """Workers torchrun started (its WORLD_SIZE), 1 when run directly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> Workers:
    """One worker, or a process group when launched by torchrun."""
    world_size = launched_world_size()
    if world_size == 1:
        return Workers()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Workers(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world_size)


@contextmanager
def process_group():
    """The Workers of this process; on success they leave together, and the process group is destroyed."""
    workers = init_distributed()
    try:
        yield workers
        if workers.world_size > 1:
            # Leave together, so no worker is gone while the main one still writes (see leave_worker).
            dist.barrier()
    finally:
        if workers.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def worker_device(device: torch.device, workers: Workers) -> torch.device:
    """The device of this worker: with several workers on CUDA, the GPU of its local rank."""
    if device.type == "cuda" and workers.world_size > 1:
        device = torch.device("cuda", workers.local_rank)
        torch.cuda.set_device(device)
    return device


def wrap_model(model: torch.nn.Module, device: torch.device, workers: Workers) -> torch.nn.Module:
    """The model, or its DistributedDataParallel wrapper with several workers."""
    if workers.world_size == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def share_error(error: InputError | None, workers: Workers) -> InputError | None:
    """The main worker's error (or None), known to every worker (a collective: every rank must call it)."""
    if workers.world_size == 1:
        return error
    box = [None if error is None else str(error)]
    dist.broadcast_object_list(box, src=0)
    return error or (InputError(box[0]) if box[0] is not None else None)


def gather_stream_state(stream, workers: Workers):
    """Every worker's data-stream state (a collective: every rank must call it)."""
    state = stream.state()
    if workers.world_size == 1:
        return state
    states = [None] * workers.world_size
    dist.all_gather_object(states, state)
    return states


def note(text: str, workers: Workers) -> None:
    """One line on stderr, from the main worker only."""
    if workers.is_main:
        print(f"train.py: {text}", file=sys.stderr, flush=True)


def leave_worker() -> None:
    """End a finished torchrun worker (after the barrier, with the process group destroyed and every file closed)."""
    if launched_world_size() == 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # The interpreter's C++ teardown sometimes aborted a worker (SIGABRT), and torchrun then failed the run.
    os._exit(0)

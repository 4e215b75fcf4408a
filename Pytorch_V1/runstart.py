"""How a run starts: its config (a fresh run's, or the saved one a resume continues), its data and budget, and
the start an ``--init`` run must beat.

A fresh run records the sha256 of its ``--data`` file (``TrainConfig.data_sha256``); ``--resume`` hashes the
file again and refuses, in one line and before any work, when it changed or is gone: the run's σ scale (a
record's ``input_scale``, a ``--sigma auto`` estimate) was measured on the old content, so SURE would be told the
wrong σ. A run saved before the hash resumes with a one-line warning that its data cannot be checked. A
``--data`` folder is not hashed (a resume checks its signal count, :func:`Pytorch_V1.data.signals_data`).

Each ``cfg`` here is a train.TrainConfig, left unannotated: train.py imports this module.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from icnn.spec import ModelConfig
from Pytorch_V1.adapt import SIGMA_DOUBT, StartGuard
from Pytorch_V1.checkpoint import file_sha256, load_initial_weights, load_resume_point, resumed_config
from Pytorch_V1.data import Validation, load_data
from Pytorch_V1.distributed import Workers, note
from Pytorch_V1.losses import LABEL_FREE
from Pytorch_V1.model import ICNN_s
from Pytorch_V1.schedule import budget_from_data
from deepdenoise1d.errors import InputError


def start_config(cfg, run, resume: bool, given: set[str] | None, workers: Workers):
    """(the run's config, the checkpoint a resume continues or None).

    A fresh run: ``cfg`` with the sha256 of its --data file. A resume: the saved config with the flags a
    resume may change taken from ``cfg`` (checkpoint.resumed_config), its --data file checked unchanged.
    """
    if not resume:
        return replace(cfg, data_sha256=data_sha256(cfg.data)), None
    ckpt = load_resume_point(run.file("ckpt_last.pth"))
    cfg = resumed_config(ckpt, cfg, given, run.file("ckpt_last.pth"))
    check_data_unchanged(cfg, workers)
    return cfg, ckpt


def data_sha256(data: str | None) -> str | None:
    """sha256 of a --data file, read in blocks; None without --data or for a folder."""
    if data is None or not Path(data).is_file():
        return None
    return file_sha256(data, "a signal file")


def check_data_unchanged(cfg, workers: Workers) -> None:
    """Refuse a resume whose --data file differs from the one the run started on, or is gone; warn when the
    run was saved without the file's hash (before it was recorded)."""
    if cfg.data is None:
        return
    path = Path(cfg.data)
    if cfg.data_sha256 is None:
        if not path.is_dir():
            note(f"warning: {cfg.data}: this run was saved without the sha256 of its data, so whether the file "
                 "changed since the run started cannot be checked; resuming", workers)
        return
    now = data_sha256(cfg.data) if path.is_file() else "no such file" if not path.exists() else "not a file"
    if now != cfg.data_sha256:
        raise InputError(f"{cfg.data}: changed since this run started (sha256 {cfg.data_sha256}, now {now}): "
                         "start a new run (--run-dir elsewhere) or restore the file")


def start_data(cfg, resumed: bool, given: set[str] | None, workers: Workers, device: torch.device):
    """(config with σ, split and budget resolved, training stream, Validation). A --data run's steps follow
    the data (schedule.budget_from_data), except a resume's own --steps."""
    cfg, stream, val = load_data(cfg, workers, device)
    if cfg.data is not None and (not resumed or (given is not None and "steps" not in given)):
        cfg = budget_from_data(cfg, stream, workers)
    return cfg, stream, val


def start_guard(cfg, val: Validation, device: torch.device, workers: Workers) -> StartGuard | None:
    """A label-free run from --init: the start's held-out outputs and SURE, which a step must beat by more than
    noise explains (main worker; rebuilt from the --init file on resume)."""
    if cfg.init is None or cfg.loss not in LABEL_FREE or cfg.loss == "unsure" or not workers.is_main:
        return None
    model = ICNN_s(ModelConfig.from_dict(cfg.model, "train config"))
    load_initial_weights(model, cfg)
    model.to(device)
    # σ is estimated from --data; synthetic validation knows it exactly
    return StartGuard.of(model, val, sigma_doubt=SIGMA_DOUBT if cfg.data is not None else 0.0)

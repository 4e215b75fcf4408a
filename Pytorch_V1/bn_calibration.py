"""Broad-prior runs: BN's running statistics re-estimated from fixed batches before each validation."""
from __future__ import annotations

import torch

from Pytorch_V1.model import ICNN_s

BN_CALIBRATION_BATCHES = 50  # broad prior: batches that re-estimate BN's statistics before each validation


@torch.no_grad()
def recalibrate_batch_norm(model: ICNN_s, batches) -> None:
    """Replace every BN's running statistics by their plain average over ``batches`` ((B, 1, L) tensors).

    On the broad prior a running average with momentum follows the last few batches, and a batch of
    sharp peaks moves it far: validation in fixed BN then drifts while the training loss falls.
    """
    norms = model.batch_norms()
    if not norms:  # norm "none": no statistics to estimate
        return
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # nn.BatchNorm1d: a cumulative average
    training = model.training
    model.train()
    for x in batches:
        model(x)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.train(training)

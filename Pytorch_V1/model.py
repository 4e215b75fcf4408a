"""ICNN_s: a 1D U-Net (after milesial/Pytorch-UNet) with a Wiener-filter prior branch.

Part names, widths and state-dict keys follow the original repository (the default
``ModelConfig``, width 2 and depth 4), so a checkpoint of the original repository loads
strictly; other widths and depths follow :mod:`icnn.spec` by the same rule. Differences
from it, on purpose: the prior modulation is functional and per signal (no parameter is replaced
in forward, a signal never depends on its batch-mates), and every batch-norm
can run in ``fixed`` (running statistics) or ``unfixed`` (the signal's own
statistics) mode at inference.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from icnn.spec import (
    ACTIVATING_NORMS,
    BIAS_FREE_NORMS,
    BN_EPS,
    FRN_EPS,
    SHRINK_ALPHA_INIT,
    KERNEL_SIZE,
    PRIOR_BETA_INIT,
    PRIOR_TAPS,
    RUNNING_STAT_NORMS,
    SCALE_MAD,
    baseline_index,
    symmetric_part,
    SPARSE_THRESHOLD_INIT,
    TRUST_REGION,
    ModelConfig,
    check_bn_mode,
    decoder_parts,
    encoder_parts,
    min_length,
    modulated_part,
    outc_part,
    prior_encoder_parts,
    skip_parts,
)
from deepdenoise1d.classical import wiener_inverse_response


class SignalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose statistics are chosen per call.

    Inference (``eval()``): ``forward(x, mode)`` with ``fixed`` uses the running
    statistics; ``unfixed`` uses each signal's own mean and biased variance per
    channel over the length axis, so N signals give exactly what one signal at a
    time gives. The mode is an argument, never stored: inference is stateless.
    Training: ``use_signal_stats`` (set per step by the training loop) picks
    per-signal statistics instead of batch statistics (standard BN).
    With ``sparse=True`` a learnable per-channel soft threshold λ = |threshold|
    follows the normalisation (the original repository's proposed sparse BN).
    """

    def __init__(self, num_features: int, sparse: bool = False):
        super().__init__(num_features, eps=BN_EPS)
        self.use_signal_stats = False  # plain attributes: never in the state_dict
        self.last_abs_mean: torch.Tensor | None = None
        if sparse:
            self.threshold = nn.Parameter(torch.full((num_features,), SPARSE_THRESHOLD_INIT))
        else:
            self.register_parameter("threshold", None)

    def forward(self, x: torch.Tensor, mode: str = "fixed") -> torch.Tensor:  # (N, C, L)
        per_signal = self.use_signal_stats if self.training else mode == "unfixed"
        if per_signal:
            # Statistics in at least float32: under AMP, float16 sums overflow.
            x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
            if self.training:
                self._track_running_stats(x32)
            mean = x32.mean(dim=2, keepdim=True)  # (N, C, 1)
            var = x32.var(dim=2, unbiased=False, keepdim=True)
            z = (x32 - mean) * torch.rsqrt(var + self.eps)
            z = (z * self.weight[:, None] + self.bias[:, None]).to(x.dtype)
        else:
            z = super().forward(x)
        if self.threshold is not None:
            magnitude = F.relu(z.abs() - self.threshold.abs()[:, None])
            if self.training:  # the L1 penalty acts on the sparse features, so it also pulls λ up
                self.last_abs_mean = magnitude.mean()
            z = torch.sign(z) * magnitude
        return z

    @torch.no_grad()
    def _track_running_stats(self, x: torch.Tensor) -> None:
        # Keep running statistics meaningful while training on per-signal statistics.
        mean = x.mean(dim=(0, 2))
        var = x.var(dim=(0, 2), unbiased=x.shape[0] * x.shape[2] > 1)  # unbiased, as BatchNorm tracks
        m = self.momentum
        self.running_mean.mul_(1 - m).add_(m * mean)
        self.running_var.mul_(1 - m).add_(m * var)
        self.num_batches_tracked.add_(1)


class NoNorm(nn.Module):
    """``norm="none"``: the normalisation step passes its input on (no weights, no statistics)."""

    def forward(self, x: torch.Tensor, mode: str = "fixed") -> torch.Tensor:
        return x


def soft_threshold(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """sign(x)·max(|x| − τ, 0): two-sided shrinkage, τ broadcast against x."""
    return torch.sign(x) * F.relu(x.abs() - tau)


class Shrink(nn.Module):
    """``norm="shrink"``: soft threshold τ_c = sigmoid(α_c)·mean_l |x_c| from each signal's own features.

    After deep residual shrinkage networks; the threshold scales with the input, so the step is
    homogeneous, and it replaces the ReLU (signed features pass).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((channels,), SHRINK_ALPHA_INIT))

    def forward(self, x: torch.Tensor, mode: str = "fixed") -> torch.Tensor:
        tau = torch.sigmoid(self.alpha)[:, None] * x.abs().mean(dim=2, keepdim=True)  # (N, C, 1)
        return soft_threshold(x, tau)


class SigmaShrink(nn.Module):
    """``norm="sigma_shrink"``: soft threshold τ_c = |λ_c|·σ̂, in place of the ReLU.

    After learned ISTA and CDLNet, whose thresholds follow the noise level. Only in equivariant
    models (``icnn.spec``), whose network sees y / s(y): there σ̂ is 1 and τ_c = |λ_c|.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.threshold = nn.Parameter(torch.full((channels,), SPARSE_THRESHOLD_INIT))

    def forward(self, x: torch.Tensor, mode: str = "fixed") -> torch.Tensor:
        return soft_threshold(x, self.threshold.abs()[:, None])


class BiasFreeNorm(nn.Module):
    """``norm="bias_free"``: γ·x / sqrt(var + eps), batch norm without centring or shift.

    As in bias-free networks, no additive constant: with bias-free convolutions the network is
    homogeneous. Statistics as :class:`SignalBatchNorm1d`'s: the batch's (or each signal's, with
    ``use_signal_stats``) in training; the running variance (``fixed``) or the signal's own
    (``unfixed``) at inference. The variance is about the mean; only the output is not centred.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.eps = BN_EPS
        self.momentum: float | None = 0.1  # None: a cumulative average, as nn.BatchNorm1d
        self.use_signal_stats = False
        self.last_abs_mean: torch.Tensor | None = None
        self.weight = nn.Parameter(torch.ones(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor, mode: str = "fixed") -> torch.Tensor:  # (N, C, L)
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        if self.training:
            self._track(x32)
            var = x32.var(dim=2 if self.use_signal_stats else (0, 2), unbiased=False, keepdim=True)
        elif mode == "unfixed":
            var = x32.var(dim=2, unbiased=False, keepdim=True)
        else:
            var = self.running_var[:, None]
        return (x32 * (self.weight[:, None] * torch.rsqrt(var + self.eps))).to(x.dtype)

    @torch.no_grad()
    def _track(self, x: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        var = x.var(dim=(0, 2), unbiased=x.shape[0] * x.shape[2] > 1)
        self.running_var.mul_(1 - m).add_(m * var)


class FilterResponseNorm(nn.Module):
    """``norm="frn"``: γ·x / sqrt(mean_l x² + eps) + β per signal and channel, then max(·, τ) (a TLU).

    Filter response normalisation with its thresholded linear unit, which replaces the ReLU;
    no batch statistics at all.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.tau = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, mode: str = "fixed") -> torch.Tensor:
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        z = x32 * torch.rsqrt(x32.square().mean(dim=2, keepdim=True) + FRN_EPS)
        return torch.maximum(z * self.weight[:, None] + self.bias[:, None], self.tau[:, None]).to(x.dtype)


# The modules that keep running statistics (train.py re-estimates them; per-signal training statistics switch them).
RUNNING_STAT_MODULES = (SignalBatchNorm1d, BiasFreeNorm)


def make_norm(channels: int, norm: str) -> nn.Module:
    """The normalisation step of ``norm`` (``icnn.spec.NORMS``) for ``channels`` channels."""
    per_norm = {"none": NoNorm, "shrink": Shrink, "sigma_shrink": SigmaShrink, "bias_free": BiasFreeNorm,
                "frn": FilterResponseNorm}
    if norm in per_norm:
        return per_norm[norm]() if norm == "none" else per_norm[norm](channels)
    return SignalBatchNorm1d(channels, sparse=norm == "sparse_bn")


def make_activation(norm: str) -> nn.Module:
    """The ReLU after a normalisation step; nothing where the step is itself the nonlinearity."""
    return nn.Identity() if norm in ACTIVATING_NORMS else nn.ReLU(inplace=True)


class DoubleConv(nn.Module):
    """(conv → norm → ReLU) × 2 (no ReLU after a norm that is itself the nonlinearity). The first kernel can be
    scaled per signal."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None, norm: str = "bn"):
        super().__init__()
        mid = mid_channels or out_channels
        pad = KERNEL_SIZE // 2
        bias = norm not in BIAS_FREE_NORMS
        self.double_conv = nn.Sequential(  # a Sequential for the original repository's state-dict keys
            nn.Conv1d(in_channels, mid, kernel_size=KERNEL_SIZE, padding=pad, bias=bias),
            make_norm(mid, norm),
            make_activation(norm),
            nn.Conv1d(mid, out_channels, kernel_size=KERNEL_SIZE, padding=pad, bias=bias),
            make_norm(out_channels, norm),
            make_activation(norm),
        )

    def forward(self, x: torch.Tensor, bn_mode: str = "fixed", kernel_scale: torch.Tensor | None = None) -> torch.Tensor:
        conv1, bn1, relu1, conv2, bn2, relu2 = self.double_conv
        if kernel_scale is None:
            x = conv1(x)
        else:
            x = modulated_conv1d(x, conv1.weight, conv1.bias, kernel_scale)
        x = relu1(bn1(x, bn_mode))
        return relu2(bn2(conv2(x), bn_mode))


def modulated_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """Conv1d (padding K // 2) with a per-signal kernel ``weight · scale[n]``; ``bias`` None for none.

    x: (N, C_in, L); weight: (C_out, C_in, K); scale: (N, C_out, K), broadcast over C_in. Since
    Σ_c (w[o,c,k]·s[n,o,k])·x = s[n,o,k]·Σ_c w[o,c,k]·x, signal n's output is Σ_k scale[n, :, k] · (tap k of
    ``weight`` on x shifted by k − K // 2): K shared one-tap convolutions, no per-signal kernel. Forming the
    (N, C_out, C_in, K) kernels for one grouped convolution cost 7 × the time in training, forward and backward
    (ckpt_universal's bottleneck, 32 windows); and an exporter sees no group count that depends on the batch.
    """
    length = x.shape[2]
    k = weight.shape[2]
    padded = F.pad(x, [k // 2, k // 2])
    y = None
    for i in range(k):
        term = F.conv1d(padded[:, :, i : i + length], weight[:, :, i : i + 1]) * scale[:, :, i : i + 1]
        y = term if y is None else y + term
    return y if bias is None else y + bias[None, :, None]


class Down(nn.Module):
    """Max-pool by 2, then DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "bn"):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool1d(2), DoubleConv(in_channels, out_channels, norm=norm))

    def forward(self, x: torch.Tensor, bn_mode: str = "fixed", kernel_scale: torch.Tensor | None = None) -> torch.Tensor:
        pool, conv = self.maxpool_conv
        return conv(pool(x), bn_mode, kernel_scale)


class Up(nn.Module):
    """Linear upsampling ×2 (align_corners), pad to the skip's length, concat [skip, up], DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "bn"):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="linear", align_corners=True)
        self.conv = DoubleConv(in_channels, out_channels, in_channels // 2, norm=norm)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, bn_mode: str = "fixed") -> torch.Tensor:
        x1 = self.up(x1)
        x1, x2 = pad_to_match(x1, x2)
        return self.conv(torch.cat([x2, x1], dim=1), bn_mode)


def pad_to_match(x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad the shorter of the two along length: left diff//2, right the rest.

    Branch-free (the longer one gets a zero pad, a copy), so an exporter can keep the
    length symbolic instead of fixing which side is shorter.
    """
    diff = x2.shape[2] - x1.shape[2]
    grow1, grow2 = torch.sym_max(diff, 0), torch.sym_max(-diff, 0)
    x1 = F.pad(x1, [grow1 // 2, grow1 - grow1 // 2])
    x2 = F.pad(x2, [grow2 // 2, grow2 - grow2 // 2])
    return x1, x2


class OutConv(nn.Module):
    """1×1 convolution to the output channels."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class WienerNet(nn.Module):
    """Prior branch: encodes h and pools it to one factor per (channel, tap) of the bottleneck's first kernel."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        config = config or ModelConfig()
        norm = config.norm
        parts = prior_encoder_parts(config)
        self.part_names = tuple(name for name, _, _ in parts)  # inc, down1..down{depth−1}, in forward order
        (_, a, b), *downs = parts
        self.inc = DoubleConv(a, b, norm=norm)
        for name, cin, cout in downs:
            setattr(self, name, Down(cin, cout, norm))
        self.beta = nn.Parameter(torch.full((1,), PRIOR_BETA_INIT))

    def forward(self, h: torch.Tensor, bn_mode: str = "fixed") -> torch.Tensor:  # (N, 1, L) -> (N, c_{depth−1}, 3)
        p = h
        for name in self.part_names:
            p = getattr(self, name)(p, bn_mode)
        # At L = 100, depth 4 this is the original repository's max-pool 4 (12 -> 3); else it pools adaptively.
        pooled = adaptive_max_pool1d(p, PRIOR_TAPS)
        return 1.0 + self.beta * pooled


def adaptive_max_pool1d(x: torch.Tensor, output_size: int) -> torch.Tensor:
    """``F.adaptive_max_pool1d`` written as its explicit bins, bit for bit.

    Bin i covers ``[floor(i·L/out), ceil((i+1)·L/out))`` of the length axis L. Written
    out so that an exporter keeps L symbolic (ONNX's adaptive pooling fixes it).
    """
    length = x.shape[2]
    # Non-negative operands only: ONNX's integer division truncates, Python's floors.
    bins = [x[:, :, (i * length) // output_size : ((i + 1) * length + output_size - 1) // output_size].max(dim=2, keepdim=True).values
            for i in range(output_size)]
    return torch.cat(bins, dim=2)


class ICNN_s(nn.Module):
    """The original repository's ICNN_s, of the config's width and depth. Input and output (N, 1, L),
    L ≥ ``icnn.spec.min_length(config)`` (2^depth: 16 for the original).

    Inference is stateless: the BN mode is an argument of :meth:`forward`
    (default: the config's ``bn_mode``).
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        norm = self.config.norm
        (_, a, b), *downs = encoder_parts(self.config)
        self.inc = DoubleConv(a, b, norm=norm)
        for name, cin, cout in downs:
            setattr(self, name, Down(cin, cout, norm))
        for name, cin, cout in decoder_parts(self.config):
            setattr(self, name, Up(cin, cout, norm))
        self.outc = OutConv(*outc_part(self.config)[1:], bias=norm not in BIAS_FREE_NORMS)
        self.wienernet = WienerNet(self.config) if self.config.prior else None

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, bn_mode: str | None = None) -> torch.Tensor:
        """Denoise (N, 1, L) signals; ``h`` is the Wiener prior (computed when None),
        ``bn_mode`` "fixed" or "unfixed" (None: the config's mode; ignored in training)."""
        mode = check_bn_mode(bn_mode or self.config.bn_mode)
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"expected input of shape (N, 1, L), got {tuple(x.shape)}")
        if x.shape[2] < min_length(self.config):
            raise ValueError(f"signals must have length >= {min_length(self.config)} "
                             f"(2^depth, depth {self.config.depth}), got {x.shape[2]}")
        # in training the passes go through as one batch (faster on a few signals); in inference one by one,
        # as every backend computes them
        batched = self.training and self.signals_independent
        return symmetric_part(self.config, lambda xs, hs: self._whole(xs, hs, mode), x, h, batched)

    @property
    def signals_independent(self) -> bool:
        """Whether a signal's output never depends on its batch-mates, in training too (no batch statistics):
        then signals may share one call in any grouping."""
        return self.config.norm not in RUNNING_STAT_NORMS

    def _whole(self, x: torch.Tensor, h: torch.Tensor | None, mode: str) -> torch.Tensor:
        """The model w before :func:`icnn.spec.symmetric_part`: the network, or its baseline and scale normalisation."""
        offset_free = self.config.baseline == "median"
        if not (self.config.equivariant or offset_free):
            return self.unet(x, h, mode)
        m = baseline(x) if offset_free else None
        if offset_free:
            x = x - m
        # h needs no rescaling: the Wiener filter is homogeneous, so h(a·y) = h(y); from y − m, as self.prior computes it.
        if h is None and self.wienernet is not None:
            h = wiener_prior(x)
        if self.config.equivariant:
            s = noise_scale(x)
            out = s * self.unet(x / torch.where(s > 0, s, torch.ones_like(s)), h, mode)
            if not self.training:  # in training every sample's error must reach the loss, however large
                out = trust_region(x, out, s)
        else:
            out = self.unet(x, h, mode)
        return out + m if offset_free else out

    def prior(self, x: torch.Tensor) -> torch.Tensor | None:
        """The Wiener prior h that :meth:`forward` computes for (N, 1, L) signals x (None without the branch):
        of x itself, or of x − m(x) for an offset-free model."""
        return model_prior(x, self.config)

    def unet(self, x: torch.Tensor, h: torch.Tensor | None, mode: str) -> torch.Tensor:
        """The network g on (N, 1, L) signals, without the scale normalisation of an equivariant model."""
        kernel_scale = None
        if self.wienernet is not None:
            if h is None:
                h = wiener_prior(x)
            kernel_scale = self.wienernet(h, mode)  # (N, c_{depth−1}, 3)
        bottleneck = modulated_part(self.config)
        encoded = {}
        # inc gives (N, c_0, L), each down_k halves L to (N, c_k, L / 2^k); the bottleneck keeps c_{depth−1}
        for name, _, _ in encoder_parts(self.config):
            x = encoded[name] = getattr(self, name)(x, mode, kernel_scale if name == bottleneck else None)
        # each up_k doubles L back, joined with its mirror level's output; the last gives (N, c_0, L)
        for name, skip in skip_parts(self.config):
            x = getattr(self, name)(x, encoded[skip], mode)
        return self.outc(x)  # (N, 1, L)

    def batch_norms(self) -> list[nn.Module]:
        """The normalisation steps with running statistics (:data:`RUNNING_STAT_MODULES`)."""
        return [m for m in self.modules() if isinstance(m, RUNNING_STAT_MODULES)]

    def set_signal_stats(self, on: bool) -> None:
        """Training statistics for every BN: per signal (True) or per batch (False)."""
        for bn in self.batch_norms():
            bn.use_signal_stats = on

    def sparsity_penalty(self) -> torch.Tensor:
        """Sum over sparse BNs of mean |normalised activation| from the last training forward."""
        terms = [bn.last_abs_mean for bn in self.batch_norms() if bn.last_abs_mean is not None]
        return torch.stack(terms).sum() if terms else torch.zeros(())


def noise_scale(x: torch.Tensor) -> torch.Tensor:
    """s(y) of (N, 1, L) signals as (N, 1, 1): median |Δy| / SCALE_MAD, else the RMS (``icnn.spec``).

    The RMS is taken of y / max|y|: a sparse float32 record at 3e20 has an RMS that float32 holds, but not its
    squares (``icnn.equivariance.noise_scale`` is the NumPy twin).
    """
    diffs = (x[..., 1:] - x[..., :-1]).abs()
    # The lower median as the last of the k + 1 smallest: topk exports to ONNX, kthvalue does not.
    median = torch.topk(diffs, (x.shape[-1] - 2) // 2 + 1, dim=-1, largest=False).values[..., -1:] / SCALE_MAD
    peak = x.detach().abs().amax(dim=-1, keepdim=True)  # a constant factor: the RMS's gradient is unchanged
    unit = torch.where(peak > 0, peak, torch.ones_like(peak))
    rms = unit * torch.linalg.vector_norm(x / unit, dim=-1, keepdim=True) / x.shape[-1] ** 0.5
    return torch.where(median > 0, median, rms)


def trust_region(x: torch.Tensor, out: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``out``, except where it moves x by more than ``icnn.spec.TRUST_REGION``·s: there x itself."""
    return torch.where((out - x).abs() > TRUST_REGION * s, x, out)


def baseline(x: torch.Tensor) -> torch.Tensor:
    """m(y) of (N, 1, L) signals as (N, 1, 1): the lower median, sorted index (L − 1) // 2 (``icnn.spec.BASELINES``)."""
    # the last of the k + 1 smallest: topk exports to ONNX, kthvalue does not
    return torch.topk(x, baseline_index(x.shape[-1]) + 1, dim=-1, largest=False).values[..., -1:]


def model_prior(x: torch.Tensor, config: ModelConfig) -> torch.Tensor | None:
    """The Wiener prior h a model of ``config`` computes for (N, 1, L) signals x: None without the prior
    branch; of x − m(x) for an offset-free model; else of x."""
    if not config.prior:
        return None
    return wiener_prior(x - baseline(x) if config.baseline == "median" else x)


def wiener_prior(x: torch.Tensor) -> torch.Tensor:
    """h of each signal (``deepdenoise1d.classical.wiener_inverse_response``), as a tensor like x."""
    h = wiener_inverse_response(x.detach().squeeze(1).double().cpu().numpy())
    return torch.from_numpy(h.astype(np.float32))[:, None, :].to(x.device, x.dtype)

"""Every architecture fact of ICNN_s, once, for PyTorch, NumPy and the weights format.

Modelled on nanoGPT's ``GPTConfig``: one dataclass (:class:`ModelConfig`) that is
saved in every checkpoint and ``.h5`` file and read back by both sides. This module
imports neither torch nor NumPy model code, so ``Numpy_V2`` and ``pth2h5.py`` can
share it.

State-dict layout: a ``DoubleConv`` at prefix ``p`` holds
``p.double_conv.{0,3}.{weight,bias}`` (convolutions) and
``p.double_conv.{1,4}.{weight,bias,running_mean,running_var[,threshold],num_batches_tracked}``
(batch norms); a ``Down`` keeps its ``DoubleConv`` at ``name.maxpool_conv.1``, an ``Up``
at ``name.conv``; ``outc.conv`` is a 1×1 convolution; ``wienernet.beta`` scales the prior.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Mapping

from deepdenoise1d.errors import InputError

TRAIN_LENGTH = 100  # signal length every shipped model was trained on; the default for files that do not record it
PRIOR_TAPS = 3  # one prior factor per tap of the bottleneck's first kernel
KERNEL_SIZE = 3  # every DoubleConv convolution, padding KERNEL_SIZE // 2
BN_MODES = ("fixed", "unfixed")  # inference statistics: running, or each signal's own
BN_TRAIN_STATS = ("batch", "signal", "mixed")  # training statistics
# The normalisation step after each convolution (--norm). "bn": batch norm; "sparse_bn": BN then a learnable
# soft threshold; "none": nothing (conv → ReLU). The alternatives to batch norm, each per signal (no batch
# statistics at inference) unless it says so:
# "shrink": a soft threshold τ_c = sigmoid(α_c)·mean|x_c| set from each signal's own features (deep residual
#   shrinkage networks), two-sided, in place of the ReLU;
# "sigma_shrink": a soft threshold τ_c = |λ_c|·σ̂ that follows the noise level (learned ISTA, CDLNet), two-sided,
#   in place of the ReLU; σ̂ is s(y) of an equivariant model, so τ_c = |λ_c| in the network's own units;
# "bias_free": no additive constant anywhere (bias-free networks): BN without centring or shift, γ·x/sqrt(var + eps),
#   and convolutions without biases, so the network itself is homogeneous;
# "frn": filter response normalisation γ·x/sqrt(mean x² + eps) + β per signal and channel, then a thresholded
#   linear unit max(·, τ) in place of the ReLU.
NORMS = ("bn", "sparse_bn", "none", "shrink", "sigma_shrink", "bias_free", "frn")
# Which tensors each norm stores per normalisation step (double_conv.1 and .4), in torch's state-dict order.
NORM_TENSORS = {
    "bn": ("weight", "bias", "running_mean", "running_var"),
    "sparse_bn": ("weight", "bias", "threshold", "running_mean", "running_var"),
    "none": (),
    "shrink": ("alpha",),
    "sigma_shrink": ("threshold",),
    "bias_free": ("weight", "running_var"),
    "frn": ("weight", "bias", "tau"),
}
RUNNING_STAT_NORMS = ("bn", "sparse_bn", "bias_free")  # the norms with a fixed and an unfixed inference mode
ACTIVATING_NORMS = ("shrink", "sigma_shrink", "frn")  # their step is the nonlinearity: no ReLU follows it
BIAS_FREE_NORMS = ("bias_free",)  # convolutions without biases
FRN_EPS = 1e-6  # added to the mean square of filter response normalisation
SHRINK_ALPHA_INIT = -2.0  # sigmoid(−2) = 0.12: thresholds start at an eighth of each channel's mean magnitude
BN_EPS = 1e-5  # nn.BatchNorm1d's default
SPARSE_THRESHOLD_INIT = 0.01  # not 0: d|t|/dt is 0 there and the thresholds would never move
PRIOR_BETA_INIT = 0.1  # wienernet.beta at initialisation
CHUNK = 8192  # signals per inference chunk (bounds memory)
COUNTER_SUFFIX = "num_batches_tracked"  # BN step counters: in torch's state dict, not weights

# The U (``ModelConfig.width`` w, ``depth`` D): level i = 0..D − 1 has c_i = w·2^i channels. The encoder is
# inc (1 → c_0) then down1..down{D}, each a max-pool by 2 and a DoubleConv: down_k maps c_{k−1} → c_k, but the
# bottleneck down{D} keeps c_{D−1}. The decoder up1..up{D} joins the previous output with the skip of the mirror
# level D − k (in = 2·c_{D−k}; an Up's DoubleConv has mid = in // 2, every other mid = out) and gives
# c_{D−k−1} channels, the last one c_0. outc maps c_0 → 1. The prior branch encodes h with inc and
# down1..down{D−1} and scales the bottleneck's first kernel per signal, (N, c_{D−1}, PRIOR_TAPS).
# Width 2, depth 4 is the original repository's ICNN_s (the constants ENCODER, DECODER, ... below).
PRIOR_PREFIX = "wienernet"
MAX_WIDTH = 256  # channels of the first level
MAX_DEPTH = 8  # down-sampling levels

# Scale-equivariant models denoise f(y) = s(y) · g(y / s(y)), so f(a·y) = a·f(y) for every a > 0.
# s(y) is the noise level read from the first differences, median |Δy| / SCALE_MAD (the lower median
# of the L − 1 differences, k = (L − 2) // 2 counting from 0): homogeneous of degree 1, blind to an
# offset, and σ for white noise. When over half the differences are 0 it is the RMS of y instead; a
# signal of zeros gives zeros.
SCALE_MAD = 0.6744897501960817 * math.sqrt(2)  # median |Δn| of white noise n of unit σ

# A trust region on an equivariant model's output at inference: a sample the network would move by more than
# TRUST_REGION·s(y) keeps its noisy value. Noise moves a sample by more than 6σ once in 5·10⁸ draws, so a denoiser's correction is
# that large only where its input lies far outside what it was trained on (a jump of 10⁶ σ): there the noisy
# sample is the safer estimate. On every field and outside record measured it changed nothing else.
TRUST_REGION = 6.0

# What a model does with each signal's baseline. "median": it takes off m(y), the lower median of the
# signal (sorted index (L − 1) // 2, one sample, so the Jacobian stays exact), before the scale
# normalisation (s and the Wiener prior are computed from y − m) and adds it back, so
# f(a·y + c) = a·f(y) + c for a > 0 and any constant c: an offset of the record never reaches the network.
BASELINES = ("none", "median")


def baseline_index(length: int) -> int:
    """Sorted index of the lower median of ``length`` samples: the baseline m(y) of an offset-free model."""
    return (length - 1) // 2


def baseline(x):
    """m(y) of NumPy signals (last axis), that axis kept as 1, in x's dtype (``Pytorch_V1.model.baseline`` for tensors).

    Shared by the NumPy model and the PyTorch inference path, which takes the baseline off in the input's
    precision before the float32 network.
    """
    import numpy as np  # the spec's only NumPy: importing the spec stays light

    k = baseline_index(x.shape[-1])
    return np.partition(x, k, axis=-1)[..., k : k + 1]


MAX_WEIGHT_VALUES = 1_000_000  # the original ICNN_s has about 8k; bounds a config and what a reader allocates


@dataclass
class ModelConfig:
    """Architecture switches, saved (as plain JSON types) in every checkpoint and .h5 file.

    ``sigma_range`` is the [low, high] noise level the model was trained on (low == high
    for one σ; a single number s is stored as [s, s]), used for the out-of-range
    warning; None when unknown. Files written
    before it existed lack it: :meth:`from_dict` then fills it from the recorded
    training sigma when the caller passes one (``train_sigma``), else leaves None.
    ``train_length`` is the length of the training signals (:data:`TRAIN_LENGTH` when a
    file does not record it); longer inputs are denoised in overlapping windows of it.
    ``input_scale`` s (1.0 when a file does not record it): the model was trained on data
    divided by s, so both backends denoise y as s · net(y / s) (at 1.0 they skip the arithmetic).
    ``equivariant`` (False when a file does not record it): the network normalises each signal
    by its own noise scale (:data:`SCALE_MAD`), so its output scales with its input in any units.
    ``baseline`` ("none" when a file does not record it): "median" makes the model offset-free
    (:data:`BASELINES`). ``width`` and ``depth`` (2 and 4, the original's, when a file does not
    record them) set the capacity: level i has width·2^i channels (:func:`encoder_parts`), and
    configs of more than :data:`MAX_WEIGHT_VALUES` weights are refused. ``odd`` (False when a file does not
    record it): the model is (w(y) − w(−y)) / 2 of the model w the other fields describe, so f(−y) = −f(y)
    (:func:`symmetric_part`).
    """

    prior: bool = True  # the Wiener prior branch
    norm: str = "bn"  # one of NORMS
    bn_mode: str = "fixed"  # inference default, one of BN_MODES
    sigma_range: list[float] | None = None
    train_length: int = TRAIN_LENGTH  # samples per training signal: longer inputs are denoised in windows of it
    input_scale: float = 1.0  # the net saw y / input_scale in training: denoise as input_scale · net(y / input_scale)
    equivariant: bool = False  # forward is s(y) · g(y / s(y)): f(a·y) = a·f(y) for a > 0
    baseline: str = "none"  # one of BASELINES; "median": f(y + c) = f(y) + c
    width: int = 2  # channels of the first level (1..MAX_WIDTH)
    depth: int = 4  # down-sampling levels (1..MAX_DEPTH): signals of at least 2^depth samples
    odd: bool = False  # f(y) = (w(y) − w(−y)) / 2: sign-symmetric, f(−y) = −f(y)
    reversal: bool = False  # f(y) = (w(y) + R·w(R·y)) / 2, R reversing time: f(R·y) = R·f(y)

    def __post_init__(self):
        self.validate("config")

    def validate(self, source: str) -> None:
        """Raise :class:`InputError` naming the first field of the wrong type or value."""
        for name in ("prior", "equivariant", "odd", "reversal"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{source}: model config field {name!r} must be true or false, "
                                 f"got {str(getattr(self, name))[:40]}")
        if self.norm not in NORMS or not isinstance(self.norm, str):
            raise InputError(f"{source}: model config field 'norm' must be one of {NORMS}, got {self.norm!r}")
        if self.norm == "sigma_shrink" and self.equivariant is not True:
            raise InputError(f"{source}: norm 'sigma_shrink' needs an equivariant model (its thresholds are in units of "
                             "the signal's noise scale)")
        if not isinstance(self.baseline, str) or self.baseline not in BASELINES:
            raise InputError(f"{source}: model config field 'baseline' must be one of {BASELINES}, "
                             f"got {str(self.baseline)[:40]!r}")
        if self.bn_mode not in BN_MODES or not isinstance(self.bn_mode, str):
            raise InputError(f"{source}: model config field 'bn_mode' must be one of {BN_MODES}, got {self.bn_mode!r}")
        if self.sigma_range is not None:
            self.sigma_range = check_sigma_range(self.sigma_range, source)
        self._validate_capacity(source)
        length = self.train_length
        if isinstance(length, bool) or not isinstance(length, int) or length < min_length(self):
            raise InputError(f"{source}: model config field 'train_length' must be an integer >= {min_length(self)}, "
                             f"got {str(length)[:40]}")
        scale = self.input_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise InputError(f"{source}: model config field 'input_scale' must be a positive finite number, "
                             f"got {str(scale)[:40]}")
        self.input_scale = float(scale)

    def _validate_capacity(self, source: str) -> None:
        """``width`` and ``depth`` integers in range, and not more weights than :data:`MAX_WEIGHT_VALUES`."""
        for name, top in (("width", MAX_WIDTH), ("depth", MAX_DEPTH)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise InputError(f"{source}: model config field {name!r} must be an integer from 1 to {top}, "
                                 f"got {str(value)[:40]}")
        count = weight_count(self)
        if count > MAX_WEIGHT_VALUES:
            raise InputError(f"{source}: model config fields 'width' {self.width} and 'depth' {self.depth} give "
                             f"{count} weights, more than {MAX_WEIGHT_VALUES}")

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("odd", "reversal"):  # written only when set: every other model's files and configs stay as they were
            if not d[name]:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config", train_sigma=None) -> "ModelConfig":
        """Build from a recorded dict, type-checking every field; unknown keys are ignored.

        Parameters
        ----------
        d : dict
            The recorded model config.
        source : str
            Named in error messages (the file).
        train_sigma : optional
            The run's recorded training sigma (a number or [low, high]); fills
            ``sigma_range`` when ``d`` has no such key. Anything else leaves it None.

        Raises
        ------
        InputError
            ``d`` is not a dict, or a field has the wrong type or value.
        """
        if not isinstance(d, dict):
            raise InputError(f"{source}: model config must be a dict, got {type(d).__name__}")
        known = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        if "sigma_range" not in known:  # a file from before the field; a recorded None (a blind model's) stands
            known["sigma_range"] = sigma_range_of(train_sigma)
        config = cls.__new__(cls)
        for f in fields(cls):
            setattr(config, f.name, known.get(f.name, f.default))
        config.validate(source)
        return config


def check_sigma_range(value, source: str) -> list[float]:
    """[low, high] with 0 < low <= high, both finite numbers (not bools); one number s means [s, s]."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value, value]
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not 0 < value[0] <= value[1]:
        raise InputError(f"{source}: model config field 'sigma_range' must be [low, high] with 0 < low <= high, "
                         f"got {str(value)[:80]}")
    return [float(value[0]), float(value[1])]


def sigma_range_of(train_sigma) -> list[float] | None:
    """A recorded training sigma (number or [low, high]) as [low, high]; None when it is anything else."""
    try:
        return check_sigma_range(train_sigma, "")
    except InputError:
        return None


def inference_modes(config: ModelConfig) -> tuple[str, ...]:
    """The BN modes that differ for a model of ``config``: both for a norm with running statistics; "fixed"
    alone for the others, which have no statistics to choose."""
    return BN_MODES if config.norm in RUNNING_STAT_NORMS else BN_MODES[:1]


def check_bn_mode(mode) -> str:
    """``mode`` when it is one of :data:`BN_MODES`, else :class:`InputError`."""
    if not isinstance(mode, str) or mode not in BN_MODES:
        raise InputError(f"bn mode must be one of {BN_MODES}, got {mode!r}")
    return mode


def config_from_keys(state: Iterable[str] | Mapping) -> ModelConfig:
    """The architecture of a config-less (original repository's) file, read from its state dict.

    Parameters
    ----------
    state : iterable of str, or Mapping
        The state-dict keys; a mapping of keys to tensors or HDF5 datasets also gives ``width``
        (from the shape of inc's first kernel). ``depth`` is the number of decoder parts (``up1``, ``up2``, ...).
        What cannot be read keeps the default (the original's width 2, depth 4); :func:`check_weights`
        then names any tensor that does not fit.
    """
    keys = {str(k) for k in state}
    depth = 0
    while f"up{depth + 1}.conv.double_conv.0.weight" in keys:
        depth += 1
    depth = depth or ModelConfig.depth
    weight = state.get("inc.double_conv.0.weight") if isinstance(state, Mapping) else None
    shape = getattr(weight, "shape", ())
    # (width, 1, K) in a state dict, flat in an HDF5 file; inc reads one channel
    width = int(shape[0]) if len(shape) == 3 else _size(shape) // KERNEL_SIZE if len(shape) == 1 else ModelConfig.width
    norm = norm_from_keys(keys)
    return ModelConfig(
        prior=f"{PRIOR_PREFIX}.beta" in keys,
        norm=norm,
        equivariant=norm == "sigma_shrink",  # the only way that norm is built
        train_length=max(TRAIN_LENGTH, 2**depth),  # not recorded: the shipped length, or the shortest the depth takes
        width=width,
        depth=depth,
    )


def norm_from_keys(keys: set[str]) -> str:
    """The norm whose tensors a state dict's first normalisation step (inc's ``double_conv.1``) holds."""
    step = {k.rsplit(".", 1)[-1] for k in keys if k.startswith("inc.double_conv.1.")} - {COUNTER_SUFFIX}
    for norm, names in NORM_TENSORS.items():
        if step == set(names) and (names or "inc.double_conv.0.weight" in keys):
            return norm
    return "bn"


def level_channels(config: ModelConfig) -> tuple[int, ...]:
    """c_0..c_{depth−1}: width·2^i channels at level i."""
    return tuple(config.width * 2**level for level in range(config.depth))


def encoder_parts(config: ModelConfig) -> tuple[tuple[str, int, int], ...]:
    """(name, in, out) channels of inc, down1..down{depth}; the last, the bottleneck, keeps its width."""
    channels = level_channels(config)
    downs = tuple((f"down{k}", channels[k - 1], channels[k]) for k in range(1, config.depth))
    return (("inc", 1, channels[0]), *downs, (f"down{config.depth}", channels[-1], channels[-1]))


def decoder_parts(config: ModelConfig) -> tuple[tuple[str, int, int], ...]:
    """(name, in, out) channels of up1..up{depth}: up_k reads [skip, up] of the mirror level depth − k."""
    channels = level_channels(config)
    depth = config.depth
    return tuple((f"up{k}", 2 * channels[depth - k], channels[max(depth - k - 1, 0)]) for k in range(1, depth + 1))


def outc_part(config: ModelConfig) -> tuple[str, int, int]:
    """(name, in, out) channels of the 1×1 output convolution."""
    return ("outc", config.width, 1)


def prior_encoder_parts(config: ModelConfig) -> tuple[tuple[str, int, int], ...]:
    """(name, in, out) channels of the prior branch's encoder: the network's without the bottleneck."""
    return encoder_parts(config)[:-1]


def skip_parts(config: ModelConfig) -> tuple[tuple[str, str], ...]:
    """(decoder part, encoder part whose output it takes as its skip), in forward order: the U's mirror levels."""
    levels = [name for name, _, _ in encoder_parts(config)[:-1]]
    return tuple(zip((name for name, _, _ in decoder_parts(config)), reversed(levels)))


def modulated_part(config: ModelConfig) -> str:
    """The bottleneck: its first kernel is scaled per signal by the prior, (N, c_{depth−1}, PRIOR_TAPS)."""
    return encoder_parts(config)[-1][0]


def min_length(config: ModelConfig) -> int:
    """The shortest signal a model of ``config`` takes: ``depth`` halvings must leave at least one sample."""
    return 2**config.depth


def weight_count(config: ModelConfig) -> int:
    """Values in the weights of ``config`` (every tensor :func:`expected_shapes` lists)."""
    return sum(_size(shape) for shape in expected_shapes(config).values())


def double_conv_shapes(prefix: str, in_ch: int, out_ch: int, mid_ch: int, norm: str) -> dict[str, tuple]:
    """Keys and shapes of one DoubleConv (without the BN step counters)."""
    bn_names = NORM_TENSORS[norm]
    shapes: dict[str, tuple] = {}
    for conv, bn, c_in, c_out in ((0, 1, in_ch, mid_ch), (3, 4, mid_ch, out_ch)):  # torch's state-dict order
        shapes[f"{prefix}.double_conv.{conv}.weight"] = (c_out, c_in, KERNEL_SIZE)
        if norm not in BIAS_FREE_NORMS:
            shapes[f"{prefix}.double_conv.{conv}.bias"] = (c_out,)
        shapes.update({f"{prefix}.double_conv.{bn}.{name}": (c_out,) for name in bn_names})
    return shapes


def part_prefix(name: str) -> str:
    """Where a part's DoubleConv sits in the state dict."""
    if name == "inc" or name.endswith(".inc"):
        return name
    return f"{name}.conv" if name.split(".")[-1].startswith("up") else f"{name}.maxpool_conv.1"


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight key the forward reads for ``config``, with its shape, in state-dict order.

    The BN step counters (``num_batches_tracked``) are not among them.
    """
    norm = config.norm
    shapes: dict[str, tuple[int, ...]] = {}
    for name, in_ch, out_ch in encoder_parts(config):
        shapes.update(double_conv_shapes(part_prefix(name), in_ch, out_ch, out_ch, norm))
    for name, in_ch, out_ch in decoder_parts(config):
        shapes.update(double_conv_shapes(part_prefix(name), in_ch, out_ch, in_ch // 2, norm))
    name, in_ch, out_ch = outc_part(config)
    shapes[f"{name}.conv.weight"] = (out_ch, in_ch, 1)
    if norm not in BIAS_FREE_NORMS:
        shapes[f"{name}.conv.bias"] = (out_ch,)
    if config.prior:
        shapes[f"{PRIOR_PREFIX}.beta"] = (1,)  # a module's own parameters precede its children's
        for name, in_ch, out_ch in prior_encoder_parts(config):
            shapes.update(double_conv_shapes(part_prefix(f"{PRIOR_PREFIX}.{name}"), in_ch, out_ch, out_ch, norm))
    return shapes


def _size(shape: tuple) -> int:
    return math.prod(int(d) for d in shape)


def check_weight_values(tensors: dict, source: str) -> None:
    """Raise :class:`InputError` for values no trained network holds: a negative BN ``running_var``.

    BN divides by sqrt(running_var + eps); a negative variance gives NaN inside the network,
    which would otherwise surface as an input error. ``tensors`` maps keys to NumPy arrays or
    torch tensors (anything with ``.min()``), already checked finite; the message blames the file.
    """
    for key, value in tensors.items():
        if isinstance(key, str) and key.endswith(".running_var") and float(value.min()) < 0:
            raise InputError(f"{source}: tensor {key!r} holds a negative variance ({float(value.min()):.4g}); "
                             "the weights file is corrupt (a batch-norm running_var is never below 0)")


def check_weights(shapes: dict[str, tuple], config: ModelConfig, source: str, flat_ok: bool = False) -> None:
    """Raise :class:`InputError` unless ``shapes`` are exactly the weights of ``config``.

    The one message for a wrong state dict, whether torch, NumPy or pth2h5 reads it:
    the first missing, unexpected or mis-shaped key, and how many there are.

    Parameters
    ----------
    shapes : dict[str, tuple]
        Stored key -> shape. BN step counters (``…num_batches_tracked``) are allowed
        as scalars or 1-element arrays, never required.
    config : ModelConfig
        The architecture the weights should build.
    source : str
        Named in the message.
    flat_ok : bool
        Accept a flat (size,) array for any shape (the HDF5 format stores them flat).
    """
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in shapes]
    if missing:
        raise InputError(f"{source}: missing tensor {missing[0]!r} ({len(missing)} missing in all) "
                         f"for a model with prior={config.prior}, norm={config.norm!r}")
    unexpected = [k for k in shapes if k not in expected
                  and not (isinstance(k, str) and k.endswith(COUNTER_SUFFIX) and _size(shapes[k]) == 1)]
    if unexpected:
        raise InputError(f"{source}: unexpected tensor {str(unexpected[0])[:80]!r} ({len(unexpected)} unexpected in all) "
                         f"for a model with prior={config.prior}, norm={config.norm!r}")
    for key, want in expected.items():
        got = tuple(shapes[key])
        if got != want and not (flat_ok and got == (_size(want),)):
            raise InputError(f"{source}: tensor {key!r} has shape {got}, expected {want} ({_size(want)} values)")


# The original repository's ICNN_s (width 2, depth 4): its parts as ``(name, in, out)`` channels.
_ORIGINAL = ModelConfig()
ENCODER = encoder_parts(_ORIGINAL)  # inc 1→2, down1 2→4, down2 4→8, down3 8→16, down4 16→16
DECODER = decoder_parts(_ORIGINAL)  # up1 32→8, up2 16→4, up3 8→2, up4 4→2
OUTC = outc_part(_ORIGINAL)  # outc 2→1
PRIOR_ENCODER = prior_encoder_parts(_ORIGINAL)  # inc 1→2 .. down3 8→16
SKIPS = skip_parts(_ORIGINAL)  # up1←down3, up2←down2, up3←down1, up4←inc
MODULATED_PART = modulated_part(_ORIGINAL)  # down4, (N, 16, PRIOR_TAPS)
MIN_LENGTH = min_length(_ORIGINAL)  # 16


def symmetric_part(config: ModelConfig, forward, x, h=None, batched: bool = False):
    """``forward(x, h)`` made as symmetric as ``config`` says, with w = ``forward``: every backend's one rule.

    ``odd``: (w(x) − w(−x)) / 2. ``reversal``: (v(x) + R·v(R·x)) / 2 of that v, R reversing the last axis (time).
    ``h`` (the Wiener prior, or None) belongs to x; every other pass computes its own (None), as the model does.
    Works on NumPy arrays and torch tensors alike; an offset-free w keeps the result offset-free.
    ``batched`` (with h None): the passes go through w as one batch of 2 or 4 × N signals, then combine as above;
    only for a w whose output does not depend on its batch (no batch statistics). A training step on a few
    signals gains by it: one call on 4 × 8 windows cost 2.7 × one call on 8, not 4 ×."""
    passes = symmetry_passes(config)
    inputs = [symmetry_input(x, sign, flip) for sign, flip in passes]
    if batched and h is None and len(passes) > 1:
        out = forward(_concat(inputs), None)
        outputs = [out[i * x.shape[0] : (i + 1) * x.shape[0]] for i in range(len(passes))]
    else:
        outputs = [forward(xs, h if (sign, flip) == (1, False) else None) for (sign, flip), xs in zip(passes, inputs)]
    return symmetric_mean(config, {(sign, flip): out if sign == 1 else -out
                                   for (sign, flip), out in zip(passes, outputs)})


def symmetry_input(x, sign: int, flip: bool):
    """What pass (sign, flip) feeds w: sign·R^flip·x; ``x`` itself for the identity pass (no copy)."""
    x = reverse(x) if flip else x
    return x if sign == 1 else -x


def symmetric_mean(config: ModelConfig, pieces: dict, reverse_piece=None):
    """f from its passes' signed pieces, ``pieces[sign, flip]`` = sign·w(sign·R^flip·y), time not yet reversed back:
    the mean over the signs, then over reversal (``reverse_piece``, default :func:`reverse`, puts a piece back in
    time). The one combining rule: :func:`symmetric_part` and the exact Jacobian both use it."""
    reverse_piece = reverse if reverse_piece is None else reverse_piece
    v = {flip: (pieces[1, flip] + pieces[-1, flip]) / 2 if config.odd else pieces[1, flip] for _, flip in pieces}
    return (v[False] + reverse_piece(v[True])) / 2 if config.reversal else v[False]


def reverse(x):
    """``x`` with its last axis (time) reversed: a contiguous NumPy array, or a torch tensor."""
    if hasattr(x, "flip"):  # torch; a NumPy array has no flip method
        return x.flip(-1)
    import numpy as np

    return np.ascontiguousarray(x[..., ::-1])


def _concat(parts: list):
    """NumPy arrays or torch tensors joined along the first axis (signals)."""
    if hasattr(parts[0], "flip"):  # torch tensors: torch is imported already, by whoever made them
        import torch

        return torch.cat(parts)
    import numpy as np

    return np.concatenate(parts)


def symmetry_passes(config: ModelConfig) -> list[tuple[int, bool]]:
    """The (sign, reversed) passes of w that :func:`symmetric_part` averages: f(y) = mean of sign·R^r·w(sign·R^r·y)."""
    return [(sign, flip) for sign in ((1, -1) if config.odd else (1,)) for flip in ((False, True) if config.reversal
                                                                                   else (False,))]

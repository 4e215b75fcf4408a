"""Is a record inside what a model was trained on? One line when it is not.

:class:`SigmaRangeCheck` collects, chunk by chunk, each signal's σ estimate (or, for a scale-equivariant
model, its signal-to-noise), its peaks, degenerate signals and windows, and how far a network moved the
record, and says once what lies outside: :meth:`SigmaRangeCheck.notes` are the lines a front-end shows.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from deepdenoise1d import noise
from deepdenoise1d.methods import per_signal_sigma
from deepdenoise1d.synthesis import AMPLITUDE_RANGE, SpikePrior, clean_spikes

# Spread (sd of σ̂/σ) of one signal's σ estimate (the default, negative_rms) at length 100,
# measured on the benchmark prior at σ = 0.5..5 (0.107-0.114, scripts/compare_sigma_estimators.py);
# it shrinks as 1/sqrt(length).
SIGMA_SPREAD_AT_100 = 0.115
# A signal counts as outside when its estimate is beyond the range by more than this many
# spreads (×2.05 / ÷2.05 at length 100): far past what estimation error alone gives.
SIGMA_Z = 4.0
# The median estimate over a file is compared too (its spread falls as 1/sqrt(N)), with a floor:
# a median more than 10 % outside the range is a shift of the whole input, not chance.
SIGMA_POOLED_FLOOR = 0.10
# Individual flags warn only above this share of signals (and always for a single signal).
SIGMA_FLAG_SHARE = 1e-3
MAX_NAMED = 5  # signal indices a warning names
# Equivariant models: a signal counts as outside when its signal-to-noise is beyond the trained range by more
# than this factor (after estimation error): the prior's own signals already spread about ±40 % around it.
SNR_TOLERANCE = 2.0
# The median over a file is compared with what the training signals themselves read just outside the range
# (measured_snr_range): at low signal-to-noise σ̂ reads a few per cent low on dense spikes, which makes every
# measured signal-to-noise read high (0.46 at σ = 8, truly 0.35), so a comparison with the true range misses.
CALIBRATION_SIGNALS = 2000
CALIBRATION_SEED = 1
# A network that moves its input by more than this many σ̂ (RMS) removed signal, not only noise: a denoiser that
# keeps the signal moves it by at most about 1 σ̂ (the noise), with σ̂'s own error of 10-20 % on short signals.
RESIDUAL_LIMIT = 1.5
# Spike models: samples this many σ̂ below the baseline (Gaussian noise: 3e-5 of samples) ...
SWING_Z = 4.0
SWING_SHARE = 0.005  # ... in more than this share of samples: the record has swings the spike prior never had


@dataclass
class SigmaRangeCheck:
    """Collect per-signal σ estimates and say, once, whether they leave a model's range.

    Parameters
    ----------
    low, high : float
        The noise range the model was trained on (equal for one σ).
    equivariant : bool
        The model is scale-equivariant (f(a·y) = a·f(y)): the units of the input do not matter, so
        :meth:`warning` compares each signal's signal-to-noise (:func:`snr_range`) instead of σ̂.
    """

    low: float | None
    high: float | None
    estimates: list = field(default_factory=list)
    length: int = 100
    spike_used: int = 0  # signals whose σ came from the spike estimator (the rest: wavelet MAD or the periodogram)
    spectral_used: int = 0  # ... from the periodogram median (a narrowband signal at the finest scale)
    degenerate: list = field(default_factory=list)  # indices of signals with no noise to estimate
    degenerate_count: int = 0
    peaks: list = field(default_factory=list)  # per signal max|y| / σ̂ (8 bytes a signal)
    seen: int = 0
    scale: float = 1.0  # the model's input_scale s: its range is compared with σ̂ / s
    equivariant: bool = False  # compare signal-to-noise, not σ̂ (the model works in any units)
    snrs: list = field(default_factory=list)  # per signal sqrt(max(mean(y²) − σ̂², 0)) / σ̂, when equivariant
    offset_free: bool = False  # the model takes each signal's median off: levels and peaks count from it
    windows_seen: int = 0  # long signals: windows of the model's length checked, and how many were degenerate
    degenerate_windows: int = 0
    network: bool = True  # a network's output: the residual and the spike-shape warnings apply
    residual_sq: float = 0.0  # Σ (y − f(y))² / σ̂² over the signals (or windows) denoised, and their samples
    residual_samples: int = 0
    swings_below: int = 0  # samples more than SWING_Z σ̂ below the baseline (a spike prior has none), of all seen
    swing_samples: int = 0

    def add(self, sigma_hat: np.ndarray, length: int, noisy: np.ndarray | None = None, centred: bool = False) -> None:
        """Record the estimates of one chunk of signals of this ``length``; with the chunk ``noisy``
        itself, an equivariant check also records each signal's signal-to-noise (``centred``: ``noisy``
        already has its median off, as :meth:`observe` passes it)."""
        sigma_hat = np.asarray(sigma_hat, dtype=np.float64).ravel()
        self.estimates.append(sigma_hat)
        self.length = length
        if self.equivariant and noisy is not None:
            noisy = np.atleast_2d(noisy) if centred else self._about_baseline(np.atleast_2d(noisy))
            # in units of σ̂, so the squares fit float64 at any magnitude
            with np.errstate(divide="ignore", invalid="ignore"):  # σ̂ NaN or 0 (degenerate): NaN, skipped
                power = np.mean(np.square(np.asarray(noisy, dtype=np.float64) / sigma_hat[:, None]), axis=-1)
                self.snrs.append(np.sqrt(np.maximum(power - 1.0, 0.0)))

    def _about_baseline(self, noisy: np.ndarray) -> np.ndarray:
        """``noisy`` for an ordinary model; for an offset-free one, each signal less its median (the network never
        sees the offset)."""
        if not self.offset_free:
            return noisy
        return np.asarray(noisy, dtype=np.float64) - np.median(noisy, axis=-1, keepdims=True)

    def observe(self, noisy: np.ndarray) -> None:
        """Estimate σ of the next chunk of signals (:func:`deepdenoise1d.noise.estimate_sigma_auto`) and record it."""
        noisy = np.atleast_2d(noisy)
        auto = noise.estimate_sigma_auto(noisy)
        noisy = self._about_baseline(noisy)  # signal-to-noise and peaks count from there
        self.add(auto.sigma, noisy.shape[-1], noisy, centred=True)
        self.spike_used += int((auto.spike & ~auto.degenerate).sum())
        self.spectral_used += int((auto.spectral & ~auto.degenerate).sum())
        flat = np.flatnonzero(auto.degenerate) + self.seen
        self.degenerate.extend(flat[: max(MAX_NAMED + 1 - len(self.degenerate), 0)].tolist())  # bounded memory
        self.degenerate_count += flat.size
        with np.errstate(divide="ignore", invalid="ignore"):
            self.peaks.append(np.abs(noisy).max(axis=-1) / auto.sigma)
        self.seen += noisy.shape[0]

    def observe_windows(self, block: np.ndarray) -> None:
        """Record the windows of long signals (each a signal of the model's length), degenerate ones counted."""
        auto = noise.estimate_sigma_auto(block)
        sigma = auto.sigma
        self.add(sigma, block.shape[-1], block)
        self.spike_used += int((auto.spike & ~auto.degenerate).sum())
        self.spectral_used += int((auto.spectral & ~auto.degenerate).sum())
        self.windows_seen += sigma.size
        self.degenerate_windows += int(np.count_nonzero(~np.isfinite(sigma) | (sigma <= 0)))

    def observe_output(self, noisy: np.ndarray, estimate: np.ndarray) -> None:
        """Record how far a network moved ``noisy`` (a chunk of signals or windows) in units of each one's σ̂, and,
        for a spike model (one with a σ range), how many samples swing far below the baseline."""
        if not self.network:
            return
        noisy = np.atleast_2d(np.asarray(noisy, dtype=np.float64))
        sigma = per_signal_sigma(noisy)
        ok = np.isfinite(sigma) & (sigma > 0)
        if not ok.any():
            return
        noisy, sigma = noisy[ok], sigma[ok][:, None]
        moved = (noisy - np.atleast_2d(np.asarray(estimate, dtype=np.float64))[ok]) / sigma
        self.residual_sq += float(np.sum(np.square(moved)))
        self.residual_samples += moved.size
        if self.low is not None:
            centred = noisy - np.median(noisy, axis=-1, keepdims=True)
            self.swings_below += int(np.count_nonzero(centred < -SWING_Z * sigma))
            self.swing_samples += centred.size

    def shape_warning(self) -> str | None:
        """One line when a network moved the record by much more than its noise (it removed signal: the record is
        unlike its training prior), or when a spike model's record swings far below its baseline; None otherwise."""
        lines = []
        if self.swing_samples and self.swings_below > SWING_SHARE * self.swing_samples:
            lines.append(f"{self.swings_below} of {self.swing_samples} samples lie more than {SWING_Z:g} σ̂ below the "
                         "baseline, which the spike model's training signals (spikes on a flat baseline) never do: "
                         "expect those swings cut")
        if self.residual_samples:
            moved = math.sqrt(self.residual_sq / self.residual_samples)
            if moved > RESIDUAL_LIMIT:
                lines.append(f"the network moved the record by {moved:.2g} σ̂ (RMS of input − output; removing noise "
                             "alone moves it by about 1): it removed signal, so the record is likely unlike the "
                             "signals it was trained on")
        if not lines:
            return None
        return "warning: " + "; ".join(lines) + "; compare with the default (--method auto) before trusting it"

    def window_warning(self) -> str | None:
        """One line when windows of long signals held no noise to estimate (constant stretches); None otherwise."""
        if not self.degenerate_windows:
            return None
        return (f"warning: {self.degenerate_windows} of {self.windows_seen} window(s) are degenerate (constant or all "
                "zero: σ estimate 0 or not finite); the network has no noise to measure there and its output may "
                "move them")

    def summary(self) -> str | None:
        """``σ estimated per signal: median 3.01 (spike estimator on 98 signal(s), wavelet MAD on 2)``."""
        est = self._finite()
        if est.size == 0:
            return None
        unit = f"window(s) of {self.length}" if self.windows_seen else "signal(s)"
        used = [f"{name} on {count} {unit}" for name, count in
                (("spike estimator (samples <= 0)", self.spike_used),
                 ("wavelet MAD", est.size - self.spike_used - self.spectral_used),
                 (noise.SPECTRAL_NAME, self.spectral_used)) if count]
        how = f" ({', '.join(used)})" if self.seen or self.windows_seen else ""  # through add() alone: no method known
        each = "window" if self.windows_seen else "signal"
        return f"σ estimated per {each}: median {float(np.median(est)):.4g}{how}"

    def notes(self) -> list[str]:
        """Every line to show: the σ estimate, then the warnings (range, peaks, degenerate signals)."""
        lines = [self.summary(), self.warning(), self.peak_warning(),
                 noise.degenerate_warning(np.asarray(self.degenerate), self.seen, self.degenerate_count),
                 self.window_warning(), self.shape_warning()]
        return [line for line in lines if line]

    def peak_warning(self) -> str | None:
        """One line when signals peak far above what the training prior reaches relative to σ̂; None otherwise."""
        if self.low is None or not self.peaks:
            return None
        ratio = np.concatenate(self.peaks)
        limit = peak_limit(self.low, self.length)
        flagged = np.flatnonzero(np.isfinite(ratio) & (ratio > limit))
        if flagged.size == 0 or flagged.size <= SIGMA_FLAG_SHARE * ratio.size:
            return None
        shown = ", ".join(str(int(i)) for i in flagged[:MAX_NAMED]) + (", ..." if flagged.size > MAX_NAMED else "")
        return (f"warning: {flagged.size} of {ratio.size} signal(s) peak far above the spikes the model was trained on "
                f"(max|y| up to {float(ratio[flagged].max()):.3g} σ̂; training reaches about {limit:.3g} σ̂): expect "
                f"those peaks shrunk; signal(s) {shown}")

    def _finite(self) -> np.ndarray:
        est = np.concatenate(self.estimates) if self.estimates else np.empty(0)
        return est[np.isfinite(est) & (est > 0)]

    def warning(self) -> str | None:
        """One line naming how many signals lie outside the range and by how much; None when in range.

        An equivariant model is judged by signal-to-noise instead (:meth:`snr_warning`)."""
        if self.equivariant:
            return self.snr_warning()
        est = self._finite()
        if est.size == 0 or self.low is None:
            return None
        if self.scale != 1.0:  # the net sees y / s: compare the σ it sees with its range
            est = est / self.scale
        spread = SIGMA_SPREAD_AT_100 * math.sqrt(100 / max(self.length, 1))
        # The spread falls with length, the estimator's bias does not: never closer than the floor.
        each = math.exp(max(SIGMA_Z * spread, math.log1p(SIGMA_POOLED_FLOOR)))
        above, below = est > self.high * each, est < self.low / each
        median = float(np.median(est))
        pooled = math.exp(max(SIGMA_Z * 1.2533 * spread / math.sqrt(est.size), math.log1p(SIGMA_POOLED_FLOOR)))
        pooled_out = median > self.high * pooled or median < self.low / pooled
        if not _worth_warning(above, below, pooled_out):
            return None
        trained = f"{self.low:g}" if self.low == self.high else f"{self.low:g}..{self.high:g}"
        seen = f"estimated σ / the model's input scale {self.scale:g}" if self.scale != 1.0 else "estimated σ"
        parts = [f"warning: the model was trained on noise σ {trained}, but the input's {seen} is "
                 f"{median:.3g} (median of {est.size} signal(s), {_times(median, self.low, self.high)})"]
        parts += _outside_parts(est, above, below, self.low, self.high, "σ̂ ")
        return "; ".join(parts) + "; expect worse denoising there"

    def snr_warning(self) -> str | None:
        """Equivariant model: one line when the signals' signal-to-noise leaves the range the training prior
        reaches, beyond estimation error: more than a :data:`SIGMA_FLAG_SHARE` of the signals by more than
        :data:`SNR_TOLERANCE`, or their median by more than :data:`SIGMA_POOLED_FLOOR`. Both compare with what
        the same estimate reads on the training signals at the range's ends (:func:`measured_snr_range`), so
        σ̂'s own bias cancels; None otherwise."""
        snr = np.concatenate(self.snrs) if self.snrs else np.empty(0)
        snr = snr[np.isfinite(snr)]
        if snr.size == 0 or self.low is None:
            return None
        ends = measured_snr_range(self.low, self.high, self.offset_free)
        floor, ceiling = ends.bottom / SNR_TOLERANCE, ends.top * SNR_TOLERANCE
        spread = SIGMA_SPREAD_AT_100 * math.sqrt(100 / max(self.length, 1))
        least, most = _snr_bounds(snr, SIGMA_Z * spread, SIGMA_Z / math.sqrt(max(self.length, 1)))
        above, below = least > ceiling, most < floor
        median = float(np.median(snr))
        # the median's standard error (1.2533 sd / sqrt(n)), the calibration's own included
        error = SIGMA_Z * 1.2533 * math.sqrt(1 / snr.size + 1 / CALIBRATION_SIGNALS)
        pooled_out = bool(median + error * ends.bottom_sd < ends.bottom or median - error * ends.top_sd > ends.top)
        if not _worth_warning(above, below, pooled_out):
            return None
        true_bottom, true_top = snr_range(self.low, self.high)
        trained = f"{true_bottom:.2g}" if true_bottom == true_top else f"{true_bottom:.2g}..{true_top:.2g}"
        if median <= 0:
            where = "no signal above the noise"
        elif median < ends.bottom:
            where = (f"{ends.bottom / median:.2f}× under the bottom, where its training signals read {ends.bottom:.3g} "
                     f"at {1 + SIGMA_POOLED_FLOOR:g}× its highest σ")
        elif median > ends.top:
            where = (f"{median / ends.top:.2f}× the top, where its training signals read {ends.top:.3g} "
                     f"at its lowest σ ÷ {1 + SIGMA_POOLED_FLOOR:g}")
        else:
            where = "inside"
        parts = [f"warning: the model was trained on spike signals at signal-to-noise (signal RMS / σ) {trained}; "
                 f"this input's reads {median:.3g} (median of {snr.size} signal(s), {where})"]
        parts += _outside_parts(snr, above, below, ends.bottom, ends.top)
        return ("; ".join(parts) + "; its output is in the input's units, but expect worse denoising on signals "
                "of another signal-to-noise or shape (it can be worse than the input's baseline alone)")


def _worth_warning(above: np.ndarray, below: np.ndarray, pooled_out: bool) -> bool:
    """The share rule of both range warnings: the median is out, or more than SIGMA_FLAG_SHARE of the signals are."""
    return pooled_out or int(above.sum() + below.sum()) > SIGMA_FLAG_SHARE * above.size


def _outside_parts(values: np.ndarray, above: np.ndarray, below: np.ndarray, low: float, high: float,
                   label: str = "") -> list[str]:
    """The clauses naming the signals above and below [low, high], with the extreme ``values`` (shown after ``label``)."""
    parts = []
    if above.any():
        parts.append(f"{int(above.sum())} signal(s) above it beyond estimation error "
                     f"(up to {label}{values.max():.3g}, {values.max() / high:.2f}× the top)")
    if below.any():
        low_end = values.min()
        parts.append(f"{int(below.sum())} signal(s) below it (down to {label}{low_end:.3g}"
                     + (f", {low / low_end:.2f}× under the bottom)" if low_end > 0 else ")"))
    return parts


def _snr_bounds(snr: np.ndarray, log_error: float, noise_error: float) -> tuple[np.ndarray, np.ndarray]:
    """The least and the most signal-to-noise consistent with estimates ``snr``: σ̂ off by up to a factor
    exp(``log_error``), and the measured noise power off by ``noise_error`` · sqrt(2 + 4 snr²) σ² (its own
    chi-square spread and the signal-noise cross term, ``noise_error`` being z / sqrt(length))."""
    power = np.square(snr)  # (mean(y²) − σ̂²) / σ̂², clipped at 0 as recorded
    noise_power = noise_error * np.sqrt(2 + 4 * power)
    least = np.sqrt(np.maximum((power + 1) * math.exp(-2 * log_error) - 1 - noise_power, 0.0))
    most = np.sqrt(np.maximum((power + 1) * math.exp(2 * log_error) - 1 + noise_power, 0.0))
    return least, most


def prior_signal_rms(prior: SpikePrior = SpikePrior()) -> float:
    """RMS of the clean signals of ``prior``: the root of their expected mean square, (share of samples a
    spike lands on) · mean(amplitude²); about 2.79 for 20 spikes of amplitudes 2..10 in 100 samples."""
    return math.sqrt((1.0 - prior.zero_probability) * float(np.mean(prior.amplitudes ** 2)))


def snr_range(low: float, high: float, prior: SpikePrior = SpikePrior()) -> tuple[float, float]:
    """[bottom, top] signal-to-noise (signal RMS / σ) the training prior reaches over the noise range
    [``low``, ``high``]: :func:`prior_signal_rms` / high .. / low."""
    rms = prior_signal_rms(prior)
    return rms / high, rms / low


class MeasuredRange(NamedTuple):
    """What :class:`SigmaRangeCheck` reads on the training prior just outside its range: the median
    signal-to-noise over signals at each end, and the standard deviation of one signal's."""

    bottom: float
    top: float
    bottom_sd: float
    top_sd: float


@functools.lru_cache(maxsize=8)
def measured_snr_range(low: float, high: float, offset_free: bool = False) -> MeasuredRange:
    """The signal-to-noise :class:`SigmaRangeCheck` measures (its σ̂, its median baseline when ``offset_free``) on
    :data:`CALIBRATION_SIGNALS` seeded signals of the spike prior at σ = ``high`` and ``low`` widened by
    :data:`SIGMA_POOLED_FLOOR` (as the σ check allows): an input whose median reads beyond these lies outside the
    range by more than that floor, whatever σ̂'s bias."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    clean = clean_spikes(rng, CALIBRATION_SIGNALS)
    noise = rng.standard_normal(clean.shape)
    ends = []
    for sigma in (high * (1 + SIGMA_POOLED_FLOOR), low / (1 + SIGMA_POOLED_FLOOR)):
        check = SigmaRangeCheck(low, high, equivariant=True, offset_free=offset_free)
        check.observe(clean + sigma * noise)
        snr = np.concatenate(check.snrs)
        ends.append((float(np.median(snr)), float(np.std(snr))))
    return MeasuredRange(ends[0][0], ends[1][0], ends[0][1], ends[1][1])


def _times(value: float, low: float, high: float) -> str:
    if value > high:
        return f"{value / high:.2f}× the top"
    if value < low:
        return f"{low / value:.2f}× under the bottom"
    return "inside"


def peak_limit(low: float, length: int) -> float:
    """max|y| / σ̂ the training prior reaches at its lowest σ: top amplitude / σ plus the noise maximum of
    ``length`` samples at tail probability 1e-3 per signal, times the σ̂ error at three spreads
    (at σ 0.5, L = 100: 34.2, above all of 20000 prior signals, whose largest is 33.7)."""
    from scipy.stats import norm

    spread = SIGMA_SPREAD_AT_100 * math.sqrt(100 / max(length, 1))
    return (AMPLITUDE_RANGE[1] / low + float(norm.isf(1e-3 / max(length, 1)))) * math.exp(3 * spread)


def sigma_range_check(sigma_range, noisy: np.ndarray | None = None, scale: float = 1.0,
                      equivariant: bool = False, offset_free: bool = False) -> SigmaRangeCheck:
    """A :class:`SigmaRangeCheck` for ``sigma_range`` ([low, high], or None: only the σ estimate and the
    degenerate-signal warning), fed ``noisy`` when given; ``scale`` is the model's input_scale (σ̂ / scale
    is what the range is compared with); ``equivariant``: the model works in any units, so the range warning
    compares signal-to-noise instead of σ̂ (and ``scale`` plays no part in it)."""
    low, high = (float(sigma_range[0]), float(sigma_range[1])) if sigma_range else (None, None)
    check = SigmaRangeCheck(low, high, scale=float(scale), equivariant=bool(equivariant), offset_free=bool(offset_free))
    if noisy is not None:
        check.observe(noisy)
    return check

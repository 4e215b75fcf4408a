"""A broad prior of clean 1-D signals, for training a universal (signal-agnostic) denoiser.

The spike prior of :mod:`deepdenoise1d.synthesis` is one narrow class; a denoiser meant for any
1-D signal is trained here on a seeded stream of many parametric classes, each drawn with random
parameters, then with a random scale and offset, then with white Gaussian noise at a random SNR.

Families (:data:`FAMILIES`, each ``family(rng, length) -> float64 (length,)``, unit-free, peak
magnitude about 1 before the scale and offset):

``piecewise_constant``    1..:data:`MAX_JUMPS` jumps (at most ``length // 8``), random positions and levels
``piecewise_polynomial``  1..6 pieces of degree 1..3, each joined by a jump in value or in slope only
``smooth_process``        Gaussian process: white noise low-passed in the Fourier domain,
                          cutoff from :data:`SMOOTH_MIN_CUTOFF` to ``length /`` :data:`SMOOTH_MIN_PERIOD`
                          cycles per signal, spectral slope :data:`SMOOTH_SLOPE`
``chirp``                 linear, exponential or sinusoidal FM under a random smooth envelope
``bumps``                 pulses of random width, shape (Gaussian, Laplace, Cauchy, Hann,
                          one-sided decay) and sign on a linear baseline
``spikes``                a sparse spike train, :data:`SPIKE_FRACTION` of the samples, zero elsewhere
``beat_train``            a template of 2..5 Gaussian waves repeated with jittered period and
                          amplitude, on a slow baseline wander
``bursts``                1..5 arrivals: a fast rise, a decaying envelope, a random frequency
``mixture``               2..3 of the above with random weights

Frequencies are drawn up to ``length /`` :data:`MIN_SAMPLES_PER_CYCLE` cycles per signal, so
every oscillation stays resolved at any length >= :data:`MIN_LENGTH`.

:func:`draw_clean` picks a family uniformly, then a scale log-uniform over :data:`SCALE_RANGE`
and an offset of ``u · scale`` with ``u`` uniform over :data:`OFFSET_RANGE`. :func:`draw_noisy`
adds noise of σ = std(clean) / snr, snr log-uniform over :data:`SNR_RANGE`.
:class:`BroadPrior` streams batches and builds a fixed validation set.

The Donoho–Johnstone signals (Blocks, Bumps, HeaviSine, Doppler of ``pywt.data.demo_signal``)
and PyWavelets' ECG record are the evaluation set, so none of their formulas, parameters or
samples are used here: every family is its own parametric generator. Every random choice comes
from the ``np.random.Generator`` passed in, so a seed fixes every signal.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

MIN_LENGTH = 16
SCALE_RANGE = (1e-3, 1e3)  # log-uniform: the network must not learn one amplitude
OFFSET_RANGE = (-10.0, 10.0)  # offset = u · scale, u uniform here: offsets far larger than the signal are common
SNR_RANGE = (0.5, 20.0)  # std(clean) / σ, log-uniform
MAX_JUMPS = 20
SMOOTH_MIN_CUTOFF = 1.0  # cycles per signal; the cutoff is log-uniform from here ...
SMOOTH_MIN_PERIOD = 16  # ... up to length / 16 cycles per signal (at least 2): never close to white noise
SMOOTH_SLOPE = (2.0, 5.0)  # amplitude falls as (f / cutoff)^-slope above the cutoff
SPIKE_FRACTION = (0.005, 0.05)
MIN_SAMPLES_PER_CYCLE = 6  # highest drawn frequency: length / 6 cycles per signal
MIXTURE_PARTS = (2, 3)
_STREAM, _VALIDATION = 0, 1  # second seed word: training batches and the validation set never share draws

Family = Callable[[np.random.Generator, int], np.ndarray]


def _grid(length: int) -> np.ndarray:
    return np.arange(length) / length


def _unit(x: np.ndarray) -> np.ndarray:
    """``x`` divided by its peak magnitude (unchanged when all zero)."""
    peak = np.max(np.abs(x))
    return x / peak if peak > 0 else x


def _log_uniform(rng: np.random.Generator, low: float, high: float, size=None):
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def _max_frequency(length: int) -> float:
    return max(2.0, length / MIN_SAMPLES_PER_CYCLE)


def piecewise_constant(rng: np.random.Generator, length: int) -> np.ndarray:
    """Constant pieces between 1..min(MAX_JUMPS, length // 8) jumps; levels i.i.d. or a random walk."""
    n_jumps = int(rng.integers(1, max(1, min(MAX_JUMPS, length // 8)) + 1))
    edges = np.sort(rng.choice(np.arange(1, length), n_jumps, replace=False))
    levels = rng.uniform(-1, 1, n_jumps + 1)
    if rng.random() < 0.5:
        levels = np.cumsum(levels)  # drifting levels, not only a bounded alphabet
    return _unit(np.repeat(levels, np.diff(np.concatenate([[0], edges, [length]]))))


def piecewise_polynomial(rng: np.random.Generator, length: int) -> np.ndarray:
    """1..6 polynomial pieces of degree 1..3; each joint jumps in value, or only in slope (a kink)."""
    n_pieces = int(rng.integers(1, max(1, min(6, length // 8)) + 1))
    edges = np.sort(rng.choice(np.arange(4, length - 3), n_pieces - 1, replace=False))
    bounds = np.concatenate([[0], edges, [length]]).astype(int)
    x = np.empty(length)
    end = rng.normal()
    for start, stop in zip(bounds[:-1], bounds[1:]):
        v = np.arange(stop - start) / (stop - start)  # the piece's own coordinate: every term varies ~1 over it
        coef = rng.normal(0, 1, int(rng.integers(1, 4)) + 1)
        jump = rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) if rng.random() < 0.5 else 0.0
        coef[0] = end + jump  # jump 0: continuous, the new coefficients break the slope only
        x[start:stop] = np.polynomial.polynomial.polyval(v, coef)
        end = np.polynomial.polynomial.polyval(1.0, coef)
    return _unit(x)


def smooth_process(rng: np.random.Generator, length: int) -> np.ndarray:
    """Gaussian process: white noise shaped by (1 + (f/fc)^2)^(-slope/2) in the Fourier domain."""
    n = 2 * length  # drawn twice as long and cropped: an FFT-filtered signal is periodic, its ends would meet
    cutoff = _log_uniform(rng, SMOOTH_MIN_CUTOFF, max(2.0, length / SMOOTH_MIN_PERIOD))
    slope = rng.uniform(*SMOOTH_SLOPE)
    f = np.fft.rfftfreq(n, d=1 / length)  # cycles per (cropped) signal
    spectrum = np.fft.rfft(rng.standard_normal(n)) * (1 + (f / cutoff) ** 2) ** (-slope / 2)
    return _unit(np.fft.irfft(spectrum, n)[:length])


def chirp(rng: np.random.Generator, length: int) -> np.ndarray:
    """A linear, exponential or sinusoidal-FM chirp under a random log-quadratic envelope."""
    t = _grid(length)
    f0, f1 = _log_uniform(rng, 1.0, _max_frequency(length), 2)
    kind = rng.integers(3)
    if kind == 0:
        cycles = f0 * t + (f1 - f0) * t**2 / 2
    elif kind == 1:
        ratio = np.log(f1 / f0)
        cycles = f0 * t if abs(ratio) < 1e-9 else f0 * np.expm1(ratio * t) / ratio
    else:
        centre, depth = (f0 + f1) / 2, rng.uniform(0.3, 1.0) * abs(f1 - f0) / 2  # stays within f0..f1
        rate = rng.uniform(0.5, 4.0)
        cycles = centre * t - depth / (2 * np.pi * rate) * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    s = t - rng.uniform(0, 1)
    envelope = np.exp(rng.normal(0, 1.5) * s - rng.uniform(0, 8) * s**2)
    return _unit(envelope * np.sin(2 * np.pi * cycles + rng.uniform(0, 2 * np.pi)))


def _pulse(shape: int, z: np.ndarray) -> np.ndarray:
    """Pulse of unit peak at z = 0, unit width: Gaussian, Laplace, Cauchy, Hann or one-sided decay."""
    if shape == 0:
        return np.exp(-0.5 * z**2)
    if shape == 1:
        return np.exp(-np.abs(z))
    if shape == 2:
        return 1 / (1 + z**2)
    if shape == 3:
        return np.where(np.abs(z) < 1, 0.5 + 0.5 * np.cos(np.pi * z), 0.0)
    z = np.maximum(z, 0.0)  # clipped first: exp(1 - z) of the far left would overflow
    return z * np.exp(1 - z)  # x·e^(1-x): a fast rise, an exponential tail


def bumps(rng: np.random.Generator, length: int) -> np.ndarray:
    """1..10 pulses of random position, width (1 sample .. length/4), shape, sign, on a linear baseline."""
    t = np.arange(length, dtype=float)
    x = rng.normal(0, 0.2) + rng.normal(0, 0.2) * (t / length - 0.5)
    for _ in range(int(rng.integers(1, 11))):
        width = _log_uniform(rng, 1.0, max(2.0, length / 4))
        amplitude = rng.choice([-1, 1]) * rng.uniform(0.2, 1.0)
        x = x + amplitude * _pulse(int(rng.integers(5)), (t - rng.uniform(0, length)) / width)
    return _unit(x)


def spikes(rng: np.random.Generator, length: int) -> np.ndarray:
    """Sparse spikes on exact zeros: SPIKE_FRACTION of the samples, amplitudes 0.1..1, signs random."""
    count = max(1, int(round(rng.uniform(*SPIKE_FRACTION) * length)))
    x = np.zeros(length)
    positive = rng.random() < 0.3  # some trains one-signed, like the project's spike benchmark
    signs = 1.0 if positive else rng.choice([-1.0, 1.0], count)
    x[rng.choice(length, count, replace=False)] = signs * rng.uniform(0.1, 1.0, count)
    return x  # not _unit: with one spike its amplitude would always be 1


def beat_train(rng: np.random.Generator, length: int) -> np.ndarray:
    """A template of 2..5 Gaussian waves repeated with a jittered period and amplitude, on baseline wander."""
    n_beats = rng.uniform(2, max(3, min(20, length / 12)))
    period = length / n_beats  # samples
    n_waves = int(rng.integers(2, 6))
    where = rng.uniform(-0.35, 0.35, n_waves) * period
    widths = np.maximum(_log_uniform(rng, 0.01, 0.1, n_waves) * period, 0.7)  # at least ~a sample wide
    heights = rng.normal(0, 0.4, n_waves)
    heights[rng.integers(n_waves)] = rng.choice([-1, 1])  # one dominant wave, like an R peak
    jitter, wobble = rng.uniform(0, 0.1), rng.uniform(0, 0.15)
    n = int(np.ceil(2 * n_beats)) + 2  # periods are clipped at half the mean: enough beats to reach the end
    periods = period * np.clip(1 + jitter * rng.standard_normal(n), 0.5, 1.5)
    onsets = -rng.uniform(0, period) + np.concatenate([[0.0], np.cumsum(periods[:-1])])
    gains = 1 + wobble * rng.standard_normal(n)
    keep = onsets < length + period  # beats past the end add nothing: skip their waves
    onsets, gains = onsets[keep], gains[keep]
    t = np.arange(length, dtype=float)
    centres = (onsets[:, None] + where[None, :]).ravel()
    waves = (gains[:, None] * heights[None, :]).ravel()
    scales = np.tile(widths, len(onsets))
    x = (waves[:, None] * np.exp(-0.5 * ((t[None, :] - centres[:, None]) / scales[:, None]) ** 2)).sum(0)
    wander = rng.uniform(0, 0.3) * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t / length + rng.uniform(0, 2 * np.pi))
    return _unit(x + wander)


def bursts(rng: np.random.Generator, length: int) -> np.ndarray:
    """1..5 arrivals: at a random onset, an oscillation rises fast and decays exponentially."""
    t = _grid(length)
    x = np.zeros(length)
    for _ in range(int(rng.integers(1, 6))):
        u = t - rng.uniform(0, 0.8)
        decay = _log_uniform(rng, 0.02, 0.3)
        rise = decay * rng.uniform(0.02, 0.3)
        envelope = np.where(u > 0, -np.expm1(-np.maximum(u, 0) / rise) * np.exp(-np.maximum(u, 0) / decay), 0.0)
        frequency = _log_uniform(rng, 2.0, _max_frequency(length))
        x += rng.uniform(0.2, 1.0) * envelope * np.sin(2 * np.pi * frequency * u + rng.uniform(0, 2 * np.pi))
    return _unit(x)


def mixture(rng: np.random.Generator, length: int) -> np.ndarray:
    """The sum of 2..3 distinct other families, weights uniform in 0.2..1 and random signs."""
    names = [name for name in FAMILIES if name != "mixture"]
    picked = rng.choice(names, int(rng.integers(MIXTURE_PARTS[0], MIXTURE_PARTS[1] + 1)), replace=False)
    weights = rng.choice([-1, 1], len(picked)) * rng.uniform(0.2, 1.0, len(picked))
    return _unit(sum(w * FAMILIES[str(name)](rng, length) for w, name in zip(weights, picked)))


FAMILIES: dict[str, Family] = {f.__name__: f for f in (  # this order: draw_clean's index, the gallery's rows
    piecewise_constant, piecewise_polynomial, smooth_process, chirp, bumps, spikes, beat_train, bursts, mixture)}


class CleanDraw(NamedTuple):
    """One clean signal and how it was drawn: ``signal = scale · family(rng, length) + offset``."""

    signal: np.ndarray
    family: str
    scale: float
    offset: float


def _check(length: int, families: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < MIN_LENGTH:
        raise ValueError(f"length must be an integer >= {MIN_LENGTH}, got {length!r}")
    names = tuple(FAMILIES) if families is None else tuple(families)
    unknown = [name for name in names if name not in FAMILIES]
    if not names or unknown:
        raise ValueError(f"families must be a non-empty subset of {list(FAMILIES)}, got {list(names)}")
    return names


def draw_clean_details(rng: np.random.Generator, length: int, families: Sequence[str] | None = None) -> CleanDraw:
    """Draw one clean signal and return it with its family, scale and offset.

    Parameters
    ----------
    rng : np.random.Generator
        The source of every random choice.
    length : int
        Samples, at least :data:`MIN_LENGTH`.
    families : sequence of str, optional
        Names in :data:`FAMILIES` to choose from uniformly; default all.

    Returns
    -------
    CleanDraw
        ``signal`` float64 (length,), ``family``, ``scale`` (log-uniform over :data:`SCALE_RANGE`)
        and ``offset`` (``u · scale``, ``u`` uniform over :data:`OFFSET_RANGE`).
    """
    names = _check(length, families)
    family = names[int(rng.integers(len(names)))]
    shape = FAMILIES[family](rng, int(length))
    scale = float(_log_uniform(rng, *SCALE_RANGE))
    offset = float(rng.uniform(*OFFSET_RANGE) * scale)
    return CleanDraw(scale * shape + offset, family, scale, offset)


def draw_clean(rng: np.random.Generator, length: int, families: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
    """One clean signal, float64 (length,), and its family name; see :func:`draw_clean_details`."""
    draw = draw_clean_details(rng, length, families)
    return draw.signal, draw.family


def draw_noisy(rng: np.random.Generator, length: int, snr_range: tuple[float, float] = SNR_RANGE,
               families: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, float, str]:
    """One clean signal and a noisy copy with white Gaussian noise of σ = std(clean) / snr.

    Parameters
    ----------
    rng, length, families
        As for :func:`draw_clean_details`.
    snr_range : (float, float)
        snr is log-uniform over it; 0 < low <= high.

    Returns
    -------
    clean, noisy : np.ndarray
        float64 (length,).
    sigma : float
        The noise level; the draw's scale / snr when the clean signal is constant.
    family : str
    """
    low, high = (float(v) for v in snr_range)
    if not 0 < low <= high < np.inf:
        raise ValueError(f"snr_range must be 0 < low <= high, finite; got {snr_range!r}")
    draw = draw_clean_details(rng, length, families)
    spread = float(np.std(draw.signal - draw.offset))  # std of a constant + offset is rounding noise, not 0
    sigma = (spread if spread > 1e-12 * draw.scale else draw.scale) / float(_log_uniform(rng, low, high))
    return draw.signal, draw.signal + sigma * rng.standard_normal(length), sigma, draw.family


@dataclass(frozen=True)
class BroadPrior:
    """Batches of (clean, noisy, σ) from the broad prior, reproducible per seed.

    Parameters
    ----------
    families : tuple of str, optional
        Restrict the draw to these families; default all of :data:`FAMILIES`.
    snr_range : (float, float)
        See :func:`draw_noisy`.
    dtype : dtype-like
        float32 or float64 of the returned arrays (drawn in float64, then cast).
    """

    families: tuple[str, ...] | None = None
    snr_range: tuple[float, float] = SNR_RANGE
    dtype: type = np.float32

    def __post_init__(self):
        if self.families is not None:
            object.__setattr__(self, "families", tuple(self.families))  # a list would make the instance unhashable
        _check(MIN_LENGTH, self.families)
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")

    def _draw(self, rng: np.random.Generator, count: int, length: int) -> tuple[np.ndarray, ...]:
        clean, noisy = np.empty((count, length)), np.empty((count, length))
        sigma, names = np.empty(count), []
        for i in range(count):
            clean[i], noisy[i], sigma[i], family = draw_noisy(rng, length, self.snr_range, self.families)
            names.append(family)
        cast = np.dtype(self.dtype)
        return clean.astype(cast), noisy.astype(cast), sigma.astype(cast), tuple(names)

    def batches(self, seed: int, batch_size: int, length: int, start: int = 0) -> Iterator[tuple[np.ndarray, ...]]:
        """Yield (clean (B, L), noisy (B, L), sigma (B,)) forever.

        Batch ``k`` is drawn from ``np.random.default_rng([seed, 0, k])``, so a resumed run
        (``start = k``) continues the same stream without drawing the batches before it.
        """
        _check(length, self.families)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        return self._stream(seed, batch_size, length, start)  # checked now, not at the first next()

    def _stream(self, seed: int, batch_size: int, length: int, start: int) -> Iterator[tuple[np.ndarray, ...]]:
        for k in itertools.count(start):
            yield self._draw(np.random.default_rng([seed, _STREAM, k]), batch_size, length)[:3]

    def validation_set(self, seed: int, n: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
        """A fixed set: (clean (n, L), noisy (n, L), sigma (n,), family names), from ``default_rng([seed, 1])``."""
        _check(length, self.families)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        return self._draw(np.random.default_rng([seed, _VALIDATION]), n, length)

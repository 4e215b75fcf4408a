"""A label-free scoreboard: estimate, without the clean signal, the RMSE of every candidate
denoiser on one noisy record, and pick the best.

The estimate is Stein's unbiased risk estimate (SURE). For y = x + z, z ~ N(0, σ²I), n samples
and a weakly differentiable denoiser f,

    SURE(f) = ‖f(y) − y‖²/n − σ² + 2σ²·div f(y)/n,    E[SURE(f)] = E[‖f(y) − x‖²/n],

so √max(SURE, 0) estimates the RMSE with no label. The divergence div f = Σᵢ ∂fᵢ/∂yᵢ is exact
for the candidates that act sample by sample (the identity, the soft threshold) and otherwise
Monte-Carlo: with Gaussian probes b and ε = ``EPS_REL``·σ, bᵀ(f(y + εb) − f(y − εb))/(2ε)
(antithetic: the second-order terms cancel) has mean div f; the mean over ``probes`` draws
comes with its standard error.

Each estimate carries two standard errors: from the probes (the Monte-Carlo divergence) and
from the record's finite length (SURE is unbiased for the expected MSE; the MSE of this one
noise draw scatters around it). The second is a plug-in from the linearisation f(y) ≈ f(x) + Jz:
n·(SURE − MSE) ≈ zᵀ(I − J − Jᵀ)z − σ² tr(I − 2J) − 2βᵀz with β = f(x) − x, whose variance is
2σ⁴‖I − J − Jᵀ‖²_F + 4σ²‖β‖²; the probes estimate both terms (the spread of ‖b‖² − 2bᵀJb, and
‖Jb‖² for ‖J‖²_F in ‖β‖² ≈ n·SURE − σ²‖J‖²_F).

Candidates are named :class:`Candidate` objects (or plain callables) that map a record of shape
(N, L) or (L,) to an estimate of the same shape; each row is one signal. Torch-free: the
network candidates are passed in as callables by the front-end.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np

from deepdenoise1d import classical, noise, swt, tv, windows
from deepdenoise1d.errors import InputError
from deepdenoise1d.columns import read_column
from deepdenoise1d.io import check_chunk, read_signals
from deepdenoise1d.progress import Progress
from deepdenoise1d.magnitude import rms

PROBES = 8  # antithetic probe pairs per candidate
REFINE_PROBES = 64  # probe pairs for the close contenders of the lead (:func:`rank`)
# Probe pairs shrink on long records (:func:`probe_budget`): the divergence's Monte-Carlo error falls as
# 1/sqrt(samples · pairs), so past this many samples fewer pairs give the same precision, and a large
# network's probes on 10⁶ samples would otherwise take minutes.
PROBE_SAMPLES = 131_072
# Rows shorter than this are refused: too few samples for SURE to rank anything, and what a time column
# read as rows (a CSV of "t, value" lines) gives.
MIN_SCORED_LENGTH = 16
REFINE_MARGIN = 3.0  # a contender: SURE within this many probe standard errors (of the difference) of the lead
EPS_REL = 1e-2  # finite-difference step ε = EPS_REL·σ: far above float32 rounding, far below σ
PROBE_SEED = 0x5EED5  # probes are seeded (the same record gives the same table), apart from common noise seeds
WIENER_WINDOWS = (3, 5, 9)
WAVELETS = ("db4", "sym8")
SHRINKS = {"bayes": "BayesShrink", "visu": "VisuShrink"}
TV = "tv"
TI_WAVELET = "sym8"
TI_SHRINKS = {"bayes": "BayesShrink", "sure": "SURE"}
NOISY = "noisy"
EXACT_LIMIT = 4_000_000  # Jacobian entries (N·L²) a candidate's exact Jacobian may take; beyond it, probes


@dataclass(frozen=True)
class Candidate:
    """A denoiser and, optionally, its exact Jacobian.

    ``f(y)`` maps (N, L) or (L,) to the same shape. ``diagonal(y)`` (optional) gives ∂fᵢ/∂yᵢ for a
    separable f; ``jacobian(rows)`` (optional) the full Jacobian (N, L, L) of each row of an (N, L)
    record, or None where it has none (then probes are used, as when N·L² > ``EXACT_LIMIT``).
    ``projection(out)`` (optional), for an f whose Jacobian at y is an orthogonal projection read
    from its output (exact TV: the averages over its runs), gives that projection's rank.
    Each makes the divergence exact and free of probes.
    ``frozen(y)`` (optional), for an f whose parameters are chosen from y (thresholds), returns f with
    them held at their values on y: the probes differentiate that (SureShrink's plug-in rule), because a
    threshold that jumps between candidates would put jumps into the finite differences.
    """

    f: Callable[[np.ndarray], np.ndarray]
    diagonal: Callable[[np.ndarray], np.ndarray] | None = None
    jacobian: Callable[[np.ndarray], np.ndarray | None] | None = None
    projection: Callable[[np.ndarray], int] | None = None
    frozen: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]] | None = None

    def __call__(self, y: np.ndarray) -> np.ndarray:
        return self.f(y)


@dataclass
class Estimate:
    """SURE of one candidate on one record.

    ``rmse`` is √max(SURE, 0) and ``se`` its standard error (probes and finite length together);
    ``sure`` estimates the MSE, with ``probe_se`` and ``length_se`` its two standard errors;
    ``divergence`` is div f / n; ``exact`` says whether it came without probes.
    """

    rmse: float
    se: float
    sure: float
    sure_se: float
    probe_se: float
    length_se: float
    divergence: float
    exact: bool
    seconds: float
    probes: int = 0


@dataclass
class Ranking:
    """Every candidate's :class:`Estimate` (in the order given) and the chosen name (lowest SURE)."""

    estimates: dict[str, Estimate]
    chosen: str
    sigma: float
    probes: int
    n: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready: ``chosen``, ``estimates`` {name: RMSE}, ``standard_errors``, ``sure``, ``sigma``, ``probes``."""
        return {"chosen": self.chosen, "sigma": self.sigma, "probes": self.probes, "samples": self.n,
                "estimates": {k: e.rmse for k, e in self.estimates.items()},
                "standard_errors": {k: e.se for k, e in self.estimates.items()},
                "sure": {k: e.sure for k, e in self.estimates.items()},
                "divergence_per_sample": {k: e.divergence for k, e in self.estimates.items()},
                "exact_divergence": {k: e.exact for k, e in self.estimates.items()},
                "probe_pairs": {k: e.probes for k, e in self.estimates.items()}}

    def in_units(self, unit: float) -> "Ranking":
        """This ranking of a record divided by ``unit`` in the record's own units: RMSEs times ``unit``, SURE
        (mean-square) terms times unit² (inf where those leave float64; the RMSEs still fit)."""
        if unit == 1.0:
            return self
        square = unit * unit if unit < 1e150 else math.inf
        estimates = {name: dataclasses.replace(e, rmse=e.rmse * unit, se=e.se * unit, sure=e.sure * square,
                                               sure_se=e.sure_se * square, probe_se=e.probe_se * square,
                                               length_se=e.length_se * square)
                     for name, e in self.estimates.items()}
        return dataclasses.replace(self, estimates=estimates, sigma=self.sigma * unit)

    def table(self) -> str:
        """Markdown table: name, estimated RMSE ± standard error, noise passed, how it was measured, seconds; the
        chosen row marked, and one line saying what the columns mean."""
        lines = [f"SURE scoreboard: σ = {self.sigma:.6g}, {self.n} samples (estimated RMSE ± standard error; "
                 "* = chosen)",
                 "| method | estimated RMSE ± se | noise passed | random probes | seconds |", "|---|---|---|---|---|"]
        for name, e in self.estimates.items():
            mark = " *" if name == self.chosen else ""
            lines.append(f"| {name}{mark} | {e.rmse:.5g} ± {e.se:.2g} | {e.divergence:.4f} | "
                         f"{e.probes or 'exact'} | {e.seconds:.3f} |")
        lines.append("noise passed: the share of the noise a method lets through (1 = all, the noisy input; its "
                     "divergence per sample), measured with that many random probe pairs, or exactly")
        return "\n".join(lines)


def _apply(f: Callable, y: np.ndarray) -> np.ndarray:
    """f(y) as float64 of y's shape; a candidate that changes the size is a bug, refused."""
    out = np.asarray(f(y), dtype=np.float64)
    if out.size != y.size:
        raise ValueError(f"candidate returned {out.size} values for {y.size} samples")
    return out.reshape(y.shape)


@dataclass
class _Jacobian:
    """What SURE and its standard errors need from the Jacobian J of f at y (all totals, not per sample)."""

    trace: float  # div f
    trace_se: float  # Monte-Carlo standard error of trace (0 when exact)
    quad_var: float  # 2‖I − J − Jᵀ‖²_F: variance of bᵀ(I − J − Jᵀ)b for b ~ N(0, I)
    frobenius2: float  # ‖J‖²_F


def _diagonal_jacobian(diagonal: Callable, y: np.ndarray) -> _Jacobian:
    """Exact terms of a separable f from its Jacobian diagonal d."""
    d = np.asarray(diagonal(y), dtype=np.float64).reshape(-1)
    return _Jacobian(float(d.sum()), 0.0, float(2 * np.sum((1 - 2 * d) ** 2)), float(np.sum(d * d)))


def _full_jacobian(jacobian: Callable, y: np.ndarray) -> _Jacobian | None:
    """Exact terms from the Jacobian of each row; None when the candidate has none here or it is too large."""
    rows = np.atleast_2d(y)
    if rows.shape[0] * rows.shape[1] ** 2 > EXACT_LIMIT:
        return None
    jac = jacobian(rows)
    if jac is None:
        return None
    jac = np.asarray(jac, dtype=np.float64)
    sym = np.eye(rows.shape[1]) - jac - np.swapaxes(jac, 1, 2)
    return _Jacobian(float(np.trace(jac, axis1=1, axis2=2).sum()), 0.0, float(2 * np.sum(sym * sym)),
                     float(np.sum(jac * jac)))


def _probe_jacobian(f: Callable, y: np.ndarray, eps: float, probes: int, seed) -> _Jacobian:
    """Monte-Carlo terms from ``probes`` antithetic Gaussian finite differences."""
    rng = np.random.default_rng(seed)
    traces, quads, norms = [], [], []
    for _ in range(probes):
        b = rng.standard_normal(y.shape)
        jb = (_apply(f, y + eps * b) - _apply(f, y - eps * b)) / (2 * eps)  # ≈ J b
        t = float(np.sum(b * jb))  # bᵀJb, mean tr J
        traces.append(t)
        quads.append(float(np.sum(b * b)) - 2 * t)  # bᵀ(I − J − Jᵀ)b
        norms.append(float(np.sum(jb * jb)))  # ‖Jb‖², mean ‖J‖²_F
    traces = np.array(traces)
    trace_se = float(traces.std(ddof=1) / math.sqrt(probes)) if probes > 1 else math.inf
    quad_var = float(np.var(quads, ddof=1)) if probes > 1 else math.nan
    return _Jacobian(float(traces.mean()), trace_se, quad_var, float(np.mean(norms)))


def rmse_and_se(sure: float, sure_se: float) -> tuple[float, float]:
    """√max(SURE, 0) and its standard error, √(max(SURE, 0) + se) − √max(SURE, 0).

    That is se/(2·RMSE) when se ≪ SURE (the delta method) and stays finite, √se, at SURE ≤ 0.
    """
    s = max(sure, 0.0)
    return math.sqrt(s), math.sqrt(s + sure_se) - math.sqrt(s)


def sure_estimate(f: Callable | Candidate, y: np.ndarray, sigma: float, probes: int = PROBES,
                  eps: float | None = None, seed=PROBE_SEED, diagonal: Callable | None = None) -> Estimate:
    """SURE of ``f`` on the record ``y`` at noise level ``sigma``, with its standard errors.

    Parameters
    ----------
    f : callable or Candidate
        The denoiser, (N, L) or (L,) -> the same shape. A :class:`Candidate` with a ``diagonal``
        gets its exact divergence.
    y : np.ndarray
        The noisy record, (N, L) or (L,); every sample counts (n = y.size).
    sigma : float
        The noise standard deviation, > 0.
    probes : int
        Antithetic probe pairs for the Monte-Carlo divergence (2·probes extra calls of f), ≥ 2.
    eps : float, optional
        Finite-difference step; default ``EPS_REL``·σ.
    seed
        Seed of the probes (the same seed gives the same probes for every candidate, so their
        differences are less noisy than each estimate).
    diagonal : callable, optional
        ∂fᵢ/∂yᵢ of a separable f (overrides the candidate's).

    Returns
    -------
    Estimate
    """
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    if probes < 2:
        raise ValueError(f"probes must be >= 2 (the standard error needs two), got {probes}")
    start = time.perf_counter()
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    diagonal = diagonal or getattr(f, "diagonal", None)
    full = getattr(f, "jacobian", None)
    out = _apply(f, y)
    residual = float(np.mean((out - y) ** 2))
    jac = None
    if getattr(f, "projection", None) is not None:
        # J = P, a projection of rank K: tr J = ‖J‖²_F = K, and I − 2P is orthogonal (‖·‖²_F = n)
        rank_k = float(f.projection(out))
        jac = _Jacobian(rank_k, 0.0, 2.0 * n, rank_k)
    elif diagonal is not None:
        jac = _diagonal_jacobian(diagonal, y)
    elif full is not None:
        jac = _full_jacobian(full, y)
    exact = jac is not None
    if jac is None:
        probed = f.frozen(y) if getattr(f, "frozen", None) is not None else f
        jac = _probe_jacobian(probed, y, EPS_REL * sigma if eps is None else eps, probes, seed)
    s2 = sigma * sigma
    sure = residual - s2 + 2 * s2 * jac.trace / n
    probe_se = 2 * s2 * jac.trace_se / n
    bias2 = max(n * sure - s2 * jac.frobenius2, 0.0)  # ‖f(x) − x‖², linearised
    length_se = math.sqrt(max(s2 * s2 * jac.quad_var + 4 * s2 * bias2, 0.0)) / n
    sure_se = math.hypot(probe_se, length_se)
    rmse, se = rmse_and_se(sure, sure_se)
    return Estimate(rmse, se, sure, sure_se, probe_se, length_se, jac.trace / n, exact, time.perf_counter() - start,
                    0 if exact else probes)


def rank(candidates: dict[str, Callable | Candidate], y: np.ndarray, sigma: float, probes: int = PROBES,
         seed=PROBE_SEED, eps: float | None = None, refine: int = REFINE_PROBES, progress: bool = False) -> Ranking:
    """Estimate every candidate's RMSE on ``y`` by SURE and choose the lowest.

    Two passes: every candidate with ``probes`` probe pairs (fewer on records longer than
    :data:`PROBE_SAMPLES` samples, :func:`probe_budget`), then the lead and every contender
    whose SURE lies within ``REFINE_MARGIN`` probe standard errors of the lead's again with
    ``refine`` pairs (the same first ones, then more), so that the probes' noise rarely decides
    between two close candidates. The record's own noise largely cancels between candidates.

    Parameters
    ----------
    candidates : dict
        ``{name: Candidate or callable}``, in table order.
    y : np.ndarray
        The noisy record, (N, L) or (L,).
    sigma : float
        Noise standard deviation.
    probes, seed, eps
        As :func:`sure_estimate`; every candidate gets the same probes.
    refine : int
        Probe pairs of the second pass (no second pass when ``refine <= probes``).
    progress : bool
        Report the candidates scored on stderr (a long record takes minutes).

    Returns
    -------
    Ranking
        Estimates per name (RMSE, standard error, ...) and ``chosen``, the name of the lowest SURE.
    """
    if not candidates:
        raise ValueError("no candidates to rank")
    probes, refine = probe_budget(np.size(y), probes), probe_budget(np.size(y), refine)
    estimates = {}
    with Progress(len(candidates), "scoring", "candidates", every=5.0, enabled=progress) as bar:
        for name, f in candidates.items():
            estimates[name] = sure_estimate(f, y, sigma, probes, eps, seed)
            bar.update()
    if refine > probes:
        again = contenders(estimates)
        with Progress(len(again), "scoring again", "candidates", every=5.0, enabled=progress) as bar:
            for name in again:
                estimates[name] = sure_estimate(candidates[name], y, sigma, refine, eps, seed)
                bar.update()
    chosen = min(estimates, key=lambda k: estimates[k].sure)
    return Ranking(estimates, chosen, float(sigma), probes, int(np.size(y)))


def probe_budget(samples: int, pairs: int) -> int:
    """``pairs`` probe pairs for up to :data:`PROBE_SAMPLES` samples; beyond, as many as keep samples · pairs
    (rounded up), never fewer than 2 (the standard error needs two)."""
    return max(2, min(pairs, math.ceil(pairs * PROBE_SAMPLES / max(int(samples), 1))))


def contenders(estimates: dict[str, Estimate]) -> list[str]:
    """The probed candidates whose SURE is within ``REFINE_MARGIN`` probe standard errors of the lowest."""
    lead = estimates[min(estimates, key=lambda k: estimates[k].sure)]
    return [name for name, e in estimates.items() if not e.exact
            and e.sure - lead.sure <= REFINE_MARGIN * math.hypot(e.probe_se, lead.probe_se)]


# ---------------------------------------------------------------------------
# The candidates


def identity(y: np.ndarray) -> np.ndarray:
    """The do-nothing baseline: SURE is σ² exactly."""
    return np.asarray(y, dtype=np.float64)


def classical_candidates(sigma: float) -> dict[str, Candidate]:
    """``noisy``, ``wiener3/5/9``, ``wavelet_{db4,sym8}_{bayes,visu}`` (σ given), ``soft`` (T = σ), and the
    field's strongest peers: ``tv`` (exact total variation, its weight chosen by SURE) and
    ``wavelet_ti_sym8_{bayes,sure}`` (translation-invariant: the stationary transform)."""
    out = {NOISY: Candidate(identity, diagonal=lambda y: np.ones(np.shape(y)))}
    for window in WIENER_WINDOWS:
        out[f"wiener{window}"] = Candidate(partial(classical.wiener, window=window))
    for name in WAVELETS:
        for short, method in SHRINKS.items():
            out[f"wavelet_{name}_{short}"] = Candidate(
                partial(classical.wavelet, sigma=sigma, method=method, wavelet_name=name))
    out["soft"] = Candidate(partial(classical.soft_threshold, threshold=sigma),
                            diagonal=lambda y: (np.abs(np.asarray(y)) > sigma).astype(np.float64))
    out[TV] = Candidate(partial(tv.denoise_tv_sure, sigma=sigma),
                        projection=lambda estimate: tv.runs(estimate.reshape(-1, np.shape(estimate)[-1])))
    for short, method in TI_SHRINKS.items():
        shrink = partial(swt.denoise_swt, sigma=sigma, wavelet=TI_WAVELET, method=method)
        out[f"wavelet_ti_{TI_WAVELET}_{short}"] = Candidate(shrink, frozen=partial(_frozen_swt, shrink))
    return out


def _frozen_swt(shrink: partial, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The stationary-wavelet shrinkage with the thresholds it chooses on y held fixed."""
    thresholds = swt.swt_thresholds(y, **shrink.keywords)
    return partial(shrink, thresholds=thresholds)


def network_candidates(denoise: Callable[[np.ndarray, str], np.ndarray], bn_modes, prefix: str = "net",
                       train_length: int | None = None, overlap: int | None = None,
                       jacobian: Callable[[np.ndarray, str], np.ndarray] | None = None) -> dict:
    """``{prefix}_{mode}`` for each BN mode, from the front-end's ``denoise(noisy, bn_mode)``.

    Signals longer than ``train_length`` go through blended windows of it
    (:func:`deepdenoise1d.windows.denoise_windows`), as the front-end's file mode sends them.
    ``jacobian(rows (N, L), bn_mode) -> (N, L, L)`` (e.g. ``Numpy_V2.jacobian.jacobians``) makes the
    divergence exact for signals that go through whole (L ≤ ``train_length``) and are small enough.
    """
    out = {}
    for mode in bn_modes:
        full = None if jacobian is None else partial(_network_jacobian, jacobian, mode, train_length)
        out[f"{prefix}_{mode}"] = Candidate(partial(_network_call, denoise, mode, train_length, overlap), jacobian=full)
    return out


def _network_jacobian(jacobian: Callable, mode: str, train_length: int | None, rows: np.ndarray) -> np.ndarray | None:
    # windowed signals are a blend of windows, not one pass: no single Jacobian to read
    if train_length is not None and rows.shape[-1] > train_length:
        return None
    return jacobian(rows, mode)


def _network_call(denoise: Callable, mode: str, train_length: int | None, overlap: int | None,
                  y: np.ndarray) -> np.ndarray:
    rows = np.atleast_2d(y)  # the network wants (N, L): a 1-D record is one signal
    if train_length is not None and rows.shape[-1] > train_length:
        # float64 windows stay float64: the network's baseline and scale then keep float64's range and precision
        dtype = np.float64 if rows.dtype == np.float64 else np.float32
        out = windows.denoise_windows(rows, lambda block: denoise(block, mode), train_length, overlap, dtype=dtype)
    else:
        out = denoise(rows, mode)
    return np.asarray(out).reshape(np.shape(y))


def candidate_names(bn_modes) -> tuple[str, ...]:
    """Every name :func:`classical_candidates` and :func:`network_candidates` make, in table order."""
    return tuple(classical_candidates(1.0)) + tuple(network_candidates(None, bn_modes))


# ---------------------------------------------------------------------------
# A record file


def read_record(path, column=None, allow_gaps: bool = False) -> tuple[np.ndarray, tuple[int, ...]]:
    """The whole signal file (or ``column`` of its table, :mod:`deepdenoise1d.columns`) as float64 (N, L)
    (checked finite), and its stored shape.

    ``allow_gaps``: NaN is let through (gaps, found with :func:`deepdenoise1d.io.scan_gaps`); inf is refused
    all the same.
    """
    signals, stored_shape = (read_column(path, column, allow_gaps) if column
                             else read_signals(path, allow_nan=allow_gaps))
    signals = signals.reshape(-1, signals.shape[-1]) if signals.ndim != 2 else signals
    check_chunk(signals, 0, str(path), np.float64, allow_nan=allow_gaps)
    return np.array(signals, dtype=np.float64), tuple(stored_shape)


def sigma_note(record: np.ndarray, sigma: float) -> str | None:
    """One line when ``sigma`` is at or above the record's spread about its median: noise that large would
    be all there is, so every candidate flattens the record (a soft threshold writes zeros). None otherwise."""
    rows = np.atleast_2d(record)
    spread = rms(rows - np.median(rows, axis=-1, keepdims=True), axis=None).item()  # its squares fit at any magnitude
    if sigma < spread:
        return None
    return (f"σ = {sigma:.4g} is at or above the record's own spread about its median ({spread:.4g}): at that noise "
            "level nothing is left to keep and every method flattens the record; check σ (the noise's standard "
            "deviation, not the signal's)")


def record_sigma(record: np.ndarray, sigma: float | str | None, flag: str = "--sigma") -> tuple[float, str, str]:
    """σ given, or (``"auto"`` / None) estimated over the whole record; which ("given" / "estimated"); and how.

    The estimate is :func:`deepdenoise1d.noise.estimate_sigma_auto` per row (the spike estimator only
    where it applies: on a record with an offset it would measure the offset), the median over rows.
    ``flag`` names the caller's σ option in the error (``--sigma``; the Python API's ``sigma``).
    """
    if sigma not in (None, "auto"):
        return float(sigma), "given", "given"
    auto = noise.estimate_sigma_auto(np.atleast_2d(record))
    usable = auto.sigma[np.isfinite(auto.sigma)]
    if usable.size == 0:
        give = f"{flag} S" if flag.startswith("-") else f"{flag}=S"
        raise InputError(f"{flag} auto: no noise to estimate (the record is constant, or exactly zero wherever it is "
                         f"not a peak); give {give}")
    return float(np.median(usable)), "estimated", auto.summary()

"""Denoise an array in one call, as ``Numpy_test.py --input REC --output OUT`` denoises a file. Never imports torch.

    import numpy as np
    from Numpy_V2 import denoise

    y = np.sin(np.linspace(0, 20, 4096)) + 0.3 * np.random.default_rng(0).standard_normal(4096)
    clean, info = denoise(y)   # every candidate scored by SURE on y itself, the best one applied
    print(info["method"], info["sigma"])

It lives in the NumPy front-end, not in ``deepdenoise1d``, because it needs the network: the toolkit
below it never imports a front-end.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepdenoise1d import scoreboard as _scoreboard
from deepdenoise1d.errors import InputError
from deepdenoise1d.magnitude import power_of_two
from icnn.shipped import default_weights_for
from icnn.spec import inference_modes, min_length

NET = "net"  # the network alone, in the mode its weights record
# The largest magnitude a record may hold: float64's largest over 2^10, room for what a denoised record may
# overshoot its input by (every method computes on the record brought near 1, :func:`_unit`, and scales back).
FLOAT64_LIMIT = np.finfo(np.float64).max / 2**10


def denoise(y, method: str = "auto", sigma: float | str = "auto", weights: str | os.PathLike | None = None,
            threads: int = 1) -> tuple[np.ndarray, dict]:
    """Denoise a record: one signal (L,) or several (N, L) of one recording, sharing one noise level.

    Parameters
    ----------
    y : array_like
        Real, finite samples, shape (L,) or (N, L), float32, float64 (any magnitude up to
        :data:`FLOAT64_LIMIT`: every method is scale-equivariant and computes on the record divided by a
        power of two that brings it near 1, exactly) or integers (converted to float64, rounded to its
        53 bits beyond 2^53). Complex input is refused.
    method : str
        ``"auto"`` (default): every candidate (the classical peers and the network in each of its modes) is
        scored by SURE on ``y`` itself and the lowest is applied; ``"net"``: the network alone; or one
        candidate by name (``info["estimates"]`` of an ``"auto"`` call lists them: ``tv``,
        ``wavelet_ti_sym8_bayes``, ``net_fixed``, ...).
    sigma : float or "auto"
        The noise's standard deviation, or ``"auto"`` to estimate it from ``y`` (the median over rows).
    weights : path, optional
        HDF5 weights written by pth2h5.py; by default the shipped ``ckpt_universal.h5``, trained blind on
        a broad prior of 1-D signals.
    threads : int
        Threads of the network's forward pass.

    Returns
    -------
    denoised : np.ndarray
        The same shape as ``y``; float64 for float64 (or integer) input, float32 for float32.
    info : dict
        ``method`` (the one applied), ``sigma`` and ``sigma_source`` ("given" or "estimated") and, when
        estimated, ``sigma_how``; ``warnings``, lines where the answer may be wrong (a σ as large as the record); ``weights`` (the file, or None when no network took part); for ``"auto"``
        also ``estimates`` (each candidate's SURE estimate of its RMSE) and ``standard_errors``.
    """
    record = _as_record(y)
    rows = np.atleast_2d(record)
    sigma_value, source, how = _scoreboard.record_sigma(rows, _check_sigma(sigma), "sigma")
    if not isinstance(method, str):
        raise InputError(f"method must be a name such as 'auto', 'net' or 'tv', got {method!r}")
    network = "optional" if method == "auto" else "required" if method.split("_")[0] == NET else "none"
    unit = _unit(record)
    scaled, scaled_sigma = _scaled(rows, sigma_value, unit)
    candidates, path = candidates_for(scaled, scaled_sigma, weights, threads, network)
    if method == NET:
        method = next(name for name in candidates if name.startswith(f"{NET}_"))  # the weights' own mode comes first
    info = {"sigma": sigma_value, "sigma_source": source, "warnings": []}
    if source == "estimated":
        info["sigma_how"] = how
    note = _scoreboard.sigma_note(rows, sigma_value)
    if note:
        info["warnings"].append(note)
    if method == "auto":
        ranking = _scoreboard.rank(candidates, scaled, scaled_sigma)
        method = ranking.chosen
        summary = ranking.summary()
        info.update({key: {name: value * unit for name, value in summary[key].items()}  # RMSEs, in y's units
                     for key in ("estimates", "standard_errors")})
    elif method not in candidates:
        raise InputError(f"method {method!r} is not one of auto, {NET}, {', '.join(candidates)}")
    out = np.asarray(candidates[method](scaled)).reshape(record.shape)
    out = out * unit if unit != 1.0 else out
    info.update(method=method, weights=str(path) if method.startswith(f"{NET}_") else None)
    return out.astype(record.dtype, copy=False), info


def estimate_sigma(y) -> float:
    """The noise's standard deviation estimated from ``y`` ((L,) or (N, L)) as ``denoise`` does (median over rows)."""
    return _scoreboard.record_sigma(np.atleast_2d(_as_record(y)), "auto", "sigma")[0]


def scoreboard(y, sigma: float | str = "auto", weights: str | os.PathLike | None = None,
               threads: int = 1) -> _scoreboard.Ranking:
    """Every candidate's SURE estimate on ``y`` (``Ranking``: ``.chosen``, ``.estimates``, ``.table()``), in ``y``'s
    units; a float64 record whose mean squares leave float64 (magnitudes beyond about 1e±150) is refused."""
    record = _as_record(y)
    rows = np.atleast_2d(record)
    sigma_value = _scoreboard.record_sigma(rows, _check_sigma(sigma), "sigma")[0]
    unit = _unit(record)
    scaled, scaled_sigma = _scaled(rows, sigma_value, unit)
    candidates, _ = candidates_for(scaled, scaled_sigma, weights, threads, "optional")
    return _in_units(_scoreboard.rank(candidates, scaled, scaled_sigma), unit)


def candidates_for(rows: np.ndarray, sigma: float, weights, threads: int, network: str) -> tuple[dict, Path | None]:
    """The classical candidates at ``sigma`` and the network's in each mode: ``network`` "optional" (where the
    record is long enough), "required" (refused where it is not) or "none" (the weights are not read)."""
    from Numpy_V2.jacobian import denoise_jacobians
    from Numpy_V2.model import load_h5

    candidates = _scoreboard.classical_candidates(sigma)
    if network == "none":
        return candidates, None
    path = Path(weights) if weights is not None else default_weights_for(".h5", record=True)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file")
    net = load_h5(path)
    if rows.shape[-1] < min_length(net.config):
        if network == "required":
            raise InputError(f"the network takes signals of at least {min_length(net.config)} samples, got {rows.shape[-1]}")
        return candidates, None
    modes = (net.config.bn_mode, *(m for m in inference_modes(net.config) if m != net.config.bn_mode))
    candidates.update(_scoreboard.network_candidates(
        lambda noisy, mode: net.denoise(noisy, bn_mode=mode, threads=threads), modes,
        train_length=net.config.train_length,
        jacobian=lambda block, mode: denoise_jacobians(net, block, mode)))
    return candidates, path


def _as_record(y) -> np.ndarray:
    """``y`` as a float array of one or two axes, refused in one line when it is not a real, finite record."""
    record = np.asarray(y)
    if record.dtype.kind == "c":
        raise InputError("the record is complex; denoise its real and imaginary parts separately")
    if record.dtype.kind not in "fiub":
        raise InputError(f"the record holds {record.dtype}, expected numbers")
    if record.ndim not in (1, 2) or record.size == 0:
        raise InputError(f"expected a record of shape (L,) or (N, L), got {record.shape}")
    record = record if record.dtype in (np.float32, np.float64) else record.astype(np.float64)
    if not np.all(np.isfinite(record)):
        raise InputError("the record holds NaN or infinite values")
    if np.abs(record).max() <= FLOAT64_LIMIT:
        return record
    raise InputError(f"the record holds values beyond {FLOAT64_LIMIT:.3g} (float64's largest / 1024), where its "
                     "denoised values could overflow float64; rescale it first")


def _unit(record: np.ndarray) -> float:
    """The power of two that brings a float64 record's largest magnitude into [1, 2); 1 for float32.

    Every method is scale-equivariant and dividing by a power of two is exact, so a record computed as
    unit · f(record / unit) gives f(record)'s bits wherever those fit, and the right answer at 1e-200 or
    1e200, where SURE's and the wavelet rules' squares would underflow or overflow. float32 computes as it
    is: its range keeps every square inside float64.
    """
    return float(power_of_two(record, axis=None).item()) if record.dtype == np.float64 else 1.0


def _scaled(rows: np.ndarray, sigma: float, unit: float) -> tuple[np.ndarray, float]:
    """The record and σ divided by ``unit``; a σ that leaves float64 there is refused in one line."""
    if unit == 1.0:
        return rows, sigma
    scaled_sigma = sigma / unit
    if not (np.finfo(np.float64).tiny <= scaled_sigma < np.finfo(np.float64).max):
        raise InputError(f"sigma {sigma:.4g} is out of all proportion to the record (largest magnitude about "
                         f"{unit:.4g}); check its units")
    return rows / unit, scaled_sigma


def _in_units(ranking: _scoreboard.Ranking, unit: float) -> _scoreboard.Ranking:
    """``ranking`` of the record divided by ``unit`` in the record's own units: RMSEs times ``unit``, the SURE
    (mean-square) terms times unit², refused in one line where those leave float64."""
    if unit == 1.0:
        return ranking
    square = unit * unit
    if not np.finfo(np.float64).tiny <= square < np.finfo(np.float64).max:
        raise InputError(f"the record's mean squares (its magnitude, about {unit:.4g}, squared) lie beyond float64; "
                         "rescale it for the table of estimates (denoise() takes it as it is)")
    return ranking.in_units(unit)


def _check_sigma(sigma):
    if isinstance(sigma, str):
        if sigma != "auto":
            raise InputError(f"sigma must be a positive number or 'auto', got {sigma!r}")
        return sigma
    value = float(sigma)
    if not (np.isfinite(value) and value > 0):
        raise InputError(f"sigma must be a positive number or 'auto', got {sigma!r}")
    return value

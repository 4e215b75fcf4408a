"""Classical denoisers, batched over (N, L): Wiener, L1 / GMC sparse least squares,
soft threshold, and the Bayes minimum-MSE oracle."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.special import logsumexp

from deepdenoise1d.magnitude import power_of_two
from deepdenoise1d.synthesis import SIGMA, SpikePrior, noisy_pairs

WIENER_WINDOW = 3


def wiener(x: np.ndarray, window: int = WIENER_WINDOW) -> np.ndarray:
    """``scipy.signal.wiener(signal, window)`` applied to each row, noise estimated per signal.

    Parameters
    ----------
    x : np.ndarray
        Noisy signals, shape (N, L) or (L,).
    window : int
        Odd window length.

    Returns
    -------
    np.ndarray
        Filtered signals, same shape as ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    # the filter is homogeneous: on x / 2^e near 1 its squares neither overflow nor underflow, and the bits are x's
    p = power_of_two(x)
    x = x / p
    # uniform_filter1d with zero padding equals correlate(x, ones(w), 'same') / w.
    local_mean = uniform_filter1d(x, window, axis=-1, mode="constant")
    local_var = uniform_filter1d(x * x, window, axis=-1, mode="constant") - local_mean**2
    noise = local_var.mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = 1.0 - noise / local_var
        filtered = local_mean + gain * (x - local_mean)
    # scipy uses `<`; `<=` gives the same values (gain is 0 at equality) and keeps an
    # all-zero signal (0/0) finite.
    return p * np.where(local_var <= noise, local_mean, filtered)


def wiener_inverse_response(x: np.ndarray, rel_floor: float = 1e-3) -> np.ndarray:
    """Magnitude of the Wiener filter's equivalent system, |ifft(fft(wiener(x)) / fft(x))|.

    FFT bins of ``x`` near zero are guarded with a Tikhonov floor
    ``(rel_floor · max|X|)²`` so ``h`` stays finite; an all-zero signal gets h = 0. The floor is
    relative, so h is scale-free: h(a·x) = h(x) for every a > 0, at any float64 magnitude.
    Shape (N, L) for (N, L) input.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x / power_of_two(x)  # h is scale-free: at a magnitude near 1, |X|² neither overflows nor underflows
    spectrum = np.fft.fft(x, axis=-1)
    filtered = np.fft.fft(wiener(x), axis=-1)
    power = np.abs(spectrum) ** 2
    floor = tikhonov_floor(np.abs(spectrum).max(axis=-1, keepdims=True), rel_floor)
    transfer = filtered * np.conj(spectrum) / (power + floor)
    return np.abs(np.fft.ifft(transfer, axis=-1))


def tikhonov_floor(peak: np.ndarray, rel_floor: float) -> np.ndarray:
    """``wiener_inverse_response``'s floor (rel_floor · peak)², relative to the spectrum's peak |X|; 1 where the
    peak is 0 (an all-zero signal, whose transfer 0 / 1 is 0), so no absolute constant sets a scale."""
    return np.where(peak > 0, (rel_floor * peak) ** 2, 1.0)


def complex_soft(z: np.ndarray, threshold: float) -> np.ndarray:
    """Complex soft threshold max(1 - T / (|z| + 1e-10), 0) · z."""
    return np.maximum(1.0 - threshold / (np.abs(z) + 1e-10), 0.0) * z


class TruncatedDFT:
    """A c = first L samples of ifft(c)·√N; Aᴴ y = fft(zero-padded y) / √N (unitary when N = L)."""

    def __init__(self, length: int, n_coeffs: int | None = None):
        self.length = length
        self.n = n_coeffs or length

    def forward(self, c: np.ndarray) -> np.ndarray:
        return np.fft.ifft(c, axis=-1)[..., : self.length] * np.sqrt(self.n)

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        return np.fft.fft(y, n=self.n, axis=-1) / np.sqrt(self.n)


def _iterate_until_converged(step, state: list[np.ndarray], max_iter: int, tol: float) -> np.ndarray:
    """Run ``step(state_rows, rows)`` until each row stops changing: max|Δc| / max|c| ≤ tol.

    ``state[0]`` is the tracked coefficient array; converged rows are frozen so
    each signal stops exactly when the original repository's per-signal loop would.
    Returns the number of iterations per row.
    """
    n = state[0].shape[0]
    active = np.arange(n)
    iterations = np.zeros(n, dtype=int)
    for _ in range(max_iter):
        if active.size == 0:
            break
        old = state[0][active]
        new_state = step([s[active] for s in state], active)
        for s, new in zip(state, new_state):
            s[active] = new
        iterations[active] += 1
        change = np.abs(new_state[0] - old).max(axis=-1)
        scale = np.abs(new_state[0]).max(axis=-1)
        active = active[change > tol * scale]
    return iterations


def l1_srls(
    y: np.ndarray,
    lam: float = 1.0,
    rho: float = 1.0,
    n_coeffs: int | None = None,
    max_iter: int = 10000,
    tol: float = 1e-4,
) -> np.ndarray:
    """Sparse-regularised least squares, L1 penalty in the frequency domain (ISTA).

    Minimises ½‖y − A c‖² + λ‖c‖₁ with A the truncated unitary inverse DFT and
    step μ = 1.9/ρ, as Selesnick's srls. Batched over rows.

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, shape (N, L).
    lam, rho : float
        Regularisation weight and the bound on ‖AᴴA‖.
    n_coeffs : int, optional
        DFT size ≥ L (default L).
    max_iter, tol : int, float
        Stop a row when max|Δc|/max|c| ≤ tol, or after max_iter iterations.

    Returns
    -------
    np.ndarray
        The estimate Re(A c), shape (N, L).
    """
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    op = TruncatedDFT(y.shape[-1], n_coeffs)
    mu = 1.9 / rho
    aty = op.adjoint(y)
    c = np.zeros_like(aty)

    def step(state, rows):
        (c_,) = state
        return [ista_step(op, c_, aty[rows], mu, lam)]

    _iterate_until_converged(step, [c], max_iter, tol)
    return np.real(op.forward(c))


def ista_step(op: TruncatedDFT, c: np.ndarray, aty: np.ndarray, mu: float, lam: float) -> np.ndarray:
    """One ISTA iteration for ½‖y − A c‖² + λ‖c‖₁."""
    return complex_soft(c - mu * (op.adjoint(op.forward(c)) - aty), mu * lam)


def l1_objective(y: np.ndarray, c: np.ndarray, lam: float, op: TruncatedDFT) -> np.ndarray:
    """½‖y − A c‖² + λ‖c‖₁ per row."""
    return 0.5 * np.sum(np.abs(y - op.forward(c)) ** 2, axis=-1) + lam * np.sum(np.abs(c), axis=-1)


def gmc(
    y: np.ndarray,
    lam: float = 3.0,
    gamma: float = 0.8,
    rho: float = 1.0,
    n_coeffs: int | None = None,
    max_iter: int = 10000,
    tol: float = 1e-4,
) -> np.ndarray:
    """Generalised minimax-concave sparse least squares (Selesnick, IEEE TSP 2017), batched.

    Same operator and stopping rule as :func:`l1_srls`; forward-backward
    iterations on the saddle-point form with μ = 1.9 / (ρ·max(1, γ/(1−γ))).

    Returns
    -------
    np.ndarray
        The estimate Re(A x), shape (N, L).
    """
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    op = TruncatedDFT(y.shape[-1], n_coeffs)
    mu = 1.9 / (rho * max(1.0, gamma / (1.0 - gamma)))
    aty = op.adjoint(y)
    x = np.zeros_like(aty)
    v = np.zeros_like(aty)

    def ata(c):
        return op.adjoint(op.forward(c))

    def step(state, rows):
        x_, v_ = state
        zx = x_ - mu * (ata(x_ + gamma * (v_ - x_)) - aty[rows])
        zv = v_ - mu * gamma * ata(v_ - x_)
        return [complex_soft(zx, mu * lam), complex_soft(zv, mu * lam)]

    _iterate_until_converged(step, [x, v], max_iter, tol)
    return np.real(op.forward(x))


def soft_threshold(y: np.ndarray, threshold: float | None = None, sigma: float = SIGMA) -> np.ndarray:
    """Time-domain soft threshold sign(y)·max(|y| − T, 0); T defaults to σ."""
    t = sigma if threshold is None else threshold
    y = np.asarray(y, dtype=np.float64)
    return np.sign(y) * np.maximum(np.abs(y) - t, 0.0)


def bayes_posterior_mean(y: np.ndarray, sigma: float | np.ndarray = SIGMA, prior: SpikePrior = SpikePrior()) -> np.ndarray:
    """The minimum-MSE denoiser E[x | y] under the benchmark prior, sample by sample.

    Each clean sample is 0 with probability p0 = (1 − 1/L)^K, else uniform on
    the integer amplitudes. Computed in log space for stability.

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, any shape.
    sigma : float or np.ndarray
        Noise level, a scalar or broadcastable to ``y`` (e.g. shape (N, 1)).
    prior : SpikePrior
        The clean-signal distribution.

    Returns
    -------
    np.ndarray
        Posterior mean, same shape as ``y``.
    """
    y = np.asarray(y, dtype=np.float64)
    support = np.concatenate([[0.0], prior.amplitudes])  # (A,)
    p0 = prior.zero_probability
    log_w = np.log(np.concatenate([[p0], np.full(prior.amplitudes.size, (1 - p0) / prior.amplitudes.size)]))
    sigma = np.asarray(sigma, dtype=np.float64)[..., None]
    log_post = log_w - 0.5 * ((y[..., None] - support) / sigma) ** 2  # (..., A)
    log_post -= logsumexp(log_post, axis=-1, keepdims=True)
    return np.exp(log_post) @ support



# --- Bayes MSE table and the wavelet baseline ---------------------------------------------------


def bayes_mse(sigmas: np.ndarray) -> np.ndarray:
    """The Bayes (minimum) MSE per sample of the benchmark prior at each noise level σ.

    Interpolated (log-log) on a table of 41 levels from 0.05 to 20, each measured once
    on 2000 signals drawn from its own seed (``default_rng([4242, k])``); blind training
    divides each signal's loss by it so that no noise level dominates.

    Parameters
    ----------
    sigmas : np.ndarray
        Noise levels, any shape; clipped to the table's range.

    Returns
    -------
    np.ndarray
        The Bayes MSE at each σ, same shape.
    """
    log_grid, log_mse = _bayes_mse_table()
    return np.exp(np.interp(np.log(np.clip(sigmas, 0.05, 20.0)), log_grid, log_mse))


@lru_cache(maxsize=1)
def _bayes_mse_table() -> tuple[np.ndarray, np.ndarray]:
    grid = np.geomspace(0.05, 20.0, 41)
    values = []
    for k, sigma in enumerate(grid):
        clean, noisy, _ = noisy_pairs(np.random.default_rng([4242, k]), 2000, float(sigma))
        values.append(float(((bayes_posterior_mean(noisy, sigma) - clean) ** 2).mean()))
    return np.log(grid), np.log(np.maximum(values, 1e-12))  # tiny σ: the posterior is exact, MSE 0

def wavelet(y: np.ndarray, sigma: float | np.ndarray = SIGMA, method: str = "BayesShrink",
            wavelet_name: str = "db1", mode: str = "soft", levels: int | None = None) -> np.ndarray:
    """Wavelet shrinkage, ``skimage.restoration.denoise_wavelet`` applied to each signal.

    scikit-image's defaults (Haar wavelet, soft thresholds, the number of levels
    it picks: 3 for L = 100) with the noise level given, not estimated.

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, (N, L) or (L,).
    sigma : float or np.ndarray
        Noise level: a scalar, or one per signal (shape (N,) or (N, 1)).
    method : {"BayesShrink", "VisuShrink"}
        BayesShrink: a threshold σ²/σ_x per subband (Chang, Yu & Vetterli 2000);
        VisuShrink: the universal threshold σ·√(2 ln L) (Donoho & Johnstone 1994).
    wavelet_name, mode, levels
        Passed to ``denoise_wavelet`` as ``wavelet``, ``mode``, ``wavelet_levels``.

    Returns
    -------
    np.ndarray
        Denoised signals, same shape as ``y``, float64.
    """
    from skimage.restoration import denoise_wavelet  # heavy import, only when used

    y = np.asarray(y, dtype=np.float64)
    rows = np.atleast_2d(y)
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=np.float64).reshape(-1), (rows.shape[0],))
    # BayesShrink floors σ_x² at float64's eps, an absolute scale: each signal near 1 (a power of two, exact) keeps
    # it equivariant below σ ≈ 1e-8 and keeps σ² finite above 1e154
    p = power_of_two(rows)
    # channel_axis: each signal is one channel, thresholded on its own (skimage loops over them).
    out = denoise_wavelet(np.ascontiguousarray((rows / p).T), sigma=list(sigmas / p[:, 0]), wavelet=wavelet_name,
                          mode=mode, wavelet_levels=levels, method=method, channel_axis=-1, rescale_sigma=True)
    return (out.T * p).reshape(y.shape)

# --- Blind Bayes oracle: σ unknown, marginalised over a prior range ---------------------


def _sigma_grid(sigma_range: tuple[float, float], n_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Geometric grid over ``sigma_range`` and the log prior mass of each cell under a uniform prior.

    A log-spaced grid keeps the same relative resolution at small and large σ (the posterior
    of σ given one signal has a roughly constant relative width); each node carries the
    mass of its cell, so the prior stays uniform in σ.
    """
    low, high = float(sigma_range[0]), float(sigma_range[1])
    if not (0 < low <= high and np.isfinite(high)) or n_grid < 1:
        raise ValueError(f"sigma_range must satisfy 0 < low <= high and n_grid >= 1, got {sigma_range}, {n_grid}")
    if low == high or n_grid == 1:
        return np.array([np.sqrt(low * high)]), np.zeros(1)
    edges = np.geomspace(low, high, n_grid + 1)
    return np.sqrt(edges[:-1] * edges[1:]), np.log(np.diff(edges))


def _spike_loglik_and_mean(y: np.ndarray, sigma: float, prior: SpikePrior) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood of each signal (last axis) at noise ``sigma``, and the σ-aware posterior mean."""
    support = np.concatenate([[0.0], prior.amplitudes])
    p0 = prior.zero_probability
    log_w = np.log(np.concatenate([[p0], np.full(prior.amplitudes.size, (1 - p0) / prior.amplitudes.size)]))
    log_joint = log_w - 0.5 * ((y[..., None] - support) / sigma) ** 2  # (..., L, A)
    log_marginal = logsumexp(log_joint, axis=-1)  # (..., L), without the Gaussian constant
    loglik = log_marginal.sum(axis=-1) - y.shape[-1] * np.log(sigma)
    mean = np.exp(log_joint - log_marginal[..., None]) @ support
    return loglik, mean


def bayes_blind_posterior_mean(
    y: np.ndarray,
    sigma_range: tuple[float, float] = (0.5, 5.0),
    n_grid: int = 96,
    prior: SpikePrior = SpikePrior(),
    return_sigma: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The blind minimum-MSE denoiser: E[x | y] with σ unknown, uniform on ``sigma_range``.

    For each signal (the last axis), the likelihood of the whole signal under the spike
    prior is computed at every σ of a grid; the posterior of σ (uniform prior) then
    weights the σ-aware posterior means:
    E[x | y] = Σ_k p(σ_k | y) · E[x | y, σ_k]. This is the honest limit of a denoiser
    that is told nothing about σ but was trained on that range. Samples are treated as
    independent given σ, with the marginal of :func:`bayes_posterior_mean` (the same
    approximation the σ-aware oracle makes).

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, shape (L,) or (..., L); each row is one signal with one σ.
    sigma_range : (float, float)
        Prior range [low, high] of σ, 0 < low <= high. low == high gives the σ-aware oracle.
    n_grid : int
        Number of σ nodes, log-spaced; 96 spaces them 2.4 % apart on 0.5..5, well below
        the posterior width of σ given 100 samples (about 8 %).
    prior : SpikePrior
        The clean-signal distribution.
    return_sigma : bool
        Also return the posterior mean of σ for each signal.

    Returns
    -------
    np.ndarray
        Posterior mean, same shape as ``y``; with ``return_sigma``, also E[σ | y],
        shape ``y.shape[:-1]``.
    """
    y = np.asarray(y, dtype=np.float64)
    grid, log_prior = _sigma_grid(sigma_range, n_grid)
    def terms():
        for sigma, lp in zip(grid, log_prior):
            loglik, mean = _spike_loglik_and_mean(y, sigma, prior)
            yield loglik + lp, mean, sigma

    out, sigma_mean = _posterior_average(terms(), y.shape)
    return (out, sigma_mean) if return_sigma else out


def _posterior_average(terms, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Σ_k w_k·mean_k / Σ_k w_k and Σ_k w_k·value_k / Σ_k w_k, with w_k = exp(score_k), for ``terms``
    yielding (score (...,), mean (..., L), value): a streaming softmax, so the K posterior means are
    never held at once and no weight overflows."""
    top = np.full(shape[:-1], -np.inf)
    norm = np.zeros(shape[:-1])
    acc = np.zeros(shape)
    value_acc = np.zeros(shape[:-1])
    for score, mean, value in terms:
        new_top = np.maximum(top, score)
        scale, weight = np.exp(top - new_top), np.exp(score - new_top)
        norm = norm * scale + weight
        acc = acc * scale[..., None] + weight[..., None] * mean
        value_acc = value_acc * scale + weight * value
        top = new_top
    return acc / norm[..., None], value_acc / norm


def bayes_equivariant_posterior_mean(
    y: np.ndarray,
    sigma: float | tuple[float, float] = SIGMA,
    scale_range: tuple[float, float] = (0.2, 5.0),
    n_grid: int = 400,
    prior: SpikePrior = SpikePrior(),
    n_sigma: int = 48,
    offset_free: bool = False,
    offset_half_width: float = 1.0,
    n_offset: int = 21,
) -> np.ndarray:
    """The best scale-equivariant denoiser of the benchmark: the limit of a model with f(a·y) = a·f(y).

    Such a model cannot know the units: the clean signal and the noise may both be scaled by any
    a > 0. Its best estimate (Pitman's, for the scale group and a squared error in the signal's own
    units) averages the σ-aware posterior means of y / a over the posterior of a, under the
    scale-invariant prior da / a, each weighted by a⁻² for the loss: f(y) = Σ w_a · a·E[x | y/a] / Σ w_a
    with w_a ∝ p(y | a) · a⁻². The grid is log-spaced over ``scale_range``, wide enough that the
    posterior of a given 100 samples (a few % wide) never reaches its ends for signals drawn at a = 1.

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, shape (L,) or (..., L); each row one signal.
    sigma : float or (float, float)
        The noise level of the prior at a = 1, or a range [low, high] with σ uniform on it (the blind
        models' prior): then σ is marginalised too, on ``n_sigma`` nodes (:func:`_sigma_grid`).
    scale_range, n_grid
        The grid of a.
    prior : SpikePrior
        The clean-signal distribution at a = 1.
    n_sigma : int
        σ nodes when ``sigma`` is a range.
    offset_free : bool
        Also f(y + c) = f(y) + c, the limit of an offset-free and scale-equivariant model: the record may carry
        any baseline c too. Pitman's estimate for the location-scale group (the right Haar prior dc·da / a)
        averages c + a·E[x | (y − c)/a] over the posterior of (c, a). The grid of c, per node of (a, σ), is
        centred on each signal's lower median (so the estimate is exactly offset-free) and spans
        ± ``offset_half_width``·a·σ on ``n_offset`` nodes: the posterior of c given 100 samples is about
        a·σ/9 wide, and the median sits about a·σ/3 above the baseline when a fifth of the samples are spikes.

    Returns
    -------
    np.ndarray
        The estimate, same shape as ``y``.
    """
    y = np.asarray(y, dtype=np.float64)
    sigmas, log_prior = _sigma_grid(tuple(sigma) if np.ndim(sigma) else (sigma, sigma), n_sigma)
    log_scales = np.linspace(np.log(scale_range[0]), np.log(scale_range[1]), n_grid)
    if offset_free:
        k = (y.shape[-1] - 1) // 2
        centre = np.partition(y, k, axis=-1)[..., k : k + 1]
        steps = np.linspace(-offset_half_width, offset_half_width, n_offset)

    def at_scale(a, sigma_k):
        """(log p(y | a, σ) + log of the node's mass in c, the estimate), one pair per signal."""
        if not offset_free:
            loglik, mean = _spike_loglik_and_mean(y / a, sigma_k, prior)
            return loglik, a * mean
        c = centre[..., None, :] + (a * sigma_k) * steps[:, None]  # (..., C, 1)
        loglik, mean = _spike_loglik_and_mean((y[..., None, :] - c) / a, sigma_k, prior)  # (..., C), (..., C, L)
        top = loglik.max(axis=-1, keepdims=True)
        w = np.exp(loglik - top)
        estimate = (w[..., None] * (c + a * mean)).sum(axis=-2) / w.sum(axis=-1)[..., None]
        # the c nodes are a·σ·Δt apart: each carries that much of the flat prior dc
        return top[..., 0] + np.log(w.sum(axis=-1)) + np.log(a * sigma_k), estimate

    def terms():
        for sigma_k, lp in zip(sigmas, log_prior):
            for log_a in log_scales:
                a = np.exp(log_a)
                loglik, estimate = at_scale(a, sigma_k)
                # p(y | a) = a^-L p(y/a | 1), times the loss weight a^-2, times σ's prior mass
                yield loglik - y.shape[-1] * log_a - 2 * log_a + lp, estimate, a

    return _posterior_average(terms(), y.shape)[0]


def bayes_offset_free_posterior_mean(
    y: np.ndarray,
    sigma: float = SIGMA,
    half_width: float = 3.0,
    n_grid: int = 241,
    prior: SpikePrior = SpikePrior(),
) -> np.ndarray:
    """The best offset-free denoiser of the benchmark: the limit of a model with f(y + c) = f(y) + c.

    Such a model cannot know where the zero baseline sits: the record may carry any offset c. Its best
    estimate (Pitman's, for the translation group, under the flat prior on c) averages the σ-aware
    posterior means of y − c, shifted back by c, over the posterior of c:
    f(y) = Σ w_c · (c + E[x | y − c]) / Σ w_c with w_c ∝ p(y − c). The grid of c is centred on the
    lower median of each signal (so the estimate is exactly offset-free) and spans ± ``half_width``·σ,
    far wider than the posterior of c given 100 samples (about σ/9).

    Parameters
    ----------
    y : np.ndarray
        Noisy signals, shape (L,) or (..., L); each row one signal.
    sigma : float
        The noise level (known: this limit isolates what the offset alone costs).
    half_width, n_grid
        The grid of c around each signal's lower median, in units of σ.
    prior : SpikePrior
        The clean-signal distribution at c = 0.

    Returns
    -------
    np.ndarray
        The estimate, same shape as ``y``.
    """
    y = np.asarray(y, dtype=np.float64)
    k = (y.shape[-1] - 1) // 2
    centre = np.partition(y, k, axis=-1)[..., k : k + 1]

    def terms():
        for step in np.linspace(-half_width, half_width, n_grid) * sigma:
            c = centre + step
            loglik, mean = _spike_loglik_and_mean(y - c, sigma, prior)
            yield loglik, mean + c, 0.0

    return _posterior_average(terms(), y.shape)[0]

"""Classical denoisers, batched over (N, L): Wiener, L1 / GMC sparse least squares,
soft threshold, and the Bayes minimum-MSE oracle (REFERENCE sections 4-5)."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.special import logsumexp

from signals.synthesis import SIGMA, SpikePrior

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
    # uniform_filter1d with zero padding equals correlate(x, ones(w), 'same') / w.
    local_mean = uniform_filter1d(x, window, axis=-1, mode="constant")
    local_var = uniform_filter1d(x * x, window, axis=-1, mode="constant") - local_mean**2
    noise = local_var.mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = 1.0 - noise / local_var
        filtered = local_mean + gain * (x - local_mean)
    # scipy uses `<`; `<=` gives the same values (gain is 0 at equality) and keeps an
    # all-zero signal (0/0) finite.
    return np.where(local_var <= noise, local_mean, filtered)


def wiener_inverse_response(x: np.ndarray, rel_floor: float = 1e-3) -> np.ndarray:
    """Magnitude of the Wiener filter's equivalent system, |ifft(fft(wiener(x)) / fft(x))|.

    FFT bins of ``x`` near zero are guarded with a Tikhonov floor
    ``(rel_floor · max|X|)²`` so ``h`` stays finite. Shape (N, L) for (N, L) input.
    """
    x = np.asarray(x, dtype=np.float64)
    spectrum = np.fft.fft(x, axis=-1)
    filtered = np.fft.fft(wiener(x), axis=-1)
    power = np.abs(spectrum) ** 2
    floor = (rel_floor * np.abs(spectrum).max(axis=-1, keepdims=True)) ** 2 + 1e-30
    transfer = filtered * np.conj(spectrum) / (power + floor)
    return np.abs(np.fft.ifft(transfer, axis=-1))


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
    each signal stops exactly when the seed's per-signal loop would.
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

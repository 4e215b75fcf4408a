"""The field's strongest classical peers: exact 1-D TV (deepdenoise1d.tv), translation-invariant wavelet
shrinkage (deepdenoise1d.swt), and their places on the SURE scoreboard. Generated data only; the
property test runs ``FUZZ`` (100 examples)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import FUZZ
from deepdenoise1d import scoreboard, swt, tv

pywt = pytest.importorskip("pywt")

signals = hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e3, 1e3, allow_nan=False))


@FUZZ
@given(y=signals, weight=st.floats(1e-3, 1e3))
def test_tv_meets_the_optimality_conditions(y, weight):
    """x solves min ½‖y − x‖² + λ Σ|Δx| iff the running sums z of y − x end at 0, stay in [−λ, λ], and equal
    −λ·sign(Δx) at every jump."""
    x = tv.denoise_tv(y, weight)
    z = np.cumsum(y - x)
    scale = 1e-9 * (1 + np.abs(y).sum() + weight)
    assert abs(z[-1]) <= scale
    assert np.all(np.abs(z[:-1]) <= weight + scale)
    jumps = np.diff(x) != 0
    np.testing.assert_allclose(z[:-1][jumps], -weight * np.sign(np.diff(x)[jumps]), atol=scale)


def test_tv_matches_an_iterative_solver_and_its_limits():
    from skimage.restoration import denoise_tv_chambolle

    rng = np.random.default_rng(0)
    y = np.repeat(rng.normal(size=8), 25) + 0.3 * rng.normal(size=200)
    # scikit-image's weight w solves min ‖y − x‖²/(2w) + TV(x)... on a 1-D array: the same problem at λ = w
    slow = denoise_tv_chambolle(y, weight=0.4, eps=1e-12, max_num_iter=200_000)
    np.testing.assert_allclose(tv.denoise_tv(y, 0.4), slow, atol=2e-4)
    np.testing.assert_array_equal(tv.denoise_tv(y, 0.0), y)
    np.testing.assert_allclose(tv.denoise_tv(y, 1e9), np.full_like(y, y.mean()))  # one run: the mean
    assert tv.denoise_tv(y[None], 0.4).shape == (1, 200)


def test_tv_divergence_is_its_number_of_runs():
    """SURE's exact divergence for TV (the rank of the projection onto its runs) equals a finite-difference one."""
    rng = np.random.default_rng(1)
    y = np.repeat(rng.normal(size=6) * 3, 30) + rng.normal(size=180)
    weight = 2.0
    x = tv.denoise_tv(y, weight)
    eps, fd = 1e-7, 0.0
    for j in range(y.size):
        e = np.zeros_like(y)
        e[j] = eps
        fd += (tv.denoise_tv(y + e, weight)[j] - tv.denoise_tv(y - e, weight)[j]) / (2 * eps)
    assert tv.runs(x) == pytest.approx(fd, abs=1e-4)
    assert 1 < tv.runs(x) < y.size


def test_tv_sure_chooses_a_weight_near_the_best_and_the_scoreboard_is_exact():
    rng = np.random.default_rng(2)
    clean = np.repeat(rng.normal(size=16) * 2, 128)
    sigma = 0.5
    y = clean + sigma * rng.standard_normal(clean.size)
    weight, scores = tv.choose_weight(y, sigma)
    truth = {w: float(np.mean((tv.denoise_tv(y, w) - clean) ** 2)) for w in scores}
    assert truth[weight] <= 1.15 * min(truth.values())
    e = scoreboard.sure_estimate(scoreboard.classical_candidates(sigma)["tv"], y, sigma)
    assert e.exact and e.probes == 0 and e.sure == pytest.approx(scores[weight], rel=1e-12)
    assert abs(e.sure - truth[weight]) <= 3 * e.sure_se  # one noise draw: within its standard error


def test_tv_refuses_bad_weights_and_sigmas():
    with pytest.raises(ValueError, match="weight"):
        tv.denoise_tv(np.ones(5), -1.0)
    with pytest.raises(ValueError, match="sigma"):
        tv.choose_weight(np.ones(5), 0.0)


@pytest.mark.parametrize("method", swt.METHODS)
def test_swt_is_translation_invariant(method):
    """With no padding (L a multiple of 2^levels) the stationary transform is circular: a circular shift of the
    input shifts the output, sample for sample; the decimated transform does not."""
    rng = np.random.default_rng(3)
    y = np.sin(np.linspace(0, 12, 512)) * 3 + rng.normal(size=512) * 0.5
    levels = 5
    out = swt.denoise_swt(y, 0.5, "sym8", method, levels=levels)
    for shift in (1, 7, 100):
        shifted = swt.denoise_swt(np.roll(y, shift), 0.5, "sym8", method, levels=levels)
        np.testing.assert_allclose(shifted, np.roll(out, shift), atol=1e-10)


def test_swt_thresholds():
    rng = np.random.default_rng(4)
    d = rng.normal(size=400) * 2.0
    assert np.isinf(swt.bayes_threshold(d * 0.5, 2.0))  # pure noise below σ: the level is zeroed
    t = swt.sure_threshold(d, 2.0)
    grid = np.linspace(0, 10, 4001)
    risk = [np.sum(np.minimum(np.abs(d) / 2, g) ** 2) + 400 - 2 * np.sum(np.abs(d) / 2 <= g) for g in grid]
    best = grid[int(np.argmin(risk))] * 2
    sure = lambda s: np.sum(np.minimum(np.abs(d) / 2, s / 2) ** 2) + 400 - 2 * np.sum(np.abs(d) / 2 <= s / 2)  # noqa: E731
    assert sure(t) <= sure(best) + 1e-9
    assert swt.sure_threshold(np.zeros(0), 1.0) == 0.0


def test_swt_beats_decimated_shrinkage_and_keeps_shape():
    from deepdenoise1d import classical

    rng = np.random.default_rng(5)
    clean = pywt.data.demo_signal("Doppler", 1000)  # not a multiple of 2^levels: padded and cropped
    sigma = clean.std() / 4
    y = clean + sigma * rng.normal(size=clean.size)
    ti = swt.denoise_swt(y, sigma, method="SURE")
    assert ti.shape == y.shape
    rmse = lambda e: np.sqrt(np.mean((e - clean) ** 2))  # noqa: E731
    assert rmse(ti) < rmse(classical.wavelet(y, sigma, "BayesShrink", "sym8")) < rmse(y)
    with pytest.raises(ValueError, match="method"):
        swt.denoise_swt(y, sigma, method="Visu")


def test_the_peers_are_candidates_with_their_own_method_names():
    names = scoreboard.candidate_names(())
    for name in ("tv", "wavelet_ti_sym8_bayes", "wavelet_ti_sym8_sure"):
        assert name in names
    y = np.random.default_rng(6).normal(size=(2, 300))
    for name in ("tv", "wavelet_ti_sym8_bayes", "wavelet_ti_sym8_sure"):
        assert scoreboard.classical_candidates(1.0)[name](y).shape == y.shape  # rows are signals


def test_bayes_and_visu_agree_where_both_thresholds_clear_the_only_level():
    """Why two decimated candidates can give the same estimate: on a short smooth record scikit-image keeps one
    level for sym8, and when that level is pure noise both rules zero all of it."""
    from deepdenoise1d import classical

    rng = np.random.default_rng(7)
    t = np.arange(309)
    clean = 100 + 50 * np.sin(2 * np.pi * t / 60)
    sigma = 5.0
    for seed in range(20):  # a draw whose finest band has variance below σ² (about half of them)
        y = clean + sigma * np.random.default_rng([7, seed]).normal(size=t.size)
        d = pywt.wavedec(y, "sym8", level=1)[1]
        if np.var(d) + np.mean(d) ** 2 <= sigma**2 and np.abs(d).max() < sigma * np.sqrt(2 * np.log(t.size)):
            break
    else:
        pytest.fail("no draw with a pure-noise finest band")
    bayes = classical.wavelet(y, sigma, "BayesShrink", "sym8")
    visu = classical.wavelet(y, sigma, "VisuShrink", "sym8")
    np.testing.assert_array_equal(bayes, visu)

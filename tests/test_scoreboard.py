"""deepdenoise1d.scoreboard (SURE per candidate, no labels) and scripts/scoreboard_study.py.

Records are generated here (pywt.data ships its demo signals and the ECG on disk). The property
test runs 25 examples (``FUZZ`` with ``max_examples=25``).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FUZZ, REPO_ROOT, load_script
from deepdenoise1d import classical, scoreboard
from deepdenoise1d.synthesis import SIGMA, benchmark_signals

pywt = pytest.importorskip("pywt")

LENGTH = 2048  # the study's short size: at 1024, Doppler's two BayesShrink wavelets differ by less than SURE's noise


def demo_records() -> dict:
    """``{name: (clean, σ)}``: spikes (rows of 100), the four pywt demo signals and the ECG, rsnr 7."""
    records = {"spikes": (benchmark_signals(5, 10, SIGMA)[0], SIGMA)}
    for name in ("Bumps", "Blocks", "HeaviSine", "Doppler"):
        clean = pywt.data.demo_signal(name, LENGTH)
        records[name] = (clean, clean.std() / 7)
    ecg = pywt.data.ecg().astype(np.float64)
    records["ecg"] = (ecg, ecg.std() / 7)
    return records


@pytest.fixture(scope="module")
def network():
    """The shipped ckpt_best in NumPy, both BN modes, in windows of its training length, as the front-end passes it in."""
    from icnn.shipped import default_weights
    from Numpy_V2.model import load_h5

    net = load_h5(default_weights(".h5"))
    return scoreboard.network_candidates(lambda noisy, mode: net.denoise(noisy, bn_mode=mode), ("fixed", "unfixed"),
                                         train_length=net.config.train_length)


def noisy_draw(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return clean + sigma * np.random.default_rng([seed, 7]).standard_normal(clean.shape)


def true_rmse(f, y, clean) -> float:
    return float(np.sqrt(np.mean((np.asarray(f(y), dtype=np.float64).reshape(y.shape) - clean) ** 2)))


def test_identity_is_sigma_exactly_with_the_chi2_length_error():
    y = np.random.default_rng(0).normal(size=500) * 2.0
    e = scoreboard.sure_estimate(scoreboard.classical_candidates(2.0)["noisy"], y, 2.0)
    assert e.exact and e.sure == pytest.approx(4.0, abs=1e-12) and e.rmse == pytest.approx(2.0)
    assert e.probe_se == 0 and e.length_se == pytest.approx(4.0 * math.sqrt(2 / 500))  # var(‖z‖²/n) = 2σ⁴/n


def linear_filter(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n)) / math.sqrt(n) + np.diag(rng.uniform(0, 1, n))


@settings(FUZZ, max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(8, 80), sigma=st.floats(0.01, 100.0))
def test_monte_carlo_divergence_of_a_linear_map_is_its_trace_within_its_se(seed, n, sigma):
    a = linear_filter(seed, n)
    y = np.random.default_rng(seed + 1).normal(size=n) * sigma
    e = scoreboard.sure_estimate(lambda v: v @ a.T, y, sigma, probes=16, seed=seed)
    trace_se = e.probe_se * n / (2 * sigma**2)
    assert trace_se > 0 and not e.exact
    assert abs(e.divergence * n - np.trace(a)) <= 6 * trace_se  # a 6-se miss has probability < 1e-6 (t, 15 dof: < 1e-4)


def test_exact_diagonal_and_probes_agree_for_the_soft_threshold():
    clean, sigma = demo_records()["Blocks"]
    y = noisy_draw(clean, sigma, 1)
    soft = scoreboard.classical_candidates(sigma)["soft"]
    exact = scoreboard.sure_estimate(soft, y, sigma)
    probed = scoreboard.sure_estimate(soft.f, y, sigma, probes=16)
    assert exact.exact and not probed.exact
    assert exact.divergence == np.mean(np.abs(y) > sigma)
    assert abs(probed.sure - exact.sure) <= 4 * probed.probe_se + 1e-12


@pytest.mark.parametrize("record", ["spikes", "Bumps", "Blocks", "HeaviSine", "Doppler", "ecg"])
def test_every_estimate_agrees_with_the_true_rmse_and_auto_is_within_3_percent(record, network):
    clean, sigma = demo_records()[record]
    candidates = {**scoreboard.classical_candidates(sigma), **network}
    y = noisy_draw(clean, sigma, 2)
    ranking = scoreboard.rank(candidates, y, sigma)
    truth = {name: true_rmse(f, y, clean) for name, f in candidates.items()}
    for name, e in ranking.estimates.items():
        assert abs(e.rmse - truth[name]) <= 4 * e.se, (name, e.rmse, e.se, truth[name])
    # within 3 %, or within what SURE can resolve on this record: the two candidates' standard errors combined
    # (1000 spike samples: ckpt_best's fixed and unfixed modes are 3.5 % apart, about one standard error)
    best = min(truth, key=truth.get)
    resolvable = math.hypot(ranking.estimates[ranking.chosen].se, ranking.estimates[best].se)
    assert truth[ranking.chosen] <= max(1.03 * truth[best], truth[best] + resolvable), (ranking.chosen, truth)
    assert ranking.chosen == min(ranking.estimates, key=lambda k: ranking.estimates[k].sure)


def test_standard_error_matches_the_spread_over_fresh_noise():
    clean, sigma = demo_records()["HeaviSine"]
    candidates = {k: v for k, v in scoreboard.classical_candidates(sigma).items()
                  if k in ("noisy", "wiener5", "wavelet_sym8_bayes", "soft")}
    errors, ses = {k: [] for k in candidates}, {k: [] for k in candidates}
    for draw in range(16):
        y = noisy_draw(clean, sigma, 100 + draw)
        ranking = scoreboard.rank(candidates, y, sigma, seed=draw)
        for name, e in ranking.estimates.items():
            errors[name].append(e.rmse - true_rmse(candidates[name], y, clean))
            ses[name].append(e.se)
    for name in candidates:
        measured, predicted = np.std(errors[name], ddof=1), np.sqrt(np.mean(np.square(ses[name])))
        assert 0.4 * predicted <= measured <= 2.0 * predicted, (name, measured, predicted)
        assert abs(np.mean(errors[name])) <= 4 * measured / math.sqrt(16)  # unbiased: the mean within 4 of its se


def test_a_1d_record_and_its_rows_give_the_network_the_same_shape_back(network):
    y = np.random.default_rng(3).normal(size=300) * SIGMA
    out = network["net_fixed"](y)
    assert out.shape == y.shape and np.isfinite(out).all()


def test_rmse_and_se_stay_finite_at_negative_sure():
    assert scoreboard.rmse_and_se(-0.5, 0.04) == (0.0, pytest.approx(0.2))
    rmse, se = scoreboard.rmse_and_se(1.0, 0.01)
    assert rmse == 1.0 and se == pytest.approx(0.01 / 2, rel=0.01)


def test_summary_names_every_candidate_and_the_choice():
    clean, sigma = demo_records()["Bumps"]
    ranking = scoreboard.rank(scoreboard.classical_candidates(sigma), noisy_draw(clean, sigma, 4), sigma)
    summary = json.loads(json.dumps(ranking.summary()))
    assert set(summary["estimates"]) == set(scoreboard.candidate_names(())) and summary["sigma"] == sigma
    assert summary["chosen"] in summary["estimates"]
    assert summary["estimates"][summary["chosen"]] == min(summary["estimates"].values())
    assert f"| {summary['chosen']} * |" in ranking.table()


@pytest.mark.parametrize("call, fragment", [
    (lambda y: scoreboard.sure_estimate(lambda v: v, y, 0.0), "sigma"),
    (lambda y: scoreboard.sure_estimate(lambda v: v, y, 1.0, probes=1), "probes"),
    (lambda y: scoreboard.sure_estimate(lambda v: v[:-1], y, 1.0), "returned"),
    (lambda y: scoreboard.rank({}, y, 1.0), "no candidates"),
])
def test_bad_calls_are_refused(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call(np.zeros(32))


def test_wiener_candidates_are_the_classical_wiener():
    y = np.random.default_rng(6).normal(size=(3, 100))
    for window in scoreboard.WIENER_WINDOWS:
        np.testing.assert_array_equal(scoreboard.classical_candidates(1.0)[f"wiener{window}"](y),
                                      classical.wiener(y, window))


def test_study_script_writes_table_json_and_figures(tmp_path, capsys):
    study = load_script(REPO_ROOT / "scripts" / "scoreboard_study.py", "scoreboard_study")
    out = tmp_path / "table.md"
    summaries = study.main(["--sizes", "512", "--repeats", "3", "--records", "Bumps_512", "ecg", "spikes_20x100",
                            "--models", "ckpt_best", "--output", str(out), "--fig-dir", str(tmp_path / "figs")])
    assert [s["record"] for s in summaries] == ["spikes_20x100", "Bumps_512", "ecg"]
    rows = json.loads(out.with_suffix(".json").read_text())
    for s in rows:
        assert set(s["candidates"]) == set(scoreboard.candidate_names(())) | {"ckpt_best_fixed", "ckpt_best_unfixed"}
        # at 512 samples the best candidates can be closer than SURE's standard error (a few %): on average near the best
        assert s["chosen_true"] >= s["best_true"] and s["mean_gap"] <= 0.06
        for c in s["candidates"].values():
            assert abs(c["estimate"] - c["true"]) <= 4 * c["se"]
        assert (tmp_path / "figs" / f"{s['record']}.png").stat().st_size > 0
    assert "## Auto choice" in out.read_text() and "| Bumps_512 |" in out.read_text()


def test_exact_network_jacobian_agrees_with_the_probes_and_windows_fall_back_to_probes():
    from icnn.shipped import default_weights
    from Numpy_V2.jacobian import jacobians
    from Numpy_V2.model import load_h5

    net = load_h5(default_weights(".h5"))

    def make(jacobian):
        return scoreboard.network_candidates(lambda noisy, mode: net.denoise(noisy, bn_mode=mode), ("fixed", "unfixed"),
                                             train_length=net.config.train_length, jacobian=jacobian)

    exact = make(lambda rows, mode: jacobians(net, rows, mode)["jacobian"])
    probed = make(None)
    clean, sigma = demo_records()["spikes"]
    y = noisy_draw(clean, sigma, 9)
    for name in exact:
        e, p = (scoreboard.sure_estimate(c[name], y, sigma, probes=16) for c in (exact, probed))
        assert e.exact and not p.exact and e.probe_se == 0
        assert abs(e.divergence - p.divergence) * y.size <= 5 * p.probe_se * y.size / (2 * sigma**2), name
        assert abs(e.rmse - true_rmse(exact[name], y, clean)) <= 4 * e.se
    long = noisy_draw(*demo_records()["Bumps"], 9)[:300]
    assert not scoreboard.sure_estimate(exact["net_fixed"], long, 0.1).exact  # windows: no single Jacobian


def test_close_contenders_get_the_refined_probes_and_far_ones_do_not():
    clean, sigma = demo_records()["Doppler"]
    candidates = scoreboard.classical_candidates(sigma)
    ranking = scoreboard.rank(candidates, noisy_draw(clean, sigma, 11), sigma, probes=4, refine=12)
    pairs = {name: e.probes for name, e in ranking.estimates.items()}
    assert pairs["noisy"] == 0 and pairs["soft"] == 0  # exact: no probes
    assert pairs[ranking.chosen] == 12 and pairs["wavelet_db4_visu"] == 4  # the lead refined; a distant one not
    assert set(name for name, k in pairs.items() if k == 12) == set(scoreboard.contenders(
        {k: scoreboard.sure_estimate(candidates[k], noisy_draw(clean, sigma, 11), sigma, 4) for k in candidates}))


def test_the_exact_jacobian_of_a_scaled_network_is_the_nets_at_y_over_s():
    import copy
    from dataclasses import replace

    from icnn.shipped import default_weights
    from Numpy_V2.jacobian import denoise_jacobians
    from Numpy_V2.model import load_h5

    equivariant = load_h5(default_weights(".h5"))
    net = copy.copy(equivariant)  # the plain network sees absolute values, so input_scale changes it
    net.config = replace(equivariant.config, equivariant=False)
    scaled = copy.copy(net)  # the same weights, trained (say) on data divided by 7.5
    scaled.config = replace(net.config, input_scale=7.5)
    rows = 7.5 * noisy_draw(*demo_records()["spikes"], 3)[:1, :64]
    got = denoise_jacobians(scaled, rows, "fixed")[0]
    step = 1e-2 * 7.5  # central differences of s · net(y / s) along two coordinates
    for j in (10, 40):
        e = np.zeros_like(rows)
        e[0, j] = step
        column = (scaled.denoise(rows + e, "fixed") - scaled.denoise(rows - e, "fixed"))[0] / (2 * step)
        assert np.abs(column - got[:, j]).max() <= 0.05 * max(np.abs(got[:, j]).max(), 1e-3), j
    assert not np.allclose(got, denoise_jacobians(net, rows, "fixed")[0], atol=1e-3)
    # an equivariant network is the same function whatever input_scale says: s · F(y / s) = F(y)
    rescaled = copy.copy(equivariant)
    rescaled.config = replace(equivariant.config, input_scale=7.5)
    np.testing.assert_allclose(denoise_jacobians(rescaled, rows, "fixed")[0],
                               denoise_jacobians(equivariant, rows, "fixed")[0], atol=1e-6)


def test_probe_pairs_shrink_on_long_records_keeping_samples_times_pairs():
    assert scoreboard.probe_budget(1000, scoreboard.PROBES) == scoreboard.PROBES
    assert scoreboard.probe_budget(scoreboard.PROBE_SAMPLES, 64) == 64
    assert scoreboard.probe_budget(10 * scoreboard.PROBE_SAMPLES, 64) == 7  # ceil(6.4)
    assert scoreboard.probe_budget(10**9, 8) == 2
    y = np.random.default_rng(0).standard_normal(2 * scoreboard.PROBE_SAMPLES)
    ranking = scoreboard.rank({"wiener5": lambda v: classical.wiener(v, 5)}, y, 1.0, refine=16)
    assert ranking.estimates["wiener5"].probes == 8  # refined: 16 pairs halved for twice the samples

"""scripts/label_free_study.py and scripts/blind_study.py: the study scripts' tables and their write guard."""
from __future__ import annotations

import numpy as np
import pytest

from deepdenoise1d.errors import InputError

from conftest import REPO_ROOT, load_script


def test_label_free_study_reports_r2r_recorruption_mean_and_unsure_learned_sigma(tmp_path, capsys):
    import Pytorch_V1.train as train_mod
    from conftest import load_script

    for loss in ("r2r", "unsure"):
        args = ["--loss", loss, "--steps", "4", "--batch-size", "16", "--val-size", "40", "--eval-every", "2",
                "--device", "cpu"]
        train_mod.train(train_mod.config_from_args(train_mod.get_args(args)), tmp_path / loss)
    study = load_script(REPO_ROOT / "scripts" / "label_free_study.py", "label_free_study")
    out = tmp_path / "table.md"
    study.main([str(tmp_path / "r2r" / "ckpt_best.pth"), str(tmp_path / "unsure" / "ckpt_last.pth"),
                "--n", "20", "--draws", "2", "--score", "0.5:5", "--output", str(out)])
    scores = [line for line in capsys.readouterr().out.splitlines() if line.startswith("label-free score")]
    assert len(scores) == 2 and all(np.isfinite(float(line.split("): ")[1].split()[0])) for line in scores)
    rows = __import__("json").loads(out.with_suffix(".json").read_text())
    assert [(r["loss"], r["inference"]) for r in rows] == [("r2r", "f(y)"), ("r2r", "mean of 2 f(y + ασz)"),
                                                           ("unsure", "f(y)")]
    assert rows[2]["learned_sigma"] > 0 and all(np.isfinite(r["rmse"]) and r["vs_bayes"] > 0.9 for r in rows)
    assert rows[0]["rmse"] != rows[1]["rmse"]  # the recorruption mean is computed, not copied
    assert "| 3 |" in out.read_text()


@pytest.mark.parametrize("script, args", [
    ("blind_study.py", lambda ckpt: ["--sure", ckpt, "--blind", "none.pth", "--blind-sure", "none.pth"]),
    ("label_free_study.py", lambda ckpt: [ckpt]),
])
def test_study_scripts_refuse_to_write_over_a_checkpoint_they_read(script, args, tmp_path, run_main):
    from conftest import assert_one_line_error, load_script

    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes((REPO_ROOT / "ckpt" / "ckpt_sure.pth").read_bytes())
    before = ckpt.read_bytes()
    module = load_script(REPO_ROOT / "scripts" / script, script[:-3])
    code, out, err = run_main(module, [*args(str(ckpt)), "--n", "10", "--sigma", "3", "--output", str(ckpt)])
    assert_one_line_error(code, err, "refusing to overwrite")
    assert ckpt.read_bytes() == before and out == ""  # refused before any work


def test_equivariance_routes_shows_the_bias_free_route_fails_in_unfixed_mode(capsys):
    """The measurement behind the design choice: removing biases is equivariant only with fixed BN."""
    pytest.importorskip("torch")
    from conftest import load_script

    routes = load_script(REPO_ROOT / "scripts" / "equivariance_routes.py", "equivariance_routes")
    routes.main(["--n", "16"])
    rows = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:4]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| bias") or line.startswith("| scale")}
    assert rows["bias-free"][0] < 1e-4 < 1.0 < rows["bias-free"][1]  # fixed: homogeneous; unfixed: invariant instead
    assert max(rows["scale normalisation"]) < 1e-4


def test_record_study_trains_a_net_on_the_record_scores_it_and_reuses_the_run(tmp_path):
    """scripts/record_study.py: record_net (trained label-free on the record alone) in the tables, JSON and figure;
    --reuse takes the finished run without training again."""
    pytest.importorskip("torch")
    import json

    from conftest import load_script

    from deepdenoise1d.errors import InputError

    record_study = load_script(REPO_ROOT / "scripts" / "record_study.py", "record_study")
    work = tmp_path / "work"
    args = ["--records", "Bumps_2048", "--sizes", "2048", "--models", "--train-args",
            "--steps 4 --eval-every 2 --batch-size 8", "--probes", "2", "--work-dir", str(work),
            "--output", str(tmp_path / "r.md"), "--fig-dir", str(tmp_path / "figs")]
    record_study.main(args)
    row = [line for line in (tmp_path / "r.md").read_text().splitlines() if line.startswith("| Bumps_2048 |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].split("|")[1:-1]]
    assert len(cells) == 11 and np.isfinite(float(cells[5].split()[0]))  # record_net true RMSE (SURE est)
    assert cells[9] != "reused" and float(cells[9]) > 0  # training seconds
    summary = json.loads((tmp_path / "r.json").read_text())[0]
    net = summary["record_net"]
    assert summary["training"] == "trained" and np.isfinite([net["true"], net["estimate"], net["se"]]).all()
    assert summary["candidates"]["record_net"] == net and "wiener9" in summary["candidates"]
    assert (tmp_path / "figs" / "Bumps_2048.png").stat().st_size > 0
    best = work / "Bumps_2048" / "run" / "ckpt_best.pth"
    stamp = best.stat().st_mtime_ns
    record_study.main([*args, "--reuse"])
    assert best.stat().st_mtime_ns == stamp  # not trained again
    again = json.loads((tmp_path / "r.json").read_text())[0]
    assert again["training"] == "reused" and again["record_net"]["true"] == net["true"]
    assert "| reused |" in (tmp_path / "r.md").read_text()
    # neither flag: the earlier run is refused in one line, untouched
    with pytest.raises(InputError, match="already holds a run: --reuse .* --overwrite"):
        record_study.main(args)
    assert best.stat().st_mtime_ns == stamp


def test_equivariant_limits_orders_the_oracles():
    from conftest import load_script

    limits = load_script(REPO_ROOT / "scripts" / "equivariant_limits.py", "equivariant_limits").limits(2026, 24, 2.0)
    # each knows less than the one before; all beat the noise
    assert (limits["bayes"] < limits["blind"] < limits["equivariant blind"] < limits["equivariant offset-free blind"]
            < 2.0)


def test_field_table_scores_peers_networks_and_the_default_command(tmp_path):
    """One short record: the hindsight peers are at least as good as the same peers run by SURE, the default
    command's output is never worse than the noisy input, and the report and its JSON are written."""
    study = load_script(REPO_ROOT / "scripts" / "field_table.py", "field_table")
    rows = study.main(["--sizes", "512", "--rsnr", "4", "--records", "Blocks_512_r4", "--models", "ckpt_best",
                       "--output", str(tmp_path / "t.md")])
    (row,) = rows
    assert row["peers"]["TV (best weight)"][0] <= row["peers"]["tv"][0] + 1e-12
    assert row["default"]["rmse"] < row["noisy"] and row["default"]["gap"] >= -1e-6
    assert "| Blocks_512_r4 |" in (tmp_path / "t.md").read_text() and (tmp_path / "t.json").stat().st_size > 0
    with pytest.raises(SystemExit):
        study.get_args(["--output", str(tmp_path / "t.json")])  # the JSON goes beside a .md, never over it


def test_field_table_refuses_sizes_below_the_networks_minimum_before_any_work():
    from deepdenoise1d.errors import InputError

    study = load_script(REPO_ROOT / "scripts" / "field_table.py", "field_table_sizes")
    with pytest.raises(InputError, match="--sizes must be at least 32"):  # ckpt_universal: depth 5
        study.main(["--sizes", "20", "--models", "ckpt_best"])


def test_field_table_outside_suite_is_seeded_and_draws_a_figure(tmp_path):
    """The records unlike the prior are one seeded draw, and a figure shows the best peer and the first model."""
    study = load_script(REPO_ROOT / "scripts" / "field_table.py", "field_table_outside")
    first, again = study.outside_records(5), study.outside_records(5)
    assert first.keys() == again.keys() and all(np.array_equal(first[k][1], again[k][1]) for k in first)
    assert not np.array_equal(first["white_r3"][1], study.outside_records(6)["white_r3"][1])
    rows = study.main(["--suite", "outside", "--records", "co2_like_r3", "--models", "ckpt_best",
                       "--output", str(tmp_path / "o.md"), "--fig-dir", str(tmp_path)])
    assert rows[0]["record"] == "co2_like_r3" and (tmp_path / "co2_like_r3.png").stat().st_size > 0
    assert "`ckpt_best` ÷ best peer: geometric mean" in (tmp_path / "o.md").read_text()


def test_offset_table_shows_the_offset_free_models_unmoved():
    study = load_script(REPO_ROOT / "scripts" / "offset_table.py", "offset_table")
    text = study.main(["--n", "20"])
    best = next(line for line in text.splitlines() if line.startswith("| `ckpt_best` | median | NumPy"))
    cells = [c.strip() for c in best.strip("|").split("|")]
    assert cells[3] == cells[4] == cells[5] and float(cells[6]) <= 1e-6
    sure = next(line for line in text.splitlines() if line.startswith("| `ckpt_sure` | none | NumPy"))
    assert float(sure.strip("|").split("|")[6]) > 1.0  # a model that sees the level is far off at 10⁴σ


def test_broad_validation_scores_train_pys_metric(tmp_path):
    """The selection script's score of the shipped universal model: below the noisy input's 1, the same on a rerun."""
    study = load_script(REPO_ROOT / "scripts" / "broad_validation.py", "broad_validation")
    path = REPO_ROOT / "ckpt" / "ckpt_universal.h5"
    first = study.main(["--models", str(path), "--seeds", "3", "--n", "20"])
    assert 0 < first[str(path)][0] < 1
    assert study.main(["--models", str(path), "--seeds", "3", "--n", "20"]) == first


@pytest.mark.parametrize("flag, own_value, other_value, bad_value, message", [
    ("--windows", "512", "256", "8", "--windows 8: below the network's minimum length 32"),
    ("--overlaps", "256", "384", "512", "--overlaps 512: must be below the window, 512 samples"),
], ids=["windows", "overlaps"])
def test_broad_validation_scores_other_blends(flag, own_value, other_value, bad_value, message):
    """--windows and --overlaps: the model's own window (512), or its default overlap (half of it), scores as the
    default does; another value is another blend, scored apart; a value the window cannot take is refused in one line."""
    label = flag[2:-1]  # "window" or "overlap", as the rows are named
    study = load_script(REPO_ROOT / "scripts" / "broad_validation.py", f"broad_validation_{label}s")
    path = REPO_ROOT / "ckpt" / "ckpt_universal.h5"
    flags = ["--models", str(path), "--seeds", "3", "--n", "4", "--length", "1024"]
    own = study.main(flags)[str(path)]
    scored = study.main(flags + [flag, own_value, other_value])
    assert scored[f"{path} ({label} {own_value})"] == own
    assert scored[f"{path} ({label} {other_value})"] != own and 0 < scored[f"{path} ({label} {other_value})"][0] < 1
    with pytest.raises(InputError, match=message):
        study.main(flags + [flag, bad_value])


def test_adapt_study_runs_the_users_command_and_scores_start_and_adapted(tmp_path):
    """One tuning record, a few steps: the study runs train.py as a user would, scores both models against the
    clean signal, reads the held-out SURE of the start (step 0) and writes its table; the returned model is
    never worse than the start on the held-out windows."""
    study = load_script(REPO_ROOT / "scripts" / "adapt_study.py", "adapt_study")
    rows = study.main(["--suite", "tuning", "--records", "spikes", "--flags", "--steps 4 --eval-every 2",
                       "--work", str(tmp_path / "work"), "--output", str(tmp_path / "a.md")])
    (row,) = rows
    assert row["record"] == "spikes" and row["samples"] == study.TUNING_LENGTH and row["steps"] == 4
    assert 0 < row["start"] < row["noisy"] and 0 < row["adapted"] and row["sure_best"] <= row["sure_start"]
    assert (tmp_path / "work" / "spikes" / "ckpt_best.pth").is_file()
    assert "| spikes | 8192 |" in (tmp_path / "a.md").read_text()


def test_effective_taps_counts_equal_taps():
    study = load_script(REPO_ROOT / "scripts" / "norm_study.py", "norm_study_taps")
    identity = np.eye(40)[None]
    box = sum(np.eye(40, k=k) for k in (-1, 0, 1))[None]  # three equal taps (two at the ends)
    assert study.effective_taps(identity) == 1.0 and study.effective_taps(box) == 3.0


def test_norm_study_trains_each_run_once_and_reports_both_benchmarks(tmp_path):
    """Two tiny runs (20 steps), skipped when asked again; the report scores them and reads the filters."""
    import json

    study = load_script(REPO_ROOT / "scripts" / "norm_study.py", "norm_study")
    root = tmp_path / "norms"
    args = ["train", "--root", str(root), "--benchmarks", "spikes", "blind", "--norms", "shrink", "--seeds", "1",
            "--steps", "20"]
    study.main(args)
    seconds = {b: (root / b / "shrink_s1" / "study_seconds.txt").read_text() for b in ("spikes", "blind")}
    study.main(args)  # finished runs are not trained again
    assert {b: (root / b / "shrink_s1" / "study_seconds.txt").read_text() for b in ("spikes", "blind")} == seconds
    foreign = root / "spikes" / "frn_s1"  # a folder the study did not start is never resumed or written
    foreign.mkdir()
    (foreign / "ckpt_last.pth").write_bytes(b"someone else's")
    study.main(["train", "--root", str(root), "--benchmarks", "spikes", "--norms", "frn", "--seeds", "1", "--steps", "20"])
    assert sorted(p.name for p in foreign.iterdir()) == ["ckpt_last.pth"]
    out = tmp_path / "report" / "table.md"
    study.main(["report", "--root", str(root), "--output", str(out), "--fig-dir", str(tmp_path / "figures")])
    numbers = json.loads(out.with_suffix(".json").read_text())
    spikes, blind = numbers["spikes"]["shrink"]["1"], numbers["blind"]["shrink"]["1"]
    assert spikes["ratio_sigma3"] > 1 and set(blind["ratios"]) == {"1", "2", "3", "4", "5"}  # nothing beats Bayes
    reading = spikes["filter_sigma3"]
    assert 0 < reading["dof"] < 1 and 0 < reading["diagonal"] <= 1 and 0 <= reading["off"] <= 1
    assert 1 <= reading["taps"] <= 2 * study.TAPS_HALF_WIDTH + 1
    assert "| shrink | " in out.read_text() and "| bn | – |" in out.read_text()
    assert (tmp_path / "figures" / "filters_shrink.png").stat().st_size > 0
    assert (tmp_path / "figures" / "trace_by_sigma.png").stat().st_size > 0

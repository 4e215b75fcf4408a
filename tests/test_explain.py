"""Numpy_V2/explain.py: the command line (runs with torch unimportable, writes the archive and figures, bad input)."""
from __future__ import annotations

import numpy as np

from conftest import REPO_ROOT, assert_one_line_error, output_names, run_script
from Numpy_V2.jacobian import jacobians
from Numpy_V2.model import load_h5
from deepdenoise1d.synthesis import benchmark_signals


SCRIPT = REPO_ROOT / "Numpy_V2" / "explain.py"
CKPT = REPO_ROOT / "ckpt"


def test_cli_runs_with_torch_blocked(tmp_path):
    _, y = benchmark_signals(2026, 3, 3.0)
    np.save(tmp_path / "in.npy", y)
    result = run_script(SCRIPT, "--weights", CKPT / "ckpt_best.h5", "--input", tmp_path / "in.npy",
                        "--output", tmp_path / "out" / "j.npz", "--bn-mode", "unfixed", "--fig-dir", tmp_path / "fig",
                        cwd=tmp_path, block_torch=True)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "out" / "j.npz") as archive:
        assert archive["jacobian"].shape == (3, 100, 100)
        assert archive["offset"].shape == archive["output"].shape == (3, 100)
        expected = jacobians(load_h5(CKPT / "ckpt_best.h5", dtype=np.float64), y, "unfixed")
        np.testing.assert_allclose(archive["jacobian"], expected["jacobian"], rtol=0, atol=1e-12)
    assert output_names(tmp_path / "fig") == [
        "explain_adaptive_filters.png", "explain_feature_maps.png", "explain_jacobian_heatmaps.png", "explain_offset.png"]


def test_cli_bad_input_is_one_line(tmp_path):
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((2, 8)))
    result = run_script(SCRIPT, "--input", short, "--output", tmp_path / "j.npz", cwd=tmp_path, block_torch=True)
    assert_one_line_error(result.returncode, result.stderr, "length 8")
    good = tmp_path / "in.npy"
    np.save(good, np.zeros((1, 100)))
    result = run_script(SCRIPT, "--input", good, "--output", good, cwd=tmp_path, block_torch=True)
    assert_one_line_error(result.returncode, result.stderr, ".npz")
    result = run_script(SCRIPT, "--input", good, "--output", tmp_path, cwd=tmp_path, block_torch=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "short.npy"]


def test_a_signal_whose_jacobians_cannot_fit_is_refused_before_any_file(tmp_path):
    np.save(tmp_path / "long.npy", np.zeros(20_000, dtype=np.float32))
    result = run_script(SCRIPT, "--weights", CKPT / "ckpt_best.h5", "--input", tmp_path / "long.npy",
                        "--output", tmp_path / "new" / "J.npz", cwd=tmp_path, block_torch=True)
    assert_one_line_error(result.returncode, result.stderr, "Jacobians of 1 signal(s) of length 20000",
                          "over the limit", "--max-length")
    assert not (tmp_path / "new").exists()


def test_max_length_explains_the_first_samples(tmp_path):
    noisy = benchmark_signals(5, 1, 3.0)[1][0]
    np.save(tmp_path / "in.npy", np.tile(noisy, 3))
    result = run_script(SCRIPT, "--weights", CKPT / "ckpt_best.h5", "--input", tmp_path / "in.npy",
                        "--output", tmp_path / "J.npz", "--max-length", 100, cwd=tmp_path, block_torch=True)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "J.npz") as archive:
        assert archive["jacobian"].shape == (1, 100, 100)
        net = load_h5(CKPT / "ckpt_best.h5", dtype=np.float64)
        expected = jacobians(net, noisy[None], net.config.bn_mode)
        np.testing.assert_allclose(archive["output"], expected["output"], rtol=0, atol=1e-12)

"""Numpy_V2/Numpy_test.py: runs with torch unimportable, figures, table, JSON, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO_ROOT, assert_one_line_error, load_script, run_script

SCRIPT = REPO_ROOT / "Numpy_V2" / "Numpy_test.py"
CLASSICAL = {"wiener", "l1", "gmc", "soft", "bayes"}
SCORE_KEYS = {"rmse", "rmse_ci95", "psnr_paper", "psnr", "seconds_per_signal"}


@pytest.fixture
def numpy_test(tmp_path, monkeypatch):
    """The script as a module, its default weights pointed at a file that does not exist."""
    module = load_script(SCRIPT, "numpy_test_script")
    monkeypatch.setattr(module, "DEFAULT_WEIGHTS", tmp_path / "absent" / "ckpt_best.h5")
    return module


def test_random_table_and_json_with_torch_unimportable(tmp_path):
    result = run_script(SCRIPT, "--random", 60, "--sigma", 3, "--seed", 7, "--json", tmp_path / "r.json",
                        "--plots", "--fig-dir", tmp_path / "figs", cwd=tmp_path, block_torch=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report) == {"sigma", "n", "seed", "methods"}
    assert (report["sigma"], report["n"], report["seed"]) == (3.0, 60, 7)
    # With the repository's weights present the network rows come too; without, classical only.
    assert CLASSICAL <= set(report["methods"]) <= CLASSICAL | {"net_fixed", "net_unfixed"}
    for key, scores in report["methods"].items():
        assert set(scores) == SCORE_KEYS
        assert f"| {key} |" in result.stdout
    assert (tmp_path / "figs" / "methods_numpy.png").is_file()
    assert (tmp_path / "figs" / "filter_numpy.png").is_file()


def test_figures_classical_only_without_default_weights(numpy_test, run_main, tmp_path):
    code, out, err = run_main(numpy_test, ["--fig-dir", tmp_path / "figs"])
    assert code == 0, err
    assert "classical methods only" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [f"Test{k}_numpy.png" for k in range(6)]


def test_random_classical_keys_without_default_weights(numpy_test, run_main, tmp_path):
    code, out, err = run_main(numpy_test, ["--random", 20, "--seed", 1, "--json", tmp_path / "r.json"])
    assert code == 0, err
    assert list(json.loads((tmp_path / "r.json").read_text())["methods"]) == ["wiener", "l1", "gmc", "soft", "bayes"]


def test_help_explains_every_flag(numpy_test, run_main):
    code, out, _ = run_main(numpy_test, ["--help"])
    assert code == 0
    for flag in ["--weights", "--samples", "--fig-dir", "--random", "--sigma", "--seed", "--json", "--plots",
                 "--input", "--output", "--bn"]:
        assert flag in out


def test_explicit_missing_weights_is_an_error(numpy_test, run_main, tmp_path):
    code, _, err = run_main(numpy_test, ["--weights", tmp_path / "none.h5", "--random", 5])
    assert_one_line_error(code, err, "none.h5")


def test_input_needs_weights(numpy_test, run_main, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((2, 100)))
    code, _, err = run_main(numpy_test, ["--input", tmp_path / "in.npy", "--output", tmp_path / "out.npy"])
    assert_one_line_error(code, err, "weights")
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("argv", [["--random", 5, "--input", "a.npy", "--output", "b.npy"],
                                  ["--input", "a.npy"], ["--bn", "fixed"], ["--json", "r.json"]])
def test_mixed_modes_are_refused(numpy_test, run_main, argv):
    code, _, err = run_main(numpy_test, argv)
    assert code == 2 and "Traceback" not in err


def test_bad_samples_folder(numpy_test, run_main, tmp_path):
    code, _, err = run_main(numpy_test, ["--samples", tmp_path / "nothing", "--fig-dir", tmp_path / "figs"])
    assert_one_line_error(code, err.strip().splitlines()[-1], "no TestK_data.txt")


def test_network_matches_pytorch_when_converter_exists(tmp_path, run_main):
    """With pth2h5.py and the NumPy model present: convert a random checkpoint, denoise a file
    with both front-ends, and compare."""
    torch = pytest.importorskip("torch")
    pth2h5 = load_script(REPO_ROOT / "pth2h5.py", "pth2h5_script") if (REPO_ROOT / "pth2h5.py").exists() else pytest.skip("no pth2h5.py")
    pytest.importorskip("Numpy_V2.model")
    from Pytorch_V1.checkpoint import save_checkpoint
    from Pytorch_V1.model import ICNN_s, ModelConfig

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "w.pth", {"net_state_dict": ICNN_s().state_dict(),
                                         "config": {"model": ModelConfig().to_dict()}, "format_version": 1})
    pth2h5.convert(tmp_path / "w.pth", tmp_path / "w.h5")
    noisy = np.random.default_rng(0).normal(size=(4, 100)) * 3
    np.save(tmp_path / "in.npy", noisy)
    numpy_test = load_script(SCRIPT, "numpy_test_script")
    torch_test = load_script(REPO_ROOT / "Pytorch_V1" / "test.py", "torch_test_script")
    for bn in ["fixed", "unfixed"]:
        code, _, err = run_main(numpy_test, ["--weights", tmp_path / "w.h5", "--input", tmp_path / "in.npy",
                                             "--output", tmp_path / f"np_{bn}.npy", "--bn", bn])
        assert code == 0, err
        code, _, err = run_main(torch_test, ["--checkpoint", tmp_path / "w.pth", "--device", "cpu", "--input",
                                             tmp_path / "in.npy", "--output", tmp_path / f"pt_{bn}.npy", "--bn", bn])
        assert code == 0, err
        np.testing.assert_allclose(np.load(tmp_path / f"np_{bn}.npy"), np.load(tmp_path / f"pt_{bn}.npy"), atol=1e-4)

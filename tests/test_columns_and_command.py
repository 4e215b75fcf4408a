"""Instrument tables (--column, header and time column kept), --channels, --fs, and the ``deepdenoise1d`` command."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deepdenoise1d_command
from conftest import REPO_ROOT
from conftest import run_command as run
from deepdenoise1d.columns import find_column, header_names, write_column
from deepdenoise1d.errors import InputError
from icnn.shipped import default_weights, resolve_weights

T = np.arange(3000) / 100.0
CLEAN = 50 * np.sin(T) + 1000.0  # counts with a DC offset, as a seismometer exports them


def quake(folder: Path, sep: str = ",", header: str | None = "time_s,counts") -> Path:
    """A two-column table: time in seconds, then noisy counts; comment and header lines on top."""
    noisy = CLEAN + 3 * np.random.default_rng(0).standard_normal(T.size)
    lines = ["# exported by a test"] + ([header] if header else [])
    lines += [f"{t:.2f}{sep}{v:.6f}" for t, v in zip(T, noisy)]
    path = folder / ("quake.csv" if sep == "," else "quake.txt")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_column_by_name_keeps_header_time_and_comments(tmp_path, capsys):
    source = quake(tmp_path)
    out = tmp_path / "out.csv"
    code, _, err = run(["denoise", source, out, "--column", "counts", "--method", "tv"], capsys)
    assert code == 0, err
    before, after = source.read_text().splitlines(), out.read_text().splitlines()
    assert len(after) == len(before)
    assert after[:2] == before[:2]  # the comment and the header, as they were
    assert [line.split(",")[0] for line in after[2:]] == [line.split(",")[0] for line in before[2:]]  # time verbatim
    noisy = np.array([float(line.split(",")[1]) for line in before[2:]])
    denoised = np.array([float(line.split(",")[1]) for line in after[2:]])
    assert np.sqrt(np.mean((denoised - CLEAN) ** 2)) < 0.6 * np.sqrt(np.mean((noisy - CLEAN) ** 2))


def test_column_by_index_equals_by_name_and_npy_output_is_the_column(tmp_path, capsys):
    source = quake(tmp_path)
    by_name, by_index, alone = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.npy"
    for out, spec in ((by_name, "counts"), (by_index, "1"), (alone, "COUNTS")):
        code, _, err = run(["denoise", source, out, "--column", spec, "--method", "wavelet_sym8_bayes"], capsys)
        assert code == 0, err
    assert by_name.read_text() == by_index.read_text()
    column = np.array([float(line.split(",")[1]) for line in by_name.read_text().splitlines()[2:]])
    assert np.load(alone).shape == (T.size,)
    np.testing.assert_allclose(np.load(alone), column, rtol=1e-15)


def test_whitespace_table_keeps_its_separators(tmp_path, capsys):
    source = quake(tmp_path, sep="\t", header="time\tvalue")
    out = tmp_path / "out.txt"
    code, _, err = run(["denoise", source, out, "--column", "value", "--method", "tv"], capsys)
    assert code == 0, err
    assert all(line.count("\t") == 1 for line in out.read_text().splitlines()[1:])


@pytest.mark.parametrize("spec, fragment", [(None, "time_s, counts"), ("volts", "no single column named 'volts'"),
                                            ("2", "past the last column")])
def test_table_without_a_usable_column_is_refused_in_one_line(tmp_path, capsys, spec, fragment):
    source = quake(tmp_path)
    argv = ["denoise", source, tmp_path / "out.csv", "--method", "tv"] + (["--column", spec] if spec else [])
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err and fragment in err, err
    assert not (tmp_path / "out.csv").exists()


def test_header_names_split_on_the_table_separator():
    assert header_names("Time (s),Voltage (mV)", 2) == ("Time (s)", "Voltage (mV)")
    assert header_names("time value", 2) == ("time", "value")
    assert header_names("a,b,c", 2) == ()  # names that do not match the columns: go by index


def test_one_column_file_with_header_keeps_it(tmp_path, capsys):
    source = tmp_path / "rec.csv"
    values = CLEAN + 3 * np.random.default_rng(1).standard_normal(T.size)
    source.write_text("amplitude\n" + "\n".join(f"{v:.6f}" for v in values) + "\n")
    out = tmp_path / "out.csv"
    code, _, err = run(["denoise", source, out, "--method", "tv"], capsys)
    assert code == 0, err
    assert out.read_text().splitlines()[0] == "amplitude"


def test_write_column_refuses_a_table_that_changed(tmp_path):
    source = quake(tmp_path)
    column = find_column(source, "counts")
    with pytest.raises(InputError, match="changed while being denoised"):
        write_column(tmp_path / "out.csv", source, column, np.zeros(T.size - 1))
    assert not (tmp_path / "out.csv").exists()


def test_fs_and_column_reach_the_json_and_the_plot(tmp_path, capsys):
    source = quake(tmp_path)
    out, report, plot = tmp_path / "out.csv", tmp_path / "r.json", tmp_path / "p.svg"
    code, _, err = run(["denoise", source, out, "--column", "counts", "--method", "tv", "--fs", "100",
                        "--json", report, "--plot", plot], capsys)
    assert code == 0, err
    summary = json.loads(report.read_text())
    assert summary["fs"] == 100.0 and summary["column"] == "counts"
    text = plot.read_text()
    assert "time (s), fs = 100 Hz" in text and "residual" in text and "counts" in text


def channels(tmp_path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(2)
    scales = np.array([1.0, 8.0, 0.05])
    clean = scales[:, None] * np.sin(np.linspace(0, 12, 2048))[None]
    noisy = clean + scales[:, None] * 0.3 * rng.standard_normal(clean.shape)
    path = tmp_path / "three.npy"
    np.save(path, noisy)
    return path, clean


def test_channels_each_get_their_own_sigma_and_choice(tmp_path, capsys):
    source, clean = channels(tmp_path)
    out = tmp_path / "out.npy"
    code, stdout, err = run(["denoise", source, out, "--channels", "--method", "tv", "--json", tmp_path / "c.json"],
                            capsys)
    assert code == 0, err
    sigmas = [c["sigma"] for c in json.loads((tmp_path / "c.json").read_text())["channels"]]
    np.testing.assert_allclose(np.array(sigmas) / np.array([1.0, 8.0, 0.05]), sigmas[0], rtol=0.15)
    denoised = np.load(out)
    for row in range(3):  # each channel as it would come out alone
        np.save(tmp_path / "one.npy", np.load(source)[row])
        code, _, err = run(["denoise", tmp_path / "one.npy", tmp_path / f"one_{row}.npy", "--method", "tv"], capsys)
        assert code == 0, err
        np.testing.assert_allclose(denoised[row], np.load(tmp_path / f"one_{row}.npy"), rtol=1e-6, atol=0)  # TV is iterative


def test_rows_of_different_noise_levels_get_a_note_without_channels(tmp_path, capsys):
    source, _ = channels(tmp_path)
    code, _, err = run(["denoise", source, tmp_path / "out.npy", "--method", "tv"], capsys)
    assert code == 0 and "give --channels" in err, err


def test_command_usage_and_unknown_subcommand(capsys):
    assert run([], capsys)[0] == 2
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and all(name in out for name in deepdenoise1d_command.SUBCOMMANDS)
    code, _, err = run(["frobnicate"], capsys)
    assert code == 2 and "unknown subcommand" in err


def test_scoreboard_subcommand_prints_the_table(tmp_path, capsys):
    source = quake(tmp_path)
    code, out, err = run(["scoreboard", source, "--column", "counts", "--weights", "ckpt_universal"], capsys)
    assert code == 0, err
    assert "SURE scoreboard" in out and "net_fixed" in out and "tv" in out


def test_training_without_torch_names_the_extra(tmp_path):
    block = ("import sys\n"
             "class NoTorch:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'torch' or name.startswith('torch.'):\n"
             "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
             "sys.meta_path.insert(0, NoTorch())\n"
             "import deepdenoise1d_command\n"
             "sys.exit(deepdenoise1d_command.main(['train', '--help']))\n")
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "[torch]" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_installed_command_is_on_the_path_of_the_venv():
    command = Path(sys.executable).parent / "deepdenoise1d"
    if not command.exists():
        pytest.skip("not installed into this interpreter's environment")
    done = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "to-onnx" in done.stdout


def test_shipped_weights_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = default_weights(".h5", "ckpt_blind")
    assert resolve_weights(Path("ckpt_blind"), ".h5") == shipped
    assert resolve_weights(Path("ckpt/ckpt_blind.h5"), ".h5") == shipped
    assert resolve_weights(Path("elsewhere/ckpt_blind.h5"), ".h5") == Path("elsewhere/ckpt_blind.h5")
    (tmp_path / "ckpt_blind").write_bytes(b"mine")  # a file of the user's own comes first
    assert resolve_weights(Path("ckpt_blind"), ".h5") == Path("ckpt_blind")
    assert REPO_ROOT.exists()


def test_plot_range_beyond_what_a_figure_shows_is_refused_before_work(tmp_path, capsys):
    source = quake(tmp_path)
    code, _, err = run(["denoise", source, tmp_path / "o.csv", "--column", "counts", "--plot", tmp_path / "p.png",
                        "--plot-range", "0:50000000"], capsys)
    assert code == 2 and "at most" in err and not (tmp_path / "o.csv").exists(), err


def test_auto_on_a_record_over_the_memory_budget_is_refused_before_scoring(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEEPDENOISE1D_MEMORY_LIMIT", "500K")  # the 3000-sample record needs about 1 MB
    source = quake(tmp_path)
    code, out, err = run(["denoise", source, tmp_path / "o.csv", "--column", "counts"], capsys)
    assert code == 2 and "--method auto on 3000 samples" in err and "SURE scoreboard" not in out, err
    code, _, err = run(["denoise", source, tmp_path / "o.csv", "--column", "counts", "--method", "tv"], capsys)
    assert code == 0, err  # one method needs no scoreboard


def test_scoreboard_reports_progress_when_asked(capsys):
    from deepdenoise1d import scoreboard

    y = np.random.default_rng(3).standard_normal((1, 512))
    scoreboard.rank(scoreboard.classical_candidates(1.0), y, 1.0, progress=True)
    assert "scoring" in capsys.readouterr().err


def seismogram(path: Path) -> Path:
    """A wave train under an envelope on a DC offset: swings far below its baseline, unlike any spike signal."""
    t = np.arange(8000) / 100.0
    rng = np.random.default_rng(4)
    np.save(path, 1e4 + 300 * np.sin(2 * np.pi * 1.3 * t) * np.exp(-(((t - 40) / 10) ** 2)) + 20 * rng.standard_normal(t.size))
    return path


@pytest.mark.parametrize("weights, warned", [("ckpt_blind", True), ("ckpt_universal", False)])
def test_a_network_warns_on_a_record_unlike_its_prior(tmp_path, capsys, weights, warned):
    source = seismogram(tmp_path / "seis.npy")
    code, _, err = run(["denoise", source, tmp_path / "o.npy", "--method", "net", "--weights", weights], capsys)
    assert code == 0, err
    assert ("below the baseline" in err) == warned, err


def test_a_spike_model_on_spikes_does_not_warn(tmp_path, capsys):
    from deepdenoise1d.synthesis import benchmark_signals

    np.save(tmp_path / "spikes.npy", benchmark_signals(7, 300, 3.0)[1])
    code, _, err = run(["denoise", tmp_path / "spikes.npy", tmp_path / "o.npy", "--method", "net", "--weights",
                        "ckpt_blind"], capsys)
    assert code == 0 and "warning" not in err, err


def test_residual_warning_when_a_network_removes_signal():
    from deepdenoise1d.range_check import sigma_range_check

    rng = np.random.default_rng(5)
    noisy = np.sin(np.linspace(0, 40, 512))[None] * 20 + rng.standard_normal((1, 512))
    check = sigma_range_check(None)
    check.observe_output(noisy, noisy - rng.standard_normal((1, 512)))  # moved by the noise alone
    assert check.shape_warning() is None
    check.observe_output(noisy, np.zeros_like(noisy))  # the signal removed
    assert "removed signal" in check.shape_warning()


def test_a_long_record_is_scored_on_evenly_spaced_stretches(tmp_path, capsys, monkeypatch):
    from deepdenoise1d import frontend

    monkeypatch.setattr(frontend, "SCORED_SAMPLES", 4096)
    y = np.sin(np.linspace(0, 60, 20000)) * 4 + np.random.default_rng(6).standard_normal(20000)
    np.save(tmp_path / "long.npy", y)
    code, out, err = run(["denoise", tmp_path / "long.npy", tmp_path / "auto.npy", "--weights", "ckpt_blind"], capsys)
    assert code == 0 and "scored on 4 evenly spaced stretches of 1024" in err, err
    assert "4096 samples" in out
    chosen = next(line.split("|")[1].strip(" *") for line in out.splitlines() if line.startswith("| ") and " * |" in line)
    code, _, err = run(["denoise", tmp_path / "long.npy", tmp_path / "named.npy", "--method", chosen,
                        "--weights", "ckpt_blind"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "auto.npy"), np.load(tmp_path / "named.npy"))  # applied to all

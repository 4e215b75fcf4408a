"""What a careless or hostile user meets at the edges of the command line: headers with units, plot
formats and ranges, output names with control characters, impossible signal-to-noise ratios."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from conftest import REPO_ROOT, load_script, run_command
from deepdenoise1d import cli, frontend
from deepdenoise1d.io import read_text_signals


@pytest.fixture(scope="module")
def numpy_test():
    return load_script(REPO_ROOT / "Numpy_V2" / "Numpy_test.py", "numpy_test_for_messages")


@pytest.fixture
def record(tmp_path):
    y = np.sin(np.arange(600) / 20.0) + 0.1 * np.random.default_rng(0).standard_normal(600)
    np.save(tmp_path / "rec.npy", y)
    return tmp_path / "rec.npy"


@pytest.mark.parametrize("header, width", [("Voltage (mV)", 1), ("Time (s),Voltage (mV)", 2), ("µV [raw]", 1),
                                           ("amplitude", 1)])
def test_a_header_with_units_is_a_header(tmp_path, header, width):
    values = np.arange(40.0) + 0.25  # not integers: "3,14" would read as a decimal comma
    rows = values.reshape(-1, width) if width > 1 else values[:, None]
    path = tmp_path / "units.csv"
    path.write_text(header + "\n" + "".join(",".join(f"{v:g}" for v in row) + "\n" for row in rows), encoding="utf-8")
    signals, stored = read_text_signals(path)
    assert np.array_equal(np.asarray(signals).reshape(-1), rows.reshape(-1) if width > 1 else rows[:, 0])


@pytest.mark.parametrize("line", ["1,5;2", "nan inf", "1.0.0", "abc 1.0"])
def test_a_first_line_of_values_or_garbage_is_not_taken_for_a_header(tmp_path, line):
    from deepdenoise1d.errors import InputError

    path = tmp_path / "bad.csv"
    path.write_text(line + "\n1\n2\n", encoding="utf-8")
    with pytest.raises(InputError):
        read_text_signals(path)


@pytest.mark.parametrize("text", ["1_0:200", "\u0661:\u0665", "0:0", "5:2", "-1:4", "1:2:3", " 1:2"])
def test_plot_range_takes_ascii_digits_only(text):
    with pytest.raises(argparse.ArgumentTypeError):
        frontend.plot_range(text)
    assert frontend.plot_range("0:200") == (0, 200)


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_plot_as_svg_or_pdf_for_a_paper(numpy_test, run_main, record, suffix, magic):
    plot = record.with_name("stretch" + suffix)
    code, _, err = run_main(numpy_test, ["--input", record, "--output", record.with_name("out.npy"), "--method", "tv",
                                         "--plot", plot])
    assert code == 0, err
    assert plot.read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["x.txt", "x.npy", "x"])
def test_plot_in_another_format_is_refused_before_any_work(numpy_test, run_main, record, name):
    code, _, err = run_main(numpy_test, ["--input", record, "--output", record.with_name("out.npy"), "--plot",
                                         record.with_name(name)])
    assert code == 2 and "Traceback" not in err  # argparse's usage, then the one line
    assert "--plot must end in .png, .svg, .pdf" in err.strip().splitlines()[-1]
    assert not record.with_name("out.npy").exists()


def test_a_success_line_escapes_control_characters(numpy_test, run_main, record):
    output = record.with_name("o\x1b[31mred.npy")
    code, out, _ = run_main(numpy_test, ["--input", record, "--output", output, "--method", "tv"])
    assert code == 0 and output.exists()
    assert "\x1b" not in out and "\\x1b" in out


@pytest.mark.parametrize("text", ["0", "1e-300", "inf", "nan", "-3", "1e7"])
def test_impossible_signal_to_noise_ratios_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.rsnr_float(text)
    assert cli.rsnr_float("7") == 7.0


@pytest.mark.parametrize("script", ["scoreboard_study.py", "field_table.py"])
def test_study_scripts_refuse_rsnr_zero_before_any_work(script, run_main):
    module = load_script(REPO_ROOT / "scripts" / script, script.replace(".py", "_for_rsnr"))
    code, _, err = run_main(module, ["--rsnr", "0"])
    assert code == 2 and "Traceback" not in err and "--rsnr" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("weights", ["ckpt_sure", "ckpt_universal"])
def test_a_constant_record_longer_than_a_window_is_warned_about(numpy_test, run_main, tmp_path, weights, record):
    """Long records go through windows; a constant one has no noise to measure in any of them, and says so."""
    np.save(tmp_path / "const.npy", np.full(3000, 5.0))
    args = ["--method", "net", "--weights", REPO_ROOT / "ckpt" / f"{weights}.h5"]
    code, _, err = run_main(numpy_test, ["--input", tmp_path / "const.npy", "--output", tmp_path / "c.npy", *args])
    assert code == 0 and "window(s) are degenerate" in err
    code, _, err = run_main(numpy_test, ["--input", record, "--output", tmp_path / "r.npy", *args])
    assert code == 0 and "degenerate" not in err


@pytest.mark.parametrize("script, name", [("scoreboard_study.py", "x.json"), ("record_study.py", "x.json"),
                                          ("results.py", "blind_curve.png"), ("results.py", "RESULTS")])
def test_a_report_must_end_in_md_so_its_siblings_never_land_on_it(script, name, run_main, tmp_path):
    """The .json and the figures go beside the report under their own suffixes: a report named like one of them
    would be overwritten by it (or overwrite it)."""
    module = load_script(REPO_ROOT / "scripts" / script, script.replace(".py", "_for_md"))
    code, _, err = run_main(module, ["--output", tmp_path / name])
    assert code == 2 and "ending in .md" in err.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_markdown_file_takes_md_in_any_case():
    assert cli.markdown_file("runs/r.MD").name == "r.MD"
    with pytest.raises(argparse.ArgumentTypeError):
        cli.markdown_file("r.md.json")


def test_weights_that_are_a_device_are_named_as_such(numpy_test, run_main, record, tmp_path):
    code, _, err = run_main(numpy_test, ["--input", record, "--output", tmp_path / "o.npy", "--method", "net",
                                         "--weights", "/dev/zero"])
    assert code == 2 and "not a regular file" in err and "no such" not in err, err


def test_a_failed_run_leaves_no_folder_for_its_json_or_plot(numpy_test, run_main, tmp_path):
    code, _, err = run_main(numpy_test, ["--input", tmp_path / "missing.npy", "--output", tmp_path / "o.npy",
                                         "--method", "tv", "--json", tmp_path / "a" / "b" / "r.json",
                                         "--plot", tmp_path / "c" / "p.png"])
    assert code == 2, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_an_input_cut_short_while_it_is_read_is_one_line_not_a_bus_error(tmp_path):
    import os

    from deepdenoise1d.errors import InputError
    from deepdenoise1d.io import check_chunk, check_span, open_signals

    np.save(tmp_path / "in.npy", np.zeros((4, 50000)))
    signals, _ = open_signals(tmp_path / "in.npy")
    check_chunk(signals[:2], 0, "in.npy")  # whole: no complaint
    os.truncate(tmp_path / "in.npy", 1000)  # as another program rewriting the file would
    with pytest.raises(InputError, match="cut short while it was being read"):
        check_chunk(signals[2:], 2, "in.npy")  # checked before its pages are touched
    with pytest.raises(InputError, match="cut short"):
        check_span(signals.reshape(-1)[150000:150100], 150000, 50000, "in.npy")


def test_the_blind_spike_model_past_its_noise_range_warns_where_it_loses_to_the_baseline(tmp_path, capsys):
    from deepdenoise1d.synthesis import benchmark_signals

    for sigma, warned in ((4.0, False), (8.0, True)):
        clean, noisy = benchmark_signals(14, 1000, sigma)
        np.save(tmp_path / f"in{sigma:g}.npy", noisy)
        code, _, err = run_command(["denoise", str(tmp_path / f"in{sigma:g}.npy"), str(tmp_path / f"out{sigma:g}.npy"),
                                    "--weights", "ckpt_blind", "--method", "net"], capsys)
        assert code == 0, err
        error = np.sqrt(np.mean((np.load(tmp_path / f"out{sigma:g}.npy") - clean) ** 2))
        baseline = np.sqrt(np.mean(clean ** 2))  # returning zeros, the spikes' baseline
        assert (error > baseline) == warned  # the harm the warning is for
        assert ("signal-to-noise" in err and "under the bottom" in err) == warned, err


@pytest.mark.parametrize("frequency", [0.5, 0.43])  # the alternating sequence ±1; a sine near the Nyquist frequency
def test_a_signal_at_the_finest_scale_is_kept_by_the_default_and_the_network_says_it_removed_it(tmp_path, capsys,
                                                                                               frequency):
    t = np.arange(4096)
    clean = np.cos(2 * np.pi * frequency * t + (0.0 if frequency == 0.5 else 0.3))
    noisy = clean + 0.3 * np.random.default_rng(15).standard_normal(t.size)
    np.save(tmp_path / "in.npy", noisy)
    code, _, err = run_command(["denoise", str(tmp_path / "in.npy"), str(tmp_path / "auto.npy")], capsys)
    assert code == 0, err
    assert "periodogram median" in err
    noisy_error = np.sqrt(np.mean((noisy - clean) ** 2))
    assert np.sqrt(np.mean((np.load(tmp_path / "auto.npy") - clean) ** 2)) < 0.8 * noisy_error  # was about 3 ×
    code, _, err = run_command(["denoise", str(tmp_path / "in.npy"), str(tmp_path / "net.npy"), "--method", "net"], capsys)
    assert code == 0, err
    if np.sqrt(np.mean((np.load(tmp_path / "net.npy") - clean) ** 2)) > noisy_error:
        assert "it removed signal" in err, err

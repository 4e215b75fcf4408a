"""deepdenoise1d/cli.py: the shared argparse types and ``add_*_arg`` helpers."""
from __future__ import annotations

import argparse
import re

import pytest

from deepdenoise1d import cli
from deepdenoise1d.synthesis import DEFAULT_SEED
from deepdenoise1d.threads import DEFAULT_THREADS


@pytest.mark.parametrize("parse, good, bad", [
    (cli.positive_int, {"1": 1, "7": 7, " 12 ": 12}, ["0", "-3", "1.5", "abc", ""]),
    (cli.nonnegative_int, {"0": 0, "5": 5}, ["-1", "2.0", "x"]),
    (cli.positive_float, {"2.5": 2.5, "1e-3": 1e-3}, ["0", "-1", "nan", "inf", "-inf", "abc"]),
    (cli.nonnegative_float, {"0": 0.0, "0.25": 0.25}, ["-0.1", "nan", "inf"]),
    (cli.decay_float, {"0": 0.0, "0.999": 0.999}, ["1", "1.5", "-0.1", "nan"]),
])
def test_number_types_accept_their_range_and_refuse_the_rest(parse, good, bad):
    for text, value in good.items():
        assert parse(text) == value and type(parse(text)) is type(value)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
            parse(text)


def test_sigma_or_auto():
    assert cli.sigma_or_auto("auto") == cli.sigma_or_auto(" AUTO ") == "auto"
    assert cli.sigma_or_auto("3") == 3.0
    for text in ("0", "-2", "nan", "inf", "3:4"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.sigma_or_auto(text)


def test_sigma_range_or_auto_gives_low_high():
    assert cli.sigma_range_or_auto("auto") == "auto"
    assert cli.sigma_range_or_auto("3") == [3.0, 3.0]
    assert cli.sigma_range_or_auto("0.5:5") == [0.5, 5.0]
    for text in ("0", "0:5", "5:1", "1:inf", "nan", "-1", "x", "1:2:3"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.sigma_range_or_auto(text)


def test_add_arg_helpers_share_defaults_and_refuse_bad_values(capsys):
    parser = argparse.ArgumentParser(prog="prog")
    cli.add_n_arg(parser, 2000)
    cli.add_seed_arg(parser)
    cli.add_threads_arg(parser)
    cli.add_device_arg(parser)
    cli.add_bn_mode_arg(parser, ("fixed", "unfixed"))
    cli.add_weights_arg(parser, None, "HDF5 weights (.h5)")
    args = parser.parse_args([])
    assert (args.n, args.seed, args.threads, args.device, args.bn_mode, args.weights) == (2000, DEFAULT_SEED, None, "auto",
                                                                                            None, None)
    args = parser.parse_args(["--n", "5", "--seed", "0", "--threads", "2", "--bn-mode", "unfixed", "--weights", "w.h5"])
    assert (args.n, args.seed, args.threads, args.bn_mode, str(args.weights)) == (5, 0, 2, "unfixed", "w.h5")
    assert f"default {DEFAULT_THREADS}" in parser.format_help()
    for argv in (["--n", "0"], ["--seed", "-1"], ["--threads", "0"], ["--device", "tpu"], ["--bn-mode", "train"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2
        assert argv[0] in capsys.readouterr().err

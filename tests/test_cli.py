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


@pytest.mark.parametrize("parse", [cli.positive_int, cli.nonnegative_int, cli.signal_count, cli.batch_size,
                                   cli.thread_count, cli.seed_int, cli.positive_float, cli.nonnegative_float,
                                   cli.decay_float, cli.sigma_value, cli.sigma_or_auto, cli.sigma_range_or_auto])
@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662", "\uff11\uff12", "\u00b2", "0x10", "1e3x"])
def test_numbers_are_ascii_decimal_only(parse, text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


@pytest.mark.parametrize("parse, limit", [(cli.positive_int, cli.MAX_COUNT), (cli.signal_count, cli.MAX_SIGNALS),
                                          (cli.batch_size, cli.MAX_BATCH), (cli.thread_count, cli.MAX_THREADS),
                                          (cli.seed_int, cli.MAX_SEED)])
def test_counts_and_sizes_are_bounded_at_parsing(parse, limit):
    assert parse(str(limit)) == limit
    with pytest.raises(argparse.ArgumentTypeError, match=f"to {limit}"):
        parse(str(limit + 1))


def test_train_flags_use_the_bounded_types():
    from Pytorch_V1.train import get_args

    for flag, value in (("--batch-size", "1000000000"), ("--val-size", "10000000000"), ("--steps", "10000000000"),
                        ("--threads", "100000")):
        with pytest.raises(Exception, match=re.escape(flag)):
            get_args([flag, value])


def test_absurd_sigma_is_refused_at_parsing():
    for parse, texts in ((cli.sigma_or_auto, ("1e-300", "1e-7", "1e7")),
                         (cli.sigma_range_or_auto, ("1e-300", "1e-7", "1e7", "1e-300:1"))):
        for text in texts:
            with pytest.raises(argparse.ArgumentTypeError, match="1e-06"):
                parse(text)
    assert cli.sigma_range_or_auto("1e-6:1e6") == [1e-6, 1e6]

"""Tests of deepdenoise1d/budget.py: the memory limit, its override, and the one-line refusal."""
from __future__ import annotations

import pytest

from conftest import assert_one_line_error
from deepdenoise1d import budget
from deepdenoise1d.errors import InputError


@pytest.mark.parametrize("text, expected", [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("1000", 1000),
                                            ("1.5GiB", int(1.5 * 2**30)), ("2tb", 2 * 2**40)])
def test_parse_size(text, expected):
    assert budget.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "nanG", "infM", "8X", "1e400"])
def test_parse_size_refuses(text):
    with pytest.raises(InputError, match=budget.LIMIT_ENV):
        budget.parse_size(text)


def test_default_limit_is_a_fraction_of_physical_memory(monkeypatch):
    monkeypatch.delenv(budget.LIMIT_ENV, raising=False)
    limit, source = budget.memory_limit()
    total = budget.physical_memory()
    assert limit == (int(total * budget.DEFAULT_FRACTION) if total else budget.FALLBACK_LIMIT)
    assert budget.LIMIT_ENV in source


def test_check_memory_refuses_in_one_line_with_the_way_round(monkeypatch, run_call):
    monkeypatch.setenv(budget.LIMIT_ENV, "1M")
    budget.check_memory(2**20, "a job", "do less")  # at the limit: allowed
    code, err = run_call(lambda: budget.check_memory(2**20 + 1, "a job", "do less"))
    assert_one_line_error(code, err, "a job needs about 1.0 MiB", "limit of 1.0 MiB", f"set by {budget.LIMIT_ENV}",
                          "do less")
    code, err = run_call(lambda: budget.check_memory(float("inf"), "a job", "do less"))
    assert_one_line_error(code, err, "more than 1 ZiB")

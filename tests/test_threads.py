"""deepdenoise1d/threads.py: one thread by default, more on request, capped at the cores this process may use."""
from __future__ import annotations

import pytest

from deepdenoise1d import threads
from deepdenoise1d.threads import DEFAULT_THREADS, available_cores, resolve_threads


def test_default_is_one_thread_whatever_the_core_count(monkeypatch):
    assert DEFAULT_THREADS == 1
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)
    assert resolve_threads() == resolve_threads(None) == 1


def test_request_is_capped_at_the_cores_of_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)  # the machine's total does not count
    assert available_cores() == 3
    assert [resolve_threads(n) for n in (1, 2, 3, 4, 1000)] == [1, 2, 3, 3, 3]


def test_without_an_affinity_mask_the_cpu_count_is_the_cap(monkeypatch):
    monkeypatch.delattr(threads.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    assert available_cores() == 4 and resolve_threads(8) == 4
    monkeypatch.setattr(threads.os, "cpu_count", lambda: None)  # unknown: one core
    assert available_cores() == 1 and resolve_threads(8) == 1


def test_the_real_cap_is_between_one_and_the_usable_cores():
    cores = available_cores()
    assert cores >= 1 and resolve_threads(10**6) == cores


@pytest.mark.parametrize("requested", [0, -1, -100])
def test_fewer_than_one_thread_is_refused(requested):
    with pytest.raises(ValueError, match=f"threads must be >= 1, got {requested}"):
        resolve_threads(requested)

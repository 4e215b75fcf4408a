"""The study and benchmark scripts in scripts/ estimate their memory from their size flags and refuse, in one line
(exit 2, no traceback) and before any work, a job over the budget (deepdenoise1d.budget.check_memory)."""
from __future__ import annotations

import os
import time

import pytest

from conftest import REPO_ROOT, assert_one_line_error, load_script, run_script
from deepdenoise1d.budget import LIMIT_ENV

QUICK_S = 10  # a refusal draws no signal and loads no model: it returns at once, even on a loaded machine
HEADROOM = 4 * 2**30  # address space a refused run may add: should a check go missing, a MemoryError, not the OOM killer
LIMIT = "1G"  # the budget of these tests, whatever this machine's memory
NEEDS_TORCH = {"results.py", "bench_threads.py"}  # results.py imports torch; bench_threads asks train.py's estimate

# (script, argv in the test's empty working folder, fragments of the one-line refusal: the flag and the way round)
HUGE = [
    ("benchmark.py", lambda work: ["--length", "1000000000"], ["--length 1000000000", "use a smaller --n or --length"]),
    ("benchmark.py", lambda work: ["--n", "100000000"], ["--n 100000000", "use a smaller --n or --length"]),
    ("scoreboard_study.py", lambda work: ["--sizes", "1000000000", "--models", "--output", str(work / "s.md")],
     ["--sizes up to 1000000000 samples", "use smaller --sizes"]),
    ("record_study.py", lambda work: ["--sizes", "2048", "1000000000", "--models"],
     ["--sizes up to 1000000000 samples", "use smaller --sizes"]),
    ("results.py", lambda work: ["--n", "100000000"], ["--n 100000000", "use a smaller --n"]),
    ("field_table.py", lambda work: ["--sizes", "1000000000", "--models", "--output", str(work / "f.md")],
     ["--sizes up to 1000000000 samples", "use smaller --sizes or fewer --rsnr values"]),
    ("blind_study.py", lambda work: ["--n", "100000000000", "--output", str(work / "b.md")],
     ["--n 100000000000", "use a smaller --n"]),
    ("equivariant_limits.py", lambda work: ["--n", "100000000"], ["--n 100000000", "use a smaller --n"]),
    ("offset_table.py", lambda work: ["--n", "1000000000", "--output", str(work / "o.md")],
     ["--n 1000000000", "use a smaller --n"]),
    ("compare_sigma_estimators.py", lambda work: ["--n", "100000000", "--output", str(work / "c.md")],
     ["--n 100000000", "use a smaller --n"]),
    ("bench_threads.py", lambda work: ["--batch-size", "1048576"], ["--batch-size 1048576", "use a smaller --batch-size"]),
    ("label_free_study.py", lambda work: [str(work / "none.pth"), "--n", "1000000000", "--output", str(work / "l.md")],
     ["--n 1000000000", "use a smaller --n"]),
    ("explain_results.py", lambda work: ["--n", "100000000", "--output", str(work / "explain")],
     ["--n 100000000", "use a smaller --n"]),
    ("explain_results.py", lambda work: ["--n", "10", "--sweep-n", "100000000", "--output", str(work / "explain")],
     ["--sweep-n 100000000", "use a smaller --sweep-n"]),
    ("broad_validation.py", lambda work: ["--models", str(work / "none.h5"), "--length", "1000000000"],
     ["--length 1000000000", "use a smaller --n or --length"]),
    ("broad_validation.py", lambda work: ["--models", str(work / "none.h5"), "--n", "100000000"],
     ["--n 100000000", "use a smaller --n or --length"]),
    ("prior_gallery.py", lambda work: ["--length", "1048576", "--output", str(work / "g.png")],
     ["--length 1048576", "use a smaller --length"]),
]

# The least each script needs to parse: the defaults of its size flags must fit a 4 GiB budget (an 8 GB machine).
DEFAULTS = {
    "benchmark.py": [], "scoreboard_study.py": [], "record_study.py": [], "results.py": [], "field_table.py": [],
    "blind_study.py": [], "equivariant_limits.py": [], "offset_table.py": [], "compare_sigma_estimators.py": [],
    "bench_threads.py": [], "label_free_study.py": ["x.pth"], "explain_results.py": [],
    "broad_validation.py": ["--models", "x.h5"], "prior_gallery.py": [],
}

_LOADED: dict = {}


def script(name: str):
    """scripts/NAME loaded once for this file (a module name of its own, apart from other tests' loads)."""
    if name in NEEDS_TORCH:
        pytest.importorskip("torch")
    if name not in _LOADED:
        _LOADED[name] = load_script(REPO_ROOT / "scripts" / name, f"budget_{name[:-3]}")
    return _LOADED[name]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working folder (relative default outputs land there) and a budget of :data:`LIMIT`."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv(LIMIT_ENV, LIMIT)
    return folder


@pytest.fixture
def capped_address_space():
    """The process may map at most :data:`HEADROOM` more while the test runs (Linux): a script that started the
    work it should refuse fails at once with a MemoryError instead of filling this shared machine's memory."""
    resource = pytest.importorskip("resource")
    try:
        mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("name, argv, fragments", HUGE, ids=[f"{s}-{f[0].split()[0]}" for s, _, f in HUGE])
def test_a_size_over_the_budget_is_refused_in_one_line_before_any_work(name, argv, fragments, work, run_main,
                                                                        request):
    module = script(name)  # loaded (torch imported) before the address space is capped
    request.getfixturevalue("capped_address_space")
    start = time.perf_counter()
    code, out, err = run_main(module, argv(work))
    seconds = time.perf_counter() - start
    assert_one_line_error(code, err, *fragments, "needs about", f"over the limit of 1.0 GiB (set by {LIMIT_ENV})")
    assert out == "" and list(work.iterdir()) == []  # nothing printed, no file or folder made
    assert seconds < QUICK_S


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_the_default_sizes_fit_a_small_machine(name, monkeypatch):
    module = script(name)
    monkeypatch.setenv(LIMIT_ENV, "4G")
    module.check_budget(module.get_args(DEFAULTS[name]))  # no InputError


@pytest.mark.parametrize("name, argv, fragment", [
    ("blind_study.py", ["--n", "100000000000"], "--n 100000000000 signals per σ needs about"),
    ("benchmark.py", ["--length", "1000000000"], "--n 100000 signals of --length 1000000000 needs about"),
])
def test_the_command_line_refuses_without_a_traceback(name, argv, fragment, tmp_path, monkeypatch):
    """As users run it: a fresh interpreter, the machine's own budget (no override), exit 2 in one line. (Sizes
    whose first array no machine can hold: without the check, numpy would refuse it at once.)"""
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    start = time.perf_counter()
    done = run_script(REPO_ROOT / "scripts" / name, *argv, cwd=tmp_path, timeout=60)
    assert_one_line_error(done.returncode, done.stderr, f"{name}: error: {fragment}", LIMIT_ENV)
    assert done.stdout == "" and list(tmp_path.iterdir()) == []
    assert time.perf_counter() - start < 3 * QUICK_S  # interpreter start included


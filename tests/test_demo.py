"""scripts/demo.py only ever removes a folder it created and marked; Makefile targets."""
from __future__ import annotations

import pytest

from conftest import REPO_ROOT, load_script, output_names


@pytest.fixture(scope="module")
def demo():
    return load_script(REPO_ROOT / "scripts" / "demo.py", "demo_script")


def test_a_new_folder_is_created_and_marked(demo, tmp_path):
    run = tmp_path / "a" / "run"
    demo.claim_run_dir(run, keep=False)
    assert (run / demo.MARKER).is_file() and output_names(run) == [demo.MARKER]


def test_an_earlier_demo_run_is_replaced(demo, tmp_path):
    run = tmp_path / "run"
    demo.claim_run_dir(run, keep=False)
    (run / "old.txt").write_text("from the last demo")
    demo.claim_run_dir(run, keep=True)  # --skip-train keeps it
    assert (run / "old.txt").exists()
    demo.claim_run_dir(run, keep=False)
    assert output_names(run) == [demo.MARKER]


@pytest.mark.parametrize("keep", [False, True])
def test_a_folder_it_did_not_make_is_never_deleted(demo, run_call, tmp_path, keep):
    """`demo.py --run-dir ckpt` or `--run-dir .` once wiped the user's files."""
    (tmp_path / "precious.pth").write_bytes(b"weights")
    code, err = run_call(lambda: demo.claim_run_dir(tmp_path, keep=keep))
    assert code == 2 and "not made by demo.py" in err and "Traceback" not in err
    assert (tmp_path / "precious.pth").read_bytes() == b"weights"
    assert not (tmp_path / demo.MARKER).exists()


def test_run_dir_that_is_a_file(demo, run_call, tmp_path):
    (tmp_path / "f").write_text("x")
    code, err = run_call(lambda: demo.claim_run_dir(tmp_path / "f", keep=False))
    assert code == 2 and "not a folder" in err
    assert (tmp_path / "f").read_text() == "x"


def test_skip_train_needs_an_earlier_demo(demo, run_call, tmp_path):
    code, err = run_call(lambda: demo.claim_run_dir(tmp_path / "new", keep=True))
    assert code == 2 and "--skip-train" in err


def test_make_demo_writes_only_under_runs_and_refresh_is_separate():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "demo-refresh:" in makefile and "scripts/demo.py --refresh" in makefile
    demo_rule = makefile.split("\ndemo:")[1].split("\n\n")[0]
    assert "--refresh" not in demo_rule
    assert "runs/" in (REPO_ROOT / ".gitignore").read_text().split()


def test_refresh_copies_the_committed_set_and_reports_identical_files(demo, tmp_path):
    run, out = tmp_path / "run", tmp_path / "demo"
    (run / "figures").mkdir(parents=True)
    (run / "RESULTS.md").write_text("# results\n")
    (run / "figures" / "methods.png").write_bytes(b"png A")
    (run / "figures" / "filter.png").write_bytes(b"png A")  # same bytes: reported
    out.mkdir()
    same = demo.refresh(run, out)
    assert output_names(out) == ["RESULTS.md", "filter.png", "methods.png"]
    assert same == ["filter.png = methods.png"]

"""deepdenoise1d/plots.py: the figures, written atomically, never over what a command reads."""
from __future__ import annotations

import numpy as np

from conftest import assert_one_line_error
from deepdenoise1d import classical, evaluate, plots
from deepdenoise1d.synthesis import noisy_pairs


def test_plots_write_pngs(tmp_path):
    clean, noisy, _ = noisy_pairs(np.random.default_rng(0), 40, 3.0)
    estimates = {"soft": classical.soft_threshold(noisy, 3.0), "wiener": classical.wiener(noisy)}
    methods = {"soft": lambda y: estimates["soft"], "bayes": lambda y: classical.bayes_posterior_mean(y, 3.0)}
    scores, _ = evaluate.evaluate_methods(clean, noisy, methods, progress=False)
    figures = [
        plots.comparison_figure("x", clean[0], noisy[0], {k: v[0] for k, v in estimates.items()},
                                differences={"a − b": estimates["soft"][0] - estimates["wiener"][0]}),
        plots.methods_chart(evaluate.build_report(3.0, 40, 0, scores), "NumPy, w.h5; seed 0"),
        plots.filter_figure(noisy, {"wiener": estimates["wiener"]}, 3.0, made_by="NumPy, w.h5; seed 0"),
    ]
    for i, fig in enumerate(figures):
        path = plots.save_figure(fig, tmp_path / "figs" / f"{i}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "figs").glob(".*.tmp"))  # no temp files left


def test_save_figure_never_writes_over_what_the_command_reads(run_call, tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"weights")
    (tmp_path / "link.png").symlink_to(weights)
    fig = plots.methods_chart(evaluate.build_report(3.0, 1, 0, {"bayes": {"rmse": 1.0, "rmse_ci95": 0.1}}))
    code, err = run_call(lambda: plots.save_figure(fig, tmp_path / "link.png", reads=(weights,)))
    assert_one_line_error(code, err, "link.png")
    assert weights.read_bytes() == b"weights"


def test_importing_plots_changes_no_process_state(tmp_path):
    import subprocess
    import sys

    code = ("import os, matplotlib; before = matplotlib.get_backend() if 'MPLBACKEND' in os.environ else None; "
            "m = os.umask(0o022); os.umask(m); import deepdenoise1d.plots; m2 = os.umask(0o022); os.umask(m2); "
            "print(os.environ.get('MPLBACKEND'), m == m2, matplotlib.rcParams._get_backend_or_none())")
    env = {k: v for k, v in __import__("os").environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "True", "None"]

"""Evaluate every shipped checkpoint on held-out signals and write a Markdown report.

    python scripts/results.py                      # 2000 signals per σ, seed 2026 -> runs/results/RESULTS.md
    python scripts/results.py --n 5000 --seed 77   # any other held-out draw
    python scripts/results.py --output demo/RESULTS.md   # what `make demo-refresh` does

Signals come from ``deepdenoise1d.synthesis.benchmark_signals(seed, n, σ)``: the same --seed and
--n give the same signals, and the σ = 3 table the same rows (names, decimals, values), as
``test.py --random`` and ``Numpy_test.py --random`` (tests/test_numpy_test_cli.py checks it).

Checkpoints looked for in --weights-dir (missing ones are reported as such):
ckpt_best.pth (the main model), ckpt_noprior.pth (no Wiener prior), ckpt_sparse.pth
(sparse BN), ckpt_blind.pth (blind, σ 0.5..5), ckpt_sure.pth (no clean labels),
ckpt_blind_sure.pth (no clean labels and σ unknown, 0.5..5), ckpt_universal.pth (the broad prior, blind).
--extra NAME=PATH adds a checkpoint (make demo adds its fresh run this way).
Also draws blind_curve.png beside the report and checks each numeric target.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from icnn.shipped import weights_dir
from icnn.spec import BN_MODES, inference_modes
from Pytorch_V1.checkpoint import load_model
from Pytorch_V1.inference import configure_threads, denoise
from Pytorch_V1.model import ICNN_s, wiener_prior
from deepdenoise1d import classical, cli, evaluate, frontend
from deepdenoise1d.methods import classical_methods
from deepdenoise1d.budget import check_memory
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.safewrite import atomic_write, guard_output, write_policy
from deepdenoise1d.plots import save_figure
from deepdenoise1d.progress import progress
from deepdenoise1d.synthesis import BLIND_SIGMA_RANGE, SIGMA, SIGNAL_LENGTH, benchmark_signals
from deepdenoise1d.threads import resolve_threads

SHIPPED = {
    "net": "ckpt_best.pth",
    "noprior": "ckpt_noprior.pth",
    "sparse": "ckpt_sparse.pth",
    "blind": "ckpt_blind.pth",
    "sure": "ckpt_sure.pth",
    "blind_sure": "ckpt_blind_sure.pth",
    "universal": "ckpt_universal.pth",
}
BLIND_ORACLE = "blind bayes (σ unknown, 0.5..5)"
SIGMAS = (1.0, 2.0, 3.0, 4.0, 5.0)
# Memory per sample of the --n signals (float64 arrays of n × SIGNAL_LENGTH): the σ = 3 draw (clean, noisy),
# held to the end, a sweep draw beside it, the six classical estimates of the σ = 3 table made at once, and a
# network's output and input copy; on top, the working set of a Bayes oracle (bayes_posterior_mean 522,
# bayes_blind_posterior_mean 539 and bayes_equivariant_posterior_mean 555 bytes per sample, measured).
ORACLE_WORK_BYTES_PER_SAMPLE = 560
RESULTS_BYTES_PER_SAMPLE = 8 * (2 + 2 + 6 + 2) + ORACLE_WORK_BYTES_PER_SAMPLE


DEFAULT_OUTPUT = Path("runs") / "results" / "RESULTS.md"  # under the current folder, never a tracked one


def get_args(argv=None):
    p = argparse.ArgumentParser(prog="results.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_n_arg(p, 2000)
    cli.add_seed_arg(p, what="the held-out draw")
    cli.add_threads_arg(p)
    p.add_argument("--weights-dir", type=Path, default=weights_dir(), help="where the shipped checkpoints are")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=PATH", help="another checkpoint to evaluate")
    p.add_argument("--output", type=cli.markdown_file, default=DEFAULT_OUTPUT, metavar="PATH.md",
                   help=f"the Markdown report (default {DEFAULT_OUTPUT} under the current folder)")
    cli.add_overwrite_arg(p)
    p.add_argument("--fig-dir", type=Path, default=None, metavar="DIR",
                   help="where blind_curve.png goes (default: the report's folder)")
    a = p.parse_args(argv)
    if a.n < 2:
        p.error("--n must be at least 2")
    return a


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, an --n whose signals cannot be scored in memory."""
    check_memory(args.n * SIGNAL_LENGTH * RESULTS_BYTES_PER_SAMPLE, f"--n {args.n} signals per σ", "use a smaller --n")


def score(estimate: np.ndarray, clean: np.ndarray) -> dict:
    """Scores as in every table (deepdenoise1d.evaluate.score)."""
    return evaluate.score(estimate, clean)


def classical_estimates(noisy: np.ndarray, sigma: float) -> dict[str, np.ndarray]:
    """Every classical method of the CLIs' tables (deepdenoise1d.classical_methods), in their order."""
    return {key: method(noisy) for key, method in classical_methods(sigma).items()}


@torch.no_grad()
def activation_sparsity(model: ICNN_s, noisy: np.ndarray, mode: str) -> dict:
    """Share of exact zeros after each normalisation (BN + threshold) and after its ReLU."""
    outputs = []
    # clone: the ReLU after each BN works in place on its output
    hooks = [bn.register_forward_hook(lambda m, i, o: outputs.append(o.clone())) for bn in model.batch_norms()]
    x = torch.from_numpy(noisy.astype(np.float32))[:, None]
    model(x, wiener_prior(x) if model.wienernet is not None else None, mode)
    for h in hooks:
        h.remove()
    z = torch.cat([o.flatten() for o in outputs])
    return {"bn_zero": float((z == 0).float().mean()), "relu_zero": float((z <= 0).float().mean()),
            "mean_abs": float(z.abs().mean())}


def table(rows: list[tuple[str, dict]], bayes: float) -> list[str]:
    """The one table format (deepdenoise1d.evaluate.table_rows): names and decimals as in the CLIs."""
    return evaluate.table_rows(rows, bayes)


def sigma3_section(models: dict, seed: int, n: int) -> tuple[list[str], list[tuple[str, dict]], dict, tuple]:
    """The σ = 3 table: every model in both BN modes, then the classical methods.

    The network rows are named ``NAME (MODE BN)`` and the classical rows as in the CLIs,
    so ``net`` here equals ``test.py --random --seed SEED --n N`` row for row.

    Returns
    -------
    lines, rows, classical scores, (clean, noisy)
    """
    clean, noisy = benchmark_signals(seed, n, SIGMA)
    base = {k: score(v, clean) for k, v in classical_estimates(noisy, SIGMA).items()}
    rows = []
    for name, (model, _) in models.items():
        if name == "blind":
            continue
        for mode in inference_modes(model.config):
            rows.append((evaluate.net_row_name(name, mode), score(denoise(model, noisy, mode), clean)))
    rows += [(evaluate.row_name(k), s) for k, s in base.items()]
    lines = ["## σ = 3", ""] + table(rows, base["bayes"]["rmse"]) + [""]
    return lines, rows, base, (clean, noisy)


def blind_oracle_rmse(clean: np.ndarray, noisy: np.ndarray) -> float:
    """The blind Bayes oracle: E[x | y] with σ marginalised over :data:`BLIND_SIGMA_RANGE` (the blind models' limit)."""
    return score(classical.bayes_blind_posterior_mean(noisy, BLIND_SIGMA_RANGE), clean)["rmse"]


def blind_curve(curves: dict[str, list[float]], made_by: str = "") -> Figure:
    """RMSE against σ (left), and the ratio to the σ-aware Bayes RMSE of what lies near it (right)."""
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_rmse, ax_ratio = fig.subplots(1, 2)
    styles = {"bayes": dict(color="black", ls="--", lw=2), BLIND_ORACLE: dict(color="0.45", ls=":", lw=2)}
    for name, values in curves.items():
        (line,) = ax_rmse.plot(SIGMAS, values, marker="o", label=name, **styles.get(name, {}))
        ratio = np.asarray(values) / np.asarray(curves["bayes"])
        if ratio.max() < 1.1:  # the baselines are far off this scale; the left panel shows them
            ax_ratio.plot(SIGMAS, ratio, marker="o", label=name, **{**styles.get(name, {}), "color": line.get_color()})
    ax_rmse.set(xlabel="noise σ (not told to the blind models)", ylabel="RMSE (mean over signals)")
    ax_ratio.set(xlabel="noise σ", ylabel="RMSE / σ-aware Bayes RMSE")
    for ax in (ax_rmse, ax_ratio):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("One blind model for every noise level" + (f"\n{made_by}" if made_by else ""), fontsize=10)
    return fig


def load_models(args) -> dict:
    """``{name: (model, checkpoint)}``: the shipped checkpoints found, then every --extra."""
    models = {}
    for name, file in SHIPPED.items():
        path = args.weights_dir / file
        if path.is_file():
            models[name] = load_model(path)
    for item in args.extra:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise InputError(f"--extra expects NAME=PATH, got {item!r}")
        models[name] = load_model(path)
    return models


def original_table_section(models: dict, seed: int) -> list[str]:
    """The original repository's protocol: σ = 3, 1000 random signals, mean of 3 runs."""
    if "net" not in models:
        return []
    original_table = {"net (fixed BN)": (9.59, 1.84), "net (unfixed BN)": (9.86, 1.81), "wiener": (4.85, 2.40),
                  "l1": (4.54, 2.44), "gmc": (1.66, 2.89)}
    runs = []
    for run in range(3):
        c, y = benchmark_signals(seed + 1 + run, 1000, SIGMA)
        est = {"net (fixed BN)": denoise(models["net"][0], y, "fixed"),
               "net (unfixed BN)": denoise(models["net"][0], y, "unfixed"),
               "wiener": classical.wiener(y), "l1": classical.l1_srls(y), "gmc": classical.gmc(y)}
        runs.append({k: score(v, c) for k, v in est.items()})
    out = ["## The original repository's table, reproduced", "",
           "Its protocol: σ = 3, 1000 random signals, mean of 3 runs (seeds "
           f"{seed + 1}..{seed + 3}). Original numbers from its report.", "",
           "| | paper PSNR (original) | paper PSNR (ours) | RMSE (original) | RMSE (ours) |", "|---|---|---|---|---|"]
    for k, (original_psnr, original_rmse) in original_table.items():
        ours_psnr = np.mean([r[k]["psnr_paper"] for r in runs])
        ours_rmse = np.mean([r[k]["rmse"] for r in runs])
        out.append(f"| {k} | {original_psnr:.2f} | {ours_psnr:.2f} | {original_rmse:.2f} | {ours_rmse:.4f} |")
    return out + [""]


def sweep(models: dict, seed: int, n: int) -> dict[str, list[float]]:
    """RMSE per σ in SIGMAS: both oracles, Wiener, soft, then blind/blind_sure/net/sparse in both modes."""
    curves: dict[str, list[float]] = {"bayes": [], "wiener": [], "soft (T = σ)": []}
    swept = {name: m for name, m in models.items() if name in ("blind", "blind_sure", "net", "sparse", "universal")}
    for sigma in progress(SIGMAS, len(SIGMAS), "noise levels", "σ"):
        c, y = benchmark_signals(seed, n, sigma)
        curves["bayes"].append(score(classical.bayes_posterior_mean(y, sigma), c)["rmse"])
        curves["wiener"].append(score(classical.wiener(y), c)["rmse"])
        curves["soft (T = σ)"].append(score(classical.soft_threshold(y, threshold=sigma), c)["rmse"])
        curves.setdefault(BLIND_ORACLE, []).append(blind_oracle_rmse(c, y))
        for name, (model, _) in swept.items():
            for mode in inference_modes(model.config):
                curves.setdefault(evaluate.net_row_name(name, mode), []).append(score(denoise(model, y, mode), c)["rmse"])
    return curves


def sweep_section(curves: dict[str, list[float]], has_blind: bool, fig_path: Path, made_by: str, reads: tuple) -> list[str]:
    """The "Across noise levels" table, and blind_curve.png when the blind model is there."""
    out = ["## Across noise levels", "", "RMSE; in brackets, the ratio to the σ-aware Bayes RMSE. The blind oracle is "
           "the limit of a denoiser told nothing about σ (σ uniform on 0.5..5, inferred from the whole signal).", "",
           "| model | " + " | ".join(f"σ = {s:g}" for s in SIGMAS) + " |", "|---" * (len(SIGMAS) + 1) + "|"]
    for name, values in curves.items():
        cells = [f"{v:.4f}" + ("" if name == "bayes" else f" ({v / b:.3f})") for v, b in zip(values, curves["bayes"])]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("")
    if has_blind:
        shown = {k: v for k, v in curves.items() if not k.startswith(("net", "sparse")) and "unfixed" not in k}
        save_figure(blind_curve(shown, made_by), fig_path, reads=reads)
        out += [f"![blind curve]({fig_path.name})", ""]
    return out


def sparse_section(models: dict, clean: np.ndarray, noisy: np.ndarray) -> list[str]:
    """The original repository's proposed sparse BN against plain BN: how sparse, and at what RMSE."""
    if "net" not in models or "sparse" not in models:
        return []
    out = ["## Sparse BN study", "", "| model | BN mode | BN outputs exactly 0 | ReLU outputs 0 | mean abs BN output | RMSE σ = 3 |",
           "|---|---|---|---|---|---|"]
    for name in ("net", "sparse"):
        model = models[name][0]
        for mode in BN_MODES:
            sp = activation_sparsity(model, noisy[:500], mode)
            r = score(denoise(model, noisy, mode), clean)["rmse"]
            out.append(f"| {name} | {mode} | {100 * sp['bn_zero']:.1f} % | {100 * sp['relu_zero']:.1f} % "
                       f"| {sp['mean_abs']:.3f} | {r:.4f} |")
    return out + [""]


UNIT_FACTORS = (1e-3, 1.0, 1e3)  # the same signals in milli-units, units and kilo-units


def units_section(models: dict, paths: dict[str, Path], clean: np.ndarray, noisy: np.ndarray) -> tuple[list[str], dict]:
    """RMSE relative to σ of every model (recorded BN mode) on the σ = 3 signals times each of UNIT_FACTORS,
    in PyTorch and, where the .h5 lies beside the .pth, in NumPy. Also returns each row's worst departure
    from its ×1 value, for the targets."""
    from Numpy_V2.model import load_h5  # the NumPy backend, only for this table

    out = ["## Any units", "", "The σ = 3 signals multiplied by a factor a, denoised, and scored against a·clean: "
           "RMSE / (a·σ) (1 is the noisy input). A scale-equivariant model (f(a·y) = a·f(y)) gives the same number "
           "in every column.", "",
           "| model | backend | " + " | ".join(f"×{a:g}" for a in UNIT_FACTORS) + " |",
           "|---|---|" + "---|" * len(UNIT_FACTORS)]
    spread = {}
    for name, (model, _) in models.items():
        backends = {"PyTorch": lambda y, m=model: denoise(m, y)}
        h5 = paths[name].with_suffix(".h5")
        if h5.is_file():
            backends["NumPy"] = load_h5(h5).denoise
        for backend, run in backends.items():
            values = [score(run(noisy * a) / a, clean)["rmse"] / SIGMA for a in UNIT_FACTORS]
            one = values[UNIT_FACTORS.index(1.0)]
            spread[f"{name} {backend}"] = max(abs(v / one - 1) for v in values)
            out.append(f"| {name} ({model.config.bn_mode} BN) | {backend} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    return out + [""], spread


def targets_section(models: dict, rows: list, base: dict, curves: dict, spread: dict | None = None) -> list[str]:
    """Each numeric target of the project, measured here."""
    bayes3 = base["bayes"]["rmse"]
    checks = [
        ("wiener RMSE in 2.37–2.43", base["wiener"]["rmse"], 2.37 <= base["wiener"]["rmse"] <= 2.43),
        ("l1 RMSE in 2.41–2.47", base["l1"]["rmse"], 2.41 <= base["l1"]["rmse"] <= 2.47),
        ("gmc RMSE in 2.83–2.93", base["gmc"]["rmse"], 2.83 <= base["gmc"]["rmse"] <= 2.93),
        ("soft RMSE ≤ 1.87", base["soft"]["rmse"], base["soft"]["rmse"] <= 1.87),
        ("bayes RMSE in 1.59–1.65", bayes3, 1.59 <= bayes3 <= 1.65),
    ]
    lookup = dict(rows)
    if "net" in models:
        f, u = lookup["net (fixed BN)"]["rmse"], lookup["net (unfixed BN)"]["rmse"]
        checks += [("net fixed BN ≤ 1.63", f, f <= 1.63), ("net unfixed BN ≤ 1.80", u, u <= 1.80),
                   ("net fixed BN ≤ 1.005 × Bayes at σ = 3 (ratio)", f / bayes3, f / bayes3 <= 1.005)]
    for name, bound in (("blind", 1.01), ("blind_sure", 1.03)):
        if name in models:
            mode = models[name][0].config.bn_mode
            ratios = [v / b for v, b in zip(curves[evaluate.net_row_name(name, mode)], curves["bayes"])]
            checks.append((f"{name} ({mode} BN, as recorded) ≤ {bound} × Bayes at σ = 1..5 (worst ratio)",
                           max(ratios), max(ratios) <= bound))
    if "universal" in models and "blind" in models:  # the broad-prior model against the spike specialist
        blind = curves[evaluate.net_row_name("blind", models["blind"][0].config.bn_mode)]
        ratios = [v / b for v, b in zip(curves[evaluate.net_row_name("universal", "fixed")], blind)]
        checks.append(("universal ≤ 1.05 × blind at σ = 1..5 (worst ratio)", max(ratios), max(ratios) <= 1.05))
    if "sure" in models:
        mode = models["sure"][0].config.bn_mode
        ratio = lookup[evaluate.net_row_name("sure", mode)]["rmse"] / bayes3
        checks.append((f"sure ({mode} BN, as recorded) ≤ 1.005 × Bayes at σ = 3 (ratio)", ratio, ratio <= 1.005))
    for row, worst in (spread or {}).items():
        checks.append((f"{row}: RMSE at ×0.001 and ×1000 within 0.1 % of ×1 (worst departure)", worst, worst <= 1e-3))
    out = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    return out + [f"| {t} | {v:.4f} | {'yes' if ok else '**no**'} |" for t, v, ok in checks]


def main(argv=None) -> None:
    args = get_args(argv)
    check_budget(args)
    with write_policy(overwrite=args.overwrite):  # every write below: deepdenoise1d.safewrite's policy
        produce(args)


def produce(args: argparse.Namespace) -> None:
    """Evaluate, then write the report and the figure the flags name."""
    configure_threads(resolve_threads(args.threads))
    torch.set_grad_enabled(False)
    models = load_models(args)
    reads = tuple(str(p) for path in _model_paths(args) for p in (path, path.with_suffix(".h5")))  # the units table reads both
    guard_output(args.output, reads, kind="text")  # fail before the work, not after
    fig_dir = args.fig_dir if args.fig_dir is not None else args.output.parent
    made_by = f"PyTorch; weights in {frontend.shown_path(args.weights_dir)}/; seed {args.seed}, {args.n} signals per σ"
    out = ["# Results on held-out signals", "",
           f"{args.n} signals per noise level, `deepdenoise1d.synthesis.benchmark_signals({args.seed}, {args.n}, σ)` "
           f"(`np.random.default_rng([{args.seed}, round(100·σ)])`); reproduce with "
           f"`python scripts/results.py --n {args.n} --seed {args.seed}`. The σ = 3 rows equal "
           f"`test.py --random --n {args.n} --seed {args.seed}` and `Numpy_test.py --random ...` row for row.", ""]
    lines, rows, base, (clean, noisy) = sigma3_section(models, args.seed, args.n)
    out += lines
    # The limit of any scale-equivariant model (it cannot know the units): what the shipped models can reach.
    equivariant = score(classical.bayes_equivariant_posterior_mean(noisy, SIGMA), clean)["rmse"]
    out += [f"The best scale-equivariant denoiser (`classical.bayes_equivariant_posterior_mean`, units unknown) "
            f"scores {equivariant:.4f}, {equivariant / base['bayes']['rmse']:.4f} × Bayes: the price of working in "
            "any units.", ""]
    out += ["Rows: `net` ckpt/ckpt_best.pth; `noprior` the same recipe with `--no-prior`; `sparse` with "
            "`--norm sparse_bn`; `sure` trained from noisy signals only; `soft` thresholds at T = σ; "
            "`bayes` is the posterior mean given σ (the limit).", ""]
    out += original_table_section(models, args.seed)
    curves = sweep(models, args.seed, args.n)
    out += sweep_section(curves, "blind" in models, fig_dir / "blind_curve.png", made_by, reads)
    out += sparse_section(models, clean, noisy)
    units, spread = units_section(models, _named_paths(args), clean, noisy)
    out += units
    out += targets_section(models, rows, base, curves, spread)
    text = "\n".join(out) + "\n"
    atomic_write(args.output, lambda fh: fh.write(text.encode()), reads=reads)
    print(text)
    print(f"wrote {args.output}", file=sys.stderr)


def _named_paths(args) -> dict[str, Path]:
    """``{name: checkpoint path}`` of the shipped checkpoints found, then every --extra (as load_models names them)."""
    paths = {name: args.weights_dir / f for name, f in SHIPPED.items() if (args.weights_dir / f).is_file()}
    return {**paths, **{name: Path(path) for name, _, path in (item.partition("=") for item in args.extra)}}


def _model_paths(args) -> list[Path]:
    return list(_named_paths(args).values())


if __name__ == "__main__":
    run_cli(main, "results.py")

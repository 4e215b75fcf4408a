"""Label-free training, three ways: SURE against its anchors R2R and UNSURE.

    python scripts/label_free_study.py ckpt/ckpt_sure.pth runs/r2r/ckpt_best.pth runs/unsure/ckpt_best.pth
    python scripts/label_free_study.py A.pth B.pth --sigma 1 3 5 --n 2000 --output runs/label_free.md

Each checkpoint is a ``train.py --loss sure|r2r|unsure`` run (any train.py checkpoint works).
For every σ, on ``deepdenoise1d.synthesis.benchmark_signals(seed, n, σ)``, it prints the RMSE of
f(y) and its ratio to the σ-aware Bayes RMSE. An R2R model was trained on inputs of noise
σ·√(1 + α²), so it also gets the inference of its paper (Pang et al., CVPR 2021): the mean of
f(y + ασz) over ``--draws`` recorruptions z, with the σ its training used (the true one, or
each signal's own estimate for a ``--sigma-estimate signal`` run). An UNSURE model prints the
noise level it learned, √η, beside the true σ.

``--score LOW:HIGH`` adds a label-free score per checkpoint, to choose between runs without a
clean signal: the blind SURE objective (per-signal σ̂, weights 1/σ̂², 8 antithetic probes) on
``--n`` noisy signals of σ drawn uniformly from LOW:HIGH (``default_rng([seed, VAL_STREAM])``).
Lower is better.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from deepdenoise1d.budget import check_memory
from deepdenoise1d.classical import bayes_posterior_mean
from deepdenoise1d.cli import add_overwrite_arg, add_threads_arg, output_file, positive_float, positive_int
from deepdenoise1d.errors import run_cli
from deepdenoise1d.safewrite import write_policy
from deepdenoise1d.metrics import rmse
from deepdenoise1d.noise import estimate_sigma, per_signal_sigma
from deepdenoise1d.synthesis import DEFAULT_SEED, SIGNAL_LENGTH, benchmark_signals, noisy_pairs, parse_sigma
from deepdenoise1d.threads import resolve_threads

# Memory per sample of the --n signals of one σ: the draw (clean, noisy, float64) and, on top, the largest step:
# the Bayes oracle's working set (522 bytes per sample, measured). The others stay below it: R2R's recorruption
# mean (a sum, a perturbed input and an output, float64) and --score's SURE over all --n signals at once
# (its probes and the network's activations: 360-440 bytes per sample, measured).
ORACLE_WORK_BYTES_PER_SAMPLE = 560
STUDY_BYTES_PER_SAMPLE = 8 * 2 + ORACLE_WORK_BYTES_PER_SAMPLE


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="label_free_study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", nargs="+", type=Path, help="train.py checkpoints (.pth)")
    p.add_argument("--sigma", type=positive_float, nargs="+", default=[3.0], help="noise levels (default: 3)")
    p.add_argument("--n", type=positive_int, default=2000, help="held-out signals per σ (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the held-out draw (default %(default)s)")
    p.add_argument("--draws", type=positive_int, default=16, help="R2R recorruptions averaged (default %(default)s)")
    p.add_argument("--score", metavar="LOW:HIGH", type=sigma_range_arg,
                   help="also print the label-free blind score on σ from LOW:HIGH")
    p.add_argument("--output", type=output_file, help="also write the table (Markdown) and a .json beside it")
    add_overwrite_arg(p)
    add_threads_arg(p)
    return p.parse_args(argv)


def check_budget(a: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, an --n whose signals cannot be scored in memory."""
    check_memory(a.n * SIGNAL_LENGTH * STUDY_BYTES_PER_SAMPLE, f"--n {a.n} signals per σ", "use a smaller --n")


def sigma_range_arg(text: str) -> tuple[float, float]:
    """argparse type: LOW:HIGH with 0 < LOW <= HIGH."""
    try:
        value = parse_sigma(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if np.isscalar(value) or value[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH with 0 < LOW <= HIGH, got {text!r}")
    return value


def recorrupted_mean(model, noisy: np.ndarray, sigma: np.ndarray, alpha: float, draws: int, seed: int) -> np.ndarray:
    """R2R's inference: the mean of f(y + ασz) over ``draws`` standard normal z (seeded)."""
    from Pytorch_V1.data import RECORRUPT_STREAM
    from Pytorch_V1.inference import denoise

    rng = np.random.default_rng([seed, RECORRUPT_STREAM])
    total = np.zeros_like(noisy)
    for _ in range(draws):
        total += denoise(model, noisy + alpha * sigma[:, None] * rng.standard_normal(noisy.shape))
    return total / draws


def rows_for(path: Path, model, ckpt: dict, noisy: np.ndarray, clean: np.ndarray, sigma: float, bayes: float,
             a: argparse.Namespace) -> list[dict]:
    """The table rows of one checkpoint at one σ: f(y), and R2R's recorruption mean."""
    from Pytorch_V1.inference import denoise

    train = ckpt["config"].get("train", {})
    loss = train.get("loss", "?")
    value = float(rmse(denoise(model, noisy), clean).mean())
    rows = [{"weights": str(path), "loss": loss, "inference": "f(y)", "sigma": sigma, "rmse": value,
             "vs_bayes": value / bayes}]
    if loss == "unsure" and "unsure" in ckpt:
        rows[0]["learned_sigma"] = float(np.sqrt(ckpt["unsure"]["eta"]))
    if loss == "r2r":
        told = train.get("sigma_estimate") == "signal"
        s = estimate_sigma(noisy, per_signal=True) if told else np.full(len(noisy), sigma)
        value = float(rmse(recorrupted_mean(model, noisy, s, train["r2r_alpha"], a.draws, a.seed), clean).mean())
        rows.append({**rows[0], "inference": f"mean of {a.draws} f(y + ασz)", "rmse": value, "vs_bayes": value / bayes})
    return rows


def label_free_score(model, noisy: np.ndarray, seed: int) -> float:
    """Mean over signals of SURE / σ̂² (weights normalised to mean 1): the blind training objective,
    with the probes and step of train.py's validation SURE."""
    import torch
    from Pytorch_V1.data import VAL_PROBE_STREAM, VAL_PROBES
    from Pytorch_V1.losses import VAL_EPSILON
    from Pytorch_V1.losses import loss_weights, sure_per_signal
    from Pytorch_V1.model import wiener_prior

    sigma = per_signal_sigma(noisy, "score signals")
    x = torch.from_numpy(noisy.astype(np.float32))[:, None]
    probe = np.random.default_rng([seed, VAL_PROBE_STREAM]).standard_normal((VAL_PROBES, *noisy.shape)).astype(np.float32)
    with_prior = model.wienernet is not None  # sure_per_signal recomputes the prior at each perturbed input
    with torch.no_grad():
        pred = model(x, wiener_prior(x) if with_prior else None)
        risk = sure_per_signal(model, x, pred, torch.from_numpy(sigma.astype(np.float32)),
                               torch.from_numpy(probe)[:, :, None], VAL_EPSILON, with_prior, central=True)
    return float((risk.double().numpy() * loss_weights("sigma2", sigma)).mean())


def markdown(rows: list[dict], a: argparse.Namespace) -> str:
    lines = [f"Held-out: {a.n} signals per σ, seed {a.seed}.", "",
             "| σ | weights | loss | inference | RMSE | ×Bayes | learned σ |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        learned = f"{r['learned_sigma']:.4f}" if "learned_sigma" in r else ""
        lines.append(f"| {r['sigma']:g} | `{r['weights']}` | {r['loss']} | {r['inference']} | {r['rmse']:.4f} | "
                     f"{r['vs_bayes']:.4f} | {learned} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    a = get_args(argv)
    check_budget(a)
    with write_policy(overwrite=a.overwrite):  # every write below: deepdenoise1d.safewrite's policy
        produce(a)


def produce(a: argparse.Namespace) -> None:
    """Score every checkpoint; print the table and write the files --output names."""
    import torch
    from Pytorch_V1.checkpoint import load_model

    torch.set_num_threads(resolve_threads(a.threads))
    if a.output is not None:  # refuse an output that is one of the checkpoints before the work, not after
        from deepdenoise1d.safewrite import guard_output

        guard_output(a.output, a.weights, kind="text")
        guard_output(a.output.with_suffix(".json"), a.weights, kind="json")
    models = [(path, *load_model(path, "cpu")) for path in a.weights]
    rows = []
    for sigma in a.sigma:
        clean, noisy = benchmark_signals(a.seed, a.n, sigma)
        bayes = float(rmse(bayes_posterior_mean(noisy, sigma), clean).mean())
        for path, model, ckpt in models:
            rows += rows_for(path, model, ckpt, noisy, clean, sigma, bayes, a)
        print(f"σ={sigma:g} done (Bayes {bayes:.4f})", file=sys.stderr, flush=True)
    if a.score is not None:
        from Pytorch_V1.data import VAL_STREAM

        _, noisy, _ = noisy_pairs(np.random.default_rng([a.seed, VAL_STREAM]), a.n, a.score)
        for path, model, _ in models:
            print(f"label-free score (σ {a.score[0]:g}:{a.score[1]:g}, {a.n} signals): {label_free_score(model, noisy, a.seed):.5f}  {path}")
    text = markdown(rows, a)
    print(text)
    if a.output is not None:
        from deepdenoise1d.safewrite import atomic_write

        atomic_write(a.output, lambda f: f.write(text.encode()), reads=a.weights)
        atomic_write(a.output.with_suffix(".json"), lambda f: f.write(json.dumps(rows, indent=1).encode()), reads=a.weights)


if __name__ == "__main__":
    run_cli(main, "label_free_study.py")

"""Throughput of the ICNN_s forward: NumPy, PyTorch eager, and ONNX Runtime when installed.

    .venv/bin/python scripts/benchmark.py [--weights ckpt/ckpt_best.pth] [--n 100000] [--length 100]
                                          [--bn-mode fixed|unfixed] [--threads N] [--seed K] [--end-to-end]

It needs both torch and NumPy, so it lives in ``scripts/`` (``Numpy_V2`` never
imports torch). Every backend gets the same weights, the same signals and the
same Wiener prior h (computed once, and timed on its own since both sides share
it), and the same thread count (``--threads``, default 1 as every command).

Without ``--weights`` the weights are random (torch's initialisation with
randomised BN statistics), so the timings do not depend on a trained file.
``--bn-mode`` defaults to the mode the weights record. ``--end-to-end`` also times
the whole ``.npy -> .npy`` processes: Numpy_V2/Numpy_test.py against Pytorch_V1/test.py.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from icnn.spec import BN_MODES, CHUNK, MIN_LENGTH
from Numpy_V2.model import FORWARD_BLOCK, load_h5, wiener_prior
from Numpy_V2.parallel import run_blocks, worker_count
from deepdenoise1d.cli import add_bn_mode_arg, add_n_arg, add_seed_arg, add_threads_arg, add_weights_arg, positive_int
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.synthesis import SpikePrior, noisy_pairs

REPO_ROOT = Path(__file__).resolve().parents[1]


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark.py", description="Signals per second of the ICNN_s forward, NumPy vs PyTorch (vs ONNX Runtime).")
    add_weights_arg(parser, None, "a .pth checkpoint (default: random weights)")
    add_n_arg(parser, 100_000)
    add_seed_arg(parser)
    add_bn_mode_arg(parser, BN_MODES)
    add_threads_arg(parser)
    parser.add_argument("--length", type=positive_int, default=100, help="signal length (default 100)")
    parser.add_argument("--no-prior", action="store_true", help="random weights without the prior branch")
    parser.add_argument("--end-to-end", action="store_true", help="also time Numpy_test.py and test.py denoising a .npy file")
    args = parser.parse_args(argv)
    if args.length < MIN_LENGTH:
        parser.error(f"--length must be >= {MIN_LENGTH}")
    return args


def timed(run) -> float:
    """Wall seconds of one call (after one small warm-up call made by the caller)."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def prepare_weights(args: argparse.Namespace, folder: Path) -> tuple[Path, Path]:
    """(checkpoint .pth, weights .h5): the given checkpoint, or random weights, converted by pth2h5."""
    import torch

    from Pytorch_V1.checkpoint import save_checkpoint
    from Pytorch_V1.model import ICNN_s, ModelConfig

    checkpoint = args.weights
    if checkpoint is None:
        torch.manual_seed(args.seed)
        model = ICNN_s(ModelConfig(prior=not args.no_prior))
        generator = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name.endswith("running_mean"):
                    buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
                elif name.endswith("running_var"):
                    buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
        checkpoint = folder / "random.pth"
        save_checkpoint(checkpoint, {"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict()}})
    weights = folder / "weights.h5"
    # pth2h5.py is a top-level command, not a package module: run it as users do.
    done = subprocess.run([sys.executable, str(REPO_ROOT / "pth2h5.py"), str(checkpoint), str(weights)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "pth2h5.py failed"
        raise InputError(line.removeprefix("pth2h5.py: error: "))
    return checkpoint, weights


def numpy_forward(net, x: np.ndarray, h: np.ndarray | None, bn_mode: str, threads: int) -> None:
    """The forward over blocks, on the pool net.denoise uses (one BLAS thread per worker)."""

    def run(start: int) -> None:
        block = slice(start, start + FORWARD_BLOCK)
        net.forward(x[block], None if h is None else h[block], bn_mode)

    run_blocks(run, range(0, x.shape[0], FORWARD_BLOCK), threads)


def torch_eager(checkpoint: Path, x: np.ndarray, h: np.ndarray | None, bn_mode: str, threads: int) -> tuple[float, float]:
    """Seconds for PyTorch eager on the CPU, chunked as Pytorch_V1.inference.denoise does:
    the forward given h, and denoise (h included)."""
    import torch

    from Pytorch_V1.checkpoint import load_model
    from Pytorch_V1.inference import configure_threads, denoise

    configure_threads(threads)
    model, _ = load_model(checkpoint, "cpu")
    x_t = torch.from_numpy(x)
    h_t = torch.from_numpy(h) if h is not None else None

    def run(n: int) -> None:
        with torch.no_grad():
            for start in range(0, n, CHUNK):
                stop = min(start + CHUNK, n)
                model(x_t[start:stop], None if h_t is None else h_t[start:stop], bn_mode)

    run(min(CHUNK, x.shape[0]))  # warm-up at full chunk size: oneDNN builds its kernels per shape
    forward_seconds = timed(lambda: run(x.shape[0]))
    return forward_seconds, timed(lambda: denoise(model, x[:, 0], bn_mode))


class _FixedMode:
    """``model(x, h)`` with a fixed BN mode, for the ONNX tracer (which passes no mode)."""

    def __new__(cls, model, bn_mode):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, x, h=None):
                return self.model(x, h, bn_mode)

        return Wrapped().eval()


def onnx_runtime(checkpoint: Path, x: np.ndarray, h: np.ndarray | None, bn_mode: str, threads: int, folder: Path) -> float | str:
    """Seconds for ONNX Runtime on the CPU, or why it was skipped."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed (optional): skipped"
    import torch

    from Pytorch_V1.checkpoint import load_model

    model = _FixedMode(load_model(checkpoint, "cpu")[0], bn_mode)
    block = min(FORWARD_BLOCK, x.shape[0])
    example = (torch.from_numpy(x[:block]), torch.from_numpy(h[:block]) if h is not None else None)
    path = folder / "icnn_s.onnx"
    try:  # fixed batch size: the per-signal kernel is a grouped conv with one group per signal
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about the shape checks
            torch.onnx.export(model, example, str(path), input_names=["x", "h"], dynamo=False)
    except Exception as err:  # the exporter's failures have no common type
        return f"ONNX export failed ({type(err).__name__}: {str(err).splitlines()[0][:120]}): skipped"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run() -> None:
        for start in range(0, x.shape[0] - block + 1, block):  # whole blocks only (fixed batch size)
            feed = {"x": x[start : start + block]}
            if "h" in names:
                feed["h"] = h[start : start + block]
            session.run(None, feed)

    whole = (x.shape[0] // block) * block
    if whole == 0:
        return "fewer signals than one ONNX batch: skipped"
    return timed(run) * x.shape[0] / whole


def end_to_end(checkpoint: Path, weights: Path, noisy: np.ndarray, bn_mode: str, threads: int, folder: Path) -> tuple[float, float]:
    """Wall seconds of the two whole processes denoising the same .npy file."""
    source = folder / "noisy.npy"
    np.save(source, noisy.astype(np.float32))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    commands = {
        "numpy": [sys.executable, str(REPO_ROOT / "Numpy_V2" / "Numpy_test.py"), "--weights", str(weights)],
        "torch": [sys.executable, str(REPO_ROOT / "Pytorch_V1" / "test.py"), "--weights", str(checkpoint), "--device", "cpu"],
    }
    seconds = {}
    for name, command in commands.items():
        output = folder / f"{name}.npy"
        start = time.perf_counter()
        done = subprocess.run([*command, "--input", str(source), "--output", str(output), "--bn-mode", bn_mode,
                               "--threads", str(threads)], env=env, capture_output=True, text=True)
        seconds[name] = time.perf_counter() - start
        if done.returncode != 0:
            raise InputError(f"{name} process failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return seconds["numpy"], seconds["torch"]


def report(n: int, numpy_s: float, torch_s: float, onnx, numpy_denoise_s: float, torch_denoise_s: float) -> None:
    print("  forward, given h:")
    print(f"    NumPy                  {n / numpy_s:10.0f} signals/s")
    print(f"    PyTorch eager          {n / torch_s:10.0f} signals/s")
    print(f"    NumPy / PyTorch time   {numpy_s / torch_s:10.2f}  (<= 1: NumPy at least as fast)")
    if isinstance(onnx, str):
        print(f"    ONNX Runtime           {onnx}")
    else:
        print(f"    ONNX Runtime           {n / onnx:10.0f} signals/s")
        print(f"    NumPy / ONNX time      {numpy_s / onnx:10.2f}")
    print("  denoise (h + forward), as the test scripts call it:")
    print(f"    NumPy net.denoise      {n / numpy_denoise_s:10.0f} signals/s")
    print(f"    PyTorch denoise        {n / torch_denoise_s:10.0f} signals/s")
    print(f"    NumPy / PyTorch time   {numpy_denoise_s / torch_denoise_s:10.2f}")


def main(argv: list[str] | None = None) -> None:
    args = get_args(argv)
    threads = worker_count(args.threads)
    noisy = noisy_pairs(np.random.default_rng(args.seed), args.n, prior=SpikePrior(length=args.length))[1]
    x = noisy.astype(np.float32)[:, None, :]  # (N, 1, L)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError("benchmark.py needs torch to build the weights and the PyTorch baseline") from None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint, weights = prepare_weights(args, folder)
        net = load_h5(weights)
        mode = args.bn_mode or net.config.bn_mode
        print(f"{args.n} signals of length {args.length}, {threads} thread(s), bn {mode}, prior {'on' if net.wienernet is not None else 'off'}")
        h = None
        if net.wienernet is not None:
            h_seconds = timed(lambda: wiener_prior(x))
            h = wiener_prior(x)
            print(f"  Wiener prior h (shared)  {args.n / h_seconds:10.0f} signals/s")
        numpy_forward(net, x[:FORWARD_BLOCK], None if h is None else h[:FORWARD_BLOCK], mode, 1)  # warm-up
        numpy_seconds = timed(lambda: numpy_forward(net, x, h, mode, threads))
        numpy_denoise_seconds = timed(lambda: net.denoise(x[:, 0], mode, threads=threads))
        torch_seconds, torch_denoise_seconds = torch_eager(checkpoint, x, h, mode, threads)
        onnx = onnx_runtime(checkpoint, x, h, mode, threads, folder)
        report(args.n, numpy_seconds, torch_seconds, onnx, numpy_denoise_seconds, torch_denoise_seconds)
        if args.end_to_end:
            numpy_wall, torch_wall = end_to_end(checkpoint, weights, noisy, mode, threads, folder)
            print(f"  whole process, .npy -> .npy: Numpy_test.py {numpy_wall:.2f} s, test.py {torch_wall:.2f} s, ratio {numpy_wall / torch_wall:.2f}")


if __name__ == "__main__":
    run_cli(main, "benchmark.py")

"""Speed of the three runtimes of ICNN_s: NumPy, PyTorch eager, and ONNX Runtime when installed.

    .venv/bin/python scripts/benchmark.py [--weights ckpt/ckpt_best.pth] [--n 100000] [--length 100]
                                          [--bn-mode fixed|unfixed] [--threads N] [--seed K] [--end-to-end]

It needs both torch and NumPy, so it lives in ``scripts/`` (``Numpy_V2`` never
imports torch). Every runtime gets the same weights (ONNX Runtime the graph
``pth2onnx.py`` exports), the same signals and the same thread count (``--threads``,
default 1 as every command; ONNX Runtime gets as many intra-op threads and one
inter-op thread). Each is timed after a warm-up, and each time is also given as a
ratio to PyTorch's from the same run:

- forward given h: the network alone, on the same precomputed Wiener prior h;
- denoise: h included, as ``net.denoise``, ``Pytorch_V1.inference.denoise`` and
  :func:`onnx_denoise` compute it;
- whole process (``--end-to-end``): a fresh process from start to its written ``.npy``:
  Numpy_V2/Numpy_test.py, Pytorch_V1/test.py, and :func:`onnx_process` (the same
  streaming ``deepdenoise1d.streaming.denoise_file``, without torch).

Without ``--weights`` the weights are random (torch's initialisation with
randomised BN statistics), so the timings do not depend on a trained file.
``--bn-mode`` defaults to the mode the weights record.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from icnn.spec import BN_MODES, CHUNK, MIN_LENGTH, ModelConfig, baseline, min_length
from Numpy_V2.model import forward_block, load_h5, wiener_prior
from Numpy_V2.parallel import run_blocks, worker_count
from deepdenoise1d.budget import check_memory
from deepdenoise1d.classical import wiener_inverse_response
from deepdenoise1d.cli import add_bn_mode_arg, add_n_arg, add_seed_arg, add_threads_arg, add_weights_arg, positive_int
from deepdenoise1d.errors import InputError, run_cli
from deepdenoise1d.synthesis import SpikePrior, noisy_pairs

REPO_ROOT = Path(__file__).resolve().parents[1]
# Peak memory per sample of the --n signals of --length: the noisy signals (float64, 8 bytes), x and the shared
# prior h (float32, 4 + 4), and on top the largest working set of one timed call: the Wiener prior works in
# float64 (88 bytes per sample measured), a denoise call holds its own h and output (about 50): 112 in all.
BENCHMARK_BYTES_PER_SAMPLE = 16 + 112


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark.py", description="Seconds and signals per second of ICNN_s in NumPy, PyTorch and ONNX Runtime, each as a ratio to PyTorch.")
    add_weights_arg(parser, None, "a .pth checkpoint (default: random weights)")
    add_n_arg(parser, 100_000)
    add_seed_arg(parser)
    add_bn_mode_arg(parser, BN_MODES)
    add_threads_arg(parser)
    parser.add_argument("--length", type=positive_int, default=100, help="signal length (default 100)")
    parser.add_argument("--no-prior", action="store_true", help="random weights without the prior branch")
    parser.add_argument("--end-to-end", action="store_true", help="also time each runtime as a whole process denoising a .npy file (Numpy_test.py, test.py, ONNX Runtime)")
    args = parser.parse_args(argv)
    if args.length < MIN_LENGTH:
        parser.error(f"--length must be >= {MIN_LENGTH}")
    return args


def benchmark_bytes(n: int, length: int) -> int:
    """Estimated peak memory of a run on ``n`` signals of ``length`` samples (:data:`BENCHMARK_BYTES_PER_SAMPLE`)."""
    return n * length * BENCHMARK_BYTES_PER_SAMPLE


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, a run whose signals cannot fit in memory."""
    check_memory(benchmark_bytes(args.n, args.length), f"--n {args.n} signals of --length {args.length}",
                 "use a smaller --n or --length")


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

    size = forward_block(x.shape[2], net.config.width)

    def run(start: int) -> None:
        block = slice(start, start + size)
        net.forward(x[block], None if h is None else h[block], bn_mode)

    run_blocks(run, range(0, x.shape[0], size), threads)


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


def export_onnx(checkpoint: Path, bn_mode: str, folder: Path, prior_input: bool) -> Path | str:
    """The checkpoint exported by pth2onnx.py (dynamic batch and length; with ``prior_input`` the two-input
    graph), or why ONNX Runtime is skipped."""
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (optional): skipped"
    path = folder / "model.onnx"
    # pth2onnx.py is a top-level command, not a package module: run it as users do. The two-input graph
    # (--prior-input): the forward given h is timed apart from the prior, as for the other runtimes. An odd
    # model has none (its −y pass needs the prior of −y): its one-input graph, the prior inside, is timed.
    done = subprocess.run([sys.executable, str(REPO_ROOT / "pth2onnx.py"), str(checkpoint), str(path), "--bn-mode", bn_mode,
                           *(["--prior-input"] if prior_input else [])],
                          capture_output=True, text=True)
    if done.returncode != 0:
        line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "pth2onnx.py failed"
        return f"{line}: skipped"
    return path


def onnx_session(path: Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and one inter-op thread."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_denoise(session, noisy: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Denoise (N, L) signals with an exported graph, h computed here as the other backends do
    (``wiener_inverse_response`` in float64 from the float32 input, less its median for an offset-free
    model); float32 in, float32 out."""
    with_prior = any(i.name == "h" for i in session.get_inputs())
    config = json.loads(session.get_modelmeta().custom_metadata_map["config"])["model"]  # written by pth2onnx.py
    offset_free = config.get("baseline") == "median"
    out = np.empty(noisy.shape, dtype=np.float32)
    for start in range(0, noisy.shape[0], chunk):
        x = np.ascontiguousarray(noisy[start : start + chunk], dtype=np.float32)
        feed = {"x": x[:, None]}
        if with_prior:
            centred = x - baseline(x) if offset_free else x
            feed["h"] = wiener_inverse_response(centred.astype(np.float64)).astype(np.float32)[:, None]
        out[start : start + chunk] = session.run(None, feed)[0][:, 0]
    return out


def onnx_runtime(path: Path, x: np.ndarray, h: np.ndarray | None, threads: int, prior_input: bool) -> tuple[float, float]:
    """Seconds for ONNX Runtime on the CPU in chunks of CHUNK: the forward given h, and denoise (h included); for the
    one-input graph (not ``prior_input``) both are the graph on x (its prior inside), and denoise is
    ``onnx_runner.denoise_onnx``."""
    if not prior_input:
        from deepdenoise1d.onnx_runner import denoise_onnx, load_onnx

        model = load_onnx(path, threads)
        wide = x.astype(np.float64)

        def whole(n: int) -> None:
            for start in range(0, n, CHUNK):
                model.session.run(None, {"x": wide[start : start + CHUNK]})

        whole(min(CHUNK, x.shape[0]))  # warm-up at full chunk size
        return timed(lambda: whole(x.shape[0])), timed(lambda: denoise_onnx(model, x[:, 0]))
    session = onnx_session(path, threads)

    def forward(n: int) -> None:
        for start in range(0, n, CHUNK):
            feed = {"x": x[start : start + CHUNK]}
            if h is not None:
                feed["h"] = h[start : start + CHUNK]
            session.run(None, feed)

    forward(min(CHUNK, x.shape[0]))  # warm-up at full chunk size
    return timed(lambda: forward(x.shape[0])), timed(lambda: onnx_denoise(session, x[:, 0]))


def onnx_process(model: str, source: str, output: str, threads: str, graph: str) -> None:
    """The ONNX Runtime process of --end-to-end: ``source`` .npy -> ``output`` .npy through
    ``deepdenoise1d.streaming.denoise_file``, the streaming path the test scripts' --input takes; ``graph`` is
    ``prior_input`` (the two-input graph) or ``self_contained`` (the user's runner, its own windows and blend)."""
    from deepdenoise1d.onnx_runner import SELF_CONTAINED, denoise_onnx, load_onnx
    from deepdenoise1d.streaming import denoise_file

    if graph == SELF_CONTAINED:
        runner = load_onnx(model, int(threads))
        config = runner.config
        denoise = lambda noisy: denoise_onnx(runner, noisy).astype(noisy.dtype, copy=False)  # noqa: E731
    else:
        session = onnx_session(Path(model), int(threads))
        config = json.loads(session.get_modelmeta().custom_metadata_map["config"])  # written by pth2onnx.py
        denoise = lambda noisy: onnx_denoise(session, noisy).astype(noisy.dtype, copy=False)  # noqa: E731
    spec = ModelConfig.from_dict(config["model"], model)
    denoise_file(source, output, denoise,
                 min_length(spec), CHUNK, (model, source), spec.sigma_range, progress=False,
                 train_length=spec.train_length)  # long records in the same blended windows as the other two


# The ONNX Runtime process: this file's onnx_process, imported without torch (as a user's process would run).
ONNX_PROCESS = "import sys; sys.path.insert(0, sys.argv[1]); from benchmark import onnx_process; onnx_process(*sys.argv[2:])"
RUNTIMES = ("NumPy", "PyTorch", "ONNX Runtime")


def end_to_end(checkpoint: Path, weights: Path, onnx_model: Path | None, noisy: np.ndarray, bn_mode: str, threads: int,
               folder: Path, prior_input: bool) -> dict[str, float]:
    """Wall seconds of each whole process denoising the same .npy file, start to written output (``prior_input``:
    ``onnx_model`` is the two-input graph)."""
    source = folder / "noisy.npy"
    np.save(source, noisy.astype(np.float32))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    common = ["--input", str(source), "--method", "net", "--bn-mode", bn_mode, "--threads", str(threads)]
    commands = {
        "NumPy": [sys.executable, str(REPO_ROOT / "Numpy_V2" / "Numpy_test.py"), "--weights", str(weights), *common],
        "PyTorch": [sys.executable, str(REPO_ROOT / "Pytorch_V1" / "test.py"), "--weights", str(checkpoint), "--device", "cpu", *common],
    }
    if onnx_model is not None:
        commands["ONNX Runtime"] = [sys.executable, "-c", ONNX_PROCESS, str(Path(__file__).resolve().parent), str(onnx_model),
                                    str(source), "OUTPUT", str(threads), "prior_input" if prior_input else "self_contained"]
    seconds, outputs = {}, {}
    for name, command in commands.items():
        outputs[name] = folder / f"{name.replace(' ', '_')}.npy"
        command = [str(outputs[name]) if part == "OUTPUT" else part for part in command]
        if "--input" in command:
            command += ["--output", str(outputs[name])]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds[name] = time.perf_counter() - start
        if done.returncode != 0 or not outputs[name].is_file():
            raise InputError(f"{name} process failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    reference = np.load(outputs["PyTorch"])
    for name in commands:
        seconds[f"{name} max |diff|"] = float(np.abs(np.load(outputs[name]) - reference).max())
    return seconds


def report(n: int, seconds: dict[str, dict[str, float]], notes: dict[str, str]) -> None:
    """One row per runtime: seconds, signals per second and the ratio to PyTorch's seconds, per measurement."""
    print(f"  {'':14s} {'forward given h':>28s} {'denoise (h included)':>28s} {'whole process':>18s}")
    print(f"  {'runtime':14s} {'s':>8s} {'signals/s':>10s} {'xPyTorch':>8s} {'s':>8s} {'signals/s':>10s} {'xPyTorch':>8s} "
          f"{'s':>8s} {'xPyTorch':>9s}")
    base = seconds["PyTorch"]
    for name in RUNTIMES:
        if name in notes:
            print(f"  {name:14s} {notes[name]}")
            continue
        row = seconds[name]
        cells = []
        for key in ("forward", "denoise"):
            cells.append(f"{row[key]:8.2f} {n / row[key]:10.0f} {row[key] / base[key]:8.2f}")
        process = f"{row['process']:8.2f} {row['process'] / base['process']:9.2f}" if "process" in row else f"{'-':>8s} {'-':>9s}"
        print(f"  {name:14s} {' '.join(cells)} {process}")


def main(argv: list[str] | None = None) -> None:
    args = get_args(argv)
    check_budget(args)
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
        prior_input = not (net.config.odd or net.config.reversal)  # a symmetric model has only the one-input graph
        onnx_model = export_onnx(checkpoint, mode, folder, prior_input)
        print(f"{args.n} signals of length {args.length}, {threads} thread(s), bn {mode}, prior {'on' if net.wienernet is not None else 'off'}")
        h = None
        if net.wienernet is not None:
            h_seconds = timed(lambda: wiener_prior(x))
            h = wiener_prior(x)
            print(f"  Wiener prior h (shared)  {args.n / h_seconds:10.0f} signals/s")
        first = forward_block(args.length, net.config.width)
        numpy_forward(net, x[:first], None if h is None else h[:first], mode, 1)  # warm-up
        seconds = {"NumPy": {"forward": timed(lambda: numpy_forward(net, x, h, mode, threads)),
                             "denoise": timed(lambda: net.denoise(x[:, 0], mode, threads=threads))}}
        seconds["PyTorch"] = dict(zip(("forward", "denoise"), torch_eager(checkpoint, x, h, mode, threads)))
        notes = {}
        if isinstance(onnx_model, str):
            notes["ONNX Runtime"] = onnx_model
            onnx_model = None
        else:
            seconds["ONNX Runtime"] = dict(zip(("forward", "denoise"), onnx_runtime(onnx_model, x, h, threads, prior_input)))
        if args.end_to_end:
            walls = end_to_end(checkpoint, weights, onnx_model, noisy, mode, threads, folder, prior_input)
            for name in seconds:
                seconds[name]["process"] = walls[name]
        report(args.n, seconds, notes)
        if args.end_to_end:
            print("  whole process: .npy -> .npy (Numpy_test.py, test.py, and deepdenoise1d.streaming.denoise_file with "
                  "ONNX Runtime); max |output - PyTorch's|: "
                  + ", ".join(f"{name} {walls[name + ' max |diff|']:.2e}" for name in seconds))


if __name__ == "__main__":
    run_cli(main, "benchmark.py")

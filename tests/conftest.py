"""Generic helpers for the CLI tests: load a script as a module, run its main in-process
the way its ``__main__`` block does, or run it in a fresh interpreter (optionally with
torch made unimportable)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deepdenoise1d.errors import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]


def use_scripts_thread_count() -> None:
    """Torch computes with the scripts' default thread count. A CLI run sets it (``configure_threads``)
    and float sums depend on it, so without this a bit-for-bit comparison of an in-process run with
    a CLI run held only when some earlier test had run a CLI first."""
    torch = sys.modules.get("torch")
    if torch is not None:
        from deepdenoise1d.threads import resolve_threads

        torch.set_num_threads(resolve_threads(None))


@pytest.fixture(autouse=True, scope="session")
def private_state_folder(tmp_path_factory):
    """Every test, and every script a test runs (they inherit os.environ), keeps this project's record of
    its outputs (deepdenoise1d.safewrite.state_folder) in a temp folder of this session, never in the real
    home's. Set first: session fixtures that write (a shared training run) record there too."""
    from deepdenoise1d.safewrite import STATE_ENV

    folder = tmp_path_factory.mktemp("deepdenoise1d-state")
    folder.chmod(0o700)
    previous = os.environ.get(STATE_ENV)
    os.environ[STATE_ENV] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(STATE_ENV, None)
        else:
            os.environ[STATE_ENV] = previous


@pytest.fixture(autouse=True, scope="session")
def scripts_thread_count_for_shared_fixtures():
    use_scripts_thread_count()  # before module-scoped fixtures (shared reference runs) are built


@pytest.fixture(autouse=True)
def scripts_thread_count():
    use_scripts_thread_count()  # again per test: an in-process CLI test may have asked for more

# Runs `python -c BLOCK_TORCH script args...`: a meta-path finder refuses torch and
# torch.*, then the script runs as __main__. (sys.modules['torch'] = None would instead
# break SciPy's array-API checks, which probe for torch.)
BLOCK_TORCH = r"""
import runpy, sys

class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is unimportable in this test ({name})")
        return None

sys.meta_path.insert(0, RefuseTorch())
try:
    import torch
except ImportError:
    pass
else:
    sys.exit("the torch import hook did not work")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def load_script(path: Path, name: str):
    """Import a script file (not a package module) under ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script: Path, *args: str, cwd: Path, block_torch: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a script in a fresh interpreter from ``cwd``; text output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    prefix = ["-c", BLOCK_TORCH] if block_torch else []
    command = [sys.executable, *prefix, str(script), *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(code, stderr: str, *fragments: str) -> None:
    """Exit code 2, exactly one stderr line, no traceback, and each fragment in the message."""
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def run_command(argv, capsys) -> tuple[int, str, str]:
    """``deepdenoise1d ARGV`` in-process (its ``main``, as the console script runs it) -> (exit code, stdout, stderr)."""
    import deepdenoise1d_command

    try:
        code = deepdenoise1d_command.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@contextlib.contextmanager
def fail_after(seconds: int = 10):
    """A block in which a hang becomes a test failure (SIGALRM), not a stuck test run."""
    def hang(signum, frame):
        raise AssertionError(f"hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def run_main(capsys):
    """``run_main(module, argv)`` -> (exit code, stdout, stderr), as ``run_cli(main)`` would exit."""

    def run(module, argv, prog="prog"):
        code = 0
        try:
            run_cli(lambda: module.main([str(a) for a in argv]), prog)
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def run_call(capsys):
    """``run_call(fn)`` runs any callable under ``run_cli`` -> (exit code, stderr)."""

    def run(fn):
        code = 0
        try:
            run_cli(fn, "prog")
        except SystemExit as exit_:
            code = exit_.code
        return code, capsys.readouterr().err

    return run


# ---------------------------------------------------------------------------
# PyTorch side: shared by test_pytorch_model, test_checkpoint, test_inference, test_train, test_rundir,
# test_pytorch_test and test_pth2h5. torch is imported inside each helper: this file must import without it.

TINY = dict(steps=10, batch_size=16, val_size=50, eval_every=5, save_every=5, device="cpu")  # a few-second train() run
RUN_FILES = {"ckpt_last.pth", "ckpt_best.pth", "train_log.csv", "train_curve.png"}  # what a finished run writes


def read_log(path: Path) -> list[dict]:
    """The rows of a train_log.csv, as csv.DictReader gives them."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_tiny_run(tmp_path_factory):
    """The folder of one finished TINY run with seed 5 (built once per test module)."""
    from Pytorch_V1.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("tiny") / "run"
    train(TrainConfig(**{**TINY, "seed": 5}), folder)
    return folder


def randomise(model, seed: int = 0, beta: float = 0.5):
    """Non-trivial BN statistics and affine terms (conv weights keep their seeded default init),
    so fixed != unfixed and the prior matters."""
    import torch

    from Pytorch_V1.model import BiasFreeNorm, FilterResponseNorm, Shrink, SigmaShrink, SignalBatchNorm1d, WienerNet

    gen = torch.Generator().manual_seed(seed)

    def uniform(like, low, high):
        return torch.rand(like.shape, generator=gen) * (high - low) + low

    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, BiasFreeNorm):
                bn.running_var.copy_(uniform(bn.running_var, 0.05, 0.25))
                bn.weight.copy_(uniform(bn.weight, 0.5, 1.5))
            elif isinstance(bn, Shrink):
                bn.alpha.copy_(uniform(bn.alpha, -3.0, 0.0))
            elif isinstance(bn, SigmaShrink):
                bn.threshold.copy_(uniform(bn.threshold, -0.3, 0.3))
            elif isinstance(bn, FilterResponseNorm):
                bn.weight.copy_(uniform(bn.weight, 0.5, 1.5))
                bn.bias.copy_(uniform(bn.bias, -0.2, 0.2))
                bn.tau.copy_(uniform(bn.tau, -0.5, 0.1))
            if isinstance(bn, SignalBatchNorm1d):
                bn.running_mean.copy_((torch.rand(bn.num_features, generator=gen) - 0.5) * 0.2)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) * 0.2 + 0.05)
                bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
                bn.bias.copy_((torch.rand(bn.num_features, generator=gen) - 0.5) * 0.4)
                if bn.threshold is not None:
                    bn.threshold.copy_(torch.rand(bn.num_features, generator=gen) * 0.2)
        wn = getattr(model, "wienernet", None)
        if isinstance(model, WienerNet):
            wn = model
        if wn is not None:
            wn.beta.fill_(beta)
    return model.eval()


def make_model(seed: int = 0, **config):
    """A seeded ICNN_s (``config``: ModelConfig fields), randomised and in eval mode."""
    import torch

    from Pytorch_V1.model import ICNN_s, ModelConfig

    torch.manual_seed(seed)
    return randomise(ICNN_s(ModelConfig(**config)), seed)


def batch_of_100(n: int, seed: int = 0):
    """``n`` noisy synthetic signals of length 100 (σ 3), as a float32 tensor (N, 1, 100)."""
    import numpy as np
    import torch

    from deepdenoise1d.synthesis import noisy_pairs

    _, noisy, _ = noisy_pairs(np.random.default_rng(seed), n, 3.0)
    return torch.from_numpy(noisy.astype(np.float32))[:, None]


def write_cuda_checkpoint(path, ckpt: dict) -> None:
    """Save ``ckpt`` on the CPU, then rewrite every storage location 'cpu' to 'cuda:0' in data.pkl,
    as if saved from a CUDA device. Every other zip member is copied byte for byte."""
    import zipfile

    import torch

    plain = path.with_name(path.name + ".cpu")
    torch.save(ckpt, plain)
    cpu_tag, cuda_tag = b"X" + (3).to_bytes(4, "little") + b"cpu", b"X" + (6).to_bytes(4, "little") + b"cuda:0"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        rewritten = 0
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                assert data[:2] == b"\x80\x02"  # protocol 2: strings are BINUNICODE
                rewritten = data.count(cpu_tag)
                data = data.replace(cpu_tag, cuda_tag)
            dst.writestr(info, data)
    assert rewritten >= 1
    plain.unlink()


def listing(folder: Path) -> dict[str, bytes]:
    """The plain files directly in ``folder``, name -> bytes (to show that nothing was written)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def write_bad_signal(folder: Path, case: str) -> Path:
    """A signal file in ``folder`` that a front end must refuse, one per key of BAD_SIGNAL_FRAGMENTS."""
    import numpy as np

    if case == "txt_non_numeric":
        path = folder / "in.txt"
        path.write_text("1.0\n2.5\nabc\n" + "0\n" * 30)
    elif case == "txt_nan":  # a NaN is a gap; a record of nothing but gaps has nothing to denoise
        path = folder / "in.txt"
        path.write_text("nan\n" * 41)
    elif case == "txt_inf":
        path = folder / "in.txt"
        path.write_text("0\n" * 20 + "-inf\n" + "0\n" * 20)
    elif case == "npy_nan":
        path = folder / "in.npy"
        np.save(path, np.full((3, 100), np.nan))
    elif case == "npy_inf":
        path = folder / "in.npy"
        x = np.zeros((3, 100))
        x[2, 99] = np.inf
        np.save(path, x)
    elif case == "short_txt":
        path = folder / "in.txt"
        path.write_text("1\n" * 15)
    elif case == "short_npy":
        path = folder / "in.npy"
        np.save(path, np.ones((4, 15)))
    elif case == "empty_txt":
        path = folder / "in.txt"
        path.write_bytes(b"")
    elif case == "blank_txt":
        path = folder / "in.txt"
        path.write_text("\n  \n\n")
    elif case == "empty_npy":
        path = folder / "in.npy"
        path.write_bytes(b"")
    elif case == "npy_no_signals":
        path = folder / "in.npy"
        np.save(path, np.zeros((0, 100)))
    else:
        raise AssertionError(case)
    return path


# What the one stderr line must name for each bad signal of write_bad_signal (besides the file's name).
BAD_SIGNAL_FRAGMENTS = {
    "txt_non_numeric": ["line 3"], "txt_nan": ["every value is NaN"], "txt_inf": ["signal 0", "index 20"],
    "npy_nan": ["every value is NaN"], "npy_inf": ["signal 2", "index 99"], "short_txt": ["16"],
    "short_npy": ["16"], "empty_txt": ["empty"], "blank_txt": ["in.txt"], "empty_npy": ["empty"],
    "npy_no_signals": ["in.npy"],
}


# ---------------------------------------------------------------------------
# train.py in a subprocess, to be killed with kill -9 (test_train, test_rundir, test_checkpoint)

TRAIN_SCRIPT = REPO_ROOT / "Pytorch_V1" / "train.py"
STARTED_TRAININGS: list = []


@pytest.fixture
def no_stray_trainings():
    """Kill (by pid) any training start_training started that a failing test left running."""
    yield
    while STARTED_TRAININGS:
        proc = STARTED_TRAININGS.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def start_training(run_dir: Path, *flags: str) -> subprocess.Popen:
    """train.py --run-dir RUN_DIR FLAGS in the background, one thread, output to RUN_DIR's sibling .log file."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    log = open(run_dir.parent / f"{run_dir.name}.log", "ab")
    try:
        proc = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), "--run-dir", str(run_dir), *flags],
                                cwd=run_dir.parent, env=env, stdout=log, stderr=log)
    finally:
        log.close()
    STARTED_TRAININGS.append(proc)
    return proc


def log_tail(run_dir: Path) -> str:
    log = run_dir.parent / f"{run_dir.name}.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``path`` exists; fails if the training exits first or takes longer than ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training exited ({proc.returncode}) before writing {path.name}:\n{log_tail(path.parent)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {path.name} after {timeout} s")
        time.sleep(0.005)


def kill_9(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is not None:
        pytest.fail("training finished before it could be killed; the test needs a longer run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def finish_training(proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Wait for a training to end; it must exit 0."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, log.read_text(errors="replace")[-2000:]


# --- property-based tests of the readers and writers (test_io.py, test_safewrite.py) -------------------

from hypothesis import HealthCheck, settings  # noqa: E402

# database=None: nothing is written into the repository (.hypothesis/).
FUZZ = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def one_line(err) -> str:
    """The text of an ``InputError``, checked to be one non-empty line."""
    text = str(err)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    return text


# --- the NumPy model against the PyTorch one (test_numpy_model.py, test_parity.py); torch imported lazily ---

CONFIGS = [(True, "bn"), (True, "sparse_bn"), (False, "bn"), (False, "sparse_bn")]
FLOAT32_TOLERANCE = 1e-5
# Two float32 evaluations of one network in different orders (a batch, one signal at a time) err against float64
# by up to 2.7 × each other where a per-signal normalisation amplifies rounding (measured: unfixed BN, random
# weights, L = 37 and 100), and NumPy's float32 error ranged 0.24–2.03 × torch's on such draws: "as close to float64
# as torch's float32" allows this many times torch's own error.
FLOAT32_SPREAD = 4.0


def random_model(prior: bool, norm: str, seed: int = 0):
    """torch's initialisation with every BN's affine and running statistics, the sparse
    thresholds (nonzero) and β randomised; eval mode."""
    import torch

    from Pytorch_V1.model import ICNN_s, ModelConfig

    torch.manual_seed(seed)
    model = ICNN_s(ModelConfig(prior=prior, norm=norm))
    generator = torch.Generator().manual_seed(seed)

    def draw(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator)

    with torch.no_grad():
        for bn in model.batch_norms():
            channels = bn.num_features
            bn.weight.copy_(draw(channels, 0.75, 1.25))
            bn.bias.copy_(0.1 * torch.randn(channels, generator=generator))
            bn.running_mean.copy_(0.5 * torch.randn(channels, generator=generator))
            bn.running_var.copy_(draw(channels, 0.5, 1.5))
            if bn.threshold is not None:
                sign = torch.where(torch.rand(channels, generator=generator) < 0.5, -1.0, 1.0)
                bn.threshold.copy_(sign * draw(channels, 0.05, 0.25))  # negative ones act through |λ|
        if model.wienernet is not None:
            model.wienernet.beta.fill_(0.5)
    return model.eval()


def convert(pth2h5, model, folder, name: str = "w") -> tuple:
    """Save ``model`` as a checkpoint, convert it with pth2h5.py; return (pth, h5) paths."""
    from Pytorch_V1.checkpoint import save_checkpoint

    pth, h5 = folder / f"{name}.pth", folder / f"{name}.h5"
    save_checkpoint(pth, {"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict()}, "format_version": 1})
    pth2h5.convert(pth, h5)
    return pth, h5


def spike_signals(length: int, n: int = 6, seed: int = 0):
    """Benchmark-like noisy spike signals, (n, 1, length) float32."""
    import numpy as np

    from deepdenoise1d.synthesis import SpikePrior, noisy_pairs

    noisy = noisy_pairs(np.random.default_rng(seed + length), n, 3.0, SpikePrior(length=length))[1]
    return noisy.astype(np.float32)[:, None, :]


def torch_forward(model, x, bn_mode: str):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x), bn_mode=bn_mode).numpy()


def relative_error(got, expected) -> float:
    import numpy as np

    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def pth2h5():
    """pth2h5.py loaded as a module."""
    return load_script(REPO_ROOT / "pth2h5.py", "pth2h5_script")


@pytest.fixture(scope="module")
def converted(pth2h5, tmp_path_factory):
    """{(prior, norm): (torch model, NumPy model loaded from the converted .h5)}."""
    from Numpy_V2.model import load_h5

    folder = tmp_path_factory.mktemp("converted")
    models = {}
    for seed, (prior, norm) in enumerate(CONFIGS):
        model = random_model(prior, norm, seed)
        _, h5 = convert(pth2h5, model, folder, f"{norm}_{prior}")
        models[prior, norm] = (model, load_h5(h5))
    return models


def output_names(folder: Path) -> list[str]:
    """Sorted names in ``folder`` without the old per-folder record's names (deepdenoise1d.safewrite.BOOKKEEPING;
    the record now lives in the state folder, so none are written any more)."""
    from deepdenoise1d.safewrite import BOOKKEEPING

    return sorted(p.name for p in Path(folder).iterdir() if p.name not in BOOKKEEPING)


# --- another user: a child process as uid nobody (only when the tests run as root) -----------------------------

import contextlib  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534  # uid and gid of the child


@contextlib.contextmanager
def shared_folder(owner: int = 0, mode: int = 0o1777):
    """A folder outside pytest's private temp tree (which other users cannot enter), owned by ``owner`` with
    ``mode`` (default: world-writable and sticky, like /tmp); removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="dd1d-shared-"))
    try:
        os.chown(folder, owner, owner)
        folder.chmod(mode)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_NOBODY_PYTHON: dict = {}


def _nobody_python(cwd: Path) -> tuple[str, str] | None:
    """An interpreter that nobody may run, and the PYTHONPATH that gives it this environment's packages:
    this one, else the system's python of the same version (this one may live in root's home)."""
    if "found" not in _NOBODY_PYTHON:
        import site
        import sysconfig

        paths = os.pathsep.join([str(REPO_ROOT), *site.getsitepackages(), sysconfig.get_paths()["purelib"]])
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        found = None
        for candidate in (sys.executable, shutil.which(version) or "", f"/usr/bin/{version}"):
            if not candidate:
                continue
            try:
                done = subprocess.run([candidate, "-c", "import numpy, deepdenoise1d.safewrite"], cwd=cwd,
                                      env={**os.environ, "PYTHONPATH": paths}, user=NOBODY, group=NOBODY,
                                      extra_groups=[], capture_output=True, timeout=60)
            except OSError:
                continue
            if done.returncode == 0:
                found = (candidate, paths)
                break
        _NOBODY_PYTHON["found"] = found
    return _NOBODY_PYTHON["found"]


def start_as_nobody(code: str, *args: str, cwd: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """``python -c code args...`` as uid/gid nobody, with the repository importable; text pipes."""
    python, paths = _nobody_python(cwd)
    full_env = {**os.environ, "PYTHONPATH": paths, **(env or {})}
    return subprocess.Popen([python, "-c", code, *map(str, args)], cwd=cwd, env=full_env, user=NOBODY,
                            group=NOBODY, extra_groups=[], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **popen)


def run_as_nobody(code: str, *args: str, cwd: Path, env: dict | None = None, timeout: float = 60):
    """Run ``code`` as nobody to the end -> (exit code, stdout, stderr)."""
    proc = start_as_nobody(code, *args, cwd=cwd, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def as_nobody():
    """Skips unless the tests run as root and a child as nobody can import this repository."""
    if not IS_ROOT:
        pytest.skip("needs root, to run a child as another user")
    with shared_folder() as folder:
        if _nobody_python(folder) is None:
            pytest.skip("no interpreter that uid nobody can run with this repository's packages")
    return run_as_nobody

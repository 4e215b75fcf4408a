"""The self-contained ONNX graph (pth2onnx.py's default) run by deepdenoise1d.onnx_runner.denoise_onnx
against the command line, ``Numpy_V2/Numpy_test.py --input REC --output OUT --method net`` with the .h5 of
the same checkpoint: the graph alone (one float64 input; the Wiener prior, the median and scale
normalisation and the trust region inside), windowed and blended by the runner, must give the CLI's output
file to 1e-5 of the record's peak, on a 10⁴-sample record (float64, and float32), one whose length is no
multiple of the window, and one at an offset of 1e3 and a scale of 1e-3; for the shipped ckpt_universal
(scale-equivariant and offset-free: there also to 1e-5 of the record's peak about its median, as the
command line keeps float64 records in float64 around it) and a random-weight model of the original ICNN_s
kind. Each graph is exported once per module (ckpt_universal takes tens of seconds).
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")  # pth2onnx.py exports from torch

from conftest import REPO_ROOT, load_script, random_model  # noqa: E402
from deepdenoise1d.classical import wiener_inverse_response  # noqa: E402
from deepdenoise1d.errors import InputError  # noqa: E402
from deepdenoise1d.onnx_runner import denoise_onnx, load_onnx  # noqa: E402

CLI_TOLERANCE = 1e-5  # of the record's peak
PRIOR_TOLERANCE = 2.0**-23  # of the prior's peak: one float32 step; h is computed in float64 and rounded once
RECORD_LENGTH = 10_000
ODD_LENGTH = 10_007  # prime: no multiple of 512, 100 or either hop
UNIVERSAL = REPO_ROOT / "ckpt" / "ckpt_universal.pth"


@pytest.fixture(scope="module")
def pth2onnx():
    return load_script(REPO_ROOT / "pth2onnx.py", "pth2onnx_script")


@pytest.fixture(scope="module")
def pth2h5():
    return load_script(REPO_ROOT / "pth2h5.py", "pth2h5_script")


def save_random(path, model) -> None:
    from Pytorch_V1.checkpoint import save_checkpoint

    save_checkpoint(path, {"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict()},
                           "format_version": 1})


@pytest.fixture(scope="module")
def graphs(pth2onnx, pth2h5, tmp_path_factory):
    """``graphs(name)`` -> (.onnx, .h5): exported once per module, as a user runs ``pth2onnx.py SRC``.

    ``universal``: the shipped ckpt_universal (its shipped .h5); ``original``: a random-weight ICNN_s of
    the original kind (prior, BN, neither equivariant nor offset-free; train_length 100) and its .h5 by pth2h5.
    """
    folder = tmp_path_factory.mktemp("self_contained")
    cache = {}

    def get(name):
        if name not in cache:
            source = folder / f"{name}.pth"
            if name == "universal":
                shutil.copyfile(UNIVERSAL, source)
                h5 = UNIVERSAL.with_suffix(".h5")
            else:
                save_random(source, random_model(True, "bn", seed=11))
                h5 = folder / f"{name}.h5"
                pth2h5.convert(source, h5)
            pth2onnx.main([str(source)])  # the default: SRC with .onnx, the self-contained graph
            cache[name] = source.with_suffix(".onnx"), h5
        return cache[name]

    return get


def record(kind: str) -> np.ndarray:
    """An ECG-like float64 record (float32 for ``float32``): beats every 800 samples on a slow wave, white
    noise of σ 3; ``odd``: 10 007 samples; ``offset``: 1e3 + 1e-3 · the record."""
    length = ODD_LENGTH if kind == "odd" else RECORD_LENGTH
    t = np.arange(length)
    clean = 20 * np.sin(2 * np.pi * t / 700) + 40 * np.exp(-0.5 * ((t % 800 - 400) / 6) ** 2)
    noisy = clean + 3 * np.random.default_rng(1).standard_normal(length)
    if kind == "float32":
        return noisy.astype(np.float32)
    return 1e3 + 1e-3 * noisy if kind == "offset" else noisy


def cli_output(weights, noisy: np.ndarray, folder) -> np.ndarray:
    """What ``Numpy_test.py --input rec.npy --output out.npy --method net --weights H5`` writes."""
    cli = load_script(REPO_ROOT / "Numpy_V2" / "Numpy_test.py", "numpy_test_cli")
    source, output = folder / "rec.npy", folder / "out.npy"
    np.save(source, noisy)
    cli.main(["--input", str(source), "--output", str(output), "--method", "net", "--weights", str(weights)])
    return np.load(output)


def relative_to_peak(got: np.ndarray, expected: np.ndarray, noisy: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(noisy).max())


def relative_to_swing(got: np.ndarray, expected: np.ndarray, noisy: np.ndarray) -> float:
    """The error against the record's peak about its median: what an offset cannot hide."""
    noisy = np.asarray(noisy, dtype=np.float64)
    return float(np.abs(got - expected).max() / np.abs(noisy - np.median(noisy)).max())


# ---------------------------------------------------------------------------
# the graph


def test_the_graph_has_one_input_and_one_output(graphs):
    path, _ = graphs("universal")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.input, *inferred.graph.output]}
    assert shapes == {"x": ["batch", 1, "length"], "denoised": ["batch", 1, "length"]}
    assert [v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]] == [onnx.TensorProto.DOUBLE] * 2
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["graph"] == "self_contained" and metadata["min_length"] == "32"
    model = load_onnx(path)
    assert (model.train_length, model.min_length, model.bn_mode) == (512, 32, "fixed")
    assert model.config["model"]["baseline"] == "median" and model.equivariant


def test_the_prior_inside_the_graph_is_numpys_float64_prior(pth2onnx, tmp_path):
    """pth2onnx.graph_prior alone, in ONNX Runtime, against wiener_inverse_response (float64): h's float32 rounding."""

    class Prior(torch.nn.Module):
        def forward(self, x):
            return pth2onnx.graph_prior(x)

    example = torch.from_numpy(record("1e4")[:512])[None, None]
    length = torch.export.Dim("length", min=16)
    with pth2onnx._quiet_exporter():
        program = torch.onnx.export(Prior(), (example,), dynamo=True, opset_version=pth2onnx.OPSET,
                                    input_names=["x"], output_names=["h"],
                                    dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1), 2: length}})
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for n in (16, 37, 100, 512, 1000):
        x = np.concatenate([record(kind)[None, :n] for kind in ("1e4", "offset")]
                           + [rng.standard_normal((1, n)) * 1e-20, np.zeros((1, n)), np.full((1, n), 2.5),
                              rng.standard_normal((1, n)) * 1e-300, rng.standard_normal((1, n)) * 1e300])
        expected = wiener_inverse_response(x)
        got = session.run(None, {"x": x[:, None]})[0][:, 0]
        assert got.dtype == np.float32 and got.shape == x.shape
        for row in range(len(x)):
            bound = PRIOR_TOLERANCE * max(float(np.abs(expected[row]).max()), 1e-30)
            assert np.abs(got[row] - expected[row]).max() <= bound, (n, row)
        assert not got[3].any()  # zeros: h = 0


# ---------------------------------------------------------------------------
# the runner against the command line


@pytest.mark.parametrize("kind", ["1e4", "odd", "offset", "float32"])
@pytest.mark.parametrize("name", ["universal", "original"])
def test_onnx_matches_the_command_line(graphs, tmp_path, name, kind):
    path, h5 = graphs(name)
    noisy = record(kind)
    expected = cli_output(h5, noisy, tmp_path)
    got = denoise_onnx(path, noisy)
    assert got.shape == noisy.shape and got.dtype == expected.dtype == noisy.dtype
    assert relative_to_peak(got, expected, noisy) <= CLI_TOLERANCE, (name, kind)
    if name == "universal":  # float64 around the network in both: the offset hides nothing
        assert relative_to_swing(got, expected, noisy) <= CLI_TOLERANCE, kind
    assert np.abs(got - noisy).max() > 1e-3 * np.abs(noisy - np.median(noisy)).max()  # it did denoise


@pytest.mark.parametrize("scale", [1e-300, 1e-20, 1e20, 1e300])
def test_an_equivariant_graph_takes_any_float64_magnitude(graphs, scale):
    """As NumpyICNN.denoise (the command line's call) keeps a float64 record in float64 around the network."""
    from Numpy_V2.model import load_h5

    path, h5 = graphs("universal")
    noisy = scale * record("1e4")[:1500]
    expected = load_h5(h5).denoise(noisy)
    got = denoise_onnx(path, noisy)
    assert np.isfinite(got).all() and relative_to_peak(got, expected, noisy) <= CLI_TOLERANCE


def test_unfixed_bn_matches_the_command_line(pth2onnx, pth2h5, tmp_path):
    """``pth2onnx.py --bn-mode unfixed`` against ``Numpy_test.py --bn-mode unfixed``: each window's own statistics."""
    source = tmp_path / "unfixed.pth"
    save_random(source, random_model(True, "bn", seed=12))
    pth2onnx.main([str(source), str(tmp_path / "unfixed.onnx"), "--bn-mode", "unfixed"])
    pth2h5.convert(source, tmp_path / "unfixed.h5")
    noisy = record("odd")[:3001]
    cli = load_script(REPO_ROOT / "Numpy_V2" / "Numpy_test.py", "numpy_test_cli")
    np.save(tmp_path / "rec.npy", noisy)
    cli.main(["--input", str(tmp_path / "rec.npy"), "--output", str(tmp_path / "out.npy"), "--method", "net",
              "--weights", str(tmp_path / "unfixed.h5"), "--bn-mode", "unfixed"])
    expected = np.load(tmp_path / "out.npy")
    model = load_onnx(tmp_path / "unfixed.onnx")
    assert model.bn_mode == "unfixed"
    assert relative_to_peak(denoise_onnx(model, noisy), expected, noisy) <= CLI_TOLERANCE


def test_batches_short_signals_and_dtypes_as_numpy_denoise(graphs):
    """(N, L) batches, signals shorter than the window (one pass), (L,) and float32 in: NumpyICNN.denoise,
    which the command line calls on float32 windows."""
    from Numpy_V2.model import load_h5

    path, h5 = graphs("original")
    model, net = load_onnx(path), load_h5(h5)
    rng = np.random.default_rng(5)
    for shape in [(3, 50), (2, 100), (4, 333), (777,)]:
        noisy = (5 * rng.standard_normal(shape)).astype(np.float32)
        got = denoise_onnx(model, noisy)
        expected = net.denoise(noisy)
        assert got.shape == noisy.shape and got.dtype == np.float32
        assert relative_to_peak(got, expected, noisy) <= CLI_TOLERANCE, shape


def test_a_scaled_offset_free_model_in_one_graph(pth2onnx, pth2h5, tmp_path):
    """input_scale ≠ 1 with the median and s(y) inside the graph, on a record of 3 windows: NumPy's denoise."""
    from conftest import make_model
    from Numpy_V2.model import load_h5

    model = make_model(4, equivariant=True, baseline="median")
    model.config.input_scale = 7.5
    source = tmp_path / "scaled.pth"
    save_random(source, model)
    pth2onnx.main([str(source)])
    pth2h5.convert(source, tmp_path / "scaled.h5")
    net = load_h5(tmp_path / "scaled.h5")
    noisy = record("1e4")[:250] * 4 + 300
    for signals in (noisy, noisy.astype(np.float32)):  # NumPy's float64 path, and its float32 one
        got = denoise_onnx(tmp_path / "scaled.onnx", signals)
        assert got.dtype == signals.dtype
        assert relative_to_peak(got, net.denoise(signals[None])[0], signals) <= CLI_TOLERANCE, signals.dtype


# ---------------------------------------------------------------------------
# refusals


def test_the_runner_refuses_the_two_input_graph(pth2onnx, tmp_path):
    source = tmp_path / "model.pth"
    save_random(source, random_model(True, "bn", seed=2))
    pth2onnx.main([str(source), str(tmp_path / "two.onnx"), "--prior-input"])
    with pytest.raises(InputError, match="--prior-input"):
        denoise_onnx(tmp_path / "two.onnx", record("1e4")[:200])


def test_short_and_bad_records_are_refused(graphs):
    path, _ = graphs("original")
    with pytest.raises(InputError, match="length >= 16"):
        denoise_onnx(path, np.ones(15))
    bad = record("1e4")[:300]
    bad[250] = np.nan
    with pytest.raises(InputError, match="250"):
        denoise_onnx(path, bad)
    with pytest.raises(InputError, match="shape"):
        denoise_onnx(path, np.ones((2, 2, 20)))


def test_deepdenoise1d_imports_without_onnxruntime():
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "import deepdenoise1d.onnx_runner as r\n"
            "from deepdenoise1d.errors import InputError\n"
            "try:\n    r.denoise_onnx('m.onnx', [0.0] * 64)\nexcept InputError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "needs onnxruntime" in done.stdout, done.stderr

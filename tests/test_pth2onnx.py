"""Tests of pth2onnx.py: ONNX Runtime against PyTorch on every shipped checkpoint in both BN
modes, the checker, the metadata, the graph's dynamic axes, and the output guards.

Parity here is of the network given the prior: the graph ``--prior-input`` exports (inputs x and h).
The default, self-contained graph (one input, the prior inside) is tested against the command line in
tests/test_onnx_self_contained.py.

Parity mirrors tests/test_parity.py: the reference is the PyTorch model in float64 (given the
same h), and ONNX Runtime's float32 answer must be as close to it as PyTorch's own float32
answer, within FLOAT32_SPREAD times PyTorch's error (see :func:`parity`) or FLOAT32_TOLERANCE of the reference's peak. Each
checkpoint is exported once per mode (module-scoped cache): an export takes seconds.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from conftest import FLOAT32_SPREAD, FLOAT32_TOLERANCE, REPO_ROOT, assert_one_line_error, listing, load_script, spike_signals  # noqa: E402
from icnn.spec import BN_MODES, min_length  # noqa: E402
from Pytorch_V1.checkpoint import load_checkpoint, load_model, model_config_of  # noqa: E402
from Pytorch_V1.model import wiener_prior  # noqa: E402
from deepdenoise1d.errors import InputError  # noqa: E402

SCRIPT = REPO_ROOT / "pth2onnx.py"
# an odd model has no two-input graph (its −x pass needs the prior of −x): tests/test_odd.py checks the refusal,
# tests/test_onnx_self_contained.py its one-input graph
SHIPPED = [p for p in sorted((REPO_ROOT / "ckpt").glob("ckpt_*.pth")) if not model_config_of(load_checkpoint(p), str(p)).odd]
LENGTHS = (16, 17, 100, 101, 1000)
SWEEP = range(16, 161)  # every length: each parity of each level, bins of every width
BEST = REPO_ROOT / "ckpt" / "ckpt_best.pth"


@pytest.fixture(scope="module")
def pth2onnx():
    return load_script(SCRIPT, "pth2onnx_script")


@pytest.fixture(scope="module")
def exports(pth2onnx, tmp_path_factory):
    """``exports(pth, mode)`` -> (path, session): exported once per checkpoint and mode, as a user runs it.

    The checkpoint's recorded mode comes from ``pth2onnx.py SRC --prior-input`` (default destination,
    default mode); the other from ``pth2onnx.py SRC DST --bn-mode MODE --prior-input``.
    """
    folder = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(pth, mode):
        if (pth.stem, mode) not in cache:
            source = folder / pth.name
            if not source.exists():
                shutil.copyfile(pth, source)
            if mode == load_model(pth)[0].config.bn_mode:
                pth2onnx.main([str(source), "--prior-input"])
                path = source.with_suffix(".onnx")
            else:
                path = folder / f"{pth.stem}-{mode}.onnx"
                pth2onnx.main([str(source), str(path), "--bn-mode", mode, "--prior-input"])
            cache[pth.stem, mode] = path, session_of(path)
        return cache[pth.stem, mode]

    return get


def session_of(path):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity(model, session, x: np.ndarray, mode: str) -> dict:
    """Max abs errors against PyTorch in float64 given the same h: ONNX Runtime's, torch float32's, and the bound.

    Torch's own float32 error is the larger of two torch evaluations, the batch and one signal at a
    time: in unfixed mode on short signals a per-signal normalisation amplifies rounding, and one
    evaluation alone can be several times luckier than another of the same arithmetic.
    """
    x_t = torch.from_numpy(x)
    h = wiener_prior(x_t) if model.wienernet is not None else None
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        reference = exact(x_t.double(), None if h is None else h.double(), mode).numpy()
        batched = model(x_t, h, mode).numpy()
        one_by_one = np.concatenate([model(x_t[i : i + 1], None if h is None else h[i : i + 1], mode).numpy()
                                     for i in range(len(x))])
    feed = {"x": x} if h is None else {"x": x, "h": h.numpy()}
    got = session.run(None, feed)[0]
    assert got.shape == x.shape and got.dtype == np.float32
    torch_error = max(float(np.abs(batched - reference).max()), float(np.abs(one_by_one - reference).max()))
    bound = max(FLOAT32_SPREAD * torch_error, FLOAT32_TOLERANCE * float(np.abs(reference).max()))
    return {"ort": float(np.abs(got - reference).max()), "torch32": torch_error, "bound": bound}


@pytest.mark.parametrize("mode", BN_MODES)
@pytest.mark.parametrize("pth", SHIPPED, ids=lambda p: p.stem)
def test_onnx_runtime_is_as_close_to_float64_as_torch(exports, pth, mode):
    path, session = exports(pth, mode)
    model, _ = load_model(pth)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["bn_mode"] == mode
    assert metadata["source_sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()
    shortest = min_length(model.config)  # 16 for ICNN_s, 32 for the depth-5 ckpt_universal
    for length in sorted({max(length, shortest) for length in LENGTHS} | {shortest, shortest + 1}):
        row = parity(model, session, spike_signals(length, n=16), mode)
        assert row["ort"] <= row["bound"], f"L={length} {mode}: {row}"


@pytest.mark.parametrize("mode", BN_MODES)
def test_every_length_runs_in_one_graph(exports, mode):
    """The length axis is truly dynamic: every L in SWEEP (odd and even at every level, every bin width)."""
    _, session = exports(BEST, mode)
    model, _ = load_model(BEST)
    for length in SWEEP:
        row = parity(model, session, spike_signals(length, n=3), mode)
        assert row["ort"] <= row["bound"], f"L={length} {mode}: {row}"


def test_checker_metadata_and_shapes(exports):
    path, session = exports(BEST, "fixed")
    model_proto = onnx.load(str(path))
    onnx.checker.check_model(model_proto, full_check=True)
    metadata = {p.key: p.value for p in model_proto.metadata_props}
    checkpoint = load_checkpoint(BEST)
    config = json.loads(metadata["config"])
    assert config["model"] == model_config_of(checkpoint).to_dict()  # as recorded, missing fields filled
    assert {k: v for k, v in config.items() if k != "model"} == json.loads(json.dumps(
        {k: v for k, v in checkpoint["config"].items() if k != "model"}))
    assert metadata["format"] == "icnn_s-onnx" and metadata["torch_version"] == str(torch.__version__)
    assert metadata["graph"] == "prior_input" and metadata["min_length"] == str(min_length(model_config_of(checkpoint)))
    assert [o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    inferred = onnx.shape_inference.infer_shapes(model_proto, strict_mode=True)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.input, *inferred.graph.output]}
    assert shapes == {"x": ["batch", 1, "length"], "h": ["batch", 1, "length"], "denoised": ["batch", 1, "length"]}
    assert [i.name for i in session.get_inputs()] == ["x", "h"]


def test_model_without_prior_has_one_input(exports):
    _, session = exports(REPO_ROOT / "ckpt" / "ckpt_noprior.pth", "fixed")
    assert [i.name for i in session.get_inputs()] == ["x"]


def test_the_default_graph_is_self_contained(pth2onnx, tmp_path, capsys):
    """No flag: one input x, one output, the prior inside (``graph`` self_contained); here a model without the
    prior branch, whose graph is the median and s(y) around the network (checked in ONNX Runtime on export)."""
    source = tmp_path / "noprior.pth"
    shutil.copyfile(REPO_ROOT / "ckpt" / "ckpt_noprior.pth", source)
    pth2onnx.main([str(source)])
    assert "prior inside" in capsys.readouterr().out
    proto = onnx.load(str(source.with_suffix(".onnx")))
    assert [v.name for v in proto.graph.input] == ["x"] and [v.name for v in proto.graph.output] == ["denoised"]
    assert {p.key: p.value for p in proto.metadata_props}["graph"] == "self_contained"


# ---------------------------------------------------------------------------
# guards and refusals (each refused before any export)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "model.pth"
    shutil.copyfile(BEST, path)
    return path


def test_default_destination_only_when_absent(pth2onnx, run_main, source, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"someone's file")
    before = listing(tmp_path)
    code, _, err = run_main(pth2onnx, [source], prog="pth2onnx.py")
    assert_one_line_error(code, err, "exists", "name it")
    assert listing(tmp_path) == before


def test_never_over_a_checkpoint(pth2onnx, run_main, source, tmp_path):
    victim = tmp_path / "victim.onnx"
    shutil.copyfile(BEST, victim)
    before = listing(tmp_path)
    for argv in ([source, victim], [source, victim, "--overwrite"]):
        code, _, err = run_main(pth2onnx, argv, prog="pth2onnx.py")
        assert_one_line_error(code, err, "checkpoint")
    assert listing(tmp_path) == before


def test_never_over_the_source(pth2onnx, run_main, tmp_path):
    source = tmp_path / "model.onnx"  # a checkpoint under an .onnx name
    shutil.copyfile(BEST, source)
    code, _, err = run_main(pth2onnx, [source, source], prog="pth2onnx.py")
    assert_one_line_error(code, err)
    assert source.read_bytes() == BEST.read_bytes()


def test_never_over_a_file_it_did_not_write(pth2onnx, run_main, source, tmp_path):
    other = tmp_path / "other.onnx"
    other.write_text("notes\n")
    code, _, err = run_main(pth2onnx, [source, other], prog="pth2onnx.py")
    assert_one_line_error(code, err, "--overwrite")
    assert other.read_text() == "notes\n"


@pytest.mark.parametrize("argv_tail,fragment", [(["out.h5"], ".onnx"), (["out.onnx", "--bn-mode", "both"], "--bn-mode")])
def test_bad_destination_or_mode(pth2onnx, run_main, source, tmp_path, argv_tail, fragment):
    code, _, err = run_main(pth2onnx, [source, *[tmp_path / a if a.startswith("out") else a for a in argv_tail]],
                            prog="pth2onnx.py")
    assert code == 2 and fragment in err and "Traceback" not in err
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("content,fragment", [(None, "no such"), (b"not a checkpoint\n", "model.pth")])
def test_bad_source(pth2onnx, run_main, tmp_path, content, fragment):
    source = tmp_path / "model.pth"
    if content is not None:
        source.write_bytes(content)
    code, _, err = run_main(pth2onnx, [source, tmp_path / "out.onnx"], prog="pth2onnx.py")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "out.onnx").exists()


def tiny_graph(length):
    """x -> Relu -> denoised, with the length axis named or fixed."""
    from onnx import TensorProto, helper

    shape = ["batch", 1, length]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["denoised"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("denoised", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_fixed_axis_is_refused(pth2onnx):
    pth2onnx.check_dynamic(tiny_graph("length"))
    with pytest.raises(InputError, match="fixed an axis"):
        pth2onnx.check_dynamic(tiny_graph(100))


def test_a_graph_failing_the_checker_is_refused(pth2onnx):
    model_proto = tiny_graph("length")
    pth2onnx.check_graph(model_proto)
    model_proto.graph.node[0].input[0] = "nowhere"
    with pytest.raises(InputError, match="ONNX checker") as err:
        pth2onnx.check_graph(model_proto)
    assert "\n" not in str(err.value)


# --- input_scale: applied inside the graph ---


def test_a_scaled_model_scales_inside_the_graph(pth2onnx, tmp_path):
    import torch

    from conftest import random_model
    from Pytorch_V1.checkpoint import save_checkpoint

    model = random_model(True, "bn", seed=5)
    model.config.input_scale = 7.5
    source, destination = tmp_path / "scaled.pth", tmp_path / "scaled.onnx"
    save_checkpoint(source, {"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict()},
                             "format_version": 1})
    pth2onnx.main([str(source), str(destination), "--prior-input"])
    y = spike_signals(100)[:, :, :] * np.float32(7.5)
    x = torch.from_numpy(y)
    h = wiener_prior(x)  # from y as given: h is scale-invariant
    with torch.no_grad():
        expected = (7.5 * model(x / 7.5, wiener_prior(x / 7.5), "fixed")).numpy()
        unscaled = model(x, h, "fixed").numpy()
    got = session_of(destination).run(None, {"x": y, "h": h.numpy()})[0]
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-4 * scale
    assert np.abs(unscaled - expected).max() > 1e-2 * scale  # the graph without the scale would differ


# --- equivariant models: the scale normalisation inside the graph ---


@pytest.fixture(scope="module")
def equivariant_export(pth2onnx, tmp_path_factory):
    """(torch model, ONNX Runtime session) of a fresh seeded equivariant checkpoint, exported once."""
    from conftest import make_model
    from Pytorch_V1.checkpoint import save_checkpoint

    model = make_model(3, equivariant=True)
    folder = tmp_path_factory.mktemp("equivariant")
    source, destination = folder / "equivariant.pth", folder / "equivariant.onnx"
    save_checkpoint(source, {"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict()},
                             "format_version": 1})
    pth2onnx.main([str(source), str(destination), "--prior-input"])
    assert json.loads({p.key: p.value for p in onnx.load(str(destination)).metadata_props}["config"])["model"]["equivariant"]
    return model, session_of(destination)


@pytest.mark.parametrize("length", [100, 37])
def test_an_equivariant_graph_scales_with_its_input(equivariant_export, length):
    model, session = equivariant_export
    x = spike_signals(length)
    h = wiener_prior(torch.from_numpy(x)).numpy()  # from x as given: h is scale-invariant, one h serves every a·x
    out = session.run(None, {"x": x, "h": h})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x), torch.from_numpy(h), "fixed").numpy()
    assert np.abs(out - expected).max() <= 1e-4 * np.abs(expected).max()  # the graph is the model
    for a in (1e-3, 1e3):
        scaled = session.run(None, {"x": x * np.float32(a), "h": h})[0]
        assert np.abs(scaled - a * out).max() <= 1e-4 * np.abs(a * out).max(), a
    zeros = session.run(None, {"x": np.zeros_like(x), "h": h})[0]
    assert not zeros.any()  # s = 0: zeros give zeros

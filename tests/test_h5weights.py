"""icnn/h5weights.py: the HDF5 weights reader and writer (never loads a filter plugin, bounds every attribute), fuzzed.

The property, for every input: one InputError, or a correct result; never another exception,
never a read outside the file, never a file written when the input is refused.
Each hypothesis test is bounded (``max_examples``) so the whole file stays well under a minute.
The .pth fuzz tests (Pytorch_V1/checkpoint.py) and pth2h5's conversion fuzz test came with the fuzz suite.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from conftest import REPO_ROOT, load_script  # noqa: E402
from icnn.h5weights import (FORMAT_VERSION, MAX_ATTRIBUTE_BYTES, WEIGHTS_FORMAT, read_weights,  # noqa: E402
                            write_weights)
from icnn.shipped import default_weights  # noqa: E402
from icnn.spec import ModelConfig, expected_shapes  # noqa: E402
from Numpy_V2.model import load_h5  # noqa: E402
from Pytorch_V1.checkpoint import load_model  # noqa: E402
from Pytorch_V1.model import ICNN_s  # noqa: E402
from deepdenoise1d.errors import InputError  # noqa: E402

REPO = REPO_ROOT


def _copy_shipped(tmp_path: Path) -> Path:
    path = tmp_path / "w.h5"
    shutil.copyfile(default_weights(".h5"), path)
    return path


PLUGIN_C = r"""
#include <stdio.h>
#include <stdlib.h>
typedef struct { int version; int id; unsigned encoder_present; unsigned decoder_present;
  const char *name; void *can_apply; void *set_local;
  size_t (*filter)(unsigned, size_t, const unsigned *, size_t, size_t *, void **); } filter_class;
static size_t identity(unsigned f, size_t n, const unsigned *c, size_t nbytes, size_t *s, void **b) { return nbytes; }
static const filter_class CLASS = {1, 32001, 1, 1, "identity", 0, 0, identity};
__attribute__((constructor)) static void mark(void) {
  const char *p = getenv("PLUGIN_MARK"); if (!p) return;
  FILE *f = fopen(p, "w"); if (f) { fputs("ran", f); fclose(f); } }
int H5PLget_plugin_type(void) { return 0; }
const void *H5PLget_plugin_info(void) { return &CLASS; }
"""


# Rewrites the first dataset of a weights file through filter 32001 (mandatory), which the plugin provides.
REWRITE = """
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    name = next(iter(f.keys()))
    data = f[name][()]
    del f[name]
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(data.shape)
    dcpl.set_filter(32001, h5py.h5z.FLAG_MANDATORY, ())
    space = h5py.h5s.create_simple(data.shape)
    h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_FLOAT, space, dcpl=dcpl).write(h5py.h5s.ALL, h5py.h5s.ALL, data)
print(name)
"""


def _plugin_env(plugins: Path, marker: Path) -> dict:
    return {"HDF5_PLUGIN_PATH": str(plugins), "PLUGIN_MARK": str(marker), "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO)}


def _filtered_weights(tmp_path: Path) -> tuple[Path, Path, str]:
    """A copy of the shipped weights whose first dataset needs a filter plugin with a marking constructor."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "identity.c").write_text(PLUGIN_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(plugins / "libidentity.so"), str(plugins / "identity.c")],
                   check=True)
    path = _copy_shipped(tmp_path)
    env = _plugin_env(plugins, tmp_path / "unused")
    name = subprocess.run([sys.executable, "-c", REWRITE, str(path)], env=env, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()
    return path, plugins, name


def test_shipped_weights_still_read(tmp_path):
    arrays, config, _ = read_weights(_copy_shipped(tmp_path))
    assert arrays and config


def test_variable_length_attribute_bounded(tmp_path):
    path = _copy_shipped(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["note"] = "x" * (MAX_ATTRIBUTE_BYTES + 1)  # a variable-length string: stored out of line
    with pytest.raises(InputError, match="'note' is larger than"):
        read_weights(path)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build a filter plugin")
def test_filter_plugin_never_loaded(tmp_path):
    """A filter plugin in HDF5_PLUGIN_PATH whose constructor leaves a mark: the reader refuses the
    dataset in one line and the library is never loaded, while plain h5py does load it."""
    path, plugins, name = _filtered_weights(tmp_path)
    marker = tmp_path / "plugin-ran"
    env = _plugin_env(plugins, marker)
    code = ("import sys\nfrom icnn.h5weights import read_weights\nfrom deepdenoise1d.errors import InputError\n"
            "try:\n    read_weights(sys.argv[1])\nexcept InputError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert f"{name!r} needs HDF5 filter 32001, refused" in out.stdout, out.stdout + out.stderr
    assert not marker.exists()
    probe = "import sys, h5py\nf = h5py.File(sys.argv[1], 'r')\nprint(f[sys.argv[2]][()].size)\n"
    control = subprocess.run([sys.executable, "-c", probe, str(path), name], env=env, capture_output=True, text=True,
                             timeout=120)
    assert control.returncode == 0 and marker.exists(), control.stderr  # the test can fail: HDF5 would load it


def test_filter_refused_in_process(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build a filter plugin")
    path, _, name = _filtered_weights(tmp_path)
    with pytest.raises(InputError, match=f"{name!r} needs HDF5 filter 32001, refused"):
        read_weights(path)
    assert h5py.h5pl.size() == 0  # the search path is empty once a weights file was opened


# ---------------------------------------------------------------------------
# Fuzzing: shared fixtures


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SMALL = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
X = np.random.default_rng(0).normal(size=(2, 100)).astype(np.float32)


def outcome(fn):
    """fn()'s result, or the InputError it raised; any other exception fails the test."""
    try:
        return fn()
    except InputError as err:
        message = str(err)
        assert message and "\n" not in message, repr(message)
        return err


class Good(tuple):
    """(arrays, model, h5 bytes) with a short repr, for hypothesis's failure reports."""

    def __repr__(self):
        return "<good model>"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid model's arrays and config, and the bytes of its .h5."""
    torch.manual_seed(0)
    model = ICNN_s().eval()
    arrays = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    folder = tmp_path_factory.mktemp("good")
    write_weights(folder / "good.h5", arrays, {"model": model.config.to_dict()}, {"source_sha256": "0" * 64})
    return Good((arrays, model, (folder / "good.h5").read_bytes()))


def h5_file(folder: Path, arrays: dict, attrs: dict | None = None, name: str = "w.h5", libver=None) -> Path:
    """Write arrays (flat) and attributes with h5py directly, as a hostile writer could."""
    path = folder / name
    with h5py.File(path, "w", libver=libver) as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        for key, value in arrays.items():
            f.create_dataset(key, data=np.asarray(value).reshape(-1))
    return path


def good_attrs(config: dict | None = None) -> dict:
    return {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION,
            "config": json.dumps({"model": config or ModelConfig().to_dict()})}


# ---------------------------------------------------------------------------
# .h5: random bytes, truncations, random attributes, random shapes


@FUZZ
@given(data=st.binary(min_size=1, max_size=4096), keep_signature=st.booleans())
def test_random_bytes_as_h5(data, keep_signature):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.h5"
        path.write_bytes((b"\x89HDF\r\n\x1a\n" if keep_signature else b"") + data)
        assert isinstance(outcome(lambda: load_h5(path)), InputError)


@FUZZ
@given(cut=st.floats(0.0, 1.0), flip=st.integers(0, 10**9))
def test_truncated_or_corrupted_h5(good, cut, flip):
    _, model, payload = good
    data = bytearray(payload[: max(1, int(len(payload) * cut))])
    if flip % 2:
        data[flip % len(data)] ^= 0xFF
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.h5"
        path.write_bytes(bytes(data))
        result = outcome(lambda: load_h5(path))
        if not isinstance(result, InputError):  # a flip in slack space: it must then be the right model
            assert result.denoise(X).shape == X.shape


text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=50)  # what h5py can write: no NUL, no lone surrogate


attribute_values = st.one_of(
    text, st.binary(max_size=50).map(lambda b: np.bytes_(b.rstrip(b"\x00") or b"x")), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True),
    st.booleans(), st.lists(st.integers(0, 9), min_size=0, max_size=5).map(np.array),
    st.lists(text, min_size=1, max_size=3).map(lambda v: np.array(v, dtype=h5py.string_dtype())),
)


@FUZZ
@given(attrs=st.dictionaries(st.sampled_from(["format", "format_version", "config", "source_sha256", "other"]),
                             attribute_values, max_size=4),
       keep=st.sets(st.sampled_from(["format", "format_version", "config"])))
def test_random_attributes(good, attrs, keep):
    arrays, _, _ = good
    base = {k: v for k, v in good_attrs().items() if k in keep}
    with tempfile.TemporaryDirectory() as tmp:
        path = h5_file(Path(tmp), arrays, {**base, **attrs})
        result = outcome(lambda: load_h5(path))
        if not isinstance(result, InputError):
            assert result.denoise(X).shape == X.shape


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@FUZZ
@given(model=st.dictionaries(st.sampled_from(["prior", "norm", "bn_mode", "sigma_range", "x"]), json_values, max_size=5),
       train=json_values)
def test_random_config_json(good, model, train):
    arrays, _, _ = good
    attrs = {**good_attrs(), "config": json.dumps({"model": model, "train": train})}
    with tempfile.TemporaryDirectory() as tmp:
        path = h5_file(Path(tmp), arrays, attrs)
        result = outcome(lambda: load_h5(path))
        if not isinstance(result, InputError):
            assert result.config.prior == model.get("prior", True)
            assert result.denoise(X).shape == X.shape


@FUZZ
@given(key=st.sampled_from(sorted(expected_shapes(ModelConfig())) + ["extra.weight"]),
       shape=st.lists(st.integers(0, 40), min_size=0, max_size=3),
       dtype=st.sampled_from(["f4", "f8", "f2", "i4", "u1", "c8", "S4", "?"]))
def test_random_shapes_and_dtypes(good, key, shape, dtype):
    arrays, _, _ = good
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.h5"
        with h5py.File(path, "w") as f:
            for name, value in good_attrs().items():
                f.attrs[name] = value
            for name, value in arrays.items():
                if name != key:
                    f.create_dataset(name, data=value.reshape(-1))
            f.create_dataset(key, data=np.zeros(shape, dtype=dtype))
        result = outcome(lambda: load_h5(path))
        if not isinstance(result, InputError):  # only a float dataset of the right size can pass
            assert np.dtype(dtype).kind == "f" and int(np.prod(shape)) == int(np.prod(expected_shapes(ModelConfig())[key]))


# ---------------------------------------------------------------------------
# .h5: reading outside the file, and the malicious cases one by one


def test_external_raw_storage_is_refused(good, tmp_path):
    arrays, _, _ = good
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(2, dtype=np.float32).tobytes())
    path = h5_file(tmp_path, {k: v for k, v in arrays.items() if k != "outc.conv.weight"}, good_attrs())
    with h5py.File(path, "a") as f:
        f.create_dataset("outc.conv.weight", shape=(2,), dtype="f4", external=[(str(secret), 0, 8)])
    with pytest.raises(InputError, match="external file"):
        load_h5(path)
    # /etc/passwd: the same refusal, before any byte of it is read.
    with h5py.File(path, "a") as f:
        del f["outc.conv.weight"]
        f.create_dataset("outc.conv.weight", shape=(2,), dtype="f4", external=[("/etc/passwd", 0, 8)])
    with pytest.raises(InputError, match="external file"):
        load_h5(path)


@pytest.mark.parametrize("kind", ["external_link", "soft_link", "group", "virtual"])
def test_links_groups_and_virtual_datasets_are_refused(good, tmp_path, kind):
    arrays, _, _ = good
    key = "outc.conv.bias"
    other = h5_file(tmp_path, {key: arrays[key]}, name="other.h5")
    path = h5_file(tmp_path, {k: v for k, v in arrays.items() if k != key}, good_attrs())
    with h5py.File(path, "a") as f:
        if kind == "external_link":
            f[key] = h5py.ExternalLink(str(other), key)
        elif kind == "soft_link":
            f["inner"] = arrays[key]
            f[key] = h5py.SoftLink("/inner")
        elif kind == "group":
            f.create_group(key)
        else:
            layout = h5py.VirtualLayout(shape=(1,), dtype="f4")
            layout[:] = h5py.VirtualSource(str(other), key, shape=(1,))
            f.create_virtual_dataset(key, layout)
    fragment = {"external_link": "ExternalLink", "soft_link": "SoftLink", "group": "Group", "virtual": "virtual"}[kind]
    with pytest.raises(InputError, match=fragment):
        load_h5(path)


@pytest.mark.parametrize("case,fragment", [
    ("huge", "more than"),
    ("empty", "empty"),
    ("null", "empty"),
    ("format_array", "format"),
    ("config_brackets", "config"),
    ("config_deep", "config"),
    ("config_list", "JSON object"),
    ("config_not_text", "config"),
    ("version_text", "format_version"),
    ("version_future", "format_version"),
    ("not_utf8", "UTF-8"),
    ("big_attribute", "attribute"),
    ("nan", "non-finite"),
    ("beyond_float32", "float32"),
    ("int_weights", "floating point"),
])
def test_hostile_h5_cases(good, tmp_path, case, fragment):
    arrays, _, _ = good
    attrs = good_attrs()
    data = dict(arrays)
    key = "outc.conv.bias"
    if case == "format_array":
        attrs["format"] = np.array([WEIGHTS_FORMAT] * 3, dtype=h5py.string_dtype())
    elif case == "config_brackets":
        attrs["config"] = "[" * 100000
    elif case == "config_deep":
        attrs["config"] = "[" * 60000 + "]" * 60000
    elif case == "config_list":
        attrs["config"] = "[1, 2]"
    elif case == "config_not_text":
        attrs["config"] = 7
    elif case == "version_text":
        attrs["format_version"] = "1"
    elif case == "version_future":
        attrs["format_version"] = FORMAT_VERSION + 1
    elif case == "not_utf8":
        attrs["format"] = np.bytes_(b"\xff\xfe")
    elif case == "big_attribute":
        attrs["torch_version"] = np.zeros(100_000)
    elif case == "nan":
        data[key] = np.array([np.nan], np.float32)
    elif case == "beyond_float32":
        data[key] = np.array([1e39])
    elif case == "int_weights":
        data[key] = np.array([1], np.int32)
    # libver "latest" allows dense (large) attributes
    path = h5_file(tmp_path, {k: v for k, v in data.items() if case not in ("huge", "empty", "null") or k != key}, attrs,
                   libver="latest" if case == "big_attribute" else None)
    if case in ("huge", "empty", "null"):
        with h5py.File(path, "a") as f:
            if case == "huge":  # 2e10 float32 values declared: 80 GB, never allocated
                f.create_dataset(key, shape=(20_000_000_000,), dtype="f4", chunks=(1024,))
            elif case == "empty":
                f.create_dataset(key, shape=(0,), dtype="f4")
            else:
                f.create_dataset(key, data=h5py.Empty("f4"))
    with pytest.raises(InputError, match=fragment):
        load_h5(path)


def test_seed_file_without_attributes_loads(good, tmp_path):
    arrays, model, _ = good
    net = load_h5(h5_file(tmp_path, arrays))
    assert net.metadata == {} and net.config == ModelConfig()
    with torch.no_grad():
        expected = model(torch.from_numpy(X)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(net.denoise(X), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    arrays_read, config, metadata = read_weights(tmp_path / "w.h5")
    assert config == ModelConfig() and metadata == {}
    assert {k: v.shape for k, v in arrays_read.items()} == expected_shapes(config)


# ---------------------------------------------------------------------------
# .pth (Pytorch_V1/checkpoint.py's reader, fuzzed with the same property)


@FUZZ
@given(data=st.binary(min_size=1, max_size=2048), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"1.5\n"]))
def test_random_bytes_as_pth(data, prefix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.pth"
        path.write_bytes(prefix + data)
        assert isinstance(outcome(lambda: load_model(path)), InputError)


@FUZZ
@given(config=st.one_of(json_values, st.dictionaries(st.sampled_from(["model", "train"]), json_values, max_size=2),
                        st.fixed_dictionaries({"model": st.dictionaries(
                            st.sampled_from(["prior", "norm", "bn_mode", "sigma_range"]), json_values, max_size=4)})))
def test_random_pth_config(good, config):
    _, model, _ = good
    buffer = io.BytesIO()
    torch.save({"net_state_dict": model.state_dict(), "config": config}, buffer)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.pth"
        path.write_bytes(buffer.getvalue())
        result = outcome(lambda: load_model(path))
        if not isinstance(result, InputError):
            loaded, _ = result
            assert isinstance(loaded.config, ModelConfig)


@FUZZ_SMALL
@given(key=st.sampled_from(sorted(expected_shapes(ModelConfig()))),
       value=st.floats(allow_nan=True, allow_infinity=True), index=st.integers(0, 10**6),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
def test_nan_inf_and_dtypes_in_pth(good, key, value, index, dtype):
    _, model, _ = good
    state = {k: v.clone() for k, v in model.state_dict().items()}
    tensor = state[key].to(dtype)
    tensor.view(-1)[index % tensor.numel()] = torch.tensor(value, dtype=torch.float64).to(dtype)  # overflow -> inf
    state[key] = tensor
    buffer = io.BytesIO()
    torch.save({"net_state_dict": state}, buffer)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "n.pth"
        path.write_bytes(buffer.getvalue())
        result = outcome(lambda: load_model(path))
        finite = bool(torch.isfinite(tensor).all())
        valid = finite and not (key.endswith("running_var") and bool((tensor < 0).any()))  # a variance is >= 0
        assert isinstance(result, InputError) != valid, (value, dtype)


@pytest.mark.parametrize("config", [["model", "prior"], "prior=True", 3, {"model": "bn"}])
def test_pth_config_of_the_wrong_type(good, tmp_path, config):
    _, model, _ = good
    torch.save({"net_state_dict": model.state_dict(), "config": config}, tmp_path / "c.pth")
    with pytest.raises(InputError, match="config"):
        load_model(tmp_path / "c.pth")


def test_text_file_as_checkpoint(tmp_path):
    (tmp_path / "signal.pth").write_text("\n".join(["101"] * 20))
    with pytest.raises(InputError, match="not a PyTorch checkpoint") as err:
        load_model(tmp_path / "signal.pth")
    assert "KeyError" not in str(err.value)


# ---------------------------------------------------------------------------
# pth2h5: a state dict that does not build the model is refused, nothing written


@pytest.fixture(scope="module")
def pth2h5():
    return load_script(REPO_ROOT / "pth2h5.py", "pth2h5_fuzz")


@FUZZ_SMALL
@given(drop=st.sets(st.integers(0, 200), max_size=2), add=st.booleans(), reshape=st.integers(-1, 200),
       prior=st.booleans(), norm=st.sampled_from(["bn", "sparse_bn"]))
def test_pth2h5_wrong_architecture(good, pth2h5, drop, add, reshape, prior, norm):
    _, model, _ = good
    keys = list(model.state_dict())
    state = {k: v for i, (k, v) in enumerate(model.state_dict().items()) if i not in drop}
    if add:
        state["inc.double_conv.1.threshold"] = torch.zeros(2)
    if 0 <= reshape < len(keys) and keys[reshape] in state and state[keys[reshape]].numel() > 1:
        state[keys[reshape]] = state[keys[reshape]].reshape(-1)[:-1]
    config = {"model": {"prior": prior, "norm": norm, "bn_mode": "fixed"}}
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "s.pth", Path(tmp) / "s.h5"
        torch.save({"net_state_dict": state, "config": config}, source)
        result = outcome(lambda: pth2h5.convert(source, target))
        builds = set(state) == set(ICNN_s(ModelConfig(prior=prior, norm=norm)).state_dict()) or (
            {k for k in state if "num_batches" not in k} == set(expected_shapes(ModelConfig(prior=prior, norm=norm))))
        shapes_ok = all(tuple(v.shape) == expected_shapes(ModelConfig(prior=prior, norm=norm)).get(k, tuple(v.shape))
                        for k, v in state.items())
        if isinstance(result, InputError):
            assert not target.exists() and not list(Path(tmp).glob(".*.tmp"))
            assert not (builds and shapes_ok)
        else:
            assert builds and shapes_ok
            assert load_h5(target).denoise(X).shape == X.shape


def test_a_folder_as_weights_is_called_a_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder, expected a weights file"):
        read_weights(tmp_path)


def test_negative_running_var_refused_in_h5_and_pth_and_by_pth2h5(tmp_path):
    import torch

    arrays, config, _ = read_weights(_copy_shipped(tmp_path))
    key = next(k for k in arrays if k.endswith("running_var"))
    arrays[key] = -np.abs(arrays[key]) - 1
    write_weights(tmp_path / "bad.h5", arrays, {"model": config.to_dict()}, {})
    with pytest.raises(InputError, match=f"bad.h5: tensor '{key}' holds a negative variance.*weights file is corrupt"):
        read_weights(tmp_path / "bad.h5")
    ckpt = torch.load(REPO_ROOT / "ckpt" / "ckpt_best.pth", weights_only=True, map_location="cpu")
    ckpt["net_state_dict"][key] = -ckpt["net_state_dict"][key].abs() - 1
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(InputError, match=f"bad.pth: tensor '{key}' holds a negative variance"):
        load_model(tmp_path / "bad.pth")
    pth2h5 = load_script(REPO_ROOT / "pth2h5.py", "pth2h5_negative_var")
    with pytest.raises(InputError, match="negative variance"):
        pth2h5.main([str(tmp_path / "bad.pth"), str(tmp_path / "out.h5")])
    assert not (tmp_path / "out.h5").exists()

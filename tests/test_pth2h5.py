"""Tests of pth2h5.py: conversion, defaults, the CSV summary, and refusing bad or malicious sources."""
from __future__ import annotations

import csv
import pickle

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import (  # noqa: E402
    REPO_ROOT,
    assert_one_line_error,
    listing,
    load_script,
    run_script,
    write_cuda_checkpoint,
)
from Pytorch_V1.checkpoint import save_checkpoint  # noqa: E402
from Pytorch_V1.model import ICNN_s, ModelConfig  # noqa: E402
from deepdenoise1d.errors import InputError  # noqa: E402
from icnn.h5weights import read_weights  # noqa: E402

SCRIPT = REPO_ROOT / "pth2h5.py"


@pytest.fixture(scope="module")
def pth2h5():
    return load_script(SCRIPT, "pth2h5_script")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small valid checkpoint of ours (config recorded), and its model."""
    torch.manual_seed(0)
    model = ICNN_s(ModelConfig(prior=True, norm="bn", bn_mode="unfixed"))
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    save_checkpoint(path, {"net_state_dict": model.state_dict(), "config": {"model": model.config.to_dict(), "lr": 1e-4},
                           "format_version": 1, "step": 7})
    return path, model


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): proof that the file ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def no_temp_files(folder) -> bool:
    return not list(folder.glob(".*.tmp"))


def test_cli_converts_with_csv_from_another_folder(checkpoint, tmp_path):
    source, model = checkpoint
    result = run_script(SCRIPT, source, tmp_path / "out" / "w.h5", "--csv", tmp_path / "w.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    state = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    with h5py.File(tmp_path / "out" / "w.h5", "r") as f:
        assert set(f) == set(state) and len(state) == 159
        assert '"bn_mode": "unfixed"' in f.attrs["config"] and '"lr": 0.0001' in f.attrs["config"]
    with open(tmp_path / "w.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "shape", "mean", "std"]
    assert [row[0] for row in rows[1:]] == list(state)
    by_name = {row[0]: row for row in rows[1:]}
    weight = state["up1.conv.double_conv.0.weight"]
    name, shape, mean, std = by_name["up1.conv.double_conv.0.weight"]
    assert shape == "16x32x3"
    assert float(mean) == pytest.approx(weight.astype(np.float64).mean(), rel=1e-6)
    assert float(std) == pytest.approx(weight.astype(np.float64).std(), rel=1e-6)
    assert by_name["wienernet.beta"][1] == "1"


def test_destination_defaults_to_source_with_h5(pth2h5, checkpoint, tmp_path, run_main):
    source = tmp_path / "copy.pth"
    source.write_bytes(checkpoint[0].read_bytes())
    code, out, err = run_main(pth2h5, [source])
    assert code == 0, err
    assert (tmp_path / "copy.h5").is_file()
    assert no_temp_files(tmp_path)


def test_default_source_is_the_repositorys_checkpoint(pth2h5):
    assert pth2h5.get_args([]).source == REPO_ROOT / "ckpt" / "ckpt_best.pth"
    assert pth2h5.get_args([]).destination is None


def test_truncated_source_is_refused(checkpoint, tmp_path):
    data = checkpoint[0].read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    result = run_script(SCRIPT, tmp_path / "cut.pth", tmp_path / "cut.h5", "--csv", tmp_path / "cut.csv", cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "cut.pth")
    assert not (tmp_path / "cut.h5").exists() and not (tmp_path / "cut.csv").exists()
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("layout", ["torch_save", "raw_pickle"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, layout):
    marker = tmp_path / "marker"
    payload = {"net_state_dict": {"inc.double_conv.0.weight": CreatesMarker(marker)}, "epoch": 1}
    source = tmp_path / "evil.pth"
    if layout == "torch_save":
        torch.save(payload, source)
    else:
        source.write_bytes(pickle.dumps(payload))
    result = run_script(SCRIPT, source, tmp_path / "evil.h5", cwd=tmp_path)
    assert not marker.exists(), "the checkpoint's code ran"
    assert_one_line_error(result.returncode, result.stderr, "evil.pth")
    assert not (tmp_path / "evil.h5").exists()
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("content,fragment", [
    ({"epoch": 3}, "net_state_dict"),
    ({"net_state_dict": {"a.weight": torch.full((2,), float("nan"))}}, "non-finite"),
    ({"net_state_dict": {}}, "missing tensor 'inc.double_conv.0.weight'"),
    ({"net_state_dict": {"a.weight": torch.ones(2)}, "config": ["model"]}, "'config' must be a dict"),
    ({"net_state_dict": {"a.weight": torch.ones(2)}, "config": "prior"}, "'config' must be a dict"),
])
def test_not_a_usable_checkpoint(pth2h5, tmp_path, run_main, content, fragment):
    torch.save(content, tmp_path / "odd.pth")
    code, _, err = run_main(pth2h5, [tmp_path / "odd.pth", tmp_path / "odd.h5"])
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "odd.h5").exists()


def test_missing_source_and_overwriting_source(pth2h5, checkpoint, tmp_path, run_main):
    code, _, err = run_main(pth2h5, [tmp_path / "absent.pth"])
    assert_one_line_error(code, err, "absent.pth")
    source = tmp_path / "same.pth"
    source.write_bytes(checkpoint[0].read_bytes())
    code, _, err = run_main(pth2h5, [source, source])
    assert_one_line_error(code, err, "refusing to overwrite")
    assert source.read_bytes() == checkpoint[0].read_bytes()


@pytest.mark.parametrize("change", ["drop_prior", "add_threshold", "reshape", "config_says_no_prior"])
def test_wrong_architecture_is_refused_with_numpys_message(pth2h5, tmp_path, run_main, change):
    """pth2h5 refuses a state dict that does not build the model, with the message Numpy_V2 gives for the
    same tensors written straight to an .h5 (icnn.spec.check_weights, one rule for both)."""
    from icnn.h5weights import write_weights
    from Numpy_V2.model import load_h5

    torch.manual_seed(0)
    state = ICNN_s().state_dict()
    config = {"model": ModelConfig().to_dict()}
    if change == "drop_prior":
        state = {k: v for k, v in state.items() if k != "wienernet.beta"}
    elif change == "add_threshold":
        state["inc.double_conv.1.threshold"] = torch.zeros(2)
    elif change == "reshape":
        state["up1.conv.double_conv.0.weight"] = torch.zeros(16, 32, 2)
    else:
        config = {"model": ModelConfig(prior=False).to_dict()}
    torch.save({"net_state_dict": state, "config": config}, tmp_path / "wrong.pth")
    code, _, err = run_main(pth2h5, [tmp_path / "wrong.pth", tmp_path / "wrong.h5"])
    assert_one_line_error(code, err, "wrong.pth")
    assert not (tmp_path / "wrong.h5").exists() and no_temp_files(tmp_path)
    arrays = {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    write_weights(tmp_path / "wrong.h5", arrays, config, {})
    with pytest.raises(InputError) as numpy_error:
        load_h5(tmp_path / "wrong.h5")
    torch_message = err.strip().split("wrong.pth: ", 1)[1]
    numpy_message = str(numpy_error.value).split("wrong.h5: ", 1)[1]
    if change == "reshape":  # the .h5 stores tensors flat, so it names the flat shape
        torch_message, numpy_message = torch_message.split(" has shape")[0], numpy_message.split(" has shape")[0]
    assert torch_message == numpy_message


def test_conversion_records_sigma_range_and_round_trips(pth2h5, tmp_path):
    """The model config written to the .h5 is the checked one, sigma_range filled from the training sigma."""
    from Numpy_V2.model import load_h5

    torch.manual_seed(1)
    model = ICNN_s()
    torch.save({"net_state_dict": model.state_dict(),
                "config": {"model": {"prior": True, "norm": "bn", "bn_mode": "unfixed"}, "train": {"sigma": [0.5, 5.0]}}},
               tmp_path / "blind.pth")
    pth2h5.convert(tmp_path / "blind.pth", tmp_path / "blind.h5")
    net = load_h5(tmp_path / "blind.h5")
    assert net.config == ModelConfig(prior=True, norm="bn", bn_mode="unfixed", sigma_range=[0.5, 5.0])
    with h5py.File(tmp_path / "blind.h5", "r") as f:
        assert f.attrs["format_version"] == 1 and '"sigma_range": [0.5, 5.0]' in f.attrs["config"]


def test_default_destination_never_replaces_an_existing_file(tmp_path):
    # `python pth2h5.py SRC` writes SRC.h5 only when it does not exist (the shipped ckpt/*.h5 are safe).
    import shutil

    from conftest import REPO_ROOT, assert_one_line_error, run_script

    source = tmp_path / "model.pth"
    shutil.copyfile(REPO_ROOT / "ckpt" / "ckpt_best.pth", source)
    first = run_script(REPO_ROOT / "pth2h5.py", source, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "model.h5").read_bytes()
    second = run_script(REPO_ROOT / "pth2h5.py", source, cwd=tmp_path)
    assert_one_line_error(second.returncode, second.stderr, "exists", "name it")
    assert (tmp_path / "model.h5").read_bytes() == before
    third = run_script(REPO_ROOT / "pth2h5.py", source, tmp_path / "model.h5", cwd=tmp_path)
    assert third.returncode == 0, third.stderr


# ---------------------------------------------------------------------------
# unreadable sources, output paths, CUDA-saved files


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    """A checkpoint of the default model (seed 1), for the refusal tests."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "w.pth"
    save_checkpoint(path, {"net_state_dict": ICNN_s().state_dict(), "config": {"model": ModelConfig().to_dict()},
                           "format_version": 1})
    return path


@pytest.mark.parametrize("case", ["empty", "text", "zip_cut_short"])
def test_pth2h5_bad_checkpoint(pth2h5, run_main, plain_checkpoint, tmp_path, case):
    """Truncation mid-file and pickles carrying code: the tests above; these are the other unreadable files."""
    bad = tmp_path / "bad.pth"
    data = plain_checkpoint.read_bytes()
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "text":
        bad.write_text("not a checkpoint\n")
    else:
        bad.write_bytes(data[:100])  # only the first zip header survived
    before = listing(tmp_path)
    code, _, err = run_main(pth2h5, [bad, tmp_path / "out" / "w.h5"])
    assert_one_line_error(code, err, "bad.pth")
    assert listing(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_pth2h5_creates_a_missing_output_folder(pth2h5, run_main, plain_checkpoint, tmp_path):
    out = tmp_path / "new" / "deeper" / "w.h5"
    code, _, err = run_main(pth2h5, [plain_checkpoint, out])
    assert code == 0, err
    with h5py.File(out, "r") as f:
        assert "wienernet.beta" in f and "inc.double_conv.0.weight" in f


@pytest.mark.parametrize("spelling", ["dotted", "symlink"])  # the plain same path: test_missing_source_and_overwriting_source
def test_pth2h5_refuses_to_overwrite_its_input(pth2h5, run_main, plain_checkpoint, tmp_path, spelling):
    source = tmp_path / "w.pth"
    source.write_bytes(plain_checkpoint.read_bytes())
    if spelling == "dotted":
        dest = tmp_path / "." / "w.pth"
    else:
        dest = tmp_path / "link.pth"
        dest.symlink_to(source)
    before = listing(tmp_path)
    code, _, err = run_main(pth2h5, [source, dest])
    assert_one_line_error(code, err, "overwrite")
    assert listing(tmp_path) == before
    assert source.read_bytes() == plain_checkpoint.read_bytes()


def test_pth2h5_output_folder_path_is_refused(pth2h5, run_main, plain_checkpoint, tmp_path):
    (tmp_path / "dir.h5").mkdir()
    code, _, err = run_main(pth2h5, [plain_checkpoint, tmp_path / "dir.h5"])
    assert_one_line_error(code, err, "dir.h5")


def test_cuda_saved_checkpoint_converts_on_the_cpu(pth2h5, run_main, tmp_path):
    """A CUDA-saved checkpoint loads on the CPU (it must load, not fail); test.py: test_pytorch_test.py."""
    torch.manual_seed(2)
    model = ICNN_s()
    write_cuda_checkpoint(tmp_path / "cuda.pth", {"epoch": 3, "net_state_dict": model.state_dict(), "loss": 1.0})
    code, out, err = run_main(pth2h5, [tmp_path / "cuda.pth", tmp_path / "cuda.h5"])
    assert code == 0, err
    with h5py.File(tmp_path / "cuda.h5", "r") as f:
        np.testing.assert_array_equal(f["outc.conv.weight"][()], model.outc.conv.weight.detach().numpy().ravel())


# --- the destination: only HDF5 weights that pth2h5.py wrote are replaced ---------------------------


def test_a_pth_destination_is_refused_and_left_byte_identical(pth2h5, run_main, plain_checkpoint, tmp_path):
    user = tmp_path / "user.pth"
    user.write_bytes(plain_checkpoint.read_bytes())
    for flags in ([], ["--overwrite"]):
        code, _, err = run_main(pth2h5, [plain_checkpoint, user, *flags])
        assert_one_line_error(code, err, "user.pth", "is a checkpoint")
    new = tmp_path / "new.pth"
    code, _, err = run_main(pth2h5, [plain_checkpoint, new])
    assert_one_line_error(code, err, "new.pth", "must end in .h5 or .hdf5")
    assert user.read_bytes() == plain_checkpoint.read_bytes() and not new.exists()


def test_a_conversion_replaces_its_own_earlier_output(pth2h5, run_main, plain_checkpoint, tmp_path):
    out = tmp_path / "w.h5"
    for _ in range(2):
        code, _, err = run_main(pth2h5, [plain_checkpoint, out, "--csv", tmp_path / "w.csv"])
        assert code == 0, err
    assert read_weights(out)[0] and no_temp_files(tmp_path)


def test_foreign_weights_need_overwrite_and_other_files_are_never_replaced(pth2h5, run_main, plain_checkpoint,
                                                                         tmp_path):
    made = tmp_path / "made" / "w.h5"
    assert run_main(pth2h5, [plain_checkpoint, made])[0] == 0
    copied = tmp_path / "copied.h5"
    copied.write_bytes(made.read_bytes())  # the same format, but not this folder's record
    code, _, err = run_main(pth2h5, [plain_checkpoint, copied])
    assert_one_line_error(code, err, "copied.h5", "did not write", "--overwrite")
    assert copied.read_bytes() == made.read_bytes()
    code, _, err = run_main(pth2h5, [plain_checkpoint, copied, "--overwrite"])
    assert code == 0, err
    others = {"text.h5": b"not weights\n", "ckpt.h5": plain_checkpoint.read_bytes()}
    for name, data in others.items():
        (tmp_path / name).write_bytes(data)
        code, _, err = run_main(pth2h5, [plain_checkpoint, tmp_path / name, "--overwrite"])
        assert code == 2 and "\n" not in err.strip(), err
        assert (tmp_path / name).read_bytes() == data
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:  # HDF5, but not this project's weights format
        f.attrs["format"] = "someone-else"
    before = foreign.read_bytes()
    code, _, err = run_main(pth2h5, [plain_checkpoint, foreign, "--overwrite"])
    assert_one_line_error(code, err, "foreign.h5", "HDF5 weights file")
    assert foreign.read_bytes() == before

"""float64 stays float64 through the network, at any magnitude float64 holds: no silent zeros, no inf.

Every shipped model is scale-equivariant, f(a·y) = a·f(y): its baseline m(y), scale s(y) and the way back are
computed in the input's float64 (``icnn.equivariance.normalised_forward``, both backends) and the float32
network sees only (y − m) / s. The Wiener prior's floor is relative, so h(a·y) = h(y). The API
(``Numpy_V2.api.denoise``) computes every method on the record divided by a power of two near its magnitude.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import spike_signals
from deepdenoise1d import scoreboard as board
from deepdenoise1d.classical import wiener, wiener_inverse_response
from deepdenoise1d.errors import InputError
from icnn.shipped import default_weights
from Numpy_V2 import denoise, scoreboard
from Numpy_V2.model import load_h5

SCALES = (1e-200, 1e-40, 1e-18, 1.0, 1e19, 1e200)
EXTREMES = (1e-200, 1e-40, 1e19, 1e200)
RELATIVE = 1e-5  # f(a·y) against a·f(y): float64 normalisation leaves only float32 rounding of the network
MODELS = ("ckpt_universal", "ckpt_blind_sure")  # offset-free with the prior; without a baseline


def record(length: int = 600, seed: int = 0) -> np.ndarray:
    """A noisy sine and step, float64."""
    t = np.linspace(0, 1, length)
    return np.sin(2 * np.pi * 3 * t) + (t > 0.5) + 0.2 * np.random.default_rng(seed).standard_normal(length)


def assert_scaled(got: np.ndarray, at_one: np.ndarray, scale: float, tolerance: float = RELATIVE) -> None:
    """``got`` is scale · ``at_one`` to ``tolerance`` of its largest value; finite, never all zeros."""
    assert np.all(np.isfinite(got)) and np.any(got != 0)
    error = np.abs(got / scale - at_one).max() / np.abs(at_one).max()
    assert error <= tolerance, f"scale {scale:g}: relative error {error:.2e}"


def quietly(fn, *args, **kwargs):
    """``fn`` with every floating-point warning (overflow, underflow, invalid) an error."""
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def net_at_one():
    return denoise(record(), method="net")


@pytest.mark.parametrize("scale", SCALES)
def test_the_net_through_the_api_scales_with_its_input(scale, net_at_one):
    at_one, info_at_one = net_at_one
    out, info = quietly(denoise, record() * scale, method="net")
    assert out.dtype == np.float64 and info["method"] == info_at_one["method"] and info["warnings"] == []
    assert_scaled(out, at_one, scale)
    assert info["sigma"] == pytest.approx(scale * info_at_one["sigma"], rel=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_both_backends_keep_float64_and_agree_at_every_scale(name):
    pytest.importorskip("torch")
    from Pytorch_V1.checkpoint import load_model
    from Pytorch_V1.inference import denoise as torch_denoise

    net = load_h5(default_weights(".h5", name))
    model, _ = load_model(default_weights(".pth", name))
    y = record()[None]
    numpy_at_one, torch_at_one = net.denoise(y), torch_denoise(model, y)
    for scale in SCALES:
        got_numpy = quietly(net.denoise, y * scale)
        got_torch = quietly(torch_denoise, model, y * scale)
        assert got_numpy.dtype == got_torch.dtype == np.float64
        assert_scaled(got_numpy, numpy_at_one, scale)
        assert_scaled(got_torch, torch_at_one, scale)
        assert_scaled(got_torch, got_numpy / scale, scale)  # the two backends agree, to float32 rounding


@pytest.mark.parametrize("name", MODELS)
def test_the_numpy_backend_alone_keeps_float64(name):
    net = load_h5(default_weights(".h5", name))
    y = record()[None]
    at_one = net.denoise(y)
    for scale in SCALES:
        assert_scaled(quietly(net.denoise, y * scale), at_one, scale)


def test_float32_input_still_computes_in_float32():
    net = load_h5(default_weights(".h5", "ckpt_universal"))
    y32 = record().astype(np.float32)[None]
    out = net.denoise(y32)
    assert out.dtype == np.float32
    # float64 input of the same values differs from the float32 path by float32 rounding only
    wide = net.denoise(y32.astype(np.float64))
    assert wide.dtype == np.float64
    np.testing.assert_allclose(wide, out, rtol=0, atol=RELATIVE * np.abs(out).max())


@pytest.mark.parametrize("method", list(board.classical_candidates(1.0)) + ["auto"])
def test_every_method_through_the_api_scales_with_its_input(method):
    at_one, info_at_one = denoise(record(), method=method)
    for scale in EXTREMES:
        out, info = quietly(denoise, record() * scale, method=method)
        assert info["method"] == info_at_one["method"], f"scale {scale:g}"
        assert_scaled(out, at_one, scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_sparse_record_whose_squares_leave_float32_stays_finite(dtype):
    """Over half the differences are 0, so s(y) is the RMS: of 3e20 spikes it fits float32, their squares do not."""
    spikes = np.where(np.arange(600) % 50 == 0, 1.0, 0.0)
    at_one, _ = denoise(spikes, method="net", sigma=0.1)
    out, _ = quietly(denoise, (spikes * 3e20).astype(dtype), method="net", sigma=3e19)
    assert out.dtype == dtype
    assert_scaled(out.astype(np.float64), at_one, 3e20)


def test_a_constant_record_beyond_float32s_precision_comes_back_as_it_is():
    y = np.full(600, 1e19)
    out, _ = quietly(denoise, y, method="net", sigma=1.0)
    np.testing.assert_allclose(out, y, rtol=1e-15, atol=0)  # the window blend's rounding; float32 gave 9.99999998e18


def test_uint64_records_are_denoised_in_float64():
    """Integers beyond 2^53 round to float64's 53 bits (4096 at 2^64), far below the record's own variation."""
    top = np.iinfo(np.uint64).max
    constant = np.full(600, top, dtype=np.uint64)
    out, _ = quietly(denoise, constant, method="net", sigma=1.0)
    np.testing.assert_allclose(out, np.full(600, float(top)), rtol=1e-15, atol=0)  # was inf
    variation = np.round(record() * 1e12)
    counts = (top - np.uint64(4e12)) + variation.astype(np.int64).astype(np.uint64)  # near uint64's top
    out, _ = quietly(denoise, counts, method="net")
    base = float(top - np.uint64(4e12))
    offset_free, _ = denoise(counts.astype(np.float64) - base, method="net")  # the offset-free model moves with it
    assert out.dtype == np.float64 and np.all(np.isfinite(out))
    np.testing.assert_allclose(out - base, offset_free, rtol=0, atol=1e-6 * np.abs(offset_free).max())


@pytest.mark.parametrize("value", [record() + 1j * record(), np.ones(600, np.complex64)])
def test_complex_input_is_refused_in_one_line_by_the_api_and_both_backends(value):
    with pytest.raises(InputError, match="complex") as raised:
        denoise(value, method="net", sigma=1.0)
    assert "\n" not in str(raised.value)
    net = load_h5(default_weights(".h5", "ckpt_universal"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a ComplexWarning and a cast: a refusal
        with pytest.raises(InputError, match="complex") as raised:
            net.denoise(value)
    assert "\n" not in str(raised.value)
    pytest.importorskip("torch")
    from Pytorch_V1.checkpoint import load_model
    from Pytorch_V1.inference import denoise as torch_denoise

    model, _ = load_model(default_weights(".pth", "ckpt_universal"))
    with pytest.raises(InputError, match="complex") as raised:
        torch_denoise(model, value)
    assert "\n" not in str(raised.value)


def test_values_whose_normalisation_overflows_are_refused_in_one_line():
    y = record() * 1e307  # finite, but y − m and the denoised record's overshoot can leave float64
    with pytest.raises(InputError, match="rescale") as raised:
        denoise(y, method="net")
    assert "\n" not in str(raised.value)


def test_the_scoreboard_reports_in_the_records_units_or_refuses():
    y = record(64)
    at_one = scoreboard(y, sigma=0.2)
    tiny = quietly(scoreboard, y * 1e-40, sigma=0.2e-40)
    assert tiny.chosen == at_one.chosen and tiny.sigma == pytest.approx(0.2e-40, rel=1e-15)
    for name, estimate in at_one.estimates.items():
        assert tiny.estimates[name].rmse == pytest.approx(1e-40 * estimate.rmse, rel=1e-6)
    with pytest.raises(InputError, match="beyond float64") as raised:
        scoreboard(y * 1e200, sigma=0.2e200)  # its mean squares, 1e400, are no float64
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("scale", [1e-200, 1e-40, 1e-18, 1e19, 1e200])
def test_the_wiener_prior_is_scale_free(scale):
    y = spike_signals(100, n=4)[:, 0].astype(np.float64)
    h = wiener_inverse_response(y)
    np.testing.assert_allclose(quietly(wiener_inverse_response, y * scale), h, rtol=0, atol=1e-12 * h.max())
    np.testing.assert_allclose(quietly(wiener, y * scale) / scale, wiener(y), rtol=1e-13, atol=1e-13)


def test_the_relative_floor_leaves_normal_inputs_bit_for_bit():
    """The absolute 1e-30 the floor carried vanished in float64 rounding for any signal of a normal scale, so the
    original ICNN_s path (its h) is unchanged bit for bit; an all-zero signal still gets h = 0."""
    y = spike_signals(100, n=16)[:, 0].astype(np.float64)
    spectrum = np.fft.fft(y, axis=-1)
    floor = (1e-3 * np.abs(spectrum).max(axis=-1, keepdims=True)) ** 2 + 1e-30
    before = np.abs(np.fft.ifft(np.fft.fft(wiener(y), axis=-1) * np.conj(spectrum) / (np.abs(spectrum) ** 2 + floor)))
    np.testing.assert_array_equal(wiener_inverse_response(y), before)
    assert not quietly(wiener_inverse_response, np.zeros((2, 100))).any()


# The command line's file path: float64 records stay float64 there too.


def _cli(tmp_path, capsys, argv):
    from conftest import REPO_ROOT, load_script
    from deepdenoise1d.errors import run_cli

    module = load_script(REPO_ROOT / "Numpy_V2" / "Numpy_test.py", "numpy_test_numbers")
    try:
        run_cli(lambda: module.main([str(a) for a in argv]), "prog")
    except SystemExit as exit_:
        assert exit_.code == 0, capsys.readouterr().err


def test_the_command_line_keeps_float64_for_a_method(tmp_path, capsys):
    y = record(2000) + 1e6  # an offset that float32 would round to 0.06
    np.save(tmp_path / "in.npy", y)
    _cli(tmp_path, capsys, ["--input", tmp_path / "in.npy", "--output", tmp_path / "out.npy", "--method", "noisy"])
    assert np.array_equal(np.load(tmp_path / "out.npy"), y)


@pytest.mark.parametrize("scale", [1e-40, 1e100])
def test_the_command_line_network_is_scale_free_in_float64(tmp_path, capsys, scale):
    y = record(1500)
    np.save(tmp_path / "one.npy", y)
    np.save(tmp_path / "scaled.npy", y * scale)
    for name in ("one", "scaled"):
        _cli(tmp_path, capsys, ["--input", tmp_path / f"{name}.npy", "--output", tmp_path / f"{name}_out.npy",
                                "--method", "net"])
    assert_scaled(np.load(tmp_path / "scaled_out.npy"), np.load(tmp_path / "one_out.npy"), scale)


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_the_command_lines_scoreboard_works_at_any_float64_magnitude(tmp_path, capsys, scale):
    y = record(1200)
    np.save(tmp_path / "one.npy", y)
    np.save(tmp_path / "scaled.npy", y * scale)
    tables = {}
    for name in ("one", "scaled"):
        _cli(tmp_path, capsys, ["--input", tmp_path / f"{name}.npy", "--output", tmp_path / f"{name}_out.npy"])
        tables[name] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "*" in line]
    assert tables["one"][0].split("|")[1] == tables["scaled"][0].split("|")[1]  # the same choice
    assert_scaled(np.load(tmp_path / "scaled_out.npy"), np.load(tmp_path / "one_out.npy"), scale)


def test_channels_are_scored_at_any_float64_magnitude_too(tmp_path, capsys):
    y = np.stack([record(1200), 3 * record(1200, seed=1)])
    np.save(tmp_path / "one.npy", y)
    np.save(tmp_path / "scaled.npy", y * 1e200)
    choices = {}
    for name in ("one", "scaled"):
        _cli(tmp_path, capsys, ["--input", tmp_path / f"{name}.npy", "--output", tmp_path / f"{name}_out.npy",
                                "--channels"])
        choices[name] = [line.split(":")[1].split("(")[0] for line in capsys.readouterr().out.splitlines()
                         if line.startswith("channel ")]
    assert choices["one"] == choices["scaled"] and len(choices["one"]) == 2
    assert_scaled(np.load(tmp_path / "scaled_out.npy"), np.load(tmp_path / "one_out.npy"), 1e200)


@pytest.mark.parametrize("y, why", [(np.full(600, 5.0), "constant"),
                                    (np.where(np.arange(600) % 97 == 0, 3e20, 0.0), "sparse: zero between its peaks")])
def test_no_noise_to_estimate_is_one_error_in_the_apis_own_words(y, why):
    with pytest.raises(InputError) as caught:
        denoise(y)
    message = str(caught.value)
    assert "no noise to estimate" in message and "give sigma=S" in message and "--sigma" not in message, why
    with pytest.raises(InputError, match="give --sigma S"):
        board.record_sigma(np.atleast_2d(y), "auto")  # the command line's words

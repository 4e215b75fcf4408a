"""Pytorch_V1/model.py and checkpoint.py: part shapes, lengths, BN modes, per-signal prior,
weights untouched by forward, the original repository's state-dict layout, and checkpoint loading."""
from __future__ import annotations

import copy
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deepdenoise1d.safewrite
from icnn.spec import DECODER, ENCODER, SKIPS
from Pytorch_V1.checkpoint import load_checkpoint, load_model, load_state_dict_strict, save_checkpoint
from Pytorch_V1.model import (
    DoubleConv,
    Down,
    ICNN_s,
    ModelConfig,
    OutConv,
    SignalBatchNorm1d,
    Up,
    WienerNet,
    pad_to_match,
    wiener_prior,
)
from deepdenoise1d.errors import InputError
from deepdenoise1d.synthesis import noisy_pairs

LENGTHS = [16, 77, 100, 129, 1000]
ATOL = 1e-5


# ---------------------------------------------------------------------------
# helpers


def randomise(model: torch.nn.Module, seed: int = 0, beta: float = 0.5) -> torch.nn.Module:
    """Non-trivial BN statistics and affine terms (conv weights keep their seeded default init),
    so fixed != unfixed and the prior matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
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


def make_model(seed: int = 0, **config) -> ICNN_s:
    torch.manual_seed(seed)
    return randomise(ICNN_s(ModelConfig(**config)), seed)


def signals_of_length(n: int, length: int, seed: int = 0) -> torch.Tensor:
    """Spiky noisy signals (N, 1, L), float32."""
    rng = np.random.default_rng(seed)
    clean = np.zeros((n, length))
    idx = rng.integers(0, length, size=(n, max(1, length // 5)))
    np.put_along_axis(clean, idx, rng.integers(2, 11, size=idx.shape).astype(float), axis=1)
    noisy = clean + 3 * rng.standard_normal((n, length))
    return torch.from_numpy(noisy.astype(np.float32))[:, None]


def batch_of_100(n: int, seed: int = 0) -> torch.Tensor:
    _, noisy, _ = noisy_pairs(np.random.default_rng(seed), n, 3.0)
    return torch.from_numpy(noisy.astype(np.float32))[:, None]


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def double_conv_shapes(prefix: str, cin: int, cout: int, mid: int | None = None) -> dict[str, tuple]:
    mid = mid or cout
    shapes = {}
    for idx, (a, b) in ((0, (cin, mid)), (3, (mid, cout))):
        shapes[f"{prefix}.double_conv.{idx}.weight"] = (b, a, 3)
        shapes[f"{prefix}.double_conv.{idx}.bias"] = (b,)
    for idx, c in ((1, mid), (4, cout)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.double_conv.{idx}.{name}"] = (c,)
        shapes[f"{prefix}.double_conv.{idx}.num_batches_tracked"] = ()
    return shapes


def original_layout_shapes(prior: bool = True) -> dict[str, tuple]:
    """Every state-dict key and shape of the original repository's ICNN_s, its widths written out here (not from icnn.spec)."""
    shapes = double_conv_shapes("inc", 1, 2)
    for k, (cin, cout) in enumerate([(2, 4), (4, 8), (8, 16), (16, 16)], start=1):
        shapes.update(double_conv_shapes(f"down{k}.maxpool_conv.1", cin, cout))
    for k, (cin, cout) in enumerate([(32, 8), (16, 4), (8, 2), (4, 2)], start=1):
        shapes.update(double_conv_shapes(f"up{k}.conv", cin, cout, cin // 2))
    shapes["outc.conv.weight"] = (1, 2, 1)
    shapes["outc.conv.bias"] = (1,)
    if prior:
        shapes.update(double_conv_shapes("wienernet.inc", 1, 2))
        for k, (cin, cout) in enumerate([(2, 4), (4, 8), (8, 16)], start=1):
            shapes.update(double_conv_shapes(f"wienernet.down{k}.maxpool_conv.1", cin, cout))
        shapes["wienernet.beta"] = (1,)
    return shapes


def write_cuda_checkpoint(path, ckpt: dict) -> None:
    """Save ``ckpt`` on the CPU, then rewrite every storage location 'cpu' to 'cuda:0' in data.pkl,
    as if saved from a CUDA device. Every other zip member is copied byte for byte."""
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


# ---------------------------------------------------------------------------
# parts


@pytest.mark.parametrize("length", [16, 77, 100])
def test_double_conv_down_outconv_shapes(length):
    x = torch.randn(3, 1, length)
    assert DoubleConv(1, 2).eval()(x).shape == (3, 2, length)
    mid = DoubleConv(8, 2, mid_channels=4)
    assert mid.double_conv[0].out_channels == 4 and mid.double_conv[3].in_channels == 4
    assert mid.eval()(torch.randn(3, 8, length)).shape == (3, 2, length)
    assert Down(2, 4).eval()(torch.randn(3, 2, length)).shape == (3, 4, length // 2)
    assert OutConv(2, 1)(torch.randn(3, 2, length)).shape == (3, 1, length)


def test_double_conv_layout():
    layers = DoubleConv(3, 5).double_conv
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["Conv1d", "SignalBatchNorm1d", "ReLU", "Conv1d", "SignalBatchNorm1d", "ReLU"]
    assert (layers[0].kernel_size, layers[0].padding) == ((3,), (1,))
    assert isinstance(Down(2, 4).maxpool_conv[0], torch.nn.MaxPool1d)


def test_pad_to_match_rule():
    x2 = torch.zeros(1, 1, 13)
    x1, same = pad_to_match(torch.ones(1, 1, 10), x2)  # diff 3: left 1, right 2
    assert same is x2
    assert x1[0, 0].tolist() == [0.0] + [1.0] * 10 + [0.0, 0.0]
    x1, _ = pad_to_match(torch.ones(1, 1, 12), x2)  # diff 1: left 0, right 1
    assert x1[0, 0].tolist() == [1.0] * 12 + [0.0]
    up = torch.zeros(1, 1, 14)
    same, x2p = pad_to_match(up, torch.ones(1, 1, 11))  # skip shorter: pad the skip, left 1, right 2
    assert same is up
    assert x2p[0, 0].tolist() == [0.0] + [1.0] * 11 + [0.0, 0.0]


@pytest.mark.parametrize("len1, len2", [(6, 12), (6, 13), (5, 13), (7, 11), (8, 16)])
def test_up_pads_then_concatenates_skip_first(len1, len2):
    torch.manual_seed(1)
    up = randomise(Up(32, 8), seed=1)
    assert up.conv.double_conv[0].out_channels == 16  # mid = in // 2
    x1, skip = torch.randn(2, 16, len1), torch.randn(2, 16, len2)
    u = F.interpolate(x1, scale_factor=2, mode="linear", align_corners=True)
    x2 = skip
    diff = len2 - u.shape[2]
    if diff >= 0:
        u = F.pad(u, [diff // 2, diff - diff // 2])
    else:
        x2 = F.pad(skip, [(-diff) // 2, -diff - (-diff) // 2])
    expected = up.conv(torch.cat([x2, u], dim=1))
    got = up(x1, skip)
    assert got.shape == (2, 8, max(len2, 2 * len1))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("length", LENGTHS)
def test_wienernet_gives_one_factor_per_channel_and_tap(length):
    torch.manual_seed(2)
    wn = randomise(WienerNet(), seed=2)
    h = torch.rand(4, 1, length)
    assert wn(h).shape == (4, 16, 3)


def test_adaptive_pool_is_the_original_max_pool_4_at_length_100():
    torch.manual_seed(3)
    wn = randomise(WienerNet(), seed=3, beta=0.7)
    h = torch.rand(5, 1, 100)
    p4 = wn.down3(wn.down2(wn.down1(wn.inc(h))))
    assert p4.shape[2] == 12
    expected = 1.0 + wn.beta * F.max_pool1d(p4, kernel_size=4)
    torch.testing.assert_close(wn(h), expected, atol=0, rtol=0)


# ---------------------------------------------------------------------------
# the whole network


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("length", LENGTHS)
def test_lengths_give_same_shape(length, mode):
    model = make_model(1)
    with torch.no_grad():
        y = model(signals_of_length(3, length), bn_mode=mode)
    assert y.shape == (3, 1, length)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_too_short_raises_value_error(mode):
    model = make_model(1)
    with pytest.raises(ValueError, match="16"):
        model(torch.randn(2, 1, 15), bn_mode=mode)


def test_bad_input_rank_raises_value_error():
    with pytest.raises(ValueError):
        make_model(1)(torch.randn(2, 100))


def test_skip_connections_are_the_specs():
    """Each decoder part takes the output of the encoder part icnn.spec.SKIPS names (NumPy and the Jacobian walk SKIPS)."""
    model = make_model(4)
    encoded, skips = {}, {}

    def record(store: dict, name: str, pick):
        def hook(module, args, out):  # returns None: the output is left as it is
            store[name] = pick(args, out)
        return hook

    for name, _, _ in ENCODER:
        getattr(model, name).register_forward_hook(record(encoded, name, lambda args, out: out))
    for name, _ in SKIPS:
        getattr(model, name).register_forward_hook(record(skips, name, lambda args, out: args[1]))
    with torch.no_grad():
        model(batch_of_100(2))
    assert [name for name, _ in SKIPS] == [name for name, _, _ in DECODER]
    for name, skip in SKIPS:
        assert skips[name] is encoded[skip], name


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_prior_changes_the_output(mode):
    """Guard for the batching tests below: with beta != 0 the prior branch really acts."""
    model = make_model(2)
    seen = []
    model.down4.register_forward_hook(lambda module, args, out: seen.append(out))
    x = batch_of_100(4)
    with torch.no_grad():
        with_prior = model(x, bn_mode=mode)
        model.wienernet.beta.zero_()
        without = model(x, bn_mode=mode)
    assert (seen[0] - seen[1]).abs().max() > 1e-2
    assert (with_prior - without).abs().max() > 1e-2


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("length", [100, 77])
def test_batch_equals_one_signal_at_a_time(mode, length):
    model = make_model(3)
    x = signals_of_length(6, length, seed=4)
    with torch.no_grad():
        batch = model(x, bn_mode=mode)
        singles = torch.cat([model(x[i : i + 1], bn_mode=mode) for i in range(x.shape[0])])
    torch.testing.assert_close(batch, singles, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_output_does_not_depend_on_batch_mates(mode):
    model = make_model(4)
    x = batch_of_100(8, seed=5)
    others = batch_of_100(7, seed=6) * 5 + 10  # very different batch-mates
    with torch.no_grad():
        a = model(x[:4], bn_mode=mode)
        b = model(torch.cat([others[:3], x[:4], others[3:]]), bn_mode=mode)[3:7]
    torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


def test_per_signal_training_statistics_do_not_mix_signals():
    model = make_model(5)
    model.train()
    model.set_signal_stats(True)
    x = batch_of_100(5, seed=7)
    with torch.no_grad():
        batch = model(x)
        singles = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batch, singles, atol=ATOL, rtol=ATOL)


def test_unfixed_equals_train_mode_bn_on_a_batch_of_one():
    """Unfixed is what PyTorch's train-mode BN computes for a batch of one."""
    model = make_model(6)
    reference = copy.deepcopy(model).train()
    reference.set_signal_stats(False)  # plain batch statistics
    x = batch_of_100(3, seed=8)
    with torch.no_grad():
        for i in range(3):
            torch.testing.assert_close(model(x[i : i + 1], bn_mode="unfixed"), reference(x[i : i + 1]), atol=ATOL, rtol=ATOL)


def test_fixed_and_unfixed_differ():
    model = make_model(7)
    x = batch_of_100(3)
    with torch.no_grad():
        fixed = model(x, bn_mode="fixed")
        unfixed = model(x, bn_mode="unfixed")
        default = model(x)
    assert (fixed - unfixed).abs().max() > 1e-3
    assert torch.equal(default, fixed)  # None means the config's mode
    model.config.bn_mode = "unfixed"
    with torch.no_grad():
        assert torch.equal(model(x), unfixed)


@pytest.mark.parametrize("train_stats", [False, True])
def test_signal_batch_norm_against_functional(train_stats):
    torch.manual_seed(9)
    bn = randomise(SignalBatchNorm1d(4), seed=9)
    x = torch.randn(5, 4, 30) * 2 + 1
    with torch.no_grad():
        ref = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=1e-5)
        torch.testing.assert_close(bn(x, "fixed"), ref, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(bn(x), ref, atol=ATOL, rtol=ATOL)  # fixed by default
        per_signal = torch.cat([
            F.batch_norm(x[i : i + 1], None, None, bn.weight, bn.bias, training=True, eps=1e-5) for i in range(5)
        ])
        torch.testing.assert_close(bn(x, "unfixed"), per_signal, atol=ATOL, rtol=ATOL)
        # Training: the running statistics move as plain BatchNorm's would, whichever statistics normalise.
        plain = torch.nn.BatchNorm1d(4)
        plain.load_state_dict({k: v for k, v in bn.state_dict().items() if k != "threshold"})
        bn.train()
        bn.use_signal_stats = train_stats
        out = bn(x)
        torch.testing.assert_close(out, per_signal if train_stats else plain.train()(x), atol=ATOL, rtol=ATOL)
        if train_stats:
            plain.train()(x)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(bn, name), getattr(plain, name), atol=1e-6, rtol=1e-6)


def test_forward_rejects_unknown_modes():
    model = make_model(0)
    x = batch_of_100(1)
    for bad in ["train", "FIXED", 3]:
        with pytest.raises(InputError, match="bn mode"):
            model(x, bn_mode=bad)
    with pytest.raises(InputError, match="bn_mode"):
        ModelConfig(bn_mode="batch")
    with pytest.raises(InputError, match="norm"):
        ModelConfig(norm="layer_norm")


def test_inference_is_stateless():
    """No BN mode lives in the model: no attribute, no state-dict entry, no set_bn_mode."""
    model = make_model(0)
    assert not hasattr(model, "set_bn_mode")
    assert not any(hasattr(bn, "mode") for bn in model.batch_norms())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = batch_of_100(2)
    with torch.no_grad():
        first = model(x, bn_mode="fixed")
        model(x, bn_mode="unfixed")
        assert torch.equal(model(x, bn_mode="fixed"), first)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


# ---------------------------------------------------------------------------
# forward never touches the weights


def test_eval_forward_changes_nothing_and_does_not_compound():
    model = make_model(8)
    before = clone_state(model)
    ids = [id(p) for p in model.parameters()]
    x = batch_of_100(4)
    with torch.no_grad():
        outputs = [model(x) for _ in range(3)]
    after = model.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert [id(p) for p in model.parameters()] == ids
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])


@pytest.mark.parametrize("signal_stats", [False, True])
def test_train_forward_and_backward_leave_parameters_alone(signal_stats):
    model = make_model(9).train()
    model.set_signal_stats(signal_stats)
    params_before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x = batch_of_100(4)
    loss = model(x).pow(2).mean()
    loss.backward()
    params_after = dict(model.named_parameters())
    assert set(params_after) == set(params_before)
    for key, value in params_before.items():
        assert torch.equal(params_after[key].detach(), value), key
    # Buffers may move in train mode; the running statistics do.
    assert model.inc.double_conv[1].num_batches_tracked.item() == 1
    # Every registered parameter, the modulated bottleneck kernel and beta included, gets a gradient:
    # the optimiser trains the tensors the forward used, not an orphaned copy.
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
    assert model.down4.maxpool_conv[1].double_conv[0].weight.grad.abs().sum() > 0
    assert model.wienernet.beta.grad.abs().sum() > 0


def test_wiener_prior_is_per_signal():
    x = batch_of_100(5)
    h = wiener_prior(x)
    assert h.shape == x.shape and torch.isfinite(h).all()
    torch.testing.assert_close(h[:2], wiener_prior(x[:2]), atol=1e-6, rtol=1e-6)


def test_all_zero_signal_gives_a_finite_prior_and_output():
    """fft(x) of an all-zero signal is all zero bins: h needs a guard, and a
    finite input must give a finite output. Currently deepdenoise1d.classical.wiener computes 0/0 here."""
    model = make_model(15)
    x = batch_of_100(3)
    x[1] = 0.0
    assert torch.isfinite(wiener_prior(x)).all()
    with torch.no_grad():
        for mode in ("fixed", "unfixed"):
            assert torch.isfinite(model(x, bn_mode=mode)).all(), mode


# ---------------------------------------------------------------------------
# state-dict layout


def test_state_dict_is_the_original_layout():
    state = ICNN_s().state_dict()
    expected = original_layout_shapes()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(state) - len(counters) == 159
    assert len(counters) == 26
    for key in ["inc.double_conv.0.weight", "down1.maxpool_conv.1.double_conv.1.running_mean",
                "up1.conv.double_conv.3.weight", "outc.conv.weight",
                "wienernet.down3.maxpool_conv.1.double_conv.4.bias", "wienernet.beta"]:
        assert key in state, key


def test_sparse_bn_adds_only_threshold_keys():
    plain = ICNN_s(ModelConfig(norm="bn")).state_dict()
    sparse = ICNN_s(ModelConfig(norm="sparse_bn")).state_dict()
    added = set(sparse) - set(plain)
    assert set(plain) <= set(sparse)
    assert added and all(k.endswith(".threshold") for k in added)
    assert {k[: -len(".threshold")] for k in added} == {k[: -len(".num_batches_tracked")] for k in plain
                                                        if k.endswith(".num_batches_tracked")}
    for key in added:
        assert sparse[key].shape == sparse[key.replace(".threshold", ".weight")].shape


def test_sparse_bn_with_zero_threshold_is_plain_bn():
    plain = make_model(10)
    sparse = ICNN_s(ModelConfig(norm="sparse_bn")).eval()
    state = {**sparse.state_dict(), **plain.state_dict()}
    for key in state:
        if key.endswith(".threshold"):
            state[key] = torch.zeros_like(state[key])
    sparse.load_state_dict(state)
    x = batch_of_100(3)
    with torch.no_grad():
        for mode in ("fixed", "unfixed"):
            torch.testing.assert_close(sparse(x, bn_mode=mode), plain(x, bn_mode=mode), atol=ATOL, rtol=ATOL)
        bn = sparse.inc.double_conv[1]
        z = torch.randn(2, 2, 20)
        bn.threshold.zero_()
        z0 = bn(z)
        bn.threshold.fill_(0.5)
        positive = bn(z)
        bn.threshold.fill_(-0.5)  # lambda = |threshold| >= 0
        negative = bn(z)
    torch.testing.assert_close(positive, torch.sign(z0) * F.relu(z0.abs() - 0.5), atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(negative, positive, atol=0, rtol=0)


def test_sparsity_penalty_after_a_training_forward():
    model = make_model(11, norm="sparse_bn").train()
    model(batch_of_100(2))
    penalty = model.sparsity_penalty()
    assert penalty.ndim == 0 and penalty.item() > 0 and penalty.requires_grad


def test_no_prior_removes_exactly_the_wienernet_keys():
    full = ICNN_s(ModelConfig(prior=True)).state_dict()
    bare_model = ICNN_s(ModelConfig(prior=False))
    bare = bare_model.state_dict()
    assert set(full) - set(bare) == {k for k in full if k.startswith("wienernet.")}
    assert set(bare) <= set(full)
    assert bare_model.wienernet is None
    assert {k: tuple(v.shape) for k, v in bare.items()} == original_layout_shapes(prior=False)
    with torch.no_grad():
        assert bare_model.eval()(batch_of_100(2)).shape == (2, 1, 100)


def test_model_config_round_trip():
    cfg = ModelConfig(prior=False, norm="sparse_bn", bn_mode="unfixed", sigma_range=[0.5, 5])
    assert ModelConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg
    assert cfg.to_dict() == {"prior": False, "norm": "sparse_bn", "bn_mode": "unfixed", "sigma_range": [0.5, 5.0]}
    assert ModelConfig(sigma_range=3).sigma_range == [3.0, 3.0]  # one sigma s is [s, s]
    assert ModelConfig.from_dict({}, train_sigma=[1, 2]).sigma_range == [1.0, 2.0]
    assert ModelConfig.from_dict({}, train_sigma="auto").sigma_range is None  # nothing derived from a non-number


# ---------------------------------------------------------------------------
# checkpoints


def test_original_layout_checkpoint_loads_strictly(tmp_path):
    model = make_model(12)
    optim = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-6)
    model.train()
    model(batch_of_100(1)).pow(2).mean().backward()
    optim.step()
    model.eval()
    path = tmp_path / "seed.pth"
    torch.save({"epoch": 199, "net_state_dict": model.state_dict(), "optim_state_dict": optim.state_dict(),
                "loss": 0.123}, path)
    loaded, ckpt = load_model(path)
    assert not loaded.training
    assert (loaded.config.prior, loaded.config.norm) == (True, "bn")
    assert ckpt["epoch"] == 199
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = batch_of_100(3)
    with torch.no_grad():
        for mode in ("fixed", "unfixed"):
            assert torch.equal(loaded(x, bn_mode=mode), model(x, bn_mode=mode))


@pytest.mark.parametrize("config", [dict(prior=False), dict(norm="sparse_bn")])
def test_original_layout_variants_infer_their_architecture(tmp_path, config):
    model = make_model(13, **config)
    torch.save({"epoch": 1, "net_state_dict": model.state_dict(), "optim_state_dict": {}, "loss": 0.0},
               tmp_path / "v.pth")
    loaded, _ = load_model(tmp_path / "v.pth")
    assert {k: getattr(loaded.config, k) for k in config} == config


def test_cuda_saved_checkpoint_loads_on_cpu(tmp_path):
    model = make_model(14)
    path = tmp_path / "cuda.pth"
    write_cuda_checkpoint(path, {"epoch": 10, "net_state_dict": model.state_dict(), "loss": 0.5})
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # the fake is real: the storages ask for CUDA
    loaded, ckpt = load_model(path)
    assert ckpt["epoch"] == 10
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.device.type == "cpu" and torch.equal(got, value), key


def test_strict_loading_names_missing_and_unexpected_keys():
    model = ICNN_s()
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "up2.conv.double_conv.4.running_var"}
    with pytest.raises(InputError, match=r"missing tensor 'up2\.conv\.double_conv\.4\.running_var'"):
        load_state_dict_strict(ICNN_s(), missing, "x.pth")
    extra = {**state, "down9.weight": torch.zeros(1)}
    with pytest.raises(InputError, match=r"unexpected tensor 'down9\.weight'"):
        load_state_dict_strict(ICNN_s(), extra, "x.pth")
    with pytest.raises(InputError, match=r"'wienernet\.beta'.*\(2,\).*\(1,\)"):
        load_state_dict_strict(ICNN_s(), {**state, "wienernet.beta": torch.zeros(2)}, "x.pth")
    # A prior checkpoint into a no-prior model, and the other way round.
    with pytest.raises(InputError, match="unexpected tensor 'wienernet"):
        load_state_dict_strict(ICNN_s(ModelConfig(prior=False)), state, "x.pth")
    with pytest.raises(InputError, match="missing tensor 'wienernet"):
        load_state_dict_strict(ICNN_s(), ICNN_s(ModelConfig(prior=False)).state_dict(), "x.pth")
    # A config-less checkpoint without the BN step counters still loads (they stay 0).
    load_state_dict_strict(ICNN_s(), {k: v for k, v in state.items() if "num_batches" not in k}, "x.pth")


def test_load_checkpoint_refuses_non_checkpoints(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "nodict.pth")
    with pytest.raises(InputError, match="net_state_dict"):
        load_checkpoint(tmp_path / "nodict.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(InputError, match="text.pth"):
        load_checkpoint(tmp_path / "text.pth")


class Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_checkpoint_never_runs_pickled_code(tmp_path):
    marker = tmp_path / "ran.txt"
    torch.save({"net_state_dict": {}, "x": Payload(marker)}, tmp_path / "evil_zip.pth")  # zip format
    marker.unlink(missing_ok=True)  # torch.save itself does not run it, but be sure
    with open(tmp_path / "evil_raw.pth", "wb") as f:
        pickle.dump({"net_state_dict": Payload(marker)}, f)  # legacy raw pickle
    for name in ["evil_zip.pth", "evil_raw.pth"]:
        with pytest.raises(InputError, match=name):
            load_checkpoint(tmp_path / name)
        assert not marker.exists()


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    first = {"net_state_dict": ICNN_s().state_dict(), "step": 1}
    save_checkpoint(path, first)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]
    good = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(deepdenoise1d.safewrite.os, "fsync", broken_fsync)
    with pytest.raises(InputError, match="No space left"):
        save_checkpoint(path, {"net_state_dict": ICNN_s().state_dict(), "step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temp file left behind
    assert load_checkpoint(path)["step"] == 1
    assert os.stat(path).st_size > 0


# ---------------------------------------------------------------------------
# inference.py: stateless, dtype-keeping denoise; device and threads


def test_denoise_keeps_dtype_and_takes_the_mode_as_an_argument():
    from Pytorch_V1.inference import denoise

    model = make_model(16)
    noisy = batch_of_100(20, seed=9)[:, 0].numpy()
    fixed32 = denoise(model, noisy, "fixed", chunk=7)
    assert fixed32.dtype == np.float32 and fixed32.shape == noisy.shape
    fixed64 = denoise(model, noisy.astype(np.float64), "fixed")
    assert fixed64.dtype == np.float64
    np.testing.assert_allclose(fixed64, fixed32, rtol=0, atol=1e-5 * np.abs(fixed32).max())
    unfixed = denoise(model, noisy, "unfixed")
    assert np.abs(unfixed - fixed32).max() > 1e-3
    with torch.no_grad():
        expected = model(torch.from_numpy(noisy)[:, None], bn_mode="unfixed")[:, 0].numpy()
    np.testing.assert_allclose(unfixed, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert denoise(model, noisy.astype(np.int64)).dtype == np.float64
    # The model is left as it was: a later default call is fixed (its config's mode).
    np.testing.assert_array_equal(denoise(model, noisy), denoise(model, noisy, "fixed"))
    with pytest.raises(InputError, match="bn mode"):
        denoise(model, noisy, "train")
    big = noisy.astype(np.float64)
    big[3, 17] = 1e39  # finite in float64, inf in float32: refused, never NaN output
    with pytest.raises(InputError, match="signal 3 .* index 17"):
        denoise(model, big, chunk=2)


def test_resolve_device_and_threads():
    from Pytorch_V1.inference import configure_threads, resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert torch.get_num_threads() == 1
        configure_threads(1)  # a second call: inter-op threads can no longer be set, and that is fine
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------
# checkpoint hardening: config and tensor types


def save_raw(path, content) -> None:
    torch.save(content, path)


@pytest.mark.parametrize("config,fragment", [
    (["model"], "'config' must be a dict"),
    ("prior", "'config' must be a dict"),
    ({"model": ["bn"]}, "model config must be a dict"),
    ({"model": {"prior": "yes"}}, "'prior'"),
    ({"model": {"norm": 3}}, "'norm'"),
    ({"model": {"bn_mode": ["fixed"]}}, "'bn_mode'"),
    ({"model": {"sigma_range": [5, 1]}}, "'sigma_range'"),
    ({"model": {"sigma_range": "wide"}}, "'sigma_range'"),
])
def test_checkpoint_config_of_the_wrong_type_is_named(tmp_path, config, fragment):
    save_raw(tmp_path / "c.pth", {"net_state_dict": ICNN_s().state_dict(), "config": config})
    with pytest.raises(InputError, match=fragment):
        load_model(tmp_path / "c.pth")


@pytest.mark.parametrize("bad,fragment", [
    (torch.full((1,), float("nan")), "non-finite"),
    (torch.full((1,), float("inf")), "non-finite"),
    (torch.ones(1, dtype=torch.int64), "floating point"),
    (torch.ones(1).to_sparse(), "dense"),
    ("0.1", "not a named tensor"),
])
def test_checkpoint_tensors_are_checked(tmp_path, bad, fragment):
    state = {**ICNN_s().state_dict(), "wienernet.beta": bad}
    save_raw(tmp_path / "t.pth", {"net_state_dict": state})
    with pytest.raises(InputError, match=fragment):
        load_model(tmp_path / "t.pth")


def test_text_file_as_checkpoint_gets_a_clear_message(tmp_path):
    (tmp_path / "signal.txt").write_text("101.5\n3.25\n")
    with pytest.raises(InputError, match=r"signal\.txt: not a PyTorch checkpoint \(text\)"):
        load_model(tmp_path / "signal.txt")


def test_shipped_configs_load_and_fill_sigma_range():
    """The shipped checkpoints predate sigma_range: it comes from the recorded training sigma."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "ckpt"
    paths = sorted(folder.glob("*.pth"))
    if not paths:
        pytest.skip("no shipped checkpoints")
    for path in paths:
        model, ckpt = load_model(path)
        sigma = ckpt["config"]["train"]["sigma"]
        expected = [float(sigma)] * 2 if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
        assert model.config.sigma_range == expected, path.name

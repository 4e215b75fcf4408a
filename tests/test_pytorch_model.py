"""Tests of Pytorch_V1/model.py: part shapes, lengths, BN modes, per-signal prior, weights untouched by forward, the original repository's state-dict layout."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import batch_of_100, make_model, randomise
from icnn.spec import DECODER, ENCODER, SCALE_MAD, SKIPS
from Pytorch_V1.model import (
    DoubleConv,
    Down,
    ICNN_s,
    ModelConfig,
    OutConv,
    SignalBatchNorm1d,
    Up,
    WienerNet,
    modulated_conv1d,
    noise_scale,
    pad_to_match,
    wiener_prior,
)
from deepdenoise1d.errors import InputError
from deepdenoise1d.synthesis import noisy_pairs


LENGTHS = [16, 77, 100, 129, 1000]


ATOL = 1e-5


# ---------------------------------------------------------------------------
# helpers (make_model, randomise, batch_of_100: conftest.py)


def signals_of_length(n: int, length: int, seed: int = 0) -> torch.Tensor:
    """Spiky noisy signals (N, 1, L), float32."""
    rng = np.random.default_rng(seed)
    clean = np.zeros((n, length))
    idx = rng.integers(0, length, size=(n, max(1, length // 5)))
    np.put_along_axis(clean, idx, rng.integers(2, 11, size=idx.shape).astype(float), axis=1)
    noisy = clean + 3 * rng.standard_normal((n, length))
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
    assert torch.equal(same, x2)  # branch-free: the longer one comes back as an equal copy
    assert x1[0, 0].tolist() == [0.0] + [1.0] * 10 + [0.0, 0.0]
    x1, _ = pad_to_match(torch.ones(1, 1, 12), x2)  # diff 1: left 0, right 1
    assert x1[0, 0].tolist() == [1.0] * 12 + [0.0]
    up = torch.zeros(1, 1, 14)
    same, x2p = pad_to_match(up, torch.ones(1, 1, 11))  # skip shorter: pad the skip, left 1, right 2
    assert torch.equal(same, up)
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


@pytest.mark.parametrize("n, c_in, c_out, length, bias", [(1, 1, 1, 1, True), (5, 3, 4, 2, False), (7, 6, 5, 33, True)])
def test_modulated_conv1d_is_a_conv_with_each_signals_scaled_kernel(n, c_in, c_out, length, bias):
    # the definition, one ordinary convolution per signal with kernel weight · scale[n], forward and gradients
    gen = torch.Generator().manual_seed(n * 100 + length)
    x, weight = torch.randn(n, c_in, length, generator=gen), torch.randn(c_out, c_in, 3, generator=gen)
    b = torch.randn(c_out, generator=gen) if bias else None
    scale = 1 + 0.5 * torch.randn(n, c_out, 3, generator=gen)
    leaves = [t.requires_grad_() for t in (x, weight, scale)]
    got = modulated_conv1d(x, weight, b, scale)
    want = torch.cat([F.conv1d(x[i : i + 1], weight * scale[i][:, None, :], b, padding=1) for i in range(n)])
    torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)
    probe = torch.randn(got.shape, generator=gen)
    for g, w in zip(torch.autograd.grad((got * probe).sum(), leaves), torch.autograd.grad((want * probe).sum(), leaves)):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=ATOL)


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
# state-dict layout and sparse BN


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


def test_sparse_bn_thresholds_learn_under_the_l1_penalty():
    from Pytorch_V1.model import ICNN_s, ModelConfig

    model = ICNN_s(ModelConfig(norm="sparse_bn")).train()
    before = [bn.threshold.detach().clone() for bn in model.batch_norms()]
    _, noisy, _ = noisy_pairs(np.random.default_rng(0), 32, 3.0)
    x = torch.tensor(noisy, dtype=torch.float32)[:, None]
    out = model(x)
    loss = out.pow(2).mean() + 1e-2 * model.sparsity_penalty()
    loss.backward()
    grads = [bn.threshold.grad for bn in model.batch_norms()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads), "a threshold got no gradient"
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(not torch.equal(b, bn.threshold) for b, bn in zip(before, model.batch_norms()))


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


# ---------------------------------------------------------------------------
# the prior's pooling and the skip padding, written for an exporter: bit for bit the old forms


def test_adaptive_max_pool1d_bins_are_torchs_bit_for_bit():
    """Explicit bins [floor(i·L/out), ceil((i+1)·L/out)) against F.adaptive_max_pool1d, every L in 1..300."""
    from Pytorch_V1.model import adaptive_max_pool1d

    gen = torch.Generator().manual_seed(0)
    for length in range(1, 301):
        x = torch.randn(2, 3, length, generator=gen)
        x[0, 0, : length // 2] = 0.0  # ties, as ReLU features have
        for output_size in range(1, min(length, 7) + 1):
            got = adaptive_max_pool1d(x, output_size)
            assert torch.equal(got, F.adaptive_max_pool1d(x, output_size)), (length, output_size)
    with_nan = torch.tensor([[[1.0, float("nan"), 3.0, 0.5, 2.0, 4.0]]])
    assert torch.equal(adaptive_max_pool1d(with_nan, 3).isnan(), F.adaptive_max_pool1d(with_nan, 3).isnan())


def branching_pad_to_match(x1, x2):
    """pad_to_match as it was written with branches."""
    diff = x2.shape[2] - x1.shape[2]
    if diff > 0:
        x1 = F.pad(x1, [diff // 2, diff - diff // 2])
    elif diff < 0:
        x2 = F.pad(x2, [-diff // 2, -diff - (-diff // 2)])
    return x1, x2


@pytest.mark.parametrize("len1,len2", [(l1, l2) for l1 in range(1, 9) for l2 in range(1, 9)])
def test_branch_free_pad_to_match_is_the_branching_one(len1, len2):
    gen = torch.Generator().manual_seed(len1 * 10 + len2)
    x1, x2 = torch.randn(2, 3, len1, generator=gen), torch.randn(2, 4, len2, generator=gen)
    for got, expected in zip(pad_to_match(x1, x2), branching_pad_to_match(x1, x2)):
        assert torch.equal(got, expected)


def test_adaptive_max_pool1d_bins_route_the_gradient_like_torch():
    """Ties (ReLU zeros) must send the whole gradient to one index, as F.adaptive_max_pool1d does:
    an even split (amax) trains a different model from the same seed."""
    from Pytorch_V1.model import adaptive_max_pool1d

    torch.manual_seed(0)
    for length in (12, 13, 25):
        x = torch.relu(torch.randn(3, 4, length))  # many exact zeros: tied maxima in some bins
        x[0, 0] = 0.0  # an all-zero channel: every bin is a tie
        ours = x.clone().requires_grad_(True)
        ref = x.clone().requires_grad_(True)
        weight = torch.randn(3, 4, 3)
        (adaptive_max_pool1d(ours, 3) * weight).sum().backward()
        (F.adaptive_max_pool1d(ref, 3) * weight).sum().backward()
        assert torch.equal(ours.grad, ref.grad)


# ---------------------------------------------------------------------------
# scale equivariance (ModelConfig.equivariant): f(y) = s(y) · g(y / s(y)), so f(a·y) = a·f(y)

SCALES = [1e-3, 0.37, 1.0, 1e3]
EQUIVARIANCE_TOLERANCE = 1e-5  # relative max error in float32
EXACT_TOLERANCE = 1e-12  # the same in float64: the property itself, free of float32 rounding


def max_relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


def assert_equivariant(model: ICNN_s, y: torch.Tensor, mode: str, scales=SCALES) -> None:
    """f(a·y) = a·f(y): within EXACT_TOLERANCE in float64, and in float32 within EQUIVARIANCE_TOLERANCE or,
    where torch's own float32 rounding (its forward against float64 at y and at a·y) is larger, twice
    their sum. Unfixed BN normalises each signal by its own spread and amplifies rounding (see
    tests/test_parity.py): torch's own float32 error there is ~2e-4 at L = 37 without the prior (the
    bottleneck normalises 2 samples), while float64 stays within 1e-12."""
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        f, f64 = model(y, bn_mode=mode), exact(y.double(), bn_mode=mode)
        assert torch.isfinite(f).all()
        own = max_relative(f.double(), f64)
        for a in scales:
            ya = y * a
            fa = model(ya, bn_mode=mode)
            own_a = max_relative(fa.double(), exact(ya.double(), bn_mode=mode))
            bound = max(EQUIVARIANCE_TOLERANCE, 2 * (own + own_a))
            error = max_relative(fa, a * f)
            assert error <= bound, f"a={a} {mode}: {error:.2e} (torch's own float32 errors {own:.1e}, {own_a:.1e})"
            error64 = max_relative(exact(y.double() * a, bn_mode=mode), a * f64)
            assert error64 <= EXACT_TOLERANCE, f"a={a} {mode} float64: {error64:.2e}"


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
@pytest.mark.parametrize("prior", [True, False])
@pytest.mark.parametrize("length", [100, 37])
def test_equivariant_model_scales_with_its_input(length, prior, mode):
    model = make_model(0, prior=prior, equivariant=True)
    assert_equivariant(model, signals_of_length(6, length, seed=length), mode)
    if prior:  # the caller's h, computed from y: the same h serves a·y (h is scale-invariant)
        y = signals_of_length(3, length, seed=length + 1)
        h = wiener_prior(y)
        with torch.no_grad():
            f = model(y, h, mode)
            for a in (1e-3, 1e3):
                assert max_relative(model(y * a, h, mode), a * f) <= (1e-5 if mode == "fixed" else 1e-4)


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_a_plain_model_is_not_scale_equivariant(mode):
    """Guard for the test above: the same weights without the flag are far from equivariant (fixed mode
    least so at a = 1000: a ReLU net with biases is nearly homogeneous for large inputs, yet still ~0.3 off)."""
    model = make_model(0, equivariant=False)
    y = signals_of_length(6, 100, seed=100)
    with torch.no_grad():
        f = model(y, bn_mode=mode)
        assert max_relative(model(1e3 * y, bn_mode=mode), 1e3 * f) > 0.1
        assert max_relative(model(1e-3 * y, bn_mode=mode), 1e-3 * f) > 10
        model.config.equivariant = True  # same weights, flag on
        assert max_relative(model(1e3 * y, bn_mode=mode), 1e3 * model(y, bn_mode=mode)) <= 1e-4


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_equivariant_model_maps_zeros_to_zeros(mode):
    model = make_model(1, equivariant=True)
    y = signals_of_length(3, 100, seed=1)
    y[1] = 0.0
    assert noise_scale(y)[1].item() == 0.0
    with torch.no_grad():
        out = model(y, bn_mode=mode)
        others = model(y[[0, 2]], bn_mode=mode)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    torch.testing.assert_close(out[[0, 2]], others, atol=ATOL, rtol=ATOL)  # the zero row does not leak


@pytest.mark.parametrize("mode", ["fixed", "unfixed"])
def test_constant_signals_take_the_rms_scale_and_stay_equivariant(mode):
    """All differences 0 (constants), or over half of them (a step): s is the RMS, and f still scales."""
    y = torch.full((3, 1, 37), 2.5)
    y[1] = -4.0
    y[2, 0, 20:] = 3.0
    y[2, 0, :20] = 0.0
    expected = torch.tensor([2.5, 4.0, (17 * 9 / 37) ** 0.5])
    torch.testing.assert_close(noise_scale(y).flatten(), expected, atol=0, rtol=1e-6)
    model = make_model(2, equivariant=True)
    assert_equivariant(model, y, mode)


def test_noise_scale_of_white_noise_is_its_sigma():
    rng = np.random.default_rng(0)
    y = torch.from_numpy((2.0 * rng.standard_normal((4, 1, 10000))).astype(np.float32))
    s = noise_scale(y)
    assert s.shape == (4, 1, 1) and s.dtype == torch.float32
    assert ((s / 2.0 - 1.0).abs() <= 0.03).all(), s.flatten()


@pytest.mark.parametrize("length", [16, 37, 100])
def test_noise_scale_is_the_lower_median_of_the_differences_and_ignores_an_offset(length):
    rng = np.random.default_rng(length)
    y = rng.integers(-50, 51, size=(5, 1, length)).astype(np.float64)  # integers: every sum below is exact
    diffs = np.sort(np.abs(np.diff(y, axis=-1)), axis=-1)
    lower_median = diffs[..., (length - 2) // 2 : (length - 2) // 2 + 1] / SCALE_MAD
    assert (lower_median > 0).all()  # the median branch applies
    s = noise_scale(torch.from_numpy(y))
    np.testing.assert_array_equal(s.numpy(), lower_median)
    for c in (7.0, -1234.0):
        assert torch.equal(noise_scale(torch.from_numpy(y + c)), s)
        y32 = torch.from_numpy(y.astype(np.float32))
        assert torch.equal(noise_scale(y32 + c), noise_scale(y32))
    noisy = torch.from_numpy(rng.standard_normal((5, 1, length)))  # not integers: equal up to rounding
    torch.testing.assert_close(noise_scale(noisy + 100.0), noise_scale(noisy), atol=0, rtol=1e-12)


def test_a_wide_model_denoises_a_long_record_in_forward_blocks_of_bounded_size(monkeypatch):
    """Memory does not grow with a chunk of windows: a model of width 64 and windows of 512 gets at most
    FORWARD_VALUES / (512 · 64) = 64 windows per forward pass, and the result equals one pass per window."""
    from icnn.spec import ModelConfig
    from Pytorch_V1 import inference
    from Pytorch_V1.model import ICNN_s

    torch.manual_seed(0)
    model = ICNN_s(ModelConfig(norm="none", width=64, depth=2, train_length=512)).eval()
    sizes = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x, *a, **k: sizes.append(x.shape[0]) or forward(x, *a, **k))
    record = np.random.default_rng(0).standard_normal(20000)
    out = inference.denoise(model, record)
    assert inference.forward_block(model) == 64 and max(sizes) == 64 and len(sizes) > 1
    one_at_a_time = inference.denoise(model, record, chunk=1)
    assert np.allclose(out, one_at_a_time, rtol=0, atol=1e-5 * np.abs(out).max())

"""MC dropout: always-on branch dropout, K samples in one pass, reproducible evaluation, one
leaderboard row per sample count. Tiny CPU models."""

from __future__ import annotations

import pytest
import torch

from baselines.mc_dropout import AlwaysDropout, DropoutRNG, MCDropout, MCDropoutNet, dropout_mask, effective_rate, graph_dropout_mask
from benchmark.methods import Task
from benchmark.catalogue.methods import get_method

B, K = 3, 5
TASK = Task(num_classes=K, backbone="resnet8", backbone_options={"width": 4}, image_size=8)


def method(**options) -> MCDropout:
    return MCDropout.from_config(options, TASK)


def deterministic_with_weights_of(model: MCDropoutNet) -> torch.nn.Module:
    det = get_method("deterministic").from_config({}, TASK).build()
    det.load_state_dict(model.state_dict())  # strict: the same keys as the deterministic baseline
    return det.eval()


def test_samples_differ_and_dropout_active_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = method(rate=0.1).build().eval()
    x = torch.randn(B, 3, 8, 8)
    out = model.with_samples(4)(x)
    assert out.shape == (4, B, K)
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(out[i], out[j])
    det = deterministic_with_weights_of(model)
    assert not torch.allclose(model(x)[0], det(x)[0])
    assert any(isinstance(m, AlwaysDropout) for m in model.modules())


def test_rate_zero_equals_deterministic_model() -> None:
    torch.manual_seed(0)
    model = method(rate=0.0).build()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(B, 3, 8, 8)
    det = deterministic_with_weights_of(model)
    out = model.with_samples(5)(x)
    for k in range(5):
        torch.testing.assert_close(out[k], det(x)[0])


def test_evaluation_is_reproducible_and_ignores_global_rng() -> None:
    torch.manual_seed(0)
    meth = method(rate=0.1)
    model = meth.build()
    net = meth.eval_variants(model)[1][1]
    x = torch.randn(B, 3, 8, 8)
    net.eval()
    torch.manual_seed(1)
    first = net(x)
    again = net(x)  # the stream goes on: new masks
    assert not torch.allclose(first, again)
    net.eval()  # a new evaluation restarts the stream
    torch.manual_seed(2)
    torch.testing.assert_close(net(x), first, rtol=0, atol=0)
    # another seed gives other masks
    other = method(rate=0.1, eval_seed=7).build()
    other.load_state_dict(model.state_dict())
    other_net = other.with_samples(30).eval()
    assert not torch.allclose(other_net(x), first)


def test_training_uses_global_rng_one_sample() -> None:
    meth = method(rate=0.1)
    model = meth.build().train()
    x, y = torch.randn(B, 3, 8, 8), torch.tensor([0, 1, 2])
    inputs, targets = meth.training_batch(x, y, torch.Generator())
    assert targets.shape == (1, B)
    torch.manual_seed(3)
    a = model(inputs)
    torch.manual_seed(3)
    b = model(inputs)
    assert a.shape == (1, B, K)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(4)
    assert not torch.allclose(model(inputs), a)


def test_eval_variants_rows_and_passes() -> None:
    meth = method()
    model = meth.build()
    variants = meth.eval_variants(model)
    assert [(v.label, v.forward_passes, v.members) for v in variants] == [("K=1", 1, 1), ("K=30", 30, 30)]
    assert meth.variant() == "K=1" and meth.forward_passes() == 1 and meth.members == 1
    x = torch.randn(B, 3, 8, 8)
    for _, net, passes, _members in variants:
        net.eval()
        assert net(x).shape == (passes, B, K)
        assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}


def test_chunked_samples_shape_and_values() -> None:
    torch.manual_seed(0)
    model = method(rate=0.0).build().eval()
    x = torch.randn(B, 3, 8, 8)
    chunked = MCDropoutNet(model.net, model.rng, samples=5, max_rows=2 * B)
    torch.testing.assert_close(chunked(x), model.with_samples(5)(x))


def test_filterwise_drops_whole_channels() -> None:
    layer = AlwaysDropout(0.5, DropoutRNG(0), filterwise=True).eval()
    out = layer(torch.ones(4, 6, 3, 3))
    flat = out.flatten(2)
    assert ((flat == 0).all(-1) | (flat == 2).all(-1)).all()
    assert (flat == 0).any() and (flat == 2).any()
    elementwise = AlwaysDropout(0.5, DropoutRNG(0)).eval()(torch.ones(4, 6, 3, 3)).flatten(2)
    assert not ((elementwise == 0).all(-1) | (elementwise == 2).all(-1)).all()


def test_bad_options_fail_loudly() -> None:
    with pytest.raises(ValueError, match="members=1"):
        method(members=4)
    with pytest.raises(ValueError, match="rate"):
        method(rate=1.0)
    with pytest.raises(ValueError, match="samples"):
        method(samples=[])
    with pytest.raises(ValueError, match="valid options"):
        method(samples_=[1])


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_mask_drops_at_the_rate_in_every_lane_and_is_unbiased(rate: float) -> None:
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    mask, scale = dropout_mask((n,), None, rate, gen, torch.float32, torch.device("cpu"))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert effective_rate(rate) == pytest.approx(rate, abs=2**-16)
    tol = 4 * (rate * (1 - rate) / (n / 4)) ** 0.5  # 4 standard errors per lane
    # each 64-bit random word feeds 4 elements: every lane (the sign-carrying one too) must drop at the rate
    for lane in range(4):
        assert (mask.view(-1, 4)[:, lane] == 0).float().mean().item() == pytest.approx(rate, abs=tol)
    assert scale * (1 - effective_rate(rate)) == pytest.approx(1.0, abs=1e-12)  # E[mask * scale] = 1


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_the_compiled_steps_mask_drops_at_the_same_rate_and_scale(rate: float) -> None:
    torch.manual_seed(0)
    n = 400_000
    mask, scale = graph_dropout_mask((n,), rate, torch.float32, torch.device("cpu"))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    tol = 4 * (rate * (1 - rate) / n) ** 0.5
    assert (mask == 0).float().mean().item() == pytest.approx(effective_rate(rate), abs=tol)
    assert scale == dropout_mask((4,), None, rate, None, torch.float32, torch.device("cpu"))[1]


@pytest.mark.parametrize("filterwise", [False, True])
def test_a_compiled_training_step_keeps_dropout_in_one_graph(filterwise: bool) -> None:
    """torch.compile traces the training-mode dropout without a graph break (eager's ``random_`` on a
    reinterpreted buffer broke the graph at every site) and the traced masks drop at the rate, whole
    channels with ``filterwise``; evaluation (not compiled) keeps its own reproducible stream."""
    import torch._dynamo

    model = method(rate=0.5, filterwise=filterwise).build().train()
    x = torch.randn(16, 3, 8, 8)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    layer = AlwaysDropout(0.5, DropoutRNG(0), filterwise=filterwise).train()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break is an error
    torch.manual_seed(1)
    out = compiled(torch.ones(64, 8, 4, 4))
    scale = 1 / (1 - effective_rate(0.5))
    kept = out != 0
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], scale))
    assert (out == 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    if filterwise:
        flat = out.flatten(2)
        assert ((flat == 0).all(-1) | (flat != 0).all(-1)).all()
    torch.manual_seed(1)
    torch.testing.assert_close(compiled(torch.ones(64, 8, 4, 4)), out)  # the global seed replays it
    layer.eval()
    a = layer(torch.ones(4, 8, 4, 4))
    layer.eval()
    torch.testing.assert_close(layer(torch.ones(4, 8, 4, 4)), a)


def test_mask_follows_the_input_layout_and_generator() -> None:
    x = torch.randn(8, 5, 6, 6).contiguous(memory_format=torch.channels_last)
    layer = AlwaysDropout(0.3, DropoutRNG(3)).eval()
    a = layer(x)
    assert a.is_contiguous(memory_format=torch.channels_last)
    layer.eval()  # re-entering evaluation mode restarts the stream
    torch.testing.assert_close(layer(x), a)
    kept = a != 0
    torch.testing.assert_close(a[kept], x[kept] / (1 - effective_rate(0.3)))
    # a non-dense input gets a contiguous mask of its shape
    sliced = torch.randn(8, 10, 6, 6)[:, ::2]
    assert layer(sliced).shape == sliced.shape


def test_members_of_a_vmapped_stacked_ensemble_draw_their_own_masks() -> None:
    import copy

    from baselines.deep_ensemble import StackedEnsemble

    net = method(rate=0.5).build()
    stacked = StackedEnsemble([net, copy.deepcopy(net)]).eval()  # identical weights: only the masks differ
    x = torch.randn(B, 3, 8, 8)
    with torch.no_grad():
        out = stacked(x)
    assert out.shape == (2, B, K) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])

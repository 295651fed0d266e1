"""Attention layers, LocalAwarenessBlock and DropPath against dense re-statements written here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import stattn
import stattn.ops
from stattn.nn import (
    DropPath,
    GlobalAttention,
    GroupedSpatialAttention,
    LocalAwarenessBlock,
    TemporalAttention,
)
from stattn.skeletons import COCO17, POSETRACK

from .helpers import randomize

GROUPS5 = ((0, 3), (1,), (2, 4))


def _groups_for(n):
    return {5: GROUPS5, 17: POSETRACK}[n]


def dense_attention(layer, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Masked softmax attention over all T = prod(x.shape[1:-1]) tokens of a sample, layer's weights."""
    shape, C, H = x.shape, layer.dim, layer.num_heads
    D = C // H
    t = x.reshape(shape[0], -1, C)
    qkv = F.linear(t, layer.qkv.weight, layer.qkv.bias).reshape(t.shape[0], t.shape[1], 3, H, D)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    s = torch.einsum("bihd,bjhd->bhij", q, k) * D**-0.5
    s = s.masked_fill(~allowed, float("-inf"))
    o = torch.einsum("bhij,bjhd->bihd", s.softmax(-1), v).reshape(t.shape)
    return F.linear(o, layer.proj.weight, layer.proj.bias).reshape(shape)


def temporal_allowed(frames, tokens, window=None, causal=False):
    f = torch.arange(frames).repeat_interleave(tokens)
    n = torch.arange(tokens).repeat(frames)
    ok = n[:, None] == n[None, :]
    if window is not None:
        ok &= (f[:, None] - f[None, :]).abs() <= window
    if causal:
        ok &= f[:, None] >= f[None, :]
    return ok


def grouped_allowed(frames, groups, tokens):
    group_of = torch.empty(tokens, dtype=torch.long)
    for i, g in enumerate(groups.groups if hasattr(groups, "groups") else groups):
        group_of[list(g)] = i
    f = torch.arange(frames).repeat_interleave(tokens)
    g = group_of.repeat(frames)
    return (f[:, None] == f[None, :]) & (g[:, None] == g[None, :])


SHAPES = [  # B, F, N, H, C
    (2, 3, 17, 8, 32),
    (1, 1, 5, 1, 8),
    (2, 2, 5, 2, 8),
    (1, 7, 5, 8, 64),
    (3, 7, 17, 2, 32),
]


@pytest.mark.parametrize("B,Fr,N,H,C", SHAPES)
@pytest.mark.parametrize("window,causal", [(None, False), (1, False), (None, True), (0, True)])
def test_temporal_attention_matches_dense(B, Fr, N, H, C, window, causal):
    layer = randomize(TemporalAttention(C, H, window=window, causal=causal).double())
    x = torch.randn(B, Fr, N, C, dtype=torch.float64)
    ref = dense_attention(layer, x, temporal_allowed(Fr, N, window, causal))
    out = layer(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("B,Fr,N,H,C", SHAPES)
def test_grouped_attention_matches_dense(B, Fr, N, H, C):
    groups = _groups_for(N)
    layer = randomize(GroupedSpatialAttention(C, groups, H).double())
    x = torch.randn(B, Fr, N, C, dtype=torch.float64)
    tight = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(x), dense_attention(layer, x, grouped_allowed(Fr, groups, N)), **tight)
    x3 = x[:, 0]  # one frame, [B, N, C]
    torch.testing.assert_close(layer(x3), dense_attention(layer, x3, grouped_allowed(1, groups, N)), **tight)


def test_grouped_attention_unequal_groups_coco():
    layer = randomize(GroupedSpatialAttention(16, COCO17, num_heads=2).double())
    x = torch.randn(2, 17, 16, dtype=torch.float64)
    ref = dense_attention(layer, x, grouped_allowed(1, COCO17, 17))
    torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(2, 3, 5, 16), (2, 7, 16)])
def test_global_attention_matches_dense(shape):
    layer = randomize(GlobalAttention(16, num_heads=2).double())
    x = torch.randn(*shape, dtype=torch.float64)
    T = x[0, ..., 0].numel()
    ref = dense_attention(layer, x, torch.ones(T, T, dtype=torch.bool))
    torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["temporal", "grouped", "global"])
def test_block_shapes_and_dtypes(kind, dtype):
    groups = POSETRACK if kind == "grouped" else None
    blk = LocalAwarenessBlock(32, kind, num_heads=8, groups=groups).to(dtype)
    x = torch.randn(2, 3, 17, 32, dtype=dtype)
    out = blk(x)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out.float()).all()
    assert not torch.equal(out, x)


@pytest.mark.parametrize("kind", ["temporal", "grouped"])
def test_block_matches_prenorm_formula(kind):
    groups = GROUPS5 if kind == "grouped" else None
    blk = randomize(LocalAwarenessBlock(8, kind, num_heads=2, mlp_ratio=1.5, drop_path=0.5, groups=groups).double())
    blk.eval()  # drop path is the identity in eval
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    allowed = temporal_allowed(3, 5) if kind == "temporal" else grouped_allowed(3, GROUPS5, 5)
    h = x + dense_attention(blk.attn, F.layer_norm(x, (8,), blk.norm1.weight, blk.norm1.bias, 1e-6), allowed)
    m = F.layer_norm(h, (8,), blk.norm2.weight, blk.norm2.bias, 1e-6)
    m = F.linear(F.gelu(F.linear(m, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight, blk.mlp.fc2.bias)
    assert blk.mlp.fc1.out_features == 12
    torch.testing.assert_close(blk(x), h + m, rtol=1e-10, atol=1e-10)


def test_block_accepts_a_module():
    attn = GlobalAttention(8, num_heads=2)
    blk = LocalAwarenessBlock(8, attn, num_heads=2)
    assert blk.attn is attn
    assert blk(torch.randn(1, 2, 5, 8)).shape == (1, 2, 5, 8)


def _capture_qkv_output(layer):
    seen = {}
    layer.qkv.register_forward_hook(lambda mod, inp, out: seen.__setitem__("qkv", out))
    return seen


@pytest.mark.parametrize("kind", ["temporal", "grouped", "grouped3d"])
def test_qkv_views_are_not_copied(monkeypatch, kind):
    name = "temporal_attention" if kind == "temporal" else "grouped_attention"
    original, received = getattr(stattn.ops, name), {}

    def spy(q, k, v, *args, **kwargs):
        received.update(q=q, k=k, v=v)
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(stattn.ops, name, spy)
    H, D = 2, 4
    C = H * D
    if kind == "temporal":
        layer, x = TemporalAttention(C, H), torch.randn(2, 3, 5, C)
    else:
        layer = GroupedSpatialAttention(C, GROUPS5, H)
        x = torch.randn(2, 3, 5, C) if kind == "grouped" else torch.randn(2, 5, C)
    seen = _capture_qkv_output(layer)
    layer(x)
    qkv = seen["qkv"]
    assert set(received) == {"q", "k", "v"}
    base = qkv.untyped_storage().data_ptr()
    for i, name in enumerate("qkv"):
        t = received[name]
        assert t.untyped_storage().data_ptr() == base, f"{name} is a copy, not a view of the qkv output"
        assert t.data_ptr() == qkv.data_ptr() + i * C * qkv.element_size()
        assert not t.is_contiguous()
        assert t.stride()[-2:] == (D, 1) and t.stride(-3) == 3 * C
        assert t.shape == x.shape[:-1] + (H, D)


def test_drop_path_eval_and_zero_p_are_identity():
    x = torch.randn(8, 3, 5, 4)
    assert torch.equal(DropPath(0.7).eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_drop_path_train_per_sample():
    torch.manual_seed(0)
    p = 0.3
    x = torch.ones(4000, 3, 5)
    out = DropPath(p).train()(x)
    per_sample = out.reshape(4000, -1)
    # every sample is all-zero or all 1/(1-p): a per-sample decision, rescaled
    assert torch.equal(per_sample.amin(1), per_sample.amax(1))
    values = per_sample[:, 0]
    assert torch.allclose(values[values != 0], torch.full_like(values[values != 0], 1 / (1 - p)))
    dropped = (values == 0).double().mean().item()
    assert abs(dropped - p) < 4 * (p * (1 - p) / 4000) ** 0.5
    torch.manual_seed(0)
    assert torch.equal(DropPath(p).train()(x), out)  # seeded: reproducible


def test_drop_path_gradient_follows_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 4, requires_grad=True)
    out = DropPath(0.5).train()(x)
    out.sum().backward()
    kept = out.detach().abs().sum(1) != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 2.0))
    assert torch.equal(x.grad[~kept], torch.zeros_like(x.grad[~kept]))
    assert 0 < kept.sum() < 64


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: TemporalAttention(30, 8), "divisible"),
        (lambda: TemporalAttention(32, 8, window=-1), "window"),
        (lambda: LocalAwarenessBlock(32, "grouped"), "needs groups"),
        (lambda: LocalAwarenessBlock(32, "temporal", groups=POSETRACK), "groups"),
        (lambda: LocalAwarenessBlock(32, "grouped", groups=POSETRACK, window=1), "window"),
        (lambda: LocalAwarenessBlock(32, "spatial"), "attention must be"),
        (lambda: GroupedSpatialAttention(8, ((0, 1), (1, 2)), 2), "overlap"),
        (lambda: DropPath(1.0), r"\[0, 1\)"),
    ],
)
def test_bad_construction_raises(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "layer,x,match",
    [
        (TemporalAttention(8, 2), torch.randn(2, 5, 8), r"\[B, F, N, C\]"),
        (TemporalAttention(8, 2), torch.randn(2, 3, 5, 16), "channel dim is 16"),
        (GroupedSpatialAttention(8, GROUPS5, 2), torch.randn(2, 3, 6, 8), "6 tokens"),
        (GroupedSpatialAttention(8, GROUPS5, 2), torch.randn(5, 8), r"\[B, N, C\]"),
    ],
)
def test_bad_input_raises(layer, x, match):
    with pytest.raises(ValueError, match=match):
        layer(x)


def test_extra_repr():
    assert "window=1" in repr(TemporalAttention(8, 2, window=1))
    assert "group_sizes=[2, 1, 2]" in repr(GroupedSpatialAttention(8, GROUPS5, 2))
    assert "p=0.1" in repr(DropPath(0.1))


@pytest.mark.parametrize("kind", ["temporal", "grouped"])
def test_block_compiles_fullgraph(kind):
    torch._dynamo.reset()
    groups = GROUPS5 if kind == "grouped" else None
    blk = LocalAwarenessBlock(8, kind, num_heads=2, groups=groups).eval()
    x = torch.randn(2, 3, 5, 8, requires_grad=True)
    compiled = torch.compile(blk, fullgraph=True, backend="aot_eager")
    out_c = compiled(x)
    (g_c,) = torch.autograd.grad(out_c.square().sum(), x)
    out_e = blk(x)
    (g_e,) = torch.autograd.grad(out_e.square().sum(), x)
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(g_c, g_e)

"""JointCentricFeatureDecoder: normalized-linear (pooled) and per-joint-map modes."""
from __future__ import annotations

import math

import pytest
import torch

from stattn.nn import JointCentricFeatureDecoder, SpaceTimeDecoupling
from stattn.skeletons import POSETRACK


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def test_pooled_matches_hand_computation():
    jfd = _randomize(JointCentricFeatureDecoder(6, num_joints=5, dim=4).double())
    x = torch.randn(3, 6, dtype=torch.float64)
    out = jfd(x)
    assert out.shape == (3, 5, 4) and out.dtype == torch.float64
    W, b = jfd.weight.detach(), jfd.bias.detach()
    for s in range(3):
        norm = math.sqrt(sum(float(v) ** 2 for v in x[s]))
        for j in range(5):
            for c in range(4):
                row = j * 4 + c  # the output is split evenly: joint j owns rows j*dim .. (j+1)*dim - 1
                dot = sum(float(W[row, i]) * float(x[s, i]) for i in range(6))
                assert out[s, j, c].item() == pytest.approx(dot / norm + float(b[row]), rel=1e-12, abs=1e-12)


def test_pooled_averages_feature_maps():
    jfd = _randomize(JointCentricFeatureDecoder(8, 3, 4))
    x = torch.randn(2, 8, 5, 3)
    torch.testing.assert_close(jfd(x), jfd(x.mean(dim=(2, 3))))


@pytest.mark.parametrize("alpha", [1e-3, 0.5, 7.0, 1e4])
def test_pooled_is_scale_invariant(alpha):
    jfd = _randomize(JointCentricFeatureDecoder(16, 17, 8)).double()
    x = torch.randn(4, 16, dtype=torch.float64)
    torch.testing.assert_close(jfd(alpha * x), jfd(x), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(jfd(-x), jfd(x))  # but not sign invariant: only alpha > 0


def test_pooled_zero_input_gives_bias():
    jfd = _randomize(JointCentricFeatureDecoder(16, 3, 4))
    x = torch.zeros(2, 16, requires_grad=True)
    out = jfd(x)
    torch.testing.assert_close(out, jfd.bias.detach().view(3, 4).expand(2, 3, 4))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    clamped = JointCentricFeatureDecoder(16, 3, 4, eps=1e-6)
    clamped.load_state_dict(jfd.state_dict())
    tiny = clamped(torch.full((1, 16), 1e-30))  # eps > 0: bounded by the rows' norms, not blown up
    assert torch.isfinite(tiny).all()
    assert ((tiny - jfd.bias.view(3, 4)).abs() <= jfd.weight.norm(dim=1).view(3, 4) + 1e-6).all()


@pytest.mark.parametrize("scale", [1.0, 1e-6, 1e-9, 1e-15])
def test_pooled_equals_the_official_normalized_linear_for_tiny_norms(scale):
    # the official layer: y = (x @ W^T) / ||x||_2 + b, no clamp; tiny pooled features (an un-pretrained
    # backbone) must give the same tokens, i.e. the layer stays scale invariant
    jfd = _randomize(JointCentricFeatureDecoder(16, 3, 4))
    x = torch.rand(5, 16) * scale
    official = x.matmul(jfd.weight.t()) / torch.norm(x, dim=1, keepdim=True) + jfd.bias
    torch.testing.assert_close(jfd(x), official.view(5, 3, 4), rtol=0, atol=0)
    torch.testing.assert_close(jfd(x), jfd(x / scale), rtol=1e-5, atol=1e-6)


def test_pooled_init_and_gradients():
    jfd = JointCentricFeatureDecoder(2048, POSETRACK, 32)
    assert jfd.weight.shape == (17 * 32, 2048) and jfd.num_joints == 17
    bound = 0.01 * math.sqrt(6.0 / (2048 + 17 * 32))  # xavier-uniform, gain 0.01
    assert jfd.weight.abs().max() <= bound and jfd.weight.abs().max() > 0.9 * bound
    assert (jfd.bias == 0).all()
    out = jfd(torch.randn(6, 2048))  # frames folded in the batch: [B * F, C_in]
    assert out.shape == (6, 17, 32)
    out.square().sum().backward()
    assert jfd.weight.grad.abs().sum() > 0 and jfd.bias.grad.abs().sum() > 0


def test_map_mode_matches_hand_computation_and_param_count():
    c_in, n, dim, h, w = 6, 5, 4, 3, 2
    jfd = _randomize(JointCentricFeatureDecoder(c_in, n, dim, mode="map", feature_size=(h, w)).double())
    x = torch.randn(2, c_in, h, w, dtype=torch.float64)
    maps = torch.einsum("bchw,nc->bnhw", x, jfd.joint_maps.weight.view(n, c_in)) + jfd.joint_maps.bias.view(1, n, 1, 1)
    expected = maps.reshape(2, n, h * w) @ jfd.embed.weight.T + jfd.embed.bias
    out = jfd(x)
    assert out.shape == (2, n, dim)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert sum(p.numel() for p in jfd.parameters()) == c_in * n + n + h * w * dim + dim


def test_map_mode_hrnet_w48_param_count():
    jfd = JointCentricFeatureDecoder(48, 17, 32, mode="map", feature_size=(96, 72))
    count = sum(p.numel() for p in jfd.parameters())
    assert count == 48 * 17 + 17 + 96 * 72 * 32 + 32 == 222_049


def test_feeds_space_time_decoupling():
    B, Fr = 2, 3
    jfd = JointCentricFeatureDecoder(64, 17, 32)
    tokens = jfd(torch.randn(B * Fr, 64, 4, 3)).view(B, Fr, 17, 32)
    assert SpaceTimeDecoupling(32, num_frames=Fr)(tokens).shape == (B, 17, 32)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_channels=8, mode="map"), "feature_size"),
        (dict(in_channels=8, feature_size=(2, 2)), "only used with mode='map'"),
        (dict(in_channels=8, mode="heatmap"), "mode must be"),
        (dict(in_channels=0), "in_channels"),
        (dict(in_channels=8, dim=-1), "dim"),
        (dict(in_channels=8, eps=-1.0), "eps"),
    ],
)
def test_bad_construction_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JointCentricFeatureDecoder(**kwargs)


@pytest.mark.parametrize(
    "mode,shape,match",
    [
        ("pooled", (2, 7), "7 channels"),
        ("pooled", (2, 8, 3), r"\[B, C_in\]"),
        ("map", (2, 8), r"\[B, C_in, h, w\]"),
        ("map", (2, 8, 4, 4), r"feature map is \(4, 4\)"),
    ],
)
def test_bad_input_raises(mode, shape, match):
    jfd = JointCentricFeatureDecoder(8, 5, 4, mode=mode, feature_size=(3, 2) if mode == "map" else None)
    with pytest.raises(ValueError, match=match):
        jfd(torch.randn(*shape))


def test_extra_repr():
    jfd = JointCentricFeatureDecoder(8, 5, 4, mode="map", feature_size=(3, 2))
    assert "mode='map', feature_size=(3, 2)" in repr(jfd)


@pytest.mark.parametrize("mode", ["pooled", "map"])
def test_compile_fullgraph_matches_eager(mode):
    torch._dynamo.reset()
    jfd = _randomize(JointCentricFeatureDecoder(8, 5, 4, mode=mode, feature_size=(3, 2) if mode == "map" else None))
    x = torch.randn(4, 8, 3, 2)
    compiled = torch.compile(jfd, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), jfd(x))

"""SpaceTimeDecoupling against an independent re-statement of the official DSTA computation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from stattn.nn import SpaceTimeDecoupling
from stattn.skeletons import COCO17, POSETRACK

from .helpers import randomize

# Official DSTA internals (docs/official_code.md §2): internal token t holds COCO slot OFFICIAL_TOKENS[t];
# output slot s takes internal token JOINT_ORDOR[s]; slots 3, 4 are never used.
OFFICIAL_TOKENS = [2, 0, 1, 5, 7, 9, 6, 8, 10, 11, 13, 15, 12, 14, 16, 3, 4]
JOINT_ORDOR = [1, 2, 0, 0, 0, 3, 6, 4, 7, 5, 8, 9, 12, 10, 13, 11, 14]
USED_SLOTS = [0, 1, 2] + list(range(5, 17))
GROUPS5 = ((0, 3), (1,), (2, 4))


def official_block(x: torch.Tensor, blk) -> torch.Tensor:
    """timm-style pre-norm ViT block on `[batch, seq, C]`, written out; weights taken from ``blk``."""
    b, s, c = x.shape
    heads = blk.attn.num_heads
    hd = c // heads
    h = F.layer_norm(x, (c,), blk.norm1.weight, blk.norm1.bias, eps=1e-6)
    qkv = F.linear(h, blk.attn.qkv.weight, blk.attn.qkv.bias).reshape(b, s, 3, heads, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # [b, heads, s, hd]
    attn = (q @ k.transpose(-2, -1)) * hd**-0.5
    o = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, s, c)
    x = x + F.linear(o, blk.attn.proj.weight, blk.attn.proj.bias)
    h = F.layer_norm(x, (c,), blk.norm2.weight, blk.norm2.bias, eps=1e-6)
    h = F.linear(F.gelu(F.linear(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight, blk.mlp.fc2.bias)
    return x + h


def official_std(x: torch.Tensor, std: SpaceTimeDecoupling, key: int):
    """Official DSTA STD on COCO-slot tokens `[B, F, 17, C]`; returns (weighted, TD, SD) in slot order."""
    c = x.shape[-1]
    frames = rearrange(x[:, :, OFFICIAL_TOKENS], "b f p c -> f b p c")  # official regroup: F x B x 17 x C
    key_tokens = frames[key]
    # SD: key frame, tokens 0..14 as 5 groups of 3, spatial PE per position; tokens 15, 16 bypass
    sd = rearrange(key_tokens[:, :15], "b (g n) c -> (b g) n c", g=5) + std.spatial_pos[None]
    for blk in std.spatial_blocks:
        sd = official_block(sd, blk)
    sd = F.layer_norm(sd, (c,), std.spatial_norm.weight, std.spatial_norm.bias, eps=1e-6)
    sd = torch.cat([rearrange(sd, "(b g) n c -> b (g n) c", g=5), key_tokens[:, 15:]], dim=1)
    # TD: every token's trajectory over all frames, temporal PE per frame; keep the key frame
    td = rearrange(frames, "f b p c -> (b p) f c") + std.temporal_pos[None]
    for blk in std.temporal_blocks:
        td = official_block(td, blk)
    td = F.layer_norm(td, (c,), std.temporal_norm.weight, std.temporal_norm.bias, eps=1e-6)
    td = rearrange(td[:, key], "(b p) c -> b p c", p=17)
    out = None
    if hasattr(std, "aggregate"):
        stacked = torch.stack([td, sd], dim=1)  # B x 2 x 17 x C: channel 0 = TD, 1 = SD
        out = F.conv2d(stacked, std.aggregate.weight, std.aggregate.bias).squeeze(1)[:, JOINT_ORDOR]
    return out, td[:, JOINT_ORDOR], sd[:, JOINT_ORDOR]


@pytest.mark.parametrize("frames,key", [(3, 1), (5, 2), (3, 0), (3, -1), (5, -2)])
def test_decoupled_weighted_matches_official(frames, key):
    torch.manual_seed(0)
    std = SpaceTimeDecoupling(32, POSETRACK, num_frames=frames, key_frame=key if key != frames // 2 else None)
    randomize(std.double()).eval()
    assert std.key_frame == key % frames
    x = torch.randn(3, frames, 17, 32, dtype=torch.float64)
    ref, _, _ = official_std(x, std, key)
    out = std(x)
    assert out.shape == (3, 17, 32)
    torch.testing.assert_close(out[:, USED_SLOTS], ref[:, USED_SLOTS], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["decoupled", "temporal", "spatial"])
def test_concat_and_single_streams_match_official(mode):
    std = SpaceTimeDecoupling(32, POSETRACK, num_frames=5, mode=mode, aggregation="concat")
    randomize(std.double(), seed=3).eval()
    x = torch.randn(2, 5, 17, 32, dtype=torch.float64)
    if mode != "decoupled":  # the re-statement needs both stacks: borrow the missing one
        other = randomize(SpaceTimeDecoupling(32, num_frames=5).double(), seed=4)
        for stream in ("temporal", "spatial"):
            for name in (f"{stream}_pos", f"{stream}_blocks", f"{stream}_norm"):
                if not hasattr(std, name):
                    setattr(std, name, getattr(other, name))
    _, td, sd = official_std(x, std, 2)
    expected = {"decoupled": torch.cat([td, sd], -1), "temporal": td, "spatial": sd}[mode]
    out = std(x)
    torch.testing.assert_close(out[:, USED_SLOTS], expected[:, USED_SLOTS], rtol=1e-10, atol=1e-10)


def test_key_frame_selection_spatial_reads_only_key():
    std = randomize(SpaceTimeDecoupling(8, GROUPS5, num_frames=4, key_frame=-1, mode="spatial", num_heads=2)).eval()
    x = torch.randn(2, 4, 5, 8)
    y = x.clone()
    y[:, :3] = torch.randn(2, 3, 5, 8)  # change every frame but the key (last) one
    torch.testing.assert_close(std(x), std(y))
    y[:, 3] += torch.randn(2, 5, 8)  # (a constant shift would vanish in the LayerNorms)
    assert not torch.allclose(std(x), std(y))
    # the key frame is the last one: SD of the last frame, recomputed by hand on a 1-frame module
    one = SpaceTimeDecoupling(8, GROUPS5, num_frames=1, mode="spatial", num_heads=2).eval()
    one.load_state_dict(std.state_dict())
    torch.testing.assert_close(one(x[:, 3:]), std(x))


def test_key_frame_selection_temporal_without_mixing():
    # all blocks switched off (zero residual branches): TD is LayerNorm(x[key] + pos[key])
    std = SpaceTimeDecoupling(8, GROUPS5, num_frames=3, key_frame=0, mode="temporal", num_heads=2).eval()
    with torch.no_grad():
        for blk in std.temporal_blocks:
            for p in (blk.attn.proj.weight, blk.attn.proj.bias, blk.mlp.fc2.weight, blk.mlp.fc2.bias):
                p.zero_()
        std.temporal_pos.copy_(torch.randn(3, 8))
    x = torch.randn(2, 3, 5, 8)
    expected = F.layer_norm(x[:, 0] + std.temporal_pos[0], (8,), eps=1e-6)
    torch.testing.assert_close(std(x), expected)
    assert not torch.allclose(std(x), F.layer_norm(x[:, 1] + std.temporal_pos[1], (8,), eps=1e-6))


MODES = ["decoupled", "coupled", "temporal", "spatial"]
STACK_PREFIX = {"temporal": ("temporal_",), "spatial": ("spatial_",), "coupled": ("pos", "blocks", "norm")}


@pytest.mark.parametrize("aggregation", ["weighted", "concat"])
@pytest.mark.parametrize("mode", MODES)
def test_modes_run_and_every_parameter_gets_gradient(mode, aggregation):
    torch.manual_seed(0)
    std = SpaceTimeDecoupling(16, POSETRACK, num_frames=3, mode=mode, aggregation=aggregation, num_heads=2, depth=2)
    randomize(std)
    expected_dim = 32 if (mode == "decoupled" and aggregation == "concat") else 16
    assert std.out_dim == expected_dim
    x = torch.randn(2, 3, 17, 16, requires_grad=True)
    out = std(x)
    assert out.shape == (2, 17, expected_dim)
    (out * torch.randn_like(out)).sum().backward()
    names = [n for n, _ in std.named_parameters()]
    for name, p in std.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    built = {"temporal_": mode in ("decoupled", "temporal"), "spatial_": mode in ("decoupled", "spatial"),
             "blocks.": mode == "coupled", "aggregate.": mode == "decoupled" and aggregation == "weighted"}  # fmt: skip
    for prefix, should_exist in built.items():
        assert any(n.startswith(prefix) for n in names) == should_exist, (prefix, names)


def test_parameter_counts_and_drop_path_schedule():
    weighted = SpaceTimeDecoupling()
    concat = SpaceTimeDecoupling(aggregation="concat")
    block = 2 * 64 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32)
    stack = 4 * block + 3 * 32 + 2 * 32  # blocks + position embeddings (3 x 32) + final LayerNorm
    assert sum(p.numel() for p in concat.parameters()) == 2 * stack == 68672
    assert sum(p.numel() for p in weighted.parameters()) == 2 * stack + 3
    rates = [blk.drop_path.p for blk in weighted.temporal_blocks]
    assert rates == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])
    assert [blk.drop_path.p for blk in weighted.spatial_blocks] == rates
    assert "spatial_index" not in weighted.state_dict()
    assert weighted.out_dim == 32 and concat.out_dim == 64
    assert weighted.spatial_pos.shape == (3, 32) and weighted.temporal_pos.shape == (3, 32)
    assert (weighted.spatial_pos == 0).all() and (weighted.temporal_pos == 0).all()


@pytest.mark.parametrize("frames", [1, 2, 7])
@pytest.mark.parametrize("dim,heads", [(8, 1), (8, 2), (64, 8)])
def test_odd_shapes(frames, dim, heads):
    std = SpaceTimeDecoupling(dim, GROUPS5, num_frames=frames, num_heads=heads, depth=1, aggregation="concat")
    out = std(torch.randn(2, frames, 5, dim))
    assert out.shape == (2, 5, 2 * dim) and torch.isfinite(out).all()
    assert std.spatial_pos.shape == (2, dim) and std.temporal_pos.shape == (frames, dim)


def test_unequal_groups_position_embedding():
    std = SpaceTimeDecoupling(16, COCO17, num_frames=2, num_heads=2, depth=1)
    assert std.spatial_pos.shape == (5, 16)
    assert std.spatial_index.tolist() == COCO17.position_in_group().tolist()
    assert std(torch.randn(1, 2, 17, 16)).shape == (1, 17, 16)


def test_float32_and_train_mode_drop_path():
    std = SpaceTimeDecoupling(16, num_frames=3, num_heads=4, drop_path=0.5).train()
    x = torch.randn(64, 3, 17, 16)
    torch.manual_seed(0)
    a = std(x)
    torch.manual_seed(1)
    b = std(x)
    assert a.dtype == torch.float32 and not torch.allclose(a, b)  # stochastic depth is active
    std.eval()
    torch.testing.assert_close(std(x), std(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mode="global"), "mode must be"),
        (dict(aggregation="sum"), "aggregation must be"),
        (dict(num_frames=3, key_frame=3), "key_frame 3 is out of range"),
        (dict(num_frames=3, key_frame=-4), "out of range"),
        (dict(num_frames=0), "num_frames"),
        (dict(skeleton=((0, 1), (1, 2))), "overlap"),
    ],
)
def test_bad_construction_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpaceTimeDecoupling(**kwargs)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((2, 5, 17, 32), "5 frames"),
        ((2, 3, 15, 32), "15 joints"),
        ((2, 3, 17, 16), "16 channels"),
        ((3, 17, 32), r"\[B, F, N, C\]"),
    ],
)
def test_bad_input_raises(shape, match):
    with pytest.raises(ValueError, match=match):
        SpaceTimeDecoupling(num_frames=3)(torch.randn(*shape))


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    std = randomize(SpaceTimeDecoupling(16, POSETRACK, num_frames=3, num_heads=4, depth=2)).eval()
    x = torch.randn(2, 3, 17, 16)
    compiled = torch.compile(std, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), std(x))

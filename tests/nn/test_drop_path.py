"""stattn.nn.drop: stochastic depth per sample or per attention sequence (the official DSTA draws)."""
import pytest
import torch
from stattn.nn import DropPath, LocalAwarenessBlock, drop_path
from stattn.skeletons import POSETRACK
from torch import nn


def _kept(y: torch.Tensor) -> torch.Tensor:
    """1 where the branch was kept (scaled by 1 / (1 - p) = 2), 0 where dropped, for an all-ones input."""
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    return y / 2


def test_sample_granularity_drops_whole_samples():
    torch.manual_seed(0)
    kept = _kept(DropPath(0.5).train()(torch.ones(64, 3, 17, 8)))
    assert (kept == kept[:, :1, :1, :1]).all()  # one draw per sample
    assert 0 < kept[:, 0, 0, 0].sum() < 64


def test_sequence_granularity_draws_per_joint_sequence():
    torch.manual_seed(0)
    kept = _kept(DropPath(0.5, "sequence").train()(torch.ones(64, 3, 17, 8)))
    assert (kept == kept[:, :1, :, :1]).all()  # shared by the frames and channels of one (sample, joint)
    per_joint = kept[:, 0, :, 0]
    assert ((per_joint.sum(1) > 0) & (per_joint.sum(1) < 17)).any()  # joints of one sample differ


def test_sequence_granularity_with_groups_draws_per_group():
    torch.manual_seed(0)
    layer = DropPath(0.5, "sequence", groups=POSETRACK.groups).train()
    kept = _kept(layer(torch.ones(64, 17, 8)))[..., 0]  # [B, N]
    for g in POSETRACK.groups:
        assert (kept[:, list(g)] == kept[:, g[0] : g[0] + 1]).all()  # one draw per (sample, group)
    assert (kept[:, 5] != kept[:, 6]).any()  # left and right arm are drawn independently


@pytest.mark.parametrize("granularity,groups", [("sample", None), ("sequence", None), ("sequence", POSETRACK.groups)])
def test_drop_rate_and_expectation(granularity, groups):
    torch.manual_seed(1)
    layer = DropPath(0.3, granularity, groups=groups).train()
    x = torch.randn(4000, 17, 4)
    y = layer(x)
    dropped = (y == 0).all(-1).float().mean().item()
    assert abs(dropped - 0.3) < 0.02
    torch.testing.assert_close(y.mean(0), x.mean(0), rtol=0, atol=0.1)
    assert torch.equal(layer.eval()(x), x)


def _folded_block(block: LocalAwarenessBlock, attention) -> LocalAwarenessBlock:
    """The same weights in a per-sample-drop block, to run on sequences folded into the batch."""
    ref = LocalAwarenessBlock(block.attn.dim, attention, num_heads=block.attn.num_heads, drop_path=block.drop_path.p,
                              groups=[[0, 1, 2]] if attention == "grouped" else None)  # fmt: skip
    ref.load_state_dict(block.state_dict())
    return ref.train()


def test_temporal_sequence_drops_equal_the_official_folding():
    # official TD: [(B * joints), frames, C] sequences through a per-sample DropPath; same random stream here
    torch.manual_seed(0)
    block = LocalAwarenessBlock(32, "temporal", drop_path=0.4, drop_path_granularity="sequence").train()
    ref = _folded_block(block, "temporal")
    x = torch.randn(5, 3, 17, 32)
    torch.manual_seed(7)
    y = block(x)
    torch.manual_seed(7)
    folded = x.permute(0, 2, 1, 3).reshape(5 * 17, 3, 1, 32)  # one joint per sample
    y_ref = ref(folded).reshape(5, 17, 3, 32).permute(0, 2, 1, 3)
    torch.testing.assert_close(y, y_ref)
    assert not torch.allclose(y, block.eval()(x))  # something was dropped


def test_grouped_sequence_drops_equal_the_official_folding():
    # official SD: [(B * groups), 3, C] sequences through a per-sample DropPath
    torch.manual_seed(0)
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    block = LocalAwarenessBlock(32, "grouped", groups=groups, drop_path=0.4, drop_path_granularity="sequence").train()
    ref = _folded_block(block, "grouped")
    x = torch.randn(6, 9, 32)
    torch.manual_seed(7)
    y = block(x)
    torch.manual_seed(7)
    y_ref = ref(x.reshape(6 * 3, 3, 32)).reshape(6, 9, 32)
    torch.testing.assert_close(y, y_ref)
    assert not torch.allclose(y, block.eval()(x))


def test_block_granularity_choices():
    assert LocalAwarenessBlock(8, "global", drop_path=0.1, drop_path_granularity="sequence").drop_path.granularity == "sample"
    with pytest.raises(ValueError, match="custom module"):
        LocalAwarenessBlock(8, nn.Identity(), drop_path=0.1, drop_path_granularity="sequence")
    with pytest.raises(ValueError, match="drop_path_granularity"):
        LocalAwarenessBlock(8, "temporal", drop_path_granularity="joint")
    with pytest.raises(ValueError, match="granularity"):
        DropPath(0.1, "joint")
    with pytest.raises(ValueError, match="group_of"):
        drop_path(torch.ones(2, 5, 4), 0.5, True, per_token=True, group_of=torch.zeros(4, dtype=torch.long))

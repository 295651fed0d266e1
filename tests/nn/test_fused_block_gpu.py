"""GPU tier of the whole-block kernel (skipped without CUDA): every supported variant runs and matches.

Run with ``pytest -m gpu tests/nn/test_fused_block_gpu.py``. Each variant of
``block_configs()`` (dtype, dim 32/64, heads 1-8, sequences of 1-16 members) is run through
``LocalAwarenessBlock(fused=True)`` against the unfused block in float64, then the whole STD at
DSTA's shapes up to B = 4096 clips, and the default policy (eval mode on CUDA uses the kernel).
"""
import copy

import pytest
import torch

from stattn.nn import LocalAwarenessBlock, SpaceTimeDecoupling
from stattn.ops import _dispatch
from stattn.skeletons import COCO17, POSETRACK
from stattn.testing import TOLERANCES, assert_close, relative_error

from .helpers import randomize

pytest.importorskip("triton")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(_dispatch.interpreter_enabled(), reason="TRITON_INTERPRET=1 would run on the CPU"),
]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _check(block, x, dtype):
    """Fused block in `dtype` vs the same weights unfused in float64 (and unfused in `dtype`)."""
    plain = copy.deepcopy(block).double()
    plain.fused = False
    fused = block.to(dtype).eval()
    truth = copy.deepcopy(fused).double()  # weights rounded to dtype, math in float64
    truth.fused = False
    unfused = copy.deepcopy(fused)
    unfused.fused = False
    xd = x.to(dtype)
    with torch.no_grad():
        assert fused.uses_fused(xd)
        out = fused(xd)
        ref = truth(xd.double())
        if dtype == torch.float32:
            assert_close(ref, out)
        else:
            assert relative_error(ref, out) <= 2 * relative_error(ref, unfused(xd)) + TOLERANCES[dtype]


def _variants():
    from stattn.ops.triton._block_launcher import block_configs

    return sorted({(dtype, dim, heads, cfg.BLOCK_M) for dtype, dim, heads, cfg in block_configs()})


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_variant_runs_and_matches(dtype):
    for dt, dim, heads, block_m in _variants():
        if dt != dtype:
            continue
        frames = block_m if block_m <= 2 else block_m - 1  # F = 1, 2, 3, 7, 15: partial member blocks
        blk = randomize(LocalAwarenessBlock(dim, "temporal", num_heads=heads, fused=True), seed=block_m).cuda()
        x = torch.randn(3, frames, 17, dim, device="cuda")
        _check(blk, x, DTYPES[dtype])
    for groups in (POSETRACK, COCO17):
        blk = randomize(LocalAwarenessBlock(32, "grouped", groups=groups, fused=True), seed=1).cuda()
        _check(blk, torch.randn(5, 3, 17, 32, device="cuda"), DTYPES[dtype])


@pytest.mark.parametrize("batch", [1, 256, 4096])
@pytest.mark.parametrize("frames", [3, 5])
def test_std_fused_matches_unfused_at_dsta_shapes(batch, frames):
    std = randomize(SpaceTimeDecoupling(32, POSETRACK, num_frames=frames, depth=4), seed=2).cuda().eval()
    plain = copy.deepcopy(std).double()
    for blk in plain.modules():
        if isinstance(blk, LocalAwarenessBlock):
            blk.fused = False
    x = torch.randn(batch, frames, 17, 32, device="cuda")
    assert std.temporal_blocks[0].uses_fused(x)  # default policy: CUDA + eval mode
    with torch.no_grad():
        assert_close(plain(x.double()), std(x))

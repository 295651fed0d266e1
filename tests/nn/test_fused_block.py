"""The whole-block Triton kernel (stattn.nn.fused) against the unfused LocalAwarenessBlock / STD.

Interpreter tier: runs on CPU under TRITON_INTERPRET=1 (set by conftest when there is no GPU), with
``fused=True`` forcing the kernel. Every comparison is against the unfused module with the same
(randomised) weights evaluated in float64, so the kernel is held to the fp32 tolerance of the ops.
"""
import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stattn
from stattn.nn import LocalAwarenessBlock, SpaceTimeDecoupling
from stattn.nn.fused import block_weights, fusion_reasons, op_meta
from stattn.ops import _dispatch
from stattn.skeletons import COCO17, POSETRACK
from stattn.testing import TOLERANCES, assert_close, relative_error

from .helpers import randomize

pytest.importorskip("triton")
pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.skipif(not _dispatch.interpreter_enabled(), reason="needs TRITON_INTERPRET=1 (conftest, no CUDA)"),
]

UNEQUAL = ((0, 4, 9), (1,), (2, 3, 5, 6, 7, 8, 10, 11, 12))  # 13 tokens; a 9-member group needs BLOCK_M = 16


def _pair(dim=32, kind="temporal", seed=0, **kw):
    """(fused block, the same block unfused in float64), eval mode."""
    fused = randomize(LocalAwarenessBlock(dim, kind, fused=True, **kw), seed).eval()
    plain = copy.deepcopy(fused).double()
    plain.fused = False
    return fused, plain


def _x(shape, seed=1, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


CASES = [  # (kind, x shape, block kwargs)
    ("temporal", (2, 3, 17, 32), {}),
    ("temporal", (1, 5, 17, 32), {"num_heads": 4, "mlp_ratio": 4.0}),
    ("temporal", (3, 1, 7, 32), {"num_heads": 1}),
    ("temporal", (2, 9, 5, 32), {"num_heads": 2, "window": 2}),
    ("temporal", (2, 4, 6, 32), {"causal": True, "window": 1}),
    ("temporal", (2, 3, 17, 64), {"num_heads": 8, "mlp_ratio": 2.0, "qkv_bias": False}),
    ("temporal", (2, 2, 3, 24), {"num_heads": 3, "mlp_ratio": 3.0}),  # C, D, hidden not powers of two
    ("grouped", (2, 3, 17, 32), {"groups": POSETRACK}),
    ("grouped", (3, 17, 32), {"groups": COCO17, "num_heads": 4}),
    ("grouped", (2, 2, 13, 32), {"groups": UNEQUAL, "mlp_ratio": 4.0}),
    ("grouped", (1, 17, 64), {"groups": POSETRACK, "num_heads": 2, "qkv_bias": False}),
]


@pytest.mark.parametrize("kind,shape,kw", CASES, ids=[f"{c[0]}-{'x'.join(map(str, c[1]))}-{i}" for i, c in enumerate(CASES)])
def test_fused_block_matches_unfused(kind, shape, kw):
    fused, plain = _pair(shape[-1], kind, **kw)
    x = _x(shape)
    assert fused.uses_fused(x)
    with torch.no_grad():
        out = fused(x)
        ref = plain(x.double())
    assert out.dtype == x.dtype and out.shape == x.shape
    assert_close(ref, out, name=f"fused {kind} block")


def test_fused_block_reads_strided_input():
    fused, plain = _pair(32, "temporal")
    x = _x((2, 17, 3, 32)).transpose(1, 2)  # [B, F, N, C] with non-contiguous strides
    with torch.no_grad():
        assert_close(plain(x.double()), fused(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["temporal", "grouped"])
def test_fused_block_half_precision(kind, dtype):
    """In fp16 / bf16 the kernel is at most as far from the float64 truth as the unfused layers are
    in the same dtype (times 2, plus the op tolerance for rounding at different places)."""
    kw = {"groups": POSETRACK} if kind == "grouped" else {}
    fused, plain = _pair(32, kind, **kw)
    half = copy.deepcopy(plain).to(dtype)
    fused = fused.to(dtype)
    # the truth uses the weights as rounded to `dtype`, so that only compute rounding is measured
    truth = copy.deepcopy(half).double()
    x = _x((2, 5, 17, 32), dtype=dtype)
    with torch.no_grad():
        ref = truth(x.double())
        err_fused = relative_error(ref, fused(x))
        err_unfused = relative_error(ref, half(x))
    assert err_fused <= 2 * err_unfused + TOLERANCES[dtype], (err_fused, err_unfused)


def test_gradients_through_the_fused_forward_match_unfused():
    """The kernel has no backward: autograd recomputes the unfused block, so gradients are exact."""
    fused = randomize(LocalAwarenessBlock(32, "grouped", groups=POSETRACK, fused=True), 3).eval()
    plain = copy.deepcopy(fused)
    plain.fused = False
    x = _x((2, 3, 17, 32)).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    g = _x((2, 3, 17, 32), seed=9)
    fused(x).backward(g)
    plain(x2).backward(g)
    assert_close(x2.grad, x.grad, name="dx")
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        assert_close(q.grad, p.grad, name=f"d{name}")


@pytest.mark.parametrize("mode,aggregation", [("decoupled", "weighted"), ("decoupled", "concat"), ("temporal", "weighted"),
                                              ("spatial", "weighted")])  # fmt: skip
def test_std_with_fused_blocks_matches_unfused(mode, aggregation):
    std = randomize(SpaceTimeDecoupling(32, POSETRACK, num_frames=5, mode=mode, aggregation=aggregation, depth=2,
                                        fused=True), 4).eval()  # fmt: skip
    plain = copy.deepcopy(std).double()
    for blk in plain.modules():
        if isinstance(blk, LocalAwarenessBlock):
            blk.fused = False
    x = _x((3, 5, 17, 32))
    with torch.no_grad():
        assert_close(plain(x.double()), std(x), name=f"STD {mode}/{aggregation}")


def test_default_policy_and_refusals():
    blk = LocalAwarenessBlock(32, "temporal").eval()
    x = _x((2, 3, 17, 32))
    assert not blk.uses_fused(x)  # default: CUDA in eval mode only
    assert not LocalAwarenessBlock(32, "temporal", fused=False).eval().uses_fused(x)

    with pytest.raises(ValueError, match="not temporal or grouped"):
        LocalAwarenessBlock(32, "global", fused=True)
    with pytest.raises(ValueError, match="mode='coupled'"):
        SpaceTimeDecoupling(32, POSETRACK, mode="coupled", fused=True)
    with pytest.raises(ValueError, match="fused must be"):
        LocalAwarenessBlock(32, "temporal", fused="yes")

    drop = LocalAwarenessBlock(32, "temporal", drop_path=0.1, fused=True)  # training mode
    with pytest.raises(ValueError, match="dropout / drop path"):
        drop(x)
    assert drop.eval().uses_fused(x)  # eval mode: drop path is the identity

    wide = LocalAwarenessBlock(32, "temporal", fused=True).double()
    assert any("dtype torch.float64" in r for r in fusion_reasons(wide, x.double()))
    with pytest.raises(ValueError, match="float64"):
        wide(x.double())
    with pytest.raises(ValueError, match="parameter"):
        LocalAwarenessBlock(32, "temporal", fused=True)(x.half())


def test_wrong_shapes_get_the_layers_own_errors():
    blk = LocalAwarenessBlock(32, "grouped", groups=POSETRACK, fused=True).eval()
    with pytest.raises(ValueError, match="tokens per frame"):
        blk(_x((2, 3, 16, 32)))
    bad = _x((2, 3, 17, 16))  # the unfused path's LayerNorm names the mismatch; fusion changes nothing
    with pytest.raises(RuntimeError, match="normalized_shape") as plain:
        LocalAwarenessBlock(32, "temporal", fused=False).eval()(bad)
    with pytest.raises(RuntimeError, match="normalized_shape") as fused:
        LocalAwarenessBlock(32, "temporal", fused=True).eval()(bad)
    assert str(fused.value) == str(plain.value)


_COMPILE = """
from stattn.ops.triton._block_launcher import block_config
from stattn.ops.triton._compile_check import compile_block_kernel
for dtype, members, dim, heads in [("fp32", 5, 32, 8), ("bf16", 3, 32, 8), ("fp16", 16, 64, 2), ("bf16", 4, 64, 8)]:
    cfg = block_config(members, dim, dim // heads, 2 * dim, dtype == "fp32")
    info = compile_block_kernel(dtype, cfg, heads, dim)
    assert info["registers"] > 0 and info["spill_bytes"] == 0, (dtype, members, dim, heads, info)
    print(dtype, members, dim, heads, info, "ok")
"""


def test_block_kernel_compiles_for_sm90_without_spills():
    """The interpreter enforces no GPU rules: build real sm_90a binaries of DSTA's variants and check
    ptxas reports no register spills (``python -m stattn.ops.triton._compile_check`` does all 120)."""
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("Triton's NVIDIA backend is not installed")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(stattn.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count(" ok") == 4


def test_fused_block_keeps_only_its_input_for_backward():
    """Like activation checkpointing: the recompute backward needs x and nothing else."""
    blk = randomize(LocalAwarenessBlock(32, "temporal", fused=True), 5).train()
    params = {p.data_ptr() for p in blk.parameters()}
    x = _x((2, 3, 17, 32)).requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        blk(x)
    kept = [t for t in saved if t.data_ptr() not in params]
    assert len(kept) == 1 and kept[0] is x
    unfused = []
    blk.fused = False
    with torch.autograd.graph.saved_tensors_hooks(lambda t: unfused.append(t) or t, lambda t: t):
        blk(x)
    assert sum(t.numel() for t in unfused if t.data_ptr() not in params) > 10 * x.numel()


def test_frozen_weights_get_no_gradient():
    blk = randomize(LocalAwarenessBlock(32, "temporal", fused=True), 6).eval()
    blk.norm1.requires_grad_(False)
    plain = copy.deepcopy(blk)
    plain.fused = False
    x = _x((2, 3, 17, 32))
    blk(x).sum().backward()
    plain(x).sum().backward()
    assert blk.norm1.weight.grad is None and blk.norm1.bias.grad is None
    assert_close(plain.mlp.fc1.weight.grad, blk.mlp.fc1.weight.grad, name="dfc1")


# ------------------------------------------------------------------ adversarial: non-finite tokens
ISOLATION = [  # (kind, x shape, block kwargs, the bad token): a tile holds several clips' sequences
    ("temporal", (3, 3, 5, 32), {}, (1, 1, 2)),
    ("temporal", (3, 4, 5, 32), {"causal": True, "window": 1, "num_heads": 4}, (1, 2, 0)),
    ("grouped", (3, 2, 17, 32), {"groups": POSETRACK}, (1, 0, 5)),
    ("grouped", (3, 13, 32), {"groups": UNEQUAL, "num_heads": 2}, (1, 4)),
]


@pytest.mark.parametrize("kind,shape,kw,bad", ISOLATION, ids=[f"{c[0]}-{i}" for i, c in enumerate(ISOLATION)])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_fused_block_keeps_a_bad_token_in_its_sequence(kind, shape, kw, bad, value):
    """The kernel's dense [R, R] tile spans several sequences (and clips): a NaN / Inf token reaches
    exactly the outputs the unfused block lets it reach (its own joint sequence or group), and every
    other output is bit-identical to a clean run."""
    fused, _ = _pair(shape[-1], kind, **kw)
    plain = copy.deepcopy(fused)
    plain.fused = False
    x = _x(shape)
    poisoned = x.clone()
    poisoned[bad] = value
    with torch.no_grad():
        clean, out, ref = fused(x), fused(poisoned), plain(poisoned)
    finite = torch.isfinite(ref)
    assert not finite.all() and finite[0].all() and finite[2].all()
    assert torch.equal(torch.isfinite(out), finite)
    assert torch.equal(out[finite], clean[finite])


def test_std_with_fused_blocks_keeps_a_bad_sample_to_itself():
    """One NaN token in one clip of a batch: every other clip's STD output is unchanged."""
    std = randomize(SpaceTimeDecoupling(32, POSETRACK, num_frames=3, depth=2, fused=True), 7).eval()
    x = _x((4, 3, 17, 32))
    poisoned = x.clone()
    poisoned[2, 1, 5, 3] = float("nan")
    with torch.no_grad():
        clean, out = std(x), std(poisoned)
    assert not torch.isfinite(out[2]).all()
    others = [0, 1, 3]
    assert torch.isfinite(out[others]).all() and torch.equal(out[others], clean[others])


# ---------------------------------------------------------- the block is a local_block op call
def _kernel_refused(monkeypatch):
    """Make the whole-block kernel raise, so a test can tell which implementation ran."""
    from stattn.ops import _dispatch as dispatch

    def kernel(*args, **kwargs):
        raise RuntimeError("the whole-block kernel ran")

    table = dispatch.BY_NAME["triton"].table
    monkeypatch.setitem(table, "local_block", (kernel, None))


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_backend_reference_is_honoured_on_the_fused_path(monkeypatch, how):
    """fused=True hands the block to the local_block op; backend= / STATTN_BACKEND choose its implementation."""
    kw = {"backend": "reference"} if how == "argument" else {}
    blk = randomize(LocalAwarenessBlock(32, "grouped", groups=POSETRACK, fused=True, **kw), 8).eval()
    x = _x((2, 3, 17, 32))
    with torch.no_grad():
        kernel_out = blk(x) if how == "environment" else None
    _kernel_refused(monkeypatch)
    if how == "environment":
        with pytest.raises(RuntimeError, match="whole-block kernel ran"):  # the default really is the kernel
            blk(x)
        monkeypatch.setenv("STATTN_BACKEND", "reference")
    calls = []
    op = stattn.ops.local_block
    monkeypatch.setattr(stattn.ops, "local_block", lambda *a, **kw: calls.append(kw["backend"]) or op(*a, **kw))
    assert not blk.uses_fused(x)  # the block is one op call, but not the kernel's
    with torch.no_grad():
        out = blk(x)
        want = stattn.ops.local_block_reference(x, block_weights(blk), **op_meta(blk))
    assert calls == ["reference"]  # handed to the op, with the backend asked for
    assert torch.equal(out, want)
    if kernel_out is not None:
        assert_close(want.double(), kernel_out)

"""Tier 3: the Triton kernels on a CUDA device (skipped without one).

Compiles and runs every listed kernel config in float32, float16 and bfloat16, checks forward and
backward against the float64 reference up to B = 4096 clips, and runs the ops under
``torch.compile(fullgraph=True)``. Run with ``pytest -m gpu tests/ops/test_triton_gpu.py``.
"""
import pytest
import torch

import stattn
from stattn.ops import _dispatch
from stattn.ops.reference import (
    grouped_attention_backward_reference,
    grouped_attention_reference,
    temporal_attention_backward_reference,
    temporal_attention_reference,
)
from stattn.testing import assert_close, make_inputs

pytest.importorskip("triton")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(_dispatch.interpreter_enabled(), reason="TRITON_INTERPRET=1 would run on the CPU"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CUDA = "cuda"


def _launchers():
    from stattn.ops.triton import _launchers

    return _launchers


def _flat(groups):
    return [i for g in groups for i in g], [len(g) for g in groups]


def _temporal(q, k, v, scale, window, causal, query_frames, seed=0):
    """Triton launchers vs the float64 reference, forward and backward; returns nothing, asserts."""
    from stattn.ops import triton as triton_ops

    o = triton_ops.temporal_attention_fwd(q, k, v, scale, window, causal, query_frames)
    qd, kd, vd = (t.double() for t in (q, k, v))
    assert_close(temporal_attention_reference(qd, kd, vd, scale, window, causal, query_frames), o)
    gen = torch.Generator(device=CUDA).manual_seed(seed)
    grad = torch.randn(o.shape, device=CUDA, generator=gen).to(o.dtype)
    got = triton_ops.temporal_attention_bwd(grad, q, k, v, scale, window, causal, query_frames)
    expected = temporal_attention_backward_reference(grad.double(), qd, kd, vd, scale, window, causal, query_frames)
    for name, e, g in zip("qkv", expected, got):
        assert_close(e, g, name=f"d{name}")


def _grouped(q, k, v, groups, scale, seed=0):
    from stattn.ops import triton as triton_ops

    index, sizes = _flat(groups)
    o = triton_ops.grouped_attention_fwd(q, k, v, index, sizes, scale)
    qd, kd, vd = (t.double() for t in (q, k, v))
    assert_close(grouped_attention_reference(qd, kd, vd, index, sizes, scale), o)
    gen = torch.Generator(device=CUDA).manual_seed(seed)
    grad = torch.randn(o.shape, device=CUDA, generator=gen).to(o.dtype)
    got = triton_ops.grouped_attention_bwd(grad, q, k, v, index, sizes, scale)
    expected = grouped_attention_backward_reference(grad.double(), qd, kd, vd, index, sizes, scale)
    for name, e, g in zip("qkv", expected, got):
        assert_close(e, g, name=f"d{name}")


def _listed_shapes():
    """(rows, head_dim) of every listed config (each is shared by the fwd and the bwd list)."""
    return sorted({(cfg.BLOCK_R, cfg.BLOCK_D) for _, cfg in _launchers().kernel_configs()})


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_listed_config_compiles_and_matches(dtype):
    """Each (BLOCK_R, BLOCK_D) of ``kernel_configs()``, forward and backward, temporal and grouped."""
    for rows, head_dim in _listed_shapes():
        heads = max(1, 32 // head_dim) + 1  # one full head block and a partial one
        q, k, v = make_inputs(3, rows, 5, heads, head_dim, dtype=dtype, device=CUDA, seed=rows + head_dim)
        _temporal(q, k, v, 0.5, None, False, None)
        tokens = rows + 3  # a group of `rows` tokens, a singleton and a pair
        q, k, v = make_inputs(2, 2, tokens, heads, head_dim, dtype=dtype, device=CUDA, seed=rows)
        _grouped(q, k, v, [list(range(rows)), [rows], [rows + 1, rows + 2]], 0.5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [1, 4, 8, 16, 32, 64, 128])
@pytest.mark.parametrize("frames", [1, 3, 5, 9, 64])
def test_shape_grid(frames, head_dim, dtype):
    heads = max(1, 32 // head_dim)
    q, k, v = make_inputs(4, frames, 17, heads, head_dim, dtype=dtype, device=CUDA, seed=frames * head_dim)
    _temporal(q, k, v, head_dim**-0.5, 1, True, None)
    _temporal(q, k, v, head_dim**-0.5, None, False, [frames - 1])
    _grouped(q, k, v, [list(g) for g in stattn.COCO17.groups], head_dim**-0.5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_batch_through_the_public_functionals(dtype):
    """B = 4096 clips of DSTA's shape, packed qkv views, autograd, automatic backend choice."""
    base = torch.randn(4096, 5, 17, 3, 8, 4, device=CUDA).to(dtype).requires_grad_()
    q, k, v = base.unbind(3)
    assert _dispatch.choose_backend("temporal_attention", q, None) == "triton"
    out = stattn.temporal_attention(q, k, v, window=2, causal=True)
    out = stattn.grouped_attention(out, k, v, stattn.POSETRACK)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, base, grad)[0]

    ref_base = base.detach().double().requires_grad_()
    rq, rk, rv = ref_base.unbind(3)
    ref = stattn.temporal_attention(rq, rk, rv, window=2, causal=True, backend="reference")
    ref = stattn.grouped_attention(ref, rk, rv, stattn.POSETRACK, backend="reference")
    expected = torch.autograd.grad(ref, ref_base, grad.double())[0]
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]  # two ops chained
    assert_close(ref, out, tol)
    assert_close(expected, got, tol, name="grad")


def test_stride_zero_gradient_and_poisoned_outputs(monkeypatch):
    launchers = _launchers()

    def nan_empty(shape, like):
        return torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)

    monkeypatch.setattr(launchers, "_new_empty", nan_empty)
    q, k, v = (t.detach().requires_grad_() for t in make_inputs(64, 5, 17, 8, 4, device=CUDA, packed=False))
    for op in (
        lambda q, k, v, b: stattn.temporal_attention(q, k, v, window=1, query_frames=[2], backend=b),
        lambda q, k, v, b: stattn.grouped_attention(q, k, v, stattn.COCO17, backend=b),
    ):
        got = torch.autograd.grad(op(q, k, v, "triton").sum(), (q, k, v))
        expected = torch.autograd.grad(op(q, k, v, "reference").sum(), (q, k, v))
        for name, e, g in zip("qkv", expected, got):
            assert_close(e, g, name=f"d{name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compile_fullgraph(dtype):
    def block(q, k, v):
        t = stattn.temporal_attention(q, k, v, window=1, causal=True)
        return stattn.grouped_attention(t, k, v, stattn.COCO17)

    base = torch.randn(256, 3, 17, 3, 8, 4, device=CUDA).to(dtype).requires_grad_()
    eager = block(*base.unbind(3))
    eager_grad = torch.autograd.grad(eager.float().square().sum(), base)[0]
    compiled_block = torch.compile(block, fullgraph=True)
    compiled = compiled_block(*base.unbind(3))
    compiled_grad = torch.autograd.grad(compiled.float().square().sum(), base)[0]
    assert_close(eager, compiled, 1e-6 if dtype == torch.float32 else None)
    assert_close(eager_grad, compiled_grad, 1e-6 if dtype == torch.float32 else None, name="grad")

"""Tier 2: the Triton kernels under ``TRITON_INTERPRET=1``, forward and backward against the reference.

The interpreter runs grid programs one after another (tens of ms each), so every case keeps B tiny
and relies on the kernels' many sequences per program. The cases form a covering set over frames
{1, 2, 3, 5, 7}, tokens {15, 17, 20}, head dims {1, 4, 5, 8, 12, 32}, heads 1-8, windows, causal,
query frames, unequal groups, dtypes and layouts, not their full product. Everything goes through the
public functionals with ``backend="triton"`` (the whole ladder, autograd included) unless a test is
about the launchers themselves. One test also builds real sm_90 cubins of a few configs in a
subprocess (no GPU needed), since the interpreter does not enforce GPU compile rules.
"""
import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stattn
from stattn.ops import _dispatch
from stattn.ops.reference import (
    grouped_attention_backward_reference,
    grouped_attention_reference,
    temporal_attention_backward_reference,
    temporal_attention_reference,
)
from stattn.testing import assert_close, assert_compile_matches_eager, make_inputs, relative_error

pytest.importorskip("triton")
pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.skipif(not _dispatch.interpreter_enabled(), reason="needs TRITON_INTERPRET=1 (conftest, no CUDA)"),
]

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _launchers():
    from stattn.ops.triton import _launchers

    return _launchers


def _leaves(*shape, dtype=F32, packed=True, seed=0):
    """q, k, v `[B, F, N, H, D]` that take gradients; packed = strided views of one `[B, F, N, 3, H, D]`."""
    q, k, v = make_inputs(*shape, dtype=dtype, packed=packed, seed=seed)
    if packed:
        base = torch.stack([q, k, v], 3).requires_grad_()
        return base.unbind(3)
    return tuple(t.clone().requires_grad_() for t in (q, k, v))


def _grad_like(out, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(out.shape, generator=gen).to(out.dtype)


def _flat(groups):
    return [i for g in groups for i in g], [len(g) for g in groups]


def _random_groups(n, seed, max_size=6):
    """A random partition of range(n) into groups of 1..max_size tokens (singletons likely)."""
    rng = random.Random(seed)
    tokens = list(range(n))
    rng.shuffle(tokens)
    groups = []
    while tokens:
        size = rng.randint(1, max_size)
        groups.append(tokens[:size])
        tokens = tokens[size:]
    return groups


def check_temporal(q, k, v, *, scale=None, window=None, causal=False, query_frames=None, grad=None, seed=0):
    """Triton forward and backward through the public functional vs the float64 reference."""
    out = stattn.temporal_attention(
        q, k, v, scale=scale, window=window, causal=causal, query_frames=query_frames, backend="triton"
    )
    qd, kd, vd = (t.detach().double() for t in (q, k, v))
    s = q.shape[-1] ** -0.5 if scale is None else scale
    assert out.dtype == q.dtype and out.is_contiguous()
    assert_close(temporal_attention_reference(qd, kd, vd, s, window, causal, query_frames), out)
    grad = _grad_like(out, seed) if grad is None else grad
    got = torch.autograd.grad(out, (q, k, v), grad)
    expected = temporal_attention_backward_reference(grad.double(), qd, kd, vd, s, window, causal, query_frames)
    for name, e, g in zip("qkv", expected, got):
        assert g.dtype == q.dtype
        assert_close(e, g, name=f"d{name}")


def check_grouped(q, k, v, groups, *, scale=None, grad=None, seed=0):
    out = stattn.grouped_attention(q, k, v, groups, scale=scale, backend="triton")
    frameless = q.dim() == 4  # `[B, N, H, D]`: the reference wants the frame axis
    qd, kd, vd = (t.detach().double().unsqueeze(1) if frameless else t.detach().double() for t in (q, k, v))
    s = q.shape[-1] ** -0.5 if scale is None else scale
    index, sizes = _flat(groups)
    assert out.dtype == q.dtype and out.is_contiguous() and out.shape == q.shape
    assert_close(grouped_attention_reference(qd, kd, vd, index, sizes, s).view(out.shape), out)
    grad = _grad_like(out, seed) if grad is None else grad
    got = torch.autograd.grad(out, (q, k, v), grad)
    grad_d = grad.double().unsqueeze(1) if frameless else grad.double()
    expected = grouped_attention_backward_reference(grad_d, qd, kd, vd, index, sizes, s)
    expected = [e.view(q.shape) for e in expected]
    for name, e, g in zip("qkv", expected, got):
        assert g.dtype == q.dtype
        assert_close(e, g, name=f"d{name}")


# (B, F, N, H, D), window, causal, query_frames, dtype: a covering set, not a product
TEMPORAL_CASES = [
    ((2, 5, 17, 8, 4), None, False, None, F32),  # DSTA: C = 32 as 8 heads of 4
    ((1, 7, 15, 3, 5), 2, True, None, F32),  # odd head dim, window + causal
    ((1, 3, 20, 3, 12), 1, False, [1], F32),  # key frame only; 2 head blocks
    ((1, 1, 17, 1, 1), None, False, None, F32),  # a single frame: the output is v
    ((2, 2, 15, 6, 8), 0, False, None, F16),  # window 0: each frame alone; 2 head blocks
    ((1, 5, 20, 2, 32), None, True, [0, 4], F16),  # causal with the first and last frame
    ((1, 7, 17, 5, 4), 3, False, [2, 3, 6], BF16),
    ((1, 3, 15, 8, 1), None, True, None, BF16),
    ((1, 5, 17, 2, 5), 1, True, [4], F32),  # online video: last frame, causal window
    ((1, 2, 20, 7, 8), None, False, [0], F16),
]


@pytest.mark.parametrize("shape,window,causal,query_frames,dtype", TEMPORAL_CASES)
def test_temporal_matches_reference(shape, window, causal, query_frames, dtype):
    q, k, v = _leaves(*shape, dtype=dtype, seed=sum(shape))
    check_temporal(q, k, v, window=window, causal=causal, query_frames=query_frames, scale=0.6, seed=shape[1])


def check_large_scores(op, qkv, **options):
    """Scores in the thousands (std-20 inputs, scale 1): the online softmax must not overflow.

    Rounding the scores alone costs ~1e-4 here, so the bar is the float32 reference's own error
    against float64 (x4), not the fixed float32 tolerance.
    """
    q, k, v = qkv
    grad = _grad_like(q, seed=1)
    if op == "temporal":
        fwd = lambda *t: stattn.temporal_attention(*t[:3], scale=1.0, backend=t[3], **options)  # noqa: E731
    else:
        fwd = lambda *t: stattn.grouped_attention(*t[:3], options["groups"], scale=1.0, backend=t[3])  # noqa: E731
    results = {}
    runs = [("exact", torch.float64, "reference"), ("ref32", F32, "reference"), ("tri", F32, "triton")]
    for name, dtype, backend in runs:
        leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        out = fwd(*leaves, backend)
        results[name] = (out, *torch.autograd.grad(out, leaves, grad.to(dtype)))
    for i, what in enumerate(["out", "dq", "dk", "dv"]):
        exact, ref32, tri = (results[n][i] for n in ("exact", "ref32", "tri"))
        assert torch.isfinite(tri).all(), what
        assert_close(exact, tri, max(1e-5, 4 * relative_error(exact, ref32)), name=what)


def test_temporal_extremes():
    """The largest config (64 frames), key ranges cut by query frames, D = 128, large scores."""
    q, k, v = _leaves(1, 64, 2, 1, 4, seed=21)
    check_temporal(q, k, v, window=3, causal=True, query_frames=[10, 40, 63])
    q, k, v = _leaves(1, 3, 5, 2, 128, dtype=F16, seed=22)
    check_temporal(q, k, v, window=1)
    check_large_scores("temporal", make_inputs(1, 5, 17, 8, 4, seed=23, std=20.0), window=2)


COCO_LIKE = [list(g) for g in stattn.COCO17.groups]  # 5, 3, 3, 3, 3
POSETRACK_LIKE = [list(g) for g in stattn.POSETRACK.groups]  # 3, 3, 3, 3, 3, 1, 1

# (B, F, N, H, D), groups, dtype
GROUPED_CASES = [
    ((2, 1, 17, 8, 4), COCO_LIKE, F32),
    ((1, 3, 17, 4, 8), POSETRACK_LIKE, F32),
    ((1, 2, 15, 3, 5), _random_groups(15, seed=1), F32),
    ((1, 1, 20, 2, 12), _random_groups(20, seed=2), F16),
    ((1, 2, 17, 5, 1), POSETRACK_LIKE, BF16),
    ((1, 1, 15, 1, 32), [list(range(15))], F32),  # one group: full attention over 15 tokens
    ((1, 2, 20, 6, 4), [[i] for i in range(20)], F16),  # all singletons: output is v
    ((1, 1, 20, 2, 8), _random_groups(20, seed=3, max_size=9), BF16),
]


@pytest.mark.parametrize("shape,groups,dtype", GROUPED_CASES)
def test_grouped_matches_reference(shape, groups, dtype):
    q, k, v = _leaves(*shape, dtype=dtype, seed=sum(shape))
    check_grouped(q, k, v, groups, scale=0.8, seed=shape[2])


def test_grouped_extremes():
    """A group of 33 tokens (the 64-row config) next to singletons, and large scores."""
    groups = [list(range(1, 34)), [0], [34]]
    q, k, v = _leaves(1, 1, 35, 3, 5, seed=24)
    check_grouped(q, k, v, groups)
    check_large_scores("grouped", make_inputs(1, 2, 17, 8, 4, seed=25, std=20.0), groups=COCO_LIKE)


def test_grouped_frameless_input():
    """`[B, N, H, D]` inputs (the key frame only) go through the same kernels."""
    q, k, v = (t[:, 0] for t in _leaves(2, 1, 17, 8, 4, seed=11))
    check_grouped(q, k, v, POSETRACK_LIKE)


@pytest.mark.parametrize("layout", ["separate", "frames_major", "expanded_batch", "strided_head_dim"])
def test_layouts_are_read_through_strides(layout):
    """Non-packed layouts: separate tensors, permuted storage, stride-0 batch, head-dim stride 2."""
    q, k, v = make_inputs(2, 3, 17, 4, 4, seed=12, packed=False)
    if layout == "frames_major":
        q, k, v = (t.transpose(0, 1).contiguous().transpose(0, 1) for t in (q, k, v))
    elif layout == "expanded_batch":
        q, k, v = (t[:1].expand(2, -1, -1, -1, -1) for t in (q, k, v))
    elif layout == "strided_head_dim":
        q, k, v = (torch.stack([t, -t], -1).flatten(-2)[..., ::2] for t in (q, k, v))
        assert q.stride(-1) == 2
    q, k, v = (t.requires_grad_() if t.is_leaf else t.detach().requires_grad_() for t in (q, k, v))
    check_temporal(q, k, v, window=1)
    check_grouped(q, k, v, COCO_LIKE)


def test_stride_zero_gradients_from_sum():
    """`y.sum().backward()` hands the backward an expanded (stride-0) gradient."""
    q, k, v = _leaves(1, 5, 17, 8, 4, seed=13)
    for op in (
        lambda q, k, v, b: stattn.temporal_attention(q, k, v, window=1, query_frames=[2, 4], backend=b),
        lambda q, k, v, b: stattn.grouped_attention(q, k, v, stattn.COCO17, backend=b),
    ):
        out = op(q, k, v, "triton")
        got = torch.autograd.grad(out.sum(), (q, k, v))
        expected = torch.autograd.grad(op(q, k, v, "reference").sum(), (q, k, v))
        for name, e, g in zip("qkv", expected, got):
            assert_close(e, g, name=f"d{name}")


def test_poisoned_output_buffers_are_fully_written(monkeypatch):
    """Outputs start as NaN: any element a kernel forgets to write fails the comparison."""
    launchers = _launchers()

    def nan_empty(shape, like):
        return torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)

    monkeypatch.setattr(launchers, "_new_empty", nan_empty)
    q, k, v = _leaves(2, 5, 15, 3, 5, seed=14)
    check_temporal(q, k, v, window=1, causal=True, query_frames=[1, 3])  # dq rows of frames 0, 2, 4 are zeros
    check_temporal(q, k, v, window=0)
    check_grouped(q, k, v, _random_groups(15, seed=4))  # padded group slots, singletons


def test_launchers_directly():
    """The launcher contract ``stattn.ops._library`` relies on: shapes, dtypes, contiguity, zeros in dq."""
    from stattn.ops import triton as triton_ops

    q, k, v = make_inputs(1, 5, 17, 2, 4, seed=15)
    qd, kd, vd = (t.double() for t in (q, k, v))
    o = triton_ops.temporal_attention_fwd(q, k, v, 0.5, 2, False, [1, 3])
    assert o.shape == (1, 2, 17, 2, 4) and o.is_contiguous()
    assert_close(temporal_attention_reference(qd, kd, vd, 0.5, 2, False, [1, 3]), o)
    grad = torch.randn(o.shape).expand(3, -1, -1, -1, -1)[1:2]  # a strided view, offset storage
    dq, dk, dv = triton_ops.temporal_attention_bwd(grad, q, k, v, 0.5, 2, False, [1, 3])
    assert all(t.shape == q.shape and t.is_contiguous() for t in (dq, dk, dv))
    assert torch.count_nonzero(dq[:, [0, 2, 4]]) == 0
    expected = temporal_attention_backward_reference(grad.double(), qd, kd, vd, 0.5, 2, False, [1, 3])
    for e, g in zip(expected, (dq, dk, dv)):
        assert_close(e, g)
    index, sizes = _flat(POSETRACK_LIKE)
    o = triton_ops.grouped_attention_fwd(q, k, v, index, sizes, 0.5)
    assert_close(grouped_attention_reference(qd, kd, vd, index, sizes, 0.5), o)
    assert torch.equal(o[:, :, [3, 4]], v[:, :, [3, 4]])  # singletons: softmax over one key is exactly 1


def test_launcher_refusals():
    from stattn.ops import triton as triton_ops

    q, k, v = make_inputs(1, 3, 5, 1, 4)
    with pytest.raises(ValueError, match="sorted unique"):
        triton_ops.temporal_attention_fwd(q, k, v, 0.5, None, False, [2, 1])
    with pytest.raises(ValueError, match="partition"):
        triton_ops.grouped_attention_fwd(q, k, v, [0, 1, 2, 3], [4], 0.5)
    big = torch.zeros(1, 1, 65, 1, 4)
    with pytest.raises(ValueError, match="group of 65 tokens > 64"):
        triton_ops.grouped_attention_fwd(big, big, big, list(range(65)), [65], 0.5)


def test_kernel_configs_are_few_and_reproducible():
    launchers = _launchers()
    configs = launchers.kernel_configs()
    assert len(configs) == len(set(configs)) == 60
    for direction, cfg in configs:
        assert launchers.kernel_config(direction, cfg.BLOCK_R, cfg.BLOCK_D) == cfg
        elements = cfg.BLOCK_S * cfg.BLOCK_R * cfg.BLOCK_H * cfg.BLOCK_D
        assert elements <= 32 * cfg.num_warps * 8 or cfg.num_warps == 16, (direction, cfg)
    # every shape the dispatcher accepts maps to a listed config
    listed = set(configs)
    for rows in (1, 3, 5, 9, 17, 33, 64):
        for head_dim in (1, 3, 4, 5, 12, 33, 100, 128):
            for direction in ("fwd", "bwd"):
                assert (direction, launchers.kernel_config(direction, rows, head_dim)) in listed


# Compiles in a fresh interpreter: Triton decides "interpreted or real" when `triton.language` and the
# kernels are first defined, and this process runs with TRITON_INTERPRET=1.
_COMPILE_SCRIPT = """
import sys
from triton import compile
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from stattn.ops.triton import _kernels, _launchers

dtype = sys.argv[1]
for direction, rows, head_dim in [("fwd", 5, 4), ("bwd", 5, 4), ("fwd", 3, 32), ("bwd", 17, 12), ("bwd", 64, 128)]:
    cfg = _launchers.kernel_config(direction, rows, head_dim)
    fn = _kernels._local_attn_fwd_kernel if direction == "fwd" else _kernels._local_attn_bwd_kernel
    signature, constants = {}, {}
    for name in fn.arg_names:
        if name in ("q", "k", "v", "o", "do", "dq", "dk", "dv"):
            signature[name] = "*" + dtype
        elif name.startswith("tab_"):
            signature[name] = "*i32"
        elif name in ("qk_scale", "scale"):
            signature[name] = "fp32"
        elif name.startswith("BLOCK_") or (name.startswith("stride_") and name.endswith("d")):
            signature[name] = "constexpr"
            constants[name] = 1  # head-dim strides == 1, as Triton specialises them
        else:
            signature[name] = "i32"
    constants.update(BLOCK_S=cfg.BLOCK_S, BLOCK_R=cfg.BLOCK_R, BLOCK_H=cfg.BLOCK_H, BLOCK_D=cfg.BLOCK_D)
    src = ASTSource(fn=fn, signature=signature, constexprs=constants)
    compiled = compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": cfg.num_warps})
    assert compiled.asm["cubin"], (direction, cfg)
    print(direction, tuple(cfg), "ok")
"""


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_kernels_compile_for_sm90_without_a_gpu(dtype):
    """The interpreter does not enforce GPU rules (tl.dot sizes, layouts): build real H100 cubins.

    A covering subset of the listed configs (DSTA's shapes and the extremes), with the ptxas bundled
    in Triton's NVIDIA backend; the GPU tier compiles and runs every listed config.
    """
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("Triton's NVIDIA backend is not installed")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    root = str(Path(stattn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT, dtype], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count(" ok") == 5


def test_compile_fullgraph_with_triton_backend():
    def f(q, k, v):
        t = stattn.temporal_attention(q, k, v, window=1, causal=True, backend="triton")
        return stattn.grouped_attention(t, k, v, stattn.COCO17, backend="triton")

    q, k, v = _leaves(1, 3, 17, 2, 4, seed=16)
    assert_compile_matches_eager(f, (q, k, v))


@st.composite
def _problems(draw):
    frames = draw(st.integers(1, 7))
    tokens = draw(st.integers(1, 20))
    heads = draw(st.integers(1, 6))
    head_dim = draw(st.sampled_from([1, 2, 3, 4, 5, 8, 12, 16, 32]))
    dtype = draw(st.sampled_from([F32, F16, BF16]))
    packed = draw(st.booleans())
    op = draw(st.sampled_from(["temporal", "grouped"]))
    if op == "temporal":
        window = draw(st.none() | st.integers(0, frames))
        causal = draw(st.booleans())
        query_frames = draw(st.none() | st.lists(st.integers(0, frames - 1), min_size=1, unique=True).map(sorted))
        options = dict(window=window, causal=causal, query_frames=query_frames)
    else:
        options = dict(groups=_random_groups(tokens, seed=draw(st.integers(0, 2**16)), max_size=tokens))
    seed = draw(st.integers(0, 2**16))
    return (1, frames, tokens, heads, head_dim), dtype, packed, op, options, seed


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_problems())
def test_hypothesis_against_reference(problem):
    shape, dtype, packed, op, options, seed = problem
    q, k, v = _leaves(*shape, dtype=dtype, packed=packed, seed=seed)
    if op == "temporal":
        check_temporal(q, k, v, seed=seed, **options)
    else:
        check_grouped(q, k, v, options["groups"], seed=seed)

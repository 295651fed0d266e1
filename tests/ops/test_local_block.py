"""The local_block op, the backend registry it shares with the attention ops, and the eager fast path."""
import copy

import pytest
import torch

import stattn
from stattn import ops
from stattn.nn import LocalAwarenessBlock
from stattn.nn.fused import block_weights, op_meta
from stattn.ops import _dispatch, _library, native
from stattn.skeletons import POSETRACK
from stattn.testing import assert_close, make_inputs

from ..nn.helpers import randomize

needs_cc = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")
UNEQUAL = ((0, 4, 9), (1,), (2, 3, 5, 6, 7, 8, 10, 11, 12))
CASES = [  # (kind, x shape, block kwargs)
    ("temporal", (2, 3, 5, 32), {}),
    ("temporal", (2, 5, 3, 24), {"num_heads": 3, "window": 1, "causal": True, "qkv_bias": False}),
    ("grouped", (2, 2, 17, 32), {"groups": POSETRACK}),
    ("grouped", (3, 13, 16), {"groups": UNEQUAL, "num_heads": 2, "mlp_ratio": 3.0}),
]


def _block(shape, kind, seed=0, **kw):
    return randomize(LocalAwarenessBlock(shape[-1], kind, fused=False, **kw), seed).eval()


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("kind,shape,kw", CASES)
def test_reference_is_the_unfused_block(kind, shape, kw):
    """The op's reference computes what the layer's modules compute, values and gradients."""
    blk = _block(shape, kind, **kw).double()
    x = _x(shape).requires_grad_()
    ref = blk(x)
    out = ops.local_block(x, block_weights(blk), backend="reference", **op_meta(blk))
    assert_close(ref, out, 1e-12)
    g = _x(shape, seed=2)
    params = list(blk.parameters())
    want = torch.autograd.grad(ref, [x, *params], g)
    got = torch.autograd.grad(out, [x, *params], g)
    for i, (a, b) in enumerate(zip(want, got)):
        assert_close(a, b, 1e-12, name=f"gradient {i}")


def test_cpu_default_is_native_for_float32_and_the_reference_says_why_otherwise(monkeypatch):
    monkeypatch.delenv("STATTN_BACKEND", raising=False)
    blk = _block((1, 3, 5, 32), "temporal")
    x = _x((1, 3, 5, 32), dtype=torch.float32)
    reasons = ops.backend_reasons("local_block", x, block_weights(blk), **op_meta(blk))
    assert reasons["reference"] == []
    if native.compiler():
        assert reasons["native"] == []
    want = "native" if native.compiler() else "reference"
    assert ops.which_backend("local_block", x, block_weights(blk), **op_meta(blk)) == want
    blk64 = copy.deepcopy(blk).double()
    assert ops.which_backend("local_block", x.double(), block_weights(blk64), **op_meta(blk64)) == "reference"
    with pytest.raises(ValueError, match="backend 'native' cannot run this call: dtype torch.float64 is not float32"):
        ops.local_block(x.double(), block_weights(blk64), backend="native", **op_meta(blk64))


# ------------------------------------------------------------------ the native (C) whole-block forward
RAGGED = ("temporal", (2, 4, 3, 20), {"num_heads": 4, "mlp_ratio": 2.5, "window": 2})  # C, HID not multiples of 8


def _against_the_reference(backend, kind, shape, kw, seed):
    """`backend`'s local_block in float32 against the float64 reference: the values, the eager fast
    path's values, and the gradients (which recompute the reference) of x and of every weight."""
    blk = _block(shape, kind, seed=seed, **kw)
    ref_blk = copy.deepcopy(blk).double()
    x = _x(shape, seed=seed + 1)
    want = ops.local_block(x.requires_grad_(), block_weights(ref_blk), backend="reference", **op_meta(ref_blk))
    xf = x.detach().float().requires_grad_()
    out = ops.local_block(xf, block_weights(blk), backend=backend, **op_meta(blk))
    assert out.dtype == torch.float32 and out.shape == xf.shape
    assert_close(want, out)
    with torch.no_grad():  # the eager fast path runs the same implementation
        assert torch.equal(out.detach(), ops.local_block(xf, block_weights(blk), backend=backend, **op_meta(blk)))
    g = _x(shape, seed=seed + 2)
    params = list(blk.parameters())
    want_grads = torch.autograd.grad(want, [x, *ref_blk.parameters()], g)
    grads = torch.autograd.grad(out, [xf, *params], g.float())
    for i, (a, b) in enumerate(zip(want_grads, grads)):
        assert_close(a, b, name=f"gradient {i}")


@needs_cc
@pytest.mark.parametrize("kind,shape,kw", [*CASES, RAGGED])
def test_native_local_block_matches_the_reference_with_gradients(kind, shape, kw):
    """The C block: values; gradients recompute the reference."""
    _against_the_reference("native", kind, shape, kw, seed=9)


@needs_cc
@pytest.mark.parametrize("kind", ["temporal", "grouped"])
def test_native_local_block_splits_large_inputs_across_threads(kind):
    """[16, 5, 17, 32] is above every parallel grain of the C block (its row-wise steps and attention
    run on torch's OpenMP threads): same numbers as the reference, on 2 threads as on 1."""
    shape, kw = (16, 5, 17, 32), ({"groups": POSETRACK} if kind == "grouped" else {"window": 1})
    blk = _block(shape, kind, seed=18, **kw)
    x = _x(shape, seed=19, dtype=torch.float32)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(ops.local_block(x, block_weights(blk), backend="native", **op_meta(blk)))
    finally:
        torch.set_num_threads(threads)
    ref_blk = copy.deepcopy(blk).double()
    want = ops.local_block(x.double(), block_weights(ref_blk), backend="reference", **op_meta(ref_blk))
    assert_close(want, outs[1])
    assert torch.equal(outs[0], outs[1])  # rows are split between threads, never a sum


@needs_cc
def test_native_local_block_reads_strided_inputs_and_weights():
    """A non-contiguous x and a transposed-view weight give the numbers of their contiguous copies."""
    kind, shape, kw = CASES[0]
    blk = _block(shape, kind, seed=12, **kw)
    w = block_weights(blk)
    w = w._replace(fc2_w=w.fc2_w.t().contiguous().t())  # same values, column-major
    x = _x((shape[0], shape[2], shape[1], shape[3]), seed=13, dtype=torch.float32).transpose(1, 2)
    out = ops.local_block(x, w, backend="native", **op_meta(blk))
    want = ops.local_block(x.contiguous(), block_weights(blk), backend="native", **op_meta(blk))
    assert torch.equal(out, want)


@needs_cc
@pytest.mark.parametrize("kind,shape,kw", CASES)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_native_local_block_keeps_a_bad_token_where_the_reference_puts_it(kind, shape, kw, value):
    """A non-finite token reaches exactly the outputs the reference lets it reach; the others are those
    of a clean run."""
    blk = _block(shape, kind, seed=14, **kw)
    x = _x(shape, seed=15, dtype=torch.float32)
    bad = x.clone()
    bad[(1,) + (0,) * (x.dim() - 3) + (2, 3)] = value
    run = lambda t, backend: ops.local_block(t, block_weights(blk), backend=backend, **op_meta(blk))  # noqa: E731
    with torch.no_grad():
        clean, out, ref = run(x, "native"), run(bad, "native"), run(bad, "reference")
    finite = torch.isfinite(ref)
    assert not finite.all() and finite[0].all()
    assert torch.equal(torch.isfinite(out), finite)
    assert torch.equal(out[finite], clean[finite])


@needs_cc
def test_eval_block_on_the_cpu_is_one_native_call(monkeypatch):
    """In inference a block hands itself to the op, which picks the C block for float32 CPU tensors."""
    monkeypatch.delenv("STATTN_BACKEND", raising=False)
    kind, shape, kw = CASES[2]
    blk = randomize(LocalAwarenessBlock(shape[-1], kind, **kw), 16).eval()
    x = _x(shape, seed=17, dtype=torch.float32)
    calls = []
    fwd, bwd = native.BACKEND.table["local_block"]
    monkeypatch.setitem(native.BACKEND.table, "local_block", (lambda *a, **k: calls.append(1) or fwd(*a, **k), bwd))
    with torch.no_grad():
        out = blk(x)
    assert calls == [1]
    blk.fused = False
    with torch.no_grad():
        assert_close(blk(x).double(), out)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"kind": "spatial"}, "kind must be 'temporal' or 'grouped'"),
        ({"kind": "grouped", "groups": None}, "needs groups"),
        ({"num_heads": 5}, "num_heads must be a positive int dividing"),
        ({"window": -1}, "window must be a non-negative int"),
        ({"eps": (1e-6,)}, "eps must be two"),
    ],
)
def test_bad_arguments_name_the_problem(change, message):
    blk = _block((1, 3, 5, 32), "temporal")
    meta = {**op_meta(blk), **change}
    with pytest.raises(ValueError, match=message):
        ops.local_block(_x((1, 3, 5, 32), dtype=torch.float32), block_weights(blk), **meta)


@pytest.mark.parametrize("backend", ["reference", pytest.param("native", marks=needs_cc)])
def test_empty_token_dims_are_refused_and_an_empty_batch_is_empty(backend):
    blk = _block((1, 3, 5, 32), "temporal")
    for shape, dims in (((1, 0, 5, 32), "F"), ((1, 3, 0, 32), "N")):
        with pytest.raises(ValueError, match=f"local_block: dimension.s. {dims} of shape"):
            ops.local_block(torch.zeros(shape), block_weights(blk), backend=backend, **op_meta(blk))
    out = ops.local_block(torch.zeros(0, 3, 5, 32), block_weights(blk), backend=backend, **op_meta(blk))
    assert out.shape == (0, 3, 5, 32)


def test_bad_weights_name_the_weight():
    blk = _block((1, 3, 5, 32), "temporal")
    x = _x((1, 3, 5, 32), dtype=torch.float32)
    w = block_weights(blk)
    with pytest.raises(ValueError, match=r"weight proj_w must be \[32, 32\]"):
        ops.local_block(x, w._replace(proj_w=w.proj_w[:, :16]), **op_meta(blk))
    with pytest.raises(ValueError, match="parameter fc2_b is torch.float64"):
        ops.local_block(x, w._replace(fc2_b=w.fc2_b.double()), **op_meta(blk))
    with pytest.raises(ValueError, match="weights must hold 12 tensors"):
        ops.local_block(x, tuple(w)[:11], **op_meta(blk))


def test_unknown_backend_variable_reaches_blocks_too(monkeypatch):
    monkeypatch.setenv("STATTN_BACKEND", "garbage")
    blk = _block((1, 3, 5, 32), "temporal")
    with pytest.raises(ValueError, match="STATTN_BACKEND"):
        ops.local_block(_x((1, 3, 5, 32), dtype=torch.float32), block_weights(blk), **op_meta(blk))


# ------------------------------------------------------------------------- the eager fast path
def test_eager_inference_skips_the_registered_op_and_autograd_keeps_it(monkeypatch):
    """Without autograd the chosen implementation is called directly (same numbers); with autograd,
    torch.compile or export the registered op stays."""
    q, k, v = make_inputs(1, 3, 17, 8, 4, seed=3)
    with torch.no_grad():
        fast_t = stattn.temporal_attention(q, k, v, window=1)
        fast_g = stattn.grouped_attention(q, k, v, POSETRACK)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    slow_t = stattn.temporal_attention(*leaves, window=1)
    slow_g = stattn.grouped_attention(*leaves, POSETRACK)
    assert torch.equal(fast_t, slow_t.detach()) and torch.equal(fast_g, slow_g.detach())

    def refuse(*args, **kwargs):
        raise AssertionError("the registered op was called")

    monkeypatch.setattr(_library, "temporal_attention_op", refuse)
    monkeypatch.setattr(_library, "grouped_attention_op", refuse)
    stattn.temporal_attention(q, k, v)  # no input needs a gradient: the op is not needed
    stattn.grouped_attention(q, k, v, POSETRACK)
    with pytest.raises(AssertionError, match="registered op"):
        stattn.temporal_attention(*leaves)


def test_layer_groups_are_validated_once():
    """A layer passes the same tuple every call: its partition is checked once and cached."""
    q, k, v = make_inputs(1, 2, 13, 2, 4, seed=4)
    before = ops._flat_partition.cache_info().hits
    for _ in range(3):
        stattn.grouped_attention(q, k, v, UNEQUAL)
    assert ops._flat_partition.cache_info().hits >= before + 2
    with pytest.raises(ValueError, match="groups"):
        stattn.grouped_attention(q, k, v, ((0, 1),))  # an invalid tuple still gets its error every time
    with pytest.raises(ValueError, match="groups"):
        stattn.grouped_attention(q, k, v, ((0, 1),))


def test_registry_lists_every_backend_once_in_preference_order():
    assert [b.name for b in _dispatch.REGISTRY] == ["triton", "native", "reference"] == list(ops.BACKENDS)
    for backend in _dispatch.REGISTRY[1:]:  # the Triton table imports Triton: the interpreter tests cover it
        assert backend.ops <= _dispatch.REGISTRY[-1].ops  # the reference implements every op
        assert set(backend.table) == backend.ops and all(callable(fwd) for fwd, _ in backend.table.values())


@pytest.mark.interpreter
@pytest.mark.skipif(not _dispatch.interpreter_enabled(), reason="needs TRITON_INTERPRET=1 (conftest, no CUDA)")
@pytest.mark.parametrize("kind,shape,kw", [CASES[1], CASES[3]])
def test_triton_local_block_matches_the_reference_with_gradients(kind, shape, kw):
    """The whole-block kernel is the op's Triton implementation; its gradients recompute the reference."""
    _against_the_reference("triton", kind, shape, kw, seed=5)

"""Adversarial inputs to the ops: a non-finite value stays inside its own attention unit.

An attention unit is what one softmax sees: temporal = one head of one joint's frames in one clip,
`(b, :, n, h)`; grouped = one head of one group in one frame of one clip, `(b, f, group(n), h)`. A
NaN / Inf anywhere in q, k, v (or in the output gradient) may reach only outputs (and gradients) of
its own unit, in every backend: the other clips of a batch, the other joints and groups, and the
other heads come out bit-identical to a clean run. Masked keys (causal, window) contribute exactly
nothing, however large their values. Grow this module with every case found.
"""
import pytest
import torch

import stattn
from stattn.ops import _dispatch, native
from stattn.testing import make_inputs

GROUPS = [[0, 4], [1, 2, 3], [5], [6, 7, 8, 9]]  # unequal groups and a singleton over N = 10


def _backends():
    out = [pytest.param("reference")]
    out.append(pytest.param("native", marks=pytest.mark.skipif(native.compiler() is None, reason="no C compiler")))
    triton_ok = _dispatch.interpreter_enabled() and _dispatch.triton_import_error() is None
    needs = pytest.mark.skipif(not triton_ok, reason="needs TRITON_INTERPRET=1")
    out.append(pytest.param("triton", marks=[pytest.mark.interpreter, needs]))
    return out


BACKENDS = _backends()


def _unit(op: str, shape, b, f, n, h) -> torch.Tensor:
    """Bool `[B, F, N, H, D]`: the outputs that the unit of token (b, f, n), head h may reach."""
    reach = torch.zeros(shape, dtype=torch.bool)
    if op == "temporal":
        reach[b, :, n, h] = True
    else:
        group = next(g for g in GROUPS if n in g)
        reach[b, f, group, h] = True
    return reach


def _run(op, backend, q, k, v, **kw):
    if op == "temporal":
        return stattn.temporal_attention(q, k, v, backend=backend, **kw)
    return stattn.grouped_attention(q, k, v, GROUPS, backend=backend)


def _assert_isolated(name, clean, poisoned, reach):
    bad = ~torch.isfinite(poisoned)
    assert bad.any(), f"{name}: the poison vanished (a NaN must not be hidden either)"
    assert not (bad & ~reach).any(), f"{name}: non-finite outside its unit at {(bad & ~reach).nonzero()[:4].tolist()}"
    assert torch.equal(clean[~reach], poisoned[~reach]), f"{name}: values outside the unit changed"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,kw", [("temporal", {}), ("temporal", {"causal": True, "window": 1}), ("grouped", {})])
@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_forward_isolates_one_bad_value(backend, op, kw, where, value):
    """One bad head of one token of sample 1 in a batch of 3: only its unit may change."""
    q, k, v = (t.contiguous() for t in make_inputs(3, 3, 10, 2, 4, seed=21))
    clean = _run(op, backend, q, k, v, **kw)
    # causal: poison the first frame, which every later query sees, so the poison must show up
    b, f, n, h = 1, 0, 2, 1
    tensors = {"q": q, "k": k, "v": v}
    tensors[where] = tensors[where].clone()
    tensors[where][b, f, n, h, 1] = value
    out = _run(op, backend, tensors["q"], tensors["k"], tensors["v"], **kw)
    _assert_isolated(f"{backend} {op} {where}={value}", clean, out, _unit(op, q.shape, b, f, n, h))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["temporal", "grouped"])
@pytest.mark.parametrize("where", ["grad", "v"])
def test_backward_isolates_one_bad_value(backend, op, where):
    """Gradients (the reference's closed form for native, the Triton backward for Triton) stay in the unit."""
    base = make_inputs(3, 3, 10, 2, 4, packed=False, seed=22)
    grad = torch.randn(base[0].shape, generator=torch.Generator().manual_seed(5))
    b, f, n, h = 1, 1, 6, 0

    def grads(poison: bool):
        q, k, v = (t.clone() for t in base)
        g = grad.clone()
        if poison:
            (g if where == "grad" else v)[b, f, n, h, 2] = float("nan")
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        out = _run(op, backend, q, k, v)
        return torch.autograd.grad(out, (q, k, v), g)

    reach = _unit(op, base[0].shape, b, f, n, h)
    for name, clean, poisoned in zip(("dq", "dk", "dv"), grads(False), grads(True)):
        if name == "dv" and where == "v":  # dv does not depend on v: nothing to reach
            assert torch.equal(clean, poisoned)
            continue
        _assert_isolated(f"{backend} {op} {name} ({where})", clean, poisoned, reach)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window,causal,first_masked", [(None, True, 1), (1, False, 3), (2, True, 3)])
def test_huge_values_in_masked_frames_change_nothing(backend, window, causal, first_masked):
    """v = 3e38 (near the float32 maximum) in frames query frame 0 may not see leaves frame 0 alone."""
    q, k, v = (t.contiguous() for t in make_inputs(2, 5, 3, 2, 4, seed=23))
    clean = stattn.temporal_attention(q, k, v, window=window, causal=causal, backend=backend)
    huge = v.clone()
    huge[:, first_masked:] = 3e38
    out = stattn.temporal_attention(q, k, v=huge, window=window, causal=causal, backend=backend)
    assert torch.equal(out[:, 0], clean[:, 0]), (out[:, 0] - clean[:, 0]).abs().max()
    if causal and window is None:  # frame 0 sees only itself: the output is its value
        assert torch.equal(out[:, 0], v[:, 0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_bad_head_keeps_the_other_heads(backend):
    """A NaN in one head of a query reaches that head's output, never the token's other heads."""
    q, k, v = (t.contiguous() for t in make_inputs(1, 3, 2, 4, 4, seed=24))
    q = q.clone()
    q[0, 1, 0, 2, 0] = float("nan")
    out = stattn.temporal_attention(q, k, v, backend=backend)
    assert torch.isnan(out[0, 1, 0, 2]).all()
    assert torch.isfinite(out[0, 1, 0, [0, 1, 3]]).all() and torch.isfinite(out[0, :, 1]).all()


def test_unknown_backend_in_the_environment_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("STATTN_BACKEND", "garbage")
    q, k, v = make_inputs(1, 2, 3, 1, 4)
    with pytest.raises(ValueError) as info:
        stattn.temporal_attention(q, k, v)
    message = str(info.value)
    assert "STATTN_BACKEND" in message and "'garbage'" in message
    assert all(name in message for name in ("triton", "native", "reference"))
    assert "\n" not in message


def test_info_reports_an_unknown_backend_instead_of_crashing(monkeypatch):
    from stattn import info

    monkeypatch.setenv("STATTN_BACKEND", "garbage")
    text = info.report()
    assert "STATTN_BACKEND" in text and "'garbage'" in text

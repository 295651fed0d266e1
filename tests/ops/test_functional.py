"""Public functionals: validation, strides, empty batches, backend choice, registration, compile."""
import pytest
import torch
from torch.library import opcheck

import stattn
from stattn.ops import _dispatch
from stattn.testing import assert_close, assert_compile_matches_eager, make_inputs


def _qkv(*shape, **kw):
    return make_inputs(*shape, **kw) if len(shape) == 5 else torch.randn(3, *shape).unbind(0)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda q, k, v: stattn.temporal_attention(q[0], k[0], v[0]), "must be 5-D"),
        (lambda q, k, v: stattn.temporal_attention(q, k[:, :2], v), "k has shape"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v.double()), "v has dtype"),
        (lambda q, k, v: stattn.temporal_attention(q.int(), k.int(), v.int()), "floating point"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v, window=-1), "window must be >= 0"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v, window=1.5), "window must be a non-negative int"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v, scale=float("nan")), "scale must be a finite"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v, causal="yes"), "causal must be a bool"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v, backend="cuda"), "unknown backend"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v.tolist(), backend="cuda"), "v must be a torch.Tensor"),
        (lambda q, k, v: stattn.temporal_attention(q[:, :0], k[:, :0], v[:, :0]), "dimension(s) F"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v, query_frames=3), "query frame 3 is out of range"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v, query_frames=[]), "non-empty sequence"),
        (lambda q, k, v: stattn.temporal_attention(q, k, v, query_frames=[0.5]), "not an integer frame"),
        (lambda q, k, v: stattn.grouped_attention(q, k, v, [[0, 1], [1, 2, 3, 4]]), "token 1 appears in"),
        (lambda q, k, v: stattn.grouped_attention(q, k, v, [[0, 1], [2, 3]]), "tokens [4] are in no group"),
        (lambda q, k, v: stattn.grouped_attention(q, k, v, [[0, 1, 5], [2, 3, 4]]), "index 5, outside"),
        (lambda q, k, v: stattn.grouped_attention(q, k, v, [[0, 1, 2, 3, 4], []]), "is empty"),
        (lambda q, k, v: stattn.grouped_attention(q, k, v, [[0, 1.0], [2, 3, 4]]), "not an integer"),
        (lambda q, k, v: stattn.grouped_attention(q, k, v, "01234"), "sequence of index sequences"),
        (lambda q, k, v: stattn.grouped_attention(q, k, v, stattn.POSETRACK), "has 17 joints but the inputs have 5"),
        (lambda q, k, v: stattn.grouped_attention(q[:, 0, 0], k[:, 0, 0], v[:, 0, 0], [[0]]), "4-D or 5-D"),
    ],
)
def test_bad_input_names_the_problem(call, message):
    q, k, v = make_inputs(2, 3, 5, 2, 4)
    with pytest.raises(ValueError, match=None) as info:
        call(q, k, v)
    assert message in str(info.value)


def test_device_mismatch_is_reported():
    q, k, v = make_inputs(1, 2, 3, 1, 4)
    with pytest.raises(ValueError, match="is on meta but q is on cpu"):
        stattn.temporal_attention(q, k.to("meta"), v)


def test_empty_batch_returns_empty_result_with_grad():
    q, k, v = (t.detach().requires_grad_() for t in make_inputs(0, 3, 5, 2, 4, packed=False))
    out = stattn.temporal_attention(q, k, v)
    assert out.shape == (0, 3, 5, 2, 4)
    out.sum().backward()
    assert q.grad.shape == q.shape
    assert stattn.grouped_attention(q, k, v, [[0, 1], [2, 3, 4]]).shape == q.shape


@pytest.mark.parametrize("layout", ["packed", "separate", "transposed", "expanded"])
def test_results_do_not_depend_on_strides(layout):
    q, k, v = make_inputs(2, 4, 5, 2, 4, seed=3)
    dense = [t.contiguous() for t in (q, k, v)]
    if layout == "separate":
        q, k, v = dense
    elif layout == "transposed":  # frames-major storage seen through a permuted view
        q, k, v = (t.transpose(0, 1).contiguous().transpose(0, 1) for t in dense)
    elif layout == "expanded":  # stride-0 batch: the same clip repeated
        q, k, v = (t[:1].expand(2, -1, -1, -1, -1) for t in dense)
        dense = [t.contiguous() for t in (q, k, v)]
    groups = [[0, 3], [1, 2, 4]]
    assert_close(stattn.temporal_attention(*dense, window=1), stattn.temporal_attention(q, k, v, window=1), 1e-6)
    assert_close(stattn.grouped_attention(*dense, groups), stattn.grouped_attention(q, k, v, groups), 1e-6)


def test_stride_zero_gradient():
    q, k, v = (t.detach().requires_grad_() for t in make_inputs(2, 3, 4, 2, 4, packed=False, seed=4))
    stattn.temporal_attention(q, k, v).sum().backward()  # y.sum() feeds an expanded (stride-0) grad
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    stattn.temporal_attention(q, k, v).backward(torch.ones(q.shape))
    for a, b in zip(grads, (q.grad, k.grad, v.grad)):
        assert torch.equal(a, b)


def test_skeleton_and_groups_agree():
    q, k, v = make_inputs(2, 1, 17, 8, 4, seed=5)
    a = stattn.grouped_attention(q, k, v, stattn.POSETRACK)
    b = stattn.grouped_attention(q, k, v, [list(g) for g in stattn.POSETRACK.groups])
    assert torch.equal(a, b)


def test_cpu_default_and_triton_refusal_lists_reasons(monkeypatch):
    monkeypatch.delenv("STATTN_BACKEND", raising=False)  # the default choice is under test
    q, k, v = make_inputs(1, 2, 3, 1, 4)
    expected = "native" if not _dispatch.native_reasons("temporal_attention", q) else "reference"
    assert _dispatch.choose_backend("temporal_attention", q, None) == expected
    assert _dispatch.choose_backend("temporal_attention", q.double(), None) == "reference"
    with pytest.raises(ValueError, match="backend 'triton' cannot run") as info:
        stattn.temporal_attention(q.double(), k.double(), v.double(), backend="triton")
    assert "float64" in str(info.value)
    monkeypatch.setenv("STATTN_BACKEND", "reference")
    assert _dispatch.choose_backend("grouped_attention", q, None) == "reference"
    monkeypatch.setenv("STATTN_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        stattn.temporal_attention(q, k, v)


def test_triton_limits_are_reasons():
    q = torch.empty(1, 65, 257, 1, 129)
    reasons = " ".join(_dispatch.triton_reasons("temporal_attention", q, max_group=65))
    assert "head dim 129 > 128" in reasons and "65 frames > 64" in reasons and "257 tokens" in reasons
    assert "a group of 65 tokens > 64" in reasons


@pytest.mark.parametrize("packed", [True, False])
def test_opcheck(packed):
    q, k, v = (t.detach().clone().requires_grad_() for t in make_inputs(2, 3, 5, 2, 4, packed=False, seed=6))
    if packed:  # opcheck needs leaf inputs; test packed views through a leaf parent
        base = torch.randn(2, 3, 5, 3, 2, 4, requires_grad=True)
        q, k, v = base.unbind(3)
    opcheck(torch.ops.stattn.temporal_attention.default, (q, k, v, 0.5, 1, True, [], "reference"))
    opcheck(torch.ops.stattn.temporal_attention.default, (q, k, v, 0.5, -1, False, [0, 2], "reference"))
    opcheck(torch.ops.stattn.grouped_attention.default, (q, k, v, [0, 2, 1, 3, 4], [2, 1, 2], 0.5, "reference"))
    grad = torch.randn(q.shape)
    args = (grad, q.detach(), k.detach(), v.detach())
    opcheck(torch.ops.stattn.temporal_attention_backward.default, (*args, 0.5, -1, False, [], "reference"))
    opcheck(torch.ops.stattn.grouped_attention_backward.default, (*args, [0, 1, 2, 3, 4], [5], 0.5, "reference"))
    args = (grad[:, :1], q.detach(), k.detach(), v.detach())
    opcheck(torch.ops.stattn.temporal_attention_backward.default, (*args, 0.5, 1, True, [2], "reference"))


def test_compile_fullgraph_forward_and_backward():
    def f(q, k, v):
        t = stattn.temporal_attention(q, k, v, window=1, causal=True)
        return stattn.grouped_attention(t, k, v, stattn.COCO17)

    q, k, v = (t.detach().requires_grad_() for t in make_inputs(2, 3, 17, 2, 4, packed=False, seed=7))
    assert_compile_matches_eager(f, (q, k, v))


@pytest.mark.parametrize("query_frames,rows", [(1, [1]), (-1, [3]), ([3, 0, 3], [0, 3]), ([0, 1, 2, 3], [0, 1, 2, 3])])
def test_query_frames_compute_the_selected_rows(query_frames, rows):
    q, k, v = (t.detach().requires_grad_() for t in make_inputs(2, 4, 5, 2, 4, dtype=torch.float64, seed=8))
    full = stattn.temporal_attention(q, k, v, window=2, causal=True)
    part = stattn.temporal_attention(q, k, v, window=2, causal=True, query_frames=query_frames)
    assert part.shape == (2, len(rows), 5, 2, 4)
    assert_close(full[:, rows], part)
    grad = torch.randn(part.shape, dtype=torch.float64)
    expected = torch.autograd.grad(full[:, rows], (q, k, v), grad)
    got = torch.autograd.grad(part, (q, k, v), grad)
    for e, g in zip(expected, got):
        assert_close(e, g)
    assert stattn.temporal_attention(q[:0], k[:0], v[:0], query_frames=query_frames).shape[1] == len(rows)


def test_query_frames_gradcheck():
    q, k, v = (t.detach().requires_grad_() for t in make_inputs(1, 4, 3, 2, 3, dtype=torch.float64, seed=9))
    fn = lambda q, k, v: stattn.temporal_attention(q, k, v, window=1, query_frames=[1, 2])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-8)


def test_export_inlines_the_reference_math():
    """Exporters cannot see inside the registered ops: under torch.export they become plain aten ops."""

    class Both(torch.nn.Module):
        def forward(self, q, k, v):
            t = stattn.temporal_attention(q, k, v, window=1, query_frames=[1])
            return stattn.grouped_attention(t, k[:, 1:2], v[:, 1:2], stattn.COCO17)

    q, k, v = make_inputs(2, 3, 17, 2, 4, packed=False, seed=10)
    ep = torch.export.export(Both(), (q, k, v))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets and not [t for t in targets if "stattn" in t]
    assert_close(Both()(q, k, v), ep.module()(q, k, v), 1e-6)

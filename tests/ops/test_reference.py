"""Tier 1: the reference (the spec) against Python-loop brute force, values and gradients."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import stattn
from stattn.ops import (
    grouped_attention_backward_reference,
    grouped_attention_reference,
    temporal_attention_backward_reference,
    temporal_attention_reference,
)
from stattn.testing import assert_close, make_inputs

from .brute_force import grouped_brute, temporal_brute

WINDOWS = [(None, False), (0, False), (1, False), (2, False), (None, True), (1, True), (0, True)]


def _flat(groups):
    return [i for g in groups for i in g], [len(g) for g in groups]


@pytest.mark.parametrize("window,causal", WINDOWS)
def test_temporal_matches_brute_force(window, causal):
    q, k, v = make_inputs(2, 5, 3, 2, 4, dtype=torch.float64, seed=1)
    out = temporal_attention_reference(q, k, v, 0.7, window, causal)
    assert_close(temporal_brute(q, k, v, 0.7, window, causal), out)


@pytest.mark.parametrize("window,causal", WINDOWS)
def test_temporal_backward_matches_autograd_of_brute_force(window, causal):
    q, k, v = (t.detach().requires_grad_() for t in make_inputs(2, 4, 3, 2, 3, dtype=torch.float64, seed=2))
    grad = torch.randn(q.shape, dtype=torch.float64)
    expected = torch.autograd.grad(temporal_brute(q, k, v, 0.4, window, causal), (q, k, v), grad)
    got = temporal_attention_backward_reference(grad, q.detach(), k.detach(), v.detach(), 0.4, window, causal)
    for name, e, g in zip("qkv", expected, got):
        assert_close(e, g, name=f"d{name}")


GROUPINGS = [
    [[0, 1, 2], [3, 4]],
    [[4], [0, 3], [1, 2]],  # unordered members, a singleton
    [[0], [1], [2], [3], [4]],  # all singletons: output is v
    [[0, 1, 2, 3, 4]],  # one group = full attention
]


@pytest.mark.parametrize("groups", GROUPINGS)
def test_grouped_matches_brute_force(groups):
    q, k, v = make_inputs(2, 2, 5, 2, 3, dtype=torch.float64, seed=3)
    out = grouped_attention_reference(q, k, v, *_flat(groups), 0.9)
    assert_close(grouped_brute(q, k, v, groups, 0.9), out)


@pytest.mark.parametrize("groups", GROUPINGS)
def test_grouped_backward_matches_autograd_of_brute_force(groups):
    q, k, v = (t.detach().requires_grad_() for t in make_inputs(2, 2, 5, 2, 3, dtype=torch.float64, seed=4))
    grad = torch.randn(q.shape, dtype=torch.float64)
    expected = torch.autograd.grad(grouped_brute(q, k, v, groups, 0.9), (q, k, v), grad)
    got = grouped_attention_backward_reference(grad, q.detach(), k.detach(), v.detach(), *_flat(groups), 0.9)
    for name, e, g in zip("qkv", expected, got):
        assert_close(e, g, name=f"d{name}")


def test_singleton_output_is_value():
    q, k, v = make_inputs(3, 2, 4, 2, 5, seed=5)
    out = stattn.grouped_attention(q, k, v, [[0], [1, 2], [3]])
    assert torch.equal(out[:, :, [0, 3]], v[:, :, [0, 3]])


def test_window_zero_is_identity_on_values():
    q, k, v = make_inputs(2, 4, 3, 2, 4, seed=6)
    assert torch.allclose(stattn.temporal_attention(q, k, v, window=0), v, atol=0, rtol=0)


@pytest.mark.parametrize("op", ["temporal", "grouped"])
def test_gradcheck_float64(op):
    q, k, v = (t.detach().requires_grad_() for t in make_inputs(2, 3, 4, 2, 3, dtype=torch.float64, seed=7))
    if op == "temporal":
        fn = lambda q, k, v: stattn.temporal_attention(q, k, v, window=1, causal=True)  # noqa: E731
    else:
        fn = lambda q, k, v: stattn.grouped_attention(q, k, v, [[0, 2], [1], [3]])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_use_float32_math(dtype):
    q, k, v = make_inputs(2, 5, 17, 8, 4, seed=8)
    ref = temporal_attention_reference(*(t.double() for t in (q, k, v)))
    out = stattn.temporal_attention(*(t.to(dtype) for t in (q, k, v)))
    assert out.dtype == dtype
    assert_close(ref, out)


def test_large_scores_do_not_overflow():
    q, k, v = make_inputs(2, 5, 3, 2, 4, seed=9, std=30.0)
    out = stattn.temporal_attention(q, k, v)
    assert torch.isfinite(out).all()
    assert_close(temporal_brute(q.double(), k.double(), v.double(), 0.5), out)


@st.composite
def temporal_cases(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 5)),
             draw(st.integers(1, 3)), draw(st.integers(1, 6)))  # fmt: skip
    window = draw(st.one_of(st.none(), st.integers(0, 7)))
    return shape, window, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2**31 - 1))


@given(temporal_cases())
def test_temporal_property(case):
    (B, F, N, H, D), window, causal, packed, seed = case
    q, k, v = make_inputs(B, F, N, H, D, dtype=torch.float64, packed=packed, seed=seed)
    out = stattn.temporal_attention(q, k, v, window=window, causal=causal)
    assert out.is_contiguous()
    assert_close(temporal_brute(q, k, v, D**-0.5, window, causal), out)


@st.composite
def grouped_cases(draw):
    B, F, N, H, D = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)),
                     draw(st.integers(1, 3)), draw(st.integers(1, 6)))  # fmt: skip
    perm = draw(st.permutations(range(N)))
    cuts = sorted(draw(st.sets(st.integers(1, N - 1), max_size=N - 1))) if N > 1 else []
    bounds = [0, *cuts, N]
    groups = [list(perm[a:b]) for a, b in zip(bounds, bounds[1:])]
    return (B, F, N, H, D), groups, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2**31 - 1))


@given(grouped_cases())
def test_grouped_property(case):
    (B, F, N, H, D), groups, packed, frameless, seed = case
    q, k, v = make_inputs(B, F, N, H, D, dtype=torch.float64, packed=packed, seed=seed)
    expected = grouped_brute(q, k, v, groups, D**-0.5)
    if frameless:  # [B, N, H, D] input uses the first frame only
        q, k, v, expected = q[:, 0], k[:, 0], v[:, 0], expected[:, 0]
    out = stattn.grouped_attention(q, k, v, groups)
    assert_close(expected, out)

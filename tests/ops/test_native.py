"""The native CPU backend (C forward kernels compiled on first use) against the reference."""
import pytest
import torch
from torch.library import opcheck

import stattn
from stattn.ops import _dispatch, native
from stattn.ops.reference import grouped_attention_reference, temporal_attention_reference
from stattn.testing import assert_close, make_inputs

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C compiler: the native backend is off")

TEMPORAL = [  # (B, F, N, H, D, window, causal, query_frames)
    (3, 5, 17, 8, 4, None, False, None),
    (2, 7, 5, 2, 5, 2, True, None),
    (2, 3, 4, 1, 1, None, True, [2]),
    (1, 9, 3, 4, 16, 1, False, [0, 4, 8]),
    (2, 1, 6, 3, 8, None, False, None),
    (1, 64, 2, 1, 3, 5, False, None),
    (1, 4, 2, 1, 128, None, False, [1, 3]),
]


@pytest.mark.parametrize("B,F,N,H,D,window,causal,frames", TEMPORAL)
def test_temporal_matches_reference(B, F, N, H, D, window, causal, frames):
    q, k, v = make_inputs(B, F, N, H, D, seed=F * 31 + D)
    expected = temporal_attention_reference(*(t.double() for t in (q, k, v)), None, window, causal, frames)
    out = stattn.temporal_attention(q, k, v, window=window, causal=causal, query_frames=frames, backend="native")
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert_close(expected, out)


GROUPS = [stattn.POSETRACK.groups, stattn.COCO17.groups, [[16, 0], [1, 2, 3, 4, 5, 6, 7, 8]] + [[i] for i in range(9, 16)]]


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("frameless", [False, True])
def test_grouped_matches_reference(groups, frameless):
    q, k, v = make_inputs(3, 2, 17, 8, 4, seed=len(groups))
    if frameless:
        q, k, v = q[:, 1], k[:, 1], v[:, 1]
    flat = ([i for g in groups for i in g], [len(g) for g in groups])
    expected = grouped_attention_reference(*(t.double().reshape(3, -1, 17, 8, 4) for t in (q, k, v)), *flat)
    out = stattn.grouped_attention(q, k, v, groups, backend="native")
    assert_close(expected.reshape(out.shape), out)


@pytest.mark.parametrize("layout", ["separate", "heads-transposed", "expanded"])
def test_strided_inputs(layout):
    q, k, v = make_inputs(2, 5, 17, 4, 8, packed=False, seed=11)
    if layout == "heads-transposed":  # a token's channels are not contiguous: the kernel gets a copy
        q, k, v = (t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (q, k, v))
    elif layout == "expanded":
        q, k, v = (t[:1].expand(3, -1, -1, -1, -1) for t in (q, k, v))
    ref = temporal_attention_reference(q, k, v, None, 1, False)
    assert_close(ref, stattn.temporal_attention(q, k, v, window=1, backend="native"))
    ref = grouped_attention_reference(q, k, v, [0, 1, 2, *range(3, 17)], [3, 14])
    assert_close(ref, stattn.grouped_attention(q, k, v, [[0, 1, 2], list(range(3, 17))], backend="native"))


def test_extreme_scores_and_nan_propagation():
    q, k, v = make_inputs(2, 5, 3, 2, 4, seed=12, std=40.0)  # scores up to ~1e3: exp underflows
    assert_close(temporal_attention_reference(q.double(), k.double(), v.double()), stattn.temporal_attention(q, k, v))
    q = q.clone()
    q[0, 1, 2, 1, 0] = float("nan")
    out = stattn.temporal_attention(q, k, v, backend="native")
    assert torch.isnan(out[0, 1, 2, 1]).all()  # the poisoned query's head is NaN ...
    assert torch.isfinite(out[1]).all() and torch.isfinite(out[0, :, :2]).all()  # ... and nothing else


def test_gradients_use_the_reference_backward():
    q, k, v = (t.detach().requires_grad_() for t in make_inputs(2, 5, 17, 8, 4, packed=False, seed=13))
    grads = {}
    for backend in ("native", "reference"):
        out = stattn.temporal_attention(q, k, v, window=2, backend=backend)
        out = stattn.grouped_attention(out, k, v, stattn.COCO17, backend=backend)
        grads[backend] = torch.autograd.grad(out.square().sum(), (q, k, v))
    for a, b in zip(grads["reference"], grads["native"]):
        assert_close(a, b)


def test_opcheck_native():
    base = torch.randn(2, 3, 5, 3, 2, 4, requires_grad=True)
    q, k, v = base.unbind(3)
    opcheck(torch.ops.stattn.temporal_attention.default, (q, k, v, 0.5, 1, True, [1, 2], "native"))
    opcheck(torch.ops.stattn.grouped_attention.default, (q, k, v, [0, 2, 1, 3, 4], [2, 1, 2], 0.5, "native"))


def test_refusals_and_a_failed_build_is_a_refusal_reason(monkeypatch, tmp_path):
    q = torch.empty(1, 2, 3, 2, 4)
    with pytest.raises(ValueError, match="backend 'native' cannot run.*float64"):
        stattn.temporal_attention(q.double(), q.double(), q.double(), backend="native")
    # a compiler that fails: the build runs while deciding, so the failure is a reason, never a silent fallback
    monkeypatch.setattr(native, "_LIBS", {})
    monkeypatch.setattr(native, "_ERRORS", {})
    monkeypatch.setenv("STATTN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_FLAGS", native._FLAGS + ["-DTHIS_BUILD_MUST_FAIL", "-Werror=nonexistent-flag"])
    monkeypatch.setattr(_dispatch, "_DECIDED", {})  # decisions made with the real build are not this test's
    q, k, v = make_inputs(1, 3, 4, 3, 5, seed=14)
    with pytest.raises(ValueError, match="backend 'native' cannot run this call: .*failed to build"):
        stattn.temporal_attention(q, k, v, backend="native")
    assert any("failed to build" in r for r in native.reasons(q))
    assert _dispatch.choose_backend("temporal_attention", q, None) == "reference"  # automatic: decided up front
    assert_close(temporal_attention_reference(q, k, v), stattn.temporal_attention(q, k, v))
    with pytest.raises(RuntimeError, match="not built"):  # the op runs what it was given, or says why not
        torch.ops.stattn.temporal_attention(q, k, v, 0.5, -1, False, [], "native")


def test_build_is_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "_LIBS", {})
    monkeypatch.setenv("STATTN_CACHE_DIR", str(tmp_path))
    native._library(3, 2)
    built = sorted((tmp_path / "native").glob("*.so"))
    assert len(built) in (1, 2)  # 2: an OpenMP build this process cannot load, and its serial twin
    stamps = [p.stat().st_mtime_ns for p in built]
    monkeypatch.setattr(native, "_LIBS", {})
    native._library(3, 2)
    assert [p.stat().st_mtime_ns for p in built] == stamps and sorted((tmp_path / "native").iterdir()) == built


def test_an_openmp_build_that_cannot_load_falls_back_to_a_serial_one(tmp_path, monkeypatch):
    """A clang whose -fopenmp links libomp builds a library that needs symbols torch's libgomp lacks:
    the kernel is rebuilt without OpenMP instead of being refused."""
    monkeypatch.setattr(native, "_LIBS", {})
    monkeypatch.setenv("STATTN_CACHE_DIR", str(tmp_path))
    real, loaded = native.ctypes.CDLL, []

    def cdll(path, *args, **kwargs):
        if not str(path).endswith("_serial.so"):
            raise OSError(f"{path}: undefined symbol: __kmpc_global_thread_num")
        loaded.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(native.ctypes, "CDLL", cdll)
    assert native.build_error(3, 2) is None and len(loaded) == 1
    q, k, v = make_inputs(1, 3, 4, 3, 2, seed=15)
    assert_close(temporal_attention_reference(q, k, v), stattn.temporal_attention(q, k, v, backend="native"))

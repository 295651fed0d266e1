"""Run one attention case: inputs, float64 expectations, each provider's setup and check, timing, rows.

Modes (what one timed call does):
  fwd     out = provider(q, k, v)                       (inputs without grad: no autograd graph)
  bwd     dq, dk, dv = autograd.grad(out, (q, k, v), do) on an out computed once (retain_graph)
  fwdbwd  both: a fresh forward, then its backward

Memory floor (bytes that any implementation must move; C = H * D, s = bytes per element, T = query
tokens of the op: B*F*N for temporal, B*N for grouped on the key frame, B*F*N on all frames):
  fwd     read q, k, v + write o                       = 4 * T * C * s
  bwd     read q, k, v, do + write dq, dk, dv          = 7 * T * C * s   (P recomputed, o not re-read)
  fwdbwd  the two passes                                = 11 * T * C * s
GB/s = floor bytes / median time: an effective bandwidth of the case, the same yardstick for every
provider (global attention moves as many bytes as temporal but computes ~15x more scores).

Every provider's setup and first call run inside try/except: a failure becomes an ``n/a`` row whose
``reason`` is the exception text (plus any warning PyTorch gave, e.g. why SDPA refused a kernel). A
provider whose output (or gradients) differs from the float64 reference is not timed: status ``wrong``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from stattn.ops import _dispatch
from stattn.ops.reference import (
    grouped_attention_backward_reference,
    grouped_attention_reference,
    temporal_attention_backward_reference,
    temporal_attention_reference,
)
from stattn.testing import relative_error

from _attention_providers import PROVIDERS, SKELETON, Case, NotAvailable
from _timing import describe_error, time_providers

FLOOR_PASSES = {"fwd": 4, "bwd": 7, "fwdbwd": 11}
#: max relative error (max |diff| / max |ref|) against the float64 reference; catches layout bugs,
#: not rounding (SDPA/Flex kernels may keep P in 16 bits)
CHECK_TOL = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 6e-2}


def floor_bytes(case: Case) -> int:
    return FLOOR_PASSES[case.mode] * case.tokens * case.H * case.D * case.torch_dtype.itemsize


def default_provider(case: Case, q_op: torch.Tensor) -> str:
    """The provider ``backend=None`` amounts to: stattn's automatic backend choice for this input."""
    max_group = SKELETON.max_group_size if case.op == "grouped" else None
    q5 = q_op if q_op.dim() == 5 else q_op.unsqueeze(1)
    return "stattn-" + _dispatch.choose_backend(f"{case.op}_attention", q5, None, max_group)


@dataclass
class CaseData:
    clip: tuple  # q, k, v [B, F, N, H, D]: views of one packed leaf
    op: tuple  # the op's inputs (views of clip)
    grad_op: torch.Tensor | None
    grad_clip: torch.Tensor | None
    expected: torch.Tensor  # float64
    expected_grads: tuple | None


def make_data(case: Case, seed: int = 0) -> CaseData:
    gen = torch.Generator(device=case.device).manual_seed(seed)
    rand = lambda shape: torch.randn(shape, generator=gen, device=case.device).to(case.torch_dtype)  # noqa: E731
    packed = rand((case.B, case.F, case.N, 3, case.H, case.D))
    backward = case.mode != "fwd"
    packed.requires_grad_(backward)
    clip = packed.unbind(3)
    op = tuple(case.select(t) for t in clip)
    q64, k64, v64 = (t.detach().double() for t in op)
    if q64.dim() == 4:
        q64, k64, v64 = (t.unsqueeze(1) for t in (q64, k64, v64))
    index, sizes = SKELETON.group_index, SKELETON.group_sizes
    if case.op == "temporal":
        expected = temporal_attention_reference(q64, k64, v64)
    else:
        expected = grouped_attention_reference(q64, k64, v64, index, sizes)
    grad_op = grad_clip = expected_grads = None
    if backward:
        grad_op, grad_clip = rand(op[0].shape), rand(clip[0].shape)
        g64 = grad_op.double().reshape(expected.shape)
        if case.op == "temporal":
            grads = temporal_attention_backward_reference(g64, q64, k64, v64)
        else:
            grads = grouped_attention_backward_reference(g64, q64, k64, v64, index, sizes)
        expected_grads = tuple(g.reshape(op[0].shape) for g in grads)
    return CaseData(clip, op, grad_op, grad_clip, expected.reshape(op[0].shape), expected_grads)


class WrongResult(Exception):
    pass


def _check(case: Case, data: CaseData, out, grads) -> None:
    tol = CHECK_TOL.get(case.torch_dtype, 1e-3)
    if tuple(out.shape) != tuple(data.expected.shape):
        raise WrongResult(f"output shape {tuple(out.shape)}, expected {tuple(data.expected.shape)}")
    err = relative_error(data.expected, out)
    if not err <= tol:
        raise WrongResult(f"output differs from the float64 reference: rel err {err:.1e} > {tol:.0e}")
    for name, ref, got in zip(("dq", "dk", "dv"), data.expected_grads or (), grads or ()):
        err = relative_error(ref, got)
        if not err <= 2 * tol:
            raise WrongResult(f"{name} differs from the float64 reference: rel err {err:.1e} > {2 * tol:.0e}")


def build_runner(name: str, case: Case, data: CaseData):
    """A zero-argument callable doing one timed call of ``mode``, after one checked call."""
    provider = PROVIDERS[name]
    fwd = provider.build(case)
    inputs = data.clip if provider.clip_inputs else data.op
    if case.mode == "fwd":
        out = fwd(*inputs)
        if provider.computes_op:
            _check(case, data, out, None)
        return lambda: fwd(*inputs)
    grad = data.grad_clip if provider.clip_inputs else data.grad_op
    out = fwd(*inputs)
    grads = torch.autograd.grad(out, inputs, grad, retain_graph=True)
    if provider.computes_op:
        _check(case, data, out, grads)
    if case.mode == "bwd":
        return lambda: torch.autograd.grad(out, inputs, grad, retain_graph=True)
    return lambda: torch.autograd.grad(fwd(*inputs), inputs, grad)


def _warning_text(caught) -> str:
    seen = []
    for w in caught:
        line = str(w.message).strip().splitlines()[0] if str(w.message).strip() else ""
        if line and line not in seen:
            seen.append(line[:200])
    return (" [warnings: " + " | ".join(seen[:3]) + "]") if seen else ""


def setup_providers(case: Case, data: CaseData, names: list[str]):
    """({name: runner}, {name: (status, reason)}) for the providers that can / cannot run the case."""
    runners, refused = {}, {}
    for name in names:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                runners[name] = build_runner(name, case, data)
            except NotAvailable as exc:
                refused[name] = ("n/a", str(exc))
            except WrongResult as exc:
                refused[name] = ("wrong", str(exc))
            except Exception as exc:  # setup or first call failed: the exception is the reason
                refused[name] = ("n/a", describe_error(exc) + _warning_text(caught))
        if case.device.type == "cuda":
            try:
                torch.cuda.synchronize()
            except Exception as exc:  # a sticky CUDA error: this provider broke the context
                refused[name] = ("n/a", describe_error(exc))
                runners.pop(name, None)
    return runners, refused


def run_case(case: Case, names: list[str], timers: list[str], reps: float, warmup: float,
             base_row: dict, copy_gbs: float | None = None) -> list[dict]:  # fmt: skip
    """Rows (one per provider and timer) for one case; n/a and wrong rows carry their reason."""
    data = make_data(case)
    default = default_provider(case, data.op[0])
    runners, refused = setup_providers(case, data, names)
    nbytes = floor_bytes(case)
    scope = {"temporal": "clip"}.get(case.op) or ("key-frame" if case.grouped_frames == "key" else "all-frames")
    rows = []
    for timer in timers:
        if timer == "cudagraph" and case.mode == "bwd":  # its graph would replay a backward alone
            reason = "cudagraph: not for bwd (the stored forward ran outside the graph's stream; see fwdbwd)"
            timings = {name: reason for name in runners}
        else:
            timings = time_providers(runners, timer, reps, warmup)
        for name in names:
            row = {**base_row, "bench": "attention", "op": case.op, "scope": scope, "mode": case.mode,
                   "provider": name, "default_provider": default, "B": case.B, "F": case.F, "N": case.N,
                   "H": case.H, "D": case.D, "dtype": case.dtype, "timer": timer, "tokens": case.tokens,
                   "floor_bytes": nbytes, "status": "ok", "reason": "", "note": PROVIDERS[name].note(case),
                   "median_ms": "", "p20_ms": "", "p80_ms": "", "gbs": "", "floor_fraction": ""}  # fmt: skip
            result = refused.get(name) or timings.get(name)
            if isinstance(result, tuple):
                row["status"], row["reason"], row["note"] = result[0], result[1], ""
            elif isinstance(result, str):
                row["status"], row["reason"], row["note"] = "n/a", result, ""
            else:
                row.update({k: round(v, 5) for k, v in result.items()})
                row["gbs"] = float(f"{nbytes / (result['median_ms'] * 1e-3) / 1e9:.4g}")
                if copy_gbs:
                    row["floor_fraction"] = float(f"{row['gbs'] / copy_gbs:.4g}")
            rows.append(row)
    return rows

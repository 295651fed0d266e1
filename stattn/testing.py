"""Helpers shared by the tests and the benchmarks: one input factory, one tolerance contract."""
from __future__ import annotations

import torch

__all__ = ["make_inputs", "assert_close", "relative_error", "assert_compile_matches_eager", "TOLERANCES"]

#: Max relative error (see :func:`relative_error`) an implementation may show against the float64
#: reference, per input dtype. fp16/bf16 allow for rounding the inputs and output once each.
TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def make_inputs(
    batch: int,
    frames: int,
    tokens: int,
    heads: int,
    head_dim: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    packed: bool = True,
    requires_grad: bool = False,
    seed: int | None = 0,
    std: float = 1.0,
):
    """q, k, v `[B, F, N, H, D]`; with ``packed`` they are strided views of one `[B, F, N, 3, H, D]`.

    Packed views are what a fused qkv projection hands to attention, so that is the default.
    """
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    shape = (batch, frames, tokens, 3, heads, head_dim) if packed else (3, batch, frames, tokens, heads, head_dim)
    x = (torch.randn(shape, generator=gen) * std).to(device=device, dtype=dtype)
    if requires_grad:
        x.requires_grad_(True)
    return x.unbind(3) if packed else x.unbind(0)


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """max |out - ref| / max(max |ref|, 1e-6), in float64; inf if ``out`` has NaN/inf where ``ref`` is finite."""
    ref64, out64 = ref.detach().double(), out.detach().double()
    if ref64.shape != out64.shape:
        raise AssertionError(f"shape mismatch: reference {tuple(ref64.shape)} vs {tuple(out64.shape)}")
    if ref64.numel() == 0:
        return 0.0
    if not torch.isfinite(out64).all() and torch.isfinite(ref64).all():
        return float("inf")
    scale = ref64.abs().max().clamp_min(1e-6)
    return ((out64 - ref64).abs().max() / scale).item()


def assert_close(ref: torch.Tensor, out: torch.Tensor, tol: float | None = None, *, name: str = "output") -> None:
    """Assert ``relative_error(ref, out) <= tol`` (default: :data:`TOLERANCES` for ``out``'s dtype)."""
    tol = TOLERANCES[out.dtype] if tol is None else tol
    err = relative_error(ref, out)
    if not err <= tol:  # also catches NaN
        raise AssertionError(f"{name}: relative error {err:.3e} > tolerance {tol:.1e} ({out.dtype})")


def assert_compile_matches_eager(fn, inputs, tol: float = 1e-6, backend: str = "aot_eager") -> None:
    """``torch.compile(fn, fullgraph=True)`` gives eager's output and the gradients of its square-sum.

    ``inputs`` are leaf tensors with ``requires_grad``; ``aot_eager`` traces the forward and the
    backward (what fullgraph support needs) without the C++ compile time of inductor.
    """
    eager = fn(*inputs)
    eager_grads = torch.autograd.grad(eager.square().sum(), inputs)
    compiled = torch.compile(fn, fullgraph=True, backend=backend)(*inputs)
    compiled_grads = torch.autograd.grad(compiled.square().sum(), inputs)
    assert_close(eager, compiled, tol, name="compiled output")
    for i, (a, b) in enumerate(zip(eager_grads, compiled_grads)):
        assert_close(a, b, tol, name=f"compiled gradient {i}")

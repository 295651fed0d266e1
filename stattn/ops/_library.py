"""``torch.library`` registrations: ``stattn::temporal_attention`` and ``stattn::grouped_attention``.

Each op is an opaque ``custom_op`` (so ``torch.compile(fullgraph=True)`` and ``opcheck`` work on every
device, Triton interpreter included) with a fake implementation, an autograd formula that calls the
matching ``*_backward`` op, and a ``backend`` string argument chosen by the public functional. The
implementation runs the chosen backend: Triton, native (CPU forward; its backward is the
reference's) or the pure-PyTorch reference.

Masks travel as plain ints/lists (``window`` with -1 for "all frames", the groups flattened), which
``torch.compile`` treats as constants: no dense mask tensor exists anywhere.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import reference

_NO_WINDOW = -1


def _window(window: int) -> int | None:
    return None if window == _NO_WINDOW else window


def _frames(query_frames: Sequence[int]) -> list[int] | None:
    """The op passes query frames as a list; empty means all frames."""
    return list(query_frames) if len(query_frames) else None


def _triton():
    from . import triton as triton_ops  # lazy: Triton is optional and slow to import

    return triton_ops


def _native():
    from . import native

    return native


# --------------------------------------------------------------------------------------- temporal
@torch.library.custom_op("stattn::temporal_attention", mutates_args=())
def _temporal_attention_op(
    q: Tensor, k: Tensor, v: Tensor, scale: float, window: int, causal: bool, query_frames: Sequence[int], backend: str
) -> Tensor:
    args = (scale, _window(window), causal, _frames(query_frames))
    if backend == "triton":
        return _triton().temporal_attention_fwd(q, k, v, *args)
    if backend == "native":
        out = _native().temporal_attention_fwd(q, k, v, *args)
        if out is not None:  # None: the kernel failed to build; the reason is recorded for the dispatcher
            return out
    return reference.temporal_attention_reference(q, k, v, *args)


@_temporal_attention_op.register_fake
def _(q, k, v, scale, window, causal, query_frames, backend):
    B, F, N, H, D = q.shape
    return q.new_empty(B, len(query_frames) or F, N, H, D)


@torch.library.custom_op("stattn::temporal_attention_backward", mutates_args=())
def _temporal_attention_backward_op(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    window: int,
    causal: bool,
    query_frames: Sequence[int],
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    args = (scale, _window(window), causal, _frames(query_frames))
    if backend == "triton":
        return _triton().temporal_attention_bwd(grad, q, k, v, *args)
    return reference.temporal_attention_backward_reference(grad, q, k, v, *args)


@_temporal_attention_backward_op.register_fake
def _(grad, q, k, v, scale, window, causal, query_frames, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _temporal_setup(ctx, inputs, output):
    q, k, v, ctx.scale, ctx.window, ctx.causal, ctx.query_frames, ctx.backend = inputs
    ctx.save_for_backward(q, k, v)


def _temporal_backward(ctx, grad):
    q, k, v = ctx.saved_tensors
    dq, dk, dv = _temporal_attention_backward_op(
        grad, q, k, v, ctx.scale, ctx.window, ctx.causal, ctx.query_frames, ctx.backend
    )
    return dq, dk, dv, None, None, None, None, None


_temporal_attention_op.register_autograd(_temporal_backward, setup_context=_temporal_setup)


# ---------------------------------------------------------------------------------------- grouped
@torch.library.custom_op("stattn::grouped_attention", mutates_args=())
def _grouped_attention_op(
    q: Tensor, k: Tensor, v: Tensor, group_index: Sequence[int], group_sizes: Sequence[int], scale: float, backend: str
) -> Tensor:
    if backend == "triton":
        return _triton().grouped_attention_fwd(q, k, v, group_index, group_sizes, scale)
    if backend == "native":
        out = _native().grouped_attention_fwd(q, k, v, group_index, group_sizes, scale)
        if out is not None:
            return out
    return reference.grouped_attention_reference(q, k, v, group_index, group_sizes, scale)


@_grouped_attention_op.register_fake
def _(q, k, v, group_index, group_sizes, scale, backend):
    return q.new_empty(q.shape)


@torch.library.custom_op("stattn::grouped_attention_backward", mutates_args=())
def _grouped_attention_backward_op(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    group_index: Sequence[int],
    group_sizes: Sequence[int],
    scale: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    if backend == "triton":
        return _triton().grouped_attention_bwd(grad, q, k, v, group_index, group_sizes, scale)
    return reference.grouped_attention_backward_reference(grad, q, k, v, group_index, group_sizes, scale)


@_grouped_attention_backward_op.register_fake
def _(grad, q, k, v, group_index, group_sizes, scale, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _grouped_setup(ctx, inputs, output):
    q, k, v, ctx.group_index, ctx.group_sizes, ctx.scale, ctx.backend = inputs
    ctx.save_for_backward(q, k, v)


def _grouped_backward(ctx, grad):
    q, k, v = ctx.saved_tensors
    dq, dk, dv = _grouped_attention_backward_op(
        grad, q, k, v, ctx.group_index, ctx.group_sizes, ctx.scale, ctx.backend
    )
    return dq, dk, dv, None, None, None, None


_grouped_attention_op.register_autograd(_grouped_backward, setup_context=_grouped_setup)

temporal_attention_op = _temporal_attention_op
grouped_attention_op = _grouped_attention_op
NO_WINDOW = _NO_WINDOW

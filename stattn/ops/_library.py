"""``torch.library`` registrations: ``stattn::temporal_attention`` and ``stattn::grouped_attention``.

Each op is an opaque ``custom_op`` (so ``torch.compile(fullgraph=True)`` and ``opcheck`` work on every
device, Triton interpreter included) with a fake implementation, an autograd formula that calls the
matching ``*_backward`` op, and a ``backend`` string argument chosen by the public functional. The
body runs that backend's implementation (``_dispatch.implementation``) and nothing else: the choice,
native build included, was made before the call.

Masks travel as plain ints/lists (``window`` with -1 for "all frames", the groups flattened), which
``torch.compile`` treats as constants: no dense mask tensor exists anywhere.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ._dispatch import implementation

_NO_WINDOW = -1


def _window(window: int) -> int | None:
    return None if window == _NO_WINDOW else window


def _frames(query_frames: Sequence[int]) -> list[int] | None:
    """The op passes query frames as a list; empty means all frames."""
    return list(query_frames) if len(query_frames) else None


# --------------------------------------------------------------------------------------- temporal
@torch.library.custom_op("stattn::temporal_attention", mutates_args=())
def _temporal_attention_op(
    q: Tensor, k: Tensor, v: Tensor, scale: float, window: int, causal: bool, query_frames: Sequence[int], backend: str
) -> Tensor:
    forward, _ = implementation(backend, "temporal_attention")
    return forward(q, k, v, scale, _window(window), causal, _frames(query_frames))


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
    _, backward = implementation(backend, "temporal_attention")
    return backward(grad, q, k, v, scale, _window(window), causal, _frames(query_frames))


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
    forward, _ = implementation(backend, "grouped_attention")
    return forward(q, k, v, group_index, group_sizes, scale)


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
    _, backward = implementation(backend, "grouped_attention")
    return backward(grad, q, k, v, group_index, group_sizes, scale)


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

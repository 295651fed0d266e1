"""Public functionals: validated entry points to the registered ops.

Layout everywhere: `[B, F, N, H, D]` = batch (person clips), frames, tokens per frame (joints), heads,
head dim. q, k, v may be strided views of one packed projection `[B, F, N, 3, H, D]`.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Sequence

import torch

from . import _dispatch, _library
from ._block import local_block
from ._compile import eager_inference, exporting
from .reference import (
    BlockWeights,
    grouped_attention_backward_reference,
    grouped_attention_reference,
    local_block_reference,
    temporal_attention_backward_reference,
    temporal_attention_reference,
    temporal_mask,
)
from ..skeletons import Skeleton, normalize_groups

__all__ = [
    "temporal_attention",
    "grouped_attention",
    "local_block",
    "BlockWeights",
    "which_backend",
    "backend_reasons",
    "BACKENDS",
    "tracing",
    "temporal_attention_reference",
    "grouped_attention_reference",
    "local_block_reference",
    "temporal_attention_backward_reference",
    "grouped_attention_backward_reference",
    "temporal_mask",
]

#: Backend names in the order ``backend=None`` tries them.
BACKENDS = _dispatch.BACKENDS
_exporting = exporting  # the name earlier versions exported


def tracing() -> bool:
    """True while torch.compile, torch.export or an ONNX export traces the call: layers then trace
    their plain modules (the ops are opaque to exporters, and inline their reference math there)."""
    return torch.compiler.is_compiling() or exporting()


def which_backend(op: str, *inputs, backend: str | None = None, **meta) -> str:
    """Name of the backend that runs ``op`` on ``inputs`` (the op's tensor arguments, then its keyword
    arguments as ``meta``; for attention ``group_sizes=``); raises ``ValueError`` like the op would.

    Examples:
        >>> q = torch.randn(2, 3, 17, 8, 4)
        >>> which_backend("temporal_attention", q, backend="reference")
        'reference'
    """
    return _dispatch.choose(op, *inputs, backend=backend, **meta).name


def backend_reasons(op: str, *inputs, **meta) -> dict[str, list[str]]:
    """{backend: every reason it cannot run ``op`` on ``inputs`` when asked for} (empty list: it can)."""
    return _dispatch.refusals(op, *inputs, **meta)


def _check_qkv(op: str, q, k, v, ranks: tuple[int, ...]) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        layout = "[B, F, N, H, D]" if 5 in ranks else ""
        extra = " or [B, N, H, D]" if 4 in ranks else ""
        raise ValueError(f"{op}: q must be {want} {layout}{extra}, got shape {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{op}: {name} has shape {tuple(t.shape)} but q has {tuple(q.shape)}")
        if t.dtype != q.dtype:
            raise ValueError(f"{op}: {name} has dtype {t.dtype} but q has {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{op}: {name} is on {t.device} but q is on {q.device}")
    if not q.is_floating_point():
        raise ValueError(f"{op}: inputs must be floating point, got {q.dtype}")
    empty = [d for d, size in zip("FNHD" if q.dim() == 5 else "NHD", q.shape[1:]) if size == 0]
    if empty:
        raise ValueError(f"{op}: dimension(s) {', '.join(empty)} of shape {tuple(q.shape)} are empty")


def _check_scale(op: str, scale, head_dim: int) -> float:
    if scale is None:
        return head_dim**-0.5
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"{op}: scale must be a finite number or None, got {scale!r}")
    return float(scale)


def temporal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    window: int | None = None,
    causal: bool = False,
    query_frames: int | Sequence[int] | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Each token attends to itself across frames: query (f, n) sees keys (g, n) of the same index n.

    Args:
        q: `[B, F, N, H, D]` queries (any strides; packed-qkv views are not copied on the fast path).
        k: `[B, F, N, H, D]` keys.
        v: `[B, F, N, H, D]` values.
        scale: score scale, default `D ** -0.5`.
        window: query frame f sees key frames g with `|f - g| <= window`; None = all frames.
        causal: also require `g <= f` (online video: no look-ahead).
        query_frames: compute only these query frames (an index, negative allowed, or a sequence of
            them, returned in increasing order); keys still cover every allowed frame. The last STD
            layer needs only the key frame: `query_frames=key` does F times less work there.
        backend: None (automatic), "triton", "native" or "reference"; `STATTN_BACKEND` overrides None.

    Returns:
        `[B, Fq, N, H, D]`, contiguous, dtype of q; `Fq = F`, or the number of query frames (an int
        `query_frames` keeps the frame axis, of length 1).

    Equivalent PyTorch:
        ```
        s = torch.einsum("bfnhd,bgnhd->bnhfg", q, k) * scale
        f = torch.arange(F)
        allowed = (f[:, None] - f[None, :]).abs() <= window     # if window is not None
        allowed &= f[:, None] >= f[None, :]                     # if causal
        s = s.masked_fill(~allowed, float("-inf"))
        out = torch.einsum("bnhfg,bgnhd->bfnhd", s.softmax(-1), v)
        ```

    Supported:
        Reference: any device, float16/bfloat16/float32 (math in float32), float64; any shape.
        Native: CPU float32 forward with a C compiler (backward: the reference's closed form).
        Triton: CUDA, float32/float16/bfloat16, D <= 128, F <= 64, N <= 256.

    Examples:
        >>> q, k, v = torch.randn(3, 2, 5, 17, 8, 4).unbind(0)
        >>> temporal_attention(q, k, v, window=1).shape
        torch.Size([2, 5, 17, 8, 4])
    """
    op = "temporal_attention"
    _check_qkv(op, q, k, v, (5,))
    scale = _check_scale(op, scale, q.shape[-1])
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, numbers.Integral):
            raise ValueError(f"{op}: window must be a non-negative int or None, got {window!r}")
        if window < 0:
            raise ValueError(f"{op}: window must be >= 0 (0 = each frame alone), got {window}")
    if not isinstance(causal, bool):
        raise ValueError(f"{op}: causal must be a bool, got {causal!r}")
    frames = _check_query_frames(op, query_frames, q.shape[1])
    chosen = _dispatch.choose(op, q, backend=backend)
    if q.shape[0] == 0:
        out = (q + k + v) * 0  # empty, but keeps the autograd graph
        return out if frames is None else out[:, frames]
    if exporting():
        return temporal_attention_reference(q, k, v, scale, window, causal, frames)
    if eager_inference(q, k, v):
        return chosen.table[op][0](q, k, v, scale, window, causal, frames)
    w = _library.NO_WINDOW if window is None else int(window)
    return _library.temporal_attention_op(q, k, v, scale, w, causal, frames or [], chosen.name)


def _check_query_frames(op: str, query_frames, num_frames: int) -> list[int] | None:
    """Normalise to sorted unique non-negative indices; None when every frame is a query."""
    if query_frames is None:
        return None
    items = [query_frames] if isinstance(query_frames, numbers.Integral) else query_frames
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) == 0:
        raise ValueError(f"{op}: query_frames must be an int or a non-empty sequence of ints, got {query_frames!r}")
    frames = set()
    for f in items:
        if isinstance(f, bool) or not isinstance(f, numbers.Integral):
            raise ValueError(f"{op}: query_frames holds {f!r}, which is not an integer frame index")
        if not -num_frames <= f < num_frames:
            raise ValueError(f"{op}: query frame {f} is out of range for {num_frames} frames")
        frames.add(int(f) % num_frames)
    frames = sorted(frames)
    return None if frames == list(range(num_frames)) else frames


def grouped_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    groups,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Grouped spatial attention: inside one frame, token n attends to the tokens of its own group.

    Args:
        q: `[B, F, N, H, D]` or `[B, N, H, D]` queries (any strides).
        k: same shape as q.
        v: same shape as q.
        groups: a partition of `range(N)` (sequence of index sequences; unequal sizes and singletons
            allowed; a singleton's output is its value) or a :class:`~stattn.skeletons.Skeleton`.
        scale: score scale, default `D ** -0.5`.
        backend: None (automatic), "triton", "native" or "reference"; `STATTN_BACKEND` overrides None.

    Returns:
        Same shape as q, contiguous, dtype of q.

    Equivalent PyTorch:
        ```
        group = torch.empty(N, dtype=torch.long)
        for i, members in enumerate(groups):
            group[list(members)] = i
        allowed = group[:, None] == group[None, :]                # [N, N]
        s = torch.einsum("bfnhd,bfmhd->bfhnm", q, k) * scale
        s = s.masked_fill(~allowed, float("-inf"))
        out = torch.einsum("bfhnm,bfmhd->bfnhd", s.softmax(-1), v)
        ```

    Supported:
        Reference: any device, float16/bfloat16/float32 (math in float32), float64; any shape.
        Native: CPU float32 forward with a C compiler (backward: the reference's closed form).
        Triton: CUDA, float32/float16/bfloat16, D <= 128, F <= 64, N <= 256.

    Examples:
        >>> from stattn.skeletons import POSETRACK
        >>> q, k, v = torch.randn(3, 2, 17, 8, 4).unbind(0)         # key frame only: [B, N, H, D]
        >>> grouped_attention(q, k, v, POSETRACK).shape
        torch.Size([2, 17, 8, 4])
    """
    op = "grouped_attention"
    _check_qkv(op, q, k, v, (4, 5))
    scale = _check_scale(op, scale, q.shape[-1])
    index, sizes = _flat_groups(op, groups, q.shape[-3])
    frameless = q.dim() == 4
    if frameless:
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
    chosen = _dispatch.choose(op, q, backend=backend, group_sizes=sizes)
    if q.shape[0] == 0:
        out = (q + k + v) * 0
    elif exporting():
        out = grouped_attention_reference(q, k, v, index, sizes, scale)
    elif eager_inference(q, k, v):
        out = chosen.table[op][0](q, k, v, index, sizes, scale)
    else:
        out = _library.grouped_attention_op(q, k, v, list(index), list(sizes), scale, chosen.name)
    return out.squeeze(1) if frameless else out


def _flat_groups(op: str, groups, num_tokens: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(concatenated groups, sizes), validated; a Skeleton was validated when it was built."""
    if isinstance(groups, Skeleton):
        if groups.num_joints != num_tokens:
            raise ValueError(
                f"{op}: skeleton {groups.name!r} has {groups.num_joints} joints but the inputs have "
                f"{num_tokens} tokens per frame"
            )
        return groups.group_index, groups.group_sizes
    if isinstance(groups, tuple):  # a layer's own groups: validated once, not on every call
        try:
            return _flat_partition(groups, num_tokens)
        except TypeError:  # unhashable members: validate below, uncached
            pass
    groups = normalize_groups(groups, num_tokens)
    return tuple(i for g in groups for i in g), tuple(len(g) for g in groups)


@functools.lru_cache(maxsize=256)
def _flat_partition(groups: tuple, num_tokens: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    groups = normalize_groups(groups, num_tokens)
    return tuple(i for g in groups for i in g), tuple(len(g) for g in groups)


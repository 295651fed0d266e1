"""Pure-PyTorch reference of every stattn op: the specification, and the CPU path.

Local attention here means very short sequences (3-64 keys) with tiny heads (often 4 dims), batched by
the tens of thousands. Reshaping them into a dense batch for ``q @ k.T`` spends most of the time in
permute copies and per-matrix overhead, so the reference never permutes. It loops over the few key
positions instead, each step a large contiguous elementwise op over all queries at once:

    scores_j = (q * k_j).sum(-1) * scale                   # [..., H], all queries against key j
    out      = sum_j p_j[..., None] * v_j                  # each head's weight over its own dims

Every reduction stays inside one head: a NaN / Inf in one head of one token reaches only the outputs
of that head's attention unit (a 0/1 head-indicator GEMM would be a little faster for the scores, but
its 0 x NaN products would spread one head's NaN to every head of the token). The math runs in
float32 (float64 stays float64) and the result is cast back to the input dtype. Everything here is
differentiable by autograd; the explicit backward functions give the gradients in closed form (the
registered ops use those, as the Triton backward does).
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ._backend import OPS, Backend

__all__ = [
    "temporal_attention_reference",
    "temporal_attention_backward_reference",
    "grouped_attention_reference",
    "grouped_attention_backward_reference",
    "local_block_reference",
    "BlockWeights",
    "temporal_mask",
    "BACKEND",
]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def temporal_mask(frames: int, window: int | None, causal: bool, device=None) -> torch.Tensor | None:
    """``[F, F]`` bool, ``mask[f, g]`` = query frame f may attend key frame g; None = all allowed."""
    if (window is None or window >= frames - 1) and not causal:
        return None
    f = torch.arange(frames, device=device)
    diff = f[:, None] - f[None, :]
    allowed = torch.ones(frames, frames, dtype=torch.bool, device=device)
    if window is not None:
        allowed &= diff.abs() <= window
    if causal:
        allowed &= diff >= 0
    return allowed


def _probabilities(q, k, scale: float, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over keys, `[Lk, P, Lq, Q, H]`, from ``q [P, Lq, Q, H, D]`` and ``k [P, Lk, Q, H, D]``.

    Masked scores are *replaced* by -inf (never added to), so a non-finite key outside a query's mask
    cannot reach it.
    """
    Lk = k.shape[1]
    s = torch.stack([(q * k[:, j : j + 1]).sum(-1) for j in range(Lk)]) * scale  # [Lk, P, Lq, Q, H]
    if mask is not None:
        s = s.masked_fill(~mask.t().reshape(Lk, 1, -1, 1, 1), float("-inf"))
    return torch.softmax(s, dim=0)


def _attend(q, k, v, scale: float, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention along dim 1: queries ``q [P, Lq, Q, H, D]`` against keys/values ``[P, Lk, Q, H, D]``.

    P and Q are batch dims. ``mask [Lq, Lk]`` bool (True = allowed) or None. Returns
    ``[P, Lq, Q, H, D]`` in the compute dtype. Every query keeps at least one key under the masks
    stattn builds (itself), so no softmax row is empty.
    """
    p = _probabilities(q, k, scale, mask).unsqueeze(-1)  # [Lk, P, Lq, Q, H, 1]
    out = p[0] * v[:, :1]
    for j in range(1, k.shape[1]):
        out = out + p[j] * v[:, j : j + 1]
    return out


def _attend_backward(grad, q, k, v, scale: float, mask: torch.Tensor | None):
    """Closed-form gradients of :func:`_attend`: P = softmax(S), dS = P * (dP - rowsum(P * dP))."""
    Lk = k.shape[1]
    p = _probabilities(q, k, scale, mask)
    dp = torch.stack([(grad * v[:, j : j + 1]).sum(-1) for j in range(Lk)])  # [Lk, P, Lq, Q, H]
    ds = (p * (dp - (p * dp).sum(0, keepdim=True)) * scale).unsqueeze(-1)
    p = p.unsqueeze(-1)
    dq = ds[0] * k[:, :1]
    for j in range(1, Lk):
        dq = dq + ds[j] * k[:, j : j + 1]
    dk = torch.stack([(ds[j] * q).sum(1) for j in range(Lk)], 1)
    dv = torch.stack([(p[j] * grad).sum(1) for j in range(Lk)], 1)
    return dq, dk, dv


def _query_rows(q, query_frames, mask):
    """Select the query frames of ``q`` and the matching mask rows (all frames when None)."""
    if query_frames is None:
        return q, mask
    frames = q.shape[1]
    mask = torch.ones(frames, frames, dtype=torch.bool, device=q.device) if mask is None else mask
    idx = torch.as_tensor(list(query_frames), dtype=torch.long, device=q.device)
    return q.index_select(1, idx), mask.index_select(0, idx)


def temporal_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    window: int | None = None,
    causal: bool = False,
    query_frames: Sequence[int] | None = None,
) -> torch.Tensor:
    """Temporal attention: token n of frame f attends to token n of the allowed frames.

    Args:
        q, k, v: `[B, F, N, H, D]`, any strides.
        scale: score scale; default `D ** -0.5`.
        window: query frame f sees key frames with `|f - g| <= window`; None = all frames.
        causal: also require `g <= f`.
        query_frames: sorted frame indices whose outputs are computed; None = all F.

    Returns:
        `[B, Fq, N, H, D]` in the dtype of `q`, contiguous (`Fq = len(query_frames)` or F).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cd = _compute_dtype(q.dtype)
    mask = temporal_mask(q.shape[1], window, causal, q.device)
    qs, mask = _query_rows(q, query_frames, mask)
    out = _attend(qs.to(cd), k.to(cd), v.to(cd), scale, mask)
    return out.to(q.dtype).contiguous()


def temporal_attention_backward_reference(grad, q, k, v, scale=None, window=None, causal=False, query_frames=None):
    """Gradients `(dq, dk, dv)` of :func:`temporal_attention_reference`, each `[B, F, N, H, D]`.

    ``grad`` is `[B, Fq, N, H, D]`; dq is zero on frames that are not query frames.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cd = _compute_dtype(q.dtype)
    mask = temporal_mask(q.shape[1], window, causal, q.device)
    qs, mask = _query_rows(q, query_frames, mask)
    dq, dk, dv = _attend_backward(grad.to(cd), qs.to(cd), k.to(cd), v.to(cd), scale, mask)
    if query_frames is not None:
        full = dq.new_zeros(q.shape)
        full[:, list(query_frames)] = dq
        dq = full
    return tuple(g.to(t.dtype).contiguous() for g, t in zip((dq, dk, dv), (q, k, v)))


@functools.lru_cache(maxsize=64)
def _group_tables(group_index: tuple[int, ...], group_sizes: tuple[int, ...], device: str):
    """Groups bucketed by size: ``[(size, idx)]`` with ``idx [size * K]`` member-major.

    Gathering tokens with ``idx`` and viewing them as ``[..., size, K, ...]`` puts the K groups of one
    size side by side and their members along one axis, so a whole bucket is one dense attention.
    """
    groups, start = [], 0
    for size in group_sizes:
        groups.append(group_index[start : start + size])
        start += size
    buckets = []
    for size in sorted(set(group_sizes)):
        members = [g for g in groups if len(g) == size]
        idx = [g[j] for j in range(size) for g in members]
        buckets.append((size, torch.tensor(idx, dtype=torch.long, device=device)))
    return tuple(buckets)


def _grouped_apply(fn, tensors: Sequence[torch.Tensor], group_index, group_sizes, n_out: int):
    """Run ``fn`` on each size bucket of ``[B, F, N, H, D]`` tensors and scatter back into N."""
    B, F, N, H, D = tensors[0].shape
    outs = [torch.empty(B, F, N, H, D, dtype=tensors[0].dtype, device=tensors[0].device) for _ in range(n_out)]
    for size, idx in _group_tables(tuple(group_index), tuple(group_sizes), str(tensors[0].device)):
        K = idx.numel() // size
        gathered = [t.index_select(2, idx).view(B * F, size, K, H, D) for t in tensors]
        results = fn(size, gathered)
        for out, res in zip(outs, results):
            out.index_copy_(2, idx, res.reshape(B, F, size * K, H, D))
    return outs


def grouped_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group_index: Sequence[int],
    group_sizes: Sequence[int],
    scale: float | None = None,
) -> torch.Tensor:
    """Grouped spatial attention: token n attends to the tokens of its own group in the same frame.

    Args:
        q, k, v: `[B, F, N, H, D]`, any strides.
        group_index: the groups concatenated, a permutation of `range(N)`.
        group_sizes: length of each group in `group_index` (a singleton's output is its value).
        scale: score scale; default `D ** -0.5`.

    Returns:
        `[B, F, N, H, D]` in the dtype of `q`, contiguous.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cd = _compute_dtype(q.dtype)

    def bucket(size, t):
        # softmax over a single key is exactly 1: a singleton's output is its value
        return (t[2],) if size == 1 else (_attend(t[0], t[1], t[2], scale, None),)

    (out,) = _grouped_apply(bucket, [q.to(cd), k.to(cd), v.to(cd)], group_index, group_sizes, 1)
    return out.to(q.dtype)


def grouped_attention_backward_reference(grad, q, k, v, group_index, group_sizes, scale=None):
    """Gradients `(dq, dk, dv)` of :func:`grouped_attention_reference`, each `[B, F, N, H, D]`."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cd = _compute_dtype(q.dtype)

    def bucket(size, t):
        if size == 1:
            return torch.zeros_like(t[1]), torch.zeros_like(t[2]), t[0]
        return _attend_backward(t[0], t[1], t[2], t[3], scale, None)

    tensors = [grad.to(cd), q.to(cd), k.to(cd), v.to(cd)]
    grads = _grouped_apply(bucket, tensors, group_index, group_sizes, 3)
    return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v)))


# ------------------------------------------------------------------------------------ local block
class BlockWeights(NamedTuple):
    """The parameters of a pre-norm local-awareness block, in ``nn.Linear`` / ``nn.LayerNorm`` layout."""

    ln1_w: torch.Tensor  # [C]
    ln1_b: torch.Tensor  # [C]
    qkv_w: torch.Tensor  # [3C, C]
    qkv_b: torch.Tensor | None  # [3C], or None without a qkv bias
    proj_w: torch.Tensor  # [C, C]
    proj_b: torch.Tensor  # [C]
    ln2_w: torch.Tensor  # [C]
    ln2_b: torch.Tensor  # [C]
    fc1_w: torch.Tensor  # [HID, C]
    fc1_b: torch.Tensor  # [HID]
    fc2_w: torch.Tensor  # [C, HID]
    fc2_b: torch.Tensor  # [C]


def local_block_reference(
    x: torch.Tensor,
    weights: BlockWeights,
    kind: str,
    window: int | None = None,
    causal: bool = False,
    groups: tuple[tuple[int, ...], ...] | None = None,
    num_heads: int = 8,
    eps: tuple[float, float] = (1e-6, 1e-6),
    attention=None,
) -> torch.Tensor:
    """A whole pre-norm block: ``x + proj(attn(LN1(x)))``, then ``+ fc2(gelu(fc1(LN2(.))))``.

    Args:
        x: `[B, F, N, C]` (temporal or grouped) or `[B, N, C]` (grouped, one frame).
        weights: :class:`BlockWeights` in the dtype of x.
        kind: ``"temporal"`` or ``"grouped"`` local attention, with ``window`` / ``causal`` or ``groups``.
        num_heads: heads `H` (head dim `C / H`); eps: the two LayerNorm epsilons.
        attention: ``attention(q, k, v) -> o`` on `[..., H, D]` views, the op's own mask applied; None =
            this module's reference functions (the specification). The ``local_block`` op passes the
            public attention functionals here, dispatched with its own ``backend=``.

    Returns:
        Same shape and dtype as x; differentiable by autograd (the op's recompute backward).
    """
    w = weights
    C = x.shape[-1]
    h = F.layer_norm(x, (C,), w.ln1_w, w.ln1_b, eps[0])
    q, k, v = F.linear(h, w.qkv_w, w.qkv_b).view(*x.shape[:-1], 3, num_heads, C // num_heads).unbind(-3)
    o = (attention or _block_attention(kind, window, causal, groups))(q, k, v)
    x = x + F.linear(o.flatten(-2), w.proj_w, w.proj_b)
    h = F.layer_norm(x, (C,), w.ln2_w, w.ln2_b, eps[1])
    return x + F.linear(F.gelu(F.linear(h, w.fc1_w, w.fc1_b)), w.fc2_w, w.fc2_b)


def _block_attention(kind, window, causal, groups):
    """The block's attention through this module's reference functions."""
    if kind == "temporal":
        return lambda q, k, v: temporal_attention_reference(q, k, v, None, window, causal)
    index, sizes = [i for g in groups for i in g], [len(g) for g in groups]

    def grouped(q, k, v):
        if q.dim() == 4:  # one frame
            return grouped_attention_reference(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), index, sizes).squeeze(1)
        return grouped_attention_reference(q, k, v, index, sizes)

    return grouped


class _ReferenceBackend(Backend):
    """Pure PyTorch: runs every op, on any device and dtype (the specification)."""

    name = "reference"
    ops = frozenset(OPS)

    def _table(self):
        return {
            "temporal_attention": (temporal_attention_reference, temporal_attention_backward_reference),
            "grouped_attention": (grouped_attention_reference, grouped_attention_backward_reference),
            "local_block": (local_block_reference, None),
        }


BACKEND = _ReferenceBackend()

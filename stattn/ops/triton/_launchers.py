"""Launchers of the local-attention kernels: index tables, block configs, allocation, grid, launch.

``_temporal_attn_fwd`` / ``_grouped_attn_fwd`` (and their ``_bwd``) view the `[B, F, N, H, D]` inputs
as `[B, C, M, H, D]` by handing the kernels their strides in that order (never a copy), build or
fetch the small int32 tables that say which members form a sequence, and launch one program per
``BLOCK_S`` sequences. See ``_kernels.py`` for the tiles and ``README.md`` for the math.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import torch
import triton

from . import MAX_HEAD_DIM, MAX_ROWS, MAX_TOKENS
from ._kernels import _local_attn_bwd_kernel, _local_attn_fwd_kernel

__all__ = [
    "temporal_attention_fwd",
    "temporal_attention_bwd",
    "grouped_attention_fwd",
    "grouped_attention_bwd",
    "KernelConfig",
    "kernel_config",
    "kernel_configs",
]

LOG2E = 1.4426950408889634
#: Channels (heads x padded head dim) of one head block; more heads are looped over in the kernel.
_HEAD_BLOCK_CHANNELS = 32
#: Smallest row and head-dim blocks: F, groups or D below 4 are padded (a toy case; it keeps the
#: config list short).
_MIN_BLOCK = 4
#: Per direction: (elements of one `[BLOCK_R, BLOCK_S, BLOCK_H, BLOCK_D]` tile, tile elements per
#: thread). About 8 per thread keeps ptxas at ~100-170 registers (README.md); the backward holds
#: more tiles (q, do, dq), hence its smaller tile.
_TILES = {"fwd": (2048, 8), "bwd": (1024, 8)}


class KernelConfig(NamedTuple):
    """Compile-time block sizes of one kernel launch (everything else is a runtime argument)."""

    BLOCK_S: int  # sequences per program
    BLOCK_R: int  # rows of a sequence (frames, or members of the largest group), power of two
    BLOCK_H: int  # heads per head block
    BLOCK_D: int  # head dim, power of two
    num_warps: int


def kernel_config(direction: str, rows: int, head_dim: int) -> KernelConfig:
    """The block config ``direction`` ("fwd" or "bwd") uses for sequences of ``rows`` rows.

    A head block spans 32 channels (``BLOCK_H = 32 // BLOCK_D``, one head from D = 32 on); a tile
    holds at most ``_TILES[direction][0]`` elements and gets one warp per 256 of them (8 fp32
    elements per thread and tile), except that a single sequence at F = 64 and D >= 64 exceeds the
    tile and is capped at 16 warps.
    """
    tile, per_thread = _TILES[direction]
    block_r = max(_MIN_BLOCK, triton.next_power_of_2(rows))
    block_d = max(_MIN_BLOCK, triton.next_power_of_2(head_dim))
    block_h = max(1, _HEAD_BLOCK_CHANNELS // block_d)
    per_seq = block_r * block_h * block_d
    block_s = max(1, tile // per_seq)
    num_warps = max(1, min(16, block_s * per_seq // (32 * per_thread)))
    return KernelConfig(block_s, block_r, block_h, block_d, num_warps)


def kernel_configs() -> list[tuple[str, KernelConfig]]:
    """Every ``(direction, config)`` the launchers can pick (rows <= 64, head dim <= 128): 2 x 30.

    ``kernel_config(direction, c.BLOCK_R, c.BLOCK_D) == c``, so a shape with F (or the largest
    group) = BLOCK_R and D = BLOCK_D compiles it; the GPU tests do that for each entry.
    """
    rows = [1 << i for i in range(2, 7)]  # 4 .. 64
    head_dims = [1 << i for i in range(2, 8)]  # 4 .. 128
    return [(d, kernel_config(d, r, hd)) for d in ("fwd", "bwd") for r in rows for hd in head_dims]


def _new_empty(shape, like: torch.Tensor) -> torch.Tensor:
    """Output allocation (one place, so the tests can poison it with NaN)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _strides(t: torch.Tensor, member_dim: int) -> tuple[int, int, int, int, int]:
    """Strides of `[B, F, N, H, D]` ``t`` in the kernel's `[B, C, M, H, D]` order."""
    other_dim = 3 - member_dim
    return t.stride(0), t.stride(other_dim), t.stride(member_dim), t.stride(3), t.stride(4)


def _check(op: str, q, k, v, grad=None) -> None:
    if q.dim() != 5 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"{op}: q, k, v must share one [B, F, N, H, D] shape, got {q.shape}, {k.shape}, {v.shape}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise ValueError(f"{op}: q, k, v must share dtype and device")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"{op}: head dim {q.shape[-1]} > {MAX_HEAD_DIM}")
    if q.shape[2] > MAX_TOKENS:
        raise ValueError(f"{op}: {q.shape[2]} tokens per frame > {MAX_TOKENS}")
    if grad is not None and grad.device != q.device:
        raise ValueError(f"{op}: grad is on {grad.device} but q is on {q.device}")


def _launch_fwd(q, k, v, o, member_dim, tab_q, tab_o, tab_k, key_lo, key_hi, window, causal, scale) -> None:
    B, H, D = q.shape[0], q.shape[3], q.shape[4]
    C = q.shape[3 - member_dim]
    G, TQ = tab_q.shape
    S = B * C * G
    if S == 0:
        return
    cfg = kernel_config("fwd", TQ, D)
    grid = (triton.cdiv(S, cfg.BLOCK_S),)
    _local_attn_fwd_kernel[grid](
        q, k, v, o, tab_q, tab_o, tab_k,
        *_strides(q, member_dim), *_strides(k, member_dim), *_strides(v, member_dim), *_strides(o, member_dim),
        tab_q.stride(0), tab_k.stride(0),
        S, C, G, H, D, TQ, key_lo, key_hi, window, int(causal), scale * LOG2E,
        BLOCK_S=cfg.BLOCK_S, BLOCK_R=cfg.BLOCK_R, BLOCK_H=cfg.BLOCK_H, BLOCK_D=cfg.BLOCK_D,
        num_warps=cfg.num_warps,
    )  # fmt: skip


def _launch_bwd(grad, q, k, v, dq, dk, dv, member_dim, tab_m, tab_g, key_lo, key_hi, window, causal, scale) -> None:
    B, H, D = q.shape[0], q.shape[3], q.shape[4]
    C = q.shape[3 - member_dim]
    G, TM = tab_m.shape
    S = B * C * G
    if S == 0:
        return
    assert dq.stride() == dk.stride() == dv.stride(), "dq, dk, dv share one layout"
    cfg = kernel_config("bwd", TM, D)
    grid = (triton.cdiv(S, cfg.BLOCK_S),)
    _local_attn_bwd_kernel[grid](
        q, k, v, grad, dq, dk, dv, tab_m, tab_g,
        *_strides(q, member_dim), *_strides(k, member_dim), *_strides(v, member_dim),
        *_strides(grad, member_dim), *_strides(dq, member_dim),
        tab_m.stride(0),
        S, C, G, H, D, TM, key_lo, key_hi, window, int(causal), scale * LOG2E, scale,
        BLOCK_S=cfg.BLOCK_S, BLOCK_R=cfg.BLOCK_R, BLOCK_H=cfg.BLOCK_H, BLOCK_D=cfg.BLOCK_D,
        num_warps=cfg.num_warps,
    )  # fmt: skip


# --------------------------------------------------------------------------------------- temporal
class _TemporalPlan(NamedTuple):
    query_frames: tuple[int, ...]
    window: int  # clamped to F (None = F: every frame)
    key_lo: int  # keys some query frame can see: [key_lo, key_hi), contiguous as the queries are sorted
    key_hi: int
    rows: torch.Tensor  # [1, F] every frame: the keys, and the rows of the backward
    queries: torch.Tensor  # [1, Fq] the query frames
    out_rows: torch.Tensor  # [1, Fq] their output frame
    grad_rows: torch.Tensor  # [1, F] row of the output gradient for frame f, -1 if f is no query (dq = 0)


@functools.lru_cache(maxsize=256)
def _temporal_plan(
    op: str, frames: int, window: int | None, causal: bool, query_frames: tuple[int, ...] | None, device: torch.device
) -> _TemporalPlan:
    """Checked arguments and int32 tables of one temporal call (cached: a training loop repeats them)."""
    if frames > MAX_ROWS:
        raise ValueError(f"{op}: {frames} frames > {MAX_ROWS}")
    qf = tuple(range(frames)) if query_frames is None else query_frames
    if not qf or list(qf) != sorted(set(qf)) or qf[0] < 0 or qf[-1] >= frames:
        raise ValueError(f"{op}: query_frames must be sorted unique frame indices in [0, {frames}), got {qf}")
    w = frames if window is None else min(window, frames)
    grad_rows = [-1] * frames
    for i, f in enumerate(qf):
        grad_rows[f] = i
    tables = (range(frames), qf, range(len(qf)), grad_rows)  # separate allocations: 16-byte aligned
    tables = [torch.tensor(list(t), dtype=torch.int32, device=device).view(1, -1) for t in tables]
    key_lo = max(0, qf[0] - w)
    key_hi = min(frames, qf[-1] + 1 if causal else qf[-1] + w + 1)
    return _TemporalPlan(qf, w, key_lo, key_hi, *tables)


def _plan(op, q, window, causal, query_frames) -> _TemporalPlan:
    frames = None if query_frames is None else tuple(int(f) for f in query_frames)
    window = None if window is None else int(window)
    return _temporal_plan(op, q.shape[1], window, bool(causal), frames, q.device)


def _temporal_attn_fwd(q, k, v, scale: float, window: int | None, causal: bool, query_frames=None):
    """`[B, Fq, N, H, D]` temporal attention of the query frames (all F when None); see ``stattn.ops``."""
    op = "temporal_attention_fwd"
    _check(op, q, k, v)
    plan = _plan(op, q, window, causal, query_frames)
    B, F, N, H, D = q.shape
    o = _new_empty((B, len(plan.query_frames), N, H, D), q)
    _launch_fwd(
        q, k, v, o, 1, plan.queries, plan.out_rows, plan.rows, plan.key_lo, plan.key_hi, plan.window, causal, scale
    )
    return o


def _temporal_attn_bwd(grad, q, k, v, scale: float, window: int | None, causal: bool, query_frames=None):
    """``(dq, dk, dv)`` of :func:`_temporal_attn_fwd`; ``grad`` `[B, Fq, N, H, D]`, any strides."""
    op = "temporal_attention_bwd"
    _check(op, q, k, v, grad)
    plan = _plan(op, q, window, causal, query_frames)
    B, F, N, H, D = q.shape
    if tuple(grad.shape) != (B, len(plan.query_frames), N, H, D):
        raise ValueError(f"{op}: grad has shape {tuple(grad.shape)}, expected {(B, len(plan.query_frames), N, H, D)}")
    dq, dk, dv = (_new_empty(q.shape, q) for _ in range(3))
    _launch_bwd(
        grad, q, k, v, dq, dk, dv, 1, plan.rows, plan.grad_rows, plan.key_lo, plan.key_hi, plan.window, causal, scale
    )
    return dq, dk, dv


# ---------------------------------------------------------------------------------------- grouped
@functools.lru_cache(maxsize=256)
def _group_table(
    op: str, tokens: int, group_index: tuple[int, ...], group_sizes: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """`[G, max(group_sizes)]` int32: the members of each group, -1 padded (rows, keys, grad rows)."""
    if sorted(group_index) != list(range(tokens)) or sum(group_sizes) != tokens or min(group_sizes, default=0) < 1:
        raise ValueError(
            f"{op}: the groups must partition range({tokens}), got index {group_index}, sizes {group_sizes}"
        )
    width = max(group_sizes)
    if width > MAX_ROWS:
        raise ValueError(f"{op}: a group of {width} tokens > {MAX_ROWS}")
    table, start = [], 0
    for size in group_sizes:
        table.append(list(group_index[start : start + size]) + [-1] * (width - size))
        start += size
    return torch.tensor(table, dtype=torch.int32, device=device)


def _table(op: str, q, group_index: Sequence[int], group_sizes: Sequence[int]) -> torch.Tensor:
    index, sizes = tuple(int(i) for i in group_index), tuple(int(s) for s in group_sizes)
    return _group_table(op, q.shape[2], index, sizes, q.device)


def _grouped_attn_fwd(q, k, v, group_index: Sequence[int], group_sizes: Sequence[int], scale: float):
    """`[B, F, N, H, D]` grouped spatial attention; see ``stattn.ops.grouped_attention``."""
    op = "grouped_attention_fwd"
    _check(op, q, k, v)
    table = _table(op, q, group_index, group_sizes)
    o = _new_empty(q.shape, q)
    # window = N: everything in the group is allowed
    _launch_fwd(q, k, v, o, 2, table, table, table, 0, table.shape[1], q.shape[2], False, scale)
    return o


def _grouped_attn_bwd(grad, q, k, v, group_index: Sequence[int], group_sizes: Sequence[int], scale: float):
    """``(dq, dk, dv)`` of :func:`_grouped_attn_fwd`; ``grad`` `[B, F, N, H, D]`, any strides."""
    op = "grouped_attention_bwd"
    _check(op, q, k, v, grad)
    if grad.shape != q.shape:
        raise ValueError(f"{op}: grad has shape {tuple(grad.shape)}, expected {tuple(q.shape)}")
    table = _table(op, q, group_index, group_sizes)
    dq, dk, dv = (_new_empty(q.shape, q) for _ in range(3))
    _launch_bwd(grad, q, k, v, dq, dk, dv, 2, table, table, 0, table.shape[1], q.shape[2], False, scale)
    return dq, dk, dv


# the contract ``stattn.ops._library`` calls
temporal_attention_fwd = _temporal_attn_fwd
temporal_attention_bwd = _temporal_attn_bwd
grouped_attention_fwd = _grouped_attn_fwd
grouped_attention_bwd = _grouped_attn_bwd

"""Launcher of the fused block kernel (``_block_kernel.py``): member tables, tile sizes, the launch.

    fused_block_fwd(x, weights, kind, window=None, causal=False, groups=None, num_heads=8,
                    eps=(1e-6, 1e-6)) -> y

The Triton implementation of the ``local_block`` op: ``x`` is `[B, F, N, C]` (temporal or grouped)
or `[B, N, C]` (grouped); ``weights`` a :class:`~stattn.ops.BlockWeights` in x's dtype. The op
validates the call and the backend's reasons check its limits; this module only asserts what would
otherwise fault inside the kernel.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton

from ..reference import BlockWeights
from . import BLOCK_MAX_CHANNELS, MAX_ROWS
from ._block_kernel import _block_fwd_kernel

__all__ = ["BlockWeights", "fused_block_fwd", "block_config", "block_configs", "BlockConfig"]

LOG2E = 1.4426950408889634
#: Rows of one program's tile (more only if one sequence is longer), by (fp32, channels >= 64). fp32
#: products run on CUDA cores in exact ("ieee") mode and need more registers: these are the largest
#: tiles ptxas compiles for sm_90a without spills (python -m stattn.ops.triton._compile_check).
_ROWS = {(False, False): 64, (False, True): 64, (True, False): 32, (True, True): 16}
_MIN_DOT = 16  # tl.dot needs every dimension >= 16


class BlockConfig(NamedTuple):
    BLOCK_S: int
    BLOCK_M: int
    BLOCK_C: int
    BLOCK_D: int
    BLOCK_HC: int
    num_warps: int


def block_config(members: int, channels: int, head_dim: int, hidden: int, fp32: bool = False) -> BlockConfig:
    """Tile sizes for sequences of ``members`` rows: `_ROWS` rows per program (more only if one
    sequence is longer), channels / head dim padded to powers of two >= 16, the MLP in chunks of <= 64
    units, 8 warps (ptxas: 170-235 registers, no spills, for every variant of ``block_configs``)."""
    block_c = max(_MIN_DOT, triton.next_power_of_2(channels))
    block_m = triton.next_power_of_2(max(1, members))
    block_s = max(1, _ROWS[bool(fp32), block_c >= 64] // block_m)
    block_d = max(_MIN_DOT, triton.next_power_of_2(head_dim))
    block_hc = max(_MIN_DOT, min(64, triton.next_power_of_2(hidden)))
    num_warps = 8
    return BlockConfig(block_s, block_m, block_c, block_d, block_hc, num_warps)


def block_configs() -> list[tuple[str, int, int, BlockConfig]]:
    """(dtype, dim, heads, config) of every DSTA-supported case: dim 32 and 64, heads 1-8, sequences of
    1-16 members (F <= 9 frames, PoseTrack / COCO groups), fp32 / fp16 / bf16. HEADS and HEAD_DIM are
    compile-time constants, so they are part of a kernel variant; the MLP width is not."""
    out = []
    for dtype in ("fp32", "fp16", "bf16"):
        for dim in (32, 64):
            for heads in (1, 2, 4, 8):
                for members in (1, 2, 4, 8, 16):
                    out.append((dtype, dim, heads, block_config(members, dim, dim // heads, 2 * dim, dtype == "fp32")))
    return out


@functools.lru_cache(maxsize=256)
def _tables(kind: str, frames: int, tokens: int, groups: tuple | None, block_m: int, device: torch.device):
    """(table [G, block_m] int32, INNER, G, OUTER_STRIDE, INNER_STRIDE, number of outer indices per
    `[.., F, N, C]` row block)."""
    if kind == "temporal":
        rows = [[f * tokens for f in range(frames)] + [-1] * (block_m - frames)]
        inner, outer_stride, inner_stride = tokens, frames * tokens, 1
    else:
        rows = [list(g) + [-1] * (block_m - len(g)) for g in groups]
        inner, outer_stride, inner_stride = len(groups), tokens, 0
    table = torch.tensor(rows, dtype=torch.int32, device=device)
    return table, inner, len(rows), outer_stride, inner_stride


def fused_block_fwd(
    x: torch.Tensor,
    weights: BlockWeights,
    kind: str = "temporal",
    window: int | None = None,
    causal: bool = False,
    groups: tuple[tuple[int, ...], ...] | None = None,
    num_heads: int = 8,
    eps: tuple[float, float] = (1e-6, 1e-6),
) -> torch.Tensor:
    """The block's output for x `[B, F, N, C]` (or `[B, N, C]` for grouped); same shape and dtype."""
    if kind not in ("temporal", "grouped"):
        raise ValueError(f"fused block: kind must be 'temporal' or 'grouped', got {kind!r}")
    if kind == "temporal" and x.dim() != 4:
        raise ValueError(f"fused temporal block: x must be [B, F, N, C], got {tuple(x.shape)}")
    if kind == "grouped" and (x.dim() not in (3, 4) or groups is None):
        raise ValueError(f"fused grouped block: x must be [B, F, N, C] or [B, N, C] with groups, got {tuple(x.shape)}")
    c = x.shape[-1]
    hidden = weights.fc1_w.shape[0]
    head_dim = c // num_heads
    x = x.contiguous()
    frames = x.shape[1] if kind == "temporal" else 1
    tokens = x.shape[-2]
    members = frames if kind == "temporal" else max(len(g) for g in groups)
    if members > MAX_ROWS or c > BLOCK_MAX_CHANNELS:
        raise ValueError(f"fused block: {members} members / {c} channels exceed {MAX_ROWS} / {BLOCK_MAX_CHANNELS}")
    cfg = block_config(members, c, head_dim, hidden, fp32=x.dtype == torch.float32)
    table, inner, g, outer_stride, inner_stride = _tables(kind, frames, tokens, groups, cfg.BLOCK_M, x.device)
    outer = x.numel() // (c * outer_stride) if x.numel() else 0
    s = outer * inner
    y = torch.empty_like(x)
    if s == 0:
        return y
    # allowed member distances m_i - m_j in [lo, win]: grouped and window=None allow every pair
    win = min(int(window), members) if (kind == "temporal" and window is not None) else members
    lo = 0 if (kind == "temporal" and causal) else -win
    w = BlockWeights(*(None if t is None else t.contiguous() for t in weights))  # the kernel indexes rows
    qkv_b = w.qkv_b if w.qkv_b is not None else w.qkv_w  # a dummy pointer; HAS_QKV_BIAS=False never reads it
    grid = (triton.cdiv(s, cfg.BLOCK_S),)
    _block_fwd_kernel[grid](
        x, y, table,
        w.ln1_w, w.ln1_b, w.qkv_w, qkv_b, w.proj_w, w.proj_b, w.ln2_w, w.ln2_b, w.fc1_w, w.fc1_b, w.fc2_w, w.fc2_b,
        s, inner, g, outer_stride, inner_stride, c, hidden, win, lo, float(eps[0]), float(eps[1]),
        head_dim ** -0.5 * LOG2E,
        HEADS=num_heads, HEAD_DIM=head_dim, HAS_QKV_BIAS=w.qkv_b is not None,
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        DOT_F32=x.dtype == torch.bfloat16 and x.device.type == "cpu",  # the interpreter's bf16 dot is broken
        BLOCK_S=cfg.BLOCK_S, BLOCK_M=cfg.BLOCK_M, BLOCK_C=cfg.BLOCK_C, BLOCK_D=cfg.BLOCK_D, BLOCK_HC=cfg.BLOCK_HC,
        num_warps=cfg.num_warps,
    )  # fmt: skip
    return y

"""Local-awareness attention layers and the pre-norm transformer block DSTA stacks.

Every layer projects the input with ONE packed ``Linear(C, 3C)`` and hands q, k, v to the op as strided
views of its output (``qkv(x).view(..., 3, H, D).unbind(-3)``), never copies: at DSTA sizes a copy
costs more than the attention. The local layers call only the public functionals
:func:`stattn.temporal_attention` and :func:`stattn.grouped_attention`; :class:`GlobalAttention` (the
coupled baseline, the paper's Eq. 4) calls :func:`torch.nn.functional.scaled_dot_product_attention`.

There is no attention-probability dropout anywhere: the fused ops have none, and the official DSTA
configuration uses 0. Regularise with ``proj_drop`` / ``drop`` and ``drop_path`` instead.
"""
from __future__ import annotations

import numbers
import os
from typing import Literal, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..skeletons import Skeleton, normalize_groups
from . import fused as _fused
from ._checks import positive_int
from .drop import GRANULARITIES, DropPath

__all__ = ["TemporalAttention", "GroupedSpatialAttention", "GlobalAttention", "LocalAwarenessBlock"]

Groups = Union[Skeleton, Sequence[Sequence[int]]]


def _as_partition(groups: Groups, name: str = "groups") -> tuple[tuple[int, ...], ...]:
    """A Skeleton's groups, or a partition of `range(sum of group sizes)` validated as such."""
    if isinstance(groups, Skeleton):
        return groups.groups
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
        raise ValueError(f"{name} must be a Skeleton or a sequence of index sequences, got {type(groups).__name__}")
    sizes = [len(g) if isinstance(g, (Sequence, torch.Tensor)) else 0 for g in groups]
    return normalize_groups(groups, sum(sizes), name=name)


class _PackedQKVAttention(nn.Module):
    """Shared parts: the packed qkv projection, the output projection and its dropout."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_drop: float) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_heads", num_heads)):
            positive_int(type(self).__name__, name, value)
        if dim % num_heads:
            raise ValueError(f"{type(self).__name__}: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = int(dim), int(num_heads), int(dim) // int(num_heads)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _check(self, x: torch.Tensor, ranks: tuple[int, ...], layout: str) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() not in ranks:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: input must be {layout}, got shape {shape}")
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__}: input channel dim is {x.shape[-1]}, the layer was built for {self.dim}"
            )

    def _project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`[..., C]` -> q, k, v `[..., H, D]`: strided views of one `[..., 3, H, D]` (no copy)."""
        # view with explicit sizes, not unflatten: the ONNX tracer keeps x's batch size dynamic through it
        q, k, v = self.qkv(x).view(*x.shape[:-1], 3, self.num_heads, self.head_dim).unbind(-3)
        return q, k, v

    def _project_out(self, o: torch.Tensor) -> torch.Tensor:
        """`[..., H, D]` -> `[..., C]`."""
        return self.proj_drop(self.proj(o.flatten(-2)))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


class TemporalAttention(_PackedQKVAttention):
    """Multi-head self-attention along frames, separately for every token index (DSTA's TD, Eq. 7).

    Token ``(f, n)`` attends to tokens ``(g, n)`` of the same joint ``n`` in the other frames ``g``
    (optionally only ``|f - g| <= window``, and ``g <= f`` if ``causal``). No attention-probability
    dropout (the fused op has none; the official DSTA config uses 0).

    Args:
        dim: channels `C`; divisible by ``num_heads``.
        num_heads: heads `H` (head dim `D = C / H`, may be as small as 4).
        qkv_bias: bias on the packed q/k/v projection.
        proj_drop: dropout after the output projection.
        window: frames each side a query may see; None = all frames.
        causal: no look-ahead (online video).
        backend: forwarded to :func:`stattn.temporal_attention` (None = automatic).

    Shape:
        x: `[B, F, N, C]` -> `[B, F, N, C]`.

    Equivalent PyTorch:
        ```
        q, k, v = qkv(x).view(B, F, N, 3, H, D).unbind(3)
        s = torch.einsum("bfnhd,bgnhd->bnhfg", q, k) * D ** -0.5   # masked by window / causal
        o = torch.einsum("bnhfg,bgnhd->bfnhd", s.softmax(-1), v)
        out = proj_drop(proj(o.reshape(B, F, N, C)))
        ```

    Examples:
        >>> attn = TemporalAttention(32, num_heads=8)
        >>> attn(torch.randn(2, 3, 17, 32)).shape
        torch.Size([2, 3, 17, 32])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        window: int | None = None,
        causal: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, proj_drop)
        if window is not None and (isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 0):
            raise ValueError(f"TemporalAttention: window must be a non-negative int or None, got {window!r}")
        self.window, self.causal, self.backend = window, bool(causal), backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x `[B, F, N, C]`. Returns: `[B, F, N, C]`."""
        self._check(x, (4,), "[B, F, N, C]")
        q, k, v = self._project_qkv(x)
        o = ops.temporal_attention(q, k, v, window=self.window, causal=self.causal, backend=self.backend)
        return self._project_out(o)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}, causal={self.causal}"


class GroupedSpatialAttention(_PackedQKVAttention):
    """Multi-head self-attention inside each joint group of a frame (DSTA's SD, Eq. 8).

    Token ``n`` attends only to the tokens of its own group (in the same frame). Groups may be
    unequal; a singleton attends to itself (its attention output is its own value). No
    attention-probability dropout.

    Args:
        dim: channels `C`; divisible by ``num_heads``.
        groups: a :class:`~stattn.skeletons.Skeleton` or a partition of `range(N)`.
        num_heads: heads `H`.
        qkv_bias: bias on the packed q/k/v projection.
        proj_drop: dropout after the output projection.
        backend: forwarded to :func:`stattn.grouped_attention`.

    Shape:
        x: `[B, F, N, C]` or `[B, N, C]` (one frame) -> same shape.

    Equivalent PyTorch:
        ```
        q, k, v = qkv(x).view(B, F, N, 3, H, D).unbind(3)
        allowed = group_of[:, None] == group_of[None, :]               # [N, N]
        s = torch.einsum("bfnhd,bfmhd->bfhnm", q, k) * D ** -0.5
        o = torch.einsum("bfhnm,bfmhd->bfnhd", s.masked_fill(~allowed, -inf).softmax(-1), v)
        out = proj_drop(proj(o.reshape(B, F, N, C)))
        ```

    Examples:
        >>> from stattn.skeletons import POSETRACK
        >>> attn = GroupedSpatialAttention(32, POSETRACK)
        >>> attn(torch.randn(2, 17, 32)).shape
        torch.Size([2, 17, 32])
    """

    def __init__(
        self,
        dim: int,
        groups: Groups,
        num_heads: int = 8,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        backend: str | None = None,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, proj_drop)
        self.groups = _as_partition(groups)
        self.num_tokens = sum(len(g) for g in self.groups)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x `[B, F, N, C]` or `[B, N, C]`. Returns: same shape."""
        self._check(x, (3, 4), "[B, F, N, C] or [B, N, C]")
        if x.shape[-2] != self.num_tokens:
            raise ValueError(
                f"GroupedSpatialAttention: input has {x.shape[-2]} tokens per frame (shape {tuple(x.shape)}), "
                f"the groups partition {self.num_tokens}"
            )
        q, k, v = self._project_qkv(x)
        o = ops.grouped_attention(q, k, v, self.groups, backend=self.backend)
        return self._project_out(o)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_tokens={self.num_tokens}, group_sizes={[len(g) for g in self.groups]}"


class GlobalAttention(_PackedQKVAttention):
    """Dense multi-head self-attention over all tokens of a sample (the coupled baseline, Eq. 4).

    Every token of the `F * N` grid attends to every other one. Runs
    :func:`torch.nn.functional.scaled_dot_product_attention`; no attention-probability dropout.

    Args:
        dim: channels `C`; divisible by ``num_heads``.
        num_heads: heads `H`.
        qkv_bias: bias on the packed q/k/v projection.
        proj_drop: dropout after the output projection.

    Shape:
        x: `[B, F, N, C]` or `[B, L, C]` -> same shape.

    Examples:
        >>> GlobalAttention(32)(torch.randn(2, 3, 17, 32)).shape
        torch.Size([2, 3, 17, 32])
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, qkv_bias, proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x `[B, F, N, C]` or `[B, L, C]`. Returns: same shape."""
        self._check(x, (3, 4), "[B, F, N, C] or [B, L, C]")
        q, k, v = self._project_qkv(x.flatten(1, -2))  # [B, L, H, D] views
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self._project_out(o.transpose(1, 2)).view(x.shape)


class _Mlp(nn.Sequential):
    """Token-wise feed-forward network: Linear - GELU - Dropout - Linear - Dropout."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)


_ATTENTION_KINDS = ("temporal", "grouped", "global")


def _drop_path_layer(p: float, granularity: str, kind: str | None, attn: nn.Module) -> DropPath:
    """The block's DropPath: one attention sequence per draw is a joint (temporal) or a group (grouped)."""
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"LocalAwarenessBlock: drop_path_granularity must be one of {GRANULARITIES}, got {granularity!r}"
        )
    if granularity == "sequence" and kind is None:
        raise ValueError("LocalAwarenessBlock: drop_path_granularity='sequence' needs a named attention kind "
                         "(its sequences are unknown for a custom module)")  # fmt: skip
    if granularity != "sequence" or kind == "global":  # global attention: the sample is the one sequence
        return DropPath(p, granularity if kind != "global" else "sample")
    return DropPath(p, "sequence", groups=attn.groups if kind == "grouped" else None)


class LocalAwarenessBlock(nn.Module):
    """Pre-norm transformer block around a local-awareness (or any) attention layer.

    ``x = x + drop_path(attn(norm1(x)))``; ``x = x + drop_path(mlp(norm2(x)))`` with
    ``mlp = Linear(C, C * mlp_ratio) - GELU - Linear(C * mlp_ratio, C)``: the block DSTA stacks 4 times
    in each of its SD and TD modules (8 heads, mlp_ratio 2, LayerNorm eps 1e-6).

    Args:
        dim: channels `C`.
        attention: ``"temporal"`` (:class:`TemporalAttention`), ``"grouped"``
            (:class:`GroupedSpatialAttention`, needs ``groups``), ``"global"`` (:class:`GlobalAttention`)
            or any ``nn.Module`` mapping `[..., C]` to `[..., C]`.
        num_heads: heads `H`.
        mlp_ratio: hidden width of the MLP relative to `C`.
        qkv_bias: bias on the packed q/k/v projection.
        drop: dropout after the attention projection and inside the MLP.
        drop_path: stochastic-depth probability of both residual branches.
        norm_eps: LayerNorm epsilon.
        groups: joint groups for ``"grouped"`` (a Skeleton or a partition of `range(N)`).
        window: temporal window for ``"temporal"`` (None = all frames).
        causal: causal temporal attention for ``"temporal"``.
        backend: forwarded to the functional op (None = automatic).
        fused: run the block as one :func:`stattn.ops.local_block` op call, whose Triton
            implementation is the whole-block kernel (one launch for LN, QKV, attention, projection,
            MLP and both residuals). None (default): on CUDA in eval mode, when dispatch picks the
            kernel for the call (:func:`stattn.nn.fused.fusion_reasons` says why not), and in
            inference without autograd elsewhere (float32 on a CPU: the native C block; otherwise
            the op's composed path, what the modules compute without their per-module call
            overhead); True: on every
            call (training without dropout included), with ``backend`` (or ``STATTN_BACKEND``) choosing
            the op's implementation, default ``"triton"``, and a call it cannot run raises; False:
            never. Gradients through the kernel come from recomputing the op's reference.
        drop_path_granularity: what one stochastic-depth draw drops (:class:`~stattn.nn.DropPath`):
            ``"sample"`` (default): the branch of a whole sample; ``"sequence"``: of one attention
            sequence, drawn independently: per (sample, joint) for ``"temporal"``, per (sample, group)
            for ``"grouped"`` (what the official DSTA code does by folding sequences into the batch);
            ``"global"`` attends over the whole sample, so there both are the same.

    Shape:
        x: `[B, F, N, C]` (or `[B, N, C]` for grouped / global attention) -> same shape.

    Examples:
        >>> from stattn.skeletons import POSETRACK
        >>> blk = LocalAwarenessBlock(32, "grouped", groups=POSETRACK)
        >>> blk(torch.randn(2, 3, 17, 32)).shape
        torch.Size([2, 3, 17, 32])
    """

    def __init__(
        self,
        dim: int,
        attention: Literal["temporal", "grouped", "global"] | nn.Module = "temporal",
        num_heads: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        groups: Groups | None = None,
        window: int | None = None,
        causal: bool = False,
        backend: str | None = None,
        fused: bool | None = None,
        drop_path_granularity: Literal["sample", "sequence"] = "sample",
    ) -> None:
        super().__init__()
        if fused not in (None, True, False):
            raise ValueError(f"LocalAwarenessBlock: fused must be None, True or False, got {fused!r}")
        if isinstance(attention, nn.Module):
            attn = attention
        elif attention not in _ATTENTION_KINDS:
            raise ValueError(
                f"LocalAwarenessBlock: attention must be one of {_ATTENTION_KINDS} or an nn.Module,"
                f" got {attention!r}"
            )
        elif attention == "temporal":
            attn = TemporalAttention(dim, num_heads, qkv_bias, drop, window=window, causal=causal, backend=backend)
        elif attention == "grouped":
            if groups is None:
                raise ValueError("LocalAwarenessBlock: attention='grouped' needs groups (a Skeleton or a partition)")
            attn = GroupedSpatialAttention(dim, groups, num_heads, qkv_bias, drop, backend=backend)
        else:
            attn = GlobalAttention(dim, num_heads, qkv_bias, drop)
        kind = attention if isinstance(attention, str) else None
        #: "temporal", "grouped", "global", or None for another attention module
        self.kind = kind or {TemporalAttention: "temporal", GroupedSpatialAttention: "grouped",
                             GlobalAttention: "global"}.get(type(attn))  # fmt: skip
        if groups is not None and kind != "grouped":
            raise ValueError(f"LocalAwarenessBlock: groups are only used with attention='grouped', not {attention!r}")
        if (window is not None or causal) and kind != "temporal":
            raise ValueError(
                f"LocalAwarenessBlock: window/causal are only used with attention='temporal',"
                f" not {attention!r}"
            )
        hidden = int(dim * mlp_ratio)
        if hidden <= 0:
            raise ValueError(f"LocalAwarenessBlock: mlp_ratio {mlp_ratio!r} gives an empty MLP for dim {dim}")
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = _Mlp(dim, hidden, drop)
        self.drop_path = _drop_path_layer(drop_path, drop_path_granularity, kind, attn)
        self.fused = fused
        if fused and self.kind not in ("temporal", "grouped"):
            raise ValueError(f"LocalAwarenessBlock: fused=True, but {_fused.block_reasons(self)[0]}")

    def uses_fused(self, x: torch.Tensor) -> bool:
        """Whether ``self(x)`` runs the whole-block Triton kernel (raises for ``fused=True`` and a call
        the block cannot hand to the :func:`stattn.ops.local_block` op)."""
        use, backend = self._as_op(x)
        return use and ops.which_backend("local_block", x, _fused.block_weights(self), backend=backend,
                                         **_fused.op_meta(self)) == "triton"  # fmt: skip

    def _as_op(self, x: torch.Tensor) -> tuple[bool, str | None]:
        """(whether ``self(x)`` is one ``local_block`` op call, the ``backend=`` to call it with)."""
        if self.fused is False or (self.fused is None and self.training):
            return False, None
        ranks = (4,) if self.kind == "temporal" else (3, 4)
        if not isinstance(x, torch.Tensor) or x.dim() not in ranks or x.shape[-1] != self.attn.dim:
            return False, None  # the unfused path raises the layer's own shape error
        if self.kind == "grouped" and x.shape[-2] != self.attn.num_tokens:
            return False, None
        reasons = _fused.block_reasons(self)
        if reasons:
            if self.fused:
                raise ValueError(f"LocalAwarenessBlock(fused=True): cannot fuse this call: {'; '.join(reasons)}")
            return False, None
        if self.fused:
            return True, self.attn.backend or os.environ.get("STATTN_BACKEND") or "triton"
        if x.device.type == "cuda":  # the kernel when dispatch picks it, else the modules' own ops
            weights, meta = _fused.block_weights(self), _fused.op_meta(self)
            chosen = ops.which_backend("local_block", x, weights, backend=self.attn.backend, **meta)
            return chosen == "triton", chosen
        # inference elsewhere: one op call (the C block on a CPU) is the modules' arithmetic without their overhead
        return not _fused.needs_autograd(self, x), self.attn.backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x `[B, F, N, C]` (or `[B, N, C]`). Returns: same shape."""
        use, backend = self._as_op(x)
        if not use:
            return self._unfused_forward(x)
        return ops.local_block(x, _fused.block_weights(self), backend=backend, **_fused.op_meta(self))

    def _unfused_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

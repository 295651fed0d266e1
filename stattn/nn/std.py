"""Space-Time Decoupling (STD): DSTA's aggregation of per-joint tokens over a short clip.

Temporal dependencies (TD, Eq. 7) and spatial dependencies (SD, Eq. 8) are modelled separately by two
stacks of :class:`~stattn.nn.LocalAwarenessBlock`, then fused per joint of the key frame (Eq. 5/9).
The ablation variants of the paper's Table 4 are modes of the same module.
"""
from __future__ import annotations

import numbers
from typing import Literal

import torch
from torch import nn

from ..skeletons import POSETRACK, Skeleton
from ._checks import positive_int
from .attention import Groups, LocalAwarenessBlock, _as_partition

__all__ = ["SpaceTimeDecoupling"]

_MODES = ("decoupled", "coupled", "temporal", "spatial")
_AGGREGATIONS = ("concat", "weighted")


class SpaceTimeDecoupling(nn.Module):
    """DSTA's STD module: per-joint tokens of a clip -> aggregated features of the key frame's joints.

    ``mode="decoupled"`` (the paper) runs two stacks of ``depth`` pre-norm blocks with separate weights:

    - **TD**: all frames, temporal attention (joint ``n`` attends to joint ``n`` in every frame), plus a
      learnable per-frame position embedding `[num_frames, C]` shared by all joints; the key frame's
      output is kept;
    - **SD**: the key frame only, grouped attention within the skeleton's joint groups (every group,
      singletons included: a singleton attends to itself), plus a learnable per-position embedding
      `[max_group_size, C]` shared by all groups (joint ``j`` gets row ``position_in_group[j]``).

    Each stack ends with its own LayerNorm. Position embeddings start at zero. Stochastic depth grows
    linearly from 0 to ``drop_path`` over the blocks of each stack (official: `[0, .033, .067, .1]`).
    The two streams are fused per joint by ``aggregation``:

    - ``"weighted"`` (official code): ``a * TD + b * SD + c`` with learned scalars, i.e. a
      ``Conv2d(2, 1, 1)`` over the stacked streams (channel 0 = TD); ``out_dim = dim``. Initialised to
      ``a = b = 0.5, c = 0`` (the official code draws a, b from N(0, 1e-3); re-initialise
      ``aggregate`` to match it);
    - ``"concat"`` (the paper, Eq. 9): ``TD ⊕ SD``; ``out_dim = 2 * dim``.

    Ablation modes (paper Table 4) build only what they use: ``"temporal"`` (TD only) and ``"spatial"``
    (SD only; only the key frame of the input is read) have ``out_dim = dim``; ``"coupled"`` is the
    Eq. 4 baseline: one stack of global self-attention blocks over all `F * N` tokens
    (``scaled_dot_product_attention``) with a learnable embedding per token `[F, N, C]`, key frame kept,
    ``out_dim = dim``. ``aggregation`` only applies to ``"decoupled"``.

    Tokens stay in skeleton slot order (no internal reordering): for :data:`~stattn.skeletons.POSETRACK`
    the result in the 15 evaluated slots equals the official code's. The official code fills the unused
    ear slots 3, 4 with a copy of head_top's output and carries two extra tokens that skip SD and never
    reach the output; here slots 3, 4 are tokens of their own in singleton groups.

    Stochastic depth: ``drop_path_granularity="sample"`` (default) drops a block's branch for a whole
    clip, as classic stochastic depth skips a layer per sample; ``"sequence"`` draws once per attention
    sequence, i.e. per (clip, joint) in TD and per (clip, group) in SD, which is what the official code
    does (it folds sequences into the batch). Both are the same in expectation and in eval mode.

    Args:
        dim: token channels `C` (32 in DSTA).
        skeleton: a :class:`~stattn.skeletons.Skeleton` or a partition of `range(N)` into joint groups;
            the order inside a group is the position-embedding index.
        num_frames: frames `F` per clip (3 in the official code, 5 for the paper's best results).
        key_frame: index of the frame whose joints are returned; default ``num_frames // 2``; negative
            indices count from the end.
        mode: ``"decoupled"`` | ``"coupled"`` | ``"temporal"`` | ``"spatial"``.
        aggregation: ``"weighted"`` | ``"concat"``; used by ``"decoupled"`` only.
        depth: blocks per stack.
        num_heads: attention heads (head dim ``dim // num_heads``, 4 in DSTA).
        mlp_ratio: MLP hidden width relative to ``dim``.
        drop_path: stochastic depth of the last block of each stack.
        qkv_bias: bias on the packed q/k/v projections.
        norm_eps: epsilon of every LayerNorm.
        drop: dropout after attention projections and inside MLPs (0 in DSTA).
        backend: forwarded to the attention functionals (None = automatic).
        drop_path_granularity: ``"sample"`` or ``"sequence"`` (above); forwarded to every block.
        fused: forwarded to every block of the TD and SD stacks (see
            :class:`~stattn.nn.LocalAwarenessBlock`): None = the whole-block Triton kernel on CUDA in
            eval mode, False = never. ``mode="coupled"`` (global attention) has no fused kernel.

    Shape:
        x: `[B, F, N, C]` tokens in skeleton slot order (e.g. a JFD output `[B * F, N, C]` viewed as
        `[B, F, N, C]`, frames of one clip adjacent) -> `[B, N, out_dim]` for the key frame.

    Examples:
        >>> std = SpaceTimeDecoupling(dim=32, num_frames=3)
        >>> std(torch.randn(2, 3, 17, 32)).shape
        torch.Size([2, 17, 32])
        >>> SpaceTimeDecoupling(num_frames=5, aggregation="concat").out_dim
        64
    """

    def __init__(
        self,
        dim: int = 32,
        skeleton: Groups = POSETRACK,
        num_frames: int = 3,
        key_frame: int | None = None,
        mode: Literal["decoupled", "coupled", "temporal", "spatial"] = "decoupled",
        aggregation: Literal["weighted", "concat"] = "weighted",
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.1,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop: float = 0.0,
        backend: str | None = None,
        fused: bool | None = None,
        drop_path_granularity: Literal["sample", "sequence"] = "sample",
    ) -> None:
        super().__init__()
        name = "SpaceTimeDecoupling"
        if fused and mode == "coupled":
            raise ValueError(f"{name}: fused=True, but mode='coupled' uses global attention, which has no fused kernel")
        self.dim = positive_int(name, "dim", dim)
        self.num_frames = positive_int(name, "num_frames", num_frames)
        self.depth = positive_int(name, "depth", depth)
        if mode not in _MODES:
            raise ValueError(f"{name}: mode must be one of {_MODES}, got {mode!r}")
        if aggregation not in _AGGREGATIONS:
            raise ValueError(f"{name}: aggregation must be one of {_AGGREGATIONS}, got {aggregation!r}")
        if key_frame is None:
            key_frame = num_frames // 2
        if isinstance(key_frame, bool) or not isinstance(key_frame, numbers.Integral):
            raise ValueError(f"{name}: key_frame must be an int or None, got {key_frame!r}")
        if not -num_frames <= key_frame < num_frames:
            raise ValueError(f"{name}: key_frame {key_frame} is out of range for {num_frames} frames")
        self.key_frame = int(key_frame) % num_frames
        self.mode, self.aggregation = mode, aggregation
        self.groups = _as_partition(skeleton, name="skeleton")
        self.num_joints = sum(len(g) for g in self.groups)
        self.out_dim = 2 * dim if (mode == "decoupled" and aggregation == "concat") else dim

        rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        common = dict(num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop, norm_eps=norm_eps,
                      drop_path_granularity=drop_path_granularity)  # fmt: skip

        def stack(kind: str, **extra) -> nn.ModuleList:
            return nn.ModuleList(LocalAwarenessBlock(dim, kind, drop_path=r, **common, **extra) for r in rates)

        if mode in ("decoupled", "temporal"):
            self.temporal_pos = nn.Parameter(torch.zeros(num_frames, dim))
            self.temporal_blocks = stack("temporal", backend=backend, fused=fused)
            self.temporal_norm = nn.LayerNorm(dim, eps=norm_eps)
        if mode in ("decoupled", "spatial"):
            position = torch.empty(self.num_joints, dtype=torch.long)
            for g in self.groups:
                position[list(g)] = torch.arange(len(g))
            self.register_buffer("spatial_index", position, persistent=False)
            self.spatial_pos = nn.Parameter(torch.zeros(max(len(g) for g in self.groups), dim))
            self.spatial_blocks = stack("grouped", groups=self.groups, backend=backend, fused=fused)
            self.spatial_norm = nn.LayerNorm(dim, eps=norm_eps)
        if mode == "coupled":
            self.pos = nn.Parameter(torch.zeros(num_frames, self.num_joints, dim))
            self.blocks = stack("global")
            self.norm = nn.LayerNorm(dim, eps=norm_eps)
        if mode == "decoupled" and aggregation == "weighted":
            self.aggregate = nn.Conv2d(2, 1, kernel_size=1)
            with torch.no_grad():
                self.aggregate.weight.fill_(0.5)
                self.aggregate.bias.zero_()

    def _check(self, x: torch.Tensor) -> None:
        name = "SpaceTimeDecoupling"
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}: input must be [B, F, N, C] tokens, got shape {shape}")
        _, frames, joints, channels = x.shape
        if frames != self.num_frames:
            raise ValueError(
                f"{name}: input has {frames} frames (shape {tuple(x.shape)}),"
                f" built for num_frames={self.num_frames}"
            )
        if joints != self.num_joints:
            raise ValueError(
                f"{name}: input has {joints} joints (shape {tuple(x.shape)}),"
                f" the skeleton has {self.num_joints}"
            )
        if channels != self.dim:
            raise ValueError(
                f"{name}: input has {channels} channels (shape {tuple(x.shape)}),"
                f" built for dim={self.dim}"
            )

    def temporal(self, x: torch.Tensor) -> torch.Tensor:
        """TD stream: `[B, F, N, C]` -> key-frame tokens `[B, N, C]` (after the stack's LayerNorm)."""
        h = x + self.temporal_pos[:, None, :]
        for blk in self.temporal_blocks:
            h = blk(h)
        return self.temporal_norm(h[:, self.key_frame])

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """SD stream: `[B, F, N, C]` -> key-frame tokens `[B, N, C]`; other frames are not read."""
        h = x[:, self.key_frame] + self.spatial_pos[self.spatial_index]
        for blk in self.spatial_blocks:
            h = blk(h)
        return self.spatial_norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, F, N, C]` -> `[B, N, out_dim]` (key frame)."""
        self._check(x)
        if self.mode == "coupled":
            h = x + self.pos
            for blk in self.blocks:
                h = blk(h)
            return self.norm(h[:, self.key_frame])
        if self.mode == "temporal":
            return self.temporal(x)
        if self.mode == "spatial":
            return self.spatial(x)
        td, sd = self.temporal(x), self.spatial(x)
        if self.aggregation == "concat":
            return torch.cat([td, sd], dim=-1)
        w = self.aggregate.weight.view(2)
        return td * w[0] + sd * w[1] + self.aggregate.bias

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_joints={self.num_joints}, num_frames={self.num_frames}, key_frame={self.key_frame}, "
            f"mode={self.mode!r}, aggregation={self.aggregation!r}, depth={self.depth}, out_dim={self.out_dim}"
        )

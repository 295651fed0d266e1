"""Joint-centric Feature Decoder (JFD): backbone features -> one token per joint (DSTA Sec. 3.2)."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..skeletons import Skeleton
from ._checks import positive_int

__all__ = ["JointCentricFeatureDecoder"]

_MODES = ("pooled", "map")


def _positive_int(name: str, value) -> int:
    return positive_int("JointCentricFeatureDecoder", name, value)


class JointCentricFeatureDecoder(nn.Module):
    """Decode per-joint feature tokens from a backbone's output.

    **pooled** (default; DSTA's ResNet setup and the official code): the globally average-pooled
    feature `x [B, C_in]` goes through an RLE-style *normalized* linear layer
    ``y = (x @ W.T) / ||x||_2 + b`` (L2 norm of each input sample; the weight is not normalized;
    `W [N * dim, C_in]` xavier-uniform with gain 0.01, `b` zero), split into `N` tokens of `dim`
    channels. The output does not depend on the scale of ``x`` (``y(a x) = y(x)`` for ``a > 0``), however
    small ``||x||`` is: this is the official layer's arithmetic (same order of operations), which matters
    for an un-pretrained backbone whose pooled features can be tiny. Where the norm is exactly 0 (an
    all-zero input, or one so small that its squares underflow) the official layer divides by zero; here
    ``y = b`` there. ``eps > 0`` instead clamps the norm to ``eps`` (bounded output and gradient near
    zero, no longer scale invariant below ``eps``).

    **map** (for backbones whose output is a spatial map, e.g. HRNet): ``Conv2d(C_in, N, 1)`` gives one
    map per joint, each `h * w` map is flattened and a ``Linear(h * w, dim)`` shared by all joints
    turns it into the joint's token. The paper puts its HRNet JFD in the (unavailable) supplementary;
    this design is ours. Parameters: ``C_in * N + N + h * w * dim + dim``; for HRNet-W48 at 384x288
    (stride-4 maps 96x72, 48 channels, N=17, dim=32) that is 222,049 (~0.22M), consistent with the
    paper's 63.9M total for DSTA on HRNet-W48 (the backbone alone is ~63.6M).

    Frames are folded into the batch: feed `[B * F, ...]`, get `[B * F, N, dim]`, then view it as
    `[B, F, N, dim]` for :class:`~stattn.nn.SpaceTimeDecoupling` (frames of a clip adjacent).

    Args:
        in_channels: backbone channels `C_in` (2048 for ResNet-50 C5, 48 for HRNet-W48).
        num_joints: tokens `N`, or a Skeleton (its joint count).
        dim: channels per joint token (32 in DSTA).
        mode: ``"pooled"`` or ``"map"``.
        feature_size: `(h, w)` of the feature map; required by (and only used by) ``"map"``.
        eps: lower bound on `||x||_2` in ``"pooled"`` mode; 0 (default) = none, as the official layer.

    Shape:
        pooled: `[B, C_in]` or `[B, C_in, h, w]` (averaged over `h, w` first) -> `[B, N, dim]`.
        map: `[B, C_in, h, w]` -> `[B, N, dim]`.

    Examples:
        >>> jfd = JointCentricFeatureDecoder(2048, num_joints=17, dim=32)
        >>> jfd(torch.randn(6, 2048, 8, 6)).shape
        torch.Size([6, 17, 32])
        >>> JointCentricFeatureDecoder(48, 17, 32, mode="map", feature_size=(96, 72))(torch.randn(2, 48, 96, 72)).shape
        torch.Size([2, 17, 32])
    """

    def __init__(
        self,
        in_channels: int,
        num_joints: int | Skeleton = 17,
        dim: int = 32,
        mode: Literal["pooled", "map"] = "pooled",
        feature_size: tuple[int, int] | None = None,
        eps: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(num_joints, Skeleton):
            num_joints = num_joints.num_joints
        self.in_channels = _positive_int("in_channels", in_channels)
        self.num_joints = _positive_int("num_joints", num_joints)
        self.dim = _positive_int("dim", dim)
        if mode not in _MODES:
            raise ValueError(f"JointCentricFeatureDecoder: mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        if not eps >= 0:
            raise ValueError(f"JointCentricFeatureDecoder: eps must be >= 0, got {eps!r}")
        self.eps = float(eps)
        if mode == "pooled":
            if feature_size is not None:
                raise ValueError("JointCentricFeatureDecoder: feature_size is only used with mode='map'")
            self.feature_size = None
            self.weight = nn.Parameter(torch.empty(num_joints * dim, in_channels))
            self.bias = nn.Parameter(torch.zeros(num_joints * dim))
            nn.init.xavier_uniform_(self.weight, gain=0.01)
        else:
            if feature_size is None or len(feature_size) != 2:
                raise ValueError(
                    f"JointCentricFeatureDecoder: mode='map' needs feature_size=(h, w),"
                    f" got {feature_size!r}"
                )
            h, w = (_positive_int("feature_size", s) for s in feature_size)
            self.feature_size = (h, w)
            self.joint_maps = nn.Conv2d(in_channels, num_joints, kernel_size=1)
            self.embed = nn.Linear(h * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x `[B, C_in]` or `[B, C_in, h, w]` (pooled), `[B, C_in, h, w]` (map). Returns: `[B, N, dim]`."""
        name = "JointCentricFeatureDecoder"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: input must be a tensor, got {type(x).__name__}")
        ranks = (2, 4) if self.mode == "pooled" else (4,)
        if x.dim() not in ranks:
            want = "[B, C_in] or [B, C_in, h, w]" if self.mode == "pooled" else "[B, C_in, h, w]"
            raise ValueError(f"{name}: mode={self.mode!r} takes {want}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name}: input has {x.shape[1]} channels (shape {tuple(x.shape)}),"
                f" built for {self.in_channels}"
            )
        if self.mode == "pooled":
            if x.dim() == 4:
                x = x.mean(dim=(-2, -1))
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
            # a zero norm divides 0 (x W^T is 0 there, up to underflow) by 1 instead of by 0: y = b
            norm = norm.clamp_min(self.eps) if self.eps > 0 else torch.where(norm > 0, norm, torch.ones_like(norm))
            y = F.linear(x, self.weight) / norm + self.bias
            return y.view(x.shape[0], self.num_joints, self.dim)
        if tuple(x.shape[-2:]) != self.feature_size:
            raise ValueError(
                f"{name}: feature map is {tuple(x.shape[-2:])},"
                f" built for feature_size={self.feature_size}"
            )
        maps = self.joint_maps(x)  # [B, N, h, w]
        return self.embed(maps.flatten(-2))

    def extra_repr(self) -> str:
        size = f", feature_size={self.feature_size}" if self.feature_size is not None else ""
        return f"in_channels={self.in_channels}, num_joints={self.num_joints}, dim={self.dim}, mode={self.mode!r}{size}"

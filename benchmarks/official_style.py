"""An eager port of the official DSTA head, written from its description (docs/official_code.md §1).

This is the baseline users run today: the official code's data flow and layouts, re-written here (no
code was copied), so the benchmarks can time it next to stattn on the same weights.

Data flow of the official head for B persons and F frames (3 in the official code; a parameter here):

  feats [F*B, C_in, h, w]   frame-major: all clips' first frames, then all second frames, ...
  GAP -> [F*B, C_in]; normalized Linear -> y = (x W^T) / ||x||_2 + b -> [F*B, 17, 32], regrouped [F, B, 17, 32]
  SD   key frame only: internal tokens 0..14 as 5 groups of 3, 'b (g n) c -> (b g) n c' (groups folded
       into the batch, no mask), + a position embedding [3, 32] shared by the groups, 4 pre-norm
       blocks, LayerNorm; tokens 15, 16 bypass SD
  TD   all 17 tokens over the frames, 'f b p c -> (b p) f c', + a frame embedding [1, F, 32] shared by
       the joints, 4 blocks, LayerNorm, key frame kept
  fuse Conv2d(2, 1, 1) over the stacked (TD, SD) streams: a * TD + b * SD + c
  remap output slot s <- internal token JOINT_ORDER[s] (slots 3 and 4, the unused ears, copy token 0)
  head coords = Linear(LayerNorm(x)); sigma = sigmoid(Linear(LayerNorm'(x))); score = mean(1 - sigma)

Blocks are timm-style: x + drop_path(attn(norm1(x))), x + drop_path(mlp(norm2(x))); attention packs
q, k, v in one Linear, reshapes to [S, H, L, D], and computes softmax((q @ k^T) * D^-0.5) @ v.

:func:`load_from_stattn` copies the weights of stattn's JointCentricFeatureDecoder +
SpaceTimeDecoupling + RegressionHead into the port (stattn keeps tokens in skeleton slot order; the
official code in its internal order), after which both compute the same numbers in the 15 evaluated
slots. :func:`check_matches_stattn` asserts that on random inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: output slot s takes the internal token JOINT_ORDER[s] (official ``joint_ordor``)
JOINT_ORDER = (1, 2, 0, 0, 0, 3, 6, 4, 7, 5, 8, 9, 12, 10, 13, 11, 14)


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample of dim 0 (a joint sequence in TD, a group in SD, as officially)."""
    if not training or p == 0.0:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [S, L, C] sequences
        S, L, C = x.shape
        qkv = self.qkv(x).reshape(S, L, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [S, H, L, D]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(S, L, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + _drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class OfficialStyleHead(nn.Module):
    """The official DSTA head (JFD pooled + STD + regression head) in eager PyTorch.

    Args:
        in_channels: backbone channels `C_in` (2048 for the official ResNet-50).
        num_frames: frames `F` (official: 3); the key frame is ``F // 2``.
        dim, depth, num_heads, mlp_ratio, drop_path: as officially (32, 4, 8, 2, 0.1).
        num_groups, group_size: the SD groups over the first ``num_groups * group_size`` tokens.

    Shape:
        feats `[F * B, C_in, h, w]` frame-major -> (coords `[B, 17, 2]`, sigma `[B, 17, 2]`,
        score `[B, 17, 1]`).
    """

    def __init__(self, in_channels: int = 2048, num_frames: int = 3, dim: int = 32, depth: int = 4,
                 num_heads: int = 8, mlp_ratio: float = 2.0, drop_path: float = 0.1, num_joints: int = 17,
                 num_groups: int = 5, group_size: int = 3) -> None:  # fmt: skip
        super().__init__()
        self.num_frames, self.num_joints, self.dim = num_frames, num_joints, dim
        self.num_groups, self.group_size = num_groups, group_size
        self.jfd_weight = nn.Parameter(torch.empty(num_joints * dim, in_channels))
        self.jfd_bias = nn.Parameter(torch.zeros(num_joints * dim))
        nn.init.xavier_uniform_(self.jfd_weight, gain=0.01)
        rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.spatial_pos = nn.Parameter(torch.zeros(group_size, dim))
        self.spatial_blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, r, 1e-6) for r in rates)
        self.spatial_norm = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_pos = nn.Parameter(torch.zeros(1, num_frames, dim))
        self.temporal_blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, r, 1e-6) for r in rates)
        self.temporal_norm = nn.LayerNorm(dim, eps=1e-6)
        self.aggregate = nn.Conv2d(2, 1, kernel_size=1)
        self.coord_norm = nn.LayerNorm(dim, eps=1e-5)
        self.coord = nn.Linear(dim, 2)
        self.sigma_norm = nn.LayerNorm(dim, eps=1e-5)
        self.sigma = nn.Linear(dim, 2)
        self.register_buffer("joint_order", torch.tensor(JOINT_ORDER), persistent=False)

    def forward(self, feats: torch.Tensor):
        Fr, N, C = self.num_frames, self.num_joints, self.dim
        x = feats.mean(dim=(-2, -1))  # global average pooling
        y = (x @ self.jfd_weight.t()) / torch.norm(x, dim=1, keepdim=True) + self.jfd_bias
        tokens = y.reshape(Fr, -1, N, C)  # [F, B, N, C]
        B = tokens.shape[1]
        key = tokens[Fr // 2]

        grouped = self.num_groups * self.group_size  # SD: 'b (g n) c -> (b g) n c' on the grouped tokens
        s = key[:, :grouped].reshape(B * self.num_groups, self.group_size, C) + self.spatial_pos
        for blk in self.spatial_blocks:
            s = blk(s)
        s = self.spatial_norm(s).reshape(B, grouped, C)
        sd = torch.cat([s, key[:, grouped:]], dim=1)  # bypass tokens re-appended unchanged

        t = tokens.permute(1, 2, 0, 3).reshape(B * N, Fr, C) + self.temporal_pos  # 'f b p c -> (b p) f c'
        for blk in self.temporal_blocks:
            t = blk(t)
        td = self.temporal_norm(t)[:, Fr // 2].reshape(B, N, C)

        fused = self.aggregate(torch.stack([td, sd], dim=1)).squeeze(1)  # [B, N, C]
        feat = fused[:, self.joint_order]
        coords = self.coord(self.coord_norm(feat))
        sigma = torch.sigmoid(self.sigma(self.sigma_norm(feat)))
        return coords, sigma, (1 - sigma).mean(dim=-1, keepdim=True)


def internal_order(groups) -> list[int]:
    """Slots in the official internal token order: the multi-joint groups in order, then the singletons."""
    return [i for g in groups if len(g) > 1 for i in g] + [i for g in groups if len(g) == 1 for i in g]


def _copy_(dst: nn.Module, src: nn.Module) -> None:
    for (name, p), (src_name, q) in zip(dst.named_parameters(), src.named_parameters(), strict=True):
        if p.shape != q.shape:
            raise ValueError(f"shape mismatch: {name} {tuple(p.shape)} <- {src_name} {tuple(q.shape)}")
        p.copy_(q)


def _copy_block_(dst: Block, src: nn.Module) -> None:
    for a, b in ((dst.norm1, src.norm1), (dst.attn.qkv, src.attn.qkv), (dst.attn.proj, src.attn.proj),
                 (dst.norm2, src.norm2), (dst.mlp.fc1, src.mlp.fc1), (dst.mlp.fc2, src.mlp.fc2)):  # fmt: skip
        _copy_(a, b)


@torch.no_grad()
def load_from_stattn(port: OfficialStyleHead, jfd: nn.Module, std: nn.Module, head: nn.Module) -> OfficialStyleHead:
    """Copy stattn's JFD (pooled) + STD (decoupled, weighted) + RegressionHead weights into ``port``.

    stattn's JFD emits tokens in skeleton slot order; the official one in its internal order (groups
    concatenated), so the JFD rows are permuted. Raises ValueError if the modules cannot map onto the
    official layout (other groups, concat aggregation, map-mode JFD, other sizes).
    """
    if getattr(jfd, "mode", None) != "pooled":
        raise ValueError("the official head has a pooled JFD")
    if std.mode != "decoupled" or std.aggregation != "weighted":
        raise ValueError(f"the official STD is decoupled with weighted fusion, got {std.mode!r}/{std.aggregation!r}")
    sizes = sorted(len(g) for g in std.groups if len(g) > 1)
    if sizes != [port.group_size] * port.num_groups or std.num_joints != port.num_joints:
        raise ValueError(f"the official SD has {port.num_groups} groups of {port.group_size} + singletons, "
                         f"got groups {std.groups}")  # fmt: skip
    order = internal_order(std.groups)
    grouped = order[: port.num_groups * port.group_size]
    for slot, token in enumerate(JOINT_ORDER):  # the official remap must send every grouped slot home
        if slot in grouped and order[token] != slot:
            raise ValueError(f"output slot {slot} would read internal token {token}, which is slot {order[token]}")
    N, C = port.num_joints, port.dim
    port.jfd_weight.copy_(jfd.weight.view(N, C, -1)[order].reshape(N * C, -1))
    port.jfd_bias.copy_(jfd.bias.view(N, C)[order].reshape(-1))
    port.spatial_pos.copy_(std.spatial_pos)
    port.temporal_pos.copy_(std.temporal_pos[None])
    for dst, src in zip(port.spatial_blocks, std.spatial_blocks, strict=True):
        _copy_block_(dst, src)
    for dst, src in zip(port.temporal_blocks, std.temporal_blocks, strict=True):
        _copy_block_(dst, src)
    for a, b in ((port.spatial_norm, std.spatial_norm), (port.temporal_norm, std.temporal_norm),
                 (port.aggregate, std.aggregate), (port.coord_norm, head.coord_norm), (port.coord, head.coord),
                 (port.sigma_norm, head.sigma_norm), (port.sigma, head.sigma)):  # fmt: skip
        _copy_(a, b)
    return port


def to_frame_major(feats: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`[B * F, ...]` clip-major (stattn) -> `[F * B, ...]` frame-major (official)."""
    return feats.unflatten(0, (-1, num_frames)).transpose(0, 1).flatten(0, 1)


def port_of(stattn_head, in_channels: int) -> OfficialStyleHead:
    """An OfficialStyleHead with the weights of a ``_stattn_head.StattnHead`` (same device and dtype)."""
    port = OfficialStyleHead(in_channels, stattn_head.num_frames, dim=stattn_head.std.dim,
                             depth=stattn_head.std.depth)  # fmt: skip
    ref = next(stattn_head.parameters())
    return load_from_stattn(port.to(ref), stattn_head.jfd, stattn_head.std, stattn_head.head)


def check_matches_stattn(stattn_head, feats: torch.Tensor, tol: float = 1e-5,
                         port: OfficialStyleHead | None = None) -> float:  # fmt: skip
    """Run both heads in eval mode on clip-major ``feats``; assert the 15 evaluated slots agree.

    Returns the largest relative error (max |diff| / max |ref|) over coords, sigma and score.
    """
    from stattn.skeletons import POSETRACK
    from stattn.testing import relative_error

    port = port if port is not None else port_of(stattn_head, feats.shape[1])
    was = stattn_head.training, port.training
    stattn_head.eval(), port.eval()
    try:
        with torch.no_grad():
            ref = stattn_head(feats)
            got = port(to_frame_major(feats, stattn_head.num_frames))
    finally:
        stattn_head.train(was[0]), port.train(was[1])
    slots = list(POSETRACK.evaluated)
    worst = 0.0
    for name, a, b in zip(("coords", "sigma", "score"), (ref.coords, ref.sigma, ref.score), got):
        err = relative_error(a[:, slots], b[:, slots])
        worst = max(worst, err)
        if not err <= tol:
            raise AssertionError(f"official-style port differs from stattn in {name}: rel err {err:.2e} > {tol:.0e}")
    return worst

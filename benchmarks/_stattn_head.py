"""The DSTA head assembled from stattn's modules: JFD (pooled) -> STD -> RegressionHead."""
from __future__ import annotations

import torch
from torch import nn

from stattn.nn import JointCentricFeatureDecoder, RegressionHead, SpaceTimeDecoupling
from stattn.nn.rle import RegressionOutput
from stattn.skeletons import POSETRACK


class StattnHead(nn.Module):
    """Backbone features of B clips of F frames -> key-frame joint coordinates, sigmas and scores.

    Args:
        in_channels: backbone channels `C_in`.
        num_frames: frames `F` per clip (key frame ``F // 2``).
        dim, depth, num_heads: STD token channels, blocks per stack, heads (DSTA: 32, 4, 8).
        backend: forwarded to the attention functionals (None = automatic).
        fused: forwarded to ``SpaceTimeDecoupling(fused=...)`` unless None (stattn's default: the
            whole-block kernel on CUDA in eval mode); TypeError where stattn lacks the keyword.

    Shape:
        feats `[B * F, C_in, h, w]`, clip-major (the F frames of a clip adjacent) -> RegressionOutput
        with coords `[B, N, 2]`, sigma `[B, N, 2]`, score `[B, N, 1]`.
    """

    def __init__(self, in_channels: int = 256, num_frames: int = 3, dim: int = 32, depth: int = 4,
                 num_heads: int = 8, backend: str | None = None, fused: bool | None = None) -> None:  # fmt: skip
        super().__init__()
        self.num_frames = num_frames
        self.jfd = JointCentricFeatureDecoder(in_channels, POSETRACK, dim)
        extra = {} if fused is None else {"fused": fused}
        self.std = SpaceTimeDecoupling(dim, POSETRACK, num_frames, depth=depth, num_heads=num_heads,
                                       backend=backend, **extra)  # fmt: skip
        self.head = RegressionHead(self.std.out_dim)

    def forward(self, feats: torch.Tensor) -> RegressionOutput:
        tokens = self.jfd(feats)  # [B * F, N, dim]
        return self.head(self.std(tokens.view(-1, self.num_frames, *tokens.shape[1:])))


def randomize_(module: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Add N(0, std) noise to every parameter: zero-initialised embeddings and symmetric fusion weights
    would otherwise hide a wrong token order or a swapped stream."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen).to(p) * std)
    return module

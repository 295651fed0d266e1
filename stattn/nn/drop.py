"""Stochastic depth: drop a whole residual branch for some samples of the batch while training."""
from __future__ import annotations

import numbers

import torch
from torch import nn

__all__ = ["DropPath", "drop_path"]


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
        raise ValueError(f"drop path probability must be a number in [0, 1), got {p!r}")
    return float(p)


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero the whole of ``x`` for a random subset of samples (dim 0), rescale the others.

    Args:
        x: `[B, ...]` output of a residual branch; every sample is kept or dropped as one piece.
        p: probability of dropping a sample, in `[0, 1)`.
        training: apply only when True; otherwise ``x`` is returned unchanged.

    Returns:
        `[B, ...]`, same dtype: ``x * keep / (1 - p)`` with ``keep[b] ~ Bernoulli(1 - p)``, so the
        expectation over the random mask is ``x``.

    Equivalent PyTorch:
        ```
        keep = torch.rand(B, *[1] * (x.dim() - 1)) < 1 - p
        out = x * keep / (1 - p)
        ```

    Examples:
        >>> drop_path(torch.ones(4, 3), 0.5, training=False).sum().item()
        12.0
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop_path: p must be in [0, 1), got {p!r} (p = 1 would divide by zero)")
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Stochastic depth (per-sample drop of a residual branch), identity in eval mode.

    Args:
        p: probability of dropping each sample's branch output, in `[0, 1)`; kept samples are
            scaled by `1 / (1 - p)`.

    Shape:
        `[B, ...]` -> `[B, ...]`; the sample is dim 0 (a whole person clip in stattn's layers).

    Examples:
        >>> layer = DropPath(0.1).eval()
        >>> x = torch.randn(2, 3, 17, 32)
        >>> torch.equal(layer(x), x)
        True
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = _check_p(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"

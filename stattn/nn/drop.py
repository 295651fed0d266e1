"""Stochastic depth: drop a residual branch for some samples (or some token sequences) while training."""
from __future__ import annotations

import numbers
from typing import Literal, Sequence

import torch
from torch import nn

__all__ = ["DropPath", "drop_path", "GRANULARITIES"]

#: "sample": one draw per sample (dim 0); "sequence": one draw per attention sequence of a sample
GRANULARITIES = ("sample", "sequence")


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
        raise ValueError(f"drop path probability must be a number in [0, 1), got {p!r}")
    return float(p)


def drop_path(
    x: torch.Tensor,
    p: float = 0.0,
    training: bool = False,
    per_token: bool = False,
    group_of: torch.Tensor | None = None,
) -> torch.Tensor:
    """Zero a residual branch's output for a random subset of samples (or of their tokens), rescale the rest.

    Args:
        x: `[B, ..., N, C]` output of a residual branch.
        p: probability of dropping, in `[0, 1)`.
        training: apply only when True; otherwise ``x`` is returned unchanged.
        per_token: draw once per (sample, token of dim -2) instead of once per sample; the draw is
            shared by the other dims (e.g. all frames of a joint's trajectory).
        group_of: `[N]` long group id of each token of dim -2; with ``per_token`` the tokens of one
            group share one draw (one draw per (sample, group)). Ids index `range(G)`.

    Returns:
        `[B, ..., N, C]`, same dtype: ``x * keep / (1 - p)`` with ``keep ~ Bernoulli(1 - p)`` per unit,
        so the expectation over the random mask is ``x``.

    Equivalent PyTorch:
        ```
        keep = torch.rand(B, *[1] * (x.dim() - 1)) < 1 - p     # per sample
        keep = torch.rand(B, *[1] * (x.dim() - 3), N, 1) < 1 - p  # per_token
        keep = (torch.rand(B, G) < 1 - p)[:, group_of].view(B, *[1] * (x.dim() - 3), N, 1)  # per group
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
    if not per_token:
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)
    if x.dim() < 3:
        raise ValueError(f"drop_path(per_token=True): x must be [B, ..., N, C], got shape {tuple(x.shape)}")
    b, n, middle = x.shape[0], x.shape[-2], (1,) * (x.dim() - 3)
    if group_of is None:
        mask = x.new_empty((b, *middle, n, 1)).bernoulli_(keep)
    else:
        if group_of.shape != (n,):
            raise ValueError(f"drop_path: group_of has shape {tuple(group_of.shape)}, x has {n} tokens on dim -2")
        units = x.new_empty((b, int(group_of.max()) + 1)).bernoulli_(keep)
        mask = units[:, group_of].view(b, *middle, n, 1)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Stochastic depth (drop of a residual branch), identity in eval mode.

    Args:
        p: probability of dropping a unit's branch output, in `[0, 1)`; kept units are scaled by
            `1 / (1 - p)`.
        granularity: what one draw covers. ``"sample"`` (default): a whole sample (dim 0, a person
            clip in stattn's layers), i.e. classic stochastic depth: the block is skipped for that sample.
            ``"sequence"``: one attention sequence of a sample, as when sequences are folded into the
            batch (the official DSTA code): per (sample, token of dim -2) by default, i.e. per joint
            trajectory for temporal attention; per (sample, group) with ``groups``.
        groups: a partition of the `N` tokens of dim -2 (grouped attention); only with ``"sequence"``.

    Shape:
        `[B, ..., N, C]` -> same shape.

    Examples:
        >>> layer = DropPath(0.1).eval()
        >>> x = torch.randn(2, 3, 17, 32)
        >>> torch.equal(layer(x), x)
        True
        >>> DropPath(0.1, "sequence", groups=[[0, 1], [2]]).train()(torch.ones(4, 3, 8)).shape
        torch.Size([4, 3, 8])
    """

    def __init__(
        self,
        p: float = 0.0,
        granularity: Literal["sample", "sequence"] = "sample",
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.p = _check_p(p)
        if granularity not in GRANULARITIES:
            raise ValueError(f"DropPath: granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if groups is not None and granularity != "sequence":
            raise ValueError("DropPath: groups are only used with granularity='sequence'")
        self.granularity = granularity
        group_of = None
        if groups is not None:
            group_of = torch.empty(sum(len(g) for g in groups), dtype=torch.long)
            for gi, g in enumerate(groups):
                group_of[list(g)] = gi
        self.register_buffer("group_of", group_of, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training, per_token=self.granularity == "sequence", group_of=self.group_of)

    def extra_repr(self) -> str:
        return f"p={self.p:g}" + (f", granularity={self.granularity!r}" if self.granularity != "sample" else "")

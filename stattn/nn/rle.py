"""Residual log-likelihood estimation (RLE): RealNVP flow, RLE loss, coordinate/sigma head.

RLE (Li et al., ICCV 2021) trains a regressor to output a joint location ``mu_hat`` and a scale
``sigma``. The normalised residual ``mu_bar = (mu_hat - mu) / sigma`` is scored by a small
normalizing flow that learns the residual density; the flow is a training-time tool only and is
never run at inference. DSTA (CVPR 2024) uses the same loss on top of its joint tokens.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn

__all__ = ["RLELoss", "RealNVP", "RegressionHead", "RegressionOutput"]

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_SQRT_2PI = 0.5 * _LOG_2PI
_SQRT2 = math.sqrt(2.0)


def _coupling_net(hidden: int, bounded: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Linear(2, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden), nn.LeakyReLU(),
        nn.Linear(hidden, 2),
    ]
    if bounded:  # tanh keeps exp(+-s) within [1/e, e]: the flow can never over/underflow
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class RealNVP(nn.Module):
    """Two-dimensional RealNVP flow with a standard-normal prior.

    Each of the ``num_layers`` affine couplings keeps one coordinate (mask ``m``) and maps the
    other one: ``x' = m*x + (1-m)*(x*exp(s(m*x)) + t(m*x))``; masks alternate ``[0, 1]``,
    ``[1, 0]``. The scale net ends in ``tanh``. The prior is ``N(prior_mean, I)``. Calling the
    module returns :meth:`log_prob`.

    Args:
        hidden (int): width of the scale and translation MLPs.
        num_layers (int): number of affine couplings.
        prior_mean (tuple[float, float]): prior mean; ``(0, 0)`` as RLE/mmpose, DSTA uses
            ``(0.5, 0.5)``.
        init (str): ``"xavier"`` (xavier-uniform gain 0.01, zero bias: the flow starts close
            to the identity, as mmpose), ``"default"`` (PyTorch default init, what RLE runs) or
            ``"dsta"`` (PyTorch default weights with every bias zeroed, as DSTA's init_weights).

    Examples:
        >>> flow = RealNVP()
        >>> flow.log_prob(torch.zeros(4, 17, 2)).shape
        torch.Size([4, 17])
        >>> z, log_det = flow.to_latent(torch.randn(5, 2))
        >>> flow.sample(3).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        hidden: int = 64,
        num_layers: int = 6,
        prior_mean: tuple[float, float] = (0.0, 0.0),
        init: Literal["xavier", "default", "dsta"] = "xavier",
    ) -> None:
        super().__init__()
        if num_layers < 1 or hidden < 1:
            raise ValueError(f"need num_layers >= 1 and hidden >= 1, got {num_layers}, {hidden}")
        masks = torch.tensor([[0.0, 1.0] if i % 2 == 0 else [1.0, 0.0] for i in range(num_layers)])
        self.register_buffer("masks", masks)  # [L, 2]
        self.register_buffer("prior_mean", torch.tensor(prior_mean, dtype=torch.float32))  # [2]
        self.s = nn.ModuleList(_coupling_net(hidden, bounded=True) for _ in range(num_layers))
        self.t = nn.ModuleList(_coupling_net(hidden, bounded=False) for _ in range(num_layers))
        if init == "xavier":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight, gain=0.01)
                    nn.init.zeros_(m.bias)
        elif init == "dsta":  # DSTA's init_weights: PyTorch default weights, every bias zeroed
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)
        elif init != "default":
            raise ValueError(f"init must be 'xavier', 'default' or 'dsta', got {init!r}")

    def to_data(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> data (generative direction), couplings applied first to last.

        Args:
            z (torch.Tensor): latent points `[..., 2]`.

        Returns:
            torch.Tensor: data points `[..., 2]`.
        """
        x = z
        for mask, s_net, t_net in zip(self.masks, self.s, self.t):
            kept = x * mask
            s = s_net(kept) * (1 - mask)
            t = t_net(kept) * (1 - mask)
            x = kept + (1 - mask) * (x * torch.exp(s) + t)
        return x

    def to_latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> latent (density direction), couplings undone last to first.

        Args:
            x (torch.Tensor): data points `[..., 2]`.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: latent points `[..., 2]` and
            ``log|det d z / d x|`` `[...]`.
        """
        z = x
        log_det = x.new_zeros(x.shape[:-1])
        for i in reversed(range(len(self.s))):
            mask = self.masks[i]
            kept = z * mask
            s = self.s[i](kept) * (1 - mask)
            t = self.t[i](kept) * (1 - mask)
            z = kept + (1 - mask) * (z - t) * torch.exp(-s)
            log_det = log_det - s.sum(-1)
        return z, log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of the flow at ``x``.

        Args:
            x (torch.Tensor): points `[..., 2]`.

        Returns:
            torch.Tensor: ``log p(x)`` `[...]`.
        """
        z, log_det = self.to_latent(x)
        # N(mean, I) written out: torch.distributions objects are not buffers and break .to()
        prior = -0.5 * (z - self.prior_mean).square().sum(-1) - _LOG_2PI
        return prior + log_det

    forward = log_prob

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws ``n`` points from the flow.

        Args:
            n (int): number of samples.
            generator (torch.Generator | None): random generator on the flow's device.

        Returns:
            torch.Tensor: samples `[n, 2]`, on the flow's device and dtype.
        """
        mean = self.prior_mean
        z = torch.randn(n, 2, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.to_data(z + mean)


def _float_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    # the flow may live in fp64 (tests) or fp32 while the model runs in another dtype
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return default


def _clamp_straight_through(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    # value is clamped, gradient is the identity: a sigma that sank below eps can still recover
    return x + (x.clamp(lo, hi) - x).detach()


class RLELoss(nn.Module):
    """Residual log-likelihood estimation loss (Li et al. 2021), with the flow it trains.

    With ``r = mu_hat - mu`` and ``log_phi = flow.log_prob(mu_bar)`` (one value per joint),
    per joint ``k`` and dimension ``d``:

    - ``variant="rle"`` (official RLE code, copied by DSTA): ``mu_bar = r / sigma``;
      ``A = log(sigma_d) - log_phi`` weighted by the **x-column** weight only;
      ``B = log(sigma_d*sqrt(2 pi)) + |r_d| / (sqrt(2)*sigma_d + 1e-9)`` weighted by ``w_d``.
      Reduction: ``sum / batch`` if ``sum(w) > 0`` else ``sum`` (with non-negative weights the
      second branch is 0: it only avoids a division when no joint is labelled).
    - ``variant="mmpose"``: ``mu_bar = r / (sigma + 1e-9)``; ``B = log(2 sigma_d) + |mu_bar_d|``
      (``q_distribution="laplace"``) or ``log(sigma_d*sqrt(2 pi)) + mu_bar_d**2 / 2``
      (``"gaussian"``); ``(A + B) * w_d``. Reduction: ``sum / batch``.

    ``log_phi`` is subtracted in each of the two dims, as both sources do. ``residual=False``
    keeps term A only; ``size_average=False`` returns the plain sum. The loss can be negative,
    which is normal for a log-likelihood (RLE issue #40).

    The loss owns the flow (``self.flow``): its parameters then reach the optimizer and the
    checkpoint with the model's, and it stays out of the inference path, which is all RLE needs.

    Numerics: sigma is clamped to ``[eps, 1]`` in value (gradient passes straight through), so
    sigma 0 or 1 never gives inf/NaN. ``eps=1e-6`` (2.5e-4 px on a 256 px crop) keeps
    gradients ~1/sigma^3 finite in fp32 even for residuals of 1e3 crop widths. Math runs in
    at least fp32; the flow runs in its own parameter dtype.

    Args:
        variant (str): ``"rle"`` (default: what DSTA trains with) or ``"mmpose"``.
        q_distribution (str): ``"laplace"`` or ``"gaussian"`` (``"gaussian"`` needs mmpose).
        residual (bool): add term B.
        size_average (bool): divide by the batch size as described above.
        eps (float): lower clamp of sigma.
        flow (nn.Module | None): a 2-D flow with ``log_prob([..., 2]) -> [...]``; default
            ``RealNVP(prior_mean=prior_mean, init=flow_init)``.
        prior_mean (tuple[float, float]): prior mean of the default flow (DSTA: ``(0.5, 0.5)``).
        flow_init (str): init of the default flow, see :class:`RealNVP`.

    Examples:
        >>> loss_fn = RLELoss(prior_mean=(0.5, 0.5), flow_init="dsta")  # as DSTA trains
        >>> pred, target = torch.rand(4, 17, 2), torch.rand(4, 17, 2)
        >>> sigma = torch.rand(4, 17, 2).sigmoid()
        >>> loss = loss_fn(pred, sigma, target, target_weight=torch.ones(4, 17, 1))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        variant: Literal["rle", "mmpose"] = "rle",
        q_distribution: Literal["laplace", "gaussian"] = "laplace",
        residual: bool = True,
        size_average: bool = True,
        eps: float = 1e-6,
        flow: nn.Module | None = None,
        prior_mean: tuple[float, float] = (0.0, 0.0),
        flow_init: Literal["xavier", "default", "dsta"] = "xavier",
    ) -> None:
        super().__init__()
        if variant not in ("rle", "mmpose"):
            raise ValueError(f"variant must be 'rle' or 'mmpose', got {variant!r}")
        if q_distribution not in ("laplace", "gaussian"):
            raise ValueError(f"q_distribution must be 'laplace'/'gaussian', got {q_distribution!r}")
        if variant == "rle" and q_distribution != "laplace":
            raise ValueError("variant='rle' has a fixed Laplace term B; use variant='mmpose'")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        self.variant, self.q_distribution = variant, q_distribution
        self.residual, self.size_average, self.eps = residual, size_average, eps
        self.flow = flow if flow is not None else RealNVP(prior_mean=prior_mean, init=flow_init)

    def extra_repr(self) -> str:
        return (f"variant={self.variant!r}, q_distribution={self.q_distribution!r}, "
                f"residual={self.residual}, size_average={self.size_average}, eps={self.eps}")

    def forward(
        self,
        pred: torch.Tensor,
        sigma: torch.Tensor,
        target: torch.Tensor,
        target_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Computes the loss.

        Args:
            pred (torch.Tensor): predicted coordinates `[B, K, 2]`.
            sigma (torch.Tensor): scales in ``(0, 1)`` (after the sigmoid) `[B, K, 2]`.
            target (torch.Tensor): ground-truth coordinates `[B, K, 2]`.
            target_weight (torch.Tensor | None): `[B, K]`, `[B, K, 1]` or `[B, K, 2]`;
                ``None`` means all ones.

        Returns:
            torch.Tensor: scalar loss `[]`.
        """
        if pred.dim() != 3 or pred.shape[-1] != 2:
            raise ValueError(f"pred must be [B, K, 2], got {tuple(pred.shape)}")
        if sigma.shape != pred.shape or target.shape != pred.shape:
            raise ValueError(f"shapes differ: pred {tuple(pred.shape)}, sigma "
                             f"{tuple(sigma.shape)}, target {tuple(target.shape)}")
        dtype = torch.promote_types(pred.dtype, torch.float32)
        pred, target = pred.to(dtype), target.to(dtype)
        sigma = _clamp_straight_through(sigma.to(dtype), self.eps, 1.0)
        w = self._weight(target_weight, pred)  # [B, K, 1] or [B, K, 2]

        r = pred - target
        mu_bar = r / sigma if self.variant == "rle" else r / (sigma + 1e-9)
        flow_dtype = _float_dtype(self.flow, dtype)
        log_phi = self.flow.log_prob(mu_bar.to(flow_dtype)).to(dtype).unsqueeze(-1)  # [B, K, 1]
        term_a = torch.log(sigma) - log_phi  # [B, K, 2]

        if self.variant == "rle":
            loss = term_a * w[..., :1]
            if self.residual:
                term_b = torch.log(sigma) + _LOG_SQRT_2PI + r.abs() / (_SQRT2 * sigma + 1e-9)
                loss = loss + term_b * w
            total = loss.sum()
            if self.size_average:
                # a tensor select, not a Python branch: no graph break under torch.compile
                total = torch.where(w.sum() > 0, total / pred.shape[0], total)
            return total

        loss = term_a
        if self.residual:
            if self.q_distribution == "laplace":
                term_b = torch.log(2 * sigma) + mu_bar.abs()
            else:
                term_b = torch.log(sigma) + _LOG_SQRT_2PI + 0.5 * mu_bar.square()
            loss = loss + term_b
        total = (loss * w).sum()
        return total / pred.shape[0] if self.size_average else total

    @staticmethod
    def _weight(target_weight: torch.Tensor | None, pred: torch.Tensor) -> torch.Tensor:
        if target_weight is None:
            return pred.new_ones(pred.shape[:-1] + (1,))
        w = target_weight.to(pred.dtype)
        if w.dim() == 2:
            w = w.unsqueeze(-1)
        if w.shape[:2] != pred.shape[:2] or w.dim() != 3 or w.shape[-1] not in (1, 2):
            raise ValueError(f"target_weight must be [B, K], [B, K, 1] or [B, K, 2] with "
                             f"B, K = {tuple(pred.shape[:2])}, got {tuple(target_weight.shape)}")
        return w


class RegressionOutput(NamedTuple):
    """Output of :class:`RegressionHead`: ``coords`` `[B, K, 2]`, ``sigma`` `[B, K, 2]`,
    ``score`` `[B, K, 1]`."""

    coords: torch.Tensor
    sigma: torch.Tensor
    score: torch.Tensor


class RegressionHead(nn.Module):
    """Per-joint coordinate and scale head (DSTA), shared across joints.

    ``coords = Linear(LayerNorm(x))`` (no activation; DSTA targets are crop-normalised to
    ``[0, 1]``), ``sigma = sigmoid(Linear(LayerNorm'(x)))`` with its own LayerNorm, and the
    confidence ``score = mean_d(1 - sigma_d)``.

    Args:
        in_features (int): joint feature size ``C``.
        eps (float): LayerNorm epsilon (DSTA: 1e-5).

    Examples:
        >>> head = RegressionHead(32)
        >>> out = head(torch.randn(4, 17, 32))
        >>> out.coords.shape, out.sigma.shape, out.score.shape
        (torch.Size([4, 17, 2]), torch.Size([4, 17, 2]), torch.Size([4, 17, 1]))
    """

    def __init__(self, in_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.coord_norm = nn.LayerNorm(in_features, eps=eps)
        self.coord = nn.Linear(in_features, 2)
        self.sigma_norm = nn.LayerNorm(in_features, eps=eps)
        self.sigma = nn.Linear(in_features, 2)

    def forward(self, x: torch.Tensor) -> RegressionOutput:
        """Predicts coordinates, scales and scores.

        Args:
            x (torch.Tensor): joint features `[B, K, C]` (any leading dims).

        Returns:
            RegressionOutput: ``coords`` `[B, K, 2]`, ``sigma`` `[B, K, 2]` in ``(0, 1)``,
            ``score`` `[B, K, 1]`.
        """
        coords = self.coord(self.coord_norm(x))
        sigma = torch.sigmoid(self.sigma(self.sigma_norm(x)))
        score = (1 - sigma).mean(-1, keepdim=True)
        return RegressionOutput(coords, sigma, score)

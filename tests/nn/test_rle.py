"""Tests for stattn.nn.rle: RealNVP density/invertibility, RLE loss formulas, regression head."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from stattn.nn.rle import RealNVP, RegressionHead, RegressionOutput, RLELoss

LOG_2PI = math.log(2 * math.pi)
MEANS = [(0.0, 0.0), (0.5, 0.5)]


def perturbed_flow(init, prior_mean, hidden=64, seed=0, scale=0.3):
    """A float64 flow whose couplings are far from the identity (log-det std ~0.3-0.5)."""
    torch.manual_seed(seed)
    flow = RealNVP(hidden=hidden, prior_mean=prior_mean, init=init).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def identity_flow(prior_mean=(0.0, 0.0)):
    """All weights zero: s = tanh(0) = 0 and t = 0, so log_prob is the prior's log-density."""
    flow = RealNVP(prior_mean=prior_mean).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.zero_()
    return flow


def gaussian_log_density(z, mean):
    return -0.5 * (z - torch.as_tensor(mean, dtype=z.dtype)).square().sum(-1) - LOG_2PI


# ----------------------------------------------------------------------------- RealNVP


@pytest.mark.parametrize("prior_mean", MEANS)
@pytest.mark.parametrize("init", ["default", "xavier"])
def test_flow_density_integrates_to_one(init, prior_mean):
    # Width 16 instead of 64: the coupling/log-det code is the same, the grid costs 16x less.
    flow = perturbed_flow(init, prior_mean, hidden=16)
    with torch.no_grad():
        samples = flow.sample(20000, generator=torch.Generator().manual_seed(1))
        lo, hi = samples.min(0).values, samples.max(0).values
        lo, hi = lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo)
        n = 300
        h = (hi - lo) / n
        gx, gy = (lo[i] + h[i] * (torch.arange(n, dtype=torch.float64) + 0.5) for i in range(2))
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="ij"), -1)  # [n, n, 2]
        cell = h[0] * h[1]
        mass = (flow.log_prob(grid).exp().sum() * cell).item()
        z, log_det = flow.to_latent(grid[::3, ::3])  # coarse grid is enough for the mutant
        flipped = (gaussian_log_density(z, prior_mean) - log_det).exp().sum() * cell * 9
    # Tolerance 1e-3: the midpoint rule on a smooth, fast-decaying density converges quickly
    # (measured |mass - 1| <= 2.5e-4 for these four flows at n=300 and n=600); the box is the
    # sample hull padded by 50% per side, and if 5e-4 of the mass lay outside the hull, all 20000
    # samples would land inside with probability e^-10. A log-det with the wrong sign is off by
    # > 0.35 here, so the test can fail.
    assert abs(mass - 1.0) < 1e-3, mass
    assert abs(flipped.item() - 1.0) > 0.1


@pytest.mark.parametrize("prior_mean", MEANS)
def test_flow_invertible_float64(prior_mean):
    flow = perturbed_flow("default", prior_mean)
    x = 3 * torch.randn(256, 2, dtype=torch.float64)
    with torch.no_grad():
        z, _ = flow.to_latent(x)
        assert (z - x).abs().max() > 0.1  # non-trivial map
        torch.testing.assert_close(flow.to_data(z), x, rtol=0, atol=1e-10)
        torch.testing.assert_close(flow.to_latent(flow.to_data(x))[0], x, rtol=0, atol=1e-10)


def test_flow_invertible_float32():
    flow = RealNVP(init="default")
    x = 3 * torch.randn(256, 2)
    with torch.no_grad():
        torch.testing.assert_close(flow.to_data(flow.to_latent(x)[0]), x, rtol=0, atol=1e-4)


@pytest.mark.parametrize("prior_mean", MEANS)
def test_flow_log_det_matches_autograd_jacobian(prior_mean):
    flow = perturbed_flow("xavier", prior_mean)
    points = torch.tensor([[0.0, 0.0], [0.3, -1.2], [2.5, 0.7], [-4.0, 3.0]], dtype=torch.float64)
    for x in points:
        jac = torch.autograd.functional.jacobian(lambda p: flow.to_latent(p)[0], x)  # [2, 2]
        z, log_det = flow.to_latent(x)
        expected = torch.linalg.slogdet(jac).logabsdet
        assert abs(log_det.item()) > 0.01
        torch.testing.assert_close(log_det, expected, rtol=0, atol=1e-10)
        # log p(x) = log N(z; mean, I) + log|det dz/dx|
        lp = -0.5 * ((z[0] - prior_mean[0]) ** 2 + (z[1] - prior_mean[1]) ** 2) - LOG_2PI
        torch.testing.assert_close(flow.log_prob(x), lp + expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("prior_mean", MEANS)
def test_identity_flow_is_the_prior(prior_mean):
    x = torch.randn(7, 2, dtype=torch.float64)
    want = gaussian_log_density(x, prior_mean)
    torch.testing.assert_close(identity_flow(prior_mean).log_prob(x), want)


def test_flow_shapes_dtype_and_device_moves():
    flow = RealNVP(prior_mean=(0.5, 0.5))
    assert flow(torch.zeros(3, 4, 5, 2)).shape == (3, 4, 5)
    assert flow.log_prob(torch.zeros(2)).shape == ()
    flow = flow.double()  # buffers follow the module
    assert flow.prior_mean.dtype == flow.masks.dtype == torch.float64
    assert flow.sample(10).dtype == torch.float64
    assert {n for n, _ in flow.named_buffers()} == {"masks", "prior_mean"}
    assert flow.masks.tolist() == [[0, 1], [1, 0]] * 3
    assert RealNVP(hidden=8, num_layers=3).s[2][0].out_features == 8


def test_flow_sample_matches_prior_through_identity():
    x = identity_flow((0.5, 0.5)).sample(20000, generator=torch.Generator().manual_seed(0))
    half = torch.full((2,), 0.5, dtype=torch.float64)
    torch.testing.assert_close(x.mean(0), half, atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(0), 2 * half, atol=0.03, rtol=0)


def test_xavier_init_starts_near_identity():
    flow = RealNVP(init="xavier")
    assert all(m.bias.abs().max() == 0 for m in flow.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(100, 2)
    with torch.no_grad():
        torch.testing.assert_close(flow.to_latent(x)[0], x, atol=1e-3, rtol=0)
    with pytest.raises(ValueError):
        RealNVP(init="kaiming")


# ----------------------------------------------------------------------------- RLELoss: numbers


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        # mu_bar = (1, 0); log_phi = -1/2 - log 2pi; A = log .1 + log .5 - 2 log_phi = 1.68002186
        # B = log(.1 sqrt(2pi)) + .1/(sqrt2 .1) + log(.5 sqrt(2pi)) + 0 = -0.45074843
        (dict(variant="rle"), 1.2292734283066016),
        (dict(variant="rle", residual=False), 1.6800218592646998),
        # B = log(.2) + 1 + log(1) + 0 (mu_bar_x = .1/(.1+1e-9))
        (dict(variant="mmpose"), 1.0705839168305997),
        # B = log(.1 sqrt(2pi)) + 1/2 + log(.5 sqrt(2pi)) + 0
        (dict(variant="mmpose", q_distribution="gaussian"), 1.0221666221200543),
    ],
)
def test_loss_literal_single_joint(kwargs, expected):
    loss_fn = RLELoss(flow=identity_flow(), **kwargs)
    pred = torch.tensor([[[0.3, 0.5]]], dtype=torch.float64)
    target = torch.tensor([[[0.2, 0.5]]], dtype=torch.float64)
    sigma = torch.tensor([[[0.1, 0.5]]], dtype=torch.float64)
    assert loss_fn(pred, sigma, target).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def hand_loss(flow, pred, sigma, target, weight, variant, q, residual, size_average):
    """Element-by-element Python loops over the formulas of spec section 2.3."""
    B, K, _ = pred.shape
    total = 0.0
    for b, k in itertools.product(range(B), range(K)):
        p, s, t = pred[b, k].tolist(), sigma[b, k].tolist(), target[b, k].tolist()
        w = weight[b, k].tolist() if weight.dim() == 3 else [weight[b, k].item()]
        w = w * 2 if len(w) == 1 else w
        if variant == "rle":
            bar = [(p[d] - t[d]) / s[d] for d in range(2)]
        else:
            bar = [(p[d] - t[d]) / (s[d] + 1e-9) for d in range(2)]
        log_phi = flow.log_prob(torch.tensor(bar, dtype=torch.float64)).item()
        for d in range(2):
            a = math.log(s[d]) - log_phi
            if variant == "rle":
                qb = (math.log(s[d] * math.sqrt(2 * math.pi))
                      + abs(p[d] - t[d]) / (math.sqrt(2) * s[d] + 1e-9))
                total += a * w[0] + (qb * w[d] if residual else 0.0)
            else:
                if q == "laplace":
                    qb = math.log(2 * s[d]) + abs(bar[d])
                else:
                    qb = math.log(s[d] * math.sqrt(2 * math.pi)) + 0.5 * bar[d] ** 2
                total += (a + (qb if residual else 0.0)) * w[d]
    if size_average and (variant == "mmpose" or float(weight.sum()) > 0):
        total /= B
    return total


CONFIGS = [
    ("rle", "laplace", True),
    ("rle", "laplace", False),
    ("mmpose", "laplace", True),
    ("mmpose", "gaussian", True),
    ("mmpose", "laplace", False),
]


@pytest.mark.parametrize("weight_shape", [(2, 3), (2, 3, 1), (2, 3, 2)])
@pytest.mark.parametrize("size_average", [True, False])
@pytest.mark.parametrize("variant, q, residual", CONFIGS)
def test_loss_matches_hand_computation(variant, q, residual, size_average, weight_shape):
    flow = perturbed_flow("default", (0.5, 0.5), seed=3)
    pred = torch.tensor([[[0.10, 0.90], [0.40, 0.35], [0.75, 0.20]],
                         [[0.55, 0.60], [0.05, 0.95], [0.30, 0.30]]], dtype=torch.float64)
    target = torch.tensor([[[0.12, 0.80], [0.40, 0.50], [0.60, 0.25]],
                           [[0.50, 0.66], [0.20, 0.90], [0.31, 0.28]]], dtype=torch.float64)
    sigma = torch.tensor([[[0.05, 0.30], [0.20, 0.10], [0.90, 0.40]],
                          [[0.02, 0.60], [0.50, 0.50], [0.15, 0.07]]], dtype=torch.float64)
    # x and y weights differ in the [B, K, 2] case, so using the y column in term A fails
    weight = torch.tensor([[[1.0, 0.0], [1.5, 1.2], [0.0, 1.0]],
                           [[1.2, 1.2], [0.0, 0.0], [1.0, 0.5]]], dtype=torch.float64)
    weight = weight[..., 0] if len(weight_shape) == 2 else weight[..., : weight_shape[-1]]
    loss_fn = RLELoss(variant=variant, q_distribution=q, residual=residual,
                      size_average=size_average, flow=flow)
    got = loss_fn(pred, sigma, target, weight).item()
    expected = hand_loss(flow, pred, sigma, target, weight, variant, q, residual, size_average)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)
    # no weight means all-ones
    got = loss_fn(pred, sigma, target).item()
    ones = torch.ones(2, 3, dtype=torch.float64)
    assert got == pytest.approx(hand_loss(flow, pred, sigma, target, ones, variant, q, residual,
                                          size_average), rel=1e-10)


@pytest.mark.parametrize("variant", ["rle", "mmpose"])
def test_loss_all_zero_weights(variant):
    # rle: sum(w) == 0 takes the "plain sum" branch; the result must be 0, not 0/0
    pred = torch.rand(2, 3, 2, requires_grad=True)
    sigma = torch.rand(2, 3, 2).clamp(0.05).requires_grad_()
    loss = RLELoss(variant=variant)(pred, sigma, torch.rand(2, 3, 2), torch.zeros(2, 3, 2))
    loss.backward()
    assert loss.item() == 0.0
    assert pred.grad.abs().max() == 0 and sigma.grad.abs().max() == 0


def test_loss_sigma_clamped_to_eps():
    pred, target = torch.tensor([[[0.3, 0.3]]]), torch.tensor([[[0.2, 0.3]]])
    loss_fn = RLELoss(eps=1e-3)
    tiny, at_eps = torch.full((1, 1, 2), 1e-9), torch.full((1, 1, 2), 1e-3)
    assert loss_fn(pred, tiny, target).item() == loss_fn(pred, at_eps, target).item()
    # straight-through: below eps the gradient still pushes sigma up
    tiny.requires_grad_()
    loss_fn(pred, tiny, target).backward()
    assert tiny.grad[0, 0, 0] < 0


# ----------------------------------------------------------------------------- RLELoss: numerics


@pytest.mark.parametrize("variant, q", [("rle", "laplace"), ("mmpose", "laplace"),
                                        ("mmpose", "gaussian")])
@pytest.mark.parametrize("flow_init", ["xavier", "default"])
def test_loss_finite_at_extreme_sigma_and_residual(variant, q, flow_init):
    torch.manual_seed(0)
    loss_fn = RLELoss(variant=variant, q_distribution=q, flow_init=flow_init)
    target = torch.rand(2, 3, 2)
    for s, r in itertools.product([1e-12, 1e-6, 0.5, 1 - 1e-7, 1.0], [0.0, 0.3, -5.0, 1e3]):
        loss_fn.zero_grad()
        pred = (target + r).requires_grad_()
        sigma = torch.full((2, 3, 2), s).requires_grad_()
        loss = loss_fn(pred, sigma, target, torch.ones(2, 3))
        loss.backward()
        grads = [pred.grad, sigma.grad] + [p.grad for p in loss_fn.parameters()]
        assert torch.isfinite(loss), (s, r)
        assert all(torch.isfinite(g).all() for g in grads), (s, r)
    # saturated sigmoid logits (sigma rounds to exactly 0 and 1 in fp32)
    logits = torch.tensor([-200.0, 200.0]).repeat(2, 3, 1).requires_grad_()
    loss = loss_fn(target + 0.2, logits.sigmoid(), target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("variant, q, residual", CONFIGS)
def test_loss_gradients_reach_pred_sigma_and_flow(variant, q, residual):
    loss_fn = RLELoss(variant=variant, q_distribution=q, residual=residual, prior_mean=(0.5, 0.5))
    pred = torch.rand(2, 3, 2, requires_grad=True)
    sigma = torch.rand(2, 3, 2).clamp(0.05, 0.95).requires_grad_()
    loss_fn(pred, sigma, torch.rand(2, 3, 2), torch.ones(2, 3, 1)).backward()
    assert pred.grad.abs().min() > 0 and sigma.grad.abs().min() > 0
    for name, p in loss_fn.flow.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_loss_dtypes_and_validation():
    loss_fn = RLELoss()
    x = torch.rand(2, 3, 2)
    assert loss_fn(x, x.clamp(0.1), x.flip(0)).dtype == torch.float32
    assert loss_fn(x.half(), x.clamp(0.1).half(), x.half()).dtype == torch.float32  # fp32 math
    loss64 = RLELoss().double()
    assert loss64(x.double(), x.double().clamp(0.1), x.double()).dtype == torch.float64
    assert loss64(x, x.clamp(0.1), x).dtype == torch.float32  # fp64 flow, fp32 inputs
    with pytest.raises(ValueError):
        RLELoss(variant="l1")
    with pytest.raises(ValueError):
        RLELoss(variant="rle", q_distribution="gaussian")
    with pytest.raises(ValueError):
        loss_fn(x, x, x, torch.ones(2, 4))
    with pytest.raises(ValueError):
        loss_fn(x, x[:, :2], x)


# ----------------------------------------------------------------------------- RegressionHead


def test_regression_head_outputs():
    torch.manual_seed(0)
    head = RegressionHead(32, eps=1e-6)
    x = torch.randn(4, 17, 32)
    out = head(x)
    assert isinstance(out, RegressionOutput)
    assert out.coords.shape == out.sigma.shape == (4, 17, 2)
    assert out.score.shape == (4, 17, 1)
    assert (out.sigma > 0).all() and (out.sigma < 1).all()
    torch.testing.assert_close(out.score, (1 - out.sigma).mean(-1, keepdim=True))
    # independent recomputation: LayerNorm + Linear shared over joints, separate sigma branch
    ln = lambda norm: F.layer_norm(x, (32,), norm.weight, norm.bias, eps=1e-6)  # noqa: E731
    coords = F.linear(ln(head.coord_norm), head.coord.weight, head.coord.bias)
    sigma = torch.sigmoid(F.linear(ln(head.sigma_norm), head.sigma.weight, head.sigma.bias))
    torch.testing.assert_close(out.coords, coords)
    torch.testing.assert_close(out.sigma, sigma)
    assert head.coord_norm is not head.sigma_norm and head.coord_norm.eps == 1e-6
    perm = torch.randperm(17)
    torch.testing.assert_close(head(x[:, perm]).coords, out.coords[:, perm])


# ----------------------------------------------------------------------------- torch.compile


def test_compile_regression_head_matches_eager():
    torch._dynamo.reset()
    head = RegressionHead(32)
    x = torch.randn(2, 17, 32)
    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(x), head(x)):
        torch.testing.assert_close(got, want)


# Measured on 2 CPU cores: inductor takes 15-30 s per loss graph, aot_eager ~4 s, eager ~1.5 s.
# aot_eager (full AOT-autograd trace) for the default variant, dynamo-only for the other one.
@pytest.mark.parametrize("variant, q, backend", [("rle", "laplace", "aot_eager"),
                                                 ("mmpose", "gaussian", "eager")])
def test_compile_loss_matches_eager(variant, q, backend):
    torch._dynamo.reset()
    loss_fn = RLELoss(variant=variant, q_distribution=q, prior_mean=(0.5, 0.5))
    pred = torch.rand(2, 17, 2, requires_grad=True)
    sigma = torch.rand(2, 17, 2).clamp(0.05).requires_grad_()
    target, weight = torch.rand(2, 17, 2), torch.rand(2, 17, 2)
    compiled = torch.compile(loss_fn, fullgraph=True, backend=backend)
    got = compiled(pred, sigma, target, weight)
    grads_got = torch.autograd.grad(got, (pred, sigma))
    want = loss_fn(pred, sigma, target, weight)
    grads_want = torch.autograd.grad(want, (pred, sigma))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grads_got, grads_want)


def test_dsta_init_zeroes_biases_and_keeps_default_weights():
    torch.manual_seed(0)
    default = RealNVP(init="default")
    torch.manual_seed(0)
    dsta = RealNVP(init="dsta")
    linears = [(a, b) for a, b in zip(default.modules(), dsta.modules()) if isinstance(a, torch.nn.Linear)]
    assert linears
    for a, b in linears:
        assert torch.equal(a.weight, b.weight)
        assert torch.count_nonzero(b.bias) == 0 and torch.count_nonzero(a.bias) > 0

"""The ``local_block`` op: a whole pre-norm local-awareness block (LN, QKV, local attention, projection,
residual, LN, MLP, residual) in one call.

Its pure-PyTorch reference (:func:`~stattn.ops.reference.local_block_reference`) is the
specification, the CPU path and the backward: other implementations (the Triton whole-block kernel)
are forward-only, and autograd through them recomputes the reference, like activation checkpointing
(only x is kept for the backward). Dispatch is the attention ops' own (``backend=`` /
``STATTN_BACKEND``).
"""
from __future__ import annotations

import functools
import numbers
from typing import Sequence

import torch

from . import _dispatch
from ._compile import eager_inference, exporting
from .reference import BlockWeights, local_block_reference
from ..skeletons import Skeleton, normalize_groups

_KINDS = ("temporal", "grouped")


def local_block(
    x: torch.Tensor,
    weights: BlockWeights | Sequence[torch.Tensor | None],
    *,
    kind: str,
    window: int | None = None,
    causal: bool = False,
    groups: Skeleton | Sequence[Sequence[int]] | None = None,
    num_heads: int = 8,
    eps: tuple[float, float] = (1e-6, 1e-6),
    backend: str | None = None,
) -> torch.Tensor:
    """A pre-norm transformer block around temporal or grouped local attention, as one op.

    Args:
        x: `[B, F, N, C]` tokens (or `[B, N, C]`, one frame, for ``kind="grouped"``).
        weights: :class:`BlockWeights` (or its 12 tensors in that order): LayerNorm 1 `[C]` x 2, qkv
            `[3C, C]` and `[3C]` (or None), proj `[C, C]`, `[C]`, LayerNorm 2 `[C]` x 2, fc1 `[HID, C]`,
            `[HID]`, fc2 `[C, HID]`, `[C]`; dtype and device of x.
        kind: ``"temporal"`` (with ``window``, ``causal``) or ``"grouped"`` (with ``groups``).
        window: frames each side a query may see; None = all frames.
        causal: no look-ahead.
        groups: a :class:`~stattn.skeletons.Skeleton` or a partition of `range(N)`.
        num_heads: heads `H`, dividing `C`.
        eps: the epsilons of LayerNorm 1 and 2.
        backend: None (automatic), "triton" or "reference"; `STATTN_BACKEND` overrides None.

    Returns:
        Same shape and dtype as x.

    Equivalent PyTorch:
        ```
        h = F.layer_norm(x, (C,), ln1_w, ln1_b, eps[0])
        q, k, v = F.linear(h, qkv_w, qkv_b).view(*x.shape[:-1], 3, H, C // H).unbind(-3)
        o = temporal_attention(q, k, v, window=window, causal=causal)   # or grouped_attention(.., groups)
        x = x + F.linear(o.flatten(-2), proj_w, proj_b)
        h = F.layer_norm(x, (C,), ln2_w, ln2_b, eps[1])
        y = x + F.linear(F.gelu(F.linear(h, fc1_w, fc1_b)), fc2_w, fc2_b)
        ```

    Supported:
        Reference: any device and dtype; differentiable.
        Triton (the whole-block kernel, forward; gradients recompute the reference): CUDA,
        float32/float16/bfloat16, C <= 128, sequences (frames or one group) <= 64, no autocast.

    Examples:
        >>> from stattn.skeletons import POSETRACK
        >>> C, HID = 32, 64
        >>> w = BlockWeights(torch.ones(C), torch.zeros(C), torch.randn(3 * C, C), None, torch.randn(C, C),
        ...                  torch.zeros(C), torch.ones(C), torch.zeros(C), torch.randn(HID, C), torch.zeros(HID),
        ...                  torch.randn(C, HID), torch.zeros(C))
        >>> local_block(torch.randn(2, 17, C), w, kind="grouped", groups=POSETRACK).shape
        torch.Size([2, 17, 32])
    """
    op = "local_block"
    weights = _check(op, x, weights, kind, window, causal, num_heads, eps)
    meta = {"kind": kind, "window": window, "causal": causal, "groups": None, "num_heads": int(num_heads),
            "eps": (float(eps[0]), float(eps[1]))}  # fmt: skip
    if kind == "grouped":
        meta["groups"] = _partition(op, groups, x.shape[-2])
    chosen = _dispatch.choose(op, x, weights, backend=backend, **meta)
    if chosen.name == "reference" or torch.compiler.is_compiling() or exporting():
        # the block's math around the attention functionals, which dispatch with the same backend=:
        # pure PyTorch for backend="reference", native attention on a CPU by default
        return local_block_reference(x, weights, **meta, attention=_attention(meta, backend))
    forward = chosen.table[op][0]
    if eager_inference(x, *(w for w in weights if w is not None)):
        return forward(x, weights, **meta)
    return _RecomputeBackward.apply(x, forward, meta, *weights)


def _attention(meta: dict, backend: str | None):
    from . import grouped_attention, temporal_attention  # noqa: PLC0415 (the package imports this module)

    if meta["kind"] == "temporal":
        window, causal = meta["window"], meta["causal"]
        return lambda q, k, v: temporal_attention(q, k, v, window=window, causal=causal, backend=backend)
    groups = meta["groups"]
    return lambda q, k, v: grouped_attention(q, k, v, groups, backend=backend)


class _RecomputeBackward(torch.autograd.Function):
    """Forward: the chosen implementation. Backward: autograd through the recomputed reference."""

    @staticmethod
    def forward(ctx, x, forward, meta, *weights):
        ctx.meta, ctx.has_qkv_bias = meta, weights[3] is not None
        ctx.save_for_backward(x, *(w for w in weights if w is not None))
        return forward(x, BlockWeights(*weights), **meta)

    @staticmethod
    def backward(ctx, grad):
        x, *saved = ctx.saved_tensors  # unpacking checks that no weight was modified in place since forward
        if not ctx.has_qkv_bias:
            saved.insert(3, None)
        wanted = list(ctx.needs_input_grad[3:])  # frozen weights get None
        with torch.enable_grad():
            xd = x.detach().requires_grad_(ctx.needs_input_grad[0])
            wd = [None if w is None else w.detach().requires_grad_(want) for w, want in zip(saved, wanted)]
            y = local_block_reference(xd, BlockWeights(*wd), **ctx.meta)
            inputs = ([xd] if ctx.needs_input_grad[0] else []) + [w for w, want in zip(wd, wanted) if want]
            grads = list(torch.autograd.grad(y, inputs, grad, allow_unused=True)) if inputs else []
        dx = grads.pop(0) if ctx.needs_input_grad[0] else None
        it = iter(grads)
        return (dx, None, None, *(next(it) if want else None for want in wanted))


_NAMES = BlockWeights._fields


def _check(op, x, weights, kind, window, causal, num_heads, eps) -> BlockWeights:
    if kind not in _KINDS:
        raise ValueError(f"{op}: kind must be 'temporal' or 'grouped', got {kind!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{op}: x must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    ranks = (4,) if kind == "temporal" else (3, 4)
    if x.dim() not in ranks:
        layout = "[B, F, N, C]" if kind == "temporal" else "[B, F, N, C] or [B, N, C]"
        raise ValueError(f"{op}: x must be {layout} for kind={kind!r}, got shape {tuple(x.shape)}")
    C = x.shape[-1]
    empty = [d for d, size in zip("FNC" if x.dim() == 4 else "NC", x.shape[1:]) if size == 0]
    if empty:
        raise ValueError(f"{op}: dimension(s) {', '.join(empty)} of shape {tuple(x.shape)} are empty")
    if type(num_heads) is not int and (isinstance(num_heads, bool) or not isinstance(num_heads, numbers.Integral)):
        raise ValueError(f"{op}: num_heads must be a positive int dividing the {C} channels, got {num_heads!r}")
    if num_heads <= 0 or C % num_heads:
        raise ValueError(f"{op}: num_heads must be a positive int dividing the {C} channels, got {num_heads!r}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 0):
        raise ValueError(f"{op}: window must be a non-negative int or None, got {window!r}")
    if causal is not True and causal is not False:
        raise ValueError(f"{op}: causal must be a bool, got {causal!r}")
    if kind == "grouped" and (window is not None or causal):
        raise ValueError(f"{op}: window and causal apply to kind='temporal' only")
    if len(eps) != 2 or not all(isinstance(e, numbers.Real) and e >= 0 for e in eps):
        raise ValueError(f"{op}: eps must be two non-negative numbers, got {eps!r}")
    if len(weights) != len(_NAMES):
        raise ValueError(f"{op}: weights must hold {len(_NAMES)} tensors ({', '.join(_NAMES)}), got {len(weights)}")
    weights = BlockWeights(*weights)
    fc1 = weights.fc1_w
    if not isinstance(fc1, torch.Tensor) or fc1.dim() != 2:
        got = getattr(fc1, "shape", type(fc1).__name__)
        raise ValueError(f"{op}: weight fc1_w must be a [HID, {C}] tensor, got {got}")
    hidden = fc1.shape[0]
    shapes = ((C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,), (C,), (C,), (hidden, C), (hidden,), (C, hidden), (C,))
    dtype, device = x.dtype, x.get_device()
    for name, w, want in zip(_NAMES, weights, shapes):
        if w is None and name == "qkv_b":
            continue
        if not isinstance(w, torch.Tensor) or w.shape != want:
            got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"{op}: weight {name} must be [{', '.join(map(str, want))}] for {C} channels, got {got}")
        if w.dtype is not dtype or w.get_device() != device:
            raise ValueError(f"{op}: parameter {name} is {w.dtype} on {w.device}, x is {x.dtype} on {x.device}")
    return weights


def _partition(op: str, groups, num_tokens: int) -> tuple[tuple[int, ...], ...]:
    if groups is None:
        raise ValueError(f"{op}: kind='grouped' needs groups (a Skeleton or a partition of range(N))")
    if isinstance(groups, Skeleton):
        if groups.num_joints != num_tokens:
            raise ValueError(
                f"{op}: skeleton {groups.name!r} has {groups.num_joints} joints, x has {num_tokens} tokens"
            )
        return groups.groups
    if isinstance(groups, tuple):  # a layer's own groups: validated once
        try:
            return _cached_partition(groups, num_tokens)
        except TypeError:  # unhashable members
            pass
    return normalize_groups(groups, num_tokens)


@functools.lru_cache(maxsize=256)
def _cached_partition(groups: tuple, num_tokens: int) -> tuple[tuple[int, ...], ...]:
    return normalize_groups(groups, num_tokens)

"""The whole-block Triton kernel behind :class:`~stattn.nn.LocalAwarenessBlock` (forward only).

A DSTA block spends most of its time outside attention: ~22 small kernels with intermediate tensors
between them. ``stattn.ops.triton``'s block kernel computes LN -> QKV -> local attention -> proj ->
residual -> LN -> MLP -> residual in one launch, reading x once and writing y once.

:func:`fusion_reasons` says why a call cannot use it (empty list: it can); :func:`fused_block`
runs it. Gradients, when autograd asks for them, come from recomputing the unfused block (the
kernel has no backward yet), so a fused forward is always differentiable and never wrong, only not
faster to train.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import _dispatch, _exporting

__all__ = ["fusion_reasons", "structure_reasons", "attention_kind", "fused_block", "block_weights"]

_PARAMS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
           "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")  # fmt: skip
MAX_CHANNELS, MAX_MEMBERS = _dispatch.FUSED_MAX_CHANNELS, _dispatch.FUSED_MAX_MEMBERS


def attention_kind(block: nn.Module) -> str | None:
    """"temporal" or "grouped" for a block built with that local attention, else None."""
    from .attention import GroupedSpatialAttention, TemporalAttention  # noqa: PLC0415 (circular)

    if type(block.attn) is TemporalAttention:
        return "temporal"
    if type(block.attn) is GroupedSpatialAttention:
        return "grouped"
    return None


def structure_reasons(block: nn.Module) -> list[str]:
    """Why this block's *structure* cannot be fused (independent of the input)."""
    kind = attention_kind(block)
    if kind is None:
        return [f"attention {type(block.attn).__name__} is not temporal or grouped local attention"]
    out = []
    if block.attn.dim > MAX_CHANNELS:
        out.append(f"{block.attn.dim} channels > {MAX_CHANNELS}")
    if type(block.mlp.act) is not nn.GELU or block.mlp.act.approximate != "none":
        out.append("the MLP activation is not exact GELU")
    members = max(len(g) for g in block.attn.groups) if kind == "grouped" else None
    if members is not None and members > MAX_MEMBERS:
        out.append(f"a group of {members} tokens > {MAX_MEMBERS}")
    return out


def fusion_reasons(block: nn.Module, x: torch.Tensor) -> list[str]:
    """Why ``block(x)`` cannot run the fused kernel now; empty when it can."""
    out = structure_reasons(block)
    if out:
        return out
    kind = attention_kind(block)
    if block.training and (block.drop_path.p > 0 or block.attn.proj_drop.p > 0 or block.mlp.drop1.p > 0):
        out.append("training with dropout / drop path (the kernel has none)")
    if torch.compiler.is_compiling() or _exporting():
        out.append("traced by torch.compile / export (the unfused modules are traced instead)")
    if x.device.type != "cuda" and not _dispatch.interpreter_enabled():
        out.append(f"x is on {x.device.type} (CUDA, or TRITON_INTERPRET=1 on CPU)")
    error = _dispatch.triton_import_error()
    if error:
        out.append(error)
    if x.dtype not in _dispatch.TRITON_DTYPES:
        out.append(f"dtype {x.dtype} (float32, float16 or bfloat16)")
    if kind == "temporal" and x.dim() == 4 and x.shape[1] > MAX_MEMBERS:
        out.append(f"{x.shape[1]} frames > {MAX_MEMBERS}")
    for name, p in block.named_parameters():
        if p.dtype != x.dtype or p.device != x.device:
            out.append(f"parameter {name} is {p.dtype} on {p.device}, x is {x.dtype} on {x.device}")
            break
    if torch.is_autocast_enabled(x.device.type):
        out.append("autocast is on (the unfused layers follow its casting rules)")
    return out


def block_weights(block: nn.Module) -> tuple[torch.Tensor | None, ...]:
    """The block's parameters in the kernel's order (qkv bias None without ``qkv_bias``)."""
    params = dict(block.named_parameters())
    return tuple(params.get(name) for name in _PARAMS)


class _FusedBlock(torch.autograd.Function):
    """Forward: the kernel. Backward: autograd through a recomputed unfused forward."""

    @staticmethod
    def forward(ctx, x, block, *weights):
        from ..ops.triton._block_launcher import BlockWeights, fused_block_fwd  # noqa: PLC0415 (lazy Triton)

        ctx.block = block
        ctx.save_for_backward(x, *(w for w in weights if w is not None))
        kind = attention_kind(block)
        attn = block.attn
        return fused_block_fwd(
            x, BlockWeights(*weights), kind, window=getattr(attn, "window", None), causal=getattr(attn, "causal", False),
            groups=attn.groups if kind == "grouped" else None, num_heads=attn.num_heads,
            eps=(block.norm1.eps, block.norm2.eps),
        )  # fmt: skip

    @staticmethod
    def backward(ctx, grad):
        x, *_ = ctx.saved_tensors  # unpacking checks that no weight was modified in place since forward
        weights = block_weights(ctx.block)
        wanted = [w is not None and w.requires_grad for w in weights]  # frozen weights get None
        with torch.enable_grad():
            xd = x.detach().requires_grad_(ctx.needs_input_grad[0])
            y = ctx.block._unfused_forward(xd)
            inputs = ([xd] if ctx.needs_input_grad[0] else []) + [w for w, want in zip(weights, wanted) if want]
            grads = list(torch.autograd.grad(y, inputs, grad, allow_unused=True))
        dx = grads.pop(0) if ctx.needs_input_grad[0] else None
        it = iter(grads)
        return (dx, None, *(next(it) if want else None for want in wanted))


def fused_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` through the fused kernel (check :func:`fusion_reasons` first)."""
    return _FusedBlock.apply(x, block, *block_weights(block))

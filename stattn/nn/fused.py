"""How a :class:`~stattn.nn.LocalAwarenessBlock` hands itself to the :func:`stattn.ops.local_block` op.

The op (LN -> QKV -> local attention -> proj -> residual -> LN -> MLP -> residual in one call) is
dispatched like every stattn op: its Triton implementation is the whole-block kernel (one launch,
x read once, y written once), its reference the pure-PyTorch block. This module holds only what
the *layer* adds: its weights in the op's order, and the reasons a call of the layer cannot be one
op call (dropout while training, tracing, a replaced activation). It reads the block through its
public attributes and never imports the block's module.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import ops

__all__ = ["block_weights", "block_reasons", "fusion_reasons", "op_meta"]


def block_weights(block: nn.Module) -> ops.BlockWeights:
    """The block's parameters as :class:`stattn.ops.BlockWeights` (qkv bias None without one)."""
    attn, mlp = block.attn, block.mlp
    return ops.BlockWeights(
        block.norm1.weight, block.norm1.bias, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias,
        block.norm2.weight, block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias,
    )  # fmt: skip


def op_meta(block: nn.Module) -> dict:
    """The op's keyword arguments for this block (its kind, mask and LayerNorm epsilons)."""
    attn = block.attn
    temporal = block.kind == "temporal"
    return {
        "kind": block.kind,
        "window": attn.window if temporal else None,
        "causal": attn.causal if temporal else False,
        "groups": None if temporal else attn.groups,
        "num_heads": attn.num_heads,
        "eps": (block.norm1.eps, block.norm2.eps),
    }


def block_reasons(block: nn.Module) -> list[str]:
    """Why a call of ``block`` cannot be one ``local_block`` op call now (independent of the input)."""
    out = []
    if block.kind not in ("temporal", "grouped"):
        out.append(f"attention {type(block.attn).__name__} is not temporal or grouped local attention")
        return out
    if type(block.mlp.act) is not nn.GELU or block.mlp.act.approximate != "none":
        out.append("the MLP activation is not exact GELU")
    if block.training and (block.drop_path.p > 0 or block.attn.proj_drop.p > 0 or block.mlp.drop1.p > 0):
        out.append("training with dropout / drop path (the op has none)")
    if ops.tracing():
        out.append("traced by torch.compile / export (the unfused modules are traced instead)")
    return out


def fusion_reasons(block: nn.Module, x: torch.Tensor) -> list[str]:
    """Why ``block(x)`` cannot run the whole-block Triton kernel now; empty when it can."""
    out = block_reasons(block)
    if out:
        return out
    return ops.backend_reasons("local_block", x, block_weights(block), **op_meta(block))["triton"]

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

__all__ = ["block_weights", "block_reasons", "fusion_reasons", "needs_autograd", "op_meta"]


def block_weights(block: nn.Module) -> ops.BlockWeights:
    """The block's parameters as :class:`stattn.ops.BlockWeights` (qkv bias None without one)."""
    # straight from the modules' dicts: nn.Module.__getattr__ would cost more than a B = 1 attention
    m, a = block._modules, block._modules["attn"]._modules
    n1, n2, mlp = m["norm1"]._parameters, m["norm2"]._parameters, m["mlp"]._modules
    qkv, proj, fc1, fc2 = a["qkv"]._parameters, a["proj"]._parameters, mlp["fc1"]._parameters, mlp["fc2"]._parameters
    return ops.BlockWeights(
        n1["weight"], n1["bias"], qkv["weight"], qkv["bias"], proj["weight"], proj["bias"],
        n2["weight"], n2["bias"], fc1["weight"], fc1["bias"], fc2["weight"], fc2["bias"],
    )  # fmt: skip


def op_meta(block: nn.Module) -> dict:
    """The op's keyword arguments for this block (its kind, mask and LayerNorm epsilons)."""
    m = block._modules
    attn = m["attn"]
    temporal = block.kind == "temporal"
    return {
        "kind": block.kind,
        "window": attn.window if temporal else None,
        "causal": attn.causal if temporal else False,
        "groups": None if temporal else attn.groups,
        "num_heads": attn.num_heads,
        "eps": (m["norm1"].eps, m["norm2"].eps),
    }


def _replaced(block: nn.Module) -> list[nn.Module]:
    """The submodules whose work the op does (their forward hooks would not run)."""
    m = block._modules
    a, mlp = m["attn"]._modules, m["mlp"]._modules
    return [m["norm1"], m["attn"], a["qkv"], a["proj"], a["proj_drop"], m["drop_path"], m["norm2"], m["mlp"],
            mlp["fc1"], mlp["act"], mlp["drop1"], mlp["fc2"], mlp["drop2"]]  # fmt: skip


#: the exact type each of those must have (None: any); a subclass may compute something else
_TYPES = (nn.LayerNorm, None, nn.Linear, nn.Linear, nn.Dropout, None, nn.LayerNorm, None, nn.Linear, nn.GELU,
          nn.Dropout, nn.Linear, nn.Dropout)  # fmt: skip


def block_reasons(block: nn.Module) -> list[str]:
    """Why a call of ``block`` cannot be one ``local_block`` op call now (independent of the input)."""
    if block.kind not in ("temporal", "grouped"):
        return [f"attention {type(block.attn).__name__} is not temporal or grouped local attention"]
    out = []
    modules = _replaced(block)
    for m, t in zip(modules, _TYPES):
        if t is not None and type(m) is not t:
            out.append(f"a {type(m).__name__} replaced its {t.__name__}")
    act = modules[9]
    if type(act) is nn.GELU and act.approximate != "none":
        out.append("the MLP activation is not exact GELU")
    if any(m._forward_hooks or m._forward_pre_hooks for m in (block, *modules)):
        out.append("a submodule has forward hooks (one op call would skip them)")
    if block.training and (modules[5].p > 0 or modules[4].p > 0 or modules[10].p > 0):
        out.append("training with dropout / drop path (the op has none)")
    if ops.tracing():
        out.append("traced by torch.compile / export (the unfused modules are traced instead)")
    return out


def needs_autograd(block: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``block(x)`` records an autograd graph (x or a parameter takes a gradient)."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p is not None and p.requires_grad for p in block_weights(block))


def fusion_reasons(block: nn.Module, x: torch.Tensor) -> list[str]:
    """Why ``block(x)`` cannot run the whole-block Triton kernel now; empty when it can."""
    out = block_reasons(block)
    if out:
        return out
    return ops.backend_reasons("local_block", x, block_weights(block), **op_meta(block))["triton"]

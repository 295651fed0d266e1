"""The Triton backend: fused kernels for stattn's ops (CUDA, or CPU under ``TRITON_INTERPRET=1``).

This module declares the backend (its limits, once, and why it refuses a call) and is cheap to
import: Triton itself is imported only when a launcher is first looked up (``TRITON_INTERPRET`` is
read when the kernels are defined, so the test suite can set it first). The launchers are the
implementations the registry hands out:

    temporal_attention_fwd(q, k, v, scale, window, causal, query_frames=None) -> o
    temporal_attention_bwd(grad, q, k, v, scale, window, causal, query_frames=None) -> (dq, dk, dv)
    grouped_attention_fwd(q, k, v, group_index, group_sizes, scale) -> o
    grouped_attention_bwd(grad, q, k, v, group_index, group_sizes, scale) -> (dq, dk, dv)
    fused_block_fwd(x, weights, kind, window, causal, groups, num_heads, eps) -> y   (local_block)

with q, k, v `[B, F, N, H, D]` (any strides, never copied), ``grad`` read through its strides
(stride 0 included), outputs contiguous in the dtype of q. ``kernel_configs()`` lists every block
config the attention launchers can compile. The math is in ``README.md`` next to this file.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

import torch

from .._backend import Backend
from .._compile import constant_result

AVAILABLE = True

# The limits of this backend (the launchers read them from here).
MAX_HEAD_DIM = 128
#: Longest sequence a program's register tiles hold: frames (temporal) or members of one group.
MAX_ROWS = 64
MAX_TOKENS = 256
#: Widest token the whole-block kernel (local_block) takes.
BLOCK_MAX_CHANNELS = 128
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_LAZY = {
    "temporal_attention_fwd": "._launchers",
    "temporal_attention_bwd": "._launchers",
    "grouped_attention_fwd": "._launchers",
    "grouped_attention_bwd": "._launchers",
    "kernel_config": "._launchers",
    "kernel_configs": "._launchers",
    "KernelConfig": "._launchers",
    "fused_block_fwd": "._block_launcher",
}

__all__ = ["AVAILABLE", "BACKEND", "MAX_HEAD_DIM", "MAX_ROWS", "MAX_TOKENS", "BLOCK_MAX_CHANNELS", "DTYPES",
           "interpreter_enabled", "import_error", *_LAZY]  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_IMPORT_ERROR: dict[str, str | None] = {}


@constant_result
def import_error() -> str | None:
    """Why stattn's Triton kernels cannot be used here, or None if they can (checked once)."""
    if "triton" not in _IMPORT_ERROR:
        _IMPORT_ERROR["triton"] = _find_import_error()
    return _IMPORT_ERROR["triton"]


def _find_import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed"
    try:  # a broken Triton install shows up here, as a reason, not at the first launch
        importlib.import_module("._launchers", __name__)
        importlib.import_module("._block_launcher", __name__)
    except Exception as exc:  # pragma: no cover - depends on the installed triton
        return f"stattn's Triton kernels failed to import: {type(exc).__name__}: {exc}"
    return None


class _TritonBackend(Backend):
    name = "triton"
    ops = frozenset({"temporal_attention", "grouped_attention", "local_block"})

    def refusals(self, op, *inputs, automatic=False, **meta):
        x = inputs[0]
        device = x.device.type
        if automatic and device != "cuda":  # one reason decides it (the full list is for explicit requests)
            return ["backend=None picks Triton for CUDA tensors only (the interpreter needs backend='triton')"]
        out = []
        on_device = device == "cuda" or (device == "cpu" and interpreter_enabled())
        if not on_device:
            out.append(f"tensors are on {device}, Triton needs cuda (or cpu with TRITON_INTERPRET=1)")
        err = import_error() if on_device else None  # CPU calls never pay for importing Triton
        if err is not None:
            out.append(err)
        if x.dtype not in DTYPES:
            out.append(f"dtype {x.dtype} is not one of float32, float16, bfloat16")
        if op == "local_block":
            return out + _block_refusals(x, **meta)
        _, frames, tokens, _, head_dim = x.shape
        if head_dim > MAX_HEAD_DIM:
            out.append(f"head dim {head_dim} > {MAX_HEAD_DIM}")
        if frames > MAX_ROWS:
            out.append(f"{frames} frames > {MAX_ROWS}")
        if tokens > MAX_TOKENS:
            out.append(f"{tokens} tokens per frame > {MAX_TOKENS}")
        group = max(meta.get("group_sizes") or (0,))
        if group > MAX_ROWS:
            out.append(f"a group of {group} tokens > {MAX_ROWS}")
        return out

    def _table(self):
        from . import _block_launcher, _launchers

        return {
            "temporal_attention": (_launchers.temporal_attention_fwd, _launchers.temporal_attention_bwd),
            "grouped_attention": (_launchers.grouped_attention_fwd, _launchers.grouped_attention_bwd),
            "local_block": (_block_launcher.fused_block_fwd, None),
        }


def _block_refusals(x, kind=None, groups=None, **_) -> list[str]:
    out = []
    if x.shape[-1] > BLOCK_MAX_CHANNELS:
        out.append(f"{x.shape[-1]} channels > {BLOCK_MAX_CHANNELS}")
    members = x.shape[1] if kind == "temporal" else max(len(g) for g in groups or ((),))
    if members > MAX_ROWS:
        out.append(f"{members} {'frames' if kind == 'temporal' else 'tokens in a group'} > {MAX_ROWS}")
    if torch.is_autocast_enabled(x.device.type):
        out.append("autocast is on (the kernel computes in the dtype of x)")
    return out


BACKEND = _TritonBackend()

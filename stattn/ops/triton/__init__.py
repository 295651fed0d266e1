"""Fused Triton kernels for stattn's ops (CUDA, or CPU under ``TRITON_INTERPRET=1``).

Imported lazily by the dispatcher, never by ``import stattn``; and this package itself imports
Triton only when a launcher is first looked up (``TRITON_INTERPRET`` is read when the kernels are
defined, so the test suite can set it first). ``AVAILABLE`` tells the dispatcher that this version
ships kernels; the launchers are the contract the registered ops call:

    temporal_attention_fwd(q, k, v, scale, window, causal, query_frames=None) -> o
    temporal_attention_bwd(grad, q, k, v, scale, window, causal, query_frames=None) -> (dq, dk, dv)
    grouped_attention_fwd(q, k, v, group_index, group_sizes, scale) -> o
    grouped_attention_bwd(grad, q, k, v, group_index, group_sizes, scale) -> (dq, dk, dv)

with q, k, v `[B, F, N, H, D]` (any strides, never copied), ``grad`` read through its strides
(stride 0 included), outputs contiguous in the dtype of q. ``kernel_configs()`` lists every block
config the launchers can compile. The math is in ``README.md`` next to this file.
"""
from __future__ import annotations

import importlib

AVAILABLE = True

_LAZY = (
    "temporal_attention_fwd",
    "temporal_attention_bwd",
    "grouped_attention_fwd",
    "grouped_attention_bwd",
    "kernel_config",
    "kernel_configs",
    "KernelConfig",
    "MAX_ROWS",
)

__all__ = ["AVAILABLE", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        launchers = importlib.import_module("._launchers", __name__)
        return getattr(launchers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

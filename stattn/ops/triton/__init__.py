"""Fused Triton kernels for stattn's ops (CUDA, or CPU under ``TRITON_INTERPRET=1``).

Imported lazily by the dispatcher, never by ``import stattn``. ``AVAILABLE`` tells the dispatcher
whether this version ships kernels; the launchers below are the contract the registered ops call:

    temporal_attention_fwd(q, k, v, scale, window, causal) -> o
    temporal_attention_bwd(grad, q, k, v, scale, window, causal) -> (dq, dk, dv)
    grouped_attention_fwd(q, k, v, group_index, group_sizes, scale) -> o
    grouped_attention_bwd(grad, q, k, v, group_index, group_sizes, scale) -> (dq, dk, dv)

with q, k, v `[B, F, N, H, D]` (any strides) and outputs contiguous in the dtype of q.
"""
AVAILABLE = False  # the kernels land with the Triton-kernels issue

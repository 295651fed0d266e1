"""Activation memory a training step keeps for backward: the DSTA STD with and without the fused block.

    python benchmarks/saved_activations.py                 # CPU (kernel under TRITON_INTERPRET=1), B = 16
    python benchmarks/saved_activations.py --device cuda --batch 256

The fused block's backward recomputes the unfused block from its input, so each block keeps only x
`[B, F, N, C]` for backward, like activation checkpointing; the unfused block keeps every LayerNorm,
qkv, attention, projection and MLP intermediate. Counted with `torch.autograd.graph.saved_tensors_hooks`
over one forward in training mode (drop path 0, as the fused kernel has none); parameters are not
counted. Bytes are exact and linear in B, so a small B on CPU gives the same bytes per clip.
"""
from __future__ import annotations

import argparse
import os

import torch


def saved_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the non-parameter tensors autograd saves during ``module(x)``."""
    params = {p.data_ptr() for p in module.parameters()}
    total = 0

    def pack(t):
        nonlocal total
        if t.data_ptr() not in params:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return total


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (Triton interpreter) or cuda (default cpu)")
    p.add_argument("--batch", type=int, default=16, help="clips B (default 16)")
    p.add_argument("--frames", type=int, default=5, help="frames F (default 5)")
    p.add_argument("--depth", type=int, default=4, help="blocks per stack (default 4, as DSTA)")
    args = p.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before stattn's kernels are first imported
    from stattn.nn import SpaceTimeDecoupling  # noqa: PLC0415
    from stattn.skeletons import POSETRACK  # noqa: PLC0415

    x = torch.randn(args.batch, args.frames, 17, 32, device=args.device, requires_grad=True)
    out = {}
    for fused in (False, True):
        torch.manual_seed(0)
        std = SpaceTimeDecoupling(32, POSETRACK, num_frames=args.frames, depth=args.depth, drop_path=0.0, fused=fused)
        out[fused] = saved_bytes(std.to(args.device).train(), x)
    per_clip = {k: v / args.batch for k, v in out.items()}
    print(f"STD (dim 32, depth {args.depth}, F = {args.frames}, 17 joints), saved for backward per clip: "
          f"unfused {per_clip[False] / 1024:.1f} KiB, fused {per_clip[True] / 1024:.1f} KiB "
          f"({out[False] / out[True]:.1f}x less); x alone is {x[0].numel() * 4 / 1024:.1f} KiB")
    return {"unfused_bytes": out[False], "fused_bytes": out[True], "batch": args.batch}


if __name__ == "__main__":
    main()

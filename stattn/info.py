"""``python -m stattn.info``: versions, devices, and which backend each op picks here (and why).

Paste its output into bug reports.
"""
from __future__ import annotations

import importlib
import os
import platform

import torch

from . import __version__
from .ops import _dispatch

# A DSTA-sized call: 256 clips, 5 frames, 17 joints, 8 heads x 4 dims.
_PROBE_SHAPE = (256, 5, 17, 8, 4)
OPS = ("temporal_attention", "grouped_attention")


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception:
        return "not installed"


def report() -> str:
    lines = [
        f"stattn        {__version__}",
        f"python        {platform.python_version()} ({platform.system()} {platform.machine()})",
        f"torch         {torch.__version__}",
        f"triton        {_version('triton')}",
        f"numpy         {_version('numpy')}",
        f"einops        {_version('einops')}",
        f"xformers      {_version('xformers')}",
        f"cuda          {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}",
        f"cpu threads   {torch.get_num_threads()}",
        f"STATTN_BACKEND={os.environ.get('STATTN_BACKEND', '')!s}  TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!s}",
        "",
        f"backend picked by default for a {list(_PROBE_SHAPE)} float32 call:",
    ]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        probe = torch.empty(_PROBE_SHAPE, device=device)
        for op in OPS:
            try:
                chosen, refusals = _dispatch.describe(op, probe)
            except ValueError as exc:  # e.g. STATTN_BACKEND names no backend: report it, it is the bug
                lines.append(f"  {op:<20} {device:<5} -> cannot choose: {exc}")
                continue
            lines.append(f"  {op:<20} {device:<5} -> {chosen}")
            for backend, reasons in refusals.items():
                if backend != chosen and reasons:
                    lines.append(f"      not {backend}: {'; '.join(reasons)}")
    lines += ["", "the whole block as one op (LocalAwarenessBlock / SpaceTimeDecoupling in inference, float32):"]
    lines += [f"  {line}" for line in _fused_block_lines(devices)]
    return "\n".join(lines)


def _fused_block_lines(devices: list[str]) -> list[str]:
    """The ``local_block`` op's backend for a DSTA block (what a default block runs in inference), and
    whether the Triton whole-block kernel is that backend in eval mode, per device."""
    from .nn import LocalAwarenessBlock  # noqa: PLC0415
    from .nn.fused import block_weights, fusion_reasons, op_meta  # noqa: PLC0415

    out = []
    for device in devices:
        block = LocalAwarenessBlock(32, "temporal").to(device).eval()
        x = torch.empty(_PROBE_SHAPE[:3] + (32,), device=device)
        try:
            chosen, refusals = _dispatch.describe("local_block", x, block_weights(block), **op_meta(block))
            used = block.uses_fused(x)
        except ValueError as exc:
            out.append(f"{device:<5} -> cannot choose: {exc}")
            continue
        out.append(f"local_block op {device:<5} -> {chosen}")
        out += [f"    not {b}: {'; '.join(r)}" for b, r in refusals.items() if b != chosen and r]
        if used:
            out.append(f"Triton whole-block kernel {device:<5} -> used in eval mode")
            continue
        reasons = fusion_reasons(block, x) or ["the default uses it on CUDA only (fused=True forces it)"]
        out.append(f"Triton whole-block kernel {device:<5} -> not used: {'; '.join(reasons)}")
    return out


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()

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
            chosen, refusals = _dispatch.describe(op, probe)
            lines.append(f"  {op:<20} {device:<5} -> {chosen}")
            for backend, reasons in refusals.items():
                if backend != chosen and reasons:
                    lines.append(f"      not {backend}: {'; '.join(reasons)}")
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()

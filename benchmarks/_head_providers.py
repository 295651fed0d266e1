"""The providers bench_head.py compares: ways to run the whole DSTA head (JFD + STD + regression head).

``build(case, base)`` returns ``(module, frame_major)``: a module mapping backbone features to
``(coords, sigma, score)`` with the weights of ``base`` (a ``StattnHead``, reference backend), and
whether it takes the official frame-major batch `[F*B, ...]` instead of stattn's clip-major
`[B*F, ...]`. It raises :class:`NotAvailable` (or anything else) when the provider cannot run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from _stattn_head import StattnHead
from official_style import port_of


class NotAvailable(Exception):
    """The provider cannot run this case; the message is the reason recorded in the n/a row."""


@dataclass(frozen=True)
class HeadCase:
    mode: str  # "fwd" | "fwdbwd"
    B: int
    F: int
    dtype: str
    device: torch.device
    in_channels: int = 256
    hw: tuple[int, int] = (4, 3)
    dim: int = 32
    depth: int = 4
    allow_interpreter: bool = False

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class HeadProvider:
    name: str
    help: str
    build: Callable[[HeadCase, StattnHead], tuple[nn.Module, bool]]


def _like(base: StattnHead, case: HeadCase, **kwargs) -> StattnHead:
    """A StattnHead built with ``kwargs`` holding ``base``'s weights, on the case's device and dtype."""
    head = StattnHead(case.in_channels, case.F, case.dim, case.depth, **kwargs)
    head.load_state_dict(base.state_dict())
    return head.to(device=case.device, dtype=case.torch_dtype)


def _official(compiled: bool):
    def build(case: HeadCase, base: StattnHead):
        port = port_of(base, case.in_channels).to(device=case.device, dtype=case.torch_dtype)
        return (torch.compile(port, dynamic=False) if compiled else port), True

    return build


def _stattn(backend: str | None, compiled: bool = False, fused: bool | None = False):
    def build(case: HeadCase, base: StattnHead):
        if backend == "native" and case.device.type != "cpu":
            raise NotAvailable("CPU only (the native backend is C kernels for CPU float32)")
        if backend == "triton" and case.device.type != "cuda" and not case.allow_interpreter:
            raise NotAvailable("CUDA only; the interpreter is for correctness (--allow-interpreter to run it)")
        head = _like(base, case, backend=backend, fused=fused)
        return (torch.compile(head, dynamic=False) if compiled else head), False

    return build


def _fused(case: HeadCase, base: StattnHead):
    try:
        head = StattnHead(case.in_channels, case.F, case.dim, case.depth, fused=True)
    except TypeError as exc:
        raise NotAvailable(f"SpaceTimeDecoupling(fused=True) is not in this stattn (TypeError: {exc})") from None
    if case.device.type != "cuda" and not case.allow_interpreter:
        raise NotAvailable("CUDA only (the fused block is a Triton kernel; the interpreter is for correctness)")
    head.load_state_dict(base.state_dict())
    return head.to(device=case.device, dtype=case.torch_dtype), False


PROVIDERS: dict[str, HeadProvider] = {
    p.name: p
    for p in [
        HeadProvider("official-eager", "eager port of the official DSTA head (benchmarks/official_style.py)",
                     _official(False)),
        HeadProvider("official-compiled", "torch.compile of that port", _official(True)),
        HeadProvider("stattn-default", "stattn modules as built by default (backend=None, fused=None: the "
                     "whole-block kernel on CUDA in eval mode)", _stattn(None, fused=None)),
        HeadProvider("stattn-reference", "stattn modules, backend='reference', fused=False", _stattn("reference")),
        HeadProvider("stattn-native", "stattn modules, backend='native' (CPU float32), fused=False", _stattn("native")),
        HeadProvider("stattn-compiled", "torch.compile of the stattn modules, default backend, fused=False",
                     _stattn(None, compiled=True)),
        HeadProvider("stattn-triton", "stattn modules, backend='triton' (CUDA; per-op kernels), fused=False",
                     _stattn("triton")),
        HeadProvider("stattn-fused", "SpaceTimeDecoupling(fused=True): the whole-block Triton kernel (CUDA; "
                     "backward recomputes the unfused block)", _fused),
    ]
}

DEFAULT = list(PROVIDERS)
QUICK = ["official-eager", "stattn-default", "stattn-reference", "stattn-native", "stattn-triton", "stattn-fused"]

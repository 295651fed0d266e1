"""Backend choice at call time, with readable refusal reasons (xformers' ``not_supported_reasons``).

Backends: ``"triton"`` (fused kernels, CUDA), ``"native"`` (C forward kernels for float32 on CPU,
compiled on first use; backward = the reference's closed form) and ``"reference"`` (pure PyTorch).
``backend=None`` (or the ``STATTN_BACKEND`` environment variable) picks Triton for CUDA tensors when
stattn's Triton kernels import and support the shape, native for float32 CPU tensors when a C
compiler is available, else the reference. Under ``TRITON_INTERPRET=1`` Triton also runs CPU tensors,
but only when asked for explicitly: the interpreter is a test tool, far slower than the others. A
forced backend that cannot run raises ``ValueError`` listing every reason.
"""
from __future__ import annotations

import importlib.util
import os

import torch

from ._compile import constant_result

BACKENDS = ("triton", "native", "reference")

# Limits of the Triton kernels (the reference has none).
MAX_HEAD_DIM = 128
MAX_FRAMES = 64
MAX_TOKENS = 256
MAX_GROUP = 64
#: The fused whole-block kernel (stattn.nn.fused): largest token width, and longest sequence (frames or
#: members of one group) one program tile holds.
FUSED_MAX_CHANNELS = 128
FUSED_MAX_MEMBERS = MAX_GROUP
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_IMPORT_ERROR: dict[str, str | None] = {}


@constant_result
def triton_import_error() -> str | None:
    """Why stattn's Triton kernels cannot be used here, or None if they can (checked once)."""
    if "triton" not in _IMPORT_ERROR:
        _IMPORT_ERROR["triton"] = _find_triton_error()
    return _IMPORT_ERROR["triton"]


def _find_triton_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed"
    try:
        from . import triton as triton_ops
    except Exception as exc:  # pragma: no cover - depends on the installed triton
        return f"stattn.ops.triton failed to import: {type(exc).__name__}: {exc}"
    if not getattr(triton_ops, "AVAILABLE", False):
        return "stattn's Triton kernels are not part of this version yet"
    try:  # a broken Triton install shows up here, as a reason, not at the first launch
        from .triton import _launchers  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the installed triton
        return f"stattn's Triton kernels failed to import: {type(exc).__name__}: {exc}"
    return None


def triton_reasons(op: str, q: torch.Tensor, max_group: int | None = None) -> list[str]:
    """Every reason why the Triton backend cannot run ``op`` on tensors like ``q`` ([B, F, N, H, D])."""
    reasons = []
    on_device = q.device.type == "cuda" or (q.device.type == "cpu" and interpreter_enabled())
    if not on_device:
        reasons.append(f"tensors are on {q.device.type}, Triton needs cuda (or cpu with TRITON_INTERPRET=1)")
    err = triton_import_error() if on_device else None  # CPU calls never pay for importing Triton
    if err is not None:
        reasons.append(err)
    if q.dtype not in TRITON_DTYPES:
        reasons.append(f"dtype {q.dtype} is not one of float32, float16, bfloat16")
    _, frames, tokens, _, head_dim = q.shape
    if head_dim > MAX_HEAD_DIM:
        reasons.append(f"head dim {head_dim} > {MAX_HEAD_DIM}")
    if frames > MAX_FRAMES:
        reasons.append(f"{frames} frames > {MAX_FRAMES}")
    if tokens > MAX_TOKENS:
        reasons.append(f"{tokens} tokens per frame > {MAX_TOKENS}")
    if max_group is not None and max_group > MAX_GROUP:
        reasons.append(f"a group of {max_group} tokens > {MAX_GROUP}")
    return reasons


def native_reasons(op: str, q: torch.Tensor, max_group: int | None = None) -> list[str]:
    """Every reason the native CPU backend cannot run ``op`` on tensors like ``q``."""
    from . import native

    return native.reasons(q)


def reasons(backend: str, op: str, q: torch.Tensor, max_group: int | None = None) -> list[str]:
    if backend == "reference":
        return []
    return {"triton": triton_reasons, "native": native_reasons}[backend](op, q, max_group)


def choose_backend(op: str, q: torch.Tensor, backend: str | None, max_group: int | None = None) -> str:
    """The backend that will run ``op``; raises ``ValueError`` if a forced one cannot."""
    requested = backend or os.environ.get("STATTN_BACKEND") or None
    if requested is not None and requested not in BACKENDS:
        source, default = ("", "None") if backend else (" in the environment variable STATTN_BACKEND", "unset")
        allowed = ", ".join(repr(b) for b in BACKENDS)
        raise ValueError(f"{op}: unknown backend {requested!r}{source}; expected {allowed} or {default}")
    if requested is not None:
        refused = reasons(requested, op, q, max_group)
        if refused:
            raise ValueError(f"{op}: backend {requested!r} cannot run this call: " + "; ".join(refused))
        return requested
    # automatic: Triton only for real GPUs (the interpreter is opt-in), native for CPU float32
    if q.device.type == "cuda" and not triton_reasons(op, q, max_group):
        return "triton"
    if q.device.type == "cpu" and not native_reasons(op, q, max_group):
        return "native"
    return "reference"


def describe(op: str, q: torch.Tensor) -> tuple[str, dict[str, list[str]]]:
    """(backend picked by default, {backend: reasons it cannot run}) for ``python -m stattn.info``."""
    return choose_backend(op, q, None), {b: reasons(b, op, q) for b in BACKENDS}

"""Backend choice at call time: a registry of backend objects, walked in preference order.

Each backend module declares one :class:`~stattn.ops._backend.Backend` (its limits, its ``reasons``,
its implementations); ``REGISTRY`` lists them by preference: ``triton`` (fused kernels, CUDA),
``native`` (C forward kernels for float32 on CPU, built while deciding), ``reference`` (pure PyTorch,
runs everything). ``backend=None`` (or the ``STATTN_BACKEND`` environment variable) takes the first
that has no reason to refuse the call; Triton declines CPU tensors unless asked for explicitly (the
interpreter under ``TRITON_INTERPRET=1`` is a test tool, far slower than the others). A requested
backend that cannot run raises ``ValueError`` listing every reason (xformers' ``not_supported_reasons``).
The registered ops then run exactly the chosen implementation: nothing falls back on its own.
"""
from __future__ import annotations

import os

import torch

from . import native, reference, triton
from ._backend import Backend

#: Preference order of ``backend=None``; adding a backend is one module plus one entry here.
REGISTRY: tuple[Backend, ...] = (triton.BACKEND, native.BACKEND, reference.BACKEND)
BY_NAME = {b.name: b for b in REGISTRY}
BACKENDS = tuple(BY_NAME)

# what other modules and tests read from here (each defined once, in the triton backend module)
interpreter_enabled = triton.interpreter_enabled
triton_import_error = triton.import_error


def requested_backend(op: str, backend: str | None) -> Backend | None:
    """The backend asked for by ``backend=`` or ``STATTN_BACKEND`` (None: automatic)."""
    requested = backend or os.environ.get("STATTN_BACKEND") or None
    if requested is None:
        return None
    chosen = BY_NAME.get(requested)
    if chosen is None:
        source, default = ("", "None") if backend else (" in the environment variable STATTN_BACKEND", "unset")
        allowed = ", ".join(repr(b) for b in BACKENDS)
        raise ValueError(f"{op}: unknown backend {requested!r}{source}; expected {allowed} or {default}")
    return chosen


#: Decisions by everything the backends' reasons read: a B = 1 call should not re-derive them. Only
#: successful decisions are kept (a native one means its kernel is built, and stays so).
_DECIDED: dict[tuple, Backend] = {}
_META_KEYS = ("group_sizes", "kind", "window", "causal", "groups", "num_heads")  # hashable: tuples, ints


def forget() -> None:
    """Drop the remembered decisions (after changing what a backend's reasons depend on, e.g. in tests)."""
    _DECIDED.clear()


def choose(op: str, *inputs, backend: str | None = None, **meta) -> Backend:
    """The backend that will run ``op`` on ``inputs``; raises ``ValueError`` if a requested one cannot."""
    if torch.compiler.is_compiling():  # Dynamo traces the plain decision
        return _choose(op, *inputs, backend=backend, **meta)
    x = inputs[0]  # q, or the block's x (the block's weights are checked to match it)
    env = os.environ
    key = (op, backend, env.get("STATTN_BACKEND"), env.get("TRITON_INTERPRET"), x.device, x.dtype, x.shape[1:],
           *map(meta.get, _META_KEYS))  # fmt: skip
    if op == "local_block":  # the whole-block kernel refuses autocast
        key += (torch.is_autocast_enabled(x.device.type),)
    chosen = _DECIDED.get(key)
    if chosen is None:
        chosen = _DECIDED[key] = _choose(op, *inputs, backend=backend, **meta)
        if len(_DECIDED) > 1024:  # shapes churn (a sweep): start over rather than grow
            _DECIDED.clear()
    return chosen


def _choose(op: str, *inputs, backend: str | None = None, **meta) -> Backend:
    requested = requested_backend(op, backend)
    if requested is not None:
        refused = requested.reasons(op, *inputs, **meta)
        if refused:
            raise ValueError(f"{op}: backend {requested.name!r} cannot run this call: " + "; ".join(refused))
        return requested
    for candidate in REGISTRY:
        if not candidate.reasons(op, *inputs, automatic=True, **meta):
            return candidate
    raise RuntimeError(f"{op}: no backend can run this call")  # unreachable: the reference runs everything


def refusals(op: str, *inputs, **meta) -> dict[str, list[str]]:
    """{backend name: every reason it cannot run this call when asked for it}."""
    return {b.name: b.reasons(op, *inputs, **meta) for b in REGISTRY}


def implementation(backend: str, op: str):
    """``(forward, backward)`` of ``op`` in the backend named ``backend`` (the registered ops' body)."""
    return BY_NAME[backend].table[op]


# --------------------------------------------- the attention ops' view, for callers that only have q
def _meta(max_group: int | None) -> dict:
    return {} if max_group is None else {"group_sizes": (max_group,)}


def choose_backend(op: str, q, backend: str | None, max_group: int | None = None) -> str:
    """Name of the backend that will run attention ``op`` on tensors like ``q`` `[B, F, N, H, D]`."""
    return choose(op, q, backend=backend, **_meta(max_group)).name


def reasons(backend: str, op: str, q, max_group: int | None = None) -> list[str]:
    return BY_NAME[backend].reasons(op, q, **_meta(max_group))


def triton_reasons(op: str, q, max_group: int | None = None) -> list[str]:
    return reasons("triton", op, q, max_group)


def native_reasons(op: str, q, max_group: int | None = None) -> list[str]:
    return reasons("native", op, q, max_group)


def describe(op: str, *inputs, **meta) -> tuple[str, dict[str, list[str]]]:
    """(backend picked by default, {backend: reasons it cannot run}) for ``python -m stattn.info``."""
    return choose(op, *inputs, **meta).name, refusals(op, *inputs, **meta)

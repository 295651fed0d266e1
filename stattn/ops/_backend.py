"""What a backend is: a name, the ops it implements, why it refuses a call, and its implementations.

A backend module (``reference``, ``native``, ``triton``) declares its limits once, as module
constants, and one instance of a :class:`Backend` subclass named ``BACKEND``; ``_dispatch`` keeps
the registry of those instances in preference order. Implementations are ``{op: (forward,
backward)}`` with the signatures of the reference functions of the op (``reference.py``):

    temporal_attention: forward(q, k, v, scale, window, causal, query_frames) -> o
                        backward(grad, q, k, v, scale, window, causal, query_frames) -> (dq, dk, dv)
    grouped_attention:  forward(q, k, v, group_index, group_sizes, scale) -> o
                        backward(grad, q, k, v, group_index, group_sizes, scale) -> (dq, dk, dv)
    local_block:        forward(x, weights, kind, window, causal, groups, num_heads, eps) -> y
                        backward: None (the op recomputes its reference under autograd)
"""
from __future__ import annotations

from typing import Callable

#: Every op of the registry, with the meta arguments its ``reasons`` receive by keyword.
OPS = ("temporal_attention", "grouped_attention", "local_block")


class Backend:
    """One backend. Subclasses set ``name`` and ``ops``, and override :meth:`refusals` and :meth:`_table`.

    ``reasons(op, *inputs, automatic=False, **meta)`` lists every reason this backend cannot run the
    call (empty: it can); ``automatic`` is True when dispatch asks on behalf of ``backend=None``
    (a backend may decline to be picked automatically, as the Triton interpreter does on CPU).
    ``table`` maps each op to ``(forward, backward)``, resolved on first use (Triton imports lazily).
    """

    name: str = ""
    ops: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._resolved: dict[str, tuple[Callable, Callable | None]] | None = None

    def reasons(self, op: str, *inputs, automatic: bool = False, **meta) -> list[str]:
        if op not in self.ops:
            return [f"the {self.name} backend does not implement {op}"]
        return self.refusals(op, *inputs, automatic=automatic, **meta)

    def refusals(self, op: str, *inputs, automatic: bool = False, **meta) -> list[str]:
        """Reasons specific to this backend (``op`` is one it implements)."""
        return []

    @property
    def table(self) -> dict[str, tuple[Callable, Callable | None]]:
        if self._resolved is None:
            self._resolved = self._table()
        return self._resolved

    def _table(self) -> dict[str, tuple[Callable, Callable | None]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<stattn backend {self.name!r}: {', '.join(sorted(self.ops))}>"

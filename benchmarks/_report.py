"""Ratios between providers of one case, and the plain-text tables the benches print."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence


def add_speedups(rows: list[dict], case_key: Callable[[dict], tuple], peers: dict[str, Callable[[dict], str]]) -> None:
    """Set ``row[column] = peer_ms / row_ms`` for every peer column (> 1: the row is faster).

    ``case_key`` groups the rows of one case and timer (same run); ``peers`` maps a column name to a
    function giving the peer provider's name for a row (e.g. the case's stattn default). The cell stays
    empty when the row or the peer has no timing.
    """
    by_case: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(case_key(row), {})[row["provider"]] = row
    for row in rows:
        providers = by_case[case_key(row)]
        for column, peer_of in peers.items():
            peer = providers.get(peer_of(row))
            ok = row.get("median_ms") not in (None, "") and peer is not None and peer.get("median_ms") not in (None, "")
            row[column] = round(peer["median_ms"] / row["median_ms"], 3) if ok and row["median_ms"] > 0 else ""


def fmt(value, spec: str = "") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float) and spec:
        return format(value, spec)
    return str(value)


def print_table(title: str, rows: Iterable[dict], columns: Sequence[tuple[str, str, str]]) -> None:
    """``columns``: (header, row key, format spec). An n/a (or wrong) row prints its reason instead."""
    rows = list(rows)
    print(f"\n{title}")
    if not rows:
        print("  (no rows)")
        return
    cells = [[fmt(r.get(key), spec) for _, key, spec in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _, _) in enumerate(columns)]
    print("  " + "  ".join(h.rjust(w) if i else h.ljust(w) for i, ((h, _, _), w) in enumerate(zip(columns, widths))))
    for r, c in zip(rows, cells):
        if r.get("status", "ok") != "ok":  # n/a or wrong: the reason instead of numbers
            print(f"  {c[0].ljust(widths[0])}  {r['status']}: {r.get('reason', '')}")
            continue
        line = "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(c, widths)))
        note = r.get("note")
        print("  " + line + (f"   ({note})" if note else ""))


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "met" if value >= target else "not met"

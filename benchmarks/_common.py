"""Timing and record-keeping shared by the benchmark scripts (outside the package on purpose)."""
from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

import stattn

RESULTS = Path(__file__).resolve().parent / "results"


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "_")
    return f"cpu-{os.cpu_count()}core-{torch.get_num_threads()}thr"


def environment() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=False).stdout.strip() or "unknown"  # fmt: skip
    except OSError:
        sha = "unknown"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return {
        "device": device_name(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "triton": triton_version,
        "stattn": stattn.__version__,
        "git_sha": sha,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def interleaved_cpu_timings(fns: dict, *, warmup: int = 5, reps: int = 30) -> dict:
    """Median / p20 / p80 milliseconds per function, timing them round-robin.

    Interleaving means a slow phase of the machine (another process, frequency change) hits every
    provider alike, so the ratios stay honest even when the absolute numbers wobble.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, xs in samples.items():
        q = statistics.quantiles(xs, n=10, method="inclusive")  # inside the data range, even for few rounds
        out[name] = {"median_ms": statistics.median(xs), "p20_ms": q[1], "p80_ms": q[7]}
    return out


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to the CSV at ``path`` (one file per device, shared by every bench script).

    Benches record different columns. When ``rows`` bring columns the file's header lacks, the file is
    rewritten once with the union of both headers (old columns first), old rows getting empty cells, so
    it stays one well-formed table that ``csv.DictReader`` reads and that the ``bench`` column splits.
    """
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            old_rows = list(reader) if set(fields) - set(header) else None
        if old_rows is not None:  # new columns: rewrite with the union header
            header += [f for f in fields if f not in header]
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=header, restval="")
                writer.writeheader()
                writer.writerows({k: v for k, v in r.items() if k is not None} for r in old_rows)
        with path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=header, restval="").writerows(rows)
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)

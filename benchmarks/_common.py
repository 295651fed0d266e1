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
        q = statistics.quantiles(xs, n=10)
        out[name] = {"median_ms": statistics.median(xs), "p20_ms": q[1], "p80_ms": q[7]}
    return out


def append_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)

"""Time a set of ready-to-call providers of one case: median, p20 and p80 milliseconds.

CPU: :func:`_common.interleaved_cpu_timings` (warm-up, then round-robin rounds, medians), so a slow
phase of a shared machine hits every provider of the case alike.
CUDA: ``triton.testing.do_bench`` (quantiles 0.5, 0.2, 0.8; L2 flushed before each timed call) and/or
``triton.testing.do_bench_cudagraph`` (the call replayed from a CUDA graph: no host overhead; its
budget is capped at 20 ms because the graph unrolls budget / call-time calls). The
``timer`` column of every row says which.

A provider that fails while being timed gets its exception text as its n/a reason; the others keep
their numbers.
"""
from __future__ import annotations

from typing import Callable

from _common import interleaved_cpu_timings

QUANTILES = [0.5, 0.2, 0.8]
CUDAGRAPH_MAX_MS = 20.0


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """One line: ``Type: first line of the message`` (compile errors can be pages long)."""
    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), "")
    out = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."


def time_cpu(fns: dict[str, Callable], reps: int, warmup: int) -> dict[str, dict | str]:
    """{name: timings or n/a reason}; a provider that raises is dropped and the rest timed again."""
    failed: dict[str, str] = {}
    live = dict(fns)
    while live:
        try:
            return {**interleaved_cpu_timings(live, warmup=warmup, reps=reps), **failed}
        except Exception:  # find which provider broke, keep the others
            for name, fn in list(live.items()):
                try:
                    fn()
                except Exception as exc:
                    failed[name] = "failed while timed: " + describe_error(exc)
                    del live[name]
            if not failed:
                raise
    return failed


def time_cuda(fns: dict[str, Callable], timer: str, reps: float, warmup: float) -> dict[str, dict | str]:
    """{name: timings or n/a reason}, one provider after the other (each timed in isolation)."""
    import torch
    import triton.testing

    out: dict[str, dict | str] = {}
    for name, fn in fns.items():
        try:
            if timer == "do_bench":
                ms = triton.testing.do_bench(fn, warmup=warmup, rep=reps, quantiles=QUANTILES)
            else:  # the graph unrolls rep / (one call's time) calls: keep it to triton's default budget
                ms = triton.testing.do_bench_cudagraph(fn, rep=min(reps, CUDAGRAPH_MAX_MS), quantiles=QUANTILES)
            out[name] = {"median_ms": ms[0], "p20_ms": ms[1], "p80_ms": ms[2]}
        except Exception as exc:
            out[name] = f"{timer} failed: " + describe_error(exc)
            try:
                torch.cuda.synchronize()
            except Exception as sticky:  # a sticky CUDA error: later calls will fail and say so
                out[name] += f" (then: {describe_error(sticky)})"
    return out


def time_providers(fns: dict[str, Callable], timer: str, reps: float, warmup: float) -> dict[str, dict | str]:
    if not fns:
        return {}
    if timer == "interleaved_cpu":
        return time_cpu(fns, int(reps), int(warmup))
    return time_cuda(fns, timer, reps, warmup)


def measure_copy_gbs(device, nbytes: int = 1 << 29) -> float:
    """Device-to-device copy bandwidth (read + write) in GB/s: the practical HBM ceiling on CUDA."""
    import torch
    import triton.testing

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=100, quantiles=[0.5])
    ms = ms[0] if isinstance(ms, (list, tuple)) else ms
    return 2 * nbytes / (ms * 1e-3) / 1e9

"""Command-line pieces shared by the bench scripts: list parsers, common flags, device resolution.

Sweep flags default to None so that each script can resolve them in one order: an explicit flag wins,
then ``--quick`` (a tiny smoke-test sweep), then the device's default (CPU-sized on CPU, full on CUDA).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from _common import RESULTS

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}  # fmt: skip


def str_list(text: str) -> list[str]:
    """``"a,b , c"`` -> ``["a", "b", "c"]``."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def int_list(text: str) -> list[int]:
    """``"1,32,256"`` -> ``[1, 32, 256]``."""
    try:
        values = [int(s) for s in str_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"values must be positive, got {text!r}")
    return values


def heads_dims(text: str) -> list[tuple[int, int]]:
    """``"8x4,2x16"`` -> ``[(8, 4), (2, 16)]`` (heads x head dim)."""
    out = []
    for item in str_list(text):
        try:
            h, d = (int(x) for x in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected HxD items like 8x4, got {item!r}") from None
        if h <= 0 or d <= 0:
            raise argparse.ArgumentTypeError(f"heads and head dim must be positive, got {item!r}")
        out.append((h, d))
    return out


def dtype_list(text: str) -> list[str]:
    """``"float32,bf16"`` -> canonical names ``["float32", "bfloat16"]``."""
    out = []
    for item in str_list(text):
        if item not in DTYPES:
            raise argparse.ArgumentTypeError(f"unknown dtype {item!r}; use float32, bfloat16 or float16")
        out.append(str(DTYPES[item]).removeprefix("torch."))
    return out


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every bench takes: device, dtypes, providers, timing budget, recording."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (default auto: cuda if available)")
    parser.add_argument("--dtypes", type=dtype_list, default=None,
                        help="comma list of float32,bfloat16,float16 "
                             "(default: float32 on CPU, float32,bfloat16 on CUDA)")
    parser.add_argument("--providers", type=str_list, default=None,
                        help="comma list of providers to run (default: all that make sense on the device; "
                             "'all' = every provider, unavailable ones give n/a rows)")
    parser.add_argument("--reps", type=float, default=None,
                        help="CPU: timed round-robin rounds per case (default 20, >= 2). "
                             "CUDA: do_bench time budget in ms (default 100; do_bench_cudagraph: at most 20)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="CPU: untimed calls per provider before the rounds (default 3). "
                             "CUDA: do_bench warm-up budget in ms (default 25)")
    parser.add_argument("--timer", choices=("auto", "do_bench", "cudagraph", "both"), default="auto",
                        help="CUDA timer: do_bench (L2 flushed, host launch mostly hidden), do_bench_cudagraph "
                             "(graph replay, no host overhead) or both; auto = both. CPU always uses "
                             "interleaved round-robin rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--allow-interpreter", action="store_true",
                        help="let stattn-triton run on CPU through TRITON_INTERPRET=1 (very slow; for correctness)")
    parser.add_argument("--quick", action="store_true", help="tiny sweep with tiny timing budgets: a smoke test")
    parser.add_argument("--record", action="store_true",
                        help="append the rows to <results-dir>/<device>.csv (with device, versions, git SHA, time)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help=f"where --record writes (default {RESULTS})")


def resolve_device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (this torch is " + torch.__version__ + ")")
    return torch.device(name)


def resolve_timing(args, device: torch.device) -> tuple[float, float]:
    """(reps, warmup) with the device's meaning: CPU rounds/calls, CUDA milliseconds."""
    if device.type == "cuda":
        reps = args.reps if args.reps is not None else (10 if args.quick else 100)
        warmup = args.warmup if args.warmup is not None else (5 if args.quick else 25)
        return float(reps), float(warmup)
    reps = int(args.reps) if args.reps is not None else (2 if args.quick else 20)
    warmup = int(args.warmup) if args.warmup is not None else (0 if args.quick else 3)
    if reps < 2:
        raise SystemExit("--reps must be >= 2 on CPU (p20/p80 need two samples)")
    return reps, warmup


def resolve_timers(args, device: torch.device) -> list[str]:
    if device.type != "cuda":
        return ["interleaved_cpu"]
    return {"auto": ["do_bench", "cudagraph"], "both": ["do_bench", "cudagraph"]}.get(args.timer, [args.timer])


def setup_runtime(args, device: torch.device) -> None:
    """Threads, the Triton interpreter opt-in, and torch.compile's recompile budget for a sweep."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.allow_interpreter and device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before stattn imports its Triton kernels
    from torch._dynamo import config as dynamo

    # a sweep compiles one graph per shape; the default limit (8) would silently fall back to eager
    dynamo.recompile_limit = max(dynamo.recompile_limit, 1024)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4096)

def pick_providers(parser, requested: list[str] | None, known: dict, default: list[str]) -> list[str]:
    if requested is None:
        return default
    if requested == ["all"]:
        return list(known)
    unknown = [p for p in requested if p not in known]
    if unknown:
        parser.error(f"unknown provider(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return requested

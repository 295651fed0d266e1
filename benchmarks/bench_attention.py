"""Temporal and grouped local attention: stattn's backends against every peer that computes the same thing.

One case = (op, mode, B, F, H, D, dtype) with N = 17 joints (POSETRACK groups). Per case every provider
is set up, checked once against a float64 reference, then timed; a provider that cannot run the case
records an `n/a` row with the reason. Ops:

  temporal  token (f, n) attends to (g, n) over the F frames of its clip       T = B*F*N query tokens
  grouped   token n attends to its joint group inside one frame; by default on
            the key frame only, as DSTA's SD (--grouped-frames all: every frame) T = B*N (or B*F*N)

Modes: fwd (forward, no autograd graph), bwd (backward only, of a forward done once), fwdbwd (both).

Memory floor per case (C = H*D, s = bytes per element): fwd reads q, k, v and writes o = 4*T*C*s; bwd
reads q, k, v, do and writes dq, dk, dv = 7*T*C*s; fwdbwd = 11*T*C*s. `GB/s` = floor / median time
(the same yardstick for every provider of a case). On CUDA `floor%` = GB/s over the measured
device-to-device copy bandwidth.

Timing: CPU = interleaved round-robin rounds (median, p20, p80) over the providers of a case; CUDA =
triton.testing.do_bench (quantiles 0.5/0.2/0.8, L2 flushed) and do_bench_cudagraph (column `timer`;
not for bwd, whose stored forward ran outside the graph).
Ratios `vs X` = X's median / this row's median (> 1: this row is faster), from the same run: X =
stattn's default provider for the case (backend=None), sdpa-global, sdpa (reshaped dense batch) and
eager-official.

Targets checked in the summary:
  CPU  stattn temporal + grouped (key frame) >= 8x faster than global attention, B=256 F=5 8x4 fp32 fwd,
       measured as in docs/performance.md: the two interleaved as a pair (recorded as bench
       cpu_local_vs_global, run pair), when the sweep holds that case
  GPU  stattn-triton fwd >= 70% of the copy bandwidth for B >= 4096; fwdbwd at B=256 >= 2x faster than
       sdpa (reshaped) and >= 10x faster than sdpa-global

Examples:
  python benchmarks/bench_attention.py                      # CPU-sized sweep (a few minutes) or full GPU sweep
  python benchmarks/bench_attention.py --quick              # seconds: smoke test
  python benchmarks/bench_attention.py --ops temporal --modes fwd --batch 256 --frames 5 --heads-dims 8x4
  python benchmarks/bench_attention.py --device cuda --record   # append rows to benchmarks/results/<device>.csv
"""
from __future__ import annotations

import argparse
import sys
import warnings

import torch

from _attention_providers import DEFAULT_CPU, DEFAULT_CUDA, PROVIDERS, QUICK, Case
from _attention_run import run_case
from _cli import add_common_args, heads_dims, int_list, pick_providers, resolve_device, resolve_timers
from _cli import resolve_timing, setup_runtime, str_list
from _common import append_csv, environment
from _report import add_speedups, print_table, verdict

OPS = ("temporal", "grouped")
MODES = ("fwd", "bwd", "fwdbwd")

SWEEPS = {  # batch, frames, heads x dims, dtypes, modes
    "cpu": ([1, 32, 256], [3, 5], [(8, 4)], ["float32"], ["fwd", "fwdbwd"]),
    "cuda": ([1, 32, 256, 1024, 4096], [3, 5], [(8, 4), (4, 8), (2, 16), (1, 32)], ["float32", "bfloat16"],
             list(MODES)),
    "quick": ([2], [3], [(8, 4)], ["float32"], list(MODES)),
}  # fmt: skip

COLUMNS = [("provider", "provider", ""), ("median ms", "median_ms", ".4f"), ("p20", "p20_ms", ".4f"),
           ("p80", "p80_ms", ".4f"), ("GB/s", "gbs", ".2f"), ("floor%", "floor_pct", ".1f"),
           ("vs default", "speedup_vs_default", ".2f"), ("vs global", "speedup_vs_global", ".2f"),
           ("vs sdpa", "speedup_vs_sdpa", ".2f"), ("vs official", "speedup_vs_official", ".2f")]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    providers = "\n".join(f"  {p.name:<19}{p.help}" for p in PROVIDERS.values())
    epilog = (f"providers:\n{providers}\n\ndefault providers: CPU {','.join(DEFAULT_CPU)}; CUDA all; --quick "
              f"{','.join(QUICK)}.\nThe compiled providers (reference-compiled, flex-compiled) compile once per case "
              "and mode: ~5-15 s each on a 2-core CPU.")  # fmt: skip
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=str_list, default=list(OPS), help="comma list of temporal,grouped (default both)")
    parser.add_argument("--modes", type=str_list, default=None,
                        help="comma list of fwd,bwd,fwdbwd (default: fwd,fwdbwd on CPU, all three on CUDA)")
    parser.add_argument("--batch", type=int_list, default=None,
                        help="clips B (default: 1,32,256 on CPU; 1,32,256,1024,4096 on CUDA)")
    parser.add_argument("--frames", type=int_list, default=None, help="frames F (default 3,5)")
    parser.add_argument("--heads-dims", type=heads_dims, default=None,
                        help="heads x head dim, C = H*D (default: 8x4 on CPU; 8x4,4x8,2x16,1x32 on CUDA)")
    parser.add_argument("--grouped-frames", choices=("key", "all"), default="key",
                        help="grouped attention on the key frame only (DSTA's SD, default) or on every frame")
    add_common_args(parser)
    return parser


def resolve_sweep(parser, args, device):
    sweep = SWEEPS["quick" if args.quick else device.type]
    batch = args.batch or sweep[0]
    frames = args.frames or sweep[1]
    hds = args.heads_dims or sweep[2]
    dtypes = args.dtypes or sweep[3]
    modes = args.modes or sweep[4]
    for name, values, allowed in (("--ops", args.ops, OPS), ("--modes", modes, MODES)):
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.error(f"{name}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    default = QUICK if args.quick else (DEFAULT_CUDA if device.type == "cuda" else DEFAULT_CPU)
    providers = pick_providers(parser, args.providers, PROVIDERS, default)
    cases = [Case(op, mode, B, Fr, H, D, dtype, device, args.grouped_frames, args.allow_interpreter)
             for dtype in dtypes for op in args.ops for mode in modes for Fr in frames for H, D in hds
             for B in batch]  # fmt: skip
    return cases, providers


def _case_key(row: dict) -> tuple:
    return tuple(row[k] for k in ("op", "scope", "mode", "B", "F", "H", "D", "dtype", "timer"))


PEERS = {
    "speedup_vs_default": lambda r: r["default_provider"],
    "speedup_vs_global": lambda r: "sdpa-global",
    "speedup_vs_sdpa": lambda r: "sdpa",
    "speedup_vs_official": lambda r: "eager-official",
}


def print_case(case: Case, rows: list[dict]) -> None:
    for timer in dict.fromkeys(r["timer"] for r in rows):
        some = [r for r in rows if r["timer"] == timer]
        for r in some:
            r["floor_pct"] = 100 * r["floor_fraction"] if r["floor_fraction"] != "" else ""
        title = (f"{case.op} ({some[0]['scope']}) {case.mode}  B={case.B} F={case.F} N={case.N} H={case.H} D={case.D} "
                 f"{case.dtype}  [{timer}]  floor {some[0]['floor_bytes'] / 1e6:.2f} MB  "
                 f"default: {some[0]['default_provider']}")  # fmt: skip
        print_table(title, some, COLUMNS)
        for r in some:
            r.pop("floor_pct", None)


def _find(rows, **want) -> dict | None:
    for r in rows:
        if all(r.get(k) == v for k, v in want.items()) and r["status"] == "ok":
            return r
    return None


TARGET_CASE = dict(B=256, F=5, H=8, D=4, dtype="float32", mode="fwd", timer="interleaved_cpu")


def cpu_target_pair(reps: int, warmup: int, base_row: dict) -> list[dict]:
    """The CPU target as docs/performance.md defines it: one DSTA attention step (temporal over the
    clip + grouped on the key frame, stattn's default backend) against SDPA global attention,
    interleaved as a pair so that stattn's inputs stay as warm as in a network. Rows in the format of
    bench_cpu_local_vs_global.py (bench `cpu_local_vs_global`, run `pair`)."""
    import stattn
    import torch.nn.functional as F
    from stattn.testing import make_inputs

    from _common import interleaved_cpu_timings

    c = TARGET_CASE
    q, k, v = make_inputs(c["B"], c["F"], 17, c["H"], c["D"])
    key = c["F"] // 2
    backend = stattn.ops._dispatch.choose_backend("temporal_attention", q, None)

    def local():
        return (stattn.temporal_attention(q, k, v),
                stattn.grouped_attention(q[:, key], k[:, key], v[:, key], stattn.POSETRACK))  # fmt: skip

    def sdpa_global():
        seq = lambda t: t.reshape(c["B"], c["F"] * 17, c["H"], c["D"]).transpose(1, 2)  # noqa: E731
        return F.scaled_dot_product_attention(seq(q), seq(k), seq(v))

    timings = interleaved_cpu_timings({"stattn": local, "sdpa-global": sdpa_global}, warmup=warmup, reps=reps)
    base = timings["sdpa-global"]["median_ms"]
    return [{**base_row, "bench": "cpu_local_vs_global", "run": "pair", "backend": backend, "provider": name,
             "B": c["B"], "F": c["F"], "N": 17, "H": c["H"], "D": c["D"], "dtype": c["dtype"], "mode": "fwd",
             **{key_: round(x, 4) for key_, x in t.items()}, "speedup_vs_global": round(base / t["median_ms"], 3)}
            for name, t in timings.items()]  # fmt: skip


def _sweep_ratio(rows: list[dict]) -> str:
    """The same ratio from the sweep's rows (every provider of a case interleaved: stattn's inputs cold)."""
    c = TARGET_CASE
    t = _find(rows, op="temporal", **c)
    g = _find(rows, op="grouped", scope="key-frame", **c)
    t = t and _find(rows, op="temporal", provider=t["default_provider"], **c)
    g = g and _find(rows, op="grouped", scope="key-frame", provider=g["default_provider"], **c)
    glob = _find(rows, op="temporal", provider="sdpa-global", **c)
    if not (t and g and glob):
        return ""
    ratio = glob["median_ms"] / (t["median_ms"] + g["median_ms"])
    return (f"; in the sweep, all providers interleaved (inputs cold): {ratio:.2f}x ({t['provider']} "
            f"{t['median_ms']:.3f} + {g['median_ms']:.3f} ms vs {glob['median_ms']:.3f} ms)")


def summarize(rows: list[dict], device: torch.device, copy_gbs: float | None, pair: list[dict] | None) -> None:
    print("\n== targets ==")
    title = "CPU  local (temporal + grouped) >= 8x faster than global, B=256 F=5 8x4 fp32 fwd"
    if device.type != "cpu":
        print(f"{title}: not measured on this device")
    elif not pair:
        print(f"{title}: not measured (the sweep lacks B=256 F=5 8x4 float32 fwd with both ops)")
    else:
        by = {r["provider"]: r for r in pair}
        ratio = by["sdpa-global"]["median_ms"] / by["stattn"]["median_ms"]
        print(f"{title}: {verdict(ratio, 8.0)}: {ratio:.2f}x as a pair (stattn {by['stattn']['backend']} "
              f"{by['stattn']['median_ms']:.3f} ms vs sdpa-global {by['sdpa-global']['median_ms']:.3f} ms)"
              f"{_sweep_ratio(rows)}")  # fmt: skip
    if device.type != "cuda":
        print("GPU  fwd >= 70% of HBM floor at B >= 4096: not measured on this device")
        print("GPU  fwdbwd at B=256 >= 2x faster than sdpa (reshaped) and >= 10x faster than global: "
              "not measured on this device")  # fmt: skip
        return
    print(f"GPU  device-to-device copy bandwidth: {copy_gbs:.0f} GB/s (the floor's 100%)")
    big = [r for r in rows if r["provider"] == "stattn-triton" and r["mode"] == "fwd" and r["B"] >= 4096
           and r["timer"] == "do_bench"]  # fmt: skip
    if not big:
        print("GPU  fwd >= 70% of HBM floor at B >= 4096: not measured (no stattn-triton fwd rows with B >= 4096)")
    for r in big:
        frac = r["floor_fraction"] if r["status"] == "ok" else None
        shown = f"{100 * frac:.0f}%" if frac is not None else r["reason"]
        print(f"GPU  fwd >= 70% of HBM floor: {r['op']} B={r['B']} F={r['F']} {r['H']}x{r['D']} {r['dtype']}: "
              f"{shown} -> {verdict(frac, 0.70)}")  # fmt: skip
    step = [r for r in rows if r["provider"] == "stattn-triton" and r["mode"] == "fwdbwd" and r["B"] == 256
            and r["timer"] == "do_bench"]  # fmt: skip
    if not step:
        print("GPU  fwdbwd at B=256 vs sdpa / global: not measured (no stattn-triton fwdbwd rows at B=256)")
    for r in step:
        vs_sdpa = r["speedup_vs_sdpa"] if r["speedup_vs_sdpa"] != "" else None
        vs_glob = r["speedup_vs_global"] if r["speedup_vs_global"] != "" else None
        if vs_sdpa is None or vs_glob is None:
            ok = "not measured"
        else:
            ok = "met" if vs_sdpa >= 2 and vs_glob >= 10 else "not met"
        shown = lambda x: f"{x:.2f}x" if x is not None else "-"  # noqa: E731
        why = "" if r["status"] == "ok" else f": {r['reason']}"
        print(f"GPU  fwdbwd B=256 {r['op']} F={r['F']} {r['H']}x{r['D']} {r['dtype']}: {shown(vs_sdpa)} vs sdpa "
              f"(>= 2), {shown(vs_glob)} vs global (>= 10) -> {ok}{why}")  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    setup_runtime(args, device)
    warnings.filterwarnings("ignore", message=".*functools.lru_cache.*")  # dynamo tracing the reference
    cases, providers = resolve_sweep(parser, args, device)
    reps, warmup = resolve_timing(args, device)
    timers = resolve_timers(args, device)
    env = environment()
    copy_gbs = None
    if device.type == "cuda":
        from _timing import measure_copy_gbs

        copy_gbs = measure_copy_gbs(device)
    print(f"{env['device']}  torch {env['torch']}  triton {env['triton']}  stattn {env['stattn']} ({env['git_sha']})")
    print(f"{len(cases)} cases x {len(providers)} providers; timers {', '.join(timers)}; "
          f"{'reps/warmup (ms)' if device.type == 'cuda' else 'rounds/warm-up calls'} {reps:g}/{warmup:g}")  # fmt: skip
    rows: list[dict] = []
    for case in cases:
        case_rows = run_case(case, providers, timers, reps, warmup, {**env, "run_id": env["time"]}, copy_gbs)
        add_speedups(case_rows, _case_key, PEERS)
        print_case(case, case_rows)
        rows += case_rows
        sys.stdout.flush()
    pair = None
    if device.type == "cpu" and any(_find(rows, op=op, **TARGET_CASE) for op in ("temporal", "grouped")):
        pair = cpu_target_pair(int(reps), int(warmup), {**env, "run_id": env["time"]})
    summarize(rows, device, copy_gbs, pair)
    if args.record and rows:
        path = args.results_dir / f"{env['device']}.csv"
        append_csv(path, rows + (pair or []))
        print(f"\nrecorded {len(rows) + len(pair or [])} rows in {path}")
    return rows


if __name__ == "__main__":
    main()

"""Small-batch overhead on the CPU: one person (B = 1), where per-call machinery outweighs the arithmetic.

Two kinds of case, every provider of a case timed round-robin in one run (benchmarks/_common.py):

* op: one ``stattn.temporal_attention`` / ``stattn.grouped_attention`` call on `[1, F, 17, 8, 4]`
  (DSTA's sizes; grouped = the PoseTrack groups of the key frame, `[1, 17, 8, 4]`), in inference
  (``torch.no_grad()``) and with autograd recording (inputs require grad; forward only), against the
  plain eager formula the official code uses (permute to `[S, H, L, D]`, ``q @ k^T``, softmax, ``@ v``);
* std: the whole ``SpaceTimeDecoupling`` (4 + 4 blocks, dim 32, 8 heads) in eval mode under
  ``torch.no_grad()`` against the eager port of the official STD (benchmarks/official_style.py's
  blocks and data flow), with the same weights; both outputs are compared before timing.

Targets: the STD at B = 1 at least 1.5x faster than the eager port (column ``vs eager`` >= 1.5), and
one op call without autograd under 25 us. Rows go to benchmarks/results/<device>.csv with
``bench=small_batch`` (``--record``).

Examples:
  python benchmarks/bench_small_batch.py                    # F = 3 and 5, 1 thread
  python benchmarks/bench_small_batch.py --quick            # smoke test
  python benchmarks/bench_small_batch.py --record --reps 200
"""
from __future__ import annotations

import argparse
import sys

import torch

from _cli import int_list
from _common import RESULTS, append_csv, environment
from _report import add_speedups, print_table, verdict
from _stattn_head import StattnHead, randomize_
from _timing import time_cpu
from official_style import OfficialStyleHead, port_of
from stattn import grouped_attention, temporal_attention
from stattn.skeletons import POSETRACK
from stattn.testing import relative_error

STD_TARGET, OP_TARGET_US = 1.5, 25.0
COLUMNS = [("case", "case", ""), ("provider", "provider", ""), ("median us", "median_us", ".1f"),
           ("p20", "p20_us", ".1f"), ("p80", "p80_us", ".1f"), ("vs eager", "speedup_vs_eager", ".2f")]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int_list, default=[3, 5], help="frames F (default 3,5)")
    parser.add_argument("--reps", type=int, default=None, help="timed round-robin rounds per case (default 100)")
    parser.add_argument("--calls", type=int, default=None, help="calls per timed sample (default 20)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls per provider first (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: latency)")
    parser.add_argument("--quick", action="store_true", help="tiny timing budget: a smoke test")
    parser.add_argument("--record", action="store_true", help="append the rows to benchmarks/results/<device>.csv")
    return parser


# ------------------------------------------------------------------------------------- providers
def _eager_attention(q, k, v, frames_axis: bool):
    """The official code's formula: sequences to `[S, H, L, D]`, dense scores, softmax, weighted sum."""
    if frames_axis:  # temporal: a sequence is a joint's frames
        B, F, N, H, D = q.shape
        q, k, v = (t.permute(0, 2, 3, 1, 4).reshape(B * N, H, F, D) for t in (q, k, v))
    else:  # grouped: the PoseTrack groups of 3, folded into the batch
        q, k, v = (t[:, :15].reshape(-1, 3, t.shape[-2], t.shape[-1]).transpose(1, 2) for t in (q, k, v))
    attn = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return attn @ v


def _repeat(fn, calls: int):
    def run():
        for _ in range(calls):
            fn()

    return run


def op_cases(frames: int, calls: int) -> list[tuple[str, dict]]:
    gen = torch.Generator().manual_seed(frames)
    base = torch.randn(1, frames, 17, 3, 8, 4, generator=gen)  # one packed qkv projection, as layers give
    q, k, v = base.unbind(3)
    leaf = base.clone().requires_grad_()
    qg, kg, vg = leaf.unbind(3)
    key = frames // 2
    cases = []
    for mode, inputs in (("no_grad", (q, k, v)), ("autograd", (qg, kg, vg))):
        a, b, c = inputs
        ka, kb, kc = a[:, key], b[:, key], c[:, key]
        fns = {
            "temporal": {"stattn": lambda: temporal_attention(a, b, c),
                         "eager": lambda: _eager_attention(a, b, c, True)},
            "grouped": {"stattn": lambda: grouped_attention(ka, kb, kc, POSETRACK),
                        "eager": lambda: _eager_attention(ka, kb, kc, False)},
        }  # fmt: skip
        for op, providers in fns.items():
            if mode == "no_grad":
                providers = {name: _no_grad(fn) for name, fn in providers.items()}
            cases.append((f"{op} F={frames} {mode}", {n: _repeat(f, calls) for n, f in providers.items()}))
    return cases


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def _port_std(port: OfficialStyleHead, tokens: torch.Tensor) -> torch.Tensor:
    """The port's STD part on frame-major tokens `[F, B, N, C]` (internal joint order): SD on the key
    frame's groups of 3, TD over each joint's frames, the two fused by the 1x1 convolution."""
    Fr, B, N, C = tokens.shape
    key = tokens[Fr // 2]
    grouped = port.num_groups * port.group_size
    s = key[:, :grouped].reshape(B * port.num_groups, port.group_size, C) + port.spatial_pos
    for blk in port.spatial_blocks:
        s = blk(s)
    sd = torch.cat([port.spatial_norm(s).reshape(B, grouped, C), key[:, grouped:]], dim=1)
    t = tokens.permute(1, 2, 0, 3).reshape(B * N, Fr, C) + port.temporal_pos
    for blk in port.temporal_blocks:
        t = blk(t)
    td = port.temporal_norm(t)[:, Fr // 2].reshape(B, N, C)
    return port.aggregate(torch.stack([td, sd], dim=1)).squeeze(1)


def std_case(frames: int, calls: int) -> tuple[str, dict]:
    head = randomize_(StattnHead(64, frames)).eval()
    port = port_of(head, 64).eval()
    std = head.std
    tokens = torch.randn(1, frames, 17, 32, generator=torch.Generator().manual_seed(frames))
    order = [i for g in POSETRACK.groups if len(g) > 1 for i in g] + [i for g in POSETRACK.groups if len(g) == 1
                                                                        for i in g]  # fmt: skip
    frame_major = tokens[:, :, order].permute(1, 0, 2, 3).contiguous()  # the port's layout, made outside the timing
    with torch.no_grad():
        ours, theirs = std(tokens), _port_std(port, frame_major)
    grouped = [i for g in POSETRACK.groups if len(g) > 1 for i in g]  # the port lets singletons bypass SD
    err = relative_error(theirs[:, : len(grouped)], ours[:, grouped])
    if not err <= 1e-5:
        raise SystemExit(f"the eager port and stattn's STD disagree (relative error {err:.2e}): not timing them")
    providers = {"stattn": _no_grad(lambda: std(tokens)), "eager": _no_grad(lambda: _port_std(port, frame_major))}
    return f"std F={frames} no_grad", {n: _repeat(f, calls) for n, f in providers.items()}


# ------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    reps = args.reps or (3 if args.quick else 100)
    calls = args.calls or (2 if args.quick else 20)
    env = environment()
    rows = []
    for frames in args.frames:
        for case, fns in [*op_cases(frames, calls), std_case(frames, calls)]:
            timings = time_cpu(fns, reps=reps, warmup=max(1, args.warmup // calls))
            for provider, t in timings.items():
                row = {"bench": "small_batch", "case": case, "provider": provider, "batch": 1, "frames": frames,
                       "threads": args.threads, "calls_per_sample": calls, **env}  # fmt: skip
                if isinstance(t, str):
                    row.update(status="n/a", reason=t)
                else:  # per call, in microseconds
                    row.update(status="ok", **{f"{k[:-3]}_us": round(v * 1e3 / calls, 2) for k, v in t.items()})
                    row["median_ms"] = row["median_us"] / 1e3
                rows.append(row)
    add_speedups(rows, lambda r: r["case"], {"speedup_vs_eager": lambda r: "eager"})
    print_table(f"B = 1 on {env['device']}, {args.threads} thread(s), per call", rows, COLUMNS)
    _print_targets(rows)
    if args.record:
        append_csv(RESULTS / f"{env['device']}.csv", rows)
        print(f"\nappended {len(rows)} rows to {RESULTS / (env['device'] + '.csv')}")


def _print_targets(rows: list[dict]) -> None:
    print()
    for r in rows:
        if r["provider"] != "stattn" or r.get("status") != "ok":
            continue
        if r["case"].startswith("std"):
            ratio = r.get("speedup_vs_eager") or None
            print(f"  {r['case']}: {ratio}x the eager port (target >= {STD_TARGET}x): {verdict(ratio, STD_TARGET)}")
        elif r["case"].endswith("no_grad"):
            us = r["median_us"]
            print(f"  {r['case']}: {us:.1f} us per call (target < {OP_TARGET_US} us): "
                  f"{'met' if us < OP_TARGET_US else 'not met'}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

"""Smoke tests of the bench scripts: --quick sweeps on CPU into a temporary results folder, the
official-style port against stattn's modules, the CSV helper, and the plots.

Timings here mean nothing (2 rounds); the tests check that every provider either gives numbers or an
n/a row with its reason, and that nothing is ever written into benchmarks/results/.
"""
import csv

import pytest
import torch

import _common
import bench_attention
import bench_head
import plot
from _stattn_head import StattnHead, randomize_
from official_style import OfficialStyleHead, check_matches_stattn, internal_order, load_from_stattn, port_of
from stattn.skeletons import POSETRACK

#: one thread: a busy 2-core machine makes every multi-threaded op wait for a time slice
QUICK = ["--quick", "--device", "cpu", "--reps", "2", "--warmup", "0", "--threads", "1", "--record"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _check_rows(rows, path):
    assert rows, "the bench produced no rows"
    for row in rows:
        assert row["status"] in ("ok", "n/a"), f"{row['provider']}: {row['status']}: {row['reason']}"
        if row["status"] == "ok":
            assert row["median_ms"] > 0 and row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
        else:
            assert row["reason"].strip(), f"{row['provider']} is n/a without a reason"
    with path.open(newline="") as fh:
        recorded = list(csv.DictReader(fh))
    assert len(recorded) == len(rows)
    assert {"device", "torch", "triton", "stattn", "git_sha", "time", "bench"} <= set(recorded[0])


def test_bench_attention_quick(tmp_path):
    rows = bench_attention.main([*QUICK, "--results-dir", str(tmp_path)])
    _check_rows(rows, tmp_path / f"{_common.device_name()}.csv")
    by = {(r["op"], r["mode"], r["provider"]): r for r in rows}
    assert {r["op"] for r in rows} == {"temporal", "grouped"} and {r["mode"] for r in rows} == {"fwd", "bwd", "fwdbwd"}
    # stattn's own providers run on CPU; the CUDA-only ones say so
    assert by["temporal", "fwdbwd", "stattn-reference"]["status"] == "ok"
    assert by["grouped", "fwd", "sdpa-global"]["status"] == "ok"
    assert "CUDA only" in by["temporal", "fwd", "stattn-triton"]["reason"]
    assert "CUDA only" in by["grouped", "fwd", "sdpa-cudnn"]["reason"]
    assert by["temporal", "fwd", "xformers"]["status"] == "n/a"
    ok = by["temporal", "fwd", "stattn-reference"]
    assert ok["gbs"] > 0 and ok["speedup_vs_global"] > 0 and ok["floor_bytes"] == 4 * 2 * 3 * 17 * 32 * 4


def test_bench_head_quick(tmp_path):
    rows = bench_head.main([*QUICK, "--results-dir", str(tmp_path)])
    _check_rows(rows, tmp_path / f"{_common.device_name()}.csv")
    by = {(r["mode"], r["provider"]): r for r in rows}
    assert by["fwd", "official-eager"]["status"] == "ok" and by["fwdbwd", "stattn-reference"]["status"] == "ok"
    assert by["fwd", "stattn-fused"]["status"] == "n/a"  # CUDA only (or no fused= keyword)
    assert float(rows[0]["port_check_err"]) <= 1e-5


@pytest.mark.parametrize("frames", [3, 5])
def test_official_style_port_matches_stattn(frames):
    head = randomize_(StattnHead(48, frames, backend="reference"), seed=frames)
    feats = torch.randn(3 * frames, 48, 4, 3, generator=torch.Generator().manual_seed(frames))
    assert check_matches_stattn(head, feats, tol=1e-5) <= 1e-5


def test_official_style_port_detects_a_wrong_weight():
    head = randomize_(StattnHead(16, 3, backend="reference"))
    port = port_of(head, 16)
    with torch.no_grad():  # a wrong frame embedding order must show in the outputs
        port.temporal_pos.copy_(port.temporal_pos.flip(1))
    with pytest.raises(AssertionError, match="differs"):
        check_matches_stattn(head, torch.randn(6, 16, 4, 3), port=port)


def test_official_style_internal_order_is_the_official_one():
    order = internal_order(POSETRACK.groups)
    assert order[:15] == [2, 0, 1, 5, 7, 9, 6, 8, 10, 11, 13, 15, 12, 14, 16]  # docs/official_code.md §2
    head = StattnHead(16, 3)
    head.std.aggregation = "concat"
    with pytest.raises(ValueError, match="weighted"):
        load_from_stattn(OfficialStyleHead(16, 3), head.jfd, head.std, head.head)


def test_append_csv_keeps_one_table_when_columns_differ(tmp_path):
    path = tmp_path / "dev.csv"
    _common.append_csv(path, [{"bench": "a", "x": 1}])
    _common.append_csv(path, [{"bench": "b", "y": 2, "x": 3}])
    _common.append_csv(path, [{"bench": "a", "x": 4}])
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["bench"], r["x"], r["y"]) for r in rows] == [("a", "1", ""), ("b", "3", "2"), ("a", "4", "")]


def _legacy_rows():
    """Rows shaped like benchmarks/results/cpu-2core-2thr.csv (bench_cpu_local_vs_global.py)."""
    base = {"device": "cpu-test", "cpu": "x86_64", "torch": "2", "triton": "3", "stattn": "0.1.0", "git_sha": "abc",
            "bench": "cpu_local_vs_global", "backend": "native", "B": 256, "F": 5, "N": 17, "H": 8, "D": 4,
            "dtype": "float32", "mode": "fwd"}  # fmt: skip
    out = []
    for i, t in enumerate(["2026-01-01T00:00:00", "2026-01-02T00:00:00"]):
        for run, provider, ms in (("pair", "stattn", 1.5), ("pair", "sdpa-global", 15.0), ("all", "stattn", 1.8)):
            out.append({**base, "time": t, "run": run, "provider": provider, "median_ms": ms + i, "p20_ms": ms,
                        "p80_ms": ms + 2 * i, "speedup_vs_global": 1.0})  # fmt: skip
    return out


def _attention_rows():
    out = []
    for provider, scale in (("stattn-native", 1.0), ("sdpa-global", 9.0)):
        for B in (1, 32, 256):
            out.append({"device": "cpu-test", "time": "2026-01-03T00:00:00", "bench": "attention", "op": "temporal",
                        "scope": "clip", "mode": "fwd", "provider": provider, "B": B, "F": 5, "N": 17, "H": 8, "D": 4,
                        "dtype": "float32", "timer": "interleaved_cpu", "status": "ok", "median_ms": 0.01 * B * scale,
                        "p20_ms": 0.009 * B * scale, "p80_ms": 0.011 * B * scale})  # fmt: skip
    out.append({**out[0], "provider": "xformers", "status": "n/a", "reason": "xformers not installed", "median_ms": ""})
    return out


def _head_rows():
    return [{"device": "cpu-test", "time": "2026-01-03T00:00:00", "bench": "head", "mode": "fwd", "provider": p,
             "B": B, "F": F, "C_in": 256, "h": 4, "w": 3, "dtype": "float32", "timer": "interleaved_cpu",
             "status": "ok", "median_ms": 0.5 * B ** 0.5 * (2 if p == "official-eager" else 1)}
            for p in ("official-eager", "stattn-native") for B in (1, 256) for F in (3, 5)]  # fmt: skip


def test_plot_writes_pngs_for_every_bench(tmp_path):
    results = tmp_path / "results"
    _common.append_csv(results / "cpu-test.csv", _legacy_rows())  # old column set first, as in the repo
    _common.append_csv(results / "cpu-test.csv", _attention_rows())
    _common.append_csv(results / "cpu-test.csv", _head_rows())
    _common.append_csv(results / "other.csv", [{"bench": "unknown", "device": "x", "median_ms": 1.0}])
    written = plot.main(["--results-dir", str(results), "--out", str(tmp_path / "plots")])
    names = sorted(p.name for p in written)
    assert any(n.startswith("attention_cpu-test_temporal") for n in names)
    assert any(n.startswith("head_cpu-test_fwd") for n in names)
    assert any(n.startswith("cpu_local_vs_global_cpu-test") for n in names)
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_lists_the_providers(capsys):
    for main in (bench_attention.main, bench_head.main):
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "sdpa-global" in out and "official-eager" in out and "--results-dir" in out


def test_head_targets_summary(capsys):
    """The fused-block targets are judged from the rows: met, not met, or not measured."""

    def row(provider, ms, B=256):
        return {"provider": provider, "status": "ok", "median_ms": ms, "mode": "fwd", "B": B, "F": 5, "dtype": "float32"}

    rows = [row("stattn-fused", 0.1), row("stattn-compiled", 0.25), row("official-eager", 1.5), row("stattn-fused", 0.08, B=1)]
    bench_head.print_targets(rows, torch.device("cuda"))
    out = capsys.readouterr().out
    assert "2.50x (need >= 3x): NOT met" in out and "15.00x (need >= 10x): met" in out
    assert "80.0 us (need < 100 us): met" in out
    bench_head.print_targets(rows, torch.device("cpu"))
    assert "not measured on this device" in capsys.readouterr().out

"""Plot the recorded benchmark rows: benchmarks/results/*.csv -> PNGs in benchmarks/results/plots/.

Each CSV holds one device's rows from every bench script; the `bench` column says which script wrote a
row, and each bench is plotted from the columns it has:

  attention            median ms vs B (log-log) per provider, p20-p80 band; one PNG per device, op,
                       mode, dtype and timer, one panel per (F, heads x head dim)
  head                 one panel per B: latency (ms) at B = 1, throughput (clips/s) for larger B;
                       bars per provider and F; one PNG per device, mode, dtype and timer
  cpu_local_vs_global  median ms per provider, one panel per run (pair / all); bars = median over the
                       recorded runs, whiskers = their min and max

When a case was recorded several times, the latest row (by `time`) is plotted (cpu_local_vs_global:
all of them, see above). n/a rows are skipped. Rows of other benches are counted and skipped.

    python benchmarks/plot.py                                  # every CSV in benchmarks/results/
    python benchmarks/plot.py --csv benchmarks/results/NVIDIA_H100_80GB_HBM3.csv --out /tmp/plots
"""
from __future__ import annotations

import argparse
import csv
import re
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NUMERIC = ("B", "F", "N", "H", "D", "median_ms", "p20_ms", "p80_ms", "clips_per_s", "gbs")


def read_rows(paths: list[Path]) -> list[dict]:
    """All rows of the CSVs; numbers parsed where present; cells beyond a row's header are dropped."""
    rows = []
    for path in paths:
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                row.pop(None, None)
                for key in NUMERIC:
                    value = row.get(key)
                    if value not in (None, ""):
                        try:
                            row[key] = float(value) if "." in value or "e" in value.lower() else int(value)
                        except ValueError:
                            pass
                row["_file"] = path.name
                rows.append(row)
    return rows


def _ok(row: dict) -> bool:
    return row.get("status", "ok") in ("ok", "") and isinstance(row.get("median_ms"), (int, float))


def latest(rows: list[dict], key_fields: tuple[str, ...]) -> list[dict]:
    """One row per key (the last recorded, by `time`)."""
    best: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row.get(k) for k in key_fields)
        if key not in best or str(row.get("time", "")) >= str(best[key].get("time", "")):
            best[key] = row
    return list(best.values())


_COLORS: dict[str, tuple] = {}


def color(provider: str):
    """The same colour for a provider in every figure of a run."""
    if provider not in _COLORS:
        palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("Dark2").colors)
        _COLORS[provider] = palette[len(_COLORS) % len(palette)]
    return _COLORS[provider]


def _name(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(str(p) for p in parts if p not in (None, "")))


def _save(fig, out: Path, name: str, written: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)


def plot_attention(rows: list[dict], out: Path, written: list[Path]) -> None:
    keys = ("device", "op", "scope", "mode", "dtype", "timer", "B", "F", "H", "D", "provider")
    rows = [r for r in latest(rows, keys) if _ok(r)]
    figures = defaultdict(list)
    for r in rows:
        figures[tuple(r.get(k) for k in ("device", "op", "scope", "mode", "dtype", "timer"))].append(r)
    for (device, op, scope, mode, dtype, timer), some in sorted(figures.items(), key=lambda kv: str(kv[0])):
        frames = sorted({r["F"] for r in some})
        hds = sorted({(r["H"], r["D"]) for r in some}, reverse=True)
        fig, axes = plt.subplots(len(frames), len(hds), figsize=(4.2 * len(hds), 3.4 * len(frames)),
                                 squeeze=False, sharex=True)  # fmt: skip
        for i, fr in enumerate(frames):
            for j, (h, d) in enumerate(hds):
                ax = axes[i][j]
                panel = [r for r in some if r["F"] == fr and (r["H"], r["D"]) == (h, d)]
                for provider in sorted({r["provider"] for r in panel}):
                    pts = sorted((r for r in panel if r["provider"] == provider), key=lambda r: r["B"])
                    xs = [r["B"] for r in pts]
                    ax.plot(xs, [r["median_ms"] for r in pts], marker="o", ms=3, label=provider, color=color(provider))
                    if all(isinstance(r.get("p20_ms"), (int, float)) for r in pts):
                        ax.fill_between(xs, [r["p20_ms"] for r in pts], [r["p80_ms"] for r in pts], alpha=0.15,
                                        color=color(provider))  # fmt: skip
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                batches = sorted({r["B"] for r in panel})
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
                ax.set_xticks(batches, [str(b) for b in batches])
                ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_title(f"F={fr}  {h}x{d}", fontsize=9)
                ax.grid(True, which="both", alpha=0.3)
                if i == len(frames) - 1:
                    ax.set_xlabel("B (clips)")
                if j == 0:
                    ax.set_ylabel("median ms")
        handles, labels = axes[0][0].get_legend_handles_labels()
        for ax in axes.flat:  # a legend with every provider of the figure
            for h_, l_ in zip(*ax.get_legend_handles_labels()):
                if l_ not in labels:
                    handles.append(h_)
                    labels.append(l_)
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.suptitle(f"{op} ({scope}) {mode}, {dtype}, {device} [{timer}]")
        fig.tight_layout()
        _save(fig, out, _name("attention", device, op, scope, mode, dtype, timer), written)


def plot_head(rows: list[dict], out: Path, written: list[Path]) -> None:
    keys = ("device", "mode", "dtype", "timer", "B", "F", "C_in", "h", "w", "provider")
    rows = [r for r in latest(rows, keys) if _ok(r)]
    figures = defaultdict(list)
    for r in rows:
        figures[tuple(r.get(k) for k in ("device", "mode", "dtype", "timer", "C_in", "h", "w"))].append(r)
    for (device, mode, dtype, timer, c_in, h, w), some in sorted(figures.items(), key=lambda kv: str(kv[0])):
        batches = sorted({r["B"] for r in some})
        providers = sorted({r["provider"] for r in some})
        frames = sorted({r["F"] for r in some})
        panel_width = max(4.0, 0.45 * len(providers) * len(frames) + 1.5)
        fig, axes = plt.subplots(1, len(batches), figsize=(panel_width * len(batches), 4.2), squeeze=False)
        width = 0.8 / max(len(frames), 1)
        for ax, b in zip(axes[0], batches):
            throughput = b > 1
            for k, fr in enumerate(frames):
                vals = []
                for p in providers:
                    r = next((r for r in some if r["B"] == b and r["F"] == fr and r["provider"] == p), None)
                    vals.append(0 if r is None else (b / (r["median_ms"] * 1e-3) if throughput else r["median_ms"]))
                ax.bar([i + k * width for i in range(len(providers))], vals, width, label=f"F={fr}",
                       color=plt.get_cmap("tab10")(k))  # fmt: skip
            ax.set_xticks([i + width * (len(frames) - 1) / 2 for i in range(len(providers))])
            ax.set_xticklabels(providers, rotation=35, ha="right", fontsize=8)
            ax.set_ylabel("clips / s (higher is better)" if throughput else "ms per call (lower is better)")
            ax.set_title(f"B={b}: {'throughput' if throughput else 'latency'}", fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"DSTA head {mode}, {dtype}, features [B*F, {c_in}, {h}, {w}], {device} [{timer}]")
        fig.tight_layout()
        _save(fig, out, _name("head", device, mode, dtype, timer, f"c{c_in}"), written)


def plot_local_vs_global(rows: list[dict], out: Path, written: list[Path]) -> None:
    rows = [r for r in rows if _ok(r)]
    figures = defaultdict(list)
    for r in rows:
        figures[tuple(r.get(k) for k in ("device", "B", "F", "H", "D", "dtype"))].append(r)
    for (device, b, fr, h, d, dtype), some in sorted(figures.items(), key=lambda kv: str(kv[0])):
        for r in some:  # the CSV's backend column tells recordings with STATTN_BACKEND forced apart
            forced = r["provider"] == "stattn" and r.get("backend")
            r["_label"] = f"{r['provider']} ({r['backend']})" if forced else r["provider"]
        runs = sorted({r.get("run", "") for r in some})
        fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.8), squeeze=False)
        for ax, run in zip(axes[0], runs):
            providers = list(dict.fromkeys(r["_label"] for r in some if r.get("run", "") == run))
            in_run = [r for r in some if r.get("run", "") == run]
            samples = [[r["median_ms"] for r in in_run if r["_label"] == p] for p in providers]
            mids = [statistics.median(s) for s in samples]
            err = [[m - min(s) for m, s in zip(mids, samples)], [max(s) - m for m, s in zip(mids, samples)]]
            ax.bar(range(len(providers)), mids, yerr=err, capsize=3, color="tab:blue")
            ax.set_xticks(range(len(providers)))
            ax.set_xticklabels(providers, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("median ms (lower is better)")
            ax.set_title(f"run {run!s}: {max(len(x) for x in samples) if samples else 0} recording(s)", fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
        fig.suptitle(f"local vs global, B={b} F={fr} {h}x{d} {dtype}, {device}")
        fig.tight_layout()
        _save(fig, out, _name("cpu_local_vs_global", device, f"B{b}", f"F{fr}", f"{h}x{d}"), written)


PLOTTERS = {"attention": plot_attention, "head": plot_head, "cpu_local_vs_global": plot_local_vs_global}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help=f"where the CSVs are (default {RESULTS})")
    parser.add_argument("--csv", type=Path, nargs="+", default=None, help="plot these CSV files instead")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <results-dir>/plots)")
    args = parser.parse_args(argv)
    paths = args.csv or sorted(args.results_dir.glob("*.csv"))
    out = args.out or args.results_dir / "plots"
    if not paths:
        print(f"no CSV files in {args.results_dir}")
        return []
    rows = read_rows(paths)
    by_bench = defaultdict(list)
    for r in rows:
        by_bench[r.get("bench") or "?"].append(r)
    written: list[Path] = []
    for bench, some in sorted(by_bench.items()):
        plotter = PLOTTERS.get(bench)
        if plotter is None:
            print(f"skipping {len(some)} row(s) of bench {bench!r}: no plot for it")
            continue
        before = len(written)
        plotter(some, out, written)
        print(f"{bench}: {len(some)} row(s) -> {len(written) - before} plot(s)")
    for path in written:
        print(f"  {path}")
    return written


if __name__ == "__main__":
    main()

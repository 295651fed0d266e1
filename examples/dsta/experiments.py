"""The paper in miniature: DSTA's ablations (Tables 1, 4, 6, 7) on the embedded synthetic videos, with seeds.

    python examples/dsta/experiments.py run                     # every table, seeds 0 1 2 (~2.5 hours on 2 cores)
    python examples/dsta/experiments.py run --tables 1 4 --seeds 0 1 2 --jobs 2
    python examples/dsta/experiments.py report                  # -> docs/experiments.md + docs/experiments.csv
    python examples/dsta/experiments.py run --quick --out runs/exp_quick   # tiny: checks the pipeline only

`run` generates the main job's dataset once (same generator settings as demo.py, data seed 0), then
trains and evaluates one model per (variant, seed) with `configs/demo_cpu.yaml` plus the variant's
overrides, each in its own process (`--jobs` at once, one torch thread each: on 2 cores two small
single-threaded trainings get more done than one with two threads). The seed changes the model's
initialisation, the sample order, the augmentation and drop path; the data is the same for every run.
Each finished run writes OUT/results/VARIANT/seedS.json atomically, so an interrupted `run` continues
where it stopped, and later sessions can add seeds. The score is the poseval-identical Total AP on the
val split with GT boxes, from the final weights (no checkpoint selection on val).

`report` gathers every result into mean +- standard deviation tables, the paper's numbers beside them,
and a verdict per claim of the paper (see `CLAIMS`), into docs/experiments.md (with the commands and
settings), docs/experiments.csv (one row per run) and docs/experiments.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent

__all__ = ["VARIANTS", "TABLES", "CLAIMS", "SCHEDULES", "run_one", "run", "collect", "report", "main"]

REPO = HERE.parent.parent
CONFIG = HERE / "configs" / "demo_cpu.yaml"
DATA = {"train_videos": 160, "val_videos": 40, "frames_per_video": 30, "size": [96, 128], "difficulty": 0.5,
        "seed": 0}  # fmt: skip  (demo.py's full settings)
QUICK_DATA = {"train_videos": 4, "val_videos": 2, "frames_per_video": 6, "size": [96, 128], "difficulty": 0.5,
              "seed": 0}  # fmt: skip
#: epochs per schedule; the lr drops x0.1 for the last epoch when there are more than one. The
#: resolution table trains shorter: at 256 x 192 one step costs ~13x one at 64 x 48. "long" is the
#: main job's schedule, to see whether Table 1's ordering depends on the training length.
SCHEDULES = {"main": 4, "resolution": 1, "long": 9}

#: name -> (label, schedule, config overrides over configs/demo_cpu.yaml)
VARIANTS = {
    "image": ("image regression (RLE-style)", "main", ["model=image_baseline", "frames=[0]"]),
    "dsta": ("DSTA: JFD + SD + TD, frames {-1, +1}", "main", []),
    "pooled_clip": ("w/o JFD and STD (pooled whole-pose features)", "main", ["model=pooled_clip"]),
    "coupled": ("JFD + coupled global attention", "main", ["std_mode=coupled"]),
    "sd_only": ("JFD + SD only", "main", ["std_mode=spatial"]),
    "td_only": ("JFD + TD only", "main", ["std_mode=temporal"]),
    "frames_1": ("auxiliary frames {-1}", "main", ["frames=[-1,0]"]),
    "frames_4": ("auxiliary frames {-2, -1, +1, +2}", "main", ["frames=[-2,-1,0,1,2]"]),
    "res_256x192": ("DSTA at 256 x 192", "resolution", ["input_size=[256,192]"]),
    "res_128x128": ("DSTA at 128 x 128", "resolution", ["input_size=[128,128]"]),
    "res_64x64": ("DSTA at 64 x 64", "resolution", ["input_size=[64,64]"]),
    "image_long": ("image regression, 9 epochs", "long", ["model=image_baseline", "frames=[0]"]),
    "dsta_long": ("DSTA, 9 epochs", "long", []),
}

#: (id, title, [(variant, paper mAP or None)], the paper's setting for its numbers)
TABLES = [
    ("1", "Image-based regression vs DSTA", [("image", 74.1), ("dsta", 78.6)],
     "Table 1, PoseTrack17 val, ResNet-50; the image row is RLE (74.1 as reported there)"),
    ("1b", "Image-based regression vs DSTA, trained 9 epochs (the main job's schedule)",
     [("image_long", 74.1), ("dsta_long", 78.6)], "Table 1, as above"),
    ("4", "Modules of DSTA", [("pooled_clip", 73.8), ("coupled", 74.8), ("sd_only", 71.4), ("td_only", 78.1),
                              ("dsta", 78.6)],
     "Table 4, PoseTrack17 val, ResNet-50, frames {-1, +1}"),
    ("6", "Number of auxiliary frames", [("frames_1", 78.0), ("dsta", 78.6), ("frames_4", 79.7)],
     "Table 6, PoseTrack17 val, ResNet-50 column"),
    ("7", "Input resolution", [("res_256x192", 82.3), ("res_128x128", 77.9), ("res_64x64", 55.4)],
     "Table 7, PoseTrack17 val, HRNet-W48, frames {-1, +1}"),
]


def _ordered_variants(tables) -> list[str]:
    seen: list[str] = []
    for tid, _, rows, _ in TABLES:
        if tid in tables:
            seen += [v for v, _ in rows if v not in seen]
    return seen


# ----------------------------------------------------------------------------------------------- run
def _data_root(out: Path) -> Path:
    return out / "data"


def ensure_data(out: Path, quick: bool = False) -> Path:
    """Generate the dataset once (a marker file says it is complete); returns its root."""
    from dsta import synthetic  # noqa: PLC0415

    root = _data_root(out)
    marker = root / "complete.json"
    settings = QUICK_DATA if quick else DATA
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == settings:
        return root
    for split, n in (("train", settings["train_videos"]), ("val", settings["val_videos"])):
        s = synthetic.generate(root, num_videos=n, frames_per_video=settings["frames_per_video"],
                               size=tuple(settings["size"]), difficulty=settings["difficulty"], seed=settings["seed"],
                               split=split, workers=2)  # fmt: skip
        print(f"data {split}: {s['videos']} videos, {s['annotations']} person annotations, {s['seconds']:.1f} s",
              flush=True)  # fmt: skip
    marker.write_text(json.dumps(settings), encoding="utf-8")
    return root


def _result_path(out: Path, variant: str, seed: int) -> Path:
    return out / "results" / variant / f"seed{seed}.json"


def run_one(out, variant: str, seed: int, *, quick: bool = False, threads: int = 1) -> dict:
    """Train and evaluate one (variant, seed) in this process; writes and returns its result dict."""
    from dsta import engine  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from dsta import train  # noqa: PLC0415
    from dsta.model import count_parameters  # noqa: PLC0415

    torch.set_num_threads(threads)
    out = Path(out)
    root = _data_root(out)
    label, schedule, sets = VARIANTS[variant]
    epochs = 1 if quick else SCHEDULES[schedule]
    base = engine.load_config(CONFIG)
    common = [f"data.root={root}", f"data.train={root / 'annotations' / 'train'}",
              f"data.val={root / 'annotations' / 'val'}", "data.val_boxes=gt", f"train.epochs={epochs}",
              f"train.milestones={[epochs - 1] if epochs > 1 else []}", f"train.val_every={epochs}",
              f"train.seed={int(base['train']['seed']) + seed}", "train.log_every=1000000"]  # fmt: skip
    if quick:
        common += ["train.batch_size=8", "depth=1"]
    cfg = engine.load_config(CONFIG, common + sets)
    t0 = time.perf_counter()
    result = train.train(cfg, out / "runs" / variant / f"seed{seed}")
    final = result["history"][-1]
    record = {"variant": variant, "label": label, "seed": seed, "schedule": schedule, "epochs": epochs,
              "steps": result["step"], "overrides": sets, "quick": quick, "train_s": round(time.perf_counter() - t0, 1),
              "torch_threads": threads, "params_M": count_parameters(result["model"])["inference"],
              **{k: final[k] for k in final if k in _AP_COLUMNS}}  # fmt: skip
    path = _result_path(out, variant, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine.atomic_write_text(path, json.dumps(record, indent=2))
    return record


_AP_COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


def run(out="runs/experiments", *, tables=("1", "1b", "4", "6", "7"), seeds=(0, 1, 2), jobs: int = 2,
        quick: bool = False) -> list[dict]:  # fmt: skip
    """Every missing (variant, seed) of `tables`, `jobs` subprocesses at a time (table order)."""
    from tqdm import tqdm  # noqa: PLC0415

    out = Path(out)
    ensure_data(out, quick)
    todo = [(v, s) for v in _ordered_variants(tables) for s in seeds if not _result_path(out, v, s).exists()]
    print(f"{len(todo)} runs to do ({len(_ordered_variants(tables)) * len(seeds) - len(todo)} already done) "
          f"-> {out / 'results'}; logs in {out / 'logs'}", flush=True)  # fmt: skip
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def launch(variant: str, seed: int) -> tuple[str, int, int]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "one", "--out", str(out), "--variant", variant,
               "--seed", str(seed)] + (["--quick"] if quick else [])  # fmt: skip
        with open(out / "logs" / f"{variant}_seed{seed}.log", "w", encoding="utf-8") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return variant, seed, rc

    done, failed = [], []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, tqdm(total=len(todo), desc="runs", unit="run") as bar:
        futures = [pool.submit(launch, v, s) for v, s in todo]
        for fut in as_completed(futures):
            variant, seed, rc = fut.result()
            bar.update()
            if rc == 0:
                rec = json.loads(_result_path(out, variant, seed).read_text(encoding="utf-8"))
                done.append(rec)
                bar.write(f"{variant} seed {seed}: Total AP {rec['Total']:.2f} ({rec['train_s'] / 60:.1f} min)")
            else:
                failed.append((variant, seed))
                bar.write(f"{variant} seed {seed}: FAILED (exit {rc}), see {out / 'logs' / f'{variant}_seed{seed}.log'}")
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {failed}")
    return done


# -------------------------------------------------------------------------------------------- report
def collect(out) -> list[dict]:
    """Every result JSON under OUT/results, sorted by variant and seed."""
    rows = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(out).glob("results/*/seed*.json"))]
    return sorted(rows, key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))


def _stats(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = statistics.fmean(values) if n else math.nan
    sd = statistics.stdev(values) if n > 1 else math.nan
    return mean, sd, n


def _compare(a: list[float], b: list[float]) -> tuple[float, float]:
    """(mean(b) - mean(a), its standard error; Welch)."""
    (ma, sa, na), (mb, sb, nb) = _stats(a), _stats(b)
    if na < 2 or nb < 2:
        return mb - ma, math.nan
    return mb - ma, math.sqrt(sa * sa / na + sb * sb / nb)


def _verdict(diff: float, se: float) -> str:
    """'holds' / 'reversed' when the difference is beyond 2 standard errors, else 'within noise'."""
    if not math.isfinite(se):
        return "not enough seeds"
    if se == 0:
        return "holds" if diff > 0 else ("reversed" if diff < 0 else "within noise")
    return "holds" if diff > 2 * se else ("reversed" if diff < -2 * se else "within noise")


#: (claim, [(worse variant, better variant), ...] that must all hold)
CLAIMS = [
    ("video beats image regression (Table 1)", [("image", "dsta")]),
    ("video beats image regression, 9 epochs (Table 1)", [("image_long", "dsta_long")]),
    ("joint-level modelling beats pooled whole-pose features (Table 4)", [("pooled_clip", "dsta")]),
    ("TD matters more than SD (Table 4)", [("sd_only", "td_only")]),
    ("decoupled beats coupled (Table 4)", [("coupled", "dsta")]),
    ("more auxiliary frames help (Table 6)", [("frames_1", "dsta"), ("dsta", "frames_4")]),
    ("regression degrades gracefully at low resolution (Table 7): 64 x 64 keeps >= 66% of 256 x 192's mAP, "
     "as DSTA's 55.4 / 82.3 = 67% in the paper", []),
]


def _by_variant(rows: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        if not r.get("quick"):
            out.setdefault(r["variant"], []).append(float(r["Total"]))
    return out


def _fmt(mean: float, sd: float, n: int) -> str:
    if n == 0:
        return "not run"
    return f"{mean:.1f} ± {sd:.1f} (n={n})" if n > 1 else f"{mean:.1f} (n=1)"


def _claims_lines(totals: dict[str, list[float]]) -> list[str]:
    lines = ["| claim of the paper | comparison (Total AP, mean difference ± standard error) | here |", "|---|---|---|"]
    for claim, pairs in CLAIMS:
        if not pairs:  # the resolution claim: a ratio
            hi, lo = totals.get("res_256x192", []), totals.get("res_64x64", [])
            if len(hi) < 2 or len(lo) < 2:
                lines.append(f"| {claim} | 64 x 64 vs 256 x 192 | not enough seeds |")
                continue
            ratio = statistics.fmean(lo) / statistics.fmean(hi) if statistics.fmean(hi) > 0 else math.nan
            verdict = "holds" if ratio >= 0.66 else "does not hold"
            if _verdict(*_compare(hi, lo)) == "within noise":  # a ratio of two noisy means says little
                verdict += " (but 64 x 64 and 256 x 192 are within noise of each other)"
            lines.append(f"| {claim} | 64 x 64 / 256 x 192 = {statistics.fmean(lo):.1f} / {statistics.fmean(hi):.1f}"
                         f" = {ratio:.0%} | {verdict} |")  # fmt: skip
            continue
        parts, verdicts = [], []
        for worse, better in pairs:
            diff, se = _compare(totals.get(worse, []), totals.get(better, []))
            parts.append(f"{better} - {worse} = {diff:+.1f} ± {se:.1f}")
            verdicts.append(_verdict(diff, se))
        verdict = verdicts[0] if len(set(verdicts)) == 1 else "partly: " + ", ".join(verdicts)
        lines.append(f"| {claim} | {'; '.join(parts)} | {verdict} |")
    return lines


def _plot(totals: dict[str, list[float]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(TABLES), figsize=(4 * len(TABLES), 3.6), sharey=True)
    for ax, (tid, title, rows, _) in zip(axes, TABLES):
        names = [v for v, _ in rows]
        for i, v in enumerate(names):
            vals = totals.get(v, [])
            if vals:
                ax.scatter([i] * len(vals), vals, s=12, color="0.6", zorder=2)
                mean, sd, n = _stats(vals)
                ax.errorbar([i], [mean], yerr=[sd if n > 1 else 0], fmt="o", color="C0", capsize=4, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(textwrap.fill(f"Table {tid}: {title}", 34), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Total AP (val, GT boxes)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(out="runs/experiments", doc=REPO / "docs" / "experiments.md") -> str:
    """Write docs/experiments.md, .csv and .png from OUT/results; returns the Markdown."""
    rows = collect(out)
    doc = Path(doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    columns = ["variant", "seed", "schedule", "epochs", "steps", "train_s", "torch_threads", "params_M", *_AP_COLUMNS]
    with open(doc.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(r for r in rows if not r.get("quick"))
    totals = _by_variant(rows)
    _plot(totals, doc.with_suffix(".png"))
    md = [_HEADER.format(main=SCHEDULES["main"], res=SCHEDULES["resolution"], long=SCHEDULES["long"], **DATA)]
    for tid, title, table_rows, paper in TABLES:
        md += [f"### Table {tid} analogue: {title}", "", f"The paper's numbers: {paper}.", "",
               "| variant | what | params (M) | Total AP here | paper mAP |", "|---|---|---|---|---|"]  # fmt: skip
        for v, paper_map in table_rows:
            params = next((r["params_M"] for r in rows if r["variant"] == v), math.nan)
            md.append(f"| `{v}` | {VARIANTS[v][0]} | {params:.3f} | {_fmt(*_stats(totals.get(v, [])))} | "
                      f"{paper_map if paper_map is not None else '-'} |")  # fmt: skip
        md.append("")
    md += ["## The paper's claims, here", "",
           "A claim *holds* when the mean difference is more than two standard errors (Welch) in its direction, "
           "is *reversed* when it is that far the other way, and is *within noise* otherwise.", "",
           *_claims_lines(totals), "", _FOOTER]  # fmt: skip
    text = "\n".join(md) + "\n"
    doc.write_text(text, encoding="utf-8")
    return text


_HEADER = """# The paper in miniature

DSTA's ablations (He & Yang, CVPR 2024: Tables 1, 4, 6 and 7) re-run on the embedded synthetic videos
(`examples/dsta/synthetic.py`) with the tiny CPU backbone, several seeds each. The synthetic videos are
made so that temporal context can help (joints hidden for 1-4 frames by occluders, blur, noise, low
light while the neighbouring frames show them), but they are not PoseTrack, the backbone is not a
ResNet-50 and the models are trained for minutes: these numbers test whether the paper's *claims*
carry over to this setting, not its figures.

![Total AP of every run (grey) and mean ± standard deviation (blue)](experiments.png)

## How to reproduce

```bash
bash scripts/demo.sh                                   # once: creates .venv with the example's packages
.venv/bin/python examples/dsta/experiments.py run      # every table, seeds 0 1 2; resumable
.venv/bin/python examples/dsta/experiments.py report   # -> docs/experiments.md, .csv, .png
```

Settings (`examples/dsta/experiments.py`): the main job's data ({train_videos} train / {val_videos} val
videos of {frames_per_video} frames at 128 x 96, difficulty {difficulty}, data seed {seed}, every frame
labelled); `configs/demo_cpu.yaml` (tiny CNN backbone, 64 x 48 crops, STD dim 32, depth 2, 8 heads, RLE
loss, AdamW 1e-3, batch 32) plus each variant's overrides; {main} epochs for Tables 1, 4, 6, {long} (the
main job's schedule) for Table 1b, and {res} for Table 7 (at 256 x 192 a step costs ~13x one at
64 x 48), the learning rate x0.1 for the last epoch when
there is more than one; training seed = config seed + run seed; one torch thread per run, two runs at a
time on 2 cores. The score is the poseval-identical Total AP on the val split with GT boxes, from the
final weights (nothing is selected on val). Per-run numbers, per-joint APs and timings:
[experiments.csv](experiments.csv).

## Results
"""

_FOOTER = """## Reading these numbers

- n is the number of seeds; ± is the sample standard deviation over seeds. Seeds vary initialisation,
  sample order, augmentation and drop path, not the data.
- The models are small and trained briefly; what the paper reports after 20 epochs on PoseTrack with
  ImageNet-pretrained backbones is a different regime. A claim that does not hold here is reported as
  such; nothing was tuned per variant.
- The frames are 128 x 96 and the people in them 30-90 pixels tall, so crops larger than about 96 pixels
  are upsampled: Table 7's upper rows add input pixels, not detail.
- Table 7 trains one epoch (279 steps), because a step at 256 x 192 costs ~13x one at 64 x 48; its
  models are far from converged (compare Table 1's 4-epoch DSTA) and seed-to-seed spread is large.
"""


# ---------------------------------------------------------------------------------------------- CLI
def main(argv=None):
    p = argparse.ArgumentParser(description="DSTA's ablations (paper Tables 1, 4, 6, 7) on the synthetic videos.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and evaluate every missing (variant, seed); resumable")
    r.add_argument("--out", default="runs/experiments", help="work folder: data, runs, results (default %(default)s)")
    r.add_argument("--tables", nargs="+", default=[t[0] for t in TABLES], choices=[t[0] for t in TABLES],
                   help="tables to run (default all)")
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="run seeds (default 0 1 2)")
    r.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each (default 2)")
    r.add_argument("--quick", action="store_true", help="tiny data and 1 epoch: checks the pipeline only")
    o = sub.add_parser("one", help="one (variant, seed) in this process (what `run` launches)")
    o.add_argument("--out", default="runs/experiments")
    o.add_argument("--variant", required=True, choices=list(VARIANTS))
    o.add_argument("--seed", type=int, required=True)
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--quick", action="store_true")
    g = sub.add_parser("report", help="write docs/experiments.md, .csv and .png from the results")
    g.add_argument("--out", default="runs/experiments", help="work folder of `run` (default %(default)s)")
    g.add_argument("--doc", default=str(REPO / "docs" / "experiments.md"), help="Markdown file (default %(default)s)")
    args = p.parse_args(argv)
    if args.command == "run":
        return run(args.out, tables=args.tables, seeds=args.seeds, jobs=args.jobs, quick=args.quick)
    if args.command == "one":
        return run_one(args.out, args.variant, args.seed, quick=args.quick, threads=args.threads)
    text = report(args.out, args.doc)
    print(text)
    return text


if __name__ == "__main__":
    main()

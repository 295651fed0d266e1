"""The paper in miniature on synthetic video: image regression vs DSTA across difficulty levels, and
DSTA's module and frame ablations (Tables 4 and 6) at the hardest level, with seeds, under the
two-stage protocol of `protocol.py`.

    python examples/dsta/experiments.py run                     # every table, seeds 0 1 2, 2 runs at a time
    python examples/dsta/experiments.py run --tables 1 --seeds 0 1 2 --jobs 2
    python examples/dsta/experiments.py report                  # -> docs/experiments.md, .csv, .png
    python examples/dsta/experiments.py run --quick --out runs/exp_quick   # tiny: checks the pipeline only

`run` generates each needed level's data once (data seed 0, the main job's generator settings), trains
the stage-1 backbone once (OUT/stage1, in this process), then trains and evaluates one stage-2 model
per (variant, level, seed), each in its own process (`--jobs` at once, one torch thread each: on 2
cores two small single-threaded trainings get more done than one with two threads). The seed changes
the stage-2 initialisation of the heads, the sample order, the augmentation and drop path; the data and
the stage-1 backbone are the same for every run, as one COCO checkpoint is for the paper. Each finished
run writes OUT/results/LEVEL/VARIANT/seedS.json atomically, so an interrupted `run` continues where it
stopped and later sessions can add seeds. Scores: poseval AP on the val split with GT boxes from the
final weights (nothing is selected on val), on all joints and on the rescuable and the clean joints.

`report` (`sweep_report.py`) gathers every result into tables (mean ± standard deviation over seeds),
a plot of AP against difficulty, and a verdict per claim, into docs/experiments.md, .csv and .png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent

__all__ = ["VARIANTS", "TABLES", "run_one", "run", "collect", "main"]

REPO = HERE.parent.parent

#: name -> (label, config overrides over configs/demo_cpu.yaml); every variant trains the same schedule
VARIANTS = {
    "image": ("image regression (RLE-style), frame {0}", ["model=image_baseline", "frames=[0]"]),
    "dsta": ("DSTA: JFD + SD + TD, frames {-1, 0, +1}", []),
    "pooled_clip": ("w/o JFD and STD (pooled whole-pose features)", ["model=pooled_clip"]),
    "coupled": ("JFD + coupled global attention", ["std_mode=coupled"]),
    "sd_only": ("JFD + SD only", ["std_mode=spatial"]),
    "td_only": ("JFD + TD only", ["std_mode=temporal"]),
    "frames_1": ("auxiliary frames {-1}", ["frames=[-1,0]"]),
    "frames_4": ("auxiliary frames {-2, -1, +1, +2}", ["frames=[-2,-1,0,1,2]"]),
}

#: (id, title, [(variant, paper mAP or None)], levels, the paper's setting for its numbers)
TABLES = [
    ("1", "Image-based regression vs DSTA, by difficulty", [("image", 74.1), ("dsta", 78.6)],
     ("easy", "medium", "hard"), "Table 1, PoseTrack17 val, ResNet-50; the image row is RLE"),
    ("4", "Modules of DSTA (hard level)", [("pooled_clip", 73.8), ("coupled", 74.8), ("sd_only", 71.4),
                                           ("td_only", 78.1), ("dsta", 78.6)],
     ("hard",), "Table 4, PoseTrack17 val, ResNet-50, frames {-1, +1}"),
    ("6", "Number of auxiliary frames (hard level)", [("frames_1", 78.0), ("dsta", 78.6), ("frames_4", 79.7)],
     ("hard",), "Table 6, PoseTrack17 val, ResNet-50 column"),
]  # fmt: skip
AP_COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


def _jobs_for(tables) -> list[tuple[str, str]]:
    """(level, variant) pairs of `tables`, in table order, each once."""
    seen: list[tuple[str, str]] = []
    for tid, _, rows, levels, _ in TABLES:
        if tid in tables:
            seen += [(lv, v) for lv in levels for v, _ in rows if (lv, v) not in seen]
    return seen


# ----------------------------------------------------------------------------------------------- run
def data_root(out, level: str) -> Path:
    return Path(out) / "data" / level


def _result_path(out: Path, level: str, variant: str, seed: int) -> Path:
    return out / "results" / level / variant / f"seed{seed}.json"


def run_one(out, variant: str, level: str, seed: int, *, quick: bool = False, threads: int = 1) -> dict:
    """Train and evaluate one (variant, level, seed) in this process from OUT/stage1's backbone (which
    `run` trains first); writes and returns its result dict."""
    from dsta import config, protocol, train, utils  # noqa: PLC0415
    from dsta.benchmark_stats import load_metadata  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from dsta.model import count_parameters  # noqa: PLC0415

    torch.set_num_threads(threads)
    out = Path(out)
    backbone = out / "stage1" / "backbone.pt"
    if not backbone.is_file():
        raise FileNotFoundError(f"{backbone} does not exist: `experiments.py run` trains stage 1 before the runs")
    root = data_root(out, level)
    label, sets = VARIANTS[variant]
    epochs = 1 if quick else protocol.STAGE2_EPOCHS
    common = protocol.stage2_overrides(root, backbone, epochs=epochs, seed=seed, quick=quick)
    common += [f"train.val_every={epochs}", "train.log_every=1000000"] + (["depth=1"] if quick else [])
    cfg = config.load_config(protocol.STAGE2_CONFIG, common + sets)
    run_dir = out / "runs" / level / variant / f"seed{seed}"
    t0 = time.perf_counter()
    result = train.train(cfg, run_dir)
    train_s = time.perf_counter() - t0
    final = json.loads((run_dir / "val" / "results.json").read_text(encoding="utf-8"))
    split = protocol.split_ap(root, run_dir / "val" / "predictions", final)
    bench = load_metadata(root, "val")["benchmark"]
    record = {"variant": variant, "label": label, "level": level, "difficulty": protocol.LEVELS[level], "seed": seed,
              "epochs": epochs, "steps": result["step"], "overrides": sets, "quick": quick,
              "train_s": round(train_s, 1), "torch_threads": threads,
              "params_M": count_parameters(result["model"])["inference"], "rescuable_share": bench["rescuable_1"],
              **{k: split["all"][k] for k in AP_COLUMNS},
              **{f"{sub}_{k}": split[sub][k] for sub in ("rescuable", "clean") for k in AP_COLUMNS},
              "rescuable_gt_joints": split["rescuable"]["gt_joints"], "clean_gt_joints": split["clean"]["gt_joints"],
              "all_gt_joints": split["all"]["gt_joints"]}  # fmt: skip
    path = _result_path(out, level, variant, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    utils.atomic_write_text(path, json.dumps(utils.jsonable(record), indent=2))
    return record


def prepare(out, levels, *, quick: bool = False, workers: int = 2) -> dict:
    """Each level's data and the stage-1 backbone (both reused when already there); returns the
    stage-1 record."""
    from dsta import protocol  # noqa: PLC0415

    for level in levels:
        gen = protocol.level_data(data_root(out, level), protocol.LEVELS[level], quick=quick, workers=workers)
        b = gen["val"]["benchmark"]
        print(f"data {level} (difficulty {protocol.LEVELS[level]}): {gen['train']['videos']} train / "
              f"{gen['val']['videos']} val videos; val: {b['rescuable_1']:.1%} of the key-frame joints rescuable "
              f"at +-1", flush=True)  # fmt: skip
    return protocol.pretrain(Path(out) / "stage1", quick=quick, workers=workers)


def run(out="runs/experiments", *, tables=("1", "4", "6"), seeds=(0, 1, 2), jobs: int = 2,
        quick: bool = False) -> list[dict]:  # fmt: skip
    """Every missing (variant, level, seed) of `tables`, `jobs` subprocesses at a time (table order)."""
    from tqdm import tqdm  # noqa: PLC0415

    out = Path(out)
    pairs = _jobs_for(tables)
    prepare(out, sorted({lv for lv, _ in pairs}, key=["easy", "medium", "hard"].index), quick=quick)
    todo = [(lv, v, s) for lv, v in pairs for s in seeds if not _result_path(out, lv, v, s).exists()]
    print(f"{len(todo)} runs to do ({len(pairs) * len(seeds) - len(todo)} already done) -> {out / 'results'}; logs "
          f"in {out / 'logs'}", flush=True)  # fmt: skip
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def launch(level: str, variant: str, seed: int) -> tuple[str, str, int, int]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "one", "--out", str(out), "--variant", variant,
               "--level", level, "--seed", str(seed)] + (["--quick"] if quick else [])  # fmt: skip
        with open(out / "logs" / f"{level}_{variant}_seed{seed}.log", "w", encoding="utf-8") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return level, variant, seed, rc

    done, failed = [], []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, tqdm(total=len(todo), desc="runs", unit="run") as bar:
        futures = [pool.submit(launch, *job) for job in todo]
        for fut in as_completed(futures):
            level, variant, seed, rc = fut.result()
            bar.update()
            if rc == 0:
                rec = json.loads(_result_path(out, level, variant, seed).read_text(encoding="utf-8"))
                done.append(rec)
                ap = {k: "nan" if rec.get(k) is None else f"{rec[k]:.2f}" for k in ("Total", "rescuable_Total",
                                                                                     "clean_Total")}  # fmt: skip
                bar.write(f"{level} {variant} seed {seed}: AP all {ap['Total']}, rescuable {ap['rescuable_Total']}, "
                          f"clean {ap['clean_Total']} ({rec['train_s'] / 60:.1f} min)")  # fmt: skip
            else:
                failed.append((level, variant, seed))
                bar.write(f"{level} {variant} seed {seed}: FAILED (exit {rc}), see "
                          f"{out / 'logs' / f'{level}_{variant}_seed{seed}.log'}")  # fmt: skip
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {failed}")
    return done


def collect(out) -> list[dict]:
    """Every result JSON under OUT/results, sorted by level, variant and seed."""
    levels = ["easy", "medium", "hard"]
    rows = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(out).glob("results/*/*/seed*.json"))]
    return sorted(rows, key=lambda r: (levels.index(r["level"]), list(VARIANTS).index(r["variant"]), r["seed"]))


# ---------------------------------------------------------------------------------------------- CLI
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default, except on required options (they have none)."""

    def _get_help_string(self, action):
        return action.help if action.required else super()._get_help_string(action)


def main(argv=None):
    from dsta import protocol  # noqa: PLC0415

    fmt = _Help
    p = argparse.ArgumentParser(description="Image regression vs DSTA across difficulty, and DSTA's ablations "
                                "(paper Tables 1, 4, 6), on synthetic video under the two-stage protocol.",
                                formatter_class=fmt)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and evaluate every missing (variant, level, seed); resumable",
                       formatter_class=fmt)  # fmt: skip
    r.add_argument("--out", default="runs/experiments", help="work folder: data, stage1, runs, results, logs")
    r.add_argument("--tables", nargs="+", default=[t[0] for t in TABLES], choices=[t[0] for t in TABLES],
                   help="tables to run")  # fmt: skip
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="run seeds")
    r.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    r.add_argument("--quick", action="store_true", help="tiny data and 1 epoch: checks the pipeline only")
    o = sub.add_parser("one", help="one (variant, level, seed) in this process (what `run` launches)",
                       formatter_class=fmt)  # fmt: skip
    o.add_argument("--out", default="runs/experiments", help="work folder of `run` (its data and stage1 must exist)")
    o.add_argument("--variant", required=True, choices=list(VARIANTS), help="model variant (required)")
    o.add_argument("--level", required=True, choices=list(protocol.LEVELS), help="difficulty level (required)")
    o.add_argument("--seed", type=int, required=True, help="run seed (required)")
    o.add_argument("--threads", type=int, default=1, help="torch threads")
    o.add_argument("--quick", action="store_true", help="tiny settings, as `run --quick`")
    g = sub.add_parser("report", help="write docs/experiments.md, .csv and .png from the results", formatter_class=fmt)
    g.add_argument("--out", default="runs/experiments", help="work folder of `run`")
    g.add_argument("--doc", default=str(REPO / "docs" / "experiments.md"), help="Markdown file to write")
    args = p.parse_args(argv)
    if args.command == "run":
        if args.jobs < 1:
            p.error("--jobs must be >= 1")
        return run(args.out, tables=args.tables, seeds=args.seeds, jobs=args.jobs, quick=args.quick)
    if args.command == "one":
        try:
            return run_one(args.out, args.variant, args.level, args.seed, quick=args.quick, threads=args.threads)
        except FileNotFoundError as e:
            p.exit(2, f"error: {e}\n")
    from dsta import sweep_report  # noqa: PLC0415

    text = sweep_report.report(args.out, args.doc)
    print(text)
    return text


if __name__ == "__main__":
    main()

"""The main job: DSTA vs the single-frame regression baseline on synthetic videos whose key frames are
often spoiled while their neighbours are clean, under the paper's protocol, in one command.

    python examples/dsta/demo.py                       # writes runs/demo (its time: the README's first command)
    python examples/dsta/demo.py --out runs/demo2 --seed 1
    python examples/dsta/demo.py --quick               # tiny settings (~1 minute): checks the pipeline only

Steps (all in this process, through the examples' Python APIs; `protocol.py` has the protocol):

1. `synthetic.generate` at the middle difficulty level (difficulty 0.3: about 15% of the annotated
   key-frame joints are hidden, blurred or defocused while a neighbouring frame shows them clean);
   `benchmark_stats` measures the val split and the numbers go into the report;
2. stage 1: the backbone trained as an image regression model on single frames of a separate split
   (the COCO-pretraining analogue), or reused from `--cache` when an earlier run trained it with the
   same settings (the log and the report say which);
3. stage 2: DSTA (frames [-1, 0, 1]) and the image baseline (frames [0]) both start from that
   backbone and train identically (`configs/demo_cpu.yaml`: epochs, schedule, batch, augmentation,
   seed; heads starting at the crop centre);
4. `evaluate.evaluate_split` + `posetrack_eval` on the val split with the *final* weights of each
   model (nothing is selected on val): GT boxes on all joints, and split by `subset_eval` into the
   rescuable and the clean joints; the generator's jittered detections (score >= 0.2, no NMS);
5. `infer_video.infer_video`: DSTA's poses on one val sequence as poses.gif and poses.mp4;
6. `report.write_report`: OUT/report.md, OUT/report.json, OUT/report.png, and the summary, beside
   the multi-seed numbers of the same level in docs/experiments.csv when they exist, so that one
   run's gap can be read against the spread over seeds.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

import cv2
from dsta import benchmark_stats
from dsta.config import load_config
from dsta.cli import add_device_argument
from dsta.distributed import init_distributed
from dsta import evaluate
from dsta import infer_video
from dsta import posetrack_eval
from dsta import protocol
from dsta import report
import torch
from dsta import train
from dsta.model import count_parameters

__all__ = ["run_demo", "main", "SETTINGS", "sweep_reference"]

CONFIG = protocol.STAGE2_CONFIG
LEVEL = "medium"
SWEEP_CSV = HERE.parent.parent / "docs" / "experiments.csv"
VIDEO_SCALE = 4  # the 128 x 96 frames are upscaled for the rendering (the skeletons would hide a small frame)
#: what differs between the full and the --quick run (the data sizes live in protocol.DATA / QUICK_DATA)
SETTINGS = {
    "full": {"gen_workers": 2, "video_frames": 30},
    "quick": {"gen_workers": 1, "video_frames": 6},
}  # fmt: skip
MODELS = {  # name -> (label, config overrides)
    "dsta": ("DSTA", []),
    "baseline": ("image baseline", ["model=image_baseline", "frames=[0]"]),
}
SWEEP_VARIANTS = {"dsta": "dsta", "baseline": "image"}  # demo model -> experiments.py variant


class _RecordingTrainer(train.Trainer):
    """train.Trainer that also keeps every step's training loss (for the report's curves)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_losses: list[float] = []

    def _step(self, batch) -> float:
        value = super()._step(batch)
        self.step_losses.append(value)
        return value


def _print_gen(s: dict) -> None:
    c = ", ".join(f"{k} {v}" for k, v in s["corruptions"].items())
    how = "reused" if s.get("reused") else f"{s['seconds']:.1f} s"
    print(f"  {s['split']}: {s['videos']} videos, {s['frames']} frames ({s['labeled_frames']} labelled), "
          f"{s['annotations']} person annotations, frames with {c}; {how}", flush=True)  # fmt: skip


def _pick_sequence(meta: dict) -> str:
    """The val sequence with the most corrupted frames (ties: the first): the video shows the hard case."""
    flags = {name: v["frame_flags"] for name, v in meta["videos"].items()}
    return max(sorted(flags), key=lambda name: sum(any(f.values()) for f in flags[name]))


def _gt_boxes(ann_file: Path, max_frames: int, scale: float = 1.0) -> dict:
    """{frame index: [(box xywh * scale, 1.0), ...]} from a per-video annotation file (frames in file-name
    order)."""
    doc = json.loads(ann_file.read_text(encoding="utf-8"))
    images = sorted(doc["images"], key=lambda im: im["file_name"])
    index = {im["id"]: t for t, im in enumerate(images)}
    boxes: dict = {}
    for a in doc["annotations"]:
        t = index.get(a["image_id"])
        if t is not None and t < max_frames and a.get("bbox"):
            boxes.setdefault(t, []).append((tuple(float(v) * scale for v in a["bbox"]), 1.0))
    return boxes


def sweep_reference(csv_path=SWEEP_CSV, level: str = LEVEL, epochs: int = protocol.STAGE2_EPOCHS) -> dict | None:
    """The multi-seed results of `level` in docs/experiments.csv for both models, or None when fewer than
    two seeds have both (or they were trained another number of epochs): {"seeds": [...], model:
    {subset: [Total per seed]}}."""
    path = Path(csv_path)
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("level") == level and r.get("epochs") == str(epochs)]
    by_seed = {key: {int(r["seed"]): r for r in rows if r.get("variant") == variant}
               for key, variant in SWEEP_VARIANTS.items()}  # fmt: skip
    seeds = sorted(set(by_seed["dsta"]) & set(by_seed["baseline"]))  # paired: both models of a seed
    if len(seeds) < 2:
        return None
    out: dict = {"seeds": seeds}
    for key in SWEEP_VARIANTS:
        out[key] = {sub: [float(by_seed[key][s][col]) for s in seeds] for sub, col in
                    (("all", "Total"), ("rescuable", "rescuable_Total"), ("clean", "clean_Total"))}  # fmt: skip
    return out


def _against_sweep(split: dict, ref: dict | None) -> dict | None:
    """This run's DSTA - baseline gap per subset beside the sweep's per-seed gaps (same seeds paired)."""
    if ref is None:
        return None
    out = {}
    for sub in ("all", "rescuable", "clean"):
        gaps = [d - b for d, b in zip(ref["dsta"][sub], ref["baseline"][sub])]
        mine = split["dsta"][sub]["Total"] - split["baseline"][sub]["Total"]
        mean, sd = statistics.fmean(gaps), statistics.stdev(gaps)
        out[sub] = {"run_gap": mine, "sweep_gaps": gaps, "sweep_mean": mean, "sweep_sd": sd,
                    "sweep_dsta": statistics.fmean(ref["dsta"][sub]),
                    "sweep_baseline": statistics.fmean(ref["baseline"][sub]),
                    "within_spread": abs(mine - mean) <= 2 * sd}  # fmt: skip
    out["seeds"] = ref["seeds"]
    return out


def run_demo(out="runs/demo", *, quick: bool = False, seed: int = 0, epochs: int | None = None, cache=None,
             device: str = "cpu", sweep_csv=SWEEP_CSV) -> dict:  # fmt: skip
    """The whole demo (see the module doc); returns the report dict (also OUT/report.json)."""
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    st = copy.deepcopy(SETTINGS["quick" if quick else "full"])
    data = out / "data"
    cache = Path(cache) if cache else out / "stage1"
    timings: dict = {}
    info = init_distributed(device)
    epochs = int(epochs or (1 if quick else protocol.STAGE2_EPOCHS))

    # 1. data -------------------------------------------------------------------------------------
    difficulty = protocol.LEVELS[LEVEL]
    print(f"[1/6] synthetic data, {LEVEL} level (difficulty {difficulty}) -> {data}", flush=True)
    t0 = time.perf_counter()
    gen = protocol.level_data(data, difficulty, quick=quick, workers=st["gen_workers"])
    for s in gen.values():
        _print_gen(s)
    meta = benchmark_stats.load_metadata(data, "val")
    bench = meta["benchmark"]
    print(benchmark_stats.format_stats(bench), flush=True)
    timings["data_s"] = time.perf_counter() - t0

    # 2. stage 1 ----------------------------------------------------------------------------------
    print(f"[2/6] stage 1: pretrained backbone ({cache})", flush=True)
    t0 = time.perf_counter()
    stage1 = protocol.pretrain(cache, quick=quick, workers=st["gen_workers"], device=device)
    timings["stage1_s"] = time.perf_counter() - t0

    # 3. stage 2 ----------------------------------------------------------------------------------
    common = protocol.stage2_overrides(data, stage1["backbone"], epochs=epochs, seed=seed, quick=quick)
    runs: dict = {}
    for i, (key, (label, sets)) in enumerate(MODELS.items()):
        cfg = load_config(CONFIG, common + sets)
        print(f"[3/6] stage 2: training {label} from the stage-1 backbone ({i + 1}/2) -> {out / key}", flush=True)
        t0 = time.perf_counter()
        trainer = _RecordingTrainer(cfg, out / key, info)
        result = trainer.run()
        seconds = time.perf_counter() - t0
        runs[key] = {"label": label, "model": result["model"], "cfg": trainer.cfg, "history": result["history"],
                     "step_losses": trainer.step_losses, "steps": result["step"], "train_s": seconds,
                     "params": count_parameters(result["model"]), "train_clips": len(trainer.clips)}  # fmt: skip
        timings[f"train_{key}_s"] = seconds

    # 4. evaluation of the final weights ----------------------------------------------------------
    det_file = data / "detections_val.json"
    for key, r in runs.items():
        print(f"[4/6] evaluating {r['label']} on the val split (GT boxes: all / rescuable / clean joints; "
              f"detections)", flush=True)  # fmt: skip
        t0 = time.perf_counter()
        r["eval_gt"] = evaluate.evaluate_split(r["model"], r["cfg"], info, out / key / "eval_gt", split="val",
                                               boxes="gt")  # fmt: skip
        r["split"] = protocol.split_ap(data, out / key / "eval_gt" / "predictions", r["eval_gt"])
        r["eval_det"] = evaluate.evaluate_split(r["model"], r["cfg"], info, out / key / "eval_det", split="val",
                                                boxes="detections", det_file=det_file, det_thr=0.2)  # fmt: skip
        timings[f"eval_{key}_s"] = time.perf_counter() - t0
        print(f"  {r['label']}, GT boxes:\n{posetrack_eval.format_table(r['eval_gt'])}", flush=True)

    # 5. video --------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    seq = _pick_sequence(meta)
    n_frames = min(st["video_frames"], meta["frames_per_video"])
    print(f"[5/6] rendering DSTA's poses on val sequence {seq} ({n_frames} frames, GT boxes)", flush=True)
    boxes = _gt_boxes(data / "annotations" / "val" / f"{seq}.json", n_frames, VIDEO_SCALE)
    frames_dir = out / "video" / "frames"  # the sequence's frames upscaled (cubic); the crops come from them
    frames_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted((data / "images" / "val" / seq).glob("*.jpg"))[:n_frames]:
        img = cv2.imread(str(f))
        big = cv2.resize(img, None, fx=VIDEO_SCALE, fy=VIDEO_SCALE, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(frames_dir / f.name), big, [cv2.IMWRITE_JPEG_QUALITY, 95])
    video: dict = {"sequence": seq, "frames": n_frames, "boxes": "gt", "upscale": VIDEO_SCALE, "files": []}
    model = runs["dsta"]["model"].eval()
    for gif in (True, False):
        src = infer_video.FrameSource(frames_dir, max_frames=n_frames, fps=10)
        try:
            res = infer_video.infer_video(model, src, out / "video", mode="detections", detections=boxes,
                                          enlarge=float(runs["dsta"]["cfg"]["data"]["enlarge"]), device=info.device,
                                          gif=gif, progress=False, meta={"model": "dsta", "sequence": seq})  # fmt: skip
        except infer_video.InferenceError as exc:  # e.g. no mp4 writer in this OpenCV build: keep the GIF
            print(f"  {'gif' if gif else 'mp4'} not written: {exc}", flush=True)
            continue
        if res["render"] is not None:
            video["files"].append(str(Path(res["render"]).relative_to(out)))
    video["keypoints"] = "video/keypoints.json"
    timings["video_s"] = time.perf_counter() - t0

    # 6. report -------------------------------------------------------------------------------------
    print("[6/6] writing the report", flush=True)
    timings["total_s"] = time.perf_counter() - t_start
    ref = None if quick or epochs != protocol.STAGE2_EPOCHS else sweep_reference(sweep_csv)
    settings = {**st, **(protocol.QUICK_DATA if quick else protocol.DATA), "level": LEVEL, "difficulty": difficulty,
                "seed": seed, "quick": quick, "config": str(CONFIG), "epochs": epochs,
                "milestones": [epochs - 1] if epochs > 1 else [], "device": str(info.device),
                "torch_threads": torch.get_num_threads(),
                "val_boxes": "gt (headline), detections_val.json (score >= 0.2, no NMS)"}  # fmt: skip
    doc = report.write_report(out, settings=settings, gen=gen, runs=runs, video=video, timings=timings,
                              benchmark=bench, stage1=stage1, sweep=_against_sweep(
                                  {k: r["split"] for k, r in runs.items()}, ref))  # fmt: skip
    print(report.split_table(runs), flush=True)
    print(doc["summary"], flush=True)
    if doc.get("sweep_line"):
        print(doc["sweep_line"], flush=True)
    print(f"report: {out / 'report.md'} ({timings['total_s'] / 60:.1f} min)", flush=True)
    return doc


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default; an option whose default is computed (None here) says it in its own help."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="DSTA vs the image regression baseline on synthetic videos (CPU), "
                                "under the two-stage protocol.", formatter_class=_Help)  # fmt: skip
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--quick", action="store_true", help="tiny settings for tests (~1 minute); numbers mean nothing")
    p.add_argument("--seed", type=int, default=0, help="run seed, added to the config's training seed (the data is "
                   "fixed, as in experiments.py)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=None, help="stage-2 epochs (default: the protocol's "
                   f"{protocol.STAGE2_EPOCHS}; 1 with --quick); other values are not compared with the "
                   "sweep")  # fmt: skip
    p.add_argument("--cache", default=None, help="stage-1 backbone folder, reused when it holds one trained with the "
                   "same settings (default: OUT/stage1)")  # fmt: skip
    add_device_argument(p)
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    return run_demo(args.out, quick=args.quick, seed=args.seed, epochs=args.epochs, cache=args.cache,
                    device=args.device.type)  # fmt: skip


if __name__ == "__main__":
    main()

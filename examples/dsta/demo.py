"""The main job: DSTA vs the single-frame regression baseline on the embedded synthetic videos, one command.

    python examples/dsta/demo.py                       # ~12 minutes on 2 CPU cores, writes runs/demo
    python examples/dsta/demo.py --out runs/demo2 --minutes 6 --seed 1
    python examples/dsta/demo.py --quick               # tiny settings (< 1 minute): checks the pipeline only

Steps (all in this process, through the examples' Python APIs):

1. `synthetic.generate`: a train split (every frame labelled) and a val split (every frame labelled)
   of 128 x 96 synthetic videos at difficulty 0.5 (occluders, blur, noise, low light lasting 1-4 frames);
2. `train.Trainer` with `configs/demo_cpu.yaml`: DSTA (tiny CNN backbone, 64 x 48 crops, frames
   [-1, 0, 1], decoupled STD), then the image regression baseline from the same file with
   `model=image_baseline frames=[0]`: same backbone, input, loss, optimizer, schedule, augmentation,
   seed and number of steps; both validated with GT boxes after every epoch;
3. `evaluate.evaluate_split` + `posetrack_eval` on the val split of the *final* weights of each model
   (no checkpoint selection on val): with GT boxes (the headline) and with the generator's jittered
   detections (score >= 0.2, no NMS, as DSTA's evaluation);
4. `infer_video.infer_video`: DSTA's poses on one val sequence (its GT boxes, linked by IoU) as
   poses.gif and poses.mp4 (frames upscaled x4 for display: the skeletons would hide a 128 x 96 frame);
5. `report.write_report`: OUT/report.md, OUT/report.json, OUT/report.png, and a one-line summary.

`--minutes` is a guide, not a deadline: the number of epochs is the config's (9: the whole demo
measured 10.5 minutes on 2 cores) times minutes / 12, rounded, at least 1; the learning rate drops x0.1
for the last epoch. Whatever the numbers come out as is what the report says.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

import cv2
from dsta import engine
from dsta.cli import add_device_argument
from dsta import evaluate
from dsta import infer_video
from dsta import posetrack_eval
from dsta import report
from dsta import synthetic
import torch
from dsta import train
from dsta.model import count_parameters

__all__ = ["run_demo", "main", "SETTINGS"]

CONFIG = HERE / "configs" / "demo_cpu.yaml"
REFERENCE_MINUTES = 12.0  # the config's epochs at --minutes 12 (measured: 10.5 min in all on 2 cores)
VIDEO_SCALE = 4  # the 128 x 96 frames are upscaled for the rendering (the skeletons would hide a small frame)
#: the default (full) and --quick settings; everything else comes from the config
SETTINGS = {
    "full": {"train_videos": 160, "val_videos": 40, "frames_per_video": 30, "size": [96, 128],
             "difficulty": 0.5, "label_every": 1, "gen_workers": 2, "video_frames": 30},
    "quick": {"train_videos": 6, "val_videos": 2, "frames_per_video": 8, "size": [96, 128], "difficulty": 0.5,
              "label_every": 1, "gen_workers": 1, "video_frames": 8, "epochs": 1, "batch_size": 16},
}  # fmt: skip
MODELS = {  # name -> (label, config overrides)
    "dsta": ("DSTA", []),
    "baseline": ("image baseline", ["model=image_baseline", "frames=[0]"]),
}


class _RecordingTrainer(train.Trainer):
    """train.Trainer that also keeps every step's training loss (for the report's curves)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_losses: list[float] = []

    def _step(self, batch) -> float:
        value = super()._step(batch)
        self.step_losses.append(value)
        return value


def _gen_summary(s: dict) -> dict:
    return {k: v for k, v in s.items() if k != "frame_flags"}


def _print_gen(s: dict) -> None:
    c = ", ".join(f"{k} {v}" for k, v in s["corruptions"].items())
    print(f"  {s['split']}: {s['videos']} videos, {s['frames']} frames ({s['labeled_frames']} labelled), "
          f"{s['annotations']} person annotations, {s['corrupted_frames']} corrupted frames ({c}), "
          f"{s['ignore_regions']} videos with an ignore region; {s['seconds']:.1f} s", flush=True)  # fmt: skip


def _epochs(base: int, minutes: float) -> int:
    return max(1, round(base * minutes / REFERENCE_MINUTES))


def _pick_sequence(summary: dict) -> str:
    """The val sequence with the most corrupted frames (ties: the first): the video shows the hard case."""
    flags = summary["frame_flags"]
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


def run_demo(out="runs/demo", *, minutes: float = REFERENCE_MINUTES, quick: bool = False, seed: int = 0,
             config=CONFIG, device: str = "cpu") -> dict:  # fmt: skip
    """The whole demo (see the module doc); returns the report dict (also OUT/report.json)."""
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    st = copy.deepcopy(SETTINGS["quick" if quick else "full"])
    data = out / "data"
    timings: dict = {}
    info = engine.init_distributed(device)

    # 1. data -------------------------------------------------------------------------------------
    print(f"[1/5] synthetic data -> {data}", flush=True)
    t0 = time.perf_counter()
    gen = {}
    for split, n in (("train", st["train_videos"]), ("val", st["val_videos"])):
        s = synthetic.generate(data, num_videos=n, frames_per_video=st["frames_per_video"], size=tuple(st["size"]),
                               difficulty=st["difficulty"], seed=seed, split=split, label_every=st["label_every"],
                               workers=st["gen_workers"])  # fmt: skip
        _print_gen(s)
        gen[split] = s
    timings["data_s"] = time.perf_counter() - t0

    # 2. training ---------------------------------------------------------------------------------
    base = engine.load_config(config)
    epochs = st.get("epochs") or _epochs(int(base["train"]["epochs"]), minutes)
    milestones = [epochs - 1] if epochs > 1 else []
    common = [f"data.root={data}", f"data.train={data / 'annotations' / 'train'}",
              f"data.val={data / 'annotations' / 'val'}", "data.val_boxes=gt", f"train.epochs={epochs}",
              f"train.milestones={milestones}", f"train.seed={int(base['train']['seed']) + seed}"]  # fmt: skip
    if st.get("batch_size"):
        common.append(f"train.batch_size={st['batch_size']}")
    runs: dict = {}
    for i, (key, (label, sets)) in enumerate(MODELS.items()):
        cfg = engine.load_config(config, common + sets)
        print(f"[2/5] training {label} ({i + 1}/2) -> {out / key}", flush=True)
        t0 = time.perf_counter()
        trainer = _RecordingTrainer(cfg, out / key, info)
        result = trainer.run()
        seconds = time.perf_counter() - t0
        runs[key] = {"label": label, "model": result["model"], "cfg": trainer.cfg, "history": result["history"],
                     "step_losses": trainer.step_losses, "steps": result["step"], "train_s": seconds,
                     "params": count_parameters(result["model"]), "train_clips": len(trainer.clips)}  # fmt: skip
        timings[f"train_{key}_s"] = seconds

    # 3. evaluation of the final weights ----------------------------------------------------------
    det_file = data / "detections_val.json"
    for key, r in runs.items():
        print(f"[3/5] evaluating {r['label']} on the val split (GT boxes, then detections)", flush=True)
        t0 = time.perf_counter()
        r["eval_gt"] = evaluate.evaluate_split(r["model"], r["cfg"], info, out / key / "eval_gt", split="val",
                                               boxes="gt")  # fmt: skip
        r["eval_det"] = evaluate.evaluate_split(r["model"], r["cfg"], info, out / key / "eval_det", split="val",
                                                boxes="detections", det_file=det_file, det_thr=0.2)  # fmt: skip
        timings[f"eval_{key}_s"] = time.perf_counter() - t0
        print(f"  {r['label']}, GT boxes:\n{posetrack_eval.format_table(r['eval_gt'])}", flush=True)

    # 4. video --------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    seq = _pick_sequence(gen["val"])
    n_frames = min(st["video_frames"], st["frames_per_video"])
    print(f"[4/5] rendering DSTA's poses on val sequence {seq} ({n_frames} frames, GT boxes)", flush=True)
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

    # 5. report -------------------------------------------------------------------------------------
    print("[5/5] writing the report", flush=True)
    timings["total_s"] = time.perf_counter() - t_start
    settings = {**st, "seed": seed, "minutes": minutes, "quick": quick, "config": str(config), "epochs": epochs,
                "milestones": milestones, "device": str(info.device), "torch_threads": torch.get_num_threads(),
                "val_boxes": "gt (headline), detections_val.json (score >= 0.2, no NMS)"}  # fmt: skip
    doc = report.write_report(out, settings=settings, gen={k: _gen_summary(v) for k, v in gen.items()},
                              runs=runs, video=video, timings=timings)  # fmt: skip
    print(doc["summary"], flush=True)
    print(f"report: {out / 'report.md'} ({timings['total_s'] / 60:.1f} min)", flush=True)
    return doc


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="DSTA vs the image regression baseline on synthetic videos (CPU).")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--minutes", type=float, default=REFERENCE_MINUTES,
                   help=f"time budget guide: scales the epochs (default {REFERENCE_MINUTES:g})")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny settings for tests (< 1 minute); numbers mean nothing")
    p.add_argument("--seed", type=int, default=0, help="data seed (also added to the config's training seed)")
    p.add_argument("--config", default=str(CONFIG), help="training config (default configs/demo_cpu.yaml)")
    add_device_argument(p)
    args = p.parse_args(argv)
    if not (args.minutes > 0 and math.isfinite(args.minutes)):
        p.error("--minutes must be positive")
    return run_demo(args.out, minutes=args.minutes, quick=args.quick, seed=args.seed, config=args.config,
                    device=args.device.type)  # fmt: skip


if __name__ == "__main__":
    main()

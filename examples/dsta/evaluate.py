"""Evaluate a DSTA checkpoint on a PoseTrack split: PoseTrack18 prediction files + poseval's AP table.

    python examples/dsta/evaluate.py --checkpoint runs/r50_3f/best.pt --split val --out runs/r50_3f/eval
    python examples/dsta/evaluate.py --checkpoint best.pt --split val --boxes detections \
        --det-file data/posetrack17/val_boxes.json --det-thr 0.2 --out eval_det
    torchrun --nproc_per_node 4 examples/dsta/evaluate.py --checkpoint best.pt --split val --out eval

Predictions follow DSTA's post-processing (docs/official_code.md §6): detection boxes with score >= det_thr,
no NMS, joint score = joint confidence (mean of 1 - sigma) x box score (1 for GT boxes), no flip test.
Writes OUT/predictions/<one file per GT video>.json (PoseTrack18 layout, every GT frame listed) and
OUT/results.json (AP columns, per joint, counts), and prints the poseval table. Clips with an unreadable
image are skipped and counted ("skipped_clips"), persons without a usable box too ("dropped_persons");
"notes" says both in words. User errors (config, data, checkpoint) are one sentence and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

from dsta.checkpoint import CheckpointError
from dsta.cli import add_device_argument
from dsta.config import ConfigError
from dsta.distributed import DistInfo, all_gather, broadcast, cleanup_distributed, init_distributed
from dsta.loaders import IndexedClips, ShardSampler, make_clips
import numpy as np
from dsta import posetrack_eval
from dsta import posetrack_write
from dsta.posetrack_io import AnnotationError
import torch
from dsta.data import collate_clips
from dsta.pipeline import InferenceError, load_model  # the example's one model loader (infer_video, export)
from torch.utils.data import DataLoader
from tqdm import tqdm
from dsta.transforms import crop_to_image
from dsta.utils import amp_settings, atomic_write_text, jsonable

__all__ = ["predict", "evaluate_split", "load_model", "main"]


@torch.no_grad()
def predict(model, clips, info: DistInfo, batch_size: int = 64, workers: int = 2, amp=False,
            progress: bool = True, report: dict | None = None) -> dict:  # fmt: skip
    """Run `model` over `clips` (this rank's shard) and gather everything on rank 0.

    Returns:
        on rank 0 `{file_name: [{"keypoints" [17, 2] image pixels, "scores" [17], "score", "bbox"}, ...]}`
        in dataset order (persons of a frame in box order); `{}` on other ranks. `report`, when given, gets
        (every rank) "skipped" (clips skipped for unreadable images, all ranks) and "unreadable" (messages).
    """
    was_training = model.training
    model.eval()
    enabled, dtype, _ = amp_settings(amp, info.device)
    loader = DataLoader(IndexedClips(clips), batch_size=batch_size, collate_fn=collate_clips,
                        sampler=ShardSampler(len(clips), info.rank, info.world_size), num_workers=workers,
                        pin_memory=info.device.type == "cuda", generator=torch.Generator())  # fmt: skip
    w, h = clips.image_size
    rows, skipped, unreadable = [], 0, []
    bar = tqdm(loader, desc="predict", disable=not (progress and info.is_main and sys.stderr.isatty()), leave=False)
    for batch in bar:
        skipped += batch["skipped"]
        unreadable += batch["unreadable"][: 5 - len(unreadable)]
        if not batch["meta"]:
            continue
        with torch.autocast(info.device.type, dtype=dtype, enabled=enabled):
            out = model(batch["frames"].to(info.device, non_blocking=True))
        coords = out.coords.float().cpu().numpy()
        conf = out.score.float().cpu().numpy()[..., 0]
        meta = batch["meta"]
        centers = np.stack([m["center"] for m in meta])
        scales = np.stack([m["scale"] for m in meta])
        pixels = crop_to_image(coords, centers, scales, (w, h))
        for i, m in enumerate(meta):
            box_score = float(m["box_score"])
            person = {"keypoints": pixels[i], "scores": conf[i] * box_score, "score": box_score}
            rows.append((m["index"], m["file_name"], person))
    model.train(was_training)
    if report is not None:
        parts = all_gather((skipped, unreadable), info)
        report["skipped"] = sum(n for n, _ in parts)
        report["unreadable"] = [m for _, ms in parts for m in ms][:5]
    gathered = all_gather(rows, info)
    if not info.is_main:
        return {}
    predictions: dict = {}
    for _, name, person in sorted((r for part in gathered for r in part), key=lambda r: r[0]):
        predictions.setdefault(name, []).append(person)
    return predictions


def evaluate_split(model, cfg: dict, info: DistInfo, out_dir, *, split: str = "val", boxes: str = "gt",
                   det_file=None, det_thr=None, ann=None, batch_size=None, amp=None) -> dict | None:  # fmt: skip
    """Predict a split, write PoseTrack18 files to `out_dir/predictions`, evaluate them (rank 0).

    Returns:
        (all ranks) the `posetrack_eval.evaluate` result, or None when the split has no GT poses; with
        "skipped_clips", "dropped_persons" and "notes" (what was skipped or dropped, in words).
    """
    clips, videos = make_clips(cfg, split, train=False, boxes=boxes, det_file=det_file, det_thr=det_thr, ann=ann)
    t = cfg["train"]
    report: dict = {}
    predictions = predict(model, clips, info, batch_size=batch_size or t["val_batch_size"],
                          workers=cfg["data"]["workers"], amp=t["amp"] if amp is None else amp,
                          report=report)  # fmt: skip
    notes = [clips.drop_summary()] if clips.drop_summary() else []
    if report["skipped"]:
        notes.append(f"skipped {report['skipped']} of {len(clips)} clips with unreadable images "
                     f"(first: {report['unreadable'][0] if report['unreadable'] else 'unknown'})")  # fmt: skip
    result = None
    if info.is_main:
        pred_dir = Path(out_dir) / "predictions"
        posetrack_write.write_predictions(pred_dir, videos, predictions)
        if any(p.present.any() for v in videos for f in v.frames for p in f.persons):
            with warnings.catch_warnings():  # they come back in "notes"
                warnings.simplefilter("ignore", posetrack_eval.EvaluationWarning)
                result = posetrack_eval.evaluate(ann or cfg["data"][split], pred_dir)
            result["boxes"], result["split"], result["num_clips"] = boxes, split, len(clips)
            result["skipped_clips"] = report["skipped"]
            result["dropped_persons"] = sum(clips.stats["dropped_persons"].values())
            result["notes"] = notes + result.get("warnings", [])
            atomic_write_text(Path(out_dir) / "results.json", json.dumps(jsonable(result), indent=2))
    return broadcast(result, info)


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description="Evaluate a DSTA checkpoint on PoseTrack (poseval-identical AP).")
    p.add_argument("--checkpoint", required=True, help="last.pt / best.pt written by train.py")
    p.add_argument("--split", default="val", help="config data split: train | val | test (default val)")
    p.add_argument("--ann", help="annotation file / folder instead of the config's data.<split>")
    p.add_argument("--boxes", choices=("gt", "detections"), default=None,
                   help="person boxes: GT boxes or a detection file (default: the config's data.val_boxes)")
    p.add_argument("--det-file", help="COCO-results detection boxes (default data.det_file)")
    p.add_argument("--det-thr", type=float, help="keep detections with score >= this (default data.det_thr, 0.2)")
    p.add_argument("--out", required=True, help="output folder: predictions/ and results.json")
    p.add_argument("--batch-size", type=int, help="per process (default train.val_batch_size)")
    add_device_argument(p)
    p.add_argument("--amp", choices=("off", "fp16", "bf16"), help="autocast (default: the config's train.amp)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. data.root=... (may repeat; later values win)")
    args = p.parse_args(argv)
    info = init_distributed(args.device.type)
    try:
        model, cfg, ckpt = load_model(args.checkpoint, info.device, args.set)
        boxes = args.boxes or (cfg["data"]["val_boxes"] if args.split == "val" else "gt")
        if info.is_main:
            print(f"{args.checkpoint}: epoch {ckpt.get('epoch')}, step {ckpt.get('step')}, {args.split} split, "
                  f"{boxes} boxes, {info.world_size} process(es)")  # fmt: skip
        result = evaluate_split(model, cfg, info, args.out, split=args.split, boxes=boxes, det_file=args.det_file,
                                det_thr=args.det_thr, ann=args.ann, batch_size=args.batch_size,
                                amp=False if args.amp == "off" else args.amp)  # fmt: skip
        if info.is_main:
            for line in (result or {}).get("notes", []):
                print(f"note: {line}", file=sys.stderr)
            if result is None:
                print(f"predictions written to {Path(args.out) / 'predictions'} (the split has no GT poses: no AP)")
            else:
                c = result["counts"]
                print(f"{c['sequences']} sequences, {c['frames']} labeled frames, {c['gt_persons']} GT persons, "
                      f"{c['predicted_persons']} predicted persons")  # fmt: skip
                print(posetrack_eval.format_table(result))
                total = result["Total"]
                print(f"Total AP {total:.2f}" if math.isfinite(total) else "Total AP nan")
        return result
    except (ConfigError, CheckpointError, AnnotationError, InferenceError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()

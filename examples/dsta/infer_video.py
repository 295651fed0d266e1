"""DSTA on a video: people in every frame -> a window of frames per person -> keypoints JSON + rendering.

    python examples/dsta/infer_video.py clip.mp4 --checkpoint runs/r50_3f/best.pt --out out/clip
    python examples/dsta/infer_video.py clip.mp4 --checkpoint best.pt --detector yolov8n.onnx --out out
    python examples/dsta/infer_video.py frames/ --checkpoint best.pt --boxes dets.json --det-thr 0.5 --out out
    python examples/dsta/infer_video.py clip.mp4 --checkpoint best.pt --first-boxes "410,80,220,560" --gif --out out
    python examples/dsta/infer_video.py clip.mp4 --config examples/dsta/configs/cpu_tiny.yaml --out smoke  # random

INPUT is a video file (anything OpenCV decodes) or a folder of frames (.jpg/.jpeg/.png/.bmp, natural
sort order). Person boxes (x, y, w, h), one of:

- `--detector hog` (default, `auto` is the same): OpenCV's HOG people detector, no weights to download;
  `--detector model.onnx`: a YOLOv8 or YOLOX ONNX export (`detector.py` says which layouts); per-frame
  boxes linked into tracks by IoU (`tracking.IoUTracker`);
- `--whole-frame`: one person whose box is the whole frame;
- `--first-boxes "x,y,w,h;x,y,w,h"`: one box per person in the first frame, then moved by each person's
  predicted keypoints (`tracking.KeypointBoxTracker`; no detector, so no IoU matching);
- `--boxes dets.json`: a COCO-results detection list (`posetrack_io.load_detections`) with scores >=
  `--det-thr`, linked by IoU. A detection belongs to the frame whose name equals the basename of its
  `image_name` (a video's frame t is named like PoseTrack's files, `000012` for t = 12, so `000012.jpg`
  matches it), else to frame `image_id - --first-image-id`.

For every person and frame t, the clip is the frames t + the model's offsets, clamped to the video, all
cropped with the *same* affine crop: that of the person's box in frame t (aspect fixed to the input's
W/H and enlarged by the config's data.enlarge, 1.25; no distorting resize, as in training). Crops of many
persons and frames go through the model in batches (`--batch-size`); with `--first-boxes` a batch is one
frame, since the next frame's boxes come from its predictions. The steps are `pipeline.py`'s; from Python,
`dsta.estimate(...)` yields the same per-frame results without writing files.

Writes OUT/keypoints.json:
    {"input", "source", "fps", "image_size": [W, H], "model": {...}, "boxes", "joints": [17 names],
     "frames": [{"frame": t, "file": name, "people": [{"track_id", "box": [x, y, w, h], "box_score",
                 "keypoints": [[x, y, score] * 17]}]}]}
("file" is the frame's file name, or `f"{t:06d}"` for a video; slots 3 and 4, the ears, are never
annotated in PoseTrack: they are written but not drawn), and OUT/poses.mp4 (mp4v) or, with `--gif`,
OUT/poses.gif (Pillow; at most 480 px wide) with the skeletons of the 15 evaluated joints drawn. A
joint's score is the model's confidence mean(1 - sigma) in [0, 1]. A progress bar shows on a terminal.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from dsta.cli import HelpFormatter, add_device_argument
from dsta.pipeline import FirstFrameBoxes, FrameBoxes, WholeFrame, estimate, load_model, run
from dsta.video_io import FrameSource, InferenceError, Renderer, prepare_out_dir, write_keypoints_json
from tqdm import tqdm

__all__ = ["InferenceError", "FrameSource", "load_model", "infer_video", "write_outputs", "build_parser", "main"]


def write_outputs(results, out_dir, *, fps: float, header: dict, gif: bool = False, draw_threshold: float = 0.2,
                  total: int | None = None, progress: bool | None = None) -> dict:  # fmt: skip
    """Consume `results` (FrameResults, in order): render each frame, then write OUT/keypoints.json.

    Returns:
        summary dict: frames, crops, seconds, keypoints (path), render (path or None).
    """
    out_dir = prepare_out_dir(out_dir)
    renderer = Renderer(out_dir, fps, gif, draw_threshold)
    show = sys.stderr.isatty() if progress is None else progress
    kept, start = [], time.perf_counter()
    try:
        for r in tqdm(results, total=total, unit="frame", desc="DSTA", disable=not show, dynamic_ncols=True):
            renderer.add(r)
            kept.append(dataclasses.replace(r, image=None))  # the JSON needs no pixels: free them
            header.setdefault("image_size", [int(r.image.shape[1]), int(r.image.shape[0])])
    finally:
        render = renderer.close()
    if not kept:
        raise InferenceError("no frame could be read")
    seconds = time.perf_counter() - start
    path = write_keypoints_json(out_dir / "keypoints.json", kept, header)
    return {"frames": len(kept), "crops": sum(len(r.track_ids) for r in kept), "seconds": seconds,
            "keypoints": path, "render": render}  # fmt: skip


def _people_source(mode, first_boxes, detections):
    if mode == "whole":
        return WholeFrame()
    if mode == "first":
        return FirstFrameBoxes(first_boxes)
    if mode == "detections":
        return FrameBoxes(lambda t, _: detections.get(t, []), "detections + IoU tracker")
    raise ValueError(f"mode must be 'whole', 'first' or 'detections', got {mode!r}")


def infer_video(model, source, out_dir, *, mode: str = "whole", first_boxes=None, detections=None, people=None,
                enlarge: float = 1.25, batch_size: int = 32, device="cpu", gif: bool = False,
                draw_threshold: float = 0.2, progress: bool | None = None,
                meta: dict | None = None) -> dict:  # fmt: skip
    """Run `model` over every person of every frame of `source`; write OUT/keypoints.json and the rendering.

    Args:
        model: DSTA (or the image baseline) in eval mode (see `pipeline.run`).
        source: a `FrameSource` (or `video_io.ArraySource`).
        out_dir: output folder (created; an existing file is refused).
        mode: "whole" (the whole frame is one person), "first" (`first_boxes`, then the keypoint tracker)
            or "detections" (`detections`: {frame: [(box, score)]}, linked by IoU); ignored when a
            `people` source (`pipeline.WholeFrame`, `FirstFrameBoxes`, `FrameBoxes`) is given.
        enlarge: box enlargement before the crop (the config's data.enlarge).
        batch_size: crops per forward pass.
        gif: write poses.gif instead of poses.mp4.
        draw_threshold: joints with a lower score are not drawn.
        progress: tqdm bar; None = only on a terminal.
        meta: extra top-level keys of keypoints.json.

    Returns:
        summary dict: frames, crops, seconds, keypoints (path), render (path or None), kept_boxes (how often
        the keypoint tracker kept a box), dropped_boxes (boxes outside the image).
    """
    people = people or _people_source(mode, first_boxes, detections)
    prepare_out_dir(out_dir)  # before any work: an existing file as OUT is refused at once
    header = {"input": str(source.path), "source": source.kind, "fps": source.fps, **(meta or {})}
    results = run(model, source, people, names=source.name, enlarge=enlarge, batch_size=batch_size, device=device)
    summary = write_outputs(results, out_dir, fps=source.fps, header=header, gif=gif, draw_threshold=draw_threshold,
                            total=source.count, progress=progress)  # fmt: skip
    summary["kept_boxes"] = getattr(people, "kept", 0)
    summary["dropped_boxes"] = getattr(people, "dropped", 0)
    return summary


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DSTA video inference: keypoints JSON and a rendered video / GIF.",
                                formatter_class=HelpFormatter)  # fmt: skip
    p.add_argument("input", help="video file or folder of frames")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="last.pt / best.pt written by train.py")
    src.add_argument("--config", help="YAML config: random weights (smoke tests)")
    boxes = p.add_mutually_exclusive_group()
    boxes.add_argument("--detector", default="auto", metavar="hog|auto|MODEL.onnx",
                       help="person detector when no boxes are given: OpenCV's HOG (auto = hog) or a YOLOv8 / "
                       "YOLOX ONNX export")  # fmt: skip
    boxes.add_argument("--boxes", metavar="DETS_JSON", help="COCO-results person detections (image_name / image_id)")
    boxes.add_argument("--first-boxes", metavar="'x,y,w,h;...'", help="one box per person in the first frame, "
                       "then tracked by the predicted keypoints")  # fmt: skip
    boxes.add_argument("--whole-frame", action="store_true", help="one person, box = the whole frame")
    p.add_argument("--det-thr", type=float, default=0.5, help="with --boxes: keep scores >= this")
    p.add_argument("--first-image-id", type=int, default=0, help="with --boxes: frame index = image_id - this")
    p.add_argument("--out", required=True, help="output folder: keypoints.json, poses.mp4 / poses.gif")
    p.add_argument("--gif", action="store_true", help="write poses.gif instead of poses.mp4")
    p.add_argument("--max-frames", type=int, help="process only the first N frames (default: all)")
    p.add_argument("--fps", type=float, help="frame rate of the output (default: the video's, 30 for a folder)")
    p.add_argument("--batch-size", type=int, default=32, help="crops per forward pass")
    p.add_argument("--draw-thr", type=float, default=0.2, help="joints scoring below this are not drawn")
    add_device_argument(p)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    return p


def _boxes_argument(args):
    """(estimate's boxes, detector) from the exclusive box options."""
    if args.whole_frame:
        return "whole", None
    if args.first_boxes is not None:
        return str(args.first_boxes), None
    if args.boxes is not None:
        if not Path(args.boxes).is_file():
            raise InferenceError(f"--boxes {args.boxes}: no such file")
        return Path(args.boxes), None
    return None, args.detector


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise InferenceError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.fps is not None and not args.fps > 0:
            raise InferenceError(f"--fps must be > 0, got {args.fps}")
        prepare_out_dir(args.out)
        boxes, detector = _boxes_argument(args)
        est = estimate(args.input, args.checkpoint, config=args.config, boxes=boxes, detector=detector,
                       device=args.device, batch_size=args.batch_size, max_frames=args.max_frames,
                       det_threshold=args.det_thr, first_image_id=args.first_image_id, sets=args.set)  # fmt: skip
        if args.fps:
            est.source.fps = float(args.fps)
        model, cfg = est.model, est.config
        header = {"input": str(est.source.path), "source": est.source.kind, "fps": est.source.fps,
                  "model": {"name": cfg.get("name"), "model": cfg.get("model"), "backbone": str(cfg.get("backbone")),
                            "frames": list(model.frames), "input_size": list(model.input_size), "weights": est.weights},
                  "boxes": est.people.description}  # fmt: skip
        summary = write_outputs(est, args.out, fps=est.source.fps, header=header, gif=args.gif,
                                draw_threshold=args.draw_thr, total=est.source.count,
                                progress=False if args.no_progress else None)  # fmt: skip
    except InferenceError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if est.unmatched:
        print(f"{est.unmatched} detection(s) matched no frame of {args.input} (see --first-image-id)", file=sys.stderr)
    dropped = getattr(est.people, "dropped", 0)
    if dropped:
        print(f"{dropped} box(es) outside the image were dropped", file=sys.stderr)
    fps = summary["frames"] / max(summary["seconds"], 1e-9)
    print(f"{summary['frames']} frames, {summary['crops']} person crops in {summary['seconds']:.1f} s "
          f"({fps:.1f} frames/s); wrote {summary['keypoints']}"
          + (f" and {summary['render']}" if summary["render"] else ""))  # fmt: skip
    return summary


if __name__ == "__main__":
    main()

"""DSTA on a video: person boxes -> a window of frames per person and frame -> keypoints JSON + rendering.

    python examples/dsta/infer_video.py clip.mp4 --checkpoint runs/r50_3f/best.pt --out out/clip
    python examples/dsta/infer_video.py frames/ --checkpoint best.pt --boxes dets.json --det-thr 0.5 --out out
    python examples/dsta/infer_video.py clip.mp4 --checkpoint best.pt --first-boxes "410,80,220,560" --gif --out out
    python examples/dsta/infer_video.py clip.mp4 --config examples/dsta/configs/cpu_tiny.yaml --out smoke  # random

INPUT is a video file (anything OpenCV decodes) or a folder of frames (.jpg/.jpeg/.png/.bmp, natural
sort order). Person boxes (x, y, w, h), one of:

- `--whole-frame` (default): one person whose box is the whole frame;
- `--first-boxes "x,y,w,h;x,y,w,h"`: one box per person in the first frame, then propagated by each
  person's predicted keypoints (`tracking.KeypointBoxTracker`; no detector, so no IoU matching);
- `--boxes dets.json`: a COCO-results detection list (`posetrack_io.load_detections`) with scores >=
  `--det-thr`, linked into tracks by IoU (`tracking.IoUTracker`). A detection belongs to the frame whose
  file name equals the basename of its `image_name` (folder input; for a video, a digits-only stem is the
  0-based frame index), else to frame `image_id - --first-image-id`.

For every person and frame t, the clip is the frames t + the model's offsets, clamped to the video
(`data.clip_frame_numbers`), all cropped with the *same* affine crop: that of the person's box in frame t
(aspect fixed to the input's W/H and enlarged by the config's data.enlarge, 1.25; no distorting resize:
dsta_spec.md §1.4). Crops of many persons and frames go through the model in batches (`--batch-size`);
with `--first-boxes` a batch is one frame, since the next frame's boxes come from its predictions.
Predicted crop coordinates are mapped back to image pixels (`transforms.crop_to_image`) and clipped to the
image; a joint's score is the model's confidence mean(1 - sigma) in [0, 1].

Writes OUT/keypoints.json:
    {"input", "source", "fps", "image_size": [W, H], "model": {...}, "boxes", "joints": [17 names],
     "frames": [{"frame": t, "file": name, "people": [{"track_id", "box": [x, y, w, h], "box_score",
                 "keypoints": [[x, y, score] * 17]}]}]}
(slots 3 and 4, the ears, are never annotated in PoseTrack: they are written but not drawn), and OUT/poses.mp4
(mp4v) or, with `--gif`, OUT/poses.gif (Pillow; at most 480 px wide) with the skeletons of the 15
evaluated joints drawn. A progress bar shows on a terminal.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import cv2
from dsta import engine
import numpy as np
import torch
import yaml
from dsta.data import ImageError, clip_frame_numbers, read_image
from dsta.draw import draw_frame_label, draw_person
from dsta.model import build_model
from dsta.posetrack_io import AnnotationError, load_detections
from stattn.skeletons import POSETRACK
from tqdm import tqdm
from dsta.tracking import BoxFormatError, IoUTracker, KeypointBoxTracker, parse_boxes
from dsta.transforms import affine_matrix, box_to_center_scale, crop_to_image, normalize_image, warp

__all__ = ["InferenceError", "FrameSource", "load_model", "infer_video", "main", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
GIF_MAX_WIDTH = 480


class InferenceError(RuntimeError):
    """An input, model or box problem; the message says which and what is wrong."""


# ------------------------------------------------------------------------------------------- model
def load_model(checkpoint=None, config=None, device="cpu", sets=None, seed: int = 0):
    """(model in eval mode on `device`, config dict) from a train.py checkpoint or, with random
    weights (seeded), from a YAML config. `sets` override config keys (`--set` syntax)."""
    if (checkpoint is None) == (config is None):
        raise InferenceError("give exactly one of a checkpoint or a config")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise InferenceError(f"checkpoint {checkpoint} does not exist")
        try:
            ckpt = engine.load_checkpoint(checkpoint)
        except Exception as exc:  # a truncated file, not a torch file, an unpicklable object
            raise InferenceError(f"cannot load checkpoint {checkpoint}: {exc}") from exc
        cfg = _config(None, sets, ckpt.get("config") or {}, checkpoint)
        try:
            model = engine.model_from_checkpoint(ckpt, cfg)
        except RuntimeError as exc:
            raise InferenceError(f"checkpoint {checkpoint}: its weights do not fit the model of its config: "
                                 f"{exc}") from exc  # fmt: skip
    else:
        if not Path(config).is_file():
            raise InferenceError(f"config {config} does not exist")
        cfg = _config(config, sets, None, config)
        torch.manual_seed(seed)
        model = build_model({**cfg, "pretrained": None})  # random weights: a smoke test, no download
    return model.to(device).eval(), cfg


def _config(path, sets, base, name) -> dict:
    try:
        return engine.load_config(path, sets, base=base)
    except (KeyError, ValueError, yaml.YAMLError) as exc:
        raise InferenceError(f"config of {name}: {exc}") from exc


# ------------------------------------------------------------------------------------------- frames
def _natural_key(name: str):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


class FrameSource:
    """The frames of a video file or of a folder of images, read once, in order, as RGB uint8.

    Args:
        path: video file or folder.
        max_frames: read at most this many frames.
        fps: frame rate of a folder (a video's own rate is used when it has one).
    """

    def __init__(self, path, max_frames: int | None = None, fps: float | None = None):
        self.path = Path(path)
        self.max_frames = max_frames
        if max_frames is not None and max_frames < 1:
            raise InferenceError(f"--max-frames must be >= 1, got {max_frames}")
        if not self.path.exists():
            raise InferenceError(f"{self.path}: no such video file or frame folder")
        self.fps = float(fps) if fps else 30.0
        if self.path.is_dir():
            self.kind = "frames"
            files = sorted((p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                           key=lambda p: _natural_key(p.name))  # fmt: skip
            if not files:
                raise InferenceError(f"{self.path}: the folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            self.files = files[:max_frames] if max_frames else files
            self.count: int | None = len(self.files)
        else:
            self.kind = "video"
            self.files = None
            cap = cv2.VideoCapture(str(self.path))
            ok = cap.isOpened()
            first = cap.read()[1] if ok else None
            if first is None:
                cap.release()
                raise InferenceError(f"{self.path}: cannot read the video (not a video file, empty, or a codec "
                                     f"OpenCV cannot decode)")  # fmt: skip
            if not fps and (cap.get(cv2.CAP_PROP_FPS) or 0) > 0:
                self.fps = float(cap.get(cv2.CAP_PROP_FPS))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.count = min(n, max_frames) if n > 0 and max_frames else (n if n > 0 else max_frames)
            self._cap, self._first = cap, first

    def name(self, index: int) -> str:
        """The frame's file name (folder) or the video's name (video)."""
        return self.files[index].name if self.files is not None else self.path.name

    def __iter__(self):
        if self.files is not None:
            for f in self.files:
                try:
                    yield read_image(f)
                except ImageError as exc:
                    raise InferenceError(str(exc)) from None
            return
        cap, frame, n = self._cap, self._first, 0
        try:
            while frame is not None and (self.max_frames is None or n < self.max_frames):
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                n += 1
                ok, frame = cap.read()
                frame = frame if ok else None
        finally:
            cap.release()


# ------------------------------------------------------------------------------------------- boxes
def detections_by_frame(detections, source: FrameSource, first_image_id: int = 0) -> tuple[dict, int]:
    """{frame index: [(box, score), ...] best first} and the number of detections matching no frame."""
    names = {f.name: i for i, f in enumerate(source.files)} if source.files is not None else {}
    out: dict[int, list] = {}
    unmatched = 0
    for det in detections:
        t = None
        if "image_name" in det:
            base = os.path.basename(str(det["image_name"]))
            t = names.get(base)
            stem = base.split(".")[0]
            if t is None and source.files is None and stem.isdigit():
                t = int(stem)
        if t is None and "image_id" in det:
            t = int(det["image_id"]) - int(first_image_id)
        if t is None or t < 0 or (source.count is not None and t >= source.count):
            unmatched += 1
            continue
        out.setdefault(t, []).append((tuple(float(v) for v in det["bbox"]), float(det["score"])))
    for t in out:
        out[t].sort(key=lambda d: -d[1])
    return out, unmatched


# ------------------------------------------------------------------------------------------- render
class Renderer:
    """Writes the drawn frames to OUT/poses.mp4 (mp4v) or OUT/poses.gif."""

    def __init__(self, out_dir: Path, fps: float, gif: bool, draw_threshold: float):
        self.fps, self.threshold = fps, draw_threshold
        self.gif_frames: list | None = None
        self.writer = None
        self.size = None
        if gif:
            try:
                from PIL import Image  # noqa: F401, PLC0415
            except ImportError:
                print("Pillow is not installed: cannot write a GIF, writing poses.mp4 instead "
                      "(pip install pillow for --gif)", file=sys.stderr)  # fmt: skip
                gif = False
        self.path = out_dir / ("poses.gif" if gif else "poses.mp4")
        if gif:
            self.gif_frames = []

    def add(self, image_rgb: np.ndarray, people: list, label: str) -> None:
        img = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        for p in people:
            draw_person(img, p["keypoints"], p["box"], p["track_id"], self.threshold)
        draw_frame_label(img, label)
        if self.gif_frames is not None:
            self._add_gif(img)
            return
        if self.writer is None:
            self.size = (img.shape[1], img.shape[0])
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise InferenceError(f"{self.path}: OpenCV cannot open an mp4v video writer here; try --gif")
        if (img.shape[1], img.shape[0]) != self.size:  # frames of a folder may differ in size
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(img)

    def _add_gif(self, img_bgr: np.ndarray) -> None:
        from PIL import Image  # noqa: PLC0415

        h, w = img_bgr.shape[:2]
        if self.size is None:
            s = min(1.0, GIF_MAX_WIDTH / w)
            self.size = (max(1, round(w * s)), max(1, round(h * s)))
        if (w, h) != self.size:
            img_bgr = cv2.resize(img_bgr, self.size, interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB)
        self.gif_frames.append(Image.fromarray(rgb).quantize(colors=255, method=Image.Quantize.MEDIANCUT))

    def close(self) -> Path | None:
        if self.writer is not None:
            self.writer.release()
            return self.path
        if self.gif_frames:
            duration = max(20, round(1000 / self.fps))  # ms per frame
            self.gif_frames[0].save(self.path, save_all=True, append_images=self.gif_frames[1:], duration=duration,
                                    loop=0, disposal=1)  # fmt: skip
            return self.path
        return None


# ------------------------------------------------------------------------------------------- main loop
def _round(values, nd):
    return [round(float(v), nd) for v in values]


@torch.inference_mode()
def infer_video(model, source: FrameSource, out_dir, *, mode: str = "whole", first_boxes=None, detections=None,
                enlarge: float = 1.25, batch_size: int = 32, device="cpu", gif: bool = False,
                draw_threshold: float = 0.2, progress: bool | None = None, meta: dict | None = None) -> dict:
    """Run `model` over every person of every frame of `source`; write OUT/keypoints.json and the rendering.

    Args:
        model: DSTA (or the image baseline) in eval mode: `frames`, `input_size` attributes, forward
            `[B, T, 3, H, W]` -> RegressionOutput.
        source: the frames.
        out_dir: output folder (created).
        mode: "whole" (the whole frame is one person), "first" (`first_boxes`, then the keypoint tracker)
            or "detections" (`detections`: {frame: [(box, score)]}, linked by IoU).
        enlarge: box enlargement before the crop (the config's data.enlarge).
        batch_size: crops per forward pass.
        gif: write poses.gif instead of poses.mp4.
        draw_threshold: joints with a lower score are not drawn.
        progress: tqdm bar; None = only on a terminal.
        meta: extra top-level keys of keypoints.json.

    Returns:
        summary dict: frames, crops, seconds, keypoints (path), render (path or None), kept_boxes.
    """
    if mode not in ("whole", "first", "detections"):
        raise ValueError(f"mode must be 'whole', 'first' or 'detections', got {mode!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    offsets = [int(o) for o in model.frames]
    in_h, in_w = (int(s) for s in model.input_size)
    crop_size = (in_w, in_h)
    aspect = in_w / in_h
    lo, hi = min(offsets), max(offsets)
    tracker = KeypointBoxTracker(first_boxes, joints=POSETRACK.evaluated) if mode == "first" else None
    linker = IoUTracker() if mode == "detections" else None
    renderer = Renderer(out_dir, source.fps, gif, draw_threshold)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=source.count, unit="frame", desc="DSTA", disable=not show, dynamic_ncols=True)

    frames_iter = iter(source)
    buffer: dict[int, np.ndarray] = {}
    n_read, eof = 0, False
    records: list[dict] = []
    pending: list[dict] = []  # frames whose crops wait for the model
    crops, centers, scales = [], [], []
    stats = {"crops": 0}
    image_size = None
    start = time.perf_counter()

    def ensure(upto: int) -> None:
        nonlocal n_read, eof
        while not eof and n_read <= upto:
            img = next(frames_iter, None)
            if img is None:
                eof = True
                break
            buffer[n_read] = img
            n_read += 1

    def flush() -> None:
        pixels = conf = None
        if crops:
            coords, conf = [], []
            for i in range(0, len(crops), batch_size):
                out = model(torch.stack(crops[i : i + batch_size]).to(device))
                coords.append(out.coords.float().cpu().numpy())
                conf.append(out.score.float().cpu().numpy()[..., 0])
            pixels = crop_to_image(np.concatenate(coords), np.stack(centers), np.stack(scales), crop_size)
            conf = np.concatenate(conf)
        for rec in pending:
            h, w = buffer[rec["frame"]].shape[:2]
            for p in rec["people"]:
                j = p.pop("_job")
                xy = np.clip(pixels[j], 0.0, [w - 1.0, h - 1.0])
                p["keypoints"] = np.concatenate([xy, conf[j][:, None]], axis=1)
            if tracker is not None:
                tracker.update(np.stack([p["keypoints"] for p in rec["people"]]), w, h)
            renderer.add(buffer[rec["frame"]], rec["people"], f"frame {rec['frame']}")
            records.append(rec)
        stats["crops"] += len(crops)
        pending.clear()
        crops.clear()
        centers.clear()
        scales.clear()

    try:
        t = 0
        while True:
            ensure(t + hi)
            if t >= n_read:
                break
            img = buffer[t]
            h, w = img.shape[:2]
            image_size = image_size or [w, h]
            if mode == "whole":
                people = [(0, (0.0, 0.0, float(w), float(h)), None)]
            elif mode == "first":
                people = [(tid, box, None) for tid, box in tracker.current()]
            else:
                dets = detections.get(t, [])
                ids = linker.assign([d[0] for d in dets])
                people = [(tid, box, score) for tid, (box, score) in zip(ids, dets)]
            nums, _ = clip_frame_numbers(t, offsets, 0, n_read - 1)
            rec = {"frame": t, "file": source.name(t), "people": []}
            for tid, box, score in people:
                center, scale = box_to_center_scale(box, aspect, enlarge)
                m = affine_matrix(center, scale, 0.0, crop_size)
                warped = {n: normalize_image(warp(buffer[n], m, crop_size)) for n in dict.fromkeys(nums)}
                rec["people"].append({"track_id": tid, "box": box, "box_score": score, "_job": len(crops)})
                crops.append(torch.stack([warped[n] for n in nums]))
                centers.append(center)
                scales.append(scale)
            pending.append(rec)
            if tracker is not None or len(crops) >= batch_size:
                flush()
            keep_from = min(pending[0]["frame"] if pending else t + 1, t + 1 + lo)
            for k in [k for k in buffer if k < keep_from]:
                del buffer[k]
            bar.update(1)
            t += 1
        flush()
    finally:
        bar.close()
        render_path = renderer.close()
    if not records:
        raise InferenceError(f"{source.path}: no frame could be read")
    seconds = time.perf_counter() - start

    doc = {
        "input": str(source.path), "source": source.kind, "fps": source.fps, "image_size": image_size,
        **(meta or {}), "joints": list(POSETRACK.joints), "evaluated_joints": list(POSETRACK.evaluated),
        "frames": [
            {"frame": r["frame"], "file": r["file"], "people": [
                {"track_id": p["track_id"], "box": _round(p["box"], 2),
                 "box_score": None if p["box_score"] is None else round(p["box_score"], 4),
                 "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                               for x, y, s in p["keypoints"]]}
                for p in r["people"]]}
            for r in records
        ],
    }  # fmt: skip
    kp_path = out_dir / "keypoints.json"
    tmp = kp_path.with_name(f".{kp_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, kp_path)
    return {"frames": len(records), "crops": stats["crops"], "seconds": seconds, "keypoints": kp_path,
            "render": render_path, "kept_boxes": tracker.kept if tracker is not None else 0}  # fmt: skip


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DSTA video inference: keypoints JSON and a rendered video / GIF.")
    p.add_argument("input", help="video file or folder of frames")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="last.pt / best.pt written by train.py")
    src.add_argument("--config", help="YAML config: random weights (smoke tests)")
    boxes = p.add_mutually_exclusive_group()
    boxes.add_argument("--boxes", metavar="DETS_JSON", help="COCO-results person detections (image_name / image_id)")
    boxes.add_argument("--first-boxes", metavar="'x,y,w,h;...'", help="one box per person in the first frame, "
                       "then tracked by the predicted keypoints")  # fmt: skip
    boxes.add_argument("--whole-frame", action="store_true", help="one person, box = the whole frame (default)")
    p.add_argument("--det-thr", type=float, default=0.5, help="with --boxes: keep scores >= this (default 0.5)")
    p.add_argument("--first-image-id", type=int, default=0,
                   help="with --boxes: frame index = image_id - this (default 0)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder: keypoints.json, poses.mp4 / poses.gif")
    p.add_argument("--gif", action="store_true", help="write poses.gif instead of poses.mp4")
    p.add_argument("--max-frames", type=int, help="process only the first N frames")
    p.add_argument("--fps", type=float, help="frame rate of the output (default: the video's, 30 for a folder)")
    p.add_argument("--batch-size", type=int, default=32, help="crops per forward pass (default 32)")
    p.add_argument("--draw-thr", type=float, default=0.2, help="joints scoring below this are not drawn")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    return p


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise InferenceError(f"--batch-size must be >= 1, got {args.batch_size}")
        first = parse_boxes(args.first_boxes) if args.first_boxes is not None else None
        source = FrameSource(args.input, args.max_frames, args.fps)
        detections, unmatched = None, 0
        if args.boxes:
            if not Path(args.boxes).is_file():
                raise InferenceError(f"--boxes {args.boxes}: no such file")
            detections, unmatched = detections_by_frame(load_detections(args.boxes, args.det_thr), source,
                                                        args.first_image_id)  # fmt: skip
        model, cfg = load_model(args.checkpoint, args.config, args.device, args.set)
        mode = "first" if first else "detections" if detections is not None else "whole"
        meta = {"model": {"name": cfg.get("name"), "model": cfg.get("model"), "backbone": str(cfg.get("backbone")),
                          "frames": list(model.frames), "input_size": list(model.input_size),
                          "weights": args.checkpoint or f"random ({args.config})"},
                "boxes": {"whole": "whole frame", "first": "first-frame boxes + keypoint tracker",
                          "detections": f"{args.boxes} (score >= {args.det_thr}) + IoU tracker"}[mode]}  # fmt: skip
        enlarge = float((cfg.get("data") or {}).get("enlarge") or 1.25)
        summary = infer_video(model, source, args.out, mode=mode, first_boxes=first, detections=detections,
                              enlarge=enlarge, batch_size=args.batch_size, device=args.device, gif=args.gif,
                              draw_threshold=args.draw_thr, progress=False if args.no_progress else None,
                              meta=meta)  # fmt: skip
    except (InferenceError, BoxFormatError, AnnotationError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if unmatched:
        print(f"{unmatched} detection(s) matched no frame of {args.input} (see --first-image-id)", file=sys.stderr)
    fps = summary["frames"] / max(summary["seconds"], 1e-9)
    print(f"{summary['frames']} frames, {summary['crops']} person crops in {summary['seconds']:.1f} s "
          f"({fps:.1f} frames/s); wrote {summary['keypoints']}"
          + (f" and {summary['render']}" if summary["render"] else ""))  # fmt: skip
    return summary


if __name__ == "__main__":
    main()

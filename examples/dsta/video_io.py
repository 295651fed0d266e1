"""Frames in, files out: the reading and writing ends of video inference.

- `FrameSource`: the frames of a video file (anything OpenCV decodes) or a folder of images, in order.
- `ArraySource`: frames already in memory (a list of `[H, W, 3]` RGB uint8 arrays).
- `Renderer`: drawn frames to poses.mp4 (mp4v) or poses.gif (Pillow, at most 480 px wide).
- `write_keypoints_json`: the per-frame results as OUT/keypoints.json.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np
from dsta.data import ImageError, read_image
from dsta.draw import draw_frame_label, draw_person
from stattn.skeletons import POSETRACK

__all__ = ["InferenceError", "IMAGE_EXTENSIONS", "FrameSource", "ArraySource", "Renderer", "write_keypoints_json",
           "prepare_out_dir"]  # fmt: skip

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
GIF_MAX_WIDTH = 480


class InferenceError(RuntimeError):
    """An input, model or box problem; the message says which and what is wrong."""


def _natural_key(name: str):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


class FrameSource:
    """The frames of a video file or of a folder of images, read once, in order, as RGB uint8.

    Frame t is named after its file (folder) or `f"{t:06d}"` (video: its 0-based index, the PoseTrack
    file naming, so that detections by image name match either input).

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
        """The frame's file name (folder) or its zero-padded index (video)."""
        return self.files[index].name if self.files is not None else f"{index:06d}"

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


class ArraySource:
    """Frames given as arrays: a sequence (or iterable) of `[H, W, 3]` RGB uint8; frame t is named `f"{t:06d}"`."""

    kind = "arrays"
    files = None

    def __init__(self, frames, max_frames: int | None = None, fps: float | None = None):
        self.frames, self.max_frames = frames, max_frames
        self.path = Path("<arrays>")
        self.fps = float(fps) if fps else 30.0
        n = len(frames) if hasattr(frames, "__len__") else None
        self.count = min(n, max_frames) if n is not None and max_frames else (n or max_frames)

    def name(self, index: int) -> str:
        return f"{index:06d}"

    def __iter__(self):
        for t, img in enumerate(self.frames):
            if self.max_frames is not None and t >= self.max_frames:
                return
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 1:
                raise InferenceError(f"frame {t}: expected an [H, W, 3] RGB uint8 array, got {img.dtype} "
                                     f"{list(img.shape)}")  # fmt: skip
            yield img


def prepare_out_dir(out_dir) -> Path:
    """Create the output folder; one sentence when `out_dir` is an existing file or cannot be created."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InferenceError(f"--out {out_dir} is an existing file; the output is a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InferenceError(f"--out {out_dir}: cannot create the folder ({exc.strerror or exc})") from None
    return out_dir


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
        self.path = Path(out_dir) / ("poses.gif" if gif else "poses.mp4")
        if gif:
            self.gif_frames = []

    def add(self, result) -> None:
        """Draw one `FrameResult` (its image, boxes, keypoints and track ids) and append it."""
        img = cv2.cvtColor(result.image, cv2.COLOR_RGB2BGR)
        for p in range(len(result.track_ids)):
            kp = np.concatenate([result.keypoints[p], result.scores[p][:, None]], axis=1)
            draw_person(img, kp, result.boxes[p], int(result.track_ids[p]), self.threshold)
        draw_frame_label(img, f"frame {result.index}")
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


def _person_json(result, p: int) -> dict:
    score = result.box_scores[p]
    kp = [[round(float(x), 2), round(float(y), 2), round(float(s), 4)]
          for (x, y), s in zip(result.keypoints[p], result.scores[p])]  # fmt: skip
    return {"track_id": int(result.track_ids[p]), "box": [round(float(v), 2) for v in result.boxes[p]],
            "box_score": None if not np.isfinite(score) else round(float(score), 4), "keypoints": kp}  # fmt: skip


def write_keypoints_json(path, results, header: dict) -> Path:
    """Write `{**header, "joints", "evaluated_joints", "frames": [{"frame", "file", "people": [...]}]}` atomically.

    Each person is `{"track_id", "box": [x, y, w, h], "box_score" (null without one),
    "keypoints": [[x, y, score] * 17]}`.
    """
    doc = {**header, "joints": list(POSETRACK.joints), "evaluated_joints": list(POSETRACK.evaluated),
           "frames": [{"frame": r.index, "file": r.name,
                       "people": [_person_json(r, p) for p in range(len(r.track_ids))]} for r in results]}  # fmt: skip
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)
    return path

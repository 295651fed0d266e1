"""Person boxes over a video for `infer_video.py`: box strings, two simple trackers, box geometry.

Boxes are (x, y, w, h) in image pixels everywhere.

- `KeypointBoxTracker` (for `--first-boxes`): one box per person is given in the first frame and
  nothing else is known about later frames (no detector). Matching by IoU or centre distance needs
  detections in every frame, so instead each box is *propagated by the pose itself*: the box of frame
  t + 1 is the extent of the person's confident keypoints predicted in frame t, grown by 0.65 x the
  extent on each side (poseval's rule, the one `data.py` uses to make PoseTrack17 person boxes, so the
  crops look like the training crops). When fewer than `min_joints` joints are confident, or the new
  box is degenerate, the previous box is kept; size changes are limited to a factor `max_resize` per
  frame and the box is clipped to the image. It follows people moving at video frame rates; it cannot
  recover a person it has lost (the box then stays where it was).
- `IoUTracker` (for `--boxes`): detection boxes of consecutive frames are linked greedily by IoU (the
  highest pairs first, >= `iou_threshold`); unmatched detections start new tracks, tracks unseen for
  more than `max_age` frames end.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BoxFormatError", "parse_boxes", "box_iou", "box_from_keypoints", "clip_box", "KeypointBoxTracker",
           "IoUTracker"]  # fmt: skip


class BoxFormatError(ValueError):
    """A `--first-boxes` string that is not `x,y,w,h;x,y,w,h;...`; the message says what is wrong."""


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """`"x,y,w,h;x,y,w,h"` -> [(x, y, w, h), ...]; widths and heights must be positive.

    >>> parse_boxes("10,20,30,40; 0,0,5.5,6")
    [(10.0, 20.0, 30.0, 40.0), (0.0, 0.0, 5.5, 6.0)]
    """
    boxes = []
    parts = [p.strip() for p in str(text).split(";")]
    if not any(parts):
        raise BoxFormatError("no box given: expected 'x,y,w,h' (boxes separated by ';')")
    for i, part in enumerate(parts):
        if not part:
            continue
        fields = [f.strip() for f in part.split(",")]
        if len(fields) != 4:
            raise BoxFormatError(f"box {i + 1} {part!r} has {len(fields)} fields; expected 4: x,y,w,h")
        try:
            x, y, w, h = (float(f) for f in fields)
        except ValueError:
            raise BoxFormatError(f"box {i + 1} {part!r} is not 4 numbers x,y,w,h") from None
        if not all(np.isfinite([x, y, w, h])):
            raise BoxFormatError(f"box {i + 1} {part!r} holds a non-finite number")
        if w <= 0 or h <= 0:
            raise BoxFormatError(f"box {i + 1} {part!r}: width and height must be > 0")
        boxes.append((x, y, w, h))
    return boxes


def box_iou(a, b) -> np.ndarray:
    """IoU of every box of `a` `[N, 4]` with every box of `b` `[M, 4]` (x, y, w, h) -> `[N, M]`."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def clip_box(box, width: int, height: int):
    """(x, y, w, h) clipped to the image [0, width] x [0, height]; None when nothing is left."""
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(width), x + w), min(float(height), y + h)
    if x2 - x1 < 1.0 or y2 - y1 < 1.0:
        return None
    return (x1, y1, x2 - x1, y2 - y1)


def box_from_keypoints(keypoints, joints=None, threshold: float = 0.2, margin: float = 0.65, min_joints: int = 3):
    """The box of the confident joints: their extent grown by `margin` x extent on each side.

    Args:
        keypoints: `[K, 3]` (x, y, score).
        joints: slots to use (default all).
        threshold: joints with score >= this count.
        margin: growth per side relative to the extent (0.65: poseval's PoseTrack17 box rule).
        min_joints: fewer confident joints -> None.

    Returns:
        (x, y, w, h) or None.
    """
    kp = np.asarray(keypoints, np.float64)
    if joints is not None:
        kp = kp[list(joints)]
    pts = kp[(kp[:, 2] >= threshold) & np.isfinite(kp[:, :2]).all(axis=1), :2]
    if len(pts) < max(min_joints, 2):
        return None
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext = hi - lo
    if ext.max() <= 0:
        return None
    ext = np.maximum(ext, 0.25 * ext.max())  # a side-on / lying person: keep the box from collapsing
    mid = (lo + hi) / 2
    size = ext * (1 + 2 * margin)
    return (mid[0] - size[0] / 2, mid[1] - size[1] / 2, size[0], size[1])


class KeypointBoxTracker:
    """Propagate first-frame boxes by each person's predicted keypoints (see the module doc).

    Args:
        boxes: first-frame boxes, one per person; track ids are their positions 0, 1, ...
        joints: keypoint slots that define the box (e.g. `POSETRACK.evaluated`).
        threshold: joint score for a joint to count.
        min_joints: fewer confident joints -> keep the previous box.
        max_resize: a box grows or shrinks by at most this factor per frame (and per side length).
    """

    def __init__(self, boxes, joints=None, threshold: float = 0.2, min_joints: int = 4, max_resize: float = 1.25):
        self.boxes = [tuple(float(v) for v in b) for b in boxes]
        self.track_ids = list(range(len(self.boxes)))
        self.joints, self.threshold, self.min_joints, self.max_resize = joints, threshold, min_joints, max_resize
        self.kept = 0  # how many updates fell back to the previous box

    def current(self) -> list[tuple[int, tuple]]:
        """[(track_id, box)] for the next frame."""
        return list(zip(self.track_ids, self.boxes))

    def update(self, keypoints, width: int, height: int) -> None:
        """Move each box to its person's keypoints of this frame (`keypoints` `[P, K, 3]`, track order)."""
        new = []
        for box, kp in zip(self.boxes, keypoints):
            cand = box_from_keypoints(kp, self.joints, self.threshold, min_joints=self.min_joints)
            if cand is not None:
                cand = self._limit(box, cand)
                cand = clip_box(cand, width, height)
            if cand is None:
                self.kept += 1
                cand = box
            new.append(cand)
        self.boxes = new

    def _limit(self, old, new):
        """Limit the change of each side length to a factor `max_resize` (centre kept)."""
        r = self.max_resize
        w = float(np.clip(new[2], old[2] / r, old[2] * r))
        h = float(np.clip(new[3], old[3] / r, old[3] * r))
        cx, cy = new[0] + new[2] / 2, new[1] + new[3] / 2
        return (cx - w / 2, cy - h / 2, w, h)


class IoUTracker:
    """Greedy IoU linking of per-frame detections into tracks (see the module doc).

    Args:
        iou_threshold: a detection continues a track when their IoU is >= this.
        max_age: a track not matched for more than this many frames ends.
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 5):
        self.iou_threshold, self.max_age = iou_threshold, max_age
        self.tracks: dict[int, dict] = {}  # id -> {"box", "age"}
        self.next_id = 0

    def assign(self, boxes) -> list[int]:
        """Track ids for this frame's `boxes` `[N, 4]` (in order); call once per frame, in order."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = [-1] * len(boxes)
        live = list(self.tracks)
        if live and len(boxes):
            iou = box_iou(boxes, np.array([self.tracks[t]["box"] for t in live]))
            pairs = sorted(((iou[i, j], i, j) for i in range(len(boxes)) for j in range(len(live))), reverse=True)
            used_t = set()
            for value, i, j in pairs:
                if value < self.iou_threshold:
                    break
                if ids[i] == -1 and j not in used_t:
                    ids[i] = live[j]
                    used_t.add(j)
        for i, tid in enumerate(ids):
            if tid == -1:
                ids[i] = tid = self.next_id
                self.next_id += 1
            self.tracks[tid] = {"box": boxes[i], "age": -1}
        for tid in list(self.tracks):
            self.tracks[tid]["age"] += 1
            if self.tracks[tid]["age"] > self.max_age:
                del self.tracks[tid]
        return ids

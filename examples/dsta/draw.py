"""Skeleton drawing for `infer_video.py` (OpenCV, BGR images).

Only the 15 PoseTrack joints that are annotated and evaluated are drawn (`POSETRACK.evaluated`: not the
two unused ear slots 3, 4). The limbs are those of the PoseTrack18 `categories[0].skeleton` restricted to
these joints, plus head_bottom (the neck) to both shoulders, which the ear slots carry in COCO.
"""
from __future__ import annotations

import cv2
import numpy as np
from stattn.skeletons import POSETRACK

__all__ = ["LIMBS", "track_color", "label_origin", "draw_person", "draw_frame_label"]

#: (joint, joint) pairs of POSETRACK slots: head, neck-shoulders, arms, torso, legs.
LIMBS = (
    (2, 1), (0, 1), (0, 2),  # head_top-head_bottom, nose-head_bottom, nose-head_top
    (1, 5), (1, 6), (5, 6),  # neck-shoulders, shoulders
    (5, 7), (7, 9), (6, 8), (8, 10),  # arms
    (5, 11), (6, 12), (11, 12),  # torso
    (11, 13), (13, 15), (12, 14), (14, 16),  # legs
)  # fmt: skip
assert all(a in POSETRACK.evaluated and b in POSETRACK.evaluated for a, b in LIMBS)

_LEFT = {j for j, name in enumerate(POSETRACK.joints) if name.startswith("left_")}
_RIGHT = {j for j, name in enumerate(POSETRACK.joints) if name.startswith("right_")}


def track_color(track_id) -> tuple[int, int, int]:
    """A stable, saturated BGR colour per track id."""
    h = (int(track_id) * 47) % 180 if track_id is not None else 0
    hsv = np.uint8([[[h, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _limb_color(a: int, b: int, base):
    if a in _LEFT and b in _LEFT:
        return (255, 128, 0)  # left limbs blue-ish
    if a in _RIGHT and b in _RIGHT:
        return (0, 128, 255)  # right limbs orange
    return base


def label_origin(box, text_size, image_size) -> tuple[int, int]:
    """Where a box's label goes (OpenCV's text origin: bottom-left of the text): just above the box, or
    just inside its top edge when that would cut the text at the top of the image; always inside the image.

    Args:
        box: (x, y, w, h) pixels. text_size: (width, height, baseline) from `cv2.getTextSize`.
        image_size: (width, height).
    """
    x, y = int(box[0]), int(box[1])
    tw, th, base = text_size
    width, height = image_size
    top = y - 4 - th  # the text's top row when placed above the box
    oy = y - 4 if top >= 0 else max(y, 0) + th + 4
    oy = min(max(oy, th + 1), max(height - base - 1, th + 1))
    ox = min(max(x + 2, 0), max(width - tw - 1, 0))
    return ox, oy


def draw_person(image, keypoints, box=None, track_id=None, threshold: float = 0.2, thickness: int | None = None):
    """Draw one person on `image` `[H, W, 3]` BGR uint8 in place.

    Args:
        keypoints: `[17, 3]` (x, y, score) in image pixels.
        box: (x, y, w, h) or None.
        track_id: colours the box and the head / torso lines.
        threshold: joints with score below this (and their limbs) are not drawn.
        thickness: line width (default from the image size).

    Returns:
        `image`.
    """
    kp = np.asarray(keypoints, np.float64)
    h, w = image.shape[:2]
    t = thickness or max(1, round(max(h, w) / 400))
    color = track_color(track_id)
    if box is not None:
        x, y, bw, bh = (int(round(v)) for v in box)
        cv2.rectangle(image, (x, y), (x + bw, y + bh), color, max(1, t - 1), cv2.LINE_AA)
        if track_id is not None:
            text, scale, lw = str(track_id), 0.4 * t + 0.2, max(1, t - 1)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, lw)
            org = label_origin((x, y, bw, bh), (tw, th, base), (w, h))
            cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, lw, cv2.LINE_AA)
    ok = (kp[:, 2] >= threshold) & np.isfinite(kp[:, :2]).all(axis=1)
    pts = np.round(np.nan_to_num(kp[:, :2])).astype(int)
    for a, b in LIMBS:
        if ok[a] and ok[b]:
            cv2.line(image, tuple(pts[a]), tuple(pts[b]), _limb_color(a, b, color), t, cv2.LINE_AA)
    for j in POSETRACK.evaluated:
        if ok[j]:
            cv2.circle(image, tuple(pts[j]), t + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(image, tuple(pts[j]), t + 1, color, 1, cv2.LINE_AA)
    return image


def draw_frame_label(image, text: str):
    """Write `text` in the top-left corner of `image` (in place)."""
    scale = max(0.4, image.shape[0] / 900)
    cv2.putText(image, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)  # fmt: skip
    return image

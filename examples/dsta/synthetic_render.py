"""Drawing for the synthetic video-pose dataset (`synthetic.py`): cluttered backgrounds, stick people,
passing occluders and the per-frame image corruptions. Everything takes an explicit
`numpy.random.Generator` and uses only deterministic OpenCV calls, so a frame depends on its seed only.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["CORRUPTIONS", "LIMBS", "background", "draw_person", "draw_occluder", "apply_corruption", "defocus",
           "limb_motion_blur", "texture"]  # fmt: skip

#: the per-frame corruptions, in the order they are applied to a frame: occluders passing, a fast limb
#: smeared by motion blur, a focus pull (the whole frame defocused), sensor noise, low light
CORRUPTIONS = ("occluder", "motion_blur", "defocus", "low_light", "noise")
_SHIFT = 4  # sub-pixel drawing: coordinates are fixed point with 4 fractional bits
_ONE = 1 << _SHIFT

# limbs as (from slot, to slot); slots are COCO / stattn.skeletons.POSETRACK
ARM_L, ARM_R = ((5, 7), (7, 9)), ((6, 8), (8, 10))
LEG_L, LEG_R = ((11, 13), (13, 15)), ((12, 14), (14, 16))
#: the limbs a fast-motion event can smear: (joint chain, the joints it blurs)
LIMBS = {"left_arm": ((5, 7, 9), (7, 9)), "right_arm": ((6, 8, 10), (8, 10)),
         "left_leg": ((11, 13, 15), (13, 15)), "right_leg": ((12, 14, 16), (14, 16))}  # fmt: skip


def _fx(p) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _color(rng, lo=20, hi=235) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def texture(rng, h: int, w: int, saturation: float = 1.0) -> np.ndarray:
    """`[h, w, 3]` uint8: a smooth colour field with grain and sometimes stripes; `saturation` in [0, 1]."""
    small = rng.uniform(0, 255, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    grain = cv2.resize(rng.normal(0, 22, (max(2, h // 3), max(2, w // 3), 3)).astype(np.float32), (w, h))
    img = img + grain
    if rng.random() < 0.5:  # stripes
        period = rng.uniform(4, 14)
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wave = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period)
        img += (rng.uniform(10, 35) * np.sign(wave))[..., None]
    if saturation < 1:
        img = saturation * img + (1 - saturation) * img.mean(axis=2, keepdims=True)
    return np.clip(img, 0, 255).astype(np.uint8)


def background(rng, height: int, width: int) -> np.ndarray:
    """A cluttered backdrop `[height, width, 3]` uint8: textured field, floor, shapes and lines."""
    img = texture(rng, height, width, saturation=rng.uniform(0.25, 0.6)).astype(np.float32)
    horizon = int(height * rng.uniform(0.3, 0.55))
    img[horizon:] = 0.55 * img[horizon:] + 0.45 * np.float32(_color(rng, 40, 200))  # floor
    img = np.clip(img, 0, 255).astype(np.uint8)
    scale = min(height, width)
    for _ in range(int(rng.integers(10, 24))):
        kind, col = rng.integers(0, 4), _color(rng)
        p, q = rng.uniform(0, 1, 2) * (width, height), rng.uniform(0, 1, 2) * (width, height)
        if kind == 0:  # box (a window, a crate)
            wh = rng.uniform(0.05, 0.3, 2) * scale
            cv2.rectangle(img, _fx(p), _fx(p + wh), col, -1 if rng.random() < 0.6 else 2, cv2.LINE_AA, _SHIFT)
        elif kind == 1:  # disc / ring
            r = int(rng.uniform(0.02, 0.12) * scale * _ONE)
            cv2.circle(img, _fx(p), r, col, -1 if rng.random() < 0.5 else 2, cv2.LINE_AA, _SHIFT)
        else:  # lines and limb-like polylines: clutter that looks like body parts
            t = int(rng.integers(1, max(2, scale // 18)))
            pts = [p, q] if kind == 2 else [p, p + rng.normal(0, 0.12, 2) * scale, q]
            for a, b in zip(pts[:-1], pts[1:]):
                cv2.line(img, _fx(a), _fx(b), col, t, cv2.LINE_AA, _SHIFT)
    return img


def person_style(rng, height: float) -> dict:
    """Colours and thicknesses of one person (clothes, skin, hair)."""
    skin = (np.array([60, 110, 170]) * rng.uniform(0.55, 1.35)).clip(20, 255)
    return {"shirt": _color(rng), "pants": _color(rng), "skin": tuple(int(c) for c in skin),
            "hair": _color(rng, 0, 120), "limb": max(2, int(round(0.055 * height))),
            "torso": max(3, int(round(0.12 * height))), "head": 0.07 * height}  # fmt: skip


def _segments(img, label, pts, segs, col, thick, lab):
    for a, b in segs:
        cv2.line(img, _fx(pts[a]), _fx(pts[b]), col, thick, cv2.LINE_AA, _SHIFT)
        if label is not None:
            cv2.line(label, _fx(pts[a]), _fx(pts[b]), lab, thick, cv2.LINE_8, _SHIFT)


def draw_person(img, label, pts, style, yaw: float, lab: int = 0) -> None:
    """Draw a person (joints `pts` `[17, 2]`, facing `yaw`) in place; write `lab` into `label` where drawn.

    The limbs of the far side of the body are drawn first, then torso and head, then the near side.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    far_left = s > 0  # facing right in profile: the person's left side is away from the camera
    arms = [ARM_L, ARM_R] if far_left else [ARM_R, ARM_L]
    legs = [LEG_L, LEG_R] if far_left else [LEG_R, LEG_L]
    sleeve = tuple(int(v * 0.8) for v in style["shirt"])
    _segments(img, label, pts, legs[0], style["pants"], style["limb"], lab)
    _segments(img, label, pts, arms[0], sleeve, style["limb"], lab)
    # torso: the shoulder-hip quadrilateral plus a thick spine for profile views
    quad = np.array([_fx(pts[k]) for k in (5, 6, 12, 11)], np.int32)
    cv2.fillPoly(img, [quad], style["shirt"], cv2.LINE_AA, _SHIFT)
    mid_sh, mid_hip = (pts[5] + pts[6]) / 2, (pts[11] + pts[12]) / 2
    cv2.line(img, _fx(mid_sh), _fx(mid_hip), style["shirt"], style["torso"], cv2.LINE_AA, _SHIFT)
    cv2.line(img, _fx(pts[1]), _fx(mid_sh), style["skin"], style["limb"], cv2.LINE_AA, _SHIFT)  # neck
    if label is not None:
        cv2.fillPoly(label, [quad], lab, cv2.LINE_8, _SHIFT)
        cv2.line(label, _fx(mid_sh), _fx(mid_hip), lab, style["torso"], cv2.LINE_8, _SHIFT)
    # head: a disc centred between head_bottom and head_top; hair on top (everywhere when seen from behind)
    centre, r = (pts[1] + pts[2]) / 2, style["head"]
    axes = (int(r * 0.9 * _ONE), int(r * _ONE))
    cv2.ellipse(img, _fx(centre), axes, 0, 0, 360, style["hair"] if c < -0.3 else style["skin"], -1, cv2.LINE_AA,
                _SHIFT)  # fmt: skip
    if c >= -0.3:
        tilt = np.degrees(np.arctan2(pts[2][0] - pts[1][0], pts[1][1] - pts[2][1]))
        cv2.ellipse(img, _fx(centre), axes, tilt - 90 - 60 * s, -100, 100, style["hair"], -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(img, _fx(pts[0]), int(max(1.0, 0.22 * r) * _ONE), tuple(int(v * 0.6) for v in style["skin"]), -1,
                   cv2.LINE_AA, _SHIFT)  # fmt: skip
    if label is not None:
        cv2.ellipse(label, _fx(centre), axes, 0, 0, 360, lab, -1, cv2.LINE_8, _SHIFT)
    _segments(img, label, pts, legs[1], style["pants"], style["limb"], lab)
    _segments(img, label, pts, arms[1], sleeve, style["limb"], lab)
    for k in (9, 10):  # hands
        cv2.circle(img, _fx(pts[k]), int(style["limb"] * 0.6 * _ONE), style["skin"], -1, cv2.LINE_AA, _SHIFT)


def draw_occluder(img, label, shape: dict) -> None:
    """Paste a textured box / ellipse (`shape`: centre, size, angle, kind, texture) over the frame."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    (cx, cy), (sw, sh) = shape["centre"], shape["size"]
    if shape["kind"] == "box":
        box = cv2.boxPoints(((float(cx), float(cy)), (float(sw), float(sh)), float(shape["angle"])))
        cv2.fillPoly(mask, [np.round(box * _ONE).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
    else:
        cv2.ellipse(mask, _fx((cx, cy)), (int(sw / 2 * _ONE), int(sh / 2 * _ONE)), float(shape["angle"]), 0, 360, 255,
                    -1, cv2.LINE_AA, _SHIFT)  # fmt: skip
    tex = shape["texture"]
    tex = cv2.resize(tex, (w, h)) if tex.shape[:2] != (h, w) else tex
    a = (mask.astype(np.float32) / 255.0)[..., None]
    img[:] = (img * (1 - a) + tex * a + 0.5).astype(np.uint8)
    if label is not None:
        label[mask > 127] = 255


def defocus(img: np.ndarray, sigma: float) -> np.ndarray:
    """The whole frame out of focus: a Gaussian blur of `sigma` pixels (a focus pull's frame)."""
    return cv2.GaussianBlur(img, (0, 0), float(sigma)) if sigma > 0 else img


def _line_kernel(length: float, angle: float) -> np.ndarray:
    n = int(np.ceil(length)) | 1
    k = np.zeros((n, n), np.float32)
    d = (length - 1) / 2 * np.array([np.cos(angle), np.sin(angle)])
    c = (n - 1) / 2
    cv2.line(k, _fx((c - d[0], c - d[1])), _fx((c + d[0], c + d[1])), 1.0, 1, cv2.LINE_AA, _SHIFT)
    return k / k.sum()


def limb_motion_blur(img: np.ndarray, pts, chain, length: float, angle: float, thickness: float) -> np.ndarray:
    """A fast limb: the region around the joint `chain` (indices into `pts` `[17, 2]`) smeared by a
    `length`-pixel streak at `angle` (radians), the rest of the frame untouched. Returns a new image."""
    mask = np.zeros(img.shape[:2], np.uint8)
    for a, b in zip(chain[:-1], chain[1:]):
        cv2.line(mask, _fx(pts[a]), _fx(pts[b]), 255, max(1, int(round(thickness + length))), cv2.LINE_8, _SHIFT)
    a = cv2.GaussianBlur(mask, (0, 0), max(1.0, length / 6)).astype(np.float32)[..., None] / 255.0
    streak = cv2.filter2D(img, -1, _line_kernel(length, angle), borderType=cv2.BORDER_REFLECT)
    return (img * (1 - a) + streak * a + 0.5).astype(np.uint8)


def apply_corruption(img: np.ndarray, kind: str, strength: float, rng) -> np.ndarray:
    """A whole-frame corruption (`low_light`, `defocus`, `motion_blur`, `noise`) at `strength` in [0, 1]."""
    if kind == "low_light":
        x = img.astype(np.float32) / 255.0
        x = np.power(x, 1.3 + 1.2 * strength) * (0.65 - 0.35 * strength)
        x = x + rng.normal(0, 0.01 + 0.03 * strength, x.shape).astype(np.float32)  # sensor noise in the dark
        return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if kind == "defocus":
        sigma = 1.2 + 3.0 * strength
        return cv2.GaussianBlur(img, (0, 0), sigma)
    if kind == "motion_blur":
        n = int(5 + 12 * strength) | 1
        k = np.zeros((n, n), np.float32)
        ang = rng.uniform(0, np.pi)
        d = (n - 1) / 2 * np.array([np.cos(ang), np.sin(ang)])
        cv2.line(k, _fx((n - 1) / 2 - d), _fx((n - 1) / 2 + d), 1.0, 1, cv2.LINE_AA, _SHIFT)
        return cv2.filter2D(img, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)
    if kind == "noise":
        x = img.astype(np.float32) + rng.normal(0, 10 + 30 * strength, img.shape).astype(np.float32)
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown corruption {kind!r}; expected low_light, defocus, motion_blur or noise")

"""Person crops for DSTA: box -> centre/scale, one affine crop for every frame of a clip, training
augmentation, regression targets, and the inverse map from crop to image coordinates.

Conventions (docs/official_code.md §4, as in the DSTA / DCPose / HRNet code):

- `center` `[2]` pixels, `scale` `[2]` = box (w, h) / 200, enlarged to aspect w/h = 0.75 and by 1.25;
- the crop maps a box of width `scale[0] * 200` around `center`, rotated by `rotation` degrees, onto
  `output_size = (W, H)` = (192, 256) pixels; a horizontal flip mirrors the crop about the box centre
  (the same as DSTA's flip of image, joints (x -> width - 1 - x) and centre before cropping);
- targets are crop coordinates divided by (W, H), i.e. in [0, 1] inside the crop.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

__all__ = [
    "PIXEL_STD", "IMAGENET_MEAN", "IMAGENET_STD", "AugmentConfig", "box_to_center_scale", "affine_matrix",
    "apply_affine", "warp", "flip_joints", "half_body_box", "sample_augmentation", "joint_targets",
    "normalize_image", "crop_to_image",
]  # fmt: skip

PIXEL_STD = 200.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def box_to_center_scale(box, aspect_ratio: float = 0.75, enlarge: float = 1.25):
    """`box` (x, y, w, h) -> `center` `[2]`, `scale` `[2]` (float32, in units of 200 px).

    The short side is grown to aspect w/h = `aspect_ratio`, then both sides by `enlarge`.
    """
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * enlarge
    return center, scale


def affine_matrix(center, scale, rotation: float, output_size, *, flip: bool = False,
                  inverse: bool = False) -> np.ndarray:  # fmt: skip
    """`[2, 3]` float64 affine from image pixels to crop pixels (or back with `inverse`).

    crop = s * R(-rotation) * M * (p - center) + (W / 2, H / 2), with s = W / (scale[0] * 200) and
    M = diag(-1, 1) when `flip` else the identity.
    """
    out_w, out_h = output_size
    if not 0 < float(scale[0]) < np.inf or not np.isfinite(np.asarray(center, np.float64)).all():
        raise ValueError(f"a crop needs a positive scale and a finite centre, got scale {scale}, centre {center}")
    s = out_w / (float(scale[0]) * PIXEL_STD)
    r = np.deg2rad(rotation)
    cs, sn = np.cos(r), np.sin(r)
    lin = s * np.array([[cs, sn], [-sn, cs]]) @ np.diag([-1.0 if flip else 1.0, 1.0])
    c = np.asarray(center, dtype=np.float64)
    t = np.array([out_w * 0.5, out_h * 0.5]) - lin @ c
    if inverse:
        inv = np.linalg.inv(lin)
        return np.concatenate([inv, (-inv @ t)[:, None]], axis=1)
    return np.concatenate([lin, t[:, None]], axis=1)


def apply_affine(points, matrix) -> np.ndarray:
    """`points` `[..., 2]` through a `[2, 3]` affine -> `[..., 2]` float64."""
    p = np.asarray(points, dtype=np.float64)
    return p @ matrix[:, :2].T + matrix[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, output_size) -> np.ndarray:
    """Crop `image` `[H, W, C]` with `cv2.warpAffine` (bilinear, zero border) to `[out_h, out_w, C]`."""
    w, h = (int(v) for v in output_size)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def flip_joints(joints, flip_pairs) -> np.ndarray:
    """Swap the left/right slots of `joints` `[..., 17, C]` (the x mirror is in the affine)."""
    out = np.array(joints, copy=True)
    for a, b in flip_pairs:
        out[..., [a, b], :] = out[..., [b, a], :]
    return out


@dataclass
class AugmentConfig:
    """Training augmentation (DSTA PoseTrack17 config): half body, scale, rotation, flip."""

    scale_factor: float = 0.35  # s *= clip(1 + 0.35 N(0, 1), 0.65, 1.35)
    rotation_factor: float = 45.0  # clip(45 N(0, 1), -90, 90) degrees ...
    rotation_prob: float = 0.6  # ... with probability 0.6, else 0
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8  # needs more than this many visible joints
    half_body_enlarge: float = 1.5
    upper_body_slots: tuple = tuple(range(11))  # COCO slots 0..10 (head, arms); 11..16 are the legs


def half_body_box(joints, visible, rng: np.random.Generator, cfg: AugmentConfig, aspect_ratio: float = 0.75):
    """The upper- or lower-body box of a person (HRNet / DSTA rule), or None.

    Upper body when N(0, 1) < 0.5 (about 69 %) and it has > 2 visible joints, else the lower body if
    it has > 2, else the upper. Centre = mean of the chosen joints, size = their extent, aspect-fixed,
    times `cfg.half_body_enlarge`. None too when the chosen joints coincide (no extent to crop).
    """
    vis = np.asarray(visible, bool)
    upper = np.zeros(len(vis), bool)
    upper[list(cfg.upper_body_slots)] = True
    up, low = np.nonzero(vis & upper)[0], np.nonzero(vis & ~upper)[0]
    chosen = up if (rng.standard_normal() < 0.5 and len(up) > 2) else (low if len(low) > 2 else up)
    if len(chosen) < 2:
        return None
    pts = np.asarray(joints, dtype=np.float64)[chosen, :2]
    center = pts.mean(axis=0).astype(np.float32)
    w, h = pts.max(axis=0) - pts.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    if not (w > 0 and h > 0):  # coinciding (or non-finite) joints: keep the person's own box
        return None
    return center, np.array([w, h], dtype=np.float32) / PIXEL_STD * cfg.half_body_enlarge


def sample_augmentation(center, scale, joints, visible, rng: np.random.Generator, cfg: AugmentConfig):
    """Draw one clip's augmentation (applied identically to all its frames).

    Returns:
        center `[2]`, scale `[2]`, rotation (degrees), flip (bool).
    """
    center, scale = np.asarray(center, np.float32), np.asarray(scale, np.float32)
    if np.sum(visible) > cfg.half_body_min_joints and rng.random() < cfg.half_body_prob:
        hb = half_body_box(joints, visible, rng, cfg)
        if hb is not None:
            center, scale = hb
    sf, rf = cfg.scale_factor, cfg.rotation_factor
    scale = scale * np.float32(np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf))
    rotation = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf)) if rng.random() <= cfg.rotation_prob else 0.0
    flip = bool(rng.random() <= cfg.flip_prob)
    return center, scale, rotation, flip


def joint_targets(joints_crop, visible, output_size, joint_weights):
    """Regression targets and their weights.

    Args:
        joints_crop: `[17, 2]` joints in crop pixels.
        visible: `[17]` bool annotated and visible.
        output_size: (W, H) of the crop.
        joint_weights: `[17]` per-joint loss weight (1 / 1.2 elbows, knees / 1.5 wrists, ankles).

    Returns:
        target `[17, 2]` float32 = joints / (W, H) (in [0, 1] inside the crop), weight `[17]` float32
        = visible x inside [0, W - 1] x [0, H - 1] x joint weight.
    """
    w, h = output_size
    j = np.asarray(joints_crop, dtype=np.float64)
    inside = (j[:, 0] >= 0) & (j[:, 0] <= w - 1) & (j[:, 1] >= 0) & (j[:, 1] <= h - 1)
    weight = (np.asarray(visible, bool) & inside).astype(np.float32) * np.asarray(joint_weights, np.float32)
    target = (j / np.array([w, h], dtype=np.float64)).astype(np.float32)
    return target, weight


def normalize_image(image_rgb: np.ndarray) -> torch.Tensor:
    """`[H, W, 3]` uint8 RGB -> `[3, H, W]` float32, /255 then ImageNet mean / std."""
    x = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def crop_to_image(coords, center, scale, output_size, rotation: float = 0.0, flip: bool = False) -> np.ndarray:
    """Map predictions from crop space back to image pixels.

    Args:
        coords: `[..., 17, 2]` in [0, 1] crop units (the model's output).
        center, scale, rotation, flip: the crop's parameters (`meta` of the dataset item); `[N, 2]`
            centre / scale (and `[N]` rotation / flip) for a batch of crops, coords then `[N, 17, 2]`.
        output_size: (W, H) of the crop.

    Returns:
        `[..., 17, 2]` float64 image pixels. (A flipped crop's left/right slots are not swapped back here.)
    """
    c = np.asarray(center, dtype=np.float64)
    if c.ndim == 2:  # one crop per person: coords `[N, 17, 2]`, center / scale `[N, 2]`
        rot = np.broadcast_to(np.asarray(rotation, dtype=np.float64), (len(c),))
        fl = np.broadcast_to(np.asarray(flip, dtype=bool), (len(c),))
        return np.stack([crop_to_image(coords[i], c[i], scale[i], output_size, rot[i], fl[i]) for i in range(len(c))])
    w, h = output_size
    px = np.asarray(coords, dtype=np.float64) * np.array([w, h], dtype=np.float64)
    return apply_affine(px, affine_matrix(c, scale, rotation, output_size, flip=flip, inverse=True))

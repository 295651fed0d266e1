"""PoseTrack clips for DSTA: a torch `Dataset` of person crops over a key frame and its neighbours.

    videos = posetrack_io.load_annotations("data/posetrack18/annotations/val")
    ds = PoseTrackClips(videos, "data/posetrack18", offsets=(-2, -1, 1, 2), train=False,
                        detections=posetrack_io.load_detections("boxes.json"), score_threshold=0.2)
    loader = DataLoader(ds, batch_size=64, collate_fn=collate_clips)

An item is one person in one key frame:

- `frames` `[T, 3, H, W]` float32 (ImageNet-normalised RGB), frame `key_index` is the key frame;
  neighbours are key + offsets (default -1, +1; the paper's -2, -1, +1, +2), clamped to the sequence.
  When a neighbour's image file does not exist, the nearest existing frame of the window stands in
  (ties: the one nearer the key frame); `meta["substituted"]` and `stats["substituted_frames"]` count it;
- `target` `[17, 2]` in [0, 1] of the crop, `target_weight` `[17]` = visible x inside x joint weight
  (zeros for detection boxes, which carry no pose);
- `meta`: image_id, file_name, sequence, frame_index, frame_files, center, scale, rotation, flip,
  box_score, track_id, substituted.

All frames of a clip get the key frame's person box and the same affine crop. An image that cannot
be read is an `ImageError` naming the file; with `on_unreadable="skip"` (default when training) the
item comes back as None, is counted in `stats["unreadable_images"]`, and `collate_clips` drops it
(`load` always raises: wrappers that want the message catch it and return `{"unreadable": message}`,
which `collate_clips` counts and lists). `stats` counts in the process that loads: with DataLoader
workers, sum `meta["substituted"]` and the collated `skipped` instead.

Persons that cannot become a clip are dropped when the dataset is built, never silently: crowd
annotations, persons without a visible joint (training), without a box, with a non-finite, zero-size or
outside-the-image box; `stats["dropped_persons"]` counts them by reason and `drop_summary()` says it in
one line (likewise `stats["dropped_detections"]` for unusable detection boxes).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from dsta.posetrack_io import Video
from stattn.skeletons import POSETRACK
from torch.utils.data import Dataset
from dsta.transforms import (
    AugmentConfig, affine_matrix, apply_affine, box_to_center_scale, flip_joints, joint_targets, normalize_image,
    sample_augmentation, warp,
)  # fmt: skip

__all__ = ["ImageError", "PoseTrackClips", "collate_clips", "clip_frame_numbers", "frame_file", "read_image"]


class ImageError(RuntimeError):
    """An image file that is missing or cannot be decoded; the message names it."""


def read_image(path) -> np.ndarray:
    """`[H, W, 3]` uint8 RGB, or `ImageError` naming the file."""
    path = str(path)
    if not os.path.isfile(path):
        raise ImageError(f"{path}: image not found")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"{path}: cannot decode image (truncated, corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def clip_frame_numbers(key: int, offsets, first: int, last: int | None):
    """Frame numbers of a clip, in time order, clamped to [first, last]; and the key frame's position.

    >>> clip_frame_numbers(0, (-2, -1, 1, 2), 0, 140)
    ([0, 0, 0, 1, 2], 2)
    """
    rel = sorted(set(int(o) for o in offsets) | {0})
    nums = [max(key + o, first) for o in rel]
    if last is not None:
        nums = [min(n, last) for n in nums]
    return nums, rel.index(0)


def frame_file(key_file: str, number: int) -> str:
    """The file name of frame `number` of the key frame's sequence (same folder, digits and suffix)."""
    head, base = os.path.split(key_file)
    stem, dot, ext = base.partition(".")
    digits = stem.split("_")[0]
    return os.path.join(head, f"{number:0{len(digits)}d}{stem[len(digits):]}{dot}{ext}")


@dataclass
class _Item:
    video: int
    frame: int
    bbox: tuple  # x, y, w, h
    keypoints: np.ndarray | None  # `[17, 3]`
    visible: np.ndarray  # `[17]` bool
    box_score: float
    track_id: object


def _keypoint_box(person):
    """PT17 persons have no box: poseval's rule, centre of the joints' extent +- 0.65 x extent."""
    pts = person.keypoints[person.present & np.isfinite(person.keypoints[:, :2]).all(axis=1), :2]
    if len(pts) < 2:
        return None
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext, mid = hi - lo, (hi + lo) / 2
    return (mid[0] - 0.65 * ext[0], mid[1] - 0.65 * ext[1], 1.3 * ext[0], 1.3 * ext[1])


def _clip_box(box, width, height):
    """DSTA's `clean_bbox`: clip (x, y, w, h) to the image; None when nothing is left."""
    x, y, w, h = box
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1.0)), min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 < x1 or y2 < y1 or (x2 - x1) * (y2 - y1) <= 0:
        return None
    return (x1, y1, x2 - x1, y2 - y1)


class PoseTrackClips(Dataset):
    """Person clips from PoseTrack videos (see the module doc).

    Args:
        videos: from `posetrack_io.load_annotations`.
        root: dataset root that the annotation `file_name`s are relative to.
        offsets: auxiliary frame offsets relative to the key frame (0 is implicit).
        image_size: crop (W, H), default (192, 256).
        train: GT persons with visible joints, augmented; else no augmentation.
        detections: evaluation boxes from `posetrack_io.load_detections`; None uses GT boxes.
        score_threshold: keep detections with score >= this.
        augment: training augmentation (default `AugmentConfig()`).
        on_unreadable: "skip" (count and return None) or "raise"; default "skip" when training.
        aspect_ratio, enlarge: box -> centre / scale: aspect w / h (default W / H of `image_size`, 0.75)
            and enlargement (1.25).
    """

    def __init__(self, videos: list[Video], root, *, offsets=(-1, 1), image_size=(192, 256), train: bool = False,
                 detections: list[dict] | None = None, score_threshold: float = 0.0,
                 augment: AugmentConfig | None = None, on_unreadable: str | None = None,
                 aspect_ratio: float | None = None, enlarge: float = 1.25):  # fmt: skip
        if on_unreadable not in (None, "skip", "raise"):
            raise ValueError(f"on_unreadable must be 'skip' or 'raise', got {on_unreadable!r}")
        if any(int(o) == 0 for o in offsets):
            raise ValueError(f"offsets {tuple(offsets)} must not contain 0 (the key frame is always in the clip)")
        if train and detections is not None:
            raise ValueError("training uses GT boxes; pass detections only for evaluation")
        self.videos, self.root = list(videos), Path(root)
        self.offsets, self.image_size, self.train = tuple(int(o) for o in offsets), tuple(image_size), train
        self.augment = augment or AugmentConfig()
        self.on_unreadable = on_unreadable or ("skip" if train else "raise")
        self.aspect_ratio = aspect_ratio or self.image_size[0] / self.image_size[1]
        self.enlarge = enlarge
        self.joint_weights = np.asarray(POSETRACK.joint_weights, np.float32)
        self.stats = {"substituted_frames": 0, "unreadable_images": 0, "unmatched_detections": 0, "persons": 0,
                      "dropped_persons": Counter(), "detections": 0, "dropped_detections": Counter()}  # fmt: skip
        self._exists: dict[str, bool] = {}
        self.items = self._gt_items() if detections is None else self._detection_items(detections, score_threshold)

    # ---------------------------------------------------------------------------------- items
    def _gt_items(self) -> list[_Item]:
        items, dropped = [], self.stats["dropped_persons"]
        for vi, v in enumerate(self.videos):
            for fi, fr in enumerate(v.frames):
                for p in fr.persons:
                    self.stats["persons"] += 1
                    finite = np.isfinite(p.keypoints[:, :2]).all(axis=1)
                    visible = p.present & (p.keypoints[:, 2] > 0) & finite
                    box = p.bbox if p.bbox is not None else _keypoint_box(p)
                    reason = _box_problem(box, fr.width, fr.height)
                    if p.iscrowd:
                        reason = "crowd"
                    elif self.train and not visible.any():
                        reason = "no visible joint"
                    if reason:
                        dropped[reason] += 1
                        continue
                    if fr.width and fr.height:
                        box = _clip_box(box, fr.width, fr.height)
                    kp = np.where(finite[:, None], p.keypoints, 0.0)
                    items.append(_Item(vi, fi, tuple(float(b) for b in box), kp, visible, 1.0, p.track_id))
        return items

    def drop_summary(self) -> str:
        """One line on the persons (and detections) that could not become clips; "" when none."""
        out = []
        for what, total, dropped in (("persons", "persons", "dropped_persons"),
                                     ("detection boxes", "detections", "dropped_detections")):  # fmt: skip
            n = sum(self.stats[dropped].values())
            if n:
                why = ", ".join(f"{c} {r}" for r, c in self.stats[dropped].most_common())
                out.append(f"dropped {n} of {self.stats[total]} {what} ({why})")
        return "; ".join(out)

    def _detection_items(self, detections, threshold) -> list[_Item]:
        by_id, by_name = {}, {}
        for vi, v in enumerate(self.videos):
            for fi, fr in enumerate(v.frames):
                if fr.image_id is not None and v.fmt != "pt17":  # PT17 ids (imgnum) repeat across videos
                    by_id[fr.image_id] = (vi, fi)
                by_name[fr.file_name] = by_name[_short(fr.file_name)] = (vi, fi)
        items, none = [], np.zeros(POSETRACK.num_joints, bool)
        for det in detections:
            if not det["score"] >= threshold:
                continue
            self.stats["detections"] += 1
            loc = by_id.get(det.get("image_id")) or by_name.get(det.get("image_name", "")) or by_name.get(
                _short(det.get("image_name", ""))
            )
            if loc is None:
                self.stats["unmatched_detections"] += 1
                continue
            reason = _box_problem(det["bbox"], None, None)
            if reason:
                self.stats["dropped_detections"][reason] += 1
                continue
            box = tuple(float(b) for b in det["bbox"])
            items.append(_Item(loc[0], loc[1], box, None, none, float(det["score"]), None))
        items.sort(key=lambda it: (it.video, it.frame))  # stable: detection order inside a frame
        return items

    def __len__(self) -> int:
        return len(self.items)

    # ---------------------------------------------------------------------------------- frames
    def _file_exists(self, name: str) -> bool:
        if name not in self._exists:
            self._exists[name] = (self.root / name).is_file()
        return self._exists[name]

    def clip_files(self, video: Video, frame_index: int):
        """File names of the clip of `video.frames[frame_index]`, the key position and the number of
        neighbours replaced by the nearest existing frame of the window."""
        key = video.frames[frame_index]
        key_num = key.index if key.index is not None else frame_index + video.first_frame
        last = video.first_frame + video.nframes - 1 if video.nframes else None
        nums, k = clip_frame_numbers(key_num, self.offsets, video.first_frame, last)
        names = [key.file_name if n == key_num else frame_file(key.file_name, n) for n in nums]
        exists = [i == k or self._file_exists(nm) for i, nm in enumerate(names)]
        out, substituted = list(names), 0
        for i, ok in enumerate(exists):
            if not ok:
                cands = [j for j, e in enumerate(exists) if e]
                j = min(cands, key=lambda j: (abs(nums[j] - nums[i]), abs(nums[j] - key_num)))
                out[i], substituted = names[j], substituted + 1
        return out, k, substituted

    # ---------------------------------------------------------------------------------- items
    def __getitem__(self, idx: int):
        try:
            return self.load(idx)
        except ImageError:
            if self.on_unreadable == "raise":
                raise
            self.stats["unreadable_images"] += 1
            return None

    def load(self, idx: int) -> dict:
        """Item `idx` (see the module doc); an unreadable image raises `ImageError` whatever `on_unreadable`."""
        it = self.items[idx]
        v = self.videos[it.video]
        fr = v.frames[it.frame]
        files, key_index, substituted = self.clip_files(v, it.frame)
        decoded = {name: read_image(self.root / name) for name in dict.fromkeys(files)}
        self.stats["substituted_frames"] += substituted
        h_img, w_img = decoded[files[key_index]].shape[:2]
        box = it.bbox
        if it.keypoints is not None and not (fr.width and fr.height):  # GT box, image size unknown at init
            box = _clip_box(box, w_img, h_img) or box
        center, scale = box_to_center_scale(box, self.aspect_ratio, self.enlarge)
        kp = it.keypoints if it.keypoints is not None else np.zeros((POSETRACK.num_joints, 3))
        visible = it.visible.copy()
        rotation, flip = 0.0, False
        if self.train:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
            center, scale, rotation, flip = sample_augmentation(center, scale, kp, visible, rng, self.augment)
        m = affine_matrix(center, scale, rotation, self.image_size, flip=flip)
        frames = torch.stack([normalize_image(warp(decoded[f], m, self.image_size)) for f in files])
        joints = apply_affine(kp[:, :2], m)
        if flip:
            joints = flip_joints(joints, POSETRACK.flip_pairs)
            visible = flip_joints(visible[:, None], POSETRACK.flip_pairs)[:, 0]
        target, weight = joint_targets(joints, visible, self.image_size, self.joint_weights)
        meta = {
            "image_id": fr.image_id, "file_name": fr.file_name, "sequence": v.name, "frame_index": fr.index,
            "frame_files": files, "center": center.astype(np.float32), "scale": np.asarray(scale, np.float32),
            "rotation": rotation, "flip": flip, "box_score": it.box_score, "track_id": it.track_id,
            "substituted": substituted,
        }  # fmt: skip
        return {"frames": frames, "key_index": key_index, "target": torch.from_numpy(target),
                "target_weight": torch.from_numpy(weight), "meta": meta}  # fmt: skip


def _box_problem(box, width, height) -> str | None:
    """Why `box` (x, y, w, h) cannot give a crop in a `width` x `height` image (size unknown: None), or None."""
    if box is None:
        return "no box (fewer than 2 joints)"
    if not all(math.isfinite(float(b)) for b in box):
        return "non-finite box"
    if box[2] <= 0 or box[3] <= 0:
        return "zero-size box"
    if width and height and _clip_box(box, width, height) is None:
        return "box outside the image"
    return None


def _short(name: str) -> str:
    """`seq_folder/frame.jpg`: matches detections whose image_name uses another root prefix."""
    return "/".join(Path(name).parts[-2:]) if name else ""


def collate_clips(batch):
    """Stack items, dropping skipped ones (None, or `{"unreadable": message}`).

    Returns:
        dict with `frames` `[B, T, 3, H, W]`, `target` `[B, 17, 2]`, `target_weight` `[B, 17]`,
        `key_index` (int, shared), `meta` (list of B dicts), `skipped` (int) and `unreadable` (the
        messages of the skipped items that carry one). When every item was skipped: `meta` is empty
        and the tensors and `key_index` are None.
    """
    items = [b for b in batch if b is not None and "unreadable" not in b]
    unreadable = [b["unreadable"] for b in batch if b is not None and "unreadable" in b]
    if not items:
        return {"frames": None, "target": None, "target_weight": None, "key_index": None, "meta": [],
                "skipped": len(batch), "unreadable": unreadable}  # fmt: skip
    keys = {b["key_index"] for b in items}
    if len(keys) != 1:
        raise ValueError(f"items with different key positions {sorted(keys)} cannot share a batch")
    return {
        "frames": torch.stack([b["frames"] for b in items]),
        "target": torch.stack([b["target"] for b in items]),
        "target_weight": torch.stack([b["target_weight"] for b in items]),
        "key_index": keys.pop(),
        "meta": [b["meta"] for b in items],
        "skipped": len(batch) - len(items),
        "unreadable": unreadable,
    }

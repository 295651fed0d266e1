"""Small generated PoseTrack data for the example's tests: in-memory persons / videos and PT18 files
(multi-frame sequences with images) written to a temporary folder."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from dsta import posetrack_io as pio

EVAL_SLOTS = [s for s in range(17) if s not in (3, 4)]


def person(joints: dict, scores=None, head=(0.0, 0.0, 10.0, 0.0), track_id=None, bbox=None) -> pio.Person:
    """A person with `joints` {slot: (x, y)}; `scores` {slot: s} or a number for all; head box x1 y1 x2 y2.

    The default head box has diagonal 10 -> head size 6 -> match radius 3 px.
    """
    kp = np.zeros((17, 3))
    for s, (x, y) in joints.items():
        kp[s] = (x, y, 1)
    p = pio.Person.from_arrays(kp, None, head_box=tuple(head), track_id=track_id, bbox=bbox)
    p.present = np.zeros(17, bool)
    p.present[list(joints)] = True
    if scores is not None:
        for s in joints:
            p.scores[s] = scores if np.isscalar(scores) else scores[s]
            p.has_score[s] = True
    return p


def video(frames, name="000001_mpii_test", regions=None) -> pio.Video:
    """`frames`: list of person lists; `regions`: {frame index: [polygon [K, 2], ...]}."""
    regions = regions or {}
    fr = [pio.Frame(f"images/val/{name}/{t:06d}.jpg", t, t, True, list(ps),
                    [np.asarray(r, float) for r in regions.get(t, [])]) for t, ps in enumerate(frames)]  # fmt: skip
    return pio.Video(name, fr, "<synthetic>", "pt18", len(frames), 0)


def random_pose(rng, center, size=40.0) -> dict:
    return {s: tuple(np.asarray(center) + rng.uniform(-size, size, 2)) for s in EVAL_SLOTS}


def pt18_doc(name: str, frames: list[list[dict]], *, nframes=None, unlabeled=(), regions=None, width=320,
             height=240) -> dict:  # fmt: skip
    """A PoseTrack18 per-video document. `frames[t]` lists persons as dicts with `keypoints` `[17, 3]`,
    optional `head` (x, y, w, h), `bbox`, `scores`, `track_id`."""
    seq_num = int(name.split("_")[0])
    images, anns = [], []
    for t, persons in enumerate(frames):
        image_id = 10000000000 + seq_num * 10000 + t
        im = {"file_name": f"images/val/{name}/{t:06d}.jpg", "id": image_id, "frame_id": image_id,
              "vid_id": name[:6], "nframes": nframes or len(frames), "is_labeled": t not in unlabeled,
              "width": width, "height": height}  # fmt: skip
        if regions and t in regions:
            im["ignore_regions_x"] = [[float(x) for x, _ in poly] for poly in regions[t]]
            im["ignore_regions_y"] = [[float(y) for _, y in poly] for poly in regions[t]]
        images.append(im)
        for k, p in enumerate(persons):
            kp = np.asarray(p["keypoints"], float)
            head = p.get("head", (kp[2, 0] - 10, kp[2, 1] - 10, 20, 20))
            ann = {"image_id": image_id, "id": image_id * 100 + k, "category_id": 1, "track_id": p.get("track_id", k),
                   "keypoints": kp.reshape(-1).tolist(), "scores": list(p.get("scores", [])),
                   "bbox_head": list(head), "iscrowd": False}  # fmt: skip
            if "bbox" in p:
                ann["bbox"] = list(p["bbox"])
            anns.append(ann)
    cat = {"supercategory": "person", "id": 1, "name": "person", "keypoints": list(pio.POSETRACK.joints)}
    return {"images": images, "annotations": anns, "categories": [cat]}


def random_sequence(rng, name, n_frames, n_persons, *, unlabeled=(), width=320, height=240) -> dict:
    """A PT18 document with `n_persons` tracked people drifting over `n_frames` frames."""
    starts = rng.uniform([60, 60], [width - 60, height - 60], size=(n_persons, 2))
    offsets = rng.uniform(-30, 30, size=(n_persons, 17, 2))
    frames = []
    for t in range(n_frames):
        persons = []
        if t not in unlabeled:
            for k in range(n_persons):
                kp = np.zeros((17, 3))
                kp[:, :2] = starts[k] + offsets[k] + 2.0 * t
                kp[:, 2] = rng.random(17) < 0.85
                kp[[3, 4]] = 0
                kp[kp[:, 2] == 0] = 0
                lo, hi = kp[kp[:, 2] > 0, :2].min(0), kp[kp[:, 2] > 0, :2].max(0)
                persons.append({"keypoints": kp, "track_id": k, "bbox": (*lo, *(hi - lo)),
                                "head": (kp[2, 0] - 8, kp[2, 1] - 8, 16 + rng.uniform(0, 10), 16)})  # fmt: skip
        frames.append(persons)
    return pt18_doc(name, frames, unlabeled=unlabeled, width=width, height=height)


def write_doc(folder: Path, name: str, doc: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def write_frames(root: Path, doc: dict, missing=(), width=320, height=240) -> None:
    """One JPEG per listed image (skipping frame numbers in `missing`), each with its frame number
    encoded in the blue channel so tests can tell which file was read."""
    for im in doc["images"]:
        t = int(Path(im["file_name"]).stem)
        if t in missing:
            continue
        img = np.zeros((height, width, 3), np.uint8)
        img[..., 0] = 40 * t
        img[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        path = root / im["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 100])


def write_dataset(root: Path) -> Path:
    """`root` as a PoseTrack18 tree: 2 training sequences and 1 validation sequence of 5 frames x 2
    persons each, with their images (the training tests' dataset)."""
    rng = np.random.default_rng(0)
    for split, names in (("train", ["000001_mpii_test", "000002_mpii_test"]), ("val", ["000003_mpii_test"])):
        for name in names:
            doc = random_sequence(rng, name, 5, 2)
            for im in doc["images"]:
                im["file_name"] = im["file_name"].replace("images/val/", f"images/{split}/")
            write_doc(root / "annotations" / split, name, doc)
            write_frames(root, doc)
    return root

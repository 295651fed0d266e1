"""An embedded synthetic video-pose dataset in the PoseTrack18 layout: no download, any machine.

    python examples/dsta/synthetic.py --out data/synth --videos 200 --frames 30 --split train
    python examples/dsta/synthetic.py --out data/synth --videos 50 --frames 30 --split val --label-every 4

or from Python: `generate(out_dir, num_videos=..., frames_per_video=...)`. It writes

- `out_dir/images/<split>/<seq>/NNNNNN.jpg` (every frame, JPEG quality 90),
- `out_dir/annotations/<split>/<seq>.json`: PoseTrack18 per-video files (`images` with `is_labeled`,
  `nframes`, `ignore_regions_x/_y`; `annotations` with `keypoints` 17 x 3, `bbox`, `bbox_head`,
  `track_id`, ...), readable by `posetrack_io` and scored by `posetrack_eval`,
- `out_dir/detections_<split>.json`: COCO results (`image_id`, `bbox`, `score`, `category_id`): the
  GT boxes jittered, with a score that falls with the jitter, some misses, and low-score false positives,
- `out_dir/synthetic_<split>.json`: what only a generator knows: per frame the events applied; per
  person, frame and joint its state (-1 not annotated, else the bits HIDDEN, BLURRED, DEFOCUSED) and
  its motion since the previous frame in PCKh thresholds; and `benchmark`, the statistics of
  `benchmark_stats.measure` (spoiled, rescuable and moving joints).

What is in a clip: 1-3 (`people`) stick people with per-person proportions and colours who walk
across (possibly turning round), wave, or turn on the spot; their joints follow smooth sinusoids with
random phases plus independent smooth wobble, so joints move smoothly but not rigidly (a walker
crosses 2-4% of their height per frame, as at 25-30 fps). People are drawn far to near and occlude
each other. Backgrounds are textured and cluttered with limb-like lines.

`difficulty` in [0, 1] scales how often events spoil joints of a frame (`RATES`): a textured occluder
passing a person fast (1-2 frames), a fast limb smeared by a motion-blur streak of 3-5 PCKh
thresholds (1 frame), a focus pull (one frame defocused with a blur sigma of 1.2-2 PCKh thresholds of
the largest person, its neighbours barely), plus mild noise and low light. Events are short, so the
neighbours of a spoiled frame are usually clean: the joints temporal context can rescue. At 0 there
are no events, and only people passing each other hide joints (about 2% rescuable); 0.3 gives about
14% and 1 about 32% (`benchmark_stats.py` measures a split). Some clips hold a tiny far-away crowd
that is not annotated and is covered by an ignore region. Every joint inside the image is annotated
(v = 1), hidden or not, as in PoseTrack, except one hidden for more than `HIDDEN_ANNOTATED_MAX`
consecutive frames, which is unlabelled there; joints outside the image are (0, 0, 0).

Each video is drawn from its own generator seeded by (seed, split, video index), so the output does
not depend on `workers`, and `train` / `val` with the same seed differ.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import cv2
import numpy as np
from dsta.synthetic_motion import make_poses, pckh_threshold
from dsta.synthetic_render import (
    CORRUPTIONS, LIMBS, apply_corruption, background, defocus, draw_occluder, draw_person, limb_motion_blur,
    person_style, texture,
)  # fmt: skip

__all__ = ["generate", "make_poses", "pckh_threshold", "main", "CORRUPTIONS", "RATES", "HIDDEN", "BLURRED",
           "DEFOCUSED", "HIDDEN_ANNOTATED_MAX"]  # fmt: skip

JOINT_NAMES = ("nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
               "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
               "right_knee", "left_ankle", "right_ankle")  # fmt: skip
SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
            [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]  # fmt: skip
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3, "pretrain": 4}
JPEG_QUALITY = 90
_ANNOTATED = [s for s in range(17) if s not in (3, 4)]  # the ears are never annotated (as in PoseTrack)
#: per-joint state bits in the metadata: hidden (covered by an occluder or a nearer person), blurred (a
#: fast limb's streak of 3-5 PCKh thresholds), defocused (the frame's blur sigma >= the PCKh threshold)
HIDDEN, BLURRED, DEFOCUSED = 1, 2, 4
#: a joint hidden for at most this many consecutive frames stays annotated (annotators infer it from
#: the frames around it); in longer runs it is unlabelled
HIDDEN_ANNOTATED_MAX = 4
#: probability per frame (x difficulty) that an event starts; occluders and fast limbs per person
RATES = {"focus_pull": 0.2, "occluder": 0.4, "fast_limb": 0.65, "low_light": 0.03, "noise": 0.03}


# ------------------------------------------------------------------------------------------ one video
def _video_seed(seed: int, split: str, index: int):
    return [int(seed), _SPLIT_CODE.get(split, sum(map(ord, split))), int(index)]


def _event_schedule(rng, frames: int, difficulty: float, people: list) -> list[dict]:
    """Per frame: {"sigma": defocus px, "occluders": [shape], "limbs": [(person, limb, length, angle)],
    "low_light": strength, "noise": strength}. Every event starts at a frame with probability
    `RATES[kind] x difficulty` (per person for occluders and fast limbs) and lasts 1-2 frames, so a
    joint it spoils is usually clean one or two frames away."""
    sched = [{"sigma": 0.0, "occluders": [], "limbs": [], "low_light": 0.0, "noise": 0.0} for _ in range(frames)]
    if difficulty <= 0:
        return sched
    rate = {k: v * difficulty for k, v in RATES.items()}
    for t0 in range(frames):
        if people and rng.random() < rate["focus_pull"]:  # one frame out of focus, its neighbours barely
            sigma = rng.uniform(1.2, 2.0) * max(p["thr"][t0] for p in people)
            for t, f in ((t0, 1.0), (t0 - 1, 0.2), (t0 + 1, 0.2)):
                if 0 <= t < frames:
                    sched[t]["sigma"] = max(sched[t]["sigma"], f * sigma)
        for i, p in enumerate(people):
            if rng.random() < rate["occluder"]:  # something passes close to the camera, fast
                dur = int(rng.integers(1, 3))
                size = p["height"] * rng.uniform(0.3, 0.5, 2)
                vel = rng.choice([-1.0, 1.0]) * size[0] * rng.uniform(0.8, 1.2)
                pick = p["joints"][min(t0 + dur // 2, frames - 1)][int(rng.choice(_ANNOTATED))]
                shape = {"size": size, "angle": rng.uniform(-30, 30),
                         "kind": "box" if rng.random() < 0.5 else "ellipse", "texture": texture(rng, 32, 32)}
                for k in range(min(dur, frames - t0)):
                    centre = (pick[0] + vel * (k - (dur - 1) / 2), pick[1])
                    sched[t0 + k]["occluders"].append({**shape, "centre": centre})
            if rng.random() < rate["fast_limb"]:  # a limb swung fast enough to smear
                limb = list(LIMBS)[int(rng.integers(0, len(LIMBS)))]
                end = LIMBS[limb][0][-1]
                J = p["joints"]
                vel = J[min(t0 + 1, frames - 1), end] - J[max(t0 - 1, 0), end]
                if np.linalg.norm(vel) > 0.5:
                    angle = math.atan2(vel[1], vel[0])
                else:  # barely moving: smear across the limb
                    d = J[t0, end] - J[t0, LIMBS[limb][0][0]]
                    angle = math.atan2(d[1], d[0]) + math.pi / 2
                sched[t0]["limbs"].append((i, limb, rng.uniform(3.0, 5.0) * p["thr"][t0], angle))
        for kind in ("low_light", "noise"):  # mild photometric nuisances, not counted as spoiling a joint
            if rng.random() < rate[kind]:
                sched[t0][kind] = float(rng.uniform(0.2, 0.5))
    return sched


def _runs(flags: np.ndarray) -> np.ndarray:
    """`[T]` bool -> `[T]` int: the length of the run of True each frame belongs to (0 where False)."""
    out = np.zeros(len(flags), np.int64)
    t = 0
    while t < len(flags):
        if flags[t]:
            u = t
            while u < len(flags) and flags[u]:
                u += 1
            out[t:u] = u - t
            t = u
        else:
            t += 1
    return out


def _person_box(pts, inside, head_r, width, height):
    p = pts[inside]
    lo, hi = p.min(0), p.max(0)
    pad = 0.1 * (hi - lo) + head_r
    x1, y1 = max(0.0, lo[0] - pad[0]), max(0.0, lo[1] - pad[1])
    x2, y2 = min(width - 1.0, hi[0] + pad[0]), min(height - 1.0, hi[1] + pad[1])
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def _make_video(job: dict) -> dict:
    """Draw and write one video; return its detections and metadata."""
    cv2.setNumThreads(1)
    out, split, index = Path(job["out"]), job["split"], job["index"]
    T, (H, W), diff = job["frames"], job["size"], float(job["difficulty"])
    rng = np.random.default_rng(_video_seed(job["seed"], split, index))
    seq_num = index + 1
    name = f"{seq_num:06d}_synth_{split}"
    bg_full = background(rng, H + 16, W + 16)
    pan = np.cumsum(rng.normal(0, 0.25, (T, 2)), 0) * (rng.random() < 0.5)
    pan = np.clip(pan - pan.mean(0) + 8, 0, 16)

    people = []
    for k in range(int(rng.integers(job["people"][0], job["people"][1] + 1))):
        h = rng.uniform(0.45, 0.85) * H
        ground = H * (0.55 + 0.42 * (h / H - 0.45) / 0.4) + rng.uniform(-0.04, 0.04) * H
        J, yaw, mode = make_poses(rng, T, h, ground, W)
        people.append({"track_id": k, "height": h, "ground": ground, "joints": J, "yaw": yaw, "mode": mode,
                       "style": person_style(rng, h),
                       "thr": np.array([pckh_threshold(J[t]) for t in range(T)])})  # fmt: skip
    order = sorted(range(len(people)), key=lambda i: people[i]["ground"])  # far (higher in the image) first
    crowd = []
    if rng.random() < 0.1 + 0.8 * diff:
        cy = rng.uniform(0.3, 0.45) * H
        cands = rng.uniform(0.15, 0.85, 6) * W  # the crowd goes where it hides the fewest annotated joints
        allj = np.concatenate([p["joints"].reshape(-1, 2) for p in people])
        near = (np.abs(allj[:, 1] - cy + 0.06 * H) < 0.14 * H)
        cx = cands[np.argmin([(near & (np.abs(allj[:, 0] - c) < 0.15 * W)).sum() for c in cands])]
        for _ in range(int(rng.integers(2, 5))):
            h = rng.uniform(0.1, 0.16) * H
            J, yaw, _ = make_poses(rng, T, h, cy + rng.uniform(-0.03, 0.03) * H, W, mode="wave")
            J[..., 0] += cx + rng.normal(0, 0.06) * W - np.nanmean(J[..., 0])
            crowd.append({"joints": J, "yaw": yaw, "style": person_style(rng, h), "height": h})
    sched = _event_schedule(rng, T, diff, people)

    img_dir = out / "images" / split / name
    img_dir.mkdir(parents=True, exist_ok=True)
    codes = np.full((len(people), T, 17), -1, np.int64)  # -1 outside the image, else HIDDEN | BLURRED | DEFOCUSED bits
    regions, flags = [], []
    for t in range(T):
        ox, oy = pan[t]
        m = np.float32([[1, 0, -ox], [0, 1, -oy]])
        img = cv2.warpAffine(bg_full, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        label = np.zeros((H, W), np.uint8)
        regions_x, regions_y = [], []
        if crowd:
            for cp in crowd:
                draw_person(img, None, cp["joints"][t], cp["style"], cp["yaw"][t])
            pts = np.concatenate([cp["joints"][t][~np.isnan(cp["joints"][t][:, 0])] for cp in crowd])
            pad = 0.06 * H
            x1, y1 = np.clip(pts.min(0) - pad, 0, [W - 1, H - 1])
            x2, y2 = np.clip(pts.max(0) + pad, 0, [W - 1, H - 1])
            if x2 - x1 > 2 and y2 - y1 > 2:
                cut = min(x2 - x1, y2 - y1) / 4  # an octagon: poseval's polygons are rarely boxes
                xs = (x1 + cut, x2 - cut, x2, x2, x2 - cut, x1 + cut, x1, x1)
                ys = (y1, y1, y1 + cut, y2 - cut, y2, y2, y2 - cut, y1 + cut)
                regions_x.append([round(float(v), 2) for v in xs])
                regions_y.append([round(float(v), 2) for v in ys])
        regions.append((regions_x, regions_y))
        for i in order:
            p = people[i]
            draw_person(img, label, p["joints"][t], p["style"], p["yaw"][t], lab=i + 1)
        ev = sched[t]
        blurred = np.zeros((len(people), 17), bool)
        for i, limb, length, angle in ev["limbs"]:
            chain, spoiled = LIMBS[limb]
            img = limb_motion_blur(img, people[i]["joints"][t], chain, length, angle, people[i]["style"]["limb"])
            blurred[i, list(spoiled)] = True
        for shape in ev["occluders"]:
            draw_occluder(img, label, shape)
        img = defocus(img, ev["sigma"])
        for kind in ("low_light", "noise"):
            if ev[kind]:
                img = apply_corruption(img, kind, ev[kind], rng)
        flags.append({"occluder": bool(ev["occluders"]), "motion_blur": bool(ev["limbs"]),
                      "defocus": bool(ev["sigma"] > 0), "low_light": bool(ev["low_light"] > 0),
                      "noise": bool(ev["noise"] > 0)})  # fmt: skip
        cv2.imwrite(str(img_dir / f"{t:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        for i, p in enumerate(people):
            pts = p["joints"][t]
            inside = _inside(pts, W, H)
            ij = np.round(pts[inside]).astype(int)
            code = np.zeros(int(inside.sum()), np.int64)
            code |= np.where(label[ij[:, 1], ij[:, 0]] != i + 1, HIDDEN, 0)
            code |= np.where(blurred[i, inside], BLURRED, 0)
            code |= DEFOCUSED if ev["sigma"] >= p["thr"][t] else 0
            codes[i, t, inside] = code

    # annotations: every joint inside the image, except one hidden for longer than HIDDEN_ANNOTATED_MAX frames
    for i in range(len(people)):
        for j in range(17):
            hidden = (codes[i, :, j] >= 0) & (codes[i, :, j] & HIDDEN > 0)
            codes[i, _runs(hidden) > HIDDEN_ANNOTATED_MAX, j] = -1
    images, anns, dets = [], [], []
    for t in range(T):
        image_id = 10000000000 + seq_num * 10000 + t
        labeled = t % job["label_every"] == 0
        images.append({"file_name": f"images/{split}/{name}/{t:06d}.jpg", "id": image_id, "frame_id": image_id,
                       "vid_id": f"{seq_num:06d}", "nframes": T, "is_labeled": labeled, "width": W, "height": H,
                       "ignore_regions_x": regions[t][0], "ignore_regions_y": regions[t][1]})  # fmt: skip
        for i, p in enumerate(people):
            pts = p["joints"][t]
            inside = _inside(pts, W, H)
            if inside.sum() < 2:
                continue
            box = _person_box(pts, inside, p["style"]["head"], W, H)
            if box[2] <= 1 or box[3] <= 1:
                continue
            det_rng = np.random.default_rng(_video_seed(job["seed"], split, index) + [t, i])
            dets += _jitter(det_rng, box, image_id, diff, W, H)
            annotated = codes[i, t] >= 0
            if not labeled or annotated.sum() < 2:
                continue
            kp = np.zeros((17, 3))
            kp[annotated, :2], kp[annotated, 2] = np.round(pts[annotated], 2), 1
            L = float(np.linalg.norm(pts[2] - pts[1]))
            hc = (pts[2] + pts[1]) / 2
            anns.append({"id": image_id * 100 + i, "image_id": image_id, "category_id": 1, "track_id": p["track_id"],
                         "keypoints": [float(v) for v in kp.reshape(-1)], "num_keypoints": int(annotated.sum()),
                         "scores": [], "bbox": box, "bbox_head": [round(float(hc[0] - L / 2), 2),
                                                                   round(float(hc[1] - L / 2), 2), round(L, 2),
                                                                   round(L, 2)],
                         "iscrowd": False})  # fmt: skip
        fp_rng = np.random.default_rng(_video_seed(job["seed"], split, index) + [t, 99])
        for _ in range(int(fp_rng.poisson(0.15 + 0.4 * diff))):  # false positives
            w, h = fp_rng.uniform(0.1, 0.35) * W, fp_rng.uniform(0.2, 0.7) * H
            x, y = fp_rng.uniform(0, W - w), fp_rng.uniform(0, H - h)
            dets.append({"image_id": image_id, "category_id": 1, "bbox": [round(x, 2), round(y, 2), round(w, 2),
                         round(h, 2)], "score": round(float(fp_rng.uniform(0.05, 0.4)), 4)})  # fmt: skip

    doc = {"images": images, "annotations": anns,
           "categories": [{"supercategory": "person", "id": 1, "name": "person", "keypoints": list(JOINT_NAMES),
                           "skeleton": SKELETON}]}  # fmt: skip
    ann_dir = out / "annotations" / split
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")
    motion = {}
    for i, p in enumerate(people):  # per frame t >= 1: |J_t - J_t-1| / PCKh threshold at t, -1 where not both inside
        J = p["joints"]
        step = np.linalg.norm(np.diff(J, axis=0), axis=-1) / p["thr"][1:, None]
        both = np.stack([_inside(J[t], W, H) & _inside(J[t - 1], W, H) for t in range(1, T)]) if T > 1 else None
        m = np.full((T, 17), -1.0)
        if T > 1:
            m[1:] = np.where(both, np.round(step, 3), -1.0)
        motion[str(p["track_id"])] = m.tolist()
    return {"name": name, "detections": dets, "flags": flags,
            "joints": {str(p["track_id"]): codes[i].tolist() for i, p in enumerate(people)}, "motion": motion,
            "people": [{"track_id": p["track_id"], "mode": p["mode"], "height": round(p["height"], 2)} for p in people],
            "crowd": len(crowd), "annotations": len(anns),
            "labeled_frames": sum(im["is_labeled"] for im in images)}  # fmt: skip


def _inside(pts, W: int, H: int) -> np.ndarray:
    """`[17]` bool: the joint exists (not NaN) and lies inside the W x H image."""
    x, y = pts[:, 0], pts[:, 1]
    with np.errstate(invalid="ignore"):
        return ~np.isnan(x) & (x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)


def _jitter(rng, box, image_id, diff, W, H) -> list:
    """A detection for one GT box: jittered, score falling with the jitter; sometimes missed."""
    if rng.random() < 0.02 + 0.08 * diff:
        return []
    x, y, w, h = box
    j = rng.uniform(0.01, 0.04 + 0.12 * diff)
    cx, cy = x + w / 2 + rng.normal(0, j) * w, y + h / 2 + rng.normal(0, j) * h
    w2, h2 = w * np.exp(rng.normal(0, j)), h * np.exp(rng.normal(0, j))
    x1, y1 = max(0.0, cx - w2 / 2), max(0.0, cy - h2 / 2)
    x2, y2 = min(W - 1.0, cx + w2 / 2), min(H - 1.0, cy + h2 / 2)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return []
    ix = max(0.0, min(x + w, x2) - max(x, x1)) * max(0.0, min(y + h, y2) - max(y, y1))
    iou = ix / (w * h + (x2 - x1) * (y2 - y1) - ix)
    score = float(np.clip(0.98 - 1.5 * (1 - iou) + rng.normal(0, 0.03), 0.05, 1.0))
    return [{"image_id": image_id, "category_id": 1, "bbox": [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
             "score": round(score, 4)}]  # fmt: skip


# ------------------------------------------------------------------------------------------ dataset
def _init_worker():
    cv2.setNumThreads(1)


def generate(out_dir, *, num_videos: int, frames_per_video: int, size=(192, 256), people=(1, 3),
             difficulty: float = 0.5, seed: int = 0, split: str = "train", label_every: int = 1, workers: int = 1,
             progress: bool = False) -> dict:  # fmt: skip
    """Write a synthetic PoseTrack18-style split (see the module doc) and return a summary.

    Args:
        out_dir: dataset root (created); the split goes to `images/<split>`, `annotations/<split>`,
            `detections_<split>.json` and `synthetic_<split>.json`.
        num_videos, frames_per_video: clip count and length.
        size: (H, W) of the frames.
        people: (min, max) annotated people per clip.
        difficulty: in [0, 1]; 0 = no events (and rarely a crowd), 1 = frequent events (module doc).
        seed: base seed; video i is drawn from (seed, split, i).
        split: folder name, e.g. "train" or "val".
        label_every: only frames t % label_every == 0 are labelled (PoseTrack val style for > 1).
        workers: processes; the bytes written do not depend on it.
        progress: show a tqdm bar.

    Returns:
        dict: out_dir, split, videos, frames, labeled_frames, annotations, detections, ignore_regions
        (videos with a crowd), corrupted_frames, corruptions (count per kind), frame_flags
        ({sequence: [{kind: bool} per frame]}), benchmark (`benchmark_stats.measure`), seconds,
        clips_per_minute.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    if num_videos < 1 or frames_per_video < 1 or label_every < 1:
        raise ValueError("num_videos, frames_per_video and label_every must be >= 1")
    lo, hi = people
    if not 1 <= lo <= hi:
        raise ValueError(f"people must be (min, max) with 1 <= min <= max, got {people}")
    H, W = (int(v) for v in size)
    if H < 32 or W < 32:
        raise ValueError(f"size (H, W) must be at least 32 x 32, got {size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [{"out": str(out), "split": split, "index": i, "frames": int(frames_per_video), "size": (H, W),
             "difficulty": float(difficulty), "seed": int(seed), "people": (int(lo), int(hi)),
             "label_every": int(label_every)} for i in range(num_videos)]  # fmt: skip
    start = time.perf_counter()
    results = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_videos, unit="clip", desc=f"synthetic {split}")
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for r in pool.imap(_make_video, jobs):
                results.append(r)
                bar is not None and bar.update(1)
    else:
        for job in jobs:
            results.append(_make_video(job))
            bar is not None and bar.update(1)
    if bar is not None:
        bar.close()
    dets = [d for r in results for d in r["detections"]]
    (out / f"detections_{split}.json").write_text(json.dumps(dets), encoding="utf-8")
    meta = {"generator": "examples/dsta/synthetic.py", "split": split, "seed": seed, "difficulty": difficulty,
            "size": [H, W], "people": [lo, hi], "label_every": label_every, "frames_per_video": frames_per_video,
            "codes": {"unannotated": -1, "hidden": HIDDEN, "blurred": BLURRED, "defocused": DEFOCUSED},
            "videos": {r["name"]: {"people": r["people"], "crowd": r["crowd"], "frame_flags": r["flags"],
                                   "joints": r["joints"], "motion": r["motion"]} for r in results}}  # fmt: skip
    from dsta.benchmark_stats import measure  # noqa: PLC0415  (it reads this module's constants)

    meta["benchmark"] = measure(meta)
    (out / f"synthetic_{split}.json").write_text(json.dumps(meta), encoding="utf-8")
    seconds = time.perf_counter() - start
    corrupted = [any(f.values()) for r in results for f in r["flags"]]
    return {
        "out_dir": str(out), "split": split, "videos": num_videos, "frames": num_videos * frames_per_video,
        "labeled_frames": sum(r["labeled_frames"] for r in results),
        "annotations": sum(r["annotations"] for r in results), "detections": len(dets),
        "ignore_regions": sum(r["crowd"] > 0 for r in results), "corrupted_frames": int(sum(corrupted)),
        "corruptions": {k: sum(f[k] for r in results for f in r["flags"]) for k in CORRUPTIONS},
        "frame_flags": {r["name"]: r["flags"] for r in results}, "benchmark": meta["benchmark"],
        "seconds": round(seconds, 3), "clips_per_minute": round(60.0 * num_videos / max(seconds, 1e-9), 1),
    }  # fmt: skip


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="Write a synthetic PoseTrack18-style video-pose dataset (and measure "
                                 "it: see benchmark_stats.py).")  # fmt: skip
    ap.add_argument("--out", required=True, help="dataset root (created); the split goes to images/SPLIT, "
                    "annotations/SPLIT, detections_SPLIT.json, synthetic_SPLIT.json")  # fmt: skip
    ap.add_argument("--videos", type=int, required=True, help="number of clips (required)")
    ap.add_argument("--frames", type=int, required=True, help="frames per clip (required)")
    ap.add_argument("--difficulty", type=float, default=0.5,
                    help="in [0, 1]: how often key frames are spoiled (occluders passing, fast limbs, focus pulls); "
                    "0 / 0.3 / 1 leave about 2%% / 14%% / 32%% of the annotated joints spoiled but clean in a "
                    "neighbouring frame (default %(default)s)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="base seed; clip i is drawn from (seed, split, i) "
                    "(default %(default)s)")  # fmt: skip
    ap.add_argument("--split", default="train", choices=["train", "val", "test", "pretrain"],
                    help="split name; the same seed gives other clips in another split "
                    "(default %(default)s)")  # fmt: skip
    ap.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("H", "W"),
                    help="frame height and width in pixels (default: 192 256)")  # fmt: skip
    ap.add_argument("--people", type=int, nargs=2, default=(1, 3), metavar=("MIN", "MAX"),
                    help="annotated people per clip, drawn uniformly in [MIN, MAX] (default: 1 3)")  # fmt: skip
    ap.add_argument("--label-every", type=int, default=1, help="label frames t with t %% N == 0 (PoseTrack val "
                    "style for N > 1; default %(default)s: every frame)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=1, help="processes; the output does not depend on it "
                    "(default %(default)s)")  # fmt: skip
    args = ap.parse_args(argv)
    s = generate(args.out, num_videos=args.videos, frames_per_video=args.frames, size=tuple(args.size),
                 people=tuple(args.people), difficulty=args.difficulty, seed=args.seed, split=args.split,
                 label_every=args.label_every, workers=args.workers, progress=True)  # fmt: skip
    print(f"wrote {s['videos']} clips x {args.frames} frames ({s['frames']} images, {s['labeled_frames']} labelled, "
          f"{s['annotations']} person annotations, {s['detections']} detections) to {s['out_dir']}")  # fmt: skip
    print(f"corrupted frames: {s['corrupted_frames']} ({s['corruptions']}); clips with an ignore region: "
          f"{s['ignore_regions']}")  # fmt: skip
    from dsta.benchmark_stats import format_stats  # noqa: PLC0415

    print(format_stats(s["benchmark"]))
    print(f"{s['seconds']:.1f} s, {s['clips_per_minute']:.0f} clips/min")
    return s


if __name__ == "__main__":
    main()

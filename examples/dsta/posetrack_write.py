"""Write PoseTrack files from the normalised form of `posetrack_io`: PoseTrack18 (what poseval and
mmpose read) or PoseTrack17 `annolist` documents, and prediction files laid out like the GT files.

    paths = write_predictions("out/pred", gt_videos, {file_name: [{"keypoints": kp, "scores": sc}, ...]})
    posetrack_eval.evaluate("annotations/val", "out/pred")
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from dsta.posetrack_io import NUM_SLOTS, POSEVAL_TO_SLOT, Frame, Person, Video
from stattn.skeletons import POSETRACK

__all__ = ["video_to_pt18", "video_to_pt17", "write_predictions"]


def _py(v):
    """numpy scalar -> plain Python number for json."""
    return v.item() if isinstance(v, np.generic) else v


def video_to_pt18(video: Video, *, with_ignore_regions: bool = True) -> dict:
    """The PoseTrack18 JSON document of one video (poseval reads it unchanged).

    Absent joints are written as (0, 0, 0) and present ones with their flag (a present joint at (0, 0)
    gets flag 1, so that it survives poseval's conversion); per-joint scores go to `scores` (17 values,
    0 where none was given) when the person has any. `track_id` defaults to the person's index in its frame.
    """
    images, anns = [], []
    for t, fr in enumerate(video.frames):
        image_id = fr.image_id if isinstance(fr.image_id, int) else t
        im = {"file_name": fr.file_name, "id": image_id, "frame_id": image_id, "vid_id": video.name.split("_")[0],
              "nframes": video.nframes if video.nframes is not None else len(video.frames),
              "is_labeled": bool(fr.is_labeled)}  # fmt: skip
        if fr.width is not None and fr.height is not None:
            im["width"], im["height"] = fr.width, fr.height
        if with_ignore_regions and fr.ignore_regions:
            im["ignore_regions_x"] = [[_py(x) for x in poly[:, 0]] for poly in fr.ignore_regions]
            im["ignore_regions_y"] = [[_py(y) for y in poly[:, 1]] for poly in fr.ignore_regions]
        images.append(im)
        tracks = [p.track_id if p.track_id is not None else k for k, p in enumerate(fr.persons)]
        if len(set(tracks)) != len(tracks):
            raise ValueError(f"{video.name}: track ids {tracks} of {fr.file_name} are not unique (poseval refuses it)")
        for k, p in enumerate(fr.persons):
            kp = p.keypoints.copy()
            kp[~p.present] = 0.0
            kp[p.present & (kp[:, 0] == 0) & (kp[:, 1] == 0) & (kp[:, 2] == 0), 2] = 1.0  # keep a joint at (0, 0)
            scores = [float(s) if h else 0.0 for s, h in zip(p.scores, p.has_score)] if p.has_score.any() else []
            ann = {"image_id": image_id, "id": image_id * 100 + k, "category_id": 1, "track_id": _py(tracks[k]),
                   "keypoints": [float(v) for v in kp.reshape(-1)], "num_keypoints": int(p.present.sum()),
                   "scores": scores, "iscrowd": bool(p.iscrowd)}  # fmt: skip
            if p.head_box is not None:
                x1, y1, x2, y2 = p.head_box
                ann["bbox_head"] = [x1, y1, x2 - x1, y2 - y1]
            for key, val in (("bbox", p.bbox), ("score", p.score), ("person_id", p.person_id)):
                if val is not None:
                    ann[key] = [_py(v) for v in val] if isinstance(val, (tuple, list)) else _py(val)
            anns.append(ann)
    cat = {"supercategory": "person", "id": 1, "name": "person", "keypoints": list(POSETRACK.joints)}
    return {"images": images, "annotations": anns, "categories": [cat]}


def video_to_pt17(video: Video) -> dict:
    """The PoseTrack17 `annolist` document of one video (points in poseval's 15-id order)."""
    annolist = []
    for t, fr in enumerate(video.frames):
        rects = []
        for k, p in enumerate(fr.persons):
            points = []
            for pid, slot in enumerate(POSEVAL_TO_SLOT):
                if p.present[slot]:
                    pt = {"id": [pid], "x": [float(p.keypoints[slot, 0])], "y": [float(p.keypoints[slot, 1])],
                          "is_visible": [int(p.keypoints[slot, 2] > 0)]}  # fmt: skip
                    if p.has_score[slot]:
                        pt["score"] = [float(p.scores[slot])]
                    points.append(pt)
            rect = {"track_id": [_py(p.track_id) if p.track_id is not None else k]}
            if p.has_points:
                rect["annopoints"] = [{"point": points}]
            if p.head_box is not None:
                for key, val in zip(("x1", "y1", "x2", "y2"), p.head_box):
                    rect[key] = [_py(val)]
            if p.score is not None:
                rect["score"] = [_py(p.score)]
            rects.append(rect)
        num = fr.index + 1 - video.first_frame if fr.index is not None else t + 1
        entry = {"image": [{"name": fr.file_name}], "imgnum": [num], "is_labeled": [int(fr.is_labeled)],
                 "annorect": rects}  # fmt: skip
        if fr.ignore_regions:
            entry["ignore_regions"] = [{"point": [{"x": [_py(x)], "y": [_py(y)]} for x, y in poly]}
                                       for poly in fr.ignore_regions]  # fmt: skip
        annolist.append(entry)
    return {"annolist": annolist}


def write_predictions(out_dir, videos: Sequence[Video], predictions: dict, fmt: str = "pt18") -> list[Path]:
    """Write one prediction file per GT video, listing exactly the GT video's images, in its order.

    The file takes the GT file's name when that file holds this one video (poseval pairs files by
    name), else `<sequence>.json`.

    Args:
        out_dir: folder to write to (created).
        videos: the ground-truth videos (from `load_annotations`).
        predictions: `{file_name: [person, ...]}`; a person is a `Person` or a dict with `keypoints`
            `[17, 2|3]` in image pixels, `scores` `[17]`, and optional `track_id`, `score`, `bbox`.
        fmt: "pt18" (default) or "pt17".

    Returns:
        the written paths.
    """
    if fmt not in ("pt18", "pt17"):
        raise ValueError(f"fmt must be 'pt18' or 'pt17', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_source: dict[str, int] = {}
    for v in videos:
        per_source[v.source] = per_source.get(v.source, 0) + 1
    known = {f.file_name for v in videos for f in v.frames}
    unknown = [k for k in predictions if k not in known]
    if unknown:
        raise ValueError(f"predictions for {len(unknown)} images that no GT video lists, e.g. {unknown[0]!r}")
    written = []
    for v in videos:
        frames = []
        for fr in v.frames:
            persons = [_as_person(p, fr.file_name) for p in predictions.get(fr.file_name, [])]
            frames.append(Frame(fr.file_name, fr.image_id, fr.index, fr.is_labeled, persons, [], fr.width, fr.height,
                                fr.nframes))  # fmt: skip
        pv = Video(v.name, frames, v.source, fmt, v.nframes, v.first_frame)
        doc = video_to_pt18(pv, with_ignore_regions=False) if fmt == "pt18" else video_to_pt17(pv)
        name = Path(v.source).name if per_source[v.source] == 1 and v.source.endswith(".json") else f"{v.name}.json"
        path = out_dir / name
        path.write_text(json.dumps(doc), encoding="utf-8")
        written.append(path)
    return written


def _as_person(p, where) -> Person:
    if isinstance(p, Person):
        return p
    if not isinstance(p, dict) or "keypoints" not in p:
        raise ValueError(f"prediction for {where}: expected a Person or a dict with 'keypoints', got {type(p).__name__}")
    kp = np.asarray(p["keypoints"], dtype=np.float64)
    if not np.isfinite(kp).all():
        raise ValueError(f"prediction for {where} has non-finite keypoints")
    bbox = tuple(float(b) for b in p["bbox"]) if p.get("bbox") is not None else None
    score = float(p["score"]) if p.get("score") is not None and math.isfinite(float(p["score"])) else None
    person = Person.from_arrays(kp, p.get("scores"), track_id=p.get("track_id"), bbox=bbox, score=score)
    unused = np.ones(NUM_SLOTS, bool)
    unused[list(POSETRACK.evaluated)] = False
    person.present[unused] = False  # the ear slots are never predicted
    return person

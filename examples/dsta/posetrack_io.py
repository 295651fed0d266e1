"""PoseTrack 17 / 18 / 21 annotation files -> one normalised in-memory form.

Every reader returns a list of `Video`s whose persons carry 17 keypoint slots in the COCO order of
`stattn.skeletons.POSETRACK` (nose, head_bottom, head_top, two unused ear slots, shoulders ... ankles).
What poseval would see is kept exactly: which joints *exist* (`Person.present`), their scores, the head
box, the ignore polygons and the frame order of the file. The evaluator (`posetrack_eval.py`) and the
data pipeline (`data.py`) both start from this form.

Formats (docs/official_code.md §4):

- PoseTrack17 `{"annolist": [frame, ...]}`: per frame `image[0].name`, `annorect` persons with the head box
  `x1 y1 x2 y2`, `track_id`, `annopoints[0].point` = [{id, x, y, score?, is_visible?}] in poseval's
  15-joint id order. A listed point exists; `is_visible` is ignored (as poseval does).
- PoseTrack18 (per video) and COCO-style merged files: `images`, `annotations` (`keypoints` 17 x 3,
  `bbox`, `bbox_head`, `track_id`, `scores`), `categories[0].keypoints` names the slots. A joint exists
  unless it is stored as (0, 0, 0), the "unannotated" encoding (poseval's PT18 -> PT17 conversion).
- PoseTrack21: the PT18 layout plus `person_id` / `has_labeled_person`; read the same way.

Errors are `AnnotationError`s whose message starts with the file name and says what is wrong. A joint whose
x or y is null, NaN or infinite is read as absent (stored as (0, 0, 0)), with one `AnnotationWarning` per
file that counts them: it is no value, neither a GT joint nor a predicted one. Reading
is a little more lenient than poseval's (a missing `categories` means the standard 17 slots, a missing
`track_id` is allowed); everything poseval reads is read the same way. Writers: `posetrack_write.py`.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from stattn.skeletons import POSETRACK

__all__ = [
    "AnnotationError", "AnnotationWarning", "Person", "Frame", "Video", "POSEVAL_TO_SLOT", "POSEVAL_NAMES",
    "load_json", "parse_videos", "load_annotations", "annotation_files", "load_detections", "iter_persons",
]  # fmt: skip

NUM_SLOTS = POSETRACK.num_joints  # 17
#: poseval joint id (0..14) -> COCO slot. poseval ids: r_ankle, r_knee, r_hip, l_hip, l_knee, l_ankle,
#: r_wrist, r_elbow, r_shoulder, l_shoulder, l_elbow, l_wrist, neck (= head_bottom), nose, head_top.
POSEVAL_TO_SLOT = (16, 14, 12, 11, 13, 15, 10, 8, 6, 5, 7, 9, 1, 0, 2)
POSEVAL_NAMES = tuple(POSETRACK.joints[s] for s in POSEVAL_TO_SLOT)
_SLOT_TO_POSEVAL = {s: i for i, s in enumerate(POSEVAL_TO_SLOT)}
_SLOT_OF_NAME = {name: i for i, name in enumerate(POSETRACK.joints)}
_SLOT_OF_NAME["neck"] = _SLOT_OF_NAME["head_bottom"]


class AnnotationError(ValueError):
    """A PoseTrack file that cannot be used; the message names the file and the problem."""


class AnnotationWarning(UserWarning):
    """A PoseTrack file that is read, but not entirely as written (e.g. null / NaN joints made absent)."""


def _warn_non_finite(source, count: int) -> None:
    if count:
        warnings.warn(f"{source}: {count} joint(s) with a null, NaN or infinite x / y are read as absent "
                      "(not annotated, not predicted)", AnnotationWarning, stacklevel=4)  # fmt: skip


@dataclass
class Person:
    """One annotated (or predicted) person.

    Attributes:
        keypoints: `[17, 3]` float64 x, y, flag. PT18/21: the file's visibility flag; PT17: 1 for listed points.
        present: `[17]` bool, the joint exists for the evaluator (PT18: not stored as (0, 0, 0)).
        scores: `[17]` float64 per-joint confidence, NaN where `has_score` is False.
        has_score: `[17]` bool, a score was given (poseval falls back to -9999 otherwise).
        head_box: (x1, y1, x2, y2) as given (PT18: x2 = x + w), or None.
        bbox: (x, y, w, h) person box, or None (PT17 has none).
        track_id, person_id, score, ann_id: as in the file, or None.
        has_points: False for a PT17 rect without `annopoints[0].point` (poseval drops it).
        iscrowd: COCO crowd flag.
    """

    keypoints: np.ndarray
    present: np.ndarray
    scores: np.ndarray
    has_score: np.ndarray
    head_box: tuple | None = None
    bbox: tuple | None = None
    track_id: Any = None
    person_id: Any = None
    score: float | None = None
    ann_id: Any = None
    has_points: bool = True
    iscrowd: bool = False

    @classmethod
    def from_arrays(cls, keypoints, scores=None, **kw) -> "Person":
        """A person from `[17, 2|3]` coordinates (flag 1 when absent) and optional `[17]` scores.

        Joints stored as (0, 0, 0) are absent, exactly as in a PT18 file.
        """
        kp = np.asarray(keypoints, dtype=np.float64)
        if kp.shape not in ((NUM_SLOTS, 2), (NUM_SLOTS, 3)):
            raise ValueError(f"keypoints must be [17, 2] or [17, 3], got {list(kp.shape)}")
        if kp.shape[1] == 2:
            kp = np.concatenate([kp, np.ones((NUM_SLOTS, 1))], axis=1)
        present = ~((kp[:, 0] == 0) & (kp[:, 1] == 0) & (kp[:, 2] == 0))
        if scores is None:
            sc, has = np.full(NUM_SLOTS, np.nan), np.zeros(NUM_SLOTS, bool)
        else:
            sc, has = np.asarray(scores, dtype=np.float64).reshape(NUM_SLOTS).copy(), np.ones(NUM_SLOTS, bool)
        return cls(kp, present, sc, has, **kw)


@dataclass
class Frame:
    """One image of a video. `index` is the frame number from the file name (PT18 0-based, PT17 1-based)."""

    file_name: str
    image_id: Any = None
    index: int | None = None
    is_labeled: bool = True
    persons: list[Person] = field(default_factory=list)
    ignore_regions: list[np.ndarray] = field(default_factory=list)  # polygons, each `[K, 2]`
    width: int | None = None
    height: int | None = None
    nframes: int | None = None


@dataclass
class Video:
    """The frames of one sequence, in file order. `name` is the sequence folder, e.g. `012834_mpii_test`."""

    name: str
    frames: list[Frame]
    source: str
    fmt: str  # "pt17" | "pt18" | "pt21"
    nframes: int | None = None
    first_frame: int = 0  # number of the sequence's first frame file (PT17 / 8-digit names: 1)


# ----------------------------------------------------------------------------------------- reading
def load_json(path) -> Any:
    """`json.load` with errors that name the file (missing, unreadable, malformed or truncated)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read file ({e})") from None
    if not text.strip():
        raise AnnotationError(f"{path}: file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (truncated file?)" if e.pos >= len(text.rstrip()) - 1 else ""
        raise AnnotationError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}{hint}") from None


def _req(obj, key, source, where, types=None):
    if not isinstance(obj, dict):
        raise AnnotationError(f"{source}: {where} should be an object, got {type(obj).__name__}")
    if key not in obj:
        raise AnnotationError(f"{source}: missing key '{key}' in {where}")
    val = obj[key]
    if types is not None and not isinstance(val, types):
        raise AnnotationError(f"{source}: '{key}' in {where} should be {_tname(types)}, got {type(val).__name__}")
    return val


def _tname(types):
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join({list: "a list", dict: "an object", str: "a string"}.get(t, t.__name__) for t in types)


def _first(lst, key, source, where):
    """PT17 stores scalars as one-element lists: `{"x": [12.5]}`."""
    val = _req(lst, key, source, where)
    if isinstance(val, list):
        if not val:
            raise AnnotationError(f"{source}: '{key}' in {where} is an empty list")
        val = val[0]
    return val


def _number(val, source, where):
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        raise AnnotationError(f"{source}: {where} should be a number, got {val!r}")
    return val


def _frame_number(file_name: str) -> int | None:
    stem = os.path.basename(file_name).split(".")[0].split("_")[0]
    return int(stem) if stem.isdigit() else None


def _sequence_name(file_name: str, source) -> str:
    seq = os.path.basename(os.path.dirname(file_name))
    return seq or Path(str(source)).stem


def _first_frame(file_name: str) -> int:
    """Frame files of PT17 (and DCPose's renamed copies) have 8 digits and start at 1; PT18 6 digits, 0."""
    stem = os.path.basename(file_name).split(".")[0]
    return 1 if len(stem) == 8 else 0


def parse_videos(data, source="<memory>") -> list[Video]:
    """Normalise one parsed PoseTrack JSON document (any of the three formats) into `Video`s."""
    if isinstance(data, dict) and "annolist" in data:
        return _parse_pt17(data, source)
    if isinstance(data, dict) and ("images" in data or "annotations" in data):
        return _parse_pt18(data, source)
    raise AnnotationError(
        f"{source}: neither PoseTrack17 (key 'annolist') nor PoseTrack18/21 (keys 'images', 'annotations')"
    )


def _slot_table(categories, source) -> list:
    """Per keypoint of the file: its COCO slot (None if not a PoseTrack joint)."""
    if categories is None:
        return list(range(NUM_SLOTS))
    if not isinstance(categories, list) or not categories:
        raise AnnotationError(f"{source}: 'categories' should be a non-empty list")
    person = [c for c in categories if isinstance(c, dict) and c.get("name", "person") == "person"]
    if not person:
        raise AnnotationError(f"{source}: no 'person' entry in 'categories'")
    names = person[0].get("keypoints")
    if names is None:
        return list(range(NUM_SLOTS))
    table = [_SLOT_OF_NAME.get(n) for n in names]
    missing = [POSETRACK.joints[s] for s in POSEVAL_TO_SLOT if s not in table]
    if missing:
        raise AnnotationError(f"{source}: categories[0].keypoints lacks the PoseTrack joints {missing}")
    return table


def _parse_pt18(data, source) -> list[Video]:
    images = _req(data, "images", source, "the top level", list)
    anns = _req(data, "annotations", source, "the top level", list)
    table = _slot_table(data.get("categories"), source)
    fmt = "pt18"
    videos: dict[str, Video] = {}
    by_id: dict[Any, Frame] = {}
    non_finite: list[int] = []  # per person: joints with a null / NaN / inf coordinate
    for i, im in enumerate(images):
        where = f"images[{i}]"
        name = _req(im, "file_name", source, where, str)
        image_id = _req(im, "id", source, where)
        if image_id in by_id:
            raise AnnotationError(f"{source}: image id {image_id} appears twice in 'images'")
        xs, ys = im.get("ignore_regions_x"), im.get("ignore_regions_y")
        regions = []
        if xs is not None and ys is not None:
            if not isinstance(xs, list) or not isinstance(ys, list):
                raise AnnotationError(f"{source}: ignore_regions_x/_y in {where} should be lists of polygons")
            for px, py in zip(xs, ys):
                what = f"an ignore-region point in {where}"
                pts = [(_number(x, source, what), _number(y, source, what)) for x, y in zip(px, py)]
                regions.append(np.array(pts, dtype=np.float64).reshape(-1, 2))
        fmt = "pt21" if "has_labeled_person" in im else fmt
        nframes = im.get("nframes")
        frame = Frame(name, image_id, _frame_number(name), bool(im.get("is_labeled", True)), [], regions,
                      im.get("width"), im.get("height"), nframes)  # fmt: skip
        by_id[image_id] = frame
        seq = _sequence_name(name, source)
        if seq not in videos:
            videos[seq] = Video(seq, [], str(source), fmt, None, _first_frame(name))
        videos[seq].frames.append(frame)
    for j, ann in enumerate(anns):
        where = f"annotations[{j}]"
        image_id = _req(ann, "image_id", source, where)
        if image_id not in by_id:
            raise AnnotationError(f"{source}: {where} refers to image_id {image_id}, which is not in 'images'")
        fmt = "pt21" if "person_id" in ann else fmt
        by_id[image_id].persons.append(_parse_pt18_person(ann, table, source, where, non_finite))
    _warn_non_finite(source, sum(non_finite))
    for v in videos.values():
        v.fmt = fmt
        v.nframes = _check_nframes(v, source)
    return list(videos.values())


def _parse_pt18_person(ann, table, source, where, non_finite: list) -> Person:
    raw = _req(ann, "keypoints", source, where, list)
    if len(raw) != 3 * len(table):
        raise AnnotationError(
            f"{source}: {where} has {len(raw)} keypoint values, expected {3 * len(table)} (3 per joint)"
        )
    try:
        kp_file = np.asarray(raw, dtype=np.float64).reshape(len(table), 3)
    except (TypeError, ValueError):
        raise AnnotationError(f"{source}: {where} has non-numeric keypoints") from None
    bad = ~np.isfinite(kp_file[:, :2]).all(axis=1)  # null reads as NaN
    kp_file[bad] = 0.0
    non_finite.append(int(bad.sum()))
    scores_raw = ann.get("scores")
    if scores_raw:  # poseval: an empty or missing list means "no scores"
        if not isinstance(scores_raw, list):
            raise AnnotationError(f"{source}: 'scores' in {where} should be a list of {len(table)} numbers, "
                                  f"got {scores_raw!r}")  # fmt: skip
        if len(scores_raw) < len(table):
            raise AnnotationError(f"{source}: {where} has {len(scores_raw)} scores for {len(table)} keypoints")
        scores_file = np.array([float(_number(s, source, f"a score in {where}")) for s in scores_raw[: len(table)]])
    else:
        scores_file = None
    kp = np.zeros((NUM_SLOTS, 3))
    sc, has = np.full(NUM_SLOTS, np.nan), np.zeros(NUM_SLOTS, bool)
    for k, slot in enumerate(table):
        if slot is not None:
            kp[slot] = kp_file[k]
            if scores_file is not None:
                sc[slot], has[slot] = scores_file[k], True
    present = ~((kp[:, 0] == 0) & (kp[:, 1] == 0) & (kp[:, 2] == 0))
    head = ann.get("bbox_head")
    if head is not None:
        head = _box(head, source, f"'bbox_head' of {where}")
        head = (head[0], head[1], head[0] + head[2], head[1] + head[3])
    bbox = ann.get("bbox")
    bbox = _box(bbox, source, f"'bbox' of {where}") if bbox is not None else None
    return Person(kp, present, sc, has, head, bbox, ann.get("track_id"), ann.get("person_id"), ann.get("score"),
                  ann.get("id"), True, bool(ann.get("iscrowd", False)))  # fmt: skip


def _box(box, source, where) -> tuple:
    if not isinstance(box, list) or len(box) != 4:
        raise AnnotationError(f"{source}: {where} should be [x, y, w, h], got {box!r}")
    return tuple(_number(v, source, where) for v in box)


def _parse_pt17(data, source) -> list[Video]:
    annolist = _req(data, "annolist", source, "the top level", list)
    videos: dict[str, Video] = {}
    non_finite: list[int] = []
    for i, fr in enumerate(annolist):
        where = f"annolist[{i}]"
        image = _req(fr, "image", source, where, (list, dict))
        image = image[0] if isinstance(image, list) and image else image
        name = _req(image, "name", source, f"{where}.image", str)
        labeled = fr.get("is_labeled", [1])
        labeled = bool(labeled[0] if isinstance(labeled, list) and labeled else labeled)
        regions = []
        for r, reg in enumerate(fr.get("ignore_regions") or []):
            rw = f"{where}.ignore_regions[{r}]"
            pts = _req(reg, "point", source, rw, list)
            xy = [(_number(_first(p, "x", source, rw), source, rw), _number(_first(p, "y", source, rw), source, rw))
                  for p in pts]  # fmt: skip
            regions.append(np.array(xy, dtype=np.float64).reshape(-1, 2))
        rects = fr.get("annorect") or []
        persons = [_parse_pt17_person(p, source, f"{where}.annorect[{k}]", non_finite) for k, p in enumerate(rects)]
        imgnum = fr.get("imgnum")
        frame = Frame(name, imgnum[0] if isinstance(imgnum, list) and imgnum else imgnum, _frame_number(name),
                      labeled, persons, regions)  # fmt: skip
        seq = _sequence_name(name, source)
        if seq not in videos:
            videos[seq] = Video(seq, [], str(source), "pt17", None, 1)
        videos[seq].frames.append(frame)
    _warn_non_finite(source, sum(non_finite))
    return list(videos.values())


def _parse_pt17_person(rect, source, where, non_finite: list) -> Person:
    kp = np.zeros((NUM_SLOTS, 3))
    sc, has = np.full(NUM_SLOTS, np.nan), np.zeros(NUM_SLOTS, bool)
    present = np.zeros(NUM_SLOTS, bool)
    ap = rect.get("annopoints") if isinstance(rect, dict) else None
    has_points = bool(isinstance(ap, list) and ap and isinstance(ap[0], dict) and "point" in ap[0])
    if has_points and not isinstance(ap[0]["point"], list):
        raise AnnotationError(f"{source}: {where}.annopoints[0].point should be a list")
    for n, pt in enumerate(ap[0]["point"] if has_points else []):
        pwhere = f"{where}.annopoints[0].point[{n}]"
        pid = _first(pt, "id", source, pwhere)
        slot = POSEVAL_TO_SLOT[pid] if isinstance(pid, int) and 0 <= pid < 15 else None
        if slot is None or present[slot]:  # poseval only looks up ids 0..14, first occurrence wins
            continue
        x, y = (_first(pt, c, source, pwhere) for c in ("x", "y"))
        if x is None or y is None or not (math.isfinite(_number(x, source, pwhere + ".x"))
                                          and math.isfinite(_number(y, source, pwhere + ".y"))):  # fmt: skip
            non_finite.append(1)  # no value: the joint is absent
            continue
        kp[slot] = (x, y, 1.0)
        present[slot] = True
        if "score" in pt:
            sc[slot], has[slot] = float(_number(_first(pt, "score", source, pwhere), source, pwhere + ".score")), True
    head = None
    if all(k in rect for k in ("x1", "y1", "x2", "y2")):
        head = tuple(_number(_first(rect, k, source, where), source, f"{where}.{k}") for k in ("x1", "y1", "x2", "y2"))
    track = rect.get("track_id")
    track = track[0] if isinstance(track, list) and track else track
    score = rect.get("score")
    score = score[0] if isinstance(score, list) and score else score
    return Person(kp, present, sc, has, head, None, track, None, score, None, has_points)


def _check_nframes(video: Video, source) -> int | None:
    counts = {f.nframes for f in video.frames if f.nframes is not None}
    if len(counts) > 1:
        raise AnnotationError(f"{source}: frame-count mismatch in sequence {video.name}: 'nframes' is {sorted(counts)}")
    if not counts:
        return None
    n = counts.pop()
    for f in video.frames:
        if f.index is not None and not video.first_frame <= f.index < video.first_frame + n:
            raise AnnotationError(
                f"{source}: frame-count mismatch in sequence {video.name}: {f.file_name} is frame {f.index} "
                f"but 'nframes' is {n}"
            )
    return n


def annotation_files(paths) -> list[Path]:
    """Expand a file, a folder (its `*.json`, sorted) or a list of those."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files = sorted(p.glob("*.json"))
            if not files:
                raise AnnotationError(f"{p}: folder holds no *.json annotation files")
            out += files
        elif p.exists():
            out.append(p)
        else:
            raise AnnotationError(f"{p}: no such file or folder")
    return out


def load_annotations(paths) -> list[Video]:
    """Read every video of every file (file, folder of per-video files, or a list of them)."""
    return [v for f in annotation_files(paths) for v in parse_videos(load_json(f), f)]


def load_detections(path, score_threshold: float = 0.0, category_id: int = 1) -> list[dict]:
    """Read a COCO-results detection file: a list of {image_id | image_name, bbox xywh, score, category_id}.

    Keeps category `category_id` and `score >= score_threshold` (DSTA keeps >= 0.2, no NMS).

    Returns:
        list of dicts with keys `bbox` (x, y, w, h), `score`, and `image_id` and/or `image_name`.
    """
    data = load_json(path)
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: a detection file should hold a list of detections")
    out = []
    for i, det in enumerate(data):
        where = f"detection [{i}]"
        if not isinstance(det, dict):
            raise AnnotationError(f"{path}: {where} should be an object, got {type(det).__name__}")
        if "image_id" not in det and "image_name" not in det:
            raise AnnotationError(f"{path}: missing key 'image_id' (or 'image_name') in {where}")
        score = float(_number(_req(det, "score", path, where), path, f"'score' of {where}"))
        bbox = _box(_req(det, "bbox", path, where), path, f"'bbox' of {where}")
        if det.get("category_id", 1) != category_id or not score >= score_threshold:
            continue
        out.append({k: det[k] for k in ("image_id", "image_name") if k in det} | {"bbox": bbox, "score": score})
    return out


def iter_persons(videos: Iterable[Video]):
    """Yield (video, frame, person) over everything read."""
    for v in videos:
        for f in v.frames:
            for p in f.persons:
                yield v, f, p

"""PoseTrack multi-person pose AP, computed exactly as the official poseval does, without poseval.

    python examples/dsta/posetrack_eval.py --gt GT_DIR --pred PRED_DIR [--json OUT.json]

GT_DIR holds one annotation file per video (PoseTrack17 `annolist` or PoseTrack18/21); PRED_DIR holds
the prediction file of the same name for each (either format; `posetrack_io.write_predictions` writes
them). Prints Head / Shoulder / Elbow / Wrist / Hip / Knee / Ankle / Total AP in percent.

The rules, in poseval's order (docs/official_code.md §6), each implemented below:

1. files pair by name; frame i of a prediction file is frame i of its GT file (counts must agree);
2. GT frames without persons (unlabeled frames) are dropped with their predictions;
3. GT and predicted joints strictly inside an ignore polygon of the GT frame are removed (a point on
   the polygon's boundary is kept, like shapely's `contains`); persons left without joints go;
4. head size = 0.6 x head-box diagonal; a joint matches if distance / head size <= 0.5 (PCKh@0.5);
5. assignment ignores scores: each prediction keeps its best GT by PCKh (ties: first), then each GT
   takes the prediction with the highest remaining PCKh (ties: lowest index); 0 means unassigned;
6. every joint of every prediction is a detection: (score, matched-to-its-GT) or (score, 0); a joint
   without a score gets -9999; predictions in frames without GT are all false positives;
7. per joint, detections of ALL frames of ALL sequences are ranked together (numpy `argsort`,
   reversed), VOC all-point AP x 100; a joint with GT but no detection has AP 0, one with detections
   but no GT has AP NaN; Total = mean of the non-NaN joint APs; each column = mean of its joints.

Identical means: the same detections in the same order, the same float operations, the same numpy
sort. Deliberate differences, all on inputs poseval mishandles: folders are read in sorted order
(poseval uses `glob`, whose order depends on the file system; it only matters for tied scores), a file
holding several videos is evaluated whole (poseval silently keeps its first video), a NaN joint score
ranks last (below -9999; numpy's sort would rank it first) and a null / NaN joint is absent (see
`posetrack_io`). Where poseval's rule stands but is likely a mistake in the input, the numbers stay
identical and an `EvaluationWarning` says so (also listed in the result's "warnings"): frames whose
frame numbers differ but are paired by position, NaN scores, GT persons whose head box has zero size
(head size 0: no prediction can match them).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
from dsta.posetrack_io import (
    POSEVAL_NAMES, POSEVAL_TO_SLOT, AnnotationError, Frame, Video, _first_frame, annotation_files, load_json,
    parse_videos,
)  # fmt: skip

__all__ = ["EvaluationWarning", "evaluate", "evaluate_videos", "match_frame", "head_size", "points_in_polygon",
           "compute_rpc", "voc_ap", "COLUMNS", "MIN_SCORE", "main"]  # fmt: skip

MIN_SCORE = -9999.0  # poseval's fallback for a predicted joint without a score
DIST_THRESH = 0.5  # PCKh@0.5
MAX_TRACK_ID = 10000
NUM_JOINTS = 15
#: Column -> poseval joint ids averaged (in poseval's order: it matters for the last bit of the mean).
COLUMNS = {
    "Head": (14, 12, 13), "Shoulder": (8, 9), "Elbow": (7, 10), "Wrist": (6, 11),
    "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5),
}  # fmt: skip
_SHORT = {"Head": "Head", "Shoulder": "Shou", "Elbow": "Elb", "Wrist": "Wri", "Hip": "Hip", "Knee": "Knee",
          "Ankle": "Ankl", "Total": "Total"}  # fmt: skip
_CCW_ERRBOUND = (3.0 + 16.0 * 2.0**-53) * 2.0**-53  # Shewchuk's orient2d filter bound


class EvaluationWarning(UserWarning):
    """An input the evaluator scores as poseval does (or ranks last), but which is probably a mistake."""


class _Issues:
    """Counts of suspicious inputs, each with its first location; one warning per kind at the end."""

    TEXT = {
        "frame_order": "{n} frame(s) paired by position whose frame numbers differ (first: {where}); poseval "
                       "pairs frames by position too, so the AP is as poseval's, but the prediction file's frames "
                       "are probably not in the GT file's order",
        "nan_score": "{n} predicted joint(s) with a NaN score (first: {where}) are ranked last",
        "zero_head": "{n} GT person(s) with a zero-size or non-finite head box (first: {where}): no prediction "
                     "can match them (head size 0), as in poseval",
    }  # fmt: skip

    def __init__(self):
        self.seen: dict[str, list] = {}

    def add(self, kind: str, n: int, where: str) -> None:
        if n:
            entry = self.seen.setdefault(kind, [0, where])
            entry[0] += int(n)

    def emit(self) -> list[str]:
        messages = [self.TEXT[k].format(n=n, where=w) for k, (n, w) in self.seen.items()]
        for m in messages:
            warnings.warn(m, EvaluationWarning, stacklevel=3)
        return messages


# --------------------------------------------------------------------------------- geometry
def head_size(box) -> float:
    """poseval's reference length: 0.6 x the head box diagonal. `box` = (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    return 0.6 * np.linalg.norm(np.subtract([x2, y2], [x1, y1]))


def _orient_exact(ax, ay, bx, by, cx, cy) -> int:
    f = Fraction
    det = (f(ax) - f(cx)) * (f(by) - f(cy)) - (f(ay) - f(cy)) * (f(bx) - f(cx))
    return (det > 0) - (det < 0)


def points_in_polygon(points, polygon) -> np.ndarray:
    """True where a point lies strictly inside the polygon (shapely / GEOS `Polygon.contains`).

    Even-odd ray crossing as GEOS counts it, with an exact orientation test: a point on an edge or a
    vertex is on the boundary, hence not inside. The ring is closed implicitly; a self-intersecting ring
    is read by parity, as GEOS does.

    Args:
        points: `[N, 2]` x, y.
        polygon: `[K, 2]` vertices. K = 0 is an empty polygon (contains nothing); K = 1 or 2 raises,
            as shapely does.

    Returns:
        `[N]` bool.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if 0 < len(poly) < 3:
        raise ValueError(f"an ignore polygon needs at least 3 points, got {len(poly)} (shapely refuses it too)")
    if len(poly) == 0 or len(pts) == 0:
        return np.zeros(len(pts), bool)
    if not np.array_equal(poly[0], poly[-1]):
        poly = np.concatenate([poly, poly[:1]])
    p1x, p1y, p2x, p2y = poly[:-1, 0], poly[:-1, 1], poly[1:, 0], poly[1:, 1]  # edges `[E]`
    px, py = pts[:, :1], pts[:, 1:]  # `[N, 1]`
    live = ~((p1x < px) & (p2x < px))  # edges not entirely left of the point
    on_vertex = live & (px == p2x) & (py == p2y)
    horiz = live & ~on_vertex & (p1y == py) & (p2y == py)
    on_horiz = horiz & (px >= np.minimum(p1x, p2x)) & (px <= np.maximum(p1x, p2x))
    straddle = live & ~on_vertex & ~horiz & (((p1y > py) & (p2y <= py)) | ((p2y > py) & (p1y <= py)))
    with np.errstate(invalid="ignore", over="ignore"):
        left, right = (p1x - px) * (p2y - py), (p1y - py) * (p2x - px)
        det = left - right
        sign = np.sign(det).astype(np.int64)
        unsure = straddle & ~(np.abs(det) > _CCW_ERRBOUND * (np.abs(left) + np.abs(right)))
    for i, e in zip(*np.nonzero(unsure)):
        coords = (p1x[e], p1y[e], p2x[e], p2y[e], px[i, 0], py[i, 0])
        sign[i, e] = _orient_exact(*coords) if all(map(math.isfinite, coords)) else 0
    on_edge = straddle & (sign == 0)
    sign = np.where(p2y < p1y, -sign, sign)
    crossings = (straddle & (sign > 0)).sum(axis=1)
    boundary = (on_vertex | on_horiz | on_edge).any(axis=1)
    return ~boundary & (crossings % 2 == 1) & np.isfinite(pts).all(axis=1)


# --------------------------------------------------------------------------------- matching
def match_frame(gt_xy, gt_has, head_sizes, pr_xy, pr_has):
    """poseval's per-frame assignment of predicted to GT persons (scores play no part).

    Args:
        gt_xy: `[G, 15, 2]` GT joints (poseval joint order); gt_has: `[G, 15]` bool annotated.
        head_sizes: `[G]` from `head_size`.
        pr_xy: `[P, 15, 2]` predicted joints; pr_has: `[P, 15]` bool present.

    Returns:
        gt_of_pred: `[P]` int, the GT person each prediction is assigned to, -1 if none.
        labels: `[P, 15]` bool, joint matched (distance <= 0.5 head sizes) to the assigned GT.
    """
    gt_xy, pr_xy = np.asarray(gt_xy, np.float64), np.asarray(pr_xy, np.float64)
    gt_has, pr_has = np.asarray(gt_has, bool), np.asarray(pr_has, bool)
    hs = np.asarray(head_sizes, np.float64)
    P, G = len(pr_xy), len(gt_xy)
    gt_of_pred, labels = np.full(P, -1), np.zeros((P, NUM_JOINTS), bool)
    if P == 0 or G == 0:
        return gt_of_pred, labels
    both = pr_has[:, None, :] & gt_has[None, :, :]  # `[P, G, 15]`
    diff = gt_xy[None] - pr_xy[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        dist = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]) / hs[None, :, None]
        # at the threshold, redo the division exactly as poseval does (np.linalg.norm may round differently)
        for i, j, k in zip(*np.nonzero(both & (np.abs(dist - DIST_THRESH) <= 1e-6))):
            dist[i, j, k] = np.linalg.norm(np.subtract(gt_xy[j, k], pr_xy[i, k])) / hs[j]
    match = both & (dist <= DIST_THRESH)
    n_gt = gt_has.sum(axis=1)
    pck = 1.0 * match.sum(axis=2)
    pck = np.where(n_gt[None, :] > 0, pck / np.maximum(n_gt, 1)[None, :], pck)
    best = pck.argmax(axis=1)  # each prediction keeps its best GT only (ties: first)
    kept = np.zeros_like(pck)
    kept[np.arange(P), best] = pck[np.arange(P), best]
    pred_of_gt = kept.argmax(axis=0)  # each GT takes its best remaining prediction (ties: lowest index)
    pred_of_gt[kept.max(axis=0) == 0] = -1
    for j, i in enumerate(pred_of_gt):
        if i >= 0:
            gt_of_pred[i] = j
            labels[i] = match[i, j]
    return gt_of_pred, labels


# --------------------------------------------------------------------------------- AP
def compute_rpc(scores, labels, n_gt):
    """Precision / recall along the detections ranked by score (numpy argsort reversed, as poseval).

    Returns:
        precision `[D]`, recall `[D]` (NaN / inf when `n_gt` is 0), order `[D]`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = scores.argsort()[::-1]
    tp = np.cumsum(np.asarray(labels)[order] == 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / np.float64(n_gt)
    precision = tp / np.arange(1, len(order) + 1)
    return precision, recall, order


def voc_ap(recall, precision) -> float:
    """VOC all-point interpolated AP in [0, 1]: precision made monotone from the right, summed at
    the recall change points."""
    n = len(precision)
    mpre = np.zeros(n + 2)
    mpre[1 : n + 1] = precision
    mrec = np.zeros(n + 2)
    mrec[1 : n + 1] = recall
    mrec[n + 1] = 1.0
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.argwhere(~np.equal(mrec[1:], mrec[:-1])).flatten() + 1
    return np.sum(np.multiply(np.subtract(mrec[idx], mrec[idx - 1]), mpre[idx]))


# --------------------------------------------------------------------------------- frames
def _view(persons):
    """poseval's view of a frame's persons: `[N, 15, 2]` xy, `[N, 15]` present, `[N, 15]` scores."""
    persons = [p for p in persons if p.has_points]
    slots = list(POSEVAL_TO_SLOT)
    xy = np.array([p.keypoints[slots, :2] for p in persons]).reshape(-1, NUM_JOINTS, 2)
    has = np.array([p.present[slots] for p in persons], dtype=bool).reshape(-1, NUM_JOINTS)
    score = np.array([np.where(p.has_score[slots], p.scores[slots], MIN_SCORE) for p in persons])
    score = score.reshape(-1, NUM_JOINTS)
    return persons, xy, has, score


def frame_arrays(gf: Frame, pf: Frame, where: str):
    """One labelled frame as poseval matches it: GT and predicted persons with joints, joints inside
    the GT's ignore regions dropped, then persons left with no joint dropped.

    Returns:
        (GT persons kept, GT xy `[G, 15, 2]`, GT present `[G, 15]`, predicted xy `[P, 15, 2]`, predicted
        present `[P, 15]`, predicted scores `[P, 15]`, NaN as given).
    """
    gt, gxy, ghas, _ = _view(gf.persons)
    _, pxy, phas, psc = _view(pf.persons)
    ghas, gkeep = _drop_ignored(gxy, ghas, gf.ignore_regions, where)
    phas, pkeep = _drop_ignored(pxy, phas, gf.ignore_regions, where)
    gt = [p for p, k in zip(gt, gkeep) if k]
    return gt, gxy[gkeep], ghas[gkeep], pxy[pkeep], phas[pkeep], psc[pkeep]


def _position(frame: Frame):
    """0-based frame position from the file name (8-digit names count from 1, 6-digit ones from 0)."""
    return None if frame.index is None else frame.index - _first_frame(frame.file_name)


def _drop_ignored(xy, has, regions, where):
    if not regions:
        return has, np.ones(len(has), bool)
    flat = xy.reshape(-1, 2)
    inside = np.zeros(len(flat), bool)
    for poly in regions:
        try:
            inside |= points_in_polygon(flat, poly)
        except ValueError as e:
            raise AnnotationError(f"{where}: {e}") from None
    has = has & ~inside.reshape(has.shape)
    return has, has.any(axis=1)


def evaluate_videos(pairs) -> dict:
    """AP of aligned (GT video, prediction video) pairs. See `evaluate` for the result."""
    scores = [[] for _ in range(NUM_JOINTS)]
    labels = [[] for _ in range(NUM_JOINTS)]
    n_gt = np.zeros(NUM_JOINTS, np.int64)
    counts = {"sequences": 0, "frames": 0, "gt_persons": 0, "predicted_persons": 0}
    issues = _Issues()
    for gv, pv in pairs:
        counts["sequences"] += 1
        if len(gv.frames) != len(pv.frames):
            raise AnnotationError(f"{pv.source}: frame-count mismatch: {len(pv.frames)} prediction frames "
                                  f"but {len(gv.frames)} GT frames in {gv.source}")  # fmt: skip
        for t, (gf, pf) in enumerate(zip(gv.frames, pv.frames)):
            if _position(gf) != _position(pf) and None not in (_position(gf), _position(pf)):
                issues.add("frame_order", 1, f"frame {t} of {pv.source} is {pf.file_name}, of {gv.source} "
                           f"{gf.file_name}")  # fmt: skip
            if not gf.persons:  # unlabeled frame (poseval's cleanupData)
                continue
            counts["frames"] += 1
            where = f"{gv.source}: frame {gf.file_name}"
            gt, gxy, ghas, pxy, phas, psc = frame_arrays(gf, pf, where)
            nan = np.isnan(psc)
            issues.add("nan_score", (nan & phas).sum(), where)
            psc = np.where(nan, -np.inf, psc)  # ranked last, not first (numpy sorts NaN to the end)
            counts["gt_persons"] += len(gt)
            counts["predicted_persons"] += len(pxy)
            n_gt += ghas.sum(axis=0)
            if len(gt) and len(pxy):
                if any(p.head_box is None for p in gt):
                    raise AnnotationError(f"{where}: a GT person has no head box ('bbox_head' or x1/y1/x2/y2)")
                sizes = np.array([head_size(p.head_box) for p in gt], np.float64)
                issues.add("zero_head", (~(sizes > 0) | ~np.isfinite(sizes)).sum(), where)
                _, lab = match_frame(gxy, ghas, sizes, pxy, phas)
            else:
                lab = np.zeros(phas.shape, bool)
            for k in range(NUM_JOINTS):
                sel = phas[:, k]
                scores[k].append(psc[sel, k])
                labels[k].append(lab[sel, k])
    ap, pre, rec = np.zeros((NUM_JOINTS + 1, 1)), np.zeros((NUM_JOINTS + 1, 1)), np.zeros((NUM_JOINTS + 1, 1))
    for k in range(NUM_JOINTS):
        s = np.concatenate(scores[k]) if scores[k] else np.zeros(0)
        lab = np.concatenate(labels[k]).astype(np.int8) if labels[k] else np.zeros(0, np.int8)
        if len(s):
            precision, recall, _ = compute_rpc(s, lab, float(n_gt[k]))
            ap[k] = voc_ap(recall, precision) * 100
            pre[k], rec[k] = precision[-1] * 100, recall[-1] * 100
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all joints NaN -> mean of nothing -> NaN, as poseval
        for arr in (ap, pre, rec):
            arr[NUM_JOINTS] = arr[np.argwhere(~np.isnan(arr[:NUM_JOINTS, 0])), 0].mean()
        out = {col: float(ap[list(ids), 0].mean()) for col, ids in COLUMNS.items()}
    out["Total"] = float(ap[NUM_JOINTS, 0])
    out["per_joint"] = {POSEVAL_NAMES[k]: float(ap[k, 0]) for k in range(NUM_JOINTS)}
    out["precision"] = {POSEVAL_NAMES[k]: float(pre[k, 0]) for k in range(NUM_JOINTS)} | {"total": float(pre[-1, 0])}
    out["recall"] = {POSEVAL_NAMES[k]: float(rec[k, 0]) for k in range(NUM_JOINTS)} | {"total": float(rec[-1, 0])}
    counts["gt_joints"] = int(n_gt.sum())
    counts["gt_joints_per_joint"] = {POSEVAL_NAMES[k]: int(n_gt[k]) for k in range(NUM_JOINTS)}
    counts["predicted_joints"] = int(sum(len(x) for s in scores for x in s))
    out["counts"] = counts
    out["warnings"] = issues.emit()
    return out


# --------------------------------------------------------------------------------- files
def _check_tracks(video: Video, source, is_pred: bool):
    for fr in video.frames:
        ids = [p.track_id for p in fr.persons if p.track_id is not None]
        numeric = [isinstance(t, (int, float)) and not isinstance(t, bool) for t in ids]
        for t, num in zip(ids, numeric):
            if num and t >= MAX_TRACK_ID:
                raise AnnotationError(
                    f"{source}: track_id {t} in {fr.file_name} is >= {MAX_TRACK_ID} (poseval refuses it)"
                )
        if is_pred and len(ids) != len({float(t) if num else json.dumps(t) for t, num in zip(ids, numeric)}):
            raise AnnotationError(f"{source}: non-unique track ids {ids} in frame {fr.file_name}")


def load_pairs(gt, pred) -> list[tuple[Video, Video]]:
    """Read GT and prediction files and pair their videos (poseval's pairing, see the module doc)."""
    gt_files = annotation_files(gt)
    pred_paths = [Path(p) for p in ([pred] if isinstance(pred, (str, Path)) else pred)]
    by_name, single = {}, None
    for p in pred_paths:
        if p.is_dir():
            by_name.update({f.name: f for f in sorted(p.glob("*.json"))})
        elif p.exists():
            by_name[p.name] = p
        else:
            raise AnnotationError(f"{p}: prediction file or folder does not exist")
    if len(gt_files) == 1 and len(pred_paths) == 1 and pred_paths[0].is_file():
        single = pred_paths[0]  # one GT file against one prediction file: pair them whatever their names
    pairs = []
    for gf in gt_files:
        gvids = parse_videos(load_json(gf), gf)
        for v in gvids:
            _check_tracks(v, gf, False)
        pf = single or by_name.get(gf.name)
        if pf is not None:
            pvids = parse_videos(load_json(pf), pf)
            if len(gvids) == 1 and len(pvids) == 1:
                matched = [(gvids[0], pvids[0], pf)]
            else:
                named = {v.name: v for v in pvids}
                missing = [v.name for v in gvids if v.name not in named]
                if missing:
                    raise AnnotationError(f"{pf}: holds no prediction for the sequences {missing} of {gf}")
                matched = [(v, named[v.name], pf) for v in gvids]
        else:
            if len(gvids) == 1 or not all(f"{v.name}.json" in by_name for v in gvids):
                where = ", ".join(map(str, pred_paths))
                raise AnnotationError(f"prediction file {gf.name} (for GT {gf}) does not exist in {where}")
            matched = []
            for v in gvids:
                p = by_name[f"{v.name}.json"]
                pv = parse_videos(load_json(p), p)
                matched.append((v, pv[0], p))
        for gv, pv, p in matched:
            if len(pv.frames) != len(gv.frames):
                raise AnnotationError(
                    f"{p}: frame-count mismatch: {len(pv.frames)} prediction frames "
                    f"but {len(gv.frames)} GT frames in {gf}"
                )
            _check_tracks(pv, p, True)
            pairs.append((gv, pv))
    return pairs


def evaluate(gt, pred) -> dict:
    """poseval's multi-person pose AP.

    Args:
        gt: a GT folder (`*.json`, one per video), a file, or a list of files / folders.
        pred: a prediction folder, a file, or a list; each GT file pairs with the prediction file of
            the same name (one GT file and one prediction file pair whatever their names).

    Returns:
        dict with "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total" (AP in percent,
        NaN where poseval gives NaN), "per_joint" (15 joint APs by name, poseval's order; head_bottom is
        poseval's "neck"), "precision" / "recall" (at the last detection, per joint and total) and
        "counts" (sequences, evaluated frames, GT persons and joints, per-joint GT joints, predictions)
        and "warnings" (the `EvaluationWarning` messages, also issued as warnings).

    Raises:
        AnnotationError: unreadable or malformed file, missing prediction file, frame-count mismatch.
    """
    return evaluate_videos(load_pairs(gt, pred))


# --------------------------------------------------------------------------------- CLI
def format_table(result: dict, decimals: int = 1) -> str:
    """The poseval-style table: a header row and the AP row."""
    keys = list(COLUMNS) + ["Total"]
    width = max(6, decimals + 5)
    head = "".join(f"{_SHORT[k]:>{width}}" for k in keys)
    row = "".join(f"{result[k]:>{width}.{decimals}f}" for k in keys)
    return f"{'':8}{head}\n{'AP (%)':8}{row}"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description="PoseTrack multi-person pose AP, identical to the official poseval (no poseval needed).",
        epilog="example: python examples/dsta/posetrack_eval.py --gt data/posetrack18/annotations/val "
        "--pred out/val_predictions --json out/ap.json",
    )
    parser.add_argument("--gt", required=True, nargs="+", help="GT folder of per-video *.json files (PoseTrack17 "
                        "annolist or PoseTrack18/21), or GT files")  # fmt: skip
    parser.add_argument("--pred", required=True, nargs="+", help="prediction folder (one file per GT file, same "
                        "name, same frames), or prediction files")  # fmt: skip
    parser.add_argument("--json", metavar="OUT.json", help="also write the 8 columns, per_joint, precision, recall "
                        "and counts here (NaN written as null)")  # fmt: skip
    parser.add_argument("--decimals", type=int, default=1, help="decimals in the printed table (default 1, as poseval)")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate(args.gt, args.pred)
    except AnnotationError as e:
        parser.exit(2, f"error: {e}\n")
    for w in caught:  # one line each, without warnings' source-line echo
        print(f"warning: {w.message}", file=sys.stderr)
    c = result["counts"]
    print(f"{c['sequences']} sequences, {c['frames']} labeled frames, {c['gt_persons']} GT persons, "
          f"{c['gt_joints']} GT joints, {c['predicted_persons']} predicted persons")  # fmt: skip
    print(format_table(result, args.decimals))
    if args.json:
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(_jsonable(result), indent=2), encoding="utf-8")
        except OSError as e:
            parser.exit(2, f"error: cannot write --json {args.json}: {e.strerror or e}\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

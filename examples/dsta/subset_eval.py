"""AP on a subset of the GT joints (e.g. the joints a key frame spoils but a neighbour shows), with
poseval's person matching unchanged.

    subsets = benchmark_stats.joint_subsets(benchmark_stats.load_metadata(root, "val"))
    result = evaluate_subsets(gt_dir, pred_dir, subsets)   # {"rescuable": {...AP table...}, "clean": ...}

How a subset is scored, frame by frame, exactly as `posetrack_eval` scores all joints except for the
last step: unlabelled frames dropped, ignore regions applied, predicted persons assigned to GT persons
by poseval's PCKh matching over ALL annotated joints (so the assignment does not depend on the subset);
then a GT joint counts as a positive only when it is in the subset, and a predicted joint is a
detection of the subset only when the GT joint it was assigned to is in the subset (a hit or a miss by
PCKh@0.5, ranked by its score). Predicted joints that are assigned to no annotated GT joint (a person
matched to nobody, a joint the GT does not annotate) are false positives of the whole-split AP only: they
belong to no subset. Per joint type the detections of all frames are ranked together (VOC AP, as
poseval), and Total is the mean over joint types with positives.

With a subset that holds every annotated joint, and predictions that only give joints the GT
annotates, the result equals `posetrack_eval.evaluate` (tested).
"""
from __future__ import annotations

import warnings

import numpy as np
from dsta.posetrack_eval import (
    COLUMNS, NUM_JOINTS, compute_rpc, frame_arrays, head_size, load_pairs, match_frame, voc_ap,
)  # fmt: skip
from dsta.posetrack_io import POSEVAL_NAMES, POSEVAL_TO_SLOT, AnnotationError

__all__ = ["evaluate_subsets", "subset_ap"]

_SLOTS = list(POSEVAL_TO_SLOT)  # poseval joint k is slot _SLOTS[k] of the 17-slot layout


def subset_ap(scores, labels, n_gt) -> dict:
    """The AP table from per-joint detections: `scores[k]`, `labels[k]` lists of arrays, `n_gt` `[15]`."""
    ap = np.full(NUM_JOINTS, np.nan)
    for k in range(NUM_JOINTS):
        s = np.concatenate(scores[k]) if scores[k] else np.zeros(0)
        lab = np.concatenate(labels[k]).astype(np.int8) if labels[k] else np.zeros(0, np.int8)
        if n_gt[k] == 0:
            continue  # no positive of this type in the subset: not scored
        if len(s):
            precision, recall, _ = compute_rpc(s, lab, float(n_gt[k]))
            ap[k] = voc_ap(recall, precision) * 100
        else:
            ap[k] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no positives: NaN
        out = {col: float(np.nanmean(ap[list(ids)])) for col, ids in COLUMNS.items()}
        out["Total"] = float(np.nanmean(ap))
    out["per_joint"] = {POSEVAL_NAMES[k]: float(ap[k]) for k in range(NUM_JOINTS)}
    out["gt_joints"] = int(np.sum(n_gt))
    return out


def evaluate_subsets(gt, pred, subsets: dict[str, dict]) -> dict[str, dict]:
    """AP per subset (see the module doc).

    Args:
        gt, pred: as `posetrack_eval.evaluate` (GT folder / files; prediction folder / files).
        subsets: {name: {(sequence name, frame index, track_id): `[17]` bool in slot order}}; a GT
            person missing from a subset has none of its joints in it.

    Returns:
        {name: {"Head", ..., "Total" (AP %, NaN without positives), "per_joint", "gt_joints"}}.
    """
    names = list(subsets)
    acc = {n: ([[] for _ in range(NUM_JOINTS)], [[] for _ in range(NUM_JOINTS)], np.zeros(NUM_JOINTS, np.int64))
           for n in names}  # fmt: skip
    for gv, pv in load_pairs(gt, pred):
        for gf, pf in zip(gv.frames, pv.frames):
            if not gf.persons:
                continue
            where = f"{gv.source}: frame {gf.file_name}"
            gt_p, gxy, ghas, pxy, phas, psc = frame_arrays(gf, pf, where)
            psc = np.where(np.isnan(psc), -np.inf, psc)  # ranked last, as posetrack_eval ranks them
            if len(gt_p) and len(pxy):
                if any(p.head_box is None for p in gt_p):
                    raise AnnotationError(f"{where}: a GT person has no head box ('bbox_head' or x1/y1/x2/y2)")
                gt_of_pred, lab = match_frame(gxy, ghas, [head_size(p.head_box) for p in gt_p], pxy, phas)
            else:
                gt_of_pred, lab = np.full(len(pxy), -1), np.zeros(phas.shape, bool)
            for n in names:
                scores, labels, n_gt = acc[n]
                member = np.zeros((len(gt_p), NUM_JOINTS), bool)
                for g, p in enumerate(gt_p):
                    mask = subsets[n].get((gv.name, gf.index, p.track_id))
                    if mask is not None:
                        member[g] = np.asarray(mask, bool)[_SLOTS] & ghas[g]
                n_gt += member.sum(axis=0)
                assigned = gt_of_pred >= 0
                in_subset = np.zeros(phas.shape, bool)
                in_subset[assigned] = member[gt_of_pred[assigned]]
                sel_all = phas & in_subset
                for k in range(NUM_JOINTS):
                    sel = sel_all[:, k]
                    scores[k].append(psc[sel, k])
                    labels[k].append(lab[sel, k])
    return {n: subset_ap(*acc[n]) for n in names}

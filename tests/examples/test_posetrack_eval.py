"""The PoseTrack AP evaluator (examples/dsta/posetrack_eval.py) against poseval's documented behaviour
(docs/official_code.md §6) and the numbers official poseval gives on the real PoseTrack18 sample."""
import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
from dsta import posetrack_eval as pe
from dsta import posetrack_io as pio
from dsta import posetrack_write as pw
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from .conftest import EXAMPLE, REPO
from .posetrack_synth import EVAL_SLOTS, person, video

COLS = ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"]
# official poseval @4258a15 on the §7 regression predictions
REGRESSION = {"Head": 62.32, "Shoulder": 60.87, "Elbow": 58.58, "Wrist": 62.91, "Hip": 62.05, "Knee": 51.32,
              "Ankle": 50.00, "Total": 58.56}  # fmt: skip
GT_JOINTS = {"right_ankle": 10, "right_knee": 10, "right_hip": 13, "left_hip": 13, "left_knee": 10, "left_ankle": 10,
             "right_wrist": 11, "right_elbow": 14, "right_shoulder": 14, "left_shoulder": 14, "left_elbow": 10,
             "left_wrist": 11, "head_bottom": 14, "nose": 13, "head_top": 14}  # fmt: skip


def ev(gt_frames, pr_frames, regions=None):
    return pe.evaluate_videos([(video(gt_frames, regions=regions), video(pr_frames))])


def regression_predictions(gt_dir, out_dir):
    """§7: per GT person a copy scored 0.5 v, and a copy shifted +500 px in x scored 0.9 v."""
    out_dir.mkdir()
    for f in sorted(gt_dir.glob("*.json")):
        doc = json.loads(f.read_text())
        anns = []
        for a in doc["annotations"]:
            kp, v = a["keypoints"], a["keypoints"][2::3]
            near = dict(a, scores=[0.5 * x for x in v])
            far = dict(a, scores=[0.9 * x for x in v], track_id=a["track_id"] + 1000, keypoints=list(kp))
            for j in range(17):
                if v[j] > 0:
                    far["keypoints"][3 * j] = kp[3 * j] + 500
            anns += [near, far]
        doc["annotations"] = anns
        (out_dir / f.name).write_text(json.dumps(doc))
    return out_dir


# ------------------------------------------------------------------------------------------ real sample
def test_sample_gt_as_prediction_is_100(sample):
    gt = sample / "annotations" / "val"
    r = pe.evaluate(gt, gt)
    assert all(r[c] == 100.0 for c in COLS)
    assert all(v == 100.0 for v in r["per_joint"].values()) and len(r["per_joint"]) == 15
    c = r["counts"]
    assert (c["sequences"], c["frames"], c["gt_persons"], c["gt_joints"]) == (3, 3, 14, 181)
    assert c["gt_joints_per_joint"] == GT_JOINTS


def test_sample_ignore_region_removes_one_joint(sample):
    videos = pio.load_annotations(sample / "annotations" / "val")
    assert sum(int(p.present[pe_slots()].sum()) for _, _, p in pio.iter_persons(videos)) == 182  # before removal
    knee = [v for v in videos if v.name == "003418_mpii_test"][0].frames[0]
    p = knee.persons[0]
    inside = [pe.points_in_polygon(p.keypoints[[14], :2], poly)[0] for poly in knee.ignore_regions]
    assert p.present[14] and any(inside)  # the right knee of 003418 lies in an ignore polygon


def pe_slots():
    return list(pio.POSEVAL_TO_SLOT)


def test_sample_regression_case(sample, tmp_path):
    gt = sample / "annotations" / "val"
    r = pe.evaluate(gt, regression_predictions(gt, tmp_path / "pred"))
    assert {c: round(r[c], 2) for c in COLS} == REGRESSION
    assert r["counts"]["gt_joints"] == 181 and r["counts"]["predicted_persons"] == 28


def test_sample_merged_gt_and_pt17_gt_agree(sample, tmp_path):
    """The merged COCO-style file and PT17 conversions of the GT give the same numbers."""
    gt = sample / "annotations" / "val"
    pred = regression_predictions(gt, tmp_path / "pred")
    ref = pe.evaluate(gt, pred)
    merged = pe.evaluate(sample / "annotations" / "test_posetrack18_val.json", pred)
    pt17 = tmp_path / "pt17"
    pt17.mkdir()
    for f in sorted(gt.glob("*.json")):
        (v,) = pio.parse_videos(json.loads(f.read_text()), f)
        (pt17 / f.name).write_text(json.dumps(pw.video_to_pt17(v)))
    both17 = tmp_path / "pred17"
    both17.mkdir()
    for f in sorted(pred.glob("*.json")):
        (v,) = pio.parse_videos(json.loads(f.read_text()), f)
        (both17 / f.name).write_text(json.dumps(pw.video_to_pt17(v)))
    for r in (merged, pe.evaluate(pt17, pred), pe.evaluate(pt17, both17), pe.evaluate(gt, both17)):
        assert {c: r[c] for c in COLS} == {c: ref[c] for c in COLS}


def test_cli_prints_table_and_writes_json(sample, tmp_path):
    gt = sample / "annotations" / "val"
    pred = regression_predictions(gt, tmp_path / "pred")
    out = tmp_path / "ap.json"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(EXAMPLE / "posetrack_eval.py"), "--gt", str(gt), "--pred", str(pred), "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Head" in res.stdout and "Total" in res.stdout and "58.6" in res.stdout
    saved = json.loads(out.read_text())
    assert {c: round(saved[c], 2) for c in COLS} == REGRESSION
    assert set(saved["per_joint"]) == set(GT_JOINTS)
    bad = subprocess.run(cmd[:4] + ["--pred", str(tmp_path / "nope")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "nope" in bad.stderr


# ------------------------------------------------------------------------------------------ pieces
def test_voc_ap_and_rpc_by_hand():
    prec, rec, order = pe.compute_rpc([0.9, 0.5, 0.1], np.array([1, 0, 1], np.int8), 3.0)
    np.testing.assert_allclose(prec, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 2 / 3])
    assert pe.voc_ap(rec, prec) == pytest.approx(1 / 3 + (1 / 3) * (2 / 3))  # 5/9
    assert pe.voc_ap(*pe.compute_rpc([0.2, 0.8], np.array([1, 1], np.int8), 2.0)[1::-1]) == 1.0
    with np.errstate(all="ignore"):
        prec, rec, _ = pe.compute_rpc([0.2], np.array([0], np.int8), 0.0)  # no GT: recall 0/0
    assert math.isnan(pe.voc_ap(rec, prec))


def test_head_size():
    assert pe.head_size((0, 0, 3, 4)) == pytest.approx(3.0)
    assert pe.head_size((10, 20, 10, 20)) == 0.0


def full(c, dx=0.0):
    return {s: (c[0] + 7 * (s % 5) + dx, c[1] + 9 * (s // 5)) for s in EVAL_SLOTS}


def test_pckh_threshold_is_inclusive():
    gt = person({0: (100, 100)})  # head box diagonal 10 -> head size 6 -> radius 3 px
    on = ev([[gt]], [[person({0: (103, 100)}, 0.5)]])
    off = ev([[gt]], [[person({0: (103.0001, 100)}, 0.5)]])
    assert on["per_joint"]["nose"] == 100.0 and off["per_joint"]["nose"] == 0.0


def test_assignment_ties_go_to_the_first():
    g, m = np.zeros((2, 15, 2)), np.ones((2, 15), bool)
    p = np.zeros((2, 15, 2))
    gt_of_pred, labels = pe.match_frame(g, m, [6.0, 6.0], p, m)
    assert gt_of_pred.tolist() == [0, -1]  # pred 0 ties between GTs -> GT 0; GT 0 ties between preds -> pred 0
    assert labels[0].all() and not labels[1].any()


def test_assignment_ignores_scores_and_best_zero_is_unassigned():
    gt = person(full((100, 100)))
    low, high = person(full((100, 100)), 0.1), person(full((100, 100)), 0.9)
    far = person(full((900, 900)), 0.5)
    r = ev([[gt]], [[low, high, far]])
    # the first prediction (low score) is assigned; the high-scored duplicate and the far one are false
    # positives ranked above it -> precision 1/3 at full recall (score-based matching would give 100)
    assert r["Total"] == pytest.approx(100 / 3)
    every = np.ones((1, 15), bool)
    gt_of_pred, labels = pe.match_frame(np.zeros((1, 15, 2)), every, [6.0], np.full((1, 15, 2), 500.0), every)
    assert gt_of_pred.tolist() == [-1] and not labels.any()  # best PCKh 0 -> unassigned


def test_prediction_keeps_only_its_best_gt():
    """Pred 0 matches GT 0 fully and GT 1 half; GT 1 cannot take it, so GT 1 stays unassigned."""
    g = np.zeros((2, 15, 2))
    g[1, :7] = 100.0
    m = np.ones((2, 15), bool)
    gt_of_pred, labels = pe.match_frame(g, m, [6.0, 6.0], np.zeros((1, 15, 2)), m)
    assert gt_of_pred.tolist() == [0] and labels[0].all()


def test_missing_score_falls_back_to_minus_9999():
    gt = person({0: (100, 100)})
    unscored = person({0: (100, 100)})  # TP, no score -> -9999
    fp = person({0: (500, 500)}, -9000.0)  # FP ranked above it
    assert ev([[gt]], [[unscored, fp]])["per_joint"]["nose"] == pytest.approx(50.0)
    fp_low = person({0: (500, 500)}, -10000.0)
    assert ev([[gt]], [[unscored, fp_low]])["per_joint"]["nose"] == pytest.approx(100.0)


def test_unlabeled_frames_dropped_and_frames_without_gt_all_false_positives():
    gt = person({0: (100, 100)})
    tp, fp = person({0: (100, 100)}, 0.5), person({0: (100, 100)}, 0.9)
    # frame 1 unlabeled (no GT persons): its prediction is ignored
    assert ev([[gt], []], [[tp], [fp]])["per_joint"]["nose"] == 100.0
    # frame 1 labeled but its only GT joint is in an ignore region: the frame has no GT left -> FP
    region = {1: [[(90, 90), (110, 90), (110, 110), (90, 110)]]}
    outside = person({0: (300, 300)}, 0.9)  # (a predicted joint inside the region would be removed too)
    r = ev([[gt], [person({0: (100, 100)})]], [[tp], [outside]], regions=region)
    assert r["per_joint"]["nose"] == pytest.approx(50.0)
    assert ev([[gt], [person({0: (100, 100)})]], [[tp], [fp]], regions=region)["per_joint"]["nose"] == 100.0
    assert r["counts"]["frames"] == 2 and r["counts"]["gt_persons"] == 1


def test_global_accumulation_over_sequences():
    a = video([[person({0: (100, 100)})]], "000001_a")
    pa = video([[person({0: (100, 100)}, 0.9)]], "000001_a")
    b = video([[person({0: (100, 100)})]], "000002_b")
    pb = video([[person({0: (100, 100)}, 0.1), person({0: (700, 700)}, 0.5)]], "000002_b")
    r = pe.evaluate_videos([(a, pa), (b, pb)])
    # ranked: 0.9 TP, 0.5 FP, 0.1 TP with 2 GT: 1/2 x 1 + 1/2 x 2/3 (a per-sequence mean would be 75)
    assert r["per_joint"]["nose"] == pytest.approx(100 * (0.5 + 1 / 3))


def test_columns_and_nan_handling():
    gt = person({s: xy for s, xy in full((100, 100)).items() if s != 0})  # no nose annotated
    pred = person(full((100, 100)), {s: 0.5 if s in (0, 2) else 0.4 for s in EVAL_SLOTS})
    pred.present[:] = False
    pred.present[[0, 2]] = True  # predicts nose (no GT anywhere -> NaN) and head_top (TP)
    r = ev([[gt]], [[pred]])
    assert math.isnan(r["per_joint"]["nose"]) and r["per_joint"]["head_top"] == 100.0
    assert math.isnan(r["Head"])  # a column is a plain mean: NaN propagates
    assert r["Shoulder"] == 0.0  # GT but no detection -> 0
    assert r["Total"] == pytest.approx(100.0 / 14)  # mean over the 14 non-NaN joints


def test_joint_without_gt_or_detections_counts_as_zero():
    gt, pred = person({0: (100, 100)}), person({0: (100, 100)}, 0.5)
    r = ev([[gt]], [[pred]])
    assert r["per_joint"]["nose"] == 100.0 and r["per_joint"]["head_top"] == 0.0
    assert r["Total"] == pytest.approx(100.0 / 15)


# ------------------------------------------------------------------------------------------ files
def test_generated_multi_frame_sequences(tmp_path):
    from .posetrack_synth import random_sequence, write_doc

    rng = np.random.default_rng(3)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    docs = {n: random_sequence(rng, n, 6, 3, unlabeled=(1, 4)) for n in ("000010_mpii_test", "000020_mpii_test")}
    for name, doc in docs.items():
        write_doc(gt_dir, name, doc)
        pred = copy.deepcopy(doc)
        for a in pred["annotations"]:
            a["scores"] = [float(rng.uniform(0.1, 1.0)) for _ in range(17)]
        extra = copy.deepcopy(pred["annotations"][0])  # one jittered duplicate: a false positive
        extra["keypoints"] = [v + 40.0 if i % 3 != 2 and v else v for i, v in enumerate(extra["keypoints"])]
        extra["track_id"] = 99
        pred["annotations"].append(extra)
        write_doc(pred_dir, name, pred)
    r = pe.evaluate(gt_dir, pred_dir)
    assert r["counts"]["frames"] == 8 and r["counts"]["sequences"] == 2 and r["counts"]["gt_persons"] == 24
    assert 0 < r["Total"] < 100
    assert pe.evaluate(gt_dir, gt_dir)["Total"] == 100.0


def test_file_errors_name_the_file(tmp_path):
    from .posetrack_synth import random_sequence, write_doc

    rng = np.random.default_rng(4)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for name in ("000011_mpii_test", "000012_mpii_test"):
        doc = random_sequence(rng, name, 3, 2)
        write_doc(gt, name, doc)
        write_doc(pred, name, doc)
    target = pred / "000012_mpii_test.json"
    text = target.read_text()
    target.write_text(text[: len(text) // 2])
    with pytest.raises(pio.AnnotationError, match=r"000012_mpii_test\.json: malformed JSON.*truncated"):
        pe.evaluate(gt, pred)
    doc = json.loads(text)
    last = doc["images"].pop()["id"]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != last]
    target.write_text(json.dumps(doc))
    with pytest.raises(pio.AnnotationError, match=r"000012_mpii_test\.json: frame-count mismatch: 2 prediction frames"):
        pe.evaluate(gt, pred)
    target.unlink()
    with pytest.raises(pio.AnnotationError, match=r"prediction file 000012_mpii_test\.json .*does not exist"):
        pe.evaluate(gt, pred)
    doc = json.loads(text)
    del doc["annotations"][1]["keypoints"]
    target.write_text(json.dumps(doc))
    with pytest.raises(pio.AnnotationError, match=r"000012_mpii_test\.json: missing key 'keypoints' in annotations"):
        pe.evaluate(gt, pred)
    doc = json.loads(text)
    doc["annotations"][1]["track_id"] = doc["annotations"][0]["track_id"]
    target.write_text(json.dumps(doc))
    with pytest.raises(pio.AnnotationError, match="non-unique track ids"):
        pe.evaluate(gt, pred)
    target.write_text(text)
    assert pe.evaluate(gt, pred)["Total"] == 100.0


# ------------------------------------------------------------------------------------------ polygons
def test_point_in_polygon_matches_shapely():
    shapely = pytest.importorskip("shapely")
    rng = np.random.default_rng(0)
    for trial in range(150):
        k = int(rng.integers(3, 9))
        poly = rng.integers(0, 6, size=(k, 2)).astype(float) if trial % 2 else rng.normal(size=(k, 2)) * 3
        if trial % 5 == 0:
            poly = np.concatenate([poly, poly[:1]])  # explicitly closed ring
        e, t = rng.integers(0, len(poly), 20), rng.random((20, 1))
        along = poly[e] * t + poly[(e + 1) % len(poly)] * (1 - t)  # on (or within rounding of) an edge
        pts = np.concatenate([rng.integers(-1, 7, size=(40, 2)).astype(float), rng.uniform(-1, 7, (10, 2)), poly,
                              (poly + np.roll(poly, 1, axis=0)) / 2, along])  # fmt: skip
        ref = shapely.contains(shapely.Polygon(poly), shapely.points(pts))  # poseval: Polygon.contains(Point)
        np.testing.assert_array_equal(pe.points_in_polygon(pts, poly), ref, err_msg=str(poly.tolist()))
    assert not pe.points_in_polygon([[0.5, 0.5]], np.zeros((0, 2))).any()
    with pytest.raises(ValueError, match="at least 3 points"):
        pe.points_in_polygon([[0, 0]], [[0, 0], [1, 1]])


def brute_match(gt_xy, gt_has, hs, pr_xy, pr_has):
    """The assignment rule written as plainly as possible (loops), for comparison."""
    P, G = len(pr_xy), len(gt_xy)
    match = np.zeros((P, G, 15), bool)
    pck = [[0.0] * G for _ in range(P)]
    for i in range(P):
        for j in range(G):
            for k in range(15):
                if gt_has[j][k] and pr_has[i][k]:
                    match[i, j, k] = math.hypot(*(gt_xy[j][k] - pr_xy[i][k])) / hs[j] <= 0.5
            n = int(sum(gt_has[j]))
            pck[i][j] = match[i, j].sum() / n if n else float(match[i, j].sum())
    best = [max(range(G), key=lambda j: (pck[i][j], -j)) for i in range(P)]
    owner = [-1] * P
    for j in range(G):
        cands = [(pck[i][j], -i) for i in range(P) if best[i] == j and pck[i][j] > 0]
        if cands:
            owner[-max(cands)[1]] = j
    labels = np.array([match[i, owner[i]] if owner[i] >= 0 else np.zeros(15, bool) for i in range(P)]).reshape(P, 15)
    return np.array(owner), labels


def test_match_frame_equals_brute_force_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(200):
        G, P = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        gt_xy, pr_xy = rng.integers(0, 4, (G, 15, 2)) * 3.0, rng.integers(0, 4, (P, 15, 2)) * 3.0
        gt_has, pr_has = rng.random((G, 15)) < 0.6, rng.random((P, 15)) < 0.6
        hs = [6.0] * G
        got = pe.match_frame(gt_xy, gt_has, hs, pr_xy, pr_has)
        want = brute_match(gt_xy, gt_has, hs, pr_xy, pr_has)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


# ------------------------------------------------------------------------------------------ properties
@st.composite
def scenes(draw):
    """Frames of well-separated GT persons (no PCKh ties possible), at most one nearby prediction per
    GT plus far-away false positives, all joint scores distinct."""
    frames_gt, frames_pr = [], []
    for t in range(draw(st.integers(1, 3))):
        gts, prs = [], []
        for k in range(draw(st.integers(0, 3))):
            c = np.array([200.0 * k + 100, 100.0])
            slots = draw(st.lists(st.sampled_from(EVAL_SLOTS), min_size=1, max_size=15, unique=True))
            joints = {s: tuple(c + draw(st.tuples(st.integers(-20, 20), st.integers(-20, 20)))) for s in slots}
            gts.append(person(joints, head=(0, 0, 16, 12)))  # head size 12 -> radius 6
            if draw(st.booleans()):
                pslots = draw(st.lists(st.sampled_from(EVAL_SLOTS), min_size=1, max_size=15, unique=True))
                noise = st.tuples(st.integers(-9, 9), st.integers(-9, 9))
                pj = {s: tuple(np.array(joints.get(s, c)) + draw(noise)) for s in pslots}
                prs.append(person(pj, 0.0))
        for k in range(draw(st.integers(0, 2))):
            prs.append(person(full((200.0 * k + 100, 2000.0)), 0.0))
        frames_gt.append(gts)
        frames_pr.append(prs)
    n = sum(int(p.present.sum()) for ps in frames_pr for p in ps)
    ranks = iter(draw(st.permutations(range(n))))
    for ps in frames_pr:
        for p in ps:
            p.scores[p.present] = [(next(ranks) + 1) / (n + 1) for _ in range(int(p.present.sum()))]
            p.has_score[:] = p.present
    return frames_gt, frames_pr


def same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=60, deadline=None)
@given(scenes(), st.randoms(use_true_random=False))
def test_person_permutation_changes_nothing(scene, rnd):
    gt, pr = scene
    base = ev(gt, pr)
    shuffled_gt = [rnd.sample(ps, len(ps)) for ps in gt]
    shuffled_pr = [rnd.sample(ps, len(ps)) for ps in pr]
    assert same(ev(shuffled_gt, shuffled_pr), base)


@settings(max_examples=60, deadline=None)
@given(scenes(), st.data())
def test_low_scored_unmatched_prediction_never_raises_ap(scene, data):
    gt, pr = scene
    base = ev(gt, pr)
    t = data.draw(st.integers(0, len(pr) - 1))
    slots = data.draw(st.lists(st.sampled_from(EVAL_SLOTS), min_size=1, max_size=15, unique=True))
    fp = person({s: (5000.0 + s, 5000.0) for s in slots}, -1.0)  # below every score in the scene
    pr2 = [list(ps) + ([fp] if i == t else []) for i, ps in enumerate(pr)]
    new = ev(gt, pr2)
    n_gt = base["counts"]["gt_joints_per_joint"]
    for name, ap in new["per_joint"].items():
        if n_gt[name] > 0:
            assert ap <= base["per_joint"][name]
    if all(v > 0 for v in n_gt.values()):
        assert new["Total"] <= base["Total"]


@settings(max_examples=60, deadline=None)
@given(scenes(), st.data())
def test_gt_joint_inside_ignore_region_changes_nothing(scene, data):
    gt, pr = scene
    cands = [(t, k) for t, ps in enumerate(gt) for k in range(len(ps))]
    assume(cands)
    t, k = data.draw(st.sampled_from(cands))
    p = gt[t][k]
    s = data.draw(st.sampled_from([int(i) for i in np.nonzero(p.present)[0]]))
    x, y = p.keypoints[s, :2]
    r = data.draw(st.floats(0.5, 30))
    poly = [(x - r, y - r), (x + r, y - r * 0.5), (x + r * 0.7, y + r), (x - r * 1.2, y + r * 0.3)]
    assert pe.points_in_polygon([[x, y]], poly)[0]
    regions = {t: [poly]}
    base = ev(gt, pr, regions)
    removed = copy.deepcopy(gt)
    removed[t][k].present[s] = False
    assert same(ev(removed, pr, regions), base)

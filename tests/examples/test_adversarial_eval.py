"""The evaluator against hostile inputs: a bad score, joint or head box must not silently change who
ranks or matches, and the CLI answers user errors with one sentence and exit code 2."""
import json
import math
import warnings

import numpy as np
from dsta import posetrack_eval as pe
from dsta import posetrack_io as pio
import pytest

from .posetrack_synth import EVAL_SLOTS, person, pt18_doc, video, write_doc

POSE = {s: (100.0 + 7 * s, 50.0 + 3 * s) for s in EVAL_SLOTS}
FAR = {s: (x + 400.0, y) for s, (x, y) in POSE.items()}


def _kp(joints: dict) -> np.ndarray:
    kp = np.zeros((17, 3))
    for s, (x, y) in joints.items():
        kp[s] = (x, y, 1)
    return kp


def test_nan_score_ranks_last_not_first():
    """A far-off (false) prediction scored NaN and a correct one scored 0.5: numpy's argsort puts NaN at the
    end, which the reversed ranking turns into the top; the false positive must rank last instead."""
    gt = [[person(POSE)]]
    pred = [[person(FAR, scores=float("nan")), person(POSE, scores=0.5)]]
    with pytest.warns(pe.EvaluationWarning, match=r"15 predicted joint\(s\) with a NaN score .* ranked last"):
        r = pe.evaluate_videos([(video(gt), video(pred))])
    assert r["Total"] == 100.0 and all(v == 100.0 for v in r["per_joint"].values())
    assert any("NaN score" in w for w in r["warnings"])


def test_null_and_nan_keypoints_are_absent_not_values(tmp_path):
    """PT18 files with null / NaN coordinates: a predicted null joint is no detection (no false positive),
    a GT null joint is no GT joint (nothing to miss)."""
    gt = pt18_doc("000001_mpii_test", [[{"keypoints": _kp(POSE)}]])
    pr = pt18_doc("000001_mpii_test", [[{"keypoints": _kp(POSE), "scores": [0.5] * 17},
                                        {"keypoints": _kp(FAR), "scores": [0.9] * 17}]])  # fmt: skip
    gt["annotations"][0]["keypoints"][3 * 5 : 3 * 5 + 2] = [None, None]  # GT left shoulder: null
    pr["annotations"][0]["keypoints"][3 * 6] = float("nan")  # predicted right shoulder: NaN x
    for s in EVAL_SLOTS:
        pr["annotations"][1]["keypoints"][3 * s] = None  # a whole person of nulls: no detections at all
    gt_path = write_doc(tmp_path / "gt", "000001_mpii_test", gt)
    pr_path = write_doc(tmp_path / "pred", "000001_mpii_test", pr)  # NaN as the literal NaN, read back by json
    with pytest.warns(pio.AnnotationWarning, match="joint"):
        r = pe.evaluate(gt_path, pr_path)
    c = r["counts"]
    assert c["gt_joints"] == 14 and c["gt_joints_per_joint"]["left_shoulder"] == 0
    assert c["predicted_joints"] == 14  # the NaN joint and the all-null person are not detections
    assert math.isnan(r["per_joint"]["left_shoulder"])  # no GT and no detection: NaN, not a spurious 0
    assert r["per_joint"]["right_shoulder"] == 0.0  # GT joint with no (valid) prediction
    others = [v for k, v in r["per_joint"].items() if k not in ("left_shoulder", "right_shoulder")]
    assert all(v == 100.0 for v in others)


def test_pt17_null_point_is_absent():
    doc = {"annolist": [{"image": [{"name": "images/bonn/000001_bonn/00000001.jpg"}], "annorect": [{
        "x1": [0], "y1": [0], "x2": [10], "y2": [10], "track_id": [0],
        "annopoints": [{"point": [{"id": [0], "x": [None], "y": [3.0]}, {"id": [1], "x": [5.0], "y": [6.0]},
                                  {"id": [2], "x": [float("nan")], "y": [1.0]}]}]}]}]}  # fmt: skip
    with pytest.warns(pio.AnnotationWarning, match="2 joint"):
        (v,) = pio.parse_videos(doc, "x.json")
    p = v.frames[0].persons[0]
    assert p.present.sum() == 1 and p.present[pio.POSEVAL_TO_SLOT[1]]


def test_zero_size_head_box_warns_and_scores_as_poseval():
    """A GT person with a zero-size head box cannot be matched (head size 0) in poseval either: the numbers
    stay poseval's, but the evaluator says why."""
    gt = [[person(POSE, head=(20.0, 20.0, 20.0, 20.0)), person(FAR)]]
    pred = [[person(POSE, scores=0.9), person(FAR, scores=0.8)]]
    with pytest.warns(pe.EvaluationWarning, match=r"1 GT person\(s\) with a zero-size .* head box"):
        r = pe.evaluate_videos([(video(gt), video(pred))])
    assert r["Total"] == pytest.approx(100 * 0.5 * 0.5)  # rank 1 false (score 0.9), rank 2 true: AP 0.25
    gt[0][0] = person(POSE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a normal head box: no warning
        assert pe.evaluate_videos([(video(gt), video(pred))])["Total"] == 100.0


def test_frames_paired_by_position_warn_but_keep_poseval_numbers():
    gt_frames = [[person(POSE)], [person(FAR)]]
    pr = video([[person(FAR, scores=0.9)], [person(POSE, scores=0.9)]])
    pr.frames[0].file_name, pr.frames[1].file_name = pr.frames[1].file_name, pr.frames[0].file_name
    pr.frames[0].index, pr.frames[1].index = 1, 0  # the prediction file lists frame 1 first
    with pytest.warns(pe.EvaluationWarning, match=r"2 frame\(s\) paired by position"):
        r = pe.evaluate_videos([(video(gt_frames), pr)])
    assert r["Total"] == 0.0  # poseval pairs by position: frame 0's prediction is compared with frame 0's GT


# ------------------------------------------------------------------------------------------ CLI
def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        pe.main(argv)
    err = capsys.readouterr().err
    return exc.value.code, err


def _gt_and_pred(tmp_path, scores):
    kp = _kp(POSE).tolist()
    gt = write_doc(tmp_path / "gt", "000001_mpii_test", pt18_doc("000001_mpii_test", [[{"keypoints": kp}]]))
    doc = pt18_doc("000001_mpii_test", [[{"keypoints": kp}]])
    doc["annotations"][0]["scores"] = scores
    pred = write_doc(tmp_path / "pred", "000001_mpii_test", doc)
    return gt, pred


def test_cli_scalar_scores_is_one_sentence_exit_2(tmp_path, capsys):
    gt, pred = _gt_and_pred(tmp_path, 0.9)
    code, err = _cli(["--gt", str(gt), "--pred", str(pred)], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "'scores'" in err and "should be a list" in err and str(pred) in err


def test_cli_unwritable_json_is_one_sentence_exit_2(tmp_path, capsys):
    gt, pred = _gt_and_pred(tmp_path, [0.9] * 17)
    blocker = tmp_path / "file"
    blocker.write_text("")
    for target in (tmp_path, blocker / "ap.json"):  # a folder, and a path below a file
        code, err = _cli(["--gt", str(gt), "--pred", str(pred), "--json", str(target)], capsys)
        assert code == 2 and "Traceback" not in err and err.startswith("error: cannot write --json")
        assert len(err.strip().splitlines()) == 1


def test_cli_prints_warnings_as_lines(tmp_path, capsys):
    kp = _kp(POSE).tolist()
    gt = write_doc(tmp_path / "gt", "000001_mpii_test", pt18_doc("000001_mpii_test", [[{"keypoints": kp}]]))
    doc = pt18_doc("000001_mpii_test", [[{"keypoints": kp, "scores": [float("nan")] * 17}]])
    pred = write_doc(tmp_path / "pred", "000001_mpii_test", doc)
    r = pe.main(["--gt", str(gt), "--pred", str(pred)])
    err = capsys.readouterr().err
    assert r["Total"] == 100.0 and err.startswith("warning: ") and "NaN score" in err and "Traceback" not in err

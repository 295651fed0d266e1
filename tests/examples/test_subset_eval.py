"""examples/dsta/subset_eval.py: AP on a subset of the GT joints with poseval's matching."""
import json

from dsta import posetrack_eval as pe
from dsta import subset_eval as se
from dsta import synthetic as syn
import numpy as np
import pytest

SIZE = (96, 128)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("subset")
    syn.generate(root, num_videos=3, frames_per_video=6, size=SIZE, people=(2, 3), difficulty=1.0, seed=5)
    return root


def _predict(root, out, rng, noise=3.0, extra=False):
    """Predictions: the GT joints moved by Gaussian noise (pixels), random scores; only annotated joints.
    `extra`: also one far-away false-positive person per frame."""
    out.mkdir(parents=True, exist_ok=True)
    far = np.random.default_rng(99)  # its own stream: the GT noise is the same with or without `extra`
    for f in sorted((root / "annotations" / "train").glob("*.json")):
        doc = json.loads(f.read_text())
        anns = []
        for a in doc["annotations"]:
            kp = np.asarray(a["keypoints"], float).reshape(17, 3)
            on = kp[:, 2] > 0
            kp[on, :2] += rng.normal(0, noise, (int(on.sum()), 2))
            anns.append({**a, "keypoints": kp.reshape(-1).tolist(), "scores": rng.uniform(0, 1, 17).tolist()})
        if extra:
            for im in doc["images"]:
                kp = np.zeros((17, 3))
                kp[:, :2], kp[:, 2] = far.uniform(0, 5, (17, 2)), 1
                anns.append({"image_id": im["id"], "track_id": 99, "keypoints": kp.reshape(-1).tolist(),
                             "scores": far.uniform(0, 1, 17).tolist()})  # fmt: skip
        (out / f.name).write_text(json.dumps({**doc, "annotations": anns}))
    return out


def _everything(root):
    """The subset of every joint of every GT person (by sequence, frame index, track id)."""
    from dsta import posetrack_io as pio

    return {(v.name, fr.index, p.track_id): np.ones(17, bool)
            for v in pio.load_annotations(root / "annotations" / "train") for fr in v.frames for p in fr.persons}


def test_all_joints_equals_poseval(split, tmp_path):
    """Every prediction assigned to a GT person (small noise) and only annotated joints predicted: the
    subset of all joints scores exactly what poseval scores."""
    pred = _predict(split, tmp_path / "pred", np.random.default_rng(0), noise=1.5)
    gt = split / "annotations" / "train"
    full = pe.evaluate(gt, pred)
    sub = se.evaluate_subsets(gt, pred, {"all": _everything(split)})["all"]
    assert 20 < full["Total"] < 100
    for col in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"):
        assert sub[col] == pytest.approx(full[col], abs=1e-9), col
    assert sub["gt_joints"] == full["counts"]["gt_joints"]


def test_unattributable_false_positives_only_count_in_the_whole_split(split, tmp_path):
    rng = np.random.default_rng(1)
    gt = split / "annotations" / "train"
    plain = _predict(split, tmp_path / "plain", np.random.default_rng(1))
    noisy = _predict(split, tmp_path / "noisy", rng, extra=True)
    assert pe.evaluate(gt, noisy)["Total"] < pe.evaluate(gt, plain)["Total"]
    everything = {"all": _everything(split)}
    a = se.evaluate_subsets(gt, plain, everything)["all"]["Total"]
    b = se.evaluate_subsets(gt, noisy, everything)["all"]["Total"]
    assert b == pytest.approx(a)  # the far-away person is assigned to nobody: no subset's detection


def test_subsets_split_the_joints(split, tmp_path):
    """Two complementary subsets: positives add up; a subset of perfect joints scores 100, one of far-off
    joints 0; joint types without positives are NaN and left out of Total."""
    gt = split / "annotations" / "train"
    everything = _everything(split)
    rng = np.random.default_rng(2)
    left = {k: np.isin(np.arange(17), [5, 7, 9, 11, 13, 15]) for k in everything}  # the left side
    right = {k: ~m for k, m in left.items()}
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in sorted(gt.glob("*.json")):
        doc = json.loads(f.read_text())
        for a in doc["annotations"]:
            kp = np.asarray(a["keypoints"], float).reshape(17, 3)
            kp[[6, 8, 10, 12, 14, 16], :2] += 40.0  # the right side far off; the left side exact
            a["keypoints"], a["scores"] = kp.reshape(-1).tolist(), rng.uniform(0, 1, 17).tolist()
        (pred / f.name).write_text(json.dumps(doc))
    r = se.evaluate_subsets(gt, pred, {"left": left, "right": right, "all": everything})
    assert r["left"]["gt_joints"] + r["right"]["gt_joints"] == r["all"]["gt_joints"]
    assert r["left"]["Total"] == 100.0
    assert r["left"]["per_joint"]["head_top"] != r["left"]["per_joint"]["head_top"]  # NaN: no positives
    assert r["right"]["Shoulder"] < 100.0 and r["right"]["Head"] == 100.0



def test_nan_scores_rank_last_as_in_poseval(split, tmp_path):
    """A person predicted with NaN scores counts as if its scores were the lowest (posetrack_eval's
    rule), not the highest."""
    results = []
    for name, value in (("nan", float("nan")), ("low", -1e30)):
        pred = _predict(split, tmp_path / name, np.random.default_rng(1), noise=4.0)
        for f in pred.glob("*.json"):
            doc = json.loads(f.read_text())
            first = doc["annotations"][0]["track_id"]
            for a in doc["annotations"]:
                if a["track_id"] == first:
                    a["scores"] = [value] * 17
            f.write_text(json.dumps(doc))
        results.append(se.evaluate_subsets(split / "annotations" / "train", pred, {"all": _everything(split)})["all"])
    for col in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"):
        assert results[0][col] == pytest.approx(results[1][col], abs=1e-9), col

"""The data pipeline against hostile inputs: people who cannot become a clip are counted by reason (never
dropped without a word), degenerate poses do not crash, unreadable images travel as messages."""

import numpy as np
from dsta import data as dd
from dsta.loaders import IndexedClips, SeededClips
from dsta import posetrack_io as pio
from dsta import transforms as tf
import pytest
import torch

from .posetrack_synth import pt18_doc, write_doc, write_frames

NAME = "000007_mpii_test"


def _pose(x, y, spread=20.0):
    kp = np.zeros((17, 3))
    for s in range(17):
        if s not in (3, 4):
            kp[s] = (x + spread * np.cos(s), y + spread * np.sin(s), 1)
    return kp


def _dataset(tmp_path, persons):
    """One 320 x 240 frame (and its neighbours) holding `persons` (pt18_doc dicts)."""
    doc = pt18_doc(NAME, [persons, [], []])
    write_doc(tmp_path / "annotations", NAME, doc)
    write_frames(tmp_path, doc)
    return pio.load_annotations(tmp_path / "annotations")


def test_dropped_persons_are_counted_by_reason(tmp_path):
    good = {"keypoints": _pose(100, 100), "bbox": (80, 80, 40, 40)}
    persons = [
        good,
        {"keypoints": _pose(100, 100), "bbox": (500, 400, 40, 40)},  # outside the 320 x 240 image
        {"keypoints": _pose(100, 100), "bbox": (80, 80, 0, 40)},  # zero width
        {"keypoints": _pose(100, 100), "bbox": (float("nan"), 80, 40, 40)},  # NaN
        {"keypoints": np.zeros((17, 3)), "bbox": (80, 80, 40, 40)},  # nothing visible (training)
    ]
    videos = _dataset(tmp_path, persons)
    ds = dd.PoseTrackClips(videos, tmp_path, train=True)
    assert len(ds) == 1 and ds.stats["persons"] == 5
    assert dict(ds.stats["dropped_persons"]) == {"box outside the image": 1, "zero-size box": 1,
                                                 "non-finite box": 1, "no visible joint": 1}  # fmt: skip
    summary = ds.drop_summary()
    assert summary.startswith("dropped 4 of 5 persons (") and "non-finite box" in summary
    ev = dd.PoseTrackClips(videos, tmp_path, train=False)  # evaluation keeps the person without visible joints
    assert len(ev) == 2 and sum(ev.stats["dropped_persons"].values()) == 3
    for i in range(len(ev)):
        assert torch.isfinite(ev[i]["frames"]).all()
    image_id = videos[0].frames[0].image_id
    dets = [{"image_id": image_id, "bbox": b, "score": 0.9}
            for b in ((80, 80, 40, 40), (80, 80, 0, 0), (float("nan"), 1, 2, 3), (1, 2, 3, float("inf")))]  # fmt: skip
    det = dd.PoseTrackClips(videos, tmp_path, detections=dets)
    assert len(det) == 1 and dict(det.stats["dropped_detections"]) == {"zero-size box": 1, "non-finite box": 2}
    assert "dropped 3 of 4 detection boxes" in det.drop_summary()
    assert dd.PoseTrackClips(videos, tmp_path, detections=dets[:1]).drop_summary() == ""


def test_coinciding_joints_do_not_crash_training_crops(tmp_path):
    """Every joint at one point: the half-body box has no extent; the person's own box is used instead of
    dividing by a zero scale (a ZeroDivisionError in the training loop before)."""
    kp = np.zeros((17, 3))
    kp[[s for s in range(17) if s not in (3, 4)]] = (100.0, 100.0, 1.0)
    videos = _dataset(tmp_path, [{"keypoints": kp, "bbox": (80, 80, 40, 40)}])
    ds = dd.PoseTrackClips(videos, tmp_path, train=True, augment=tf.AugmentConfig(half_body_prob=1.0))
    torch.manual_seed(0)
    for _ in range(20):
        item = ds[0]
        assert torch.isfinite(item["frames"]).all() and torch.isfinite(item["target"]).all()
    rng = np.random.default_rng(0)
    assert tf.half_body_box(kp[:, :2], kp[:, 2] > 0, rng, tf.AugmentConfig()) is None
    with pytest.raises(ValueError, match="positive scale"):
        tf.affine_matrix((10.0, 10.0), (0.0, 0.0), 0.0, (48, 64))
    # a person without a box whose joints coincide has no keypoint box either: dropped and counted
    videos = _dataset(tmp_path / "nobox", [{"keypoints": kp}])
    videos[0].frames[0].persons[0].bbox = None
    ds = dd.PoseTrackClips(videos, tmp_path / "nobox", train=True)
    assert len(ds) == 0 and dict(ds.stats["dropped_persons"]) == {"zero-size box": 1}


def test_null_training_joints_give_finite_targets(tmp_path):
    """A null joint in a training annotation is absent (weight 0) and its target is finite: a NaN target
    times weight 0 is still NaN in the loss."""
    doc = pt18_doc(NAME, [[{"keypoints": _pose(100, 100), "bbox": (80, 80, 40, 40)}], [], []])
    doc["annotations"][0]["keypoints"][3 * 9] = None  # left wrist x
    write_doc(tmp_path / "annotations", NAME, doc)
    write_frames(tmp_path, doc)
    with pytest.warns(pio.AnnotationWarning, match="1 joint"):
        videos = pio.load_annotations(tmp_path / "annotations")
    item = dd.PoseTrackClips(videos, tmp_path, train=True)[0]
    assert torch.isfinite(item["target"]).all() and item["target_weight"][9] == 0
    # a person built in memory with a NaN joint: the same
    videos[0].frames[0].persons[0].keypoints[10, :2] = np.nan
    videos[0].frames[0].persons[0].present[10] = True
    item = dd.PoseTrackClips(videos, tmp_path, train=True)[0]
    assert torch.isfinite(item["target"]).all() and item["target_weight"][10] == 0


def test_unreadable_images_travel_as_messages_through_the_loader(tmp_path):
    videos = _dataset(tmp_path, [{"keypoints": _pose(100, 100), "bbox": (80, 80, 40, 40)},
                                 {"keypoints": _pose(200, 150), "bbox": (180, 130, 40, 40)}])  # fmt: skip
    ds = dd.PoseTrackClips(videos, tmp_path, offsets=(-1, 1), train=False, on_unreadable="skip")
    (tmp_path / videos[0].frames[1].file_name).write_bytes(b"\xff\xd8 truncated")
    items = [IndexedClips(ds)[i] for i in range(len(ds))]
    assert all(set(it) == {"unreadable"} for it in items)
    batch = dd.collate_clips(items)
    assert batch["meta"] == [] and batch["skipped"] == 2 and "000001.jpg: cannot decode" in batch["unreadable"][0]
    seeded = SeededClips(ds, seed=1)[(0, 0)]
    assert "cannot decode" in seeded["unreadable"] and ds.stats["unreadable_images"] == 3
    strict = dd.PoseTrackClips(videos, tmp_path, offsets=(-1, 1), train=False, on_unreadable="raise")
    with pytest.raises(dd.ImageError, match="cannot decode"):
        IndexedClips(strict)[0]

"""PoseTrack reading / writing (posetrack_io.py), crops and targets (transforms.py) and the clip dataset
(data.py) of examples/dsta."""
import copy
import json

import cv2
from dsta import data as dd
import numpy as np
from dsta import posetrack_eval as pe
from dsta import posetrack_io as pio
from dsta import posetrack_write as pw
import pytest
import torch
from dsta import transforms as tf
from stattn.skeletons import POSETRACK

from .posetrack_synth import pt18_doc, random_sequence, write_doc, write_frames


# ------------------------------------------------------------------------------------------ reading
def test_read_sample_per_video_and_merged(sample):
    per_video = pio.load_annotations(sample / "annotations" / "val")
    merged = pio.load_annotations(sample / "annotations" / "test_posetrack18_val.json")
    assert [v.name for v in per_video] == ["003418_mpii_test", "009473_mpii_test", "012834_mpii_test"]
    assert sorted(v.name for v in merged) == [v.name for v in per_video]
    by_name = {v.name: v for v in merged}
    for v in per_video:
        m = by_name[v.name]
        assert (v.nframes, v.first_frame, len(v.frames)) == (m.nframes, 0, 1)
        for p, q in zip(v.frames[0].persons, m.frames[0].persons):
            np.testing.assert_array_equal(p.keypoints, q.keypoints)
            assert p.head_box == q.head_box and p.track_id == q.track_id
    assert [len(v.frames[0].ignore_regions) for v in per_video] == [9, 2, 4]
    persons = [p for _, _, p in pio.iter_persons(per_video)]
    assert len(persons) == 14 and not any(p.present[[3, 4]].any() for p in persons)  # ears never annotated
    assert not any(p.has_score.any() for p in persons)  # GT `scores: []`
    p = per_video[0].frames[0].persons[0]
    assert p.head_box == (346, 337, 346 + 296, 337 + 237) and p.bbox == (214.25, 15.0, 1358.5, 1092.0)


def test_pt17_round_trip(sample):
    for v in pio.load_annotations(sample / "annotations" / "val"):
        (back,) = pio.parse_videos(json.loads(json.dumps(pw.video_to_pt17(v))), "rt.json")
        assert back.fmt == "pt17" and back.name == v.name and len(back.frames) == len(v.frames)
        for f, g in zip(v.frames, back.frames):
            assert f.file_name == g.file_name
            assert all(np.array_equal(a, b) for a, b in zip(f.ignore_regions, g.ignore_regions))
            for p, q in zip(f.persons, g.persons):
                np.testing.assert_array_equal(p.present, q.present)
                np.testing.assert_array_equal(p.keypoints[p.present], q.keypoints[q.present])
                assert p.head_box == q.head_box and p.track_id == q.track_id
        (again,) = pio.parse_videos(json.loads(json.dumps(pw.video_to_pt18(back))), "rt18.json")
        for p, q in zip(v.frames[0].persons, again.frames[0].persons):
            np.testing.assert_array_equal(p.present, q.present)


def test_pt21_fields_are_kept(tmp_path):
    doc = pt18_doc("000007_mpii_test", [[{"keypoints": np.ones((17, 3)) * 5}]])
    doc["images"][0]["has_labeled_person"] = True
    doc["annotations"][0]["person_id"] = 1234
    (v,) = pio.parse_videos(doc, tmp_path / "x.json")
    assert v.fmt == "pt21" and v.frames[0].persons[0].person_id == 1234


def test_pt17_points_first_id_wins_and_missing_annopoints():
    doc = {"annolist": [{"image": [{"name": "images/bonn/000001_bonn/00000001.jpg"}], "annorect": [
        {"x1": [0], "y1": [0], "x2": [10], "y2": [0], "track_id": [3],
         "annopoints": [{"point": [{"id": [13], "x": [5], "y": [6], "score": [0.7]}, {"id": [13], "x": [9], "y": [9]},
                                   {"id": [14], "x": [0], "y": [0]}, {"id": [99], "x": [1], "y": [1]}]}]},
        {"x1": [0], "y1": [0], "x2": [10], "y2": [0]}]}]}  # fmt: skip
    (v,) = pio.parse_videos(doc, "p.json")
    p, q = v.frames[0].persons
    assert v.first_frame == 1 and v.frames[0].index == 1
    assert p.present.sum() == 2 and tuple(p.keypoints[0]) == (5, 6, 1) and p.scores[0] == 0.7
    assert p.present[2] and not p.has_score[2]  # a PT17 point at (0, 0) exists
    assert not q.has_points


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["annotations"][0].pop("keypoints"), r"missing key 'keypoints' in annotations\[0\]"),
        (lambda d: d["annotations"][0].update(keypoints=[1, 2, 3]), r"annotations\[0\] has 3 keypoint values"),
        (lambda d: d["annotations"][0].update(image_id=5), r"annotations\[0\] refers to image_id 5, which is not"),
        (lambda d: d["images"][0].pop("file_name"), r"missing key 'file_name' in images\[0\]"),
        (lambda d: d["images"][1].update(nframes=7), r"frame-count mismatch in sequence 000003_mpii_test: .*\[2, 7\]"),
        (lambda d: d.pop("images"), r"missing key 'images'"),
        (lambda d: d["categories"][0]["keypoints"].remove("nose"), r"categories.* lacks the PoseTrack joints \['nose'\]"),
    ],
)
def test_malformed_annotations_name_file_and_problem(tmp_path, mutate, message):
    doc = pt18_doc("000003_mpii_test", [[{"keypoints": np.ones((17, 3))}], []])
    mutate(doc)
    path = write_doc(tmp_path, "000003_mpii_test", doc)
    with pytest.raises(pio.AnnotationError, match=rf"000003_mpii_test\.json: {message}"):
        pio.load_annotations(path)


def test_truncated_and_unknown_files(tmp_path):
    path = write_doc(tmp_path, "000004_mpii_test", pt18_doc("000004_mpii_test", [[{"keypoints": np.ones((17, 3))}]]))
    path.write_text(path.read_text()[:100])
    with pytest.raises(pio.AnnotationError, match=r"000004_mpii_test\.json: malformed JSON at line 1 .*truncated"):
        pio.load_annotations(path)
    path.write_text('{"foo": 1}')
    with pytest.raises(pio.AnnotationError, match="neither PoseTrack17"):
        pio.load_annotations(path)
    with pytest.raises(pio.AnnotationError, match="no such file"):
        pio.load_annotations(tmp_path / "missing.json")


def test_detections_threshold(sample):
    path = sample / "annotations" / "test_posetrack18_human_detections.json"
    ids = [10128340000, 10034180000, 10094730000]  # sequences 012834, 003418, 009473
    for thr, want in ((0.0, [100, 100, 78]), (0.2, [75, 76, 35]), (0.4, [27, 36, 25])):
        dets = pio.load_detections(path, thr)
        assert [sum(d["image_id"] == i for d in dets) for i in ids] == want
        assert all(d["score"] >= thr for d in dets)
    assert pio.load_detections(path, 0.0, category_id=2) == []


# ------------------------------------------------------------------------------------------ writing
def test_prediction_writer_is_evaluable(sample, tmp_path):
    gt_dir = sample / "annotations" / "val"
    videos = pio.load_annotations(gt_dir)
    preds = {}
    for v in videos:
        for f in v.frames:
            preds[f.file_name] = [{"keypoints": p.keypoints[:, :2] * p.present[:, None], "scores": np.full(17, 0.8),
                                   "track_id": k} for k, p in enumerate(f.persons)]  # fmt: skip
    preds[videos[1].frames[0].file_name] = []  # a frame without predictions
    paths = pw.write_predictions(tmp_path / "pred", videos, preds)
    assert sorted(p.name for p in paths) == sorted(p.name for p in gt_dir.glob("*.json"))
    for p in paths:
        doc, gt = json.loads(p.read_text()), json.loads((gt_dir / p.name).read_text())
        assert [i["file_name"] for i in doc["images"]] == [i["file_name"] for i in gt["images"]]
        assert all(len(a["keypoints"]) == 51 and len(a["scores"]) == 17 for a in doc["annotations"])
    r = pe.evaluate(gt_dir, tmp_path / "pred")
    assert r["counts"]["predicted_persons"] == 12 and r["Total"] < 100
    first = videos[1].frames[0]
    preds[first.file_name] = [{"keypoints": first.persons[0].keypoints, "scores": np.ones(17)}]
    pw.write_predictions(tmp_path / "pred17", videos, preds, fmt="pt17")
    pw.write_predictions(tmp_path / "pred18", videos, preds)
    assert pe.evaluate(gt_dir, tmp_path / "pred17") == pe.evaluate(gt_dir, tmp_path / "pred18")
    with pytest.raises(ValueError, match="no GT video lists"):
        pw.write_predictions(tmp_path / "x", videos, {"images/val/nope/000000.jpg": []})


# ------------------------------------------------------------------------------------------ transforms
def test_box_to_center_scale():
    c, s = tf.box_to_center_scale((10, 20, 30, 40))
    np.testing.assert_allclose(c, [25, 40])
    np.testing.assert_allclose(s, np.array([30, 40]) / 200 * 1.25)
    _, s = tf.box_to_center_scale((0, 0, 150, 40))  # too wide: height grows to 200
    np.testing.assert_allclose(s, np.array([150, 200]) / 200 * 1.25, rtol=1e-6)


@pytest.mark.parametrize("rotation, flip", [(0.0, False), (33.0, False), (-70.0, True)])
def test_affine_round_trip_and_targets(rotation, flip):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1000, (17, 2))
    center, scale = np.array([480.0, 300.0]), np.array([2.1, 2.8])
    m = tf.affine_matrix(center, scale, rotation, (192, 256), flip=flip)
    inv = tf.affine_matrix(center, scale, rotation, (192, 256), flip=flip, inverse=True)
    back = tf.apply_affine(tf.apply_affine(pts, m), inv)
    assert np.abs(back - pts).max() < 1e-4
    target, _ = tf.joint_targets(tf.apply_affine(pts, m), np.ones(17, bool), (192, 256), np.ones(17))
    image_xy = tf.crop_to_image(target, center, scale, (192, 256), rotation, flip)
    assert np.abs(image_xy - pts).max() < 1e-3  # (the target is float32)
    assert np.abs(tf.apply_affine(center, m) - [96, 128]).max() < 1e-9  # the centre lands mid-crop


def test_crop_image_agrees_with_joint_mapping():
    img = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(img, (250, 120), 3, (255, 255, 255), -1)
    center, scale = np.array([200.0, 150.0]), np.array([1.2, 1.6])
    for rotation, flip in ((0.0, False), (30.0, False), (-45.0, True)):
        m = tf.affine_matrix(center, scale, rotation, (192, 256), flip=flip)
        crop = tf.warp(img, m, (192, 256))[..., 0].astype(float)
        ys, xs = np.mgrid[: crop.shape[0], : crop.shape[1]]
        centroid = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
        assert np.hypot(*(tf.apply_affine([250.0, 120.0], m) - centroid)) < 0.5


def test_flip_swaps_pairs_and_mirrors_x():
    rng = np.random.default_rng(1)
    joints = rng.uniform(100, 300, (17, 2))
    center, scale = np.array([200.0, 200.0]), np.array([1.5, 2.0])
    plain = tf.apply_affine(joints, tf.affine_matrix(center, scale, 0.0, (192, 256)))
    mirrored = tf.apply_affine(joints, tf.affine_matrix(center, scale, 0.0, (192, 256), flip=True))
    flipped = tf.flip_joints(mirrored, POSETRACK.flip_pairs)
    perm = POSETRACK.flip_permutation()
    np.testing.assert_allclose(flipped[:, 0], 192 - plain[perm, 0], atol=1e-9)
    np.testing.assert_allclose(flipped[:, 1], plain[perm, 1], atol=1e-9)
    assert perm[5] == 6 and perm[9] == 10 and perm[0] == 0


def test_half_body_and_augmentation_ranges():
    joints = np.zeros((17, 2))
    joints[:11] = np.stack([np.linspace(80, 120, 11), np.linspace(0, 100, 11)], axis=1)  # head and arms
    joints[11:] = np.stack([np.linspace(90, 110, 6), np.linspace(200, 300, 6)], axis=1)  # legs
    vis = np.ones(17, bool)
    vis[[3, 4]] = False
    cfg = tf.AugmentConfig()
    upper, lower = joints[vis & (np.arange(17) < 11)], joints[11:]
    seen = set()
    for seed in range(20):
        center, scale = tf.half_body_box(joints, vis, np.random.default_rng(seed), cfg)
        part = upper if np.allclose(center, upper.mean(0)) else lower
        assert np.allclose(center, part.mean(0), atol=1e-4)
        extent = part.max(0) - part.min(0)
        assert scale[1] * 200 >= extent[1] * 1.5 - 1e-3 and scale[0] * 200 >= extent[0] * 1.5 - 1e-3
        assert scale[0] / scale[1] == pytest.approx(0.75)
        seen.add(part is upper)
        c, s, rot, flip = tf.sample_augmentation((100, 150), (1.0, 4 / 3), joints, vis, np.random.default_rng(seed), cfg)
        assert -90 <= rot <= 90 and isinstance(flip, bool) and s[1] / s[0] == pytest.approx(4 / 3)
    assert seen == {True, False}


def test_target_weights_visibility_inside_and_joint_weight():
    joints = np.full((17, 2), 50.0)
    joints[7] = (191.0, 255.0)  # last pixel: inside
    joints[8] = (191.5, 10.0)  # beyond W - 1
    joints[9] = (-0.1, 10.0)
    vis = np.ones(17, bool)
    vis[[3, 4, 15]] = False
    target, weight = tf.joint_targets(joints, vis, (192, 256), POSETRACK.joint_weights)
    want = np.array(POSETRACK.joint_weights, np.float32)
    want[[3, 4, 15, 8, 9]] = 0
    np.testing.assert_array_equal(weight, want)
    np.testing.assert_allclose(target[7], [191 / 192, 255 / 256])
    assert weight[7] == 1.2 and weight[10] == 1.5 and weight[0] == 1.0


# ------------------------------------------------------------------------------------------ dataset
def test_sample_clips_fall_back_to_existing_frames(sample):
    videos = pio.load_annotations(sample / "annotations" / "val")
    ds = dd.PoseTrackClips(videos, sample, offsets=(-1, 1), train=False)
    assert len(ds) == 14
    item = ds[0]
    assert item["frames"].shape == (3, 3, 256, 192) and item["key_index"] == 1
    assert item["meta"]["substituted"] == 1 and ds.stats["substituted_frames"] == 1  # frame 1 missing; -1 clamps to 0
    assert len(set(item["meta"]["frame_files"])) == 1
    assert torch.equal(item["frames"][0], item["frames"][1]) and torch.equal(item["frames"][2], item["frames"][1])
    w = item["target_weight"]
    assert (w[[3, 4]] == 0).all() and set(w.tolist()) <= {0.0, 1.0, float(np.float32(1.2)), 1.5}
    assert ((item["target"][w > 0] >= 0) & (item["target"][w > 0] <= 1)).all()
    assert dd.PoseTrackClips(videos, sample, offsets=(-2, -1, 1, 2)).clip_files(videos[0], 0)[1:] == (2, 2)


def test_sample_detection_boxes(sample):
    videos = pio.load_annotations(sample / "annotations" / "test_posetrack18_val.json")
    dets = pio.load_detections(sample / "annotations" / "test_posetrack18_human_detections.json")
    ds = dd.PoseTrackClips(videos, sample, detections=dets, score_threshold=0.4)
    assert len(ds) == 27 + 36 + 25 and min(it.box_score for it in ds.items) >= 0.4
    batch = dd.collate_clips([ds[0], ds[1]])
    assert batch["frames"].shape == (2, 3, 3, 256, 192) and batch["skipped"] == 0
    assert batch["target_weight"].sum() == 0 and batch["meta"][0]["box_score"] >= 0.4


@pytest.fixture
def clip_root(tmp_path):
    doc = random_sequence(np.random.default_rng(5), "000042_mpii_test", 5, 2)
    write_doc(tmp_path / "annotations", "000042_mpii_test", doc)
    write_frames(tmp_path, doc, missing=(3,))
    return tmp_path, pio.load_annotations(tmp_path / "annotations")


def blue(frame):
    """Frame number written into the blue channel by `write_frames` (channel 2 after BGR -> RGB)."""
    raw = frame[2] * tf.IMAGENET_STD[2] + tf.IMAGENET_MEAN[2]
    return round(float(raw[100:150, 80:110].mean()) * 255 / 40)


def test_missing_frame_nearest_in_window_and_same_crop(clip_root):
    root, videos = clip_root
    ds = dd.PoseTrackClips(videos, root, offsets=(-2, -1, 1, 2))
    files, key, sub = ds.clip_files(videos[0], 2)
    assert key == 2 and sub == 1 and [int(f[-10:-4]) for f in files] == [0, 1, 2, 2, 4]  # 3 -> 2 (tie: nearer key)
    files, key, sub = ds.clip_files(videos[0], 4)
    assert sub == 1 and [int(f[-10:-4]) for f in files] == [2, 4, 4, 4, 4]  # 3 -> 4; 5, 6 clamp to 4
    item = ds[[i for i, it in enumerate(ds.items) if it.frame == 2][0]]
    assert [blue(f) for f in item["frames"]] == [0, 1, 2, 2, 4]
    green = item["frames"][:, 1]
    assert all(torch.allclose(green[0], g, atol=0.05) for g in green)  # the same affine crop for every frame


def test_training_augmentation_is_shared_by_the_clip(clip_root):
    root, videos = clip_root
    ds = dd.PoseTrackClips(videos, root, offsets=(-1, 1), train=True)
    torch.manual_seed(0)
    flips = set()
    for i in range(len(ds)):
        item = ds[i]
        if ds.items[i].frame == 3:  # the key frame's own image is missing: skipped
            assert item is None
            continue
        green = item["frames"][:, 1]
        assert all(torch.allclose(green[0], g, atol=0.05) for g in green)
        flips.add(item["meta"]["flip"])
        w = item["target_weight"]
        assert ((item["target"][w > 0] >= 0) & (item["target"][w > 0] <= 1)).all()
    assert flips == {True, False}


def test_unreadable_image_skipped_and_counted_or_raised(clip_root):
    root, videos = clip_root
    (root / videos[0].frames[1].file_name).write_bytes(b"not a jpeg")
    train = dd.PoseTrackClips(videos, root, offsets=(-1, 1), train=True)
    hits = [i for i, it in enumerate(train.items) if it.frame in (0, 1, 2)]  # clips that include frame 1
    batch = dd.collate_clips([train[i] for i in hits])
    assert batch["meta"] == [] and batch["frames"] is None and batch["skipped"] == len(hits)
    assert train.stats["unreadable_images"] == len(hits)
    other = [i for i, it in enumerate(train.items) if it.frame == 4]
    batch = dd.collate_clips([train[hits[0]], train[other[0]]])
    assert batch["skipped"] == 1 and batch["frames"].shape[0] == 1
    strict = dd.PoseTrackClips(videos, root, offsets=(-1, 1), train=True, on_unreadable="raise")
    with pytest.raises(dd.ImageError, match=r"000042_mpii_test/000001\.jpg: cannot decode image"):
        strict[hits[0]]
    with pytest.raises(dd.ImageError, match="cannot decode"):
        dd.PoseTrackClips(videos, root, offsets=(-1, 1))[hits[0]]  # evaluation raises by default


def test_clip_frame_numbers():
    assert dd.clip_frame_numbers(0, (-1, 1), 0, 139) == ([0, 0, 1], 1)
    assert dd.clip_frame_numbers(139, (-2, -1, 1, 2), 0, 139) == ([137, 138, 139, 139, 139], 2)
    assert dd.clip_frame_numbers(5, (-3,), 1, None) == ([2, 5], 1)
    assert dd.frame_file("images/val/012834_mpii_test/000000.jpg", 7) == "images/val/012834_mpii_test/000007.jpg"
    assert dd.frame_file("images/bonn/000001_bonn/00000001.jpg", 12) == "images/bonn/000001_bonn/00000012.jpg"
    with pytest.raises(ValueError, match="must not contain 0"):
        dd.PoseTrackClips([], ".", offsets=(0, 1))

"""The embedded synthetic video-pose dataset (examples/dsta/synthetic.py): PoseTrack18 layout readable
by posetrack_io / posetrack_eval / data.PoseTrackClips, determinism, motion and corruption knobs."""
import json
from pathlib import Path

from dsta import benchmark_stats as bs
from dsta import data as dd
import numpy as np
from dsta import posetrack_eval as pe
from dsta import posetrack_io as pio
import pytest
from dsta import synthetic as syn

SIZE = (96, 128)
H, W = SIZE
SMALL = dict(num_videos=3, frames_per_video=8, size=SIZE)


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_hard")
    return root, syn.generate(root, **SMALL, difficulty=1.0, seed=3)


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_easy")
    return root, syn.generate(root, **SMALL, difficulty=0.0, seed=3)


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_annotations_load(hard):
    root, summary = hard
    videos = pio.load_annotations(root / "annotations" / "train")
    assert [v.name for v in videos] == [f"{i:06d}_synth_train" for i in (1, 2, 3)]
    assert summary["videos"] == 3 and summary["frames"] == 24 and summary["annotations"] > 0
    for v in videos:
        assert v.fmt == "pt18" and v.nframes == 8 and len(v.frames) == 8 and v.first_frame == 0
        for t, fr in enumerate(v.frames):
            assert fr.index == t and fr.is_labeled and (root / fr.file_name).is_file()
            assert (fr.width, fr.height) == (W, H)
            tracks = [p.track_id for p in fr.persons]
            assert len(tracks) == len(set(tracks))
            for p in fr.persons:
                assert not p.present[[3, 4]].any()  # ears never annotated
                assert set(np.unique(p.keypoints[:, 2])) <= {0.0, 1.0}
                xy = p.keypoints[p.present, :2]
                assert (xy >= 0).all() and (xy[:, 0] <= W - 1).all() and (xy[:, 1] <= H - 1).all()
                assert (p.keypoints[p.present, 2] == 1).all()
                x, y, w, h = p.bbox
                assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= W and y + h <= H
                assert (xy >= [x, y]).all() and (xy <= [x + w, y + h]).all()
                hx1, hy1, hx2, hy2 = p.head_box
                assert 2 < pe.head_size(p.head_box) < H and hx2 > hx1 and hy2 > hy1
    doc = json.loads((root / "annotations" / "train" / f"{videos[0].name}.json").read_text())
    ann, im = doc["annotations"][0], doc["images"][0]
    assert {"bbox", "bbox_head", "track_id", "id", "image_id", "category_id", "num_keypoints", "scores",
            "iscrowd", "keypoints"} <= set(ann)  # fmt: skip
    assert {"file_name", "id", "frame_id", "vid_id", "nframes", "is_labeled", "ignore_regions_x",
            "ignore_regions_y"} <= set(im)  # fmt: skip
    assert doc["categories"][0]["keypoints"] == list(pio.POSETRACK.joints)


def test_gt_as_prediction_scores_100(hard, tmp_path):
    root, _ = hard
    gt = root / "annotations" / "train"
    for f in sorted(gt.glob("*.json")):
        doc = json.loads(f.read_text())
        for a in doc["annotations"]:
            a["scores"] = [1.0] * 17
        (tmp_path / f.name).write_text(json.dumps(doc))
    r = pe.evaluate(gt, tmp_path)
    assert all(r[c] == 100.0 for c in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"))


def test_clip_dataset_gt_and_detection_boxes(hard):
    root, _ = hard
    videos = pio.load_annotations(root / "annotations" / "train")
    ds = dd.PoseTrackClips(videos, root, offsets=(-1, 1), image_size=(48, 64))
    assert len(ds) > 0
    batch = dd.collate_clips([ds[0], ds[len(ds) - 1]])
    assert batch["frames"].shape[1:] == (3, 3, 64, 48) and batch["target_weight"].sum() > 0
    dets = pio.load_detections(root / "detections_train.json", score_threshold=0.2)
    dds = dd.PoseTrackClips(videos, root, offsets=(-2, -1, 1, 2), image_size=(48, 64), detections=dets)
    assert len(dds) > 0 and dds.stats["unmatched_detections"] == 0
    assert dds[0]["frames"].shape == (5, 3, 64, 48)


def test_detections_structure_and_scores(hard):
    root, summary = hard
    dets = json.loads((root / "detections_train.json").read_text())
    assert len(dets) == summary["detections"] > 0
    ids = {fr.image_id for v in pio.load_annotations(root / "annotations" / "train") for fr in v.frames}
    gt = {}
    for v in pio.load_annotations(root / "annotations" / "train"):
        for fr in v.frames:
            gt[fr.image_id] = [p.bbox for p in fr.persons]
    for d in dets:
        assert set(d) == {"image_id", "bbox", "score", "category_id"} and d["category_id"] == 1
        assert d["image_id"] in ids and 0 < d["score"] <= 1
        x, y, w, h = d["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= W and y + h <= H

    def iou(a, b):
        iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
        ix = iw * max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
        return ix / (a[2] * a[3] + b[2] * b[3] - ix)

    best = [max([iou(d["bbox"], g) for g in gt[d["image_id"]]], default=0.0) for d in dets]
    high = [b for d, b in zip(dets, best) if d["score"] >= 0.8]
    assert high and min(high) > 0.5  # confident boxes are good boxes
    assert any(d["score"] < 0.45 and b < 0.3 for d, b in zip(dets, best))  # some false positives, low scores


def test_deterministic_and_independent_of_workers(tmp_path, hard):
    root, _ = hard
    a = tmp_path / "a"
    syn.generate(a, **SMALL, difficulty=1.0, seed=3, workers=2)
    assert _files(a) == _files(root)
    b = tmp_path / "b"
    syn.generate(b, **SMALL, difficulty=1.0, seed=4)
    fa, fb = _files(a), _files(b)
    name = "annotations/train/000001_synth_train.json"
    assert fa[name] != fb[name]
    jpgs = [k for k in fa if k.endswith(".jpg")]
    assert all(fa[k] != fb[k] for k in jpgs)
    c = tmp_path / "c"  # the same seed for another split gives other videos
    syn.generate(c, num_videos=1, frames_per_video=8, size=SIZE, difficulty=1.0, seed=3, split="val")
    val0 = (c / "images/val/000001_synth_val/000000.jpg").read_bytes()
    assert val0 != fa["images/train/000001_synth_train/000000.jpg"]


def test_label_every(tmp_path):
    s = syn.generate(tmp_path, num_videos=1, frames_per_video=7, size=SIZE, people=(2, 2), split="val", label_every=3)
    (v,) = pio.load_annotations(tmp_path / "annotations" / "val")
    assert [fr.is_labeled for fr in v.frames] == [t % 3 == 0 for t in range(7)]
    assert all(bool(fr.persons) == fr.is_labeled for fr in v.frames)
    assert s["labeled_frames"] == 3 and s["benchmark"]["key_joints"] > 0
    assert len(list((tmp_path / "images/val/000001_synth_val").glob("*.jpg"))) == 7
    ds = dd.PoseTrackClips([v], tmp_path, offsets=(-1, 1), image_size=(48, 64))
    assert {it.frame for it in ds.items} <= {0, 3, 6} and ds.clip_files(v, 3)[0][0].endswith("000002.jpg")


def test_ignore_regions_at_high_difficulty(hard):
    root, summary = hard
    assert summary["ignore_regions"] > 0
    regions = [r for v in pio.load_annotations(root / "annotations" / "train") for fr in v.frames
               for r in fr.ignore_regions]  # fmt: skip
    assert regions
    for r in regions:
        assert r.shape[0] >= 3 and (r >= 0).all() and (r[:, 0] <= W - 1).all() and (r[:, 1] <= H - 1).all()


def test_corruption_flags_follow_difficulty(hard, easy):
    (root, s1), (_, s0) = hard, easy
    assert s0["corrupted_frames"] == 0 and not any(any(f.values()) for fl in s0["frame_flags"].values() for f in fl)
    assert s1["corrupted_frames"] > 0 and s1["corrupted_frames"] <= s1["frames"]
    meta = json.loads((root / "synthetic_train.json").read_text())
    assert {k: v["frame_flags"] for k, v in meta["videos"].items()} == s1["frame_flags"]
    assert all(set(f) == set(syn.CORRUPTIONS) for fl in s1["frame_flags"].values() for f in fl)
    assert meta["benchmark"] == s1["benchmark"] and s1["benchmark"]["corrupted"] > s0["benchmark"]["corrupted"]


def test_joint_codes_match_the_annotations(hard):
    """The metadata's per-joint state: -1 exactly where the GT has no joint in a labelled frame; the bit
    constants are the ones benchmark_stats reads."""
    root, _ = hard
    assert (bs.HIDDEN, bs.BLURRED, bs.DEFOCUSED) == (syn.HIDDEN, syn.BLURRED, syn.DEFOCUSED)
    meta = json.loads((root / "synthetic_train.json").read_text())
    seen = 0
    for v in pio.load_annotations(root / "annotations" / "train"):
        codes = meta["videos"][v.name]["joints"]
        for fr in v.frames:
            for p in fr.persons:
                c = np.asarray(codes[str(p.track_id)][fr.index])
                assert ((c >= 0) == p.present).all()
                seen += 1
    assert seen > 0


def test_long_hidden_joints_are_unlabelled(tmp_path):
    """A joint hidden for more than HIDDEN_ANNOTATED_MAX consecutive frames has no GT there; briefly hidden
    joints keep theirs."""
    syn.generate(tmp_path, num_videos=6, frames_per_video=16, size=SIZE, people=(2, 3), difficulty=0.0, seed=2)
    meta = json.loads((tmp_path / "synthetic_train.json").read_text())
    brief = 0
    for v in meta["videos"].values():
        for rows in v["joints"].values():
            c = np.asarray(rows)
            hidden = (c >= 0) & (c & syn.HIDDEN > 0)
            for j in range(17):
                run = 0
                for t in range(len(c)):
                    run = run + 1 if hidden[t, j] else 0
                    assert run <= syn.HIDDEN_ANNOTATED_MAX
                brief += int(hidden[:, j].sum())
    assert brief > 0  # people passing each other hide joints briefly, and those stay annotated


def test_difficulty_sets_the_rescuable_fraction(tmp_path):
    """The difficulty levels of the protocol reach their targets on a small split: ~0% / ~15% / >= 30% of the
    key-frame joints spoiled but clean in a neighbouring frame; motion stays below the PCKh threshold per frame."""
    from dsta import protocol

    got = {}
    for level, d in protocol.LEVELS.items():
        s = syn.generate(tmp_path / level, num_videos=8, frames_per_video=20, size=SIZE, difficulty=d, seed=0,
                         split="val")  # fmt: skip
        got[level] = s["benchmark"]
    assert got["easy"]["rescuable_1"] < 0.06 and got["easy"]["blurred"] == got["easy"]["defocused"] == 0
    assert 0.10 <= got["medium"]["rescuable_1"] <= 0.20
    assert got["hard"]["rescuable_1"] >= 0.30
    for b in got.values():
        assert b["rescuable_1"] <= b["rescuable_2"] <= b["corrupted"]
        assert 0.05 < b["motion_median"] < 0.5 and b["motion_q1"] <= b["motion_median"] <= b["motion_q3"]
    hard = got["hard"]
    assert min(hard["hidden"], hard["blurred"], hard["defocused"]) > 0.03  # all three kinds of spoiling occur


def test_benchmark_stats_counts_by_hand():
    """measure / joint_subsets on a hand-made metadata: one person, 5 frames, 2 annotated joints."""
    codes = [[-1] * 17 for _ in range(5)]
    for t, (a, b) in enumerate([(0, 0), (1, 4), (0, 1), (2, 1), (0, -1)]):
        codes[t][0], codes[t][5] = a, b
    meta = {"label_every": 1, "split": "val", "difficulty": 0.5,
            "videos": {"v": {"joints": {"0": codes}, "motion": {"0": [[-1.0] * 17] + [[0.5] * 17] * 4},
                             "frame_flags": [{"occluder": t == 1} for t in range(5)]}}}  # fmt: skip
    s = bs.measure(meta)
    # key joints: nose 5 (codes 0,1,0,2,0), slot 5: 4 (0,4,1,1): 9; corrupted: nose 2, slot 5 3
    assert s["key_joints"] == 9 and s["corrupted"] == pytest.approx(5 / 9)
    # rescuable at +-1: nose t1 (t0 clean), t3 (t2 clean); slot 5 t1 (t0 clean); t2, t3 no clean neighbour at +-1
    assert s["rescuable_1"] == pytest.approx(3 / 9)
    assert s["rescuable_2"] == pytest.approx(4 / 9)  # slot 5 at t2 sees t0
    assert s["hidden"] == pytest.approx(3 / 9) and s["defocused"] == pytest.approx(1 / 9)
    assert s["motion_median"] == 0.5 and s["frame_rates"]["occluder"] == pytest.approx(0.2)
    sub = bs.joint_subsets(meta)
    assert sub["rescuable"][("v", 1, 0)][[0, 5]].tolist() == [True, True]
    assert sub["rescuable"][("v", 2, 0)][[0, 5]].tolist() == [False, False]
    assert sub["clean"][("v", 2, 0)][[0, 5]].tolist() == [True, False]


def test_benchmark_stats_cli(hard, tmp_path, capsys):
    root, summary = hard
    stats = bs.main([str(root), "--split", "train", "--json", str(tmp_path / "s.json")])
    assert stats == summary["benchmark"] and "rescuable" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        bs.main([str(tmp_path), "--split", "val"])
    assert e.value.code == 2


@pytest.mark.parametrize("seed", range(6))
def test_joints_move_smoothly_but_not_rigidly(seed):
    rng = np.random.default_rng(seed)
    height = 100.0
    for mode in ("walk", "wave", "turn"):
        J, yaw, _ = syn.make_poses(rng, 40, height, 180.0, 256, mode=mode)
        J = J[:, [s for s in range(17) if s not in (3, 4)]]
        assert np.isfinite(J).all() and np.isfinite(yaw).all()
        step = np.diff(J, axis=0)  # [T-1, 15, 2]
        assert np.linalg.norm(step, axis=-1).max() < 0.2 * height
        relative = step - step.mean(axis=1, keepdims=True)  # what a rigid translation cannot explain
        assert np.median(np.linalg.norm(relative, axis=-1).std(axis=1)) > 0.002 * height
        limb = np.linalg.norm(J[:, 5] - J[:, 3], axis=-1)  # left shoulder -> left elbow (slots 5 -> 7)
        assert np.allclose(limb, 0.17 * height, rtol=0.35)


def test_cli_and_argument_checks(tmp_path, capsys):
    s = syn.main(["--out", str(tmp_path), "--videos", "1", "--frames", "2", "--size", "64", "64", "--seed", "5"])
    out = capsys.readouterr().out
    assert "clips/min" in out and s["videos"] == 1 and (tmp_path / "detections_train.json").is_file()
    with pytest.raises(SystemExit):
        syn.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for opt in ("--videos", "--difficulty", "--seed", "--split", "--size", "--people", "--label-every", "--workers"):
        assert opt in text
    assert text.count("default") >= 7 and "(required)" in text
    for bad in (dict(difficulty=1.5), dict(people=(0, 2)), dict(label_every=0), dict(size=(16, 16))):
        with pytest.raises(ValueError):
            syn.generate(tmp_path, **{**SMALL, **bad})

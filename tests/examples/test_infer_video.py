"""examples/dsta/infer_video.py (+ tracking.py, draw.py) on generated frames and on the real 5-frame clip.

The geometry is checked with a stub "model" that finds a bright blob in its crops: keypoints mapped back
to the image must land on the blob, the window must be the clamped t-1, t, t+1, and the keypoint tracker
must follow the blob as it moves. The CLI runs the tiny config with random weights (structure only).
"""
import json
from pathlib import Path

import cv2
from dsta.checkpoint import save_checkpoint
from dsta import infer_video as iv
import numpy as np
import pytest
import torch
from dsta import tracking
from stattn.nn import RegressionOutput
from stattn.skeletons import POSETRACK
from torch import nn

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "dsta" / "configs" / "cpu_tiny.yaml"
CLIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "posetrack18_sample" / "videos" / "000001_mpiinew_test"

W, H, N = 160, 120, 6  # generated frames: a 16 x 40 white blob moving right by STEP px per frame
BLOB_W, BLOB_H, STEP = 16, 40, 6


def blob_box(t):
    return (30 + STEP * t, 40, BLOB_W, BLOB_H)


def blob_center(t):
    x, y, w, h = blob_box(t)
    return np.array([x + (w - 1) / 2, y + (h - 1) / 2])


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("frames")
    for t in range(N):
        img = np.full((H, W, 3), 40, np.uint8)
        x, y, w, h = blob_box(t)
        img[y : y + h, x : x + w] = 255
        img[5:15, 120:150] = (0, 0, 200)  # a dark-ish red patch, below the blob threshold
        cv2.imwrite(str(d / f"{t:06d}.png"), img)
    return d


class BlobModel(nn.Module):
    """Stands in for DSTA: finds the bright pixels of each frame of the crop.

    Joint 0 (nose) = blob centre of the first window frame (t - 1), joint 2 (head_top) = of the last
    (t + 1), the other joints alternate between the key frame's blob corners (so their extent is the blob's).
    """

    frames = (-1, 0, 1)
    input_size = (64, 48)

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        b, t, _, h, w = x.shape
        bright = x.mean(2) > 1.0  # [B, T, h, w]: white (about 2.2 after ImageNet normalisation), not grey
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")  # fmt: skip
        cnt = bright.sum((-2, -1)).clamp_min(1)
        cx, cy = (bright * xs).sum((-2, -1)) / cnt, (bright * ys).sum((-2, -1)) / cnt  # [B, T]
        key = bright[:, 1]
        x0 = torch.where(key, xs, torch.inf).amin((-2, -1))
        y0 = torch.where(key, ys, torch.inf).amin((-2, -1))
        x1 = torch.where(key, xs, -torch.inf).amax((-2, -1))
        y1 = torch.where(key, ys, -torch.inf).amax((-2, -1))
        coords = torch.zeros(b, 17, 2)
        for j in range(17):
            coords[:, j] = torch.stack([x0, y0] if j % 2 else [x1, y1], -1)
        coords[:, 1] = torch.stack([cx[:, 1], cy[:, 1]], -1)
        coords[:, 0] = torch.stack([cx[:, 0], cy[:, 0]], -1)
        coords[:, 2] = torch.stack([cx[:, 2], cy[:, 2]], -1)
        coords = coords / torch.tensor([w, h], dtype=torch.float32)
        return RegressionOutput(coords, torch.full((b, 17, 2), 0.1), torch.full((b, 17, 1), 0.9))


def _kp(doc, t, person=0):
    return np.array(doc["frames"][t]["people"][person]["keypoints"])


def test_geometry_whole_frame(frames, tmp_path):
    """Crops -> image mapping, the clamped window and the same crop for every frame of the window."""
    model = BlobModel()
    summary = iv.infer_video(model, iv.FrameSource(frames), tmp_path, mode="whole", batch_size=4, progress=False)
    assert summary["frames"] == N and summary["crops"] == N
    assert [c[0] for c in model.calls] == [4, 2]  # batched across frames
    doc = json.loads((tmp_path / "keypoints.json").read_text())
    for t in range(N):
        kp = _kp(doc, t)
        # whole frame 160 x 120 -> a 200 x 267 crop of 48 x 64 pixels: 4.2 image px per crop px
        assert np.abs(kp[1, :2] - blob_center(t)).max() < 3, t
        assert np.abs(kp[0, :2] - blob_center(max(t - 1, 0))).max() < 3, t  # previous frame, clamped at 0
        assert np.abs(kp[2, :2] - blob_center(min(t + 1, N - 1))).max() < 3, t  # next frame, clamped at the end
        np.testing.assert_allclose(kp[:, 2], 0.9, atol=1e-4)
        assert doc["frames"][t]["people"][0]["box"] == [0, 0, W, H]


def test_geometry_first_boxes_tracker(frames, tmp_path):
    """--first-boxes: the box follows the moving blob through its predicted keypoints."""
    model = BlobModel()
    start = (24, 30, 30, 60)
    iv.infer_video(model, iv.FrameSource(frames), tmp_path, mode="first", first_boxes=[start], progress=False)
    assert all(c[0] == 1 for c in model.calls) and len(model.calls) == N  # one frame per batch
    doc = json.loads((tmp_path / "keypoints.json").read_text())
    assert doc["frames"][0]["people"][0]["box"] == list(start)
    for t in range(N):
        person = doc["frames"][t]["people"][0]
        assert person["track_id"] == 0
        assert np.abs(_kp(doc, t)[1, :2] - blob_center(t)).max() < 1.5, t  # ~1.2 image px per crop px
        if t > 0:  # the box of frame t comes from the keypoints of frame t - 1
            x, y, w, h = person["box"]
            assert abs(x + w / 2 - blob_center(t - 1)[0]) < 2, t
            assert abs(y + h / 2 - blob_center(t - 1)[1]) < 2, t


def test_cli_whole_frame(frames, tmp_path):
    out = tmp_path / "out"
    summary = iv.main([str(frames), "--config", str(CONFIG), "--whole-frame", "--out", str(out), "--device", "cpu"])
    doc = json.loads((out / "keypoints.json").read_text())
    assert doc["source"] == "frames" and doc["image_size"] == [W, H] and doc["joints"] == list(POSETRACK.joints)
    assert doc["model"]["frames"] == [-1, 0, 1] and doc["model"]["input_size"] == [64, 48]
    assert [f["frame"] for f in doc["frames"]] == list(range(N))
    assert [f["file"] for f in doc["frames"]] == [f"{t:06d}.png" for t in range(N)]
    for f in doc["frames"]:
        (person,) = f["people"]
        assert person["track_id"] == 0 and person["box"] == [0, 0, W, H] and person["box_score"] is None
        kp = np.array(person["keypoints"])
        assert kp.shape == (17, 3) and np.isfinite(kp).all()
        assert (kp[:, :2] >= 0).all() and (kp[:, 0] <= W - 1).all() and (kp[:, 1] <= H - 1).all()
        assert ((kp[:, 2] >= 0) & (kp[:, 2] <= 1)).all()
    assert summary["render"] == out / "poses.mp4"
    cap = cv2.VideoCapture(str(out / "poses.mp4"))
    n, size = 0, None
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n, size = n + 1, img.shape[:2]
    assert n == N and size == (H, W)


def test_cli_first_boxes_gif(frames, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    iv.main([str(frames), "--config", str(CONFIG), "--first-boxes", "24,30,30,60; 100,20,40,80", "--gif",
             "--max-frames", "4", "--out", str(out)])  # fmt: skip
    doc = json.loads((out / "keypoints.json").read_text())
    assert len(doc["frames"]) == 4
    for f in doc["frames"]:
        assert [p["track_id"] for p in f["people"]] == [0, 1]
        for p in f["people"]:
            x, y, w, h = p["box"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= W + 1e-6 and y + h <= H + 1e-6
    assert not (out / "poses.mp4").exists()
    with Image.open(out / "poses.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (W, H)


def test_cli_detections(frames, tmp_path):
    """--boxes: score threshold, image_name and image_id matching, IoU track ids."""
    dets = []
    for t in range(N):
        x, y, w, h = blob_box(t)
        dets.append({"image_name": f"images/val/seq/{t:06d}.png", "bbox": [x - 4, y - 4, w + 8, h + 8], "score": 0.9,
                     "category_id": 1})  # fmt: skip
        dets.append({"image_id": 100 + t, "bbox": [110, 60, 30, 50], "score": 0.8, "category_id": 1})
        dets.append({"image_id": 100 + t, "bbox": [0, 0, 20, 20], "score": 0.3, "category_id": 1})  # below --det-thr
    dets.append({"image_id": 999, "bbox": [0, 0, 20, 20], "score": 0.9, "category_id": 1})  # no such frame
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    iv.main([str(frames), "--config", str(CONFIG), "--boxes", str(tmp_path / "dets.json"), "--det-thr", "0.5",
             "--first-image-id", "100", "--out", str(out)])  # fmt: skip
    doc = json.loads((out / "keypoints.json").read_text())
    for t, f in enumerate(doc["frames"]):
        assert [p["box_score"] for p in f["people"]] == [0.9, 0.8]
        assert [p["track_id"] for p in f["people"]] == [0, 1]  # the moving blob keeps its id (IoU > 0.3)
        assert f["people"][1]["box"] == [110, 60, 30, 50]


@pytest.mark.parametrize("what", ["video", "folder"])
def test_real_clip(what, tmp_path):
    if not (CLIP / "000000.jpg").is_file():
        pytest.skip(f"real PoseTrack18 clip not found at {CLIP}")
    src = CLIP / "000001_mpiinew_test.mp4" if what == "video" else CLIP
    boxes = ["--whole-frame"] if what == "video" else ["--first-boxes", "560,180,160,330"]
    out = tmp_path / "out"
    summary = iv.main([str(src), "--config", str(CONFIG), *boxes, "--out", str(out), "--batch-size", "2"])
    assert summary["frames"] == 5 and summary["render"].is_file()
    doc = json.loads((out / "keypoints.json").read_text())
    assert doc["image_size"] == [1280, 720] and doc["fps"] == 30.0
    assert [f["frame"] for f in doc["frames"]] == [0, 1, 2, 3, 4]
    kp = np.array([f["people"][0]["keypoints"] for f in doc["frames"]])  # [5, 17, 3]
    assert np.isfinite(kp).all() and (kp[..., 0] <= 1279).all() and (kp[..., 1] <= 719).all() and (kp >= 0).all()
    if what == "folder":
        assert doc["frames"][0]["file"] == "000000.jpg" and doc["frames"][0]["people"][0]["box"] == [560, 180, 160, 330]
    else:  # a video's frames are named by their index, not after the video file
        assert [f["file"] for f in doc["frames"]] == [f"{t:06d}" for t in range(5)]


def test_checkpoint_matches_config(frames, tmp_path):
    """--checkpoint loads train.py's format; the same weights give the same keypoints as --config."""
    model, cfg, _ = iv.load_model(config=CONFIG, seed=0)
    save_checkpoint({"model": model.state_dict(), "config": cfg, "epoch": 0}, tmp_path / "best.pt")
    a, b = tmp_path / "a", tmp_path / "b"
    iv.main([str(frames), "--checkpoint", str(tmp_path / "best.pt"), "--whole-frame", "--out", str(a), "--max-frames", "3"])
    iv.main([str(frames), "--config", str(CONFIG), "--whole-frame", "--out", str(b), "--max-frames", "3"])
    ka = [f["people"][0]["keypoints"] for f in json.loads((a / "keypoints.json").read_text())["frames"]]
    kb = [f["people"][0]["keypoints"] for f in json.loads((b / "keypoints.json").read_text())["frames"]]
    np.testing.assert_allclose(ka, kb, rtol=0, atol=0.0101)  # identical up to the JSON's rounding (0.01 px)


# ------------------------------------------------------------------------------------------- errors
def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        iv.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_errors(frames, tmp_path, capsys):
    out = str(tmp_path / "out")
    cfg = ["--config", str(CONFIG)]
    assert "no such video file or frame folder" in _error(capsys, [str(tmp_path / "nope.mp4"), *cfg, "--out", out])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert "holds no image files" in _error(capsys, [str(tmp_path / "empty"), *cfg, "--out", out])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    assert "cannot read the video" in _error(capsys, [str(bad), *cfg, "--out", out])
    err = _error(capsys, [str(frames), "--checkpoint", str(tmp_path / "missing.pt"), "--out", out])
    assert "checkpoint" in err and "missing.pt" in err and "does not exist" in err
    model, model_cfg, _ = iv.load_model(config=CONFIG)
    save_checkpoint({"model": model.state_dict(), "config": {**model_cfg, "depth": 1}}, tmp_path / "other.pt")
    err = _error(capsys, [str(frames), "--checkpoint", str(tmp_path / "other.pt"), "--out", out])
    assert "do not fit the model of its config" in err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    err = _error(capsys, [str(frames), "--checkpoint", str(tmp_path / "junk.pt"), "--out", out])
    assert "cannot load checkpoint" in err
    for boxes, msg in [("1,2,3", "has 3 fields"), ("1,2,a,4", "is not 4 numbers"), ("1,2,0,4", "must be > 0"),
                       (";", "no box given")]:  # fmt: skip
        assert msg in _error(capsys, [str(frames), *cfg, "--first-boxes", boxes, "--out", out]), boxes
    assert "no such file" in _error(capsys, [str(frames), *cfg, "--boxes", str(tmp_path / "d.json"), "--out", out])
    broken = tmp_path / "broken"
    broken.mkdir()
    cv2.imwrite(str(broken / "000000.png"), np.zeros((20, 20, 3), np.uint8))
    (broken / "000001.png").write_bytes(b"truncated")
    err = _error(capsys, [str(broken), *cfg, "--out", out])
    assert "000001.png" in err and "cannot decode" in err
    with pytest.raises(SystemExit):  # argparse: --checkpoint and --config are exclusive, one is required
        iv.main([str(frames), "--out", out])


# ------------------------------------------------------------------------------------------- tracking
def test_parse_boxes():
    assert tracking.parse_boxes("1,2,3,4") == [(1.0, 2.0, 3.0, 4.0)]
    assert tracking.parse_boxes(" 1, 2, 3, 4 ; 5,6,7,8; ") == [(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)]
    with pytest.raises(tracking.BoxFormatError, match="non-finite"):
        tracking.parse_boxes("1,2,inf,4")


def test_iou_tracker_and_box_geometry():
    np.testing.assert_allclose(tracking.box_iou([[0, 0, 10, 10]], [[5, 0, 10, 10], [20, 20, 5, 5]]), [[1 / 3, 0.0]])
    trk = tracking.IoUTracker(iou_threshold=0.3, max_age=1)
    assert trk.assign([[0, 0, 10, 10], [50, 50, 10, 10]]) == [0, 1]
    assert trk.assign([[52, 50, 10, 10], [1, 0, 10, 10], [100, 0, 5, 5]]) == [1, 0, 2]  # order follows the boxes
    assert trk.assign([]) == []
    assert trk.assign([]) == []
    assert trk.assign([[1, 0, 10, 10]]) == [3]  # track 0 ended after max_age unmatched frames
    kp = np.zeros((17, 3))
    kp[:, :2] = [[10, 20], [30, 80]] * 8 + [[20, 50]]
    kp[:, 2] = 0.9
    x, y, w, h = tracking.box_from_keypoints(kp)
    np.testing.assert_allclose([x + w / 2, y + h / 2, w, h], [20, 50, 20 * 2.3, 60 * 2.3])
    kp[:, 2] = 0.0
    assert tracking.box_from_keypoints(kp) is None
    assert tracking.clip_box((-5, -5, 20, 20), 10, 10) == (0.0, 0.0, 10.0, 10.0)
    assert tracking.clip_box((20, 20, 5, 5), 10, 10) is None

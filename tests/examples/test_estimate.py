"""dsta.estimate: the Python API of video inference, without sys.path edits and without writing files.

The real 5-frame PoseTrack18 clip runs through `python -c "import dsta; ..."` in a fresh interpreter
(detector chosen automatically); generated frames check that the API and the CLI give the same poses
and that every form of `boxes` / `detector` reaches the model."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import dsta
import numpy as np
import pytest
from dsta.checkpoint import save_checkpoint
from dsta import infer_video as iv
from dsta.pipeline import FrameResult, InferenceError, load_model

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "dsta" / "configs" / "cpu_tiny.yaml"
W, H, N = 96, 80, 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A train.py-format checkpoint of the tiny config (random weights, seed 0)."""
    model, cfg, _ = load_model(config=CONFIG, seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint({"model": model.state_dict(), "config": cfg, "epoch": 0}, path)
    return path


def _frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(N)]


def test_import_is_cheap_and_estimate_is_lazy():
    code = "import sys, dsta; assert 'torch' not in sys.modules; f = dsta.estimate; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        dsta.no_such_name  # noqa: B018


def test_real_clip_from_a_fresh_interpreter(sample, checkpoint, tmp_path):
    """As documented in the README: a video file, a checkpoint, the detector picked automatically."""
    clip = sample / "videos" / "000001_mpiinew_test" / "000001_mpiinew_test.mp4"
    code = textwrap.dedent(f"""
        import json, dsta
        est = dsta.estimate({str(clip)!r}, {str(checkpoint)!r})
        rows = [dict(index=r.index, name=r.name, ids=r.track_ids.tolist(), boxes=r.boxes.tolist(),
                     kp=list(r.keypoints.shape), sc=list(r.scores.shape), finite=bool(r.keypoints.size == 0 or
                     (r.keypoints >= 0).all()), image=list(r.image.shape)) for r in est]
        print(json.dumps(dict(people=est.people.description, rows=rows)))
    """)  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["people"].startswith("detector hog")  # "auto" without boxes: the HOG people detector
    rows = doc["rows"]
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["name"] for r in rows] == ["000000", "000001", "000002", "000003", "000004"]
    assert all(r["image"] == [720, 1280, 3] and r["finite"] for r in rows)
    for r in rows:
        p = len(r["ids"])
        assert r["kp"] == [p, 17, 2] and r["sc"] == [p, 17] and len(r["boxes"]) == p
    assert sum(len(r["ids"]) for r in rows) >= 5  # HOG finds the walking person in every frame
    assert all(0 in r["ids"] for r in rows)  # ... and the IoU tracker keeps their id
    assert not list(tmp_path.iterdir())  # nothing written


def test_api_matches_cli(checkpoint, tmp_path):
    """The CLI is a thin wrapper: its keypoints.json holds the API's numbers (to the JSON's rounding)."""
    frames = _frames()
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2

    for t, img in enumerate(frames):
        cv2.imwrite(str(folder / f"{t:06d}.png"), img[..., ::-1])
    box = "10,8,40,60"
    api = list(dsta.estimate(frames, checkpoint, boxes=box, device="cpu", batch_size=3))
    iv.main([str(folder), "--checkpoint", str(checkpoint), "--first-boxes", box, "--out", str(tmp_path / "o")])
    doc = json.loads((tmp_path / "o" / "keypoints.json").read_text())
    assert len(api) == len(doc["frames"]) == N
    for r, f in zip(api, doc["frames"]):
        assert isinstance(r, FrameResult) and r.index == f["frame"]
        kp = np.array([p["keypoints"] for p in f["people"]])
        np.testing.assert_allclose(r.keypoints, kp[..., :2], atol=0.0051)
        np.testing.assert_allclose(r.scores, kp[..., 2], atol=0.00051)
        np.testing.assert_allclose(r.boxes, [p["box"] for p in f["people"]], atol=0.0051)


def test_boxes_and_detector_forms(checkpoint):
    frames = _frames()
    run = lambda **kw: list(dsta.estimate(frames, checkpoint, device="cpu", **kw))  # noqa: E731
    whole = run(boxes="whole")
    assert [r.boxes.tolist() for r in whole] == [[[0, 0, W, H]]] * N
    assert all(np.isnan(r.box_scores).all() for r in whole)
    np.testing.assert_allclose([r.keypoints for r in run(detector=None)], [r.keypoints for r in whole])
    # per-frame boxes (some with scores): clipped to the image, linked by IoU, one outside the image dropped
    per = {0: [[10, 10, 30, 40], ((50, 20, 30, 40), 0.7)], 1: [[11, 10, 30, 40], [500, 500, 10, 10]],
           2: [[-20, -20, 50, 50]]}  # fmt: skip
    est = dsta.estimate(frames, checkpoint, boxes=per, device="cpu")
    res = list(est)
    assert [r.track_ids.tolist() for r in res] == [[0, 1], [0], [2], []]
    assert np.isnan(res[0].box_scores[0]) and res[0].box_scores[1] == pytest.approx(0.7)
    assert res[2].boxes.tolist() == [[0, 0, 30, 30]] and est.people.dropped == 1
    assert res[3].keypoints.shape == (0, 17, 2) and res[3].scores.shape == (0, 17)
    # a callable detector: called once per frame with the RGB image
    seen = []

    def detector(image):
        seen.append(image.shape)
        return np.array([[5.0, 5.0, 20.0, 30.0]]), np.array([0.9])

    res = run(detector=detector)
    assert seen == [(H, W, 3)] * N and [r.track_ids.tolist() for r in res] == [[0]] * N
    # first-frame boxes as arrays: the same as the string form
    np.testing.assert_allclose([r.keypoints for r in run(boxes=[[10, 8, 40, 60]])],
                               [r.keypoints for r in run(boxes="10,8,40,60")])  # fmt: skip


def test_estimate_errors(checkpoint, tmp_path):
    frames = _frames()
    with pytest.raises(InferenceError, match="not both"):
        dsta.estimate(frames, checkpoint, boxes="whole", detector="hog")
    with pytest.raises(InferenceError, match="first-frame boxes"):
        dsta.estimate(frames, checkpoint, boxes=[[1, 2, 3]])
    with pytest.raises(InferenceError, match="lies outside"):
        list(dsta.estimate(frames, checkpoint, boxes=[[1000, 1000, 5, 5]]))
    with pytest.raises(InferenceError, match="does not exist"):
        dsta.estimate(frames, tmp_path / "missing.pt")
    with pytest.raises(InferenceError, match="RGB uint8"):
        list(dsta.estimate([np.zeros((4, 4), np.uint8)], checkpoint, boxes="whole"))
    with pytest.raises(InferenceError, match="not one of"):
        dsta.estimate(frames, checkpoint, device="gpu0")
    with pytest.warns(UserWarning, match="random weights"):
        est = dsta.estimate(frames[:1], boxes="whole", device="cpu")
    assert len(list(est)) == 1
    with pytest.raises(InferenceError, match="only once"):
        list(est)

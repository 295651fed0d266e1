"""The video CLI (examples/dsta/infer_video.py) against hostile input: every user error is one sentence on
stderr and exit code 2, never a traceback; boxes outside the image are dropped and counted, not crashed on.

Grows with every case found."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from dsta import draw
from dsta import infer_video as iv

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "examples" / "dsta" / "configs" / "cpu_tiny.yaml"
W, H, N = 64, 48, 3


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for t in range(N):
        cv2.imwrite(str(d / f"{t:06d}.png"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    return d


def _error(capsys, argv) -> str:
    """Run the CLI; it must exit with code 2 and end with one `error:` line naming the problem (argparse's
    own errors print the usage above it), never a traceback."""
    with pytest.raises(SystemExit) as exc:
        iv.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and ": error: " in lines[-1], err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err
    return lines[-1]


def _base(frames, tmp_path):
    return [str(frames), "--config", str(CONFIG), "--out", str(tmp_path / "out"), "--no-progress"]


@pytest.mark.parametrize("boxes, message", [
    ("1e9,1e9,10,10", "lies outside"),  # far outside the frame
    ("-500,-500,20,20", "lies outside"),
    ("10,10,20,20;1e9,0,5,5", "first box 2"),  # the second box
    ("10,10,0.5,0.5", "less than a pixel"),
    ("nan,0,10,10", "non-finite"),
    ("0,0,-5,10", "must be > 0"),
])  # fmt: skip
def test_absurd_first_boxes(frames, tmp_path, capsys, boxes, message):
    assert message in _error(capsys, [*_base(frames, tmp_path), f"--first-boxes={boxes}"])


def test_huge_first_box_is_clipped_to_the_frame(frames, tmp_path):
    iv.main([*_base(frames, tmp_path), "--first-boxes=-1e30,-1e30,1e31,1e31"])
    doc = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert doc["frames"][0]["people"][0]["box"] == [0, 0, W, H]


def test_absurd_detection_boxes_are_dropped_and_counted(frames, tmp_path, capsys):
    dets = [{"image_id": 0, "bbox": [5, 5, 20, 30], "score": 0.9},
            {"image_id": 0, "bbox": [1e9, 1e9, 5, 5], "score": 0.9},  # outside the image
            {"image_id": 1, "bbox": [5, 5, 0, 30], "score": 0.9},  # zero width
            {"image_id": 1, "bbox": [5, 5, 1e12, 1e12], "score": 0.9},  # clipped to the image
            {"image_id": 2, "bbox": [-1e12, 5, 1e9, 10], "score": 0.9}]  # fmt: skip
    (tmp_path / "d.json").write_text(json.dumps(dets))
    summary = iv.main([*_base(frames, tmp_path), "--boxes", str(tmp_path / "d.json")])
    err = capsys.readouterr().err
    assert "3 box(es) outside the image were dropped" in err and summary["frames"] == N
    doc = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert [len(f["people"]) for f in doc["frames"]] == [1, 1, 0]
    assert doc["frames"][1]["people"][0]["box"] == [5, 5, W - 5, H - 5]


@pytest.mark.parametrize("content, message", [
    ("not json at all", "d.json"),
    ("", "empty"),
    ('{"detections": []}', "should hold a list"),
    ("[5]", "should be an object"),
    ('[{"bbox": [1, 2, 3, 4], "score": 0.9}]', "missing key 'image_id'"),
    ('[{"image_id": 0, "bbox": [1, 2, 3], "score": 0.9}]', "[x, y, w, h]"),
    ('[{"image_id": 0, "bbox": [1, 2, 3, "x"], "score": 0.9}]', "should be a number"),
    ('[{"image_id": 0, "bbox": [1, 2, 3, 4], "score": "high"}]', "should be a number"),
    ('[{"image_id": 0, "bbox": [1, 2, 3, 4]}]', "missing key 'score'"),
    ('[{"image_id": "first", "bbox": [1, 2, 3, 4], "score": 0.9}]', "not a non-negative integer"),
    ('[{"image_id": 1.5, "bbox": [1, 2, 3, 4], "score": 0.9}]', "not a non-negative integer"),
    ('[{"image_id": 0, "bbox": [1, 2, 3, 4], "score": 0.9}', "d.json"),  # truncated
])  # fmt: skip
def test_malformed_detections_file(frames, tmp_path, capsys, content, message):
    (tmp_path / "d.json").write_text(content)
    assert message in _error(capsys, [*_base(frames, tmp_path), "--boxes", str(tmp_path / "d.json")])


def test_existing_file_as_out(frames, tmp_path, capsys):
    out = tmp_path / "taken.txt"
    out.write_text("keep me")
    err = _error(capsys, [str(frames), "--config", str(CONFIG), "--whole-frame", "--out", str(out)])
    assert "is an existing file" in err and out.read_text() == "keep me"
    (tmp_path / "file").write_text("x")  # a parent that is a file: cannot create the folder
    assert "cannot create the folder" in _error(capsys, [str(frames), "--config", str(CONFIG), "--whole-frame",
                                                        "--out", str(tmp_path / "file" / "sub")])  # fmt: skip


@pytest.mark.parametrize("device, message", [("cuda", "no CUDA device"), ("cuda:7", "CUDA"), ("tpu", "not one of"),
                                             ("cuda:x", "not one of")])  # fmt: skip
def test_unavailable_device(frames, tmp_path, capsys, device, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that CUDA device")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert message in _error(capsys, [*_base(frames, tmp_path), "--whole-frame", "--device", device])


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--max-frames", "0"], "--max-frames must be >= 1"),
    (["--fps", "-1"], "--fps must be > 0"),
    (["--detector", "nope.onnx"], "no such file"),
    (["--detector", "yolo"], "expected 'hog'"),
])  # fmt: skip
def test_bad_options(frames, tmp_path, capsys, extra, message):
    assert message in _error(capsys, [*_base(frames, tmp_path), *extra])


def test_junk_onnx_detector(frames, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    assert "cannot load" in _error(capsys, [*_base(frames, tmp_path), "--detector", str(tmp_path / "junk.onnx")])


def test_script_prints_one_sentence(frames, tmp_path):
    """As a user runs it: the script file, a subprocess, a stderr of one line."""
    done = subprocess.run([sys.executable, str(REPO / "examples" / "dsta" / "infer_video.py"), str(frames), "--config",
                           str(CONFIG), "--first-boxes", "1e9,1e9,10,10", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "lies outside" in done.stderr


def test_every_option_has_help_and_a_default():
    parser = iv.build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings
    text = " ".join(parser.format_help().split())  # unwrapped
    for shown in ("(default: auto)", "(default: 32)", "(default: 0.5)", "(default: 0.2)", "(default: 0)"):
        assert shown in text, shown


def test_track_label_stays_inside_the_frame():
    """A box touching the top edge gets its id inside the box instead of cut off above the image."""
    img = np.zeros((200, 300, 3), np.uint8)
    kp = np.zeros((17, 3))
    draw.draw_person(img, kp, box=(250, 0, 49, 80), track_id=123, threshold=0.5, thickness=3)
    (tw, th), base = cv2.getTextSize("123", cv2.FONT_HERSHEY_SIMPLEX, 0.4 * 3 + 0.2, 2)
    x, y = draw.label_origin((250, 0, 49, 80), (tw, th, base), (300, 200))
    assert y - th >= 0 and y + base < 200 and x >= 0 and x + tw < 300  # the whole text lies in the image
    assert img[y - th : y + base, x : x + tw].any()  # and it was drawn there
    assert draw.label_origin((10, 100, 20, 20), (tw, th, base), (300, 200))[1] == 96  # room above: above the box

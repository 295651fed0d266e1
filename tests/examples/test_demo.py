"""examples/dsta/demo.py (the main job) end to end with --quick settings: data, both models, eval, video, report."""
import json
import math

from dsta import demo
from dsta import report

COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


def _in_range(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 100.0


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    doc = demo.main(["--quick", "--out", str(out), "--seed", "0"])
    printed = capsys.readouterr().out

    for name in ("report.md", "report.json", "report.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "report.json").read_text())
    assert saved["summary"] == doc["summary"]

    # both models trained the same number of steps and were evaluated with GT boxes and detections
    models = saved["models"]
    assert set(models) == {"dsta", "baseline"}
    assert models["dsta"]["model"] == "dsta" and models["dsta"]["frames"] == [-1, 0, 1]
    assert models["baseline"]["model"] == "image_baseline" and models["baseline"]["frames"] == [0]
    assert models["dsta"]["steps"] == models["baseline"]["steps"] > 0
    for m in models.values():
        for key in ("eval_gt", "eval_det"):
            res = m[key]
            for col in COLUMNS:
                assert _in_range(res[col]), (key, col, res[col])
            assert len(res["per_joint"]) == 15 and all(_in_range(v) for v in res["per_joint"].values())
        assert len(m["step_losses"]) == m["steps"] and m["history"] and "Total" in m["history"][-1]
        assert (out / m["checkpoint"]).is_file()
    assert math.isclose(saved["difference"], saved["dsta_mAP"] - saved["baseline_mAP"])

    # the video of DSTA's predictions
    assert saved["video"]["files"], "no video written"
    for f in saved["video"]["files"]:
        assert (out / f).is_file() and (out / f).stat().st_size > 0
    kp = json.loads((out / "video" / "keypoints.json").read_text())
    assert len(kp["frames"]) == saved["video"]["frames"] and kp["frames"][0]["people"]

    # the printed summary states both mAPs; the Markdown has the table and links
    assert doc["summary"].startswith("DSTA mAP ") and "vs image baseline" in doc["summary"]
    assert doc["summary"] in printed
    md = (out / "report.md").read_text()
    assert doc["summary"] in md and "| DSTA - baseline |" in md and "report.png" in md
    assert "| " + " | ".join(COLUMNS) + " |" in md


def test_summary_line_says_when_dsta_loses():
    win = report.summary_line({"Total": 61.2}, {"Total": 48.7})
    assert win == "DSTA mAP 61.2 vs image baseline 48.7 (+12.5) on synthetic val (GT boxes)"
    lose = report.summary_line({"Total": 40.0}, {"Total": 45.0})
    assert "(-5.0)" in lose and "did NOT beat" in lose
    assert "not comparable" in report.summary_line({"Total": float("nan")}, {"Total": 1.0})

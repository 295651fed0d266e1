"""examples/dsta/demo.py (the main job) end to end with --quick settings: data, stage 1, both models from its
backbone, eval on all / rescuable / clean joints, video, report, and the comparison with the sweep."""
import json
import math

from dsta import demo
from dsta import report
import pytest
import yaml

COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")


def _in_range(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 100.0


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    doc = demo.main(["--quick", "--out", str(out), "--seed", "0"])
    printed = capsys.readouterr().out

    # the protocol: stage 1 trained here, both models loaded its backbone and trained the same steps
    assert not doc["stage1"]["cached"] and (out / "stage1" / "backbone.pt").is_file()
    configs = {key: yaml.safe_load((out / key / "config.yaml").read_text()) for key in ("dsta", "baseline")}
    for cfg in configs.values():
        assert cfg["pretrained"] == str(out / "stage1" / "backbone.pt")
    same = ("epochs", "batch_size", "lr", "milestones", "seed", "weight_decay")
    assert {k: configs["dsta"]["train"][k] for k in same} == {k: configs["baseline"]["train"][k] for k in same}
    assert configs["dsta"]["data"]["augment"] == configs["baseline"]["data"]["augment"]
    assert printed.count("loaded 24, missing 0") == 2  # both loaded every backbone tensor
    assert doc["benchmark"]["key_joints"] > 0 and "rescuable" in printed
    for m in doc["models"].values():
        split = m["split_ap"]
        assert set(split) == {"all", "rescuable", "clean"}
        assert split["all"]["Total"] == m["eval_gt"]["Total"]
        assert split["rescuable"]["gt_joints"] + split["clean"]["gt_joints"] <= split["all"]["gt_joints"]
    assert "rescuable joints" in doc["summary"] and "clean joints" in doc["summary"]

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
    assert "| model | all joints AP | rescuable joints AP | clean joints AP |" in md and "seed noise" in md

    # a second run reuses the stage-1 backbone and says so
    doc2 = demo.main(["--quick", "--out", str(tmp_path / "demo2"), "--cache", str(out / "stage1")])
    assert doc2["stage1"]["cached"] and "reusing the cached pretrained backbone" in capsys.readouterr().out
    assert "reused from the cache" in (tmp_path / "demo2" / "report.md").read_text()


def test_sweep_reference_and_comparison(tmp_path):
    """The demo reads the sweep's per-seed rows of its level and says whether its gap lies within 2 sd."""
    csv_path = tmp_path / "experiments.csv"
    rows = ["variant,level,seed,epochs,Total,rescuable_Total,clean_Total"]
    for seed, (img, dst) in enumerate([(40.0, 42.0), (41.0, 44.0), (39.0, 42.0)]):
        rows.append(f"image,medium,{seed},{demo.protocol.STAGE2_EPOCHS},{img},{img - 10},{img + 1}")
        rows.append(f"dsta,medium,{seed},{demo.protocol.STAGE2_EPOCHS},{dst},{dst - 5},{dst}")
        rows.append(f"dsta,hard,{seed},{demo.protocol.STAGE2_EPOCHS},0,0,0")  # another level: ignored
    rows.append(f"dsta,medium,3,{demo.protocol.STAGE2_EPOCHS},99,99,99")  # no image run of seed 3: not paired
    csv_path.write_text("\n".join(rows) + "\n")
    ref = demo.sweep_reference(csv_path)
    assert ref["dsta"]["all"] == [42.0, 44.0, 42.0] and ref["baseline"]["rescuable"] == [30.0, 31.0, 29.0]
    assert ref["seeds"] == [0, 1, 2]
    assert demo.sweep_reference(csv_path, epochs=99) is None and demo.sweep_reference(tmp_path / "none.csv") is None
    mine = {"dsta": {s: {"Total": 50.0} for s in ("all", "rescuable", "clean")},
            "baseline": {s: {"Total": 40.0} for s in ("all", "rescuable", "clean")}}
    cmp = demo._against_sweep(mine, ref)
    assert cmp["all"]["sweep_gaps"] == [2.0, 3.0, 3.0] and not cmp["all"]["within_spread"]  # +10 vs 2.7 ± 0.6
    line = report.sweep_line(cmp)
    assert "OUTSIDE" in line and "seeds [0, 1, 2]" in line
    assert "seed noise" in report.sweep_line(None)


def test_cli_options_have_help_and_defaults(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for opt in ("--out", "--quick", "--seed", "--epochs", "--cache", "--device"):
        assert opt in text
    assert "(default: runs/demo)" in text


def test_summary_line_says_when_dsta_loses():
    win = report.summary_line({"Total": 61.2}, {"Total": 48.7})
    assert win == "DSTA mAP 61.2 vs image baseline 48.7 (+12.5) on synthetic val (GT boxes)"
    split = {"dsta": {"rescuable": {"Total": 30.0}, "clean": {"Total": 70.0}},
             "baseline": {"rescuable": {"Total": 20.0}, "clean": {"Total": 71.0}}}
    line = report.summary_line({"Total": 61.2}, {"Total": 48.7}, split=split)
    assert line.endswith("; rescuable joints 30.0 vs 20.0 (+10.0); clean joints 70.0 vs 71.0 (-1.0)")
    lose = report.summary_line({"Total": 40.0}, {"Total": 45.0})
    assert "(-5.0)" in lose and "did NOT beat" in lose
    assert "not comparable" in report.summary_line({"Total": float("nan")}, {"Total": 1.0})

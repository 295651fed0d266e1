"""examples/dsta/experiments.py (the resumable sweep under the two-stage protocol) and sweep_report.py."""
import json

from dsta import experiments
from dsta import sweep_report
import pytest


def test_quick_run_is_resumable_and_reports(tmp_path, capsys):
    out = tmp_path / "exp"
    done = experiments.run(out, tables=["1"], seeds=[0], jobs=2, quick=True)
    assert sorted((r["level"], r["variant"]) for r in done) == [(lv, v) for lv in ("easy", "hard", "medium")
                                                                for v in ("dsta", "image")]  # fmt: skip
    for r in done:
        assert r["quick"] and r["epochs"] == 1 and 0.0 <= r["Total"] <= 100.0
        assert r["rescuable_gt_joints"] + r["clean_gt_joints"] <= r["all_gt_joints"]
        assert (out / "results" / r["level"] / r["variant"] / "seed0.json").exists()
    # every run started from the one stage-1 backbone
    for r in done:
        cfg = (out / "runs" / r["level"] / r["variant"] / "seed0" / "config.yaml").read_text()
        assert f"pretrained: {out / 'stage1' / 'backbone.pt'}" in cfg
    assert experiments.run(out, tables=["1"], seeds=[0], jobs=1, quick=True) == []  # nothing left to do
    assert "reusing the cached pretrained backbone" in capsys.readouterr().out
    doc = tmp_path / "docs" / "experiments.md"
    text = sweep_report.report(out, doc)
    # quick runs never count as results: the tables say "not run"; the benchmark table is filled in
    assert "not run" in text and doc.with_suffix(".png").exists() and "| hard | 1.0 |" in text
    assert "No run has finished yet." in text
    assert doc.with_suffix(".csv").read_text(encoding="utf-8").count("\n") == 1  # header only


def _fake(out, level, variant, totals, rescuable=None, clean=None):
    for seed, total in enumerate(totals):
        path = out / "results" / level / variant / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "variant": variant, "level": level, "difficulty": 1.0, "seed": seed, "epochs": 5, "steps": 10,
            "train_s": 1.0, "torch_threads": 1, "params_M": 0.5, "quick": False, "Total": total,
            "rescuable_Total": (rescuable or totals)[seed], "clean_Total": (clean or totals)[seed]}))  # fmt: skip


def test_report_tables_and_verdicts(tmp_path):
    out = tmp_path / "exp"
    _fake(out, "hard", "image", [30.0, 31.0, 32.0], rescuable=[10.0, 11.0, 12.0], clean=[40.0, 41.0, 42.0])
    _fake(out, "hard", "dsta", [40.0, 41.0, 42.0], rescuable=[30.0, 31.0, 32.0], clean=[40.0, 41.5, 42.0])
    _fake(out, "medium", "image", [30.0, 31.0, 32.0])
    _fake(out, "medium", "dsta", [29.0, 31.5, 33.0])  # overlaps: within noise
    _fake(out, "hard", "sd_only", [35.0, 36.0, 37.0])
    _fake(out, "hard", "td_only", [30.0, 31.0, 32.0])  # clearly worse than SD: reversed
    text = sweep_report.report(out, tmp_path / "experiments.md")
    assert "41.0 ± 1.0 (n=3)" in text and "31.0 ± 1.0 (n=3)" in text
    assert "The 18 runs took 0 minutes at one torch thread each" in text  # 18 fakes of 1 s
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    ambiguous = next(v for k, v in lines.items() if k.startswith("temporal context helps"))
    assert ambiguous.rstrip(" |").endswith("holds") and "+20.0 ± 0.8" in ambiguous
    assert "within noise" in lines["the same at the medium level (the main job's)"]
    gap = next(v for k, v in lines.items() if k.startswith("DSTA's gain is larger"))
    assert "+19.8" in gap and gap.rstrip(" |").endswith("holds")
    assert "reversed" in lines["TD matters more than SD (Table 4)"]
    assert "not enough seeds" in lines["more auxiliary frames help (Table 6)"]
    assert "video beats image regression on all joints (Table 1), hard level" in lines
    rows = (tmp_path / "experiments.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 1 + 6 * 3 and rows[0].startswith("variant,level,difficulty,seed,epochs")


@pytest.mark.parametrize("diff,se,verdict", [(3.0, 1.0, "holds"), (-3.0, 1.0, "reversed"), (1.0, 1.0, "within noise"),
                                             (1.0, float("nan"), "not enough seeds")])  # fmt: skip
def test_verdict(diff, se, verdict):
    assert sweep_report.verdict(diff, se) == verdict


def test_cli_help_and_errors(capsys, tmp_path):
    for argv in (["--help"], ["run", "--help"], ["one", "--help"], ["report", "--help"]):
        with pytest.raises(SystemExit):
            experiments.main(argv)
        text = " ".join(capsys.readouterr().out.split())
        if argv[0] == "one":
            for opt in ("--out", "--variant", "--level", "--seed", "--threads", "--quick"):
                assert opt in text
            assert "(default: runs/experiments)" in text and "(default: 1)" in text
        if argv[0] == "run":
            assert "(default: 2)" in text and "(default: [0, 1, 2])" in text
    with pytest.raises(SystemExit) as e:  # no stage 1 there: one clear sentence, exit 2
        experiments.main(["one", "--out", str(tmp_path), "--variant", "dsta", "--level", "hard", "--seed", "0"])
    assert e.value.code == 2 and "stage 1" in capsys.readouterr().err

"""examples/dsta/experiments.py: the seeded ablation runner and its report."""
import json

from dsta import experiments
import pytest


def test_quick_run_is_resumable_and_reports(tmp_path):
    out = tmp_path / "exp"
    done = experiments.run(out, tables=["1"], seeds=[0], jobs=2, quick=True)
    assert sorted(r["variant"] for r in done) == ["dsta", "image"]
    for r in done:
        assert r["quick"] and r["epochs"] == 1 and 0.0 <= r["Total"] <= 100.0
        assert (out / "results" / r["variant"] / "seed0.json").exists()
    assert experiments.run(out, tables=["1"], seeds=[0], jobs=1, quick=True) == []  # nothing left to do
    doc = tmp_path / "docs" / "experiments.md"
    text = experiments.report(out, doc)
    # quick runs never count as results: the tables say "not run"
    assert "not run" in text and doc.with_suffix(".png").exists()
    assert doc.with_suffix(".csv").read_text(encoding="utf-8").count("\n") == 1  # header only


def _fake(out, variant, totals):
    for seed, total in enumerate(totals):
        path = out / "results" / variant / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"variant": variant, "seed": seed, "schedule": "main", "epochs": 4, "steps": 10,
                                    "train_s": 1.0, "torch_threads": 1, "params_M": 0.5, "quick": False,
                                    "Total": total}))  # fmt: skip


def test_report_tables_and_verdicts(tmp_path):
    out = tmp_path / "exp"
    _fake(out, "image", [30.0, 31.0, 32.0])
    _fake(out, "dsta", [40.0, 41.0, 42.0])  # clearly better: holds
    _fake(out, "sd_only", [35.0, 36.0, 37.0])
    _fake(out, "td_only", [30.0, 31.0, 32.0])  # clearly worse than SD: reversed
    _fake(out, "coupled", [39.0, 41.0, 43.0])  # overlaps DSTA: within noise
    _fake(out, "res_256x192", [40.0, 42.0])
    _fake(out, "res_64x64", [20.0, 22.0])  # keeps 51%: does not hold
    text = experiments.report(out, tmp_path / "experiments.md")
    assert "41.0 ± 1.0 (n=3)" in text and "31.0 ± 1.0 (n=3)" in text
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert lines["video beats image regression (Table 1)"].rstrip(" |").endswith("holds")
    assert "reversed" in lines["TD matters more than SD (Table 4)"]
    assert "within noise" in lines["decoupled beats coupled (Table 4)"]
    assert "not enough seeds" in lines["more auxiliary frames help (Table 6)"]
    resolution = next(v for k, v in lines.items() if k.startswith("regression degrades gracefully"))
    assert "51%" in resolution and "does not hold" in resolution
    rows = (tmp_path / "experiments.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 1 + 3 * 5 + 2 * 2


@pytest.mark.parametrize("diff,se,verdict", [(3.0, 1.0, "holds"), (-3.0, 1.0, "reversed"), (1.0, 1.0, "within noise"),
                                             (1.0, float("nan"), "not enough seeds")])  # fmt: skip
def test_verdict(diff, se, verdict):
    assert experiments._verdict(diff, se) == verdict


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        experiments.main(["--help"])
    assert "run" in capsys.readouterr().out

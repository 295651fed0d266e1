"""Training faults: a resume never silently changes the model, the schedule or the samples; validation
never costs training; best.pt, last.pt and the metrics agree after a SIGKILL anywhere; bad data is
counted and reported; user errors are one sentence with exit code 2."""
import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
from dsta.checkpoint import save_checkpoint
from dsta.config import load_config
from dsta.loaders import EpochSampler, SeededClips
from dsta.utils import jsonable
from dsta import engine, evaluate
from dsta import train
import pytest
import torch
import yaml

from .posetrack_synth import write_dataset

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "dsta" / "configs" / "cpu_tiny.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """2 training sequences, 1 validation sequence, 5 frames x 2 persons each (20 training clips)."""
    root = tmp_path_factory.mktemp("posetrack")
    write_dataset(root)
    return root


def _args(root: Path, out: Path, *extra, sets=()):
    sets = [f"data.root={root}", f"data.train={root / 'annotations' / 'train'}",
            f"data.val={root / 'annotations' / 'val'}", "train.batch_size=8", *sets]  # fmt: skip
    return ["--config", str(CONFIG), "--out", str(out), "--device", "cpu", *extra, "--set", *sets]


def _user_error(argv, capsys) -> str:
    """Run train.main, expect exit code 2 and one line on stderr; return it."""
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch run (3 steps each, validation after each)."""
    out = tmp_path_factory.mktemp("reference")
    assert train.main(_args(dataset, out))["step"] == 6
    return out


@pytest.fixture(scope="module")
def stopped(dataset, tmp_path_factory) -> Path:
    """A run stopped after 1 step (mid-epoch: 8 of the epoch's 20 samples)."""
    out = tmp_path_factory.mktemp("stopped")
    assert train.main(_args(dataset, out, "--max-steps", "1"))["stopped"] == "max_steps"
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


# ------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("override, key", [
    ("heads=4", "heads"), ("input_size=[32,24]", "input_size"), ("frames=[-2,0,2]", "frames"),
    ("depth=1", "depth"), ("model=image_baseline", "model"), ("train.seed=1", "train.seed"),
])  # fmt: skip
def test_resume_refuses_a_changed_model_or_data_shape(stopped, dataset, tmp_path, capsys, override, key):
    run = _copy(stopped, tmp_path)
    before = (run / "last.pt").read_bytes()
    line = _user_error(_args(dataset, run, "--resume", sets=[override]), capsys)
    assert f"{key}=" in line and "resume" in line
    assert (run / "last.pt").read_bytes() == before  # nothing written
    assert yaml.safe_load((run / "config.yaml").read_text())["heads"] == 8


def test_resume_applies_and_logs_a_changed_schedule(stopped, dataset, tmp_path, capsys):
    """Stopped at step 1 with lr 1e-3, milestones [1]; resumed with lr 1e-4, milestones [5]: both epochs
    train at 1e-4 (the restored optimizer would have kept 1e-3, then 1e-4 after the old milestone)."""
    run = _copy(stopped, tmp_path)
    result = train.main(_args(dataset, run, "--resume", sets=["train.lr=1e-4", "train.milestones=[5]"]))
    out = capsys.readouterr().out
    assert "train.lr changed: 0.001 -> 0.0001" in out and "schedule applied" in out
    assert [h["lr"] for h in result["history"]] == [pytest.approx(1e-4), pytest.approx(1e-4)]
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["config"]["train"]["lr"] == 1e-4 and ckpt["scheduler"]["base_lrs"] == [pytest.approx(1e-4)]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["milestones"] == [5]


def test_resume_with_more_epochs_is_applied(reference, dataset, tmp_path, capsys):
    run = _copy(reference, tmp_path)
    result = train.main(_args(dataset, run, "--resume", sets=["train.epochs=3"]))
    assert result["epoch"] == 3 and result["step"] == 9 and "train.epochs changed: 2 -> 3" in capsys.readouterr().out


def test_repeated_set_flags_add_up(dataset, tmp_path):
    out = tmp_path / "run"
    train.main(_args(dataset, out, "--max-steps", "1", "--set", "train.lr=0.0005", "--set", "train.gamma=0.5"))
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["lr"] == 0.0005 and cfg["train"]["gamma"] == 0.5 and cfg["data"]["root"] == str(dataset)


def test_mid_epoch_resume_with_another_batch_size_sees_every_sample_once(stopped, dataset, tmp_path, monkeypatch):
    """Stopped after 8 samples at batch size 8; resumed at batch size 3: the other 12 samples, each once
    (the position counted in batches would restart at sample 3)."""
    seen = []
    original = SeededClips.__getitem__

    def record(self, key):
        seen.append(key)
        return original(self, key)

    monkeypatch.setattr(SeededClips, "__getitem__", record)
    run = _copy(stopped, tmp_path)
    result = train.main(_args(dataset, run, "--resume", sets=["train.batch_size=3", "train.epochs=1", "data.val=null"]))
    order = [i for _, i in EpochSampler(20, load_config(CONFIG)["train"]["seed"])]
    assert seen == [(0, i) for i in order[8:]]  # the rest of epoch 0, each sample once
    assert result["step"] == 1 + 4 and result["epoch"] == 1  # 12 samples at batch size 3


def test_mid_epoch_resume_on_another_world_size_is_refused(stopped, dataset, tmp_path, capsys):
    run = _copy(stopped, tmp_path)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["rng"] = {"world_size": 2, "states": ckpt["rng"]["states"] * 2}
    save_checkpoint(ckpt, run / "last.pt")
    line = _user_error(_args(dataset, run, "--resume"), capsys)
    assert "mid-epoch with 2 process(es)" in line


def test_weights_only_checkpoint_cannot_be_resumed(stopped, dataset, tmp_path, capsys):
    run = _copy(stopped, tmp_path)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    save_checkpoint({"model": ckpt["model"], "config": ckpt["config"]}, run / "last.pt")
    assert "no training state" in _user_error(_args(dataset, run, "--resume"), capsys)


# ------------------------------------------------------------------------------------------ validation
def test_failed_validation_keeps_the_epoch_and_resume_validates_it(dataset, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("validation crashed")

    monkeypatch.setattr(engine, "evaluate_split", broken)
    with pytest.raises(RuntimeError, match="validation crashed"):
        train.main(_args(dataset, tmp_path, sets=["train.epochs=1"]))
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 3) and ckpt["pending_record"]["epoch"] == 1  # the epoch is kept
    monkeypatch.setattr(engine, "evaluate_split", evaluate.evaluate_split)
    result = train.main(_args(dataset, tmp_path, "--resume", sets=["train.epochs=1"]))
    assert result["step"] == 3 and "Total" in result["history"][0]  # validated on resume, not retrained
    assert torch.load(tmp_path / "best.pt", weights_only=True)["best_epoch"] == 1


@pytest.fixture(scope="module")
def dirty(dataset, tmp_path_factory) -> Path:
    """The dataset with an undecodable training image and validation image, and two training persons
    whose boxes cannot give a crop (outside the image, NaN)."""
    root = tmp_path_factory.mktemp("dirty")
    shutil.copytree(dataset, root, dirs_exist_ok=True)
    (root / "images/train/000001_mpii_test/000002.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    (root / "images/val/000003_mpii_test/000004.jpg").write_bytes(b"")
    ann = root / "annotations/train/000002_mpii_test.json"
    doc = json.loads(ann.read_text())
    for box in ([900, 900, 30, 30], [float("nan"), 5, 30, 30]):
        doc["annotations"].append(dict(doc["annotations"][0], id=len(doc["annotations"]) + 99, bbox=box))
    ann.write_text(json.dumps(doc))
    return root


def test_unreadable_images_and_dropped_persons_are_counted_and_reported(dirty, tmp_path, capsys):
    result = train.main(_args(dirty, tmp_path, sets=["train.epochs=1"]))
    out = capsys.readouterr().out
    (rec,) = result["history"]
    assert "dropped 2 of 22 persons" in out and "box outside the image" in out and "non-finite box" in out
    assert rec["dropped_persons"] == 2
    # frame 2 of sequence 1 is in the clips of frames 1, 2, 3 (2 persons each): 6 training clips skipped
    assert rec["skipped_clips"] == 6 and "skipped 6 training clip(s)" in out and "000002.jpg" in out
    # validation frame 4 is in the clips of frames 3 and 4: 4 of 10 clips skipped, the rest evaluated
    assert rec["val_skipped_clips"] == 4 and "skipped 4 of 10 clips" in out and np.isfinite(rec["Total"])
    metrics = (tmp_path / "metrics.csv").read_text().splitlines()
    assert "skipped_clips" in metrics[0] and "val_skipped_clips" in metrics[0]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_a_run_where_nothing_can_be_read_fails_loudly(dataset, tmp_path, capsys):
    empty = tmp_path / "no_images"
    shutil.copytree(dataset / "annotations", empty / "annotations")
    line = _user_error(_args(empty, tmp_path / "run"), capsys)
    assert "no training clip could be read in epoch 1: all 20 clips were skipped" in line and "image not found" in line
    assert not (tmp_path / "run" / "last.pt").exists()


# ------------------------------------------------------------------------------------------ CLI errors
@pytest.mark.parametrize("sets, text", [
    (["train.lrr=1"], "unknown config key 'train.lrr'"),
    (["heads=[1"], "not valid YAML"),
    (["train.optimizer=sgd"], "only 'adamw'"),
    (["model=nope"], "model must be one of"),
    (["data.train=/nonexistent/annotations"], "/nonexistent/annotations: no such file"),
])  # fmt: skip
def test_train_user_errors_are_one_sentence(dataset, tmp_path, capsys, sets, text):
    assert text in _user_error(_args(dataset, tmp_path, sets=sets), capsys)


def test_missing_config_and_truncated_checkpoint_are_one_sentence(stopped, dataset, tmp_path, capsys):
    argv = _args(dataset, tmp_path / "a")
    argv[1] = str(tmp_path / "nope.yaml")
    assert "nope.yaml: No such file" in _user_error(argv, capsys)
    run = _copy(stopped, tmp_path)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    assert "last.pt" in _user_error(_args(dataset, run, "--resume"), capsys)


def test_evaluate_user_errors_are_one_sentence(reference, tmp_path, capsys):
    base = ["--checkpoint", str(reference / "last.pt"), "--out", str(tmp_path)]
    for extra, text in ((["--set", "data.val=/nope"], "/nope: no such file"), (["--split", "test"], "split 'test'")):
        with pytest.raises(SystemExit) as exc:
            evaluate.main(base + extra)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and text in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ SIGKILL
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from dsta import train
    name, nth = sys.argv[1], int(sys.argv[2])
    real, calls = train.save_checkpoint, []  # the function train.py writes every checkpoint with

    def save_then_die(obj, path):
        out = real(obj, path)
        calls.append(Path(path).name)
        if calls.count(name) == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    train.save_checkpoint = save_then_die
    train.main(sys.argv[3:])
""")


def _comparable(history):
    return [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in history]


@pytest.mark.parametrize("name, nth", [
    ("last.pt", 1),  # epoch 1 trained and saved, validation not started
    ("best.pt", 1),  # between best.pt and last.pt
    ("last.pt", 2),  # epoch 1 complete, metric files not yet written
    ("last.pt", 3),  # epoch 2 trained and saved, validation not started
])  # fmt: skip
def test_sigkill_anywhere_leaves_best_last_and_metrics_consistent(reference, dataset, tmp_path, name, nth):
    run = tmp_path / "run"
    argv = _args(dataset, run)
    proc = subprocess.run([sys.executable, "-c", KILLER, name, str(nth), *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    train.main([*argv[:4], "--resume", *argv[4:]])
    last = torch.load(run / "last.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(jsonable(last["history"])))  # the metric files = last.pt
    top = max(metrics, key=lambda h: h["Total"])
    assert best["epoch"] == last["best_epoch"] == top["epoch"] and best["history"][-1]["epoch"] == best["epoch"]
    assert best["best_metric"] == last["best_metric"] == top["Total"] == metrics[-1]["best_Total"]
    assert last["pending_record"] is None and last["epoch"] == 2
    ref = json.loads((reference / "metrics.json").read_text())
    assert _comparable(metrics) == _comparable(ref)  # the interrupted run ends as the uninterrupted one
    ref_best = torch.load(reference / "best.pt", weights_only=True)
    assert all(torch.equal(ref_best["model"][k], v) for k, v in best["model"].items())

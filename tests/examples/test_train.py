"""examples/dsta train.py / evaluate.py and their helpers on small generated PoseTrack18 sequences (CPU)."""
import json
import os
import socket
from pathlib import Path

from dsta.checkpoint import load_checkpoint, save_checkpoint
from dsta.config import load_config
from dsta.distributed import DistInfo
from dsta.loaders import EpochSampler, make_clips
from dsta import evaluate
from dsta import model as model_mod
import numpy as np
from dsta import posetrack_eval as pe
import pytest
import torch
import torch.multiprocessing as mp
from dsta import train
import yaml
from stattn.nn import RegressionOutput

from .posetrack_synth import write_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "dsta" / "configs"
CHECKPOINT_KEYS = {"model", "config", "epoch", "step", "optimizer", "scheduler", "scaler", "rng", "best_metric",
                   "stattn_version"}  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """2 training sequences and 1 validation sequence, 5 frames x 2 persons each, with images; and a
    detection file for the validation frames (each GT box at score 0.9, a junk box at 0.1)."""
    root = tmp_path_factory.mktemp("posetrack")
    write_dataset(root)
    dets = []
    for f in (root / "annotations" / "val").glob("*.json"):
        for a in json.loads(f.read_text())["annotations"]:
            dets += [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.9, "category_id": 1},
                     {"image_id": a["image_id"], "bbox": [1, 1, 30, 40], "score": 0.1, "category_id": 1}]  # fmt: skip
    (root / "dets.json").write_text(json.dumps(dets))
    return root


def _args(root: Path, out: Path, *extra, sets=()):
    sets = [f"data.root={root}", f"data.train={root / 'annotations' / 'train'}",
            f"data.val={root / 'annotations' / 'val'}", "train.batch_size=8", *sets]  # fmt: skip
    return ["--config", str(CONFIGS / "cpu_tiny.yaml"), "--out", str(out), "--device", "cpu", *extra, "--set", *sets]


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """2 epochs x 3 steps (20 clips, batch 8) with validation after each epoch."""
    out = tmp_path_factory.mktemp("run")
    result = train.main(_args(dataset, out))
    assert result["step"] == 6 and result["epoch"] == 2 and result["stopped"] is None
    return out


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------------------------------ training
def test_tiny_run_writes_checkpoints_metrics_and_evaluation(trained):
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.csv", "metrics.json", "val/results.json"):
        assert (trained / name).is_file(), name
    ckpt = torch.load(trained / "last.pt", map_location="cpu", weights_only=True)  # plain types only
    assert CHECKPOINT_KEYS <= ckpt.keys()
    assert (ckpt["epoch"], ckpt["step"], ckpt["epoch_step"]) == (2, 6, 0)
    assert yaml.safe_load(yaml.safe_dump(ckpt["config"])) == ckpt["config"]
    assert ckpt["config"]["backbone"] == "tiny" and ckpt["config"]["frames"] == [-1, 0, 1]
    assert ckpt["scheduler"]["last_epoch"] == 2 and ckpt["rng"]["world_size"] == 1
    assert any(k.startswith("loss_fn.flow.") for k in ckpt["model"])  # the flow is saved with the model
    history = json.loads((trained / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["train_loss"]) for h in history)
    assert history[0]["lr"] == pytest.approx(1e-3) and history[1]["lr"] == pytest.approx(1e-4)  # milestone [1]
    rows = (trained / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,step,lr,train_loss") and "Total" in rows[0]
    best = max(h["Total"] for h in history)
    assert ckpt["best_metric"] == pytest.approx(best)
    assert torch.load(trained / "best.pt", weights_only=True)["best_metric"] == pytest.approx(best)
    result = json.loads((trained / "val" / "results.json").read_text())
    again = pe.evaluate(Path(ckpt["config"]["data"]["val"]), trained / "val" / "predictions")
    assert result["Total"] == pytest.approx(again["Total"]) and result["counts"]["gt_persons"] == 10


def test_resume_is_bit_exact(dataset, tmp_path):
    """4 steps in one run == 2 steps, stop, resume, 2 more (crossing an epoch end with validation)."""
    ref = train.main(_args(dataset, tmp_path / "ref", "--max-steps", "4"))
    assert ref["stopped"] == "max_steps" and ref["step"] == 4
    first = train.main(_args(dataset, tmp_path / "split", "--max-steps", "2"))
    assert first["step"] == 2 and first["epoch"] == 0
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["epoch_step"] == 2
    resumed = train.main(_args(dataset, tmp_path / "split", "--max-steps", "4", "--resume"))
    assert resumed["step"] == 4
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step", "epoch_step", "epoch_loss",
                "best_metric"):  # fmt: skip
        assert _equal(a[key], b[key]), key
    for name, p in ref["model"].named_parameters():
        assert torch.equal(p, resumed["model"].state_dict()[name]), name
    drop_time = [[{k: v for k, v in h.items() if k != "epoch_time_s"} for h in c["history"]] for c in (a, b)]
    assert drop_time[0] == drop_time[1] and len(drop_time[0]) == 1


def test_image_baseline_trains_and_evaluates(dataset, tmp_path):
    out = tmp_path / "baseline"
    result = train.main(_args(dataset, out, sets=["model=image_baseline", "frames=[0]", "train.epochs=1"]))
    assert result["step"] == 3 and result["model"].frames == (0,)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["config"]["model"] == "image_baseline" and "Total" in ckpt["history"][0]
    again = evaluate.main(["--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "eval")])
    assert again["Total"] == pytest.approx(ckpt["history"][0]["Total"])


def test_non_finite_loss_stops_with_a_clear_message(dataset, tmp_path, monkeypatch, capsys):
    calls = []
    original = model_mod._RegressionModel.loss

    def nan_at_second_step(self, output, target, weight):
        calls.append(1)
        loss = original(self, output, target, weight)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(model_mod._RegressionModel, "loss", nan_at_second_step)
    with pytest.raises(SystemExit) as exc:
        train.main(_args(dataset, tmp_path / "nan"))
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "non-finite training loss nan at step 2" in err and "epoch 1" in err
    assert not (tmp_path / "nan" / "last.pt").exists()  # nothing saved from a broken step


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}, "step": 1}, path)
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"partial bytes of a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "config": {}, "step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    old = load_checkpoint(path)
    assert old["step"] == 1 and torch.equal(old["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, argv: list, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    result = train.main(argv)
    params = {n: p.detach().clone() for n, p in result["model"].named_parameters()}
    torch.save({"params": params, "step": result["step"]}, Path(out) / f"rank{rank}.pt")


def test_ddp_two_cpu_processes_gloo(dataset, tmp_path):
    """torchrun's environment, gloo: 1 epoch = 3 steps of 4 clips per rank (20 clips), then the sharded
    validation is gathered on rank 0 and must equal a single-process evaluation of the checkpoint."""
    out = tmp_path / "ddp"
    argv = _args(dataset, out, "--max-steps", "3", sets=["train.batch_size=4"])
    mp.spawn(_ddp_worker, args=(2, _free_port(), argv, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 3
    assert r0["params"].keys() == r1["params"].keys()
    for name in r0["params"]:
        assert torch.equal(r0["params"][name], r1["params"][name]), name
    ckpt = torch.load(out / "last.pt", weights_only=True)  # only rank 0 writes
    assert ckpt["rng"]["world_size"] == 2 and (ckpt["step"], ckpt["epoch"]) == (3, 1)
    assert len(ckpt["rng"]["states"]) == 2 and not torch.equal(*(s["torch"] for s in ckpt["rng"]["states"]))
    ddp_val = json.loads((out / "val" / "results.json").read_text())
    single = evaluate.main(["--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "single"), "--device", "cpu"])
    assert ddp_val["Total"] == pytest.approx(single["Total"]) and ddp_val["counts"] == single["counts"]
    assert all(torch.equal(ckpt["model"][n], p) for n, p in r0["params"].items())
    fresh = model_mod.build_model(ckpt["config"])
    assert any(not torch.equal(fresh.state_dict()[n], p) for n, p in r0["params"].items())  # it did train


# ------------------------------------------------------------------------------------------ evaluation
def test_evaluate_end_to_end_gt_and_detection_boxes(trained, dataset, tmp_path, capsys):
    ckpt = str(trained / "best.pt")
    gt = evaluate.main(["--checkpoint", ckpt, "--split", "val", "--boxes", "gt", "--out", str(tmp_path / "gt")])
    printed = capsys.readouterr().out
    assert "Total" in printed and "AP (%)" in printed
    saved = json.loads((tmp_path / "gt" / "results.json").read_text())
    assert saved["Total"] == pytest.approx(gt["Total"]) and saved["boxes"] == "gt"
    val_gt = dataset / "annotations" / "val"
    assert pe.evaluate(val_gt, tmp_path / "gt" / "predictions")["Total"] == pytest.approx(gt["Total"])
    best_epoch = torch.load(trained / "best.pt", weights_only=True)["epoch"]
    history = json.loads((trained / "metrics.json").read_text())
    assert [h["Total"] for h in history if h["epoch"] == best_epoch] == [pytest.approx(gt["Total"])]

    base = ["--checkpoint", ckpt, "--split", "val", "--boxes", "detections", "--det-file", str(dataset / "dets.json")]
    det = evaluate.main([*base, "--out", str(tmp_path / "det")])
    assert det["counts"]["predicted_persons"] == 10  # the 0.1 boxes are below det_thr 0.2
    low = evaluate.main([*base, "--det-thr", "0.05", "--out", str(tmp_path / "low")])
    assert low["counts"]["predicted_persons"] == 20
    doc = json.loads(next((tmp_path / "det" / "predictions").glob("*.json")).read_text())
    assert len(doc["images"]) == 5 and all(len(a["scores"]) == 17 for a in doc["annotations"])
    assert max(max(a["scores"]) for a in doc["annotations"]) <= 0.9  # conf (< 1) x box score 0.9


def test_joint_scores_are_confidence_times_box_score(trained, dataset):
    net, cfg, _ = evaluate.load_model(trained / "best.pt", torch.device("cpu"))
    clips, _ = make_clips(cfg, "val", train=False, boxes="detections", det_file=dataset / "dets.json",
                                 det_thr=0.0)  # fmt: skip
    preds = evaluate.predict(net, clips, DistInfo(), batch_size=4, workers=0)
    assert sum(len(v) for v in preds.values()) == len(clips) == 20
    for i in (0, 1):  # the first frame: its 0.9 GT box and 0.1 junk box, in detection-file order
        item = clips[i]
        with torch.no_grad():
            conf = net(item["frames"][None]).score[0, :, 0].numpy()
        person = preds[item["meta"]["file_name"]][i]
        assert person["score"] == item["meta"]["box_score"]
        np.testing.assert_allclose(person["scores"], conf * item["meta"]["box_score"], rtol=1e-5)


def test_oracle_predictions_get_ap_100(trained, dataset, tmp_path):
    """The crop -> image mapping, the writer and the evaluator end to end: a "model" that returns each
    clip's own target (score 1 on annotated joints, 0 elsewhere) scores 100 AP on GT boxes."""
    _, cfg, _ = evaluate.load_model(trained / "best.pt", torch.device("cpu"))
    clips, _ = make_clips(cfg, "val", train=False)
    items = [clips[i] for i in range(len(clips))]

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = 0

        def forward(self, frames):
            batch = items[self.seen : self.seen + len(frames)]
            self.seen += len(frames)
            coords = torch.stack([it["target"] for it in batch])
            sigma = (torch.stack([it["target_weight"] for it in batch]) == 0).float()[..., None].expand(-1, -1, 2)
            return RegressionOutput(coords, sigma, (1 - sigma).mean(-1, keepdim=True))

    result = evaluate.evaluate_split(Oracle(), {**cfg, "data": {**cfg["data"], "workers": 0}}, DistInfo(),
                                     tmp_path, split="val", boxes="gt", batch_size=3)  # fmt: skip
    assert result["Total"] == pytest.approx(100.0) and all(result[k] == pytest.approx(100.0) for k in train.AP_COLUMNS)


# ------------------------------------------------------------------------------------------ configs
PAPER_CONFIGS = [
    "posetrack17_r50_3f", "posetrack17_r50_5f", "posetrack17_hrnet48_3f", "posetrack17_hrnet48_5f",
    "posetrack17_vith_3f", "posetrack17_vith_5f", "posetrack18_hrnet48_5f", "posetrack21_hrnet48_5f",
]  # fmt: skip


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_have_the_official_hyper_parameters(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    t = cfg["train"]
    assert (t["optimizer"], t["lr"], t["weight_decay"], t["epochs"], t["milestones"], t["gamma"]) == (
        "adamw", 5e-5, 0.01, 20, [11, 16], 0.1)  # fmt: skip
    assert (t["batch_size"], t["val_batch_size"], t["seed"], t["clip_grad"]) == (32, 64, 8888, None)
    assert cfg["frames"] == ([-1, 0, 1] if name.endswith("_3f") else [-2, -1, 0, 1, 2])
    assert cfg["input_size"] == ([384, 288] if "hrnet48" in name else [256, 192])
    assert cfg["data"]["det_thr"] == 0.2 and cfg["dim"] == 32 and cfg["depth"] == 4 and cfg["heads"] == 8
    with torch.device("meta"):  # builds (no memory, no weights)
        m = model_mod.build_model({**cfg, "pretrained": None})
    if "hrnet48" in name:  # paper Table 3: DSTA on HRNet-W48 has 63.9M parameters
        assert model_mod.count_parameters(m)["inference"] == pytest.approx(63.9, abs=0.1)


def test_config_overrides_and_unknown_keys():
    sets = ["train.lr=1e-4", "frames=[-2,-1,0,1,2]", "loss.variant=mmpose"]
    cfg = load_config(CONFIGS / "cpu_tiny.yaml", sets)
    assert cfg["train"]["lr"] == 1e-4 and cfg["frames"] == [-2, -1, 0, 1, 2] and cfg["loss"]["variant"] == "mmpose"
    with pytest.raises(KeyError, match="train.lrr"):
        load_config(CONFIGS / "cpu_tiny.yaml", ["train.lrr=1"])
    with pytest.raises(KeyError, match="std_mod"):
        load_config(CONFIGS / "cpu_tiny.yaml", ["std_mod=coupled"])


def test_epoch_sampler_shards_and_resumes():
    full = [i for _, i in EpochSampler(10, seed=3)]
    assert sorted(full) == list(range(10))
    s = EpochSampler(10, seed=3)
    s.set_epoch(0, start=4)
    assert [i for _, i in s] == full[4:] and len(s) == 6
    ranks = [[i for _, i in EpochSampler(10, seed=3, rank=r, world_size=3)] for r in range(3)]
    assert all(len(r) == 4 for r in ranks) and set(sum(ranks, [])) == set(range(10))
    e1 = EpochSampler(10, seed=3)
    e1.set_epoch(1)
    assert [i for _, i in e1] != full

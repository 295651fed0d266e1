"""The synthetic protocol shared by the main job (demo.py) and the sweep (experiments.py), fixed before
any result was looked at:

1. data: per difficulty level (`LEVELS`) a train and a val split of the same generator settings and
   data seed; the val split's benchmark statistics (`benchmark_stats`) go with every result;
2. stage 1 (`pretrain`): the tiny backbone trained as an image regression model on single frames of a
   separate split ("pretrain": other videos, difficulty `PRETRAIN["difficulty"]`) with
   configs/pretrain_cpu.yaml; only the backbone is kept (backbone.pt), the analogue of the
   COCO-pretrained backbone the paper gives both models. Cached: a later run with the same settings
   reuses it (and says so);
3. stage 2 (`stage2_overrides`): the image baseline, DSTA and the ablations all start from that
   backbone and train with configs/demo_cpu.yaml and the same overrides (epochs, schedule, batch,
   augmentation, seed); their heads start at the crop centre. Only the model keys of a variant differ;
4. evaluation (`split_ap`): poseval AP on the val split with GT boxes from the final weights, on all
   joints and on the rescuable (spoiled in the key frame, clean at +-1) and clean joints.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

__all__ = ["LEVELS", "DATA", "QUICK_DATA", "PRETRAIN", "QUICK_PRETRAIN", "STAGE2_EPOCHS", "PRETRAIN_CONFIG",
           "STAGE2_CONFIG", "ensure_split", "level_data", "pretrain", "stage2_overrides", "split_ap"]  # fmt: skip

#: difficulty level -> generator difficulty; the val split's rescuable (+-1) share of the key-frame
#: joints measures 2.1% (people passing each other), 14.0% and 32.1% (docs/experiments.md)
LEVELS = {"easy": 0.0, "medium": 0.3, "hard": 1.0}
DATA = {"train_videos": 160, "val_videos": 40, "frames_per_video": 30, "size": [96, 128], "seed": 0}
QUICK_DATA = {"train_videos": 4, "val_videos": 2, "frames_per_video": 6, "size": [96, 128], "seed": 0}
#: stage 1's own split: other videos (split "pretrain"), a middle difficulty, every frame labelled
PRETRAIN = {"videos": 80, "frames_per_video": 30, "size": [96, 128], "difficulty": 0.3, "seed": 0}
QUICK_PRETRAIN = {"videos": 3, "frames_per_video": 6, "size": [96, 128], "difficulty": 0.3, "seed": 0,
                  "epochs": 1, "batch_size": 8}  # fmt: skip
STAGE2_EPOCHS = 5  # the lr drops x0.1 for the last epoch
PRETRAIN_CONFIG = HERE / "configs" / "pretrain_cpu.yaml"
STAGE2_CONFIG = HERE / "configs" / "demo_cpu.yaml"


def ensure_split(root, split: str, *, videos: int, frames_per_video: int, size, difficulty: float, seed: int,
                 workers: int = 1) -> dict:  # fmt: skip
    """Generate `root`'s `split` unless a marker says it exists with these settings; returns the
    generator's summary (without per-frame flags), with its benchmark statistics."""
    from dsta import synthetic  # noqa: PLC0415

    root = Path(root)
    settings = {"videos": int(videos), "frames_per_video": int(frames_per_video), "size": [int(s) for s in size],
                "difficulty": float(difficulty), "seed": int(seed)}  # fmt: skip
    marker = root / f"complete_{split}.json"
    if marker.exists():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved.get("settings") == settings:
            return {**saved["summary"], "reused": True}
    s = synthetic.generate(root, num_videos=videos, frames_per_video=frames_per_video, size=tuple(size),
                           difficulty=difficulty, seed=seed, split=split, workers=workers)  # fmt: skip
    summary = {k: v for k, v in s.items() if k != "frame_flags"}
    summary["sequences"] = sorted(s["frame_flags"])
    marker.write_text(json.dumps({"settings": settings, "summary": summary}), encoding="utf-8")
    return {**summary, "reused": False}


def level_data(root, difficulty: float, *, quick: bool = False, workers: int = 1) -> dict:
    """The train and val splits of one difficulty under `root`: {"train": summary, "val": summary}."""
    d = QUICK_DATA if quick else DATA
    return {split: ensure_split(root, split, videos=d[f"{split}_videos"], frames_per_video=d["frames_per_video"],
                                size=d["size"], difficulty=difficulty, seed=d["seed"], workers=workers)
            for split in ("train", "val")}  # fmt: skip


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def pretrain(cache_dir, *, quick: bool = False, workers: int = 1, device: str = "cpu", log=print) -> dict:
    """Stage 1: the backbone at `cache_dir`/backbone.pt, trained now or reused when `cache_dir`/stage1.json
    records the same settings and config. Returns that record plus "cached" (bool)."""
    from dsta import checkpoint, config, distributed, utils  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from dsta import train  # noqa: PLC0415

    cache = Path(cache_dir)
    p = QUICK_PRETRAIN if quick else PRETRAIN
    from dsta import synthetic  # noqa: PLC0415

    key = {"settings": p, "config": PRETRAIN_CONFIG.read_text(encoding="utf-8"),  # and what shapes the frames
           "generator": {"rates": synthetic.RATES, "hidden_max": synthetic.HIDDEN_ANNOTATED_MAX}}  # fmt: skip
    record_path, backbone = cache / "stage1.json", cache / "backbone.pt"
    if record_path.exists() and backbone.exists():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("key") == _digest(key):
            log(f"stage 1: reusing the cached pretrained backbone {backbone} (trained {record['steps']} steps in "
                f"{record['train_s']:.0f} s on {record['device']}, {record['created']})")  # fmt: skip
            return {**record, "cached": True}
    data = cache / "data"
    t0 = time.perf_counter()
    gen = ensure_split(data, "pretrain", videos=p["videos"], frames_per_video=p["frames_per_video"], size=p["size"],
                       difficulty=p["difficulty"], seed=p["seed"], workers=workers)  # fmt: skip
    gen_s = time.perf_counter() - t0
    sets = [f"data.root={data}", f"data.train={data / 'annotations' / 'pretrain'}", "data.val=null"]
    if quick:
        epochs = p["epochs"]
        sets += [f"train.epochs={epochs}", "train.milestones=[]", f"train.batch_size={p['batch_size']}"]
    cfg = config.load_config(PRETRAIN_CONFIG, sets)
    log(f"stage 1: training the backbone as an image regression model on {gen['annotations']} person frames of "
        f"the pretrain split ({gen['videos']} videos) -> {cache}")  # fmt: skip
    t0 = time.perf_counter()
    result = train.train(cfg, cache / "run", distributed.init_distributed(device))
    train_s = time.perf_counter() - t0
    checkpoint.save_checkpoint({"state_dict": result["model"].backbone.state_dict()}, backbone)
    record = {"key": _digest(key), "backbone": str(backbone), "settings": p, "config": str(PRETRAIN_CONFIG.name),
              "steps": result["step"], "epochs": cfg["train"]["epochs"], "train_s": round(train_s, 1),
              "data_s": round(gen_s, 1), "final_loss": result["history"][-1]["train_loss"], "device": device,
              "torch_threads": torch.get_num_threads(),
              "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    utils.atomic_write_text(record_path, json.dumps(record, indent=2))
    return {**record, "cached": False}


def stage2_overrides(data_root, backbone, *, epochs: int, seed: int, quick: bool = False) -> list[str]:
    """The `--set` overrides every stage-2 model gets (data, the stage-1 backbone, schedule, seed)."""
    from dsta import config  # noqa: PLC0415

    root = Path(data_root)
    base_seed = int(config.load_config(STAGE2_CONFIG)["train"]["seed"])
    sets = [f"data.root={root}", f"data.train={root / 'annotations' / 'train'}",
            f"data.val={root / 'annotations' / 'val'}", "data.val_boxes=gt", f"pretrained={backbone}",
            f"train.epochs={epochs}", f"train.milestones={[epochs - 1] if epochs > 1 else []}",
            f"train.seed={base_seed + int(seed)}"]  # fmt: skip
    if quick:
        sets += ["train.batch_size=8"]
    return sets


def split_ap(data_root, pred_dir, result_all: dict) -> dict:
    """{"all", "rescuable", "clean"}: AP tables on the val split (all = `result_all`, poseval's own)."""
    from dsta import benchmark_stats, subset_eval  # noqa: PLC0415

    root = Path(data_root)
    meta = benchmark_stats.load_metadata(root, "val")
    subsets = subset_eval.evaluate_subsets(root / "annotations" / "val", pred_dir, benchmark_stats.joint_subsets(meta))
    keep = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")
    out = {"all": {k: result_all[k] for k in keep} | {"gt_joints": result_all["counts"]["gt_joints"]}}
    for name, r in subsets.items():
        out[name] = {k: r[k] for k in keep} | {"gt_joints": r["gt_joints"]}
    return out

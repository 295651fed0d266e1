"""What train.py and evaluate.py share: configs, distributed setup, seeding and RNG state, samplers,
datasets, atomic checkpoints and metric files.

A config is one flat YAML dict: the model keys of `model.build_model` at the top level, plus a `data`
and a `train` section (`DEFAULTS` lists every key). `--set train.lr=1e-4 frames=[-2,-1,0,1,2]`
overrides keys; unknown keys are errors.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import re
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dsta import posetrack_io as pio
import torch
import torch.distributed as dist
import yaml
from dsta.data import ImageError, PoseTrackClips
from dsta.model import MODEL_DEFAULTS, build_model
from torch.utils.data import Dataset, Sampler
from dsta.transforms import AugmentConfig

__all__ = ["DEFAULTS", "ConfigError", "load_config", "apply_overrides", "DistInfo", "init_distributed",
           "cleanup_distributed", "seed_everything", "get_rng_state", "set_rng_state", "EpochSampler", "ShardSampler",
           "SeededClips", "IndexedClips", "make_clips", "save_checkpoint", "read_checkpoint", "load_checkpoint",
           "CheckpointError", "write_metrics", "atomic_write_text", "amp_settings", "NonFiniteLossError"]  # fmt: skip

DEFAULTS = {
    **copy.deepcopy(MODEL_DEFAULTS),
    "name": None,
    "notes": None,
    "data": {
        "root": None,  # images are root / file_name of the annotations
        "train": None,  # annotation file or folder of per-video files
        "val": None,
        "test": None,
        "val_boxes": "gt",  # boxes for per-epoch validation: gt | detections
        "det_file": None,  # COCO-results detections of the val split
        "det_thr": 0.2,  # DSTA: keep boxes with score >= 0.2, no NMS
        "workers": 2,
        "enlarge": 1.25,  # box enlargement (BBOX_ENLARGE_FACTOR)
        "augment": {},  # transforms.AugmentConfig fields
    },
    "train": {
        "epochs": 20,
        "batch_size": 32,  # per process
        "val_batch_size": 64,  # per process
        "optimizer": "adamw",
        "lr": 5.0e-5,
        "betas": [0.9, 0.999],
        "weight_decay": 0.01,
        "milestones": [10, 15],  # MultiStepLR, stepped once per epoch
        "gamma": 0.1,
        "amp": False,  # False | "fp16" (CUDA, with GradScaler) | "bf16" | True (fp16 on CUDA, bf16 on CPU)
        "clip_grad": None,  # max gradient norm, None = no clipping (official)
        "seed": 8888,
        "deterministic": True,  # cudnn.deterministic, no cudnn.benchmark
        "val_every": 1,  # validate every N epochs (and after the last)
        "keep_checkpoints": False,  # also keep epoch_NNN.pt besides last.pt / best.pt
        "drop_last": False,
        "sync_bn": False,
        "find_unused_parameters": False,
        "compile": False,  # torch.compile the model
        "grad_checkpointing": False,  # backbones with a `grad_checkpointing` switch (ViT): less memory
        "log_every": 50,  # steps between log lines when stderr is not a terminal
        "max_steps": None,  # stop after this many optimizer steps in total (the CLI's --max-steps)
    },
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: one sentence naming the file or tensor and the problem."""


class ConfigError(KeyError, ValueError):
    """A config the user must fix (unknown key, malformed --set, unreadable YAML, a split without data);
    a KeyError for unknown keys and a ValueError otherwise, as before; the message is one sentence."""

    def __str__(self) -> str:  # KeyError would quote it
        return str(self.args[0]) if self.args else ""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the value."""


# --------------------------------------------------------------------------------------- config
def _parse_value(text: str):
    value = yaml.safe_load(text) if text.strip() else None
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_keys(cfg: dict, ref: dict, where: str = "") -> None:
    for key, value in cfg.items():
        if key not in ref:
            raise ConfigError(f"unknown config key {where + key!r}; known: {', '.join(sorted(ref))}")
        if isinstance(ref[key], dict) and ref[key] and key != "loss":
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where + key!r} must be a mapping, got {value!r}")
            _check_keys(value, ref[key], f"{where}{key}.")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("loss", "backbone_kwargs", "augment"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, sets) -> dict:
    """`sets`: ["train.lr=1e-4", "frames=[-1,0,1]", ...]; values are parsed as YAML."""
    cfg = copy.deepcopy(cfg)
    for item in sets or ():
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        parts, node, ref = key.strip().split("."), cfg, DEFAULTS
        for p in parts[:-1]:
            if p not in ref or not isinstance(ref[p], dict):
                raise ConfigError(f"unknown config section {p!r} in --set {item!r}")
            node, ref = node.setdefault(p, {}), ref[p]
        if parts[-1] not in ref and not (len(parts) > 1 and parts[-2] in ("loss", "backbone_kwargs", "augment")):
            raise ConfigError(f"unknown config key {key!r} in --set {item!r}; known: {', '.join(sorted(ref))}")
        try:
            node[parts[-1]] = _parse_value(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return cfg


def load_config(path=None, sets=None, base: dict | None = None) -> dict:
    """DEFAULTS <- `base` (e.g. a checkpoint's config) <- the YAML file <- `sets`, checked."""
    cfg = _merge(DEFAULTS, base or {})
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"config {path}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path} is not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping")
        _check_keys(loaded, DEFAULTS)
        cfg = _merge(cfg, loaded)
    cfg = apply_overrides(cfg, sets)
    _check_keys(cfg, DEFAULTS)
    return cfg


# --------------------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; init NCCL (CUDA) or gloo (CPU) when WORLD_SIZE > 1."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    dev = torch.device("cuda", local) if device == "cuda" else torch.device("cpu")
    if device == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather(obj, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, info: DistInfo):
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics drift apart after DDP's last forward:
    DDP only broadcasts them at the start of a forward), so that all ranks evaluate the same model."""
    if info.distributed:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


# --------------------------------------------------------------------------------------- randomness
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """This process's RNG states as tensors and plain types (loadable with `weights_only=True`)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(gauss)},  # fmt: skip
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))  # fmt: skip
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# --------------------------------------------------------------------------------------- data
class EpochSampler(Sampler):
    """Training order that depends only on (seed, epoch): shuffled with its own generator, padded to a
    multiple of the world size and split by rank (as DistributedSampler), and able to start after the
    first `start` samples of the epoch (mid-epoch resume). Yields `(epoch, index)` for `SeededClips`."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world_size, shuffle
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(n / world_size) if n else 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order += order[: self.per_rank * self.world - self.n]
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self._order()[self.start :]])

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


class ShardSampler(Sampler):
    """Evaluation: rank r takes indices r, r + W, ... (no padding, nothing seen twice)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededClips(Dataset):
    """Training items whose augmentation depends only on (seed, epoch, index): each item is drawn under
    its own torch seed (the global RNG is restored afterwards), whatever the worker count or rank."""

    def __init__(self, clips: PoseTrackClips, seed: int):
        self.clips, self.seed = clips, seed

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch * 10_007 + index) % 2**63)
            return _load_or_report(self.clips, index)


class IndexedClips(Dataset):
    """Evaluation items with `meta["index"]` (to merge the shards of several ranks in dataset order)."""

    def __init__(self, clips: PoseTrackClips):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index):
        item = _load_or_report(self.clips, index)
        if "unreadable" not in item:
            item["meta"]["index"] = index
        return item


def _load_or_report(clips: PoseTrackClips, index: int) -> dict:
    """The item, or `{"unreadable": message}` when `clips` skip unreadable images (collate_clips drops and
    counts it); with on_unreadable="raise" the ImageError propagates."""
    try:
        return clips.load(index)
    except ImageError as e:
        if clips.on_unreadable == "raise":
            raise
        clips.stats["unreadable_images"] += 1
        return {"unreadable": str(e)}


def make_clips(cfg: dict, split: str, *, train: bool, boxes: str = "gt", det_file=None, det_thr=None,
               ann=None) -> tuple[PoseTrackClips, list]:  # fmt: skip
    """The `PoseTrackClips` of a split (annotations `ann` or `cfg["data"][split]`) and its videos.
    Unreadable images are skipped (training and evaluation alike) and reported by the caller."""
    d = cfg["data"]
    ann = ann or d.get(split)
    if not ann:
        raise ConfigError(f"no annotations for split {split!r}: set data.{split} (config or --set data.{split}=PATH)")
    if d["root"] is None:
        raise ConfigError("data.root is not set (the folder the annotations' file names are relative to)")
    videos = pio.load_annotations(ann)
    detections = None
    if boxes == "detections":
        det_file = det_file or d["det_file"]
        if not det_file:
            raise ConfigError("boxes=detections needs a detection file (--det-file or data.det_file)")
        detections = pio.load_detections(det_file)
    elif boxes != "gt":
        raise ValueError(f"boxes must be 'gt' or 'detections', got {boxes!r}")
    h, w = cfg["input_size"]
    clips = PoseTrackClips(videos, d["root"], offsets=[f for f in cfg["frames"] if f != 0], image_size=(w, h),
                           train=train, detections=detections, on_unreadable="skip", enlarge=float(d["enlarge"]),
                           score_threshold=float(d["det_thr"] if det_thr is None else det_thr),
                           augment=AugmentConfig(**(d.get("augment") or {})))  # fmt: skip
    return clips, videos


# --------------------------------------------------------------------------------------- files
def save_checkpoint(obj: dict, path) -> Path:
    """`torch.save` to a temporary file in the same folder, fsync, then `os.replace`: a reader (or a
    crash) never sees a partial checkpoint; the previous file stays intact until the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _load_error(path: Path, exc: Exception) -> str:
    text = str(exc).strip()
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return (f"{path} holds a Python object ({refused.group(1)}) besides tensors and plain containers, which "
                "loading with weights_only=True refuses (load it only if you trust it, and re-save its tensors)")  # fmt: skip
    reason = next((ln.strip() for ln in text.splitlines() if "operand" in ln or "central directory" in ln), "")
    reason = reason or (text.splitlines()[0] if text else type(exc).__name__)
    return f"{path} cannot be read by torch.load: it is truncated or not a PyTorch file ({reason[:120]})"


def read_checkpoint(path, map_location="cpu"):
    """`torch.load(path, weights_only=True)` with one-sentence `CheckpointError`s (missing, empty,
    truncated or foreign files); no check of what it holds."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is an empty file (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated zip, not a pickle at all, a refused global, ...
        raise CheckpointError(_load_error(path, exc)) from exc


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint written by `save_checkpoint`, or the authors' released DSTA file (recognised by its
    tensors, converted by `dsta.official.convert_checkpoint`). Tensors and plain types only (weights_only).

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a PyTorch file, or neither format.
    """
    ckpt = read_checkpoint(path, map_location)
    from dsta import official  # noqa: PLC0415 (official imports this module)

    if official.is_official(ckpt):
        return official.convert_checkpoint(ckpt, source=path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        what = f"a dict with keys {sorted(map(str, ckpt))[:6]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a DSTA checkpoint: it holds {what}, neither this project's format "
                              "('model', 'config', ...) nor the authors' release ('state_dict' of DSTA tensors)")
    return ckpt


def model_from_checkpoint(ckpt: dict, cfg: dict) -> torch.nn.Module:
    """The trained model of a checkpoint, built from `cfg` (its config, maybe with overrides).

    DDP (`module.`) and torch.compile (`_orig_mod.`) prefixes are stripped; the pretrained backbone is
    not reloaded, since the checkpoint holds the trained one.

    Raises:
        CheckpointError: the weights do not fit the model of `cfg` (names the first missing, unexpected
            or mis-shaped tensor).
    """
    model = build_model({**cfg, "pretrained": None})
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    target = model.state_dict()
    unexpected = [k for k in state if k not in target]
    missing = [k for k in target if k not in state]
    shaped = [k for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    problems = (("has no place in", unexpected), ("is missing for", missing), ("has the wrong shape for", shaped))
    for kind, names in problems:
        if names:
            more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
            detail = f" ({tuple(state[names[0]].shape)} vs {tuple(target[names[0]].shape)})" if shaped is names else ""
            raise CheckpointError(f"checkpoint tensor {names[0]!r}{more} {kind} the model of its config{detail}")
    model.load_state_dict(state)
    return model


def atomic_write_text(path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def jsonable(obj):
    """NaN / inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_metrics(out_dir, history: list[dict]) -> None:
    """metrics.json (the full records) and metrics.csv (one flat row per epoch), both rewritten."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "metrics.json", json.dumps(jsonable(history), indent=2))
    rows = [{k: v for k, v in rec.items() if not isinstance(v, (dict, list))} for rec in history]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "metrics.csv", buf.getvalue())


def amp_settings(amp, device: torch.device) -> tuple[bool, torch.dtype | None, bool]:
    """(autocast enabled, dtype, use GradScaler) for the `train.amp` value on `device`."""
    if amp in (False, None, "none", "off", "fp32"):
        return False, None, False
    if amp is True:
        amp = "fp16" if device.type == "cuda" else "bf16"
    if amp not in ("fp16", "bf16"):
        raise ValueError(f"train.amp must be false, true, 'fp16' or 'bf16', got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp='fp16' needs CUDA; use 'bf16' on CPU")
    return True, (torch.float16 if amp == "fp16" else torch.bfloat16), amp == "fp16"

"""Run configs: one flat YAML dict, checked against `DEFAULTS`.

A config holds the model keys of `model.build_model` at the top level, plus a `data` and a `train`
section (`DEFAULTS` lists every key). `load_config` layers DEFAULTS <- a base (e.g. a checkpoint's
config) <- the YAML file <- `--set` overrides such as `train.lr=1e-4 frames=[-2,-1,0,1,2]`; unknown keys
are errors (`ConfigError`, one sentence).
"""
from __future__ import annotations

import copy

import yaml
from dsta.model import MODEL_DEFAULTS

__all__ = ["DEFAULTS", "ConfigError", "load_config", "apply_overrides"]

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


class ConfigError(KeyError, ValueError):
    """A config the user must fix (unknown key, malformed --set, unreadable YAML, a split without data);
    a KeyError for unknown keys and a ValueError otherwise, as before; the message is one sentence."""

    def __str__(self) -> str:  # KeyError would quote it
        return str(self.args[0]) if self.args else ""


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

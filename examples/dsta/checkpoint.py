"""This project's checkpoints: written atomically by train.py, read safely (tensors and plain types only)
by every script that takes `--checkpoint`; the authors' released DSTA file is recognised too.

(`checkpoint_files` reads foreign backbone weight files; this module reads and writes whole runs.)
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from dsta.model import build_model

__all__ = ["CheckpointError", "save_checkpoint", "read_checkpoint", "load_checkpoint", "model_from_checkpoint"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: one sentence naming the file or tensor and the problem."""


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
                "loading with weights_only=True refuses (load it only if you trust it, and re-save its "
                "tensors)")  # fmt: skip
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

"""Small helpers of a run: seeding and the RNG states a resume restores, AMP settings, atomic text files
and the metric files."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["seed_everything", "get_rng_state", "set_rng_state", "amp_settings", "atomic_write_text", "jsonable",
           "write_metrics"]  # fmt: skip


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


# --------------------------------------------------------------------------------------- files
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

"""Load torchvision / timm / mmpose / RLE checkpoints into the backbones of `backbones.py` by renaming keys.

    report = load_backbone_weights(backbone, "hrnet_w48_coco_384x288.pth")   # scheme detected
    print(report)       # scheme, loaded / missing / unused / mismatched counts, notes

Schemes (checkpoint naming -> the backbone's own names; ``"auto"`` picks one from the key prefixes):

| scheme | families | checkpoint keys | mapping |
|---|---|---|---|
| torchvision | resnet | `conv1.*`, `layer1.0.conv1.*`, ..., `fc.*` | identity; `fc.*` unused |
| timm | resnet, hrnet, vit | ResNet / HRNet as above; ViT: `cls_token`, `norm.*`, `head.*` | `norm.` -> `last_norm.` |
| rle | resnet | `preact.*` (RLE, DSTA), `fc_coord.*`, `fc_sigma.*`, `flow.*` | strip `preact.` |
| mmpose | resnet, hrnet, vit | `backbone.*`, `keypoint_head.*` / `head.*` | strip `backbone.` (+ ViT renames) |
| native | all | the backbone's own names (= the HRNet repo's) | identity; `final_layer.*` unused |

Keys that map to nothing (classifiers, pose heads, RLE's flow, timm's `cls_token`) are reported as
unused. mmpose 1.x stores ViTPose in mmpretrain's names, renamed here: `layers.N.ln1` -> `blocks.N.norm1`,
`layers.N.ln2` -> `blocks.N.norm2`, `layers.N.ffn.layers.0.0` -> `blocks.N.mlp.fc1`,
`layers.N.ffn.layers.1` -> `blocks.N.mlp.fc2`, `patch_embed.projection` -> `patch_embed.proj`,
`ln1` -> `last_norm` (from mmpretrain's naming; not checked against a real file). timm's HRNet uses
the HRNet repository's names (its classification extras are reported as unused; unverified on a real
file). A checkpoint of this example's DSTA model (`model.backbone.*`) is read as "mmpose", the
official DSTA / RLE checkpoints (`preact.*`) as "rle".

Containers are unwrapped (``state_dict``, ``model``, ``module``, ``state_dict_ema``) and a DataParallel
``module.`` prefix is stripped. Files are read with ``torch.load(weights_only=True)``: only tensors and
plain containers (plus numpy arrays, which mmpose 1.x stores in its metadata) are unpickled.

Nothing is skipped silently: a checkpoint tensor whose shape differs from the parameter it maps to is
listed in ``mismatched`` (the parameter stays as it was and is listed in ``missing``), except a ViT
``pos_embed`` of another grid, which is resized (bicubic, class-token row kept) and noted.
"""
from __future__ import annotations

import importlib
import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoadReport", "load_backbone_weights", "read_state_dict", "detect_scheme", "export_state_dict",
           "resize_pos_embed", "SCHEMES"]  # fmt: skip

SCHEMES = {  # scheme -> families it applies to
    "native": ("resnet", "hrnet", "vit", "tiny"),
    "torchvision": ("resnet",),
    "timm": ("resnet", "hrnet", "vit"),
    "rle": ("resnet",),
    "mmpose": ("resnet", "hrnet", "vit"),
}
_PREFIX = {"rle": "preact.", "mmpose": "backbone."}
_CONTAINERS = ("state_dict", "model", "module", "state_dict_ema", "net")
# mmpose 1.x ViTPose checkpoints use mmpretrain's VisionTransformer names (after `backbone.`)
_MMPRETRAIN_VIT = [
    (re.compile(r"^patch_embed\.projection\."), "patch_embed.proj."),
    (re.compile(r"^layers\.(\d+)\.ln1\."), r"blocks.\1.norm1."),
    (re.compile(r"^layers\.(\d+)\.ln2\."), r"blocks.\1.norm2."),
    (re.compile(r"^layers\.(\d+)\.attn\."), r"blocks.\1.attn."),
    (re.compile(r"^layers\.(\d+)\.ffn\.layers\.0\.0\."), r"blocks.\1.mlp.fc1."),
    (re.compile(r"^layers\.(\d+)\.ffn\.layers\.1\."), r"blocks.\1.mlp.fc2."),
    (re.compile(r"^ln1\."), "last_norm."),
]
_NUMPY_SAFE = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
               "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")  # fmt: skip


@dataclass
class LoadReport:
    """What :func:`load_backbone_weights` did.

    Attributes:
        scheme: naming scheme used (detected when ``"auto"``).
        loaded: number of backbone tensors (parameters and buffers) filled from the checkpoint.
        missing: backbone tensors not filled (absent from the checkpoint, or shape-mismatched).
            BatchNorm ``num_batches_tracked`` counters are never listed (old checkpoints lack them).
        unexpected: checkpoint keys (their names in the checkpoint, after a DataParallel ``module.``
            is stripped) that map to nothing in the backbone, e.g. a classifier, a pose head, RLE's flow.
        mismatched: ``(checkpoint key, checkpoint shape, backbone shape)`` for same-name, other-shape tensors.
        notes: anything else worth knowing (resized position embedding, dropped class token, ...).
    """

    scheme: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every backbone tensor was filled."""
        return not self.missing and not self.mismatched

    def __str__(self) -> str:
        lines = [f"scheme={self.scheme}: loaded {self.loaded}, missing {len(self.missing)}, "
                 f"unused {len(self.unexpected)}, shape-mismatched {len(self.mismatched)}"]  # fmt: skip
        for title, items in (("missing", self.missing), ("unused", self.unexpected), ("mismatched", self.mismatched)):
            if items:
                shown = ", ".join(str(i) for i in items[:8]) + (f", ... (+{len(items) - 8})" if len(items) > 8 else "")
                lines.append(f"  {title}: {shown}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _numpy_globals(names: list[str]) -> list | None:
    """The numpy reconstruction helpers among ``names`` (+ numpy's dtype classes), or None if others are there."""
    if not all(n in _NUMPY_SAFE for n in names):
        return None
    allowed = []
    for name in names:
        mod, _, attr = name.rpartition(".")
        allowed.append(getattr(importlib.import_module(mod), attr))
    dtypes = importlib.import_module("numpy.dtypes")  # pickled arrays name their dtype's class too
    return allowed + [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        allowed = _numpy_globals(unsafe)
        if allowed is None:
            raise RuntimeError(
                f"{path}: torch.load(weights_only=True) refuses {[n for n in unsafe if n not in _NUMPY_SAFE]}. "
                "If you trust the file, extract its weights once: "
                "torch.save(torch.load(p, weights_only=False)['state_dict'], 'weights.pth')"
            ) from err
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(source: str | Path | dict) -> dict[str, torch.Tensor]:
    """A checkpoint file or object -> flat ``{name: tensor}`` with containers and ``module.`` removed."""
    obj = _torch_load(Path(source)) if isinstance(source, (str, Path)) else source
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _CONTAINERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise ValueError(f"no state dict found in checkpoint (top-level keys: {sorted(obj)[:10]})")
        obj = inner
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def detect_scheme(keys, family: str) -> str:
    """Guess the naming scheme of checkpoint ``keys`` for a backbone ``family``."""
    keys = list(keys)
    if any(k.startswith("preact.") for k in keys):
        return "rle"
    if any(k.startswith("backbone.") for k in keys):
        return "mmpose"
    if family == "vit" and any(k == "cls_token" or k.startswith(("norm.", "head.")) for k in keys):
        return "timm"
    return "torchvision" if family == "resnet" else "native"


def _to_native(key: str, scheme: str, family: str) -> str | None:
    """Checkpoint name -> backbone name, or None when it belongs to something else (head, classifier)."""
    prefix = _PREFIX.get(scheme)
    if prefix is not None:
        if not key.startswith(prefix):
            return None
        key = key[len(prefix):]
    if family == "vit":
        if scheme == "timm":
            key = re.sub(r"^norm\.", "last_norm.", key)
        elif scheme == "mmpose":
            for pattern, repl in _MMPRETRAIN_VIT:
                key = pattern.sub(repl, key)
    return key


def export_state_dict(backbone: nn.Module, scheme: str) -> dict[str, torch.Tensor]:
    """The backbone's state dict under ``scheme``'s names (mmpose: ViTPose 0.x names) - the inverse map."""
    _check_scheme(scheme, backbone.family)
    out = {}
    for key, value in backbone.state_dict().items():
        if backbone.family == "vit" and scheme == "timm" and key.startswith("last_norm."):
            key = "norm." + key[len("last_norm."):]
        out[_PREFIX.get(scheme, "") + key] = value
    return out


def _check_scheme(scheme: str, family: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose 'auto' or one of {sorted(SCHEMES)}")
    if family not in SCHEMES[scheme]:
        raise ValueError(f"scheme {scheme!r} has no {family} backbones (it covers {SCHEMES[scheme]})")


def _grid_of(n: int, like: tuple[int, int]) -> tuple[int, int] | None:
    """Factor ``n`` tokens into a grid: square, else the aspect ratio of ``like``."""
    s = math.isqrt(n)
    if s * s == n:
        return s, s
    h = round(math.sqrt(n * like[0] / like[1]))
    return (h, n // h) if h > 0 and h * (n // h) == n else None


def resize_pos_embed(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of grid position embeddings `[1, old_h * old_w, C]` -> `[1, new_h * new_w, C]`."""
    c = pos.shape[-1]
    grid = pos.reshape(1, old[0], old[1], c).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], c).to(pos.dtype)


def _fit_pos_embed(value: torch.Tensor, target: torch.Tensor, grid: tuple[int, int], notes: list[str]):
    """Checkpoint ``pos_embed`` -> the ViT's `[1, 1 + h * w, C]`, or None if it cannot be made to fit."""
    value = value.reshape(1, -1, value.shape[-1])
    if value.shape[-1] != target.shape[-1]:
        return None
    n = value.shape[1]
    for extra in (1, 0):  # with a class-token row first (ViTPose 0.x, timm, MAE), then without (mmpretrain)
        src = _grid_of(n - extra, grid) if n - extra > 0 else None
        if src is None:
            continue
        cls_row = value[:, :1] if extra else value.new_zeros(1, 1, value.shape[-1])
        patches = value[:, extra:]
        if not extra:
            notes.append("pos_embed has no class-token row; a zero row was prepended")
        if src != tuple(grid):
            patches = resize_pos_embed(patches, src, grid)
            notes.append(f"pos_embed resized (bicubic) from a {src[0]}x{src[1]} to a {grid[0]}x{grid[1]} grid")
        return torch.cat([cls_row, patches], dim=1)
    return None


@torch.no_grad()
def load_backbone_weights(backbone: nn.Module, source, scheme: str = "auto") -> LoadReport:
    """Copy a checkpoint's backbone tensors into ``backbone`` (in place) and say what happened.

    Args:
        backbone: a module from :func:`backbones.build_backbone` (needs ``family``).
        source: path to a ``.pth`` / ``.pt`` file (read with ``weights_only=True``) or a state dict.
        scheme: ``"auto"`` or one of :data:`SCHEMES`.

    Returns:
        a :class:`LoadReport`; check ``report.complete`` or print it.
    """
    family = backbone.family
    if scheme != "auto":
        _check_scheme(scheme, family)
    sd = read_state_dict(source)
    if scheme == "auto":
        scheme = detect_scheme(sd, family)
    _check_scheme(scheme, family)
    report = LoadReport(scheme=scheme)
    own = backbone.state_dict(keep_vars=True)
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    for key, value in sd.items():
        name = _to_native(key, scheme, family)
        if name is None or name not in own:
            report.unexpected.append(key)
        else:
            mapped[name] = (key, value)
    if family == "vit" and "cls_token" in sd:
        report.notes.append("cls_token dropped (ViTPose has no class token); the class-token row of "
                            "pos_embed is added to every patch, as ViTPose does with MAE weights")  # fmt: skip
    for name, target in own.items():
        if name not in mapped:
            if not name.endswith("num_batches_tracked"):
                report.missing.append(name)
            continue
        key, value = mapped[name]
        if family == "vit" and name == "pos_embed" and value.shape != target.shape:
            fitted = _fit_pos_embed(value, target, backbone.grid, report.notes)
            value = fitted if fitted is not None else value
        if tuple(value.shape) != tuple(target.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(target.shape)))
            report.missing.append(name)
            continue
        target.copy_(value)
        report.loaded += 1
    return report

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
``module.`` prefix is stripped. Files are read by :func:`checkpoint_files.load_checkpoint`
(``weights_only``: tensors, plain containers and numpy arrays; anything else refused by name).

Head counts: shapes show a ViT's width and depth, never its number of heads (timm's ``vit_small``, 6
heads, has exactly the tensors of ViTPose-S, 12). Where a checkpoint names its own architecture (an
mmpose config in ``meta``, a timm model name, a config's ``num_heads``), a contradiction with the
backbone is refused (:func:`check_architecture`); otherwise the report notes that heads were not checked.

Nothing is skipped silently: a checkpoint tensor whose shape differs from the parameter it maps to is
listed in ``mismatched`` (the parameter stays as it was and is listed in ``missing``), except a ViT
``pos_embed`` of another grid, which is resized (bicubic, class-token row kept) and noted.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from dsta.checkpoint_files import load_checkpoint
from torch import nn

__all__ = ["LoadReport", "load_backbone_weights", "read_state_dict", "architecture_hints", "check_architecture",
           "detect_scheme", "export_state_dict", "resize_pos_embed", "SCHEMES"]  # fmt: skip

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


# --------------------------------------------------------------------------- state dicts
def read_state_dict(source: str | Path | dict) -> dict[str, torch.Tensor]:
    """A checkpoint file or object -> flat ``{name: tensor}`` with containers and ``module.`` removed."""
    obj = load_checkpoint(source) if isinstance(source, (str, Path)) else source
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


# -------------------------------------------------------------------------- architecture hints
# Shapes show a ViT's width and depth but not its head count: timm's vit_small (6 heads) and this
# project's vit_s (ViTPose-S, 12 heads) have identical tensors. These tables read the head count from
# a model name where the checkpoint carries one.
_TIMM_VIT_HEADS = {"tiny": 3, "small": 6, "medium": 8, "base": 12, "large": 16, "huge": 16}
_MMPRETRAIN_ARCHS = {  # mmpretrain VisionTransformer arch name -> (num_layers, num_heads)
    **dict.fromkeys(("s", "small"), (8, 8)), **dict.fromkeys(("b", "base"), (12, 12)),
    **dict.fromkeys(("l", "large"), (24, 16)), **dict.fromkeys(("h", "huge"), (32, 16)),
    **dict.fromkeys(("eva-g", "eva-giant"), (40, 16)), **dict.fromkeys(("deit-t", "deit-tiny"), (12, 3)),
    **dict.fromkeys(("deit-s", "deit-small"), (12, 6)), **dict.fromkeys(("deit-b", "deit-base"), (12, 12)),
}
_BACKBONE_SECTION = re.compile(r"""\bbackbone['"]?\s*[=:]\s*(?:dict\(|\{)""")
_NUMBER = re.compile(r"""\b(num_heads|depth|num_layers)['"]?\s*[=:]\s*(\d+)""")
_ARCH = re.compile(r"""\barch['"]?\s*[=:]\s*['"]([\w-]+)['"]""")


def _backbone_section(text: str) -> str | None:
    """The ``backbone=dict(...)`` / ``'backbone': {...}`` part of a config's text (inside ``model = dict(``
    when there is one: an optimizer's ``custom_keys={'backbone': ...}`` is not it), brackets balanced."""
    model = re.search(r"^model\s*=\s*dict\(", text, re.M)
    m = _BACKBONE_SECTION.search(text, model.start() if model else 0)
    if m is None:
        return None
    depth, start = 0, m.end() - 1
    for i in range(start, len(text)):
        depth += {"(": 1, "{": 1, "[": 1, ")": -1, "}": -1, "]": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    return None


def _hints_from_config(cfg, where: str) -> list[tuple[str, int, str]]:
    """``(num_heads | depth, value, source)`` from a config (text or dict): its backbone part only,
    so a pose head's or temporal module's own heads / depth are never mistaken for the backbone's."""
    if isinstance(cfg, dict):
        model = cfg.get("model")
        section = model.get("backbone") if isinstance(model, dict) else cfg.get("backbone")
        if not isinstance(section, dict):  # a flat config: only an explicit ViT head count is read
            n = cfg.get("num_heads")
            return [("num_heads", n, f"{where}['num_heads']")] if isinstance(n, int) else []
        text = repr(section)
    elif isinstance(cfg, str):
        text = _backbone_section(cfg)
        if text is None:
            return []
    else:
        return []
    hints = [("depth" if key == "num_layers" else key, int(v), f"{where}: {key}={v}")
             for key, v in _NUMBER.findall(text)]  # fmt: skip
    arch = _ARCH.search(text)
    if arch and "VisionTransformer" in text and arch.group(1) in _MMPRETRAIN_ARCHS:
        layers, heads = _MMPRETRAIN_ARCHS[arch.group(1)]
        src = f"{where}: mmpretrain arch={arch.group(1)!r}"
        hints += [("num_heads", heads, src), ("depth", layers, src)]
    return hints


def _hints_from_name(name, where: str) -> list[tuple[str, object, str]]:
    """Hints from a timm-style model name (``vit_small_patch16_224``, ``resnet50.a1_in1k``)."""
    if not isinstance(name, str):
        return []
    src = f"{where}={name!r}"
    if m := re.match(r"(?:vit|deit3?)_(tiny|small|medium|base|large|huge)_patch", name):
        return [("family", "vit", src), ("num_heads", _TIMM_VIT_HEADS[m.group(1)], src)]
    if m := re.match(r"resnet(\d+)", name):
        return [("family", "resnet", src), ("depth", int(m.group(1)), src)]
    return []


def architecture_hints(checkpoint) -> list[tuple[str, object, str]]:
    """What a checkpoint says about its own architecture: ``(what, value, where it says so)``.

    Read from mmpose's ``meta['config']`` (0.x) / ``meta['cfg']`` (mmengine) text or dict (its
    ``backbone`` part: ``num_heads``, ``depth``, ``num_layers``, an mmpretrain ``arch`` name), a
    top-level ``config`` / ``cfg``, and a timm model name (``arch``, ``model_name``, ``architecture``,
    ``args['model']``). ``what`` is ``"num_heads"``, ``"depth"`` or ``"family"``.
    """
    if not isinstance(checkpoint, dict):
        return []
    hints = []
    meta = checkpoint.get("meta")
    for key in ("config", "cfg"):
        if isinstance(meta, dict):
            hints += _hints_from_config(meta.get(key), f"meta[{key!r}]")
        hints += _hints_from_config(checkpoint.get(key), f"[{key!r}]")
    for key in ("arch", "model_name", "architecture"):
        hints += _hints_from_name(checkpoint.get(key), f"[{key!r}]")
    args = checkpoint.get("args")
    if isinstance(args, dict):
        hints += _hints_from_name(args.get("model"), "['args']['model']")
    return hints


def _own_architecture(backbone: nn.Module) -> dict[str, object]:
    """The facts of ``backbone`` that hints can be checked against."""
    own: dict[str, object] = {"family": backbone.family}
    if backbone.family == "vit":
        own.update(num_heads=backbone.blocks[0].attn.num_heads, depth=len(backbone.blocks))
    elif backbone.family == "resnet":
        blocks = sum(len(getattr(backbone, f"layer{i}")) for i in range(1, 5))
        own["depth"] = 2 + blocks * (3 if backbone.out_channels == 2048 else 2)  # bottleneck: 3 convs
    return own


def check_architecture(backbone: nn.Module, checkpoint) -> list[str]:
    """Refuse a checkpoint whose own architecture hints contradict ``backbone``; returns report notes.

    A ViT's head count cannot be read from its weights (every tensor has the same shape for any
    number of heads that divides the width), so it is checked only where the checkpoint names it
    (:func:`architecture_hints`); otherwise the returned note says it was not checked.

    Raises:
        ValueError: naming the checkpoint's value, where it says so, and the backbone's value.
    """
    own, notes = _own_architecture(backbone), []
    hints = architecture_hints(checkpoint)
    family = next((h for h in hints if h[0] == "family"), None)
    if family and family[1] != own["family"]:
        raise ValueError(f"the checkpoint is a {family[1]} ({family[2]}) but the backbone "
                         f"{backbone.name} is a {own['family']}")  # fmt: skip
    for what, value, where in hints:
        if what == "family" or what not in own:
            continue
        if value != own[what]:
            raise ValueError(f"the checkpoint says {what}={value} ({where}) but the backbone {backbone.name} has "
                             f"{what}={own[what]}; build it with a matching {what} or use another checkpoint")
        notes.append(f"{what}={value} checked against the checkpoint ({where})")
    if own["family"] == "vit" and not any(h[0] == "num_heads" for h in hints):
        notes.append(f"head count not checked: the checkpoint does not name one, and weights alone cannot "
                     f"show it (this backbone has {own['num_heads']})")  # fmt: skip
    return list(dict.fromkeys(notes))


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
        source: path to a ``.pth`` / ``.pt`` file (read by :func:`checkpoint_files.load_checkpoint`), or a loaded
            checkpoint or state dict.
        scheme: ``"auto"`` or one of :data:`SCHEMES`.

    Returns:
        a :class:`LoadReport`; check ``report.complete`` or print it.

    Raises:
        ValueError: the checkpoint names an architecture (e.g. a ViT head count) that differs from
            ``backbone``'s (:func:`check_architecture`; pass ``read_state_dict(path)`` to skip the check).
        RuntimeError: the file needs globals that ``weights_only`` loading does not allow.
    """
    family = backbone.family
    if scheme != "auto":
        _check_scheme(scheme, family)
    checkpoint = load_checkpoint(source) if isinstance(source, (str, Path)) else source
    arch_notes = check_architecture(backbone, checkpoint)
    sd = read_state_dict(checkpoint)
    if scheme == "auto":
        scheme = detect_scheme(sd, family)
    _check_scheme(scheme, family)
    report = LoadReport(scheme=scheme, notes=arch_notes)
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

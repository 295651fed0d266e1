"""The authors' released DSTA weights (github.com/zgspose/DSTA) in this project: load, check, convert.

    model = load_official("epoch_19_state.pth")      # -> dsta.model.DSTA in eval mode
    out = model(clip)                                # clip [B, 3, 3, H, W]: frames -1, 0, +1 -> coords, sigma, score
    python examples/dsta/official.py IN.pth OUT.pt   # a checkpoint for evaluate.py / infer_video.py / export.py

The authors' trainer saves `{'begin_epoch', 'state_dict', 'optimizer', 'tensorboard_global_steps'}` with
the parameter names of its one model class, `DSTA_STD_ResNet50` (ResNet-50, 256 x 192 crops, frames
-1, 0, +1; docs/official_code.md §1). `checkpoint.load_checkpoint` recognises such a file by its content,
so every `--checkpoint` option takes it as it is; converting once only saves the optimizer's bytes.

The model built is `configs/posetrack17_r50_3f.yaml`; every official tensor is mapped onto it:

| official | here |
|---|---|
| `preact.*` | `backbone.*` (same torchvision layout) |
| `fc_coord.linear.{weight,bias}` | `jfd.{weight,bias}`, rows permuted from token to slot order |
| `Spatial_pos_embed` / `Temporal_pos_embed [1, 3, 32]` | `std.spatial_pos` / `std.temporal_pos [3, 32]` |
| `Spatial_blocks.i.*` / `blocks.i.*` | `std.spatial_blocks.i.*` / `std.temporal_blocks.i.*` |
| `Spatial_norm` / `Temporal_norm` / `weighted_mean` | `std.spatial_norm` / `std.temporal_norm` / `std.aggregate` |
| `head_coord.{0,1}` / `head_sigma.{0,1}` | `head.coord_norm`, `head.coord` / `head.sigma_norm`, `head.sigma` |
| `flow.mask`, `flow.{s,t}.*` | `loss_fn.flow.masks`, `loss_fn.flow.{s,t}.*` (prior N((0.5, 0.5), I) from the config) |

Token order: the official model keeps its joint tokens in its own order (head top, nose, head bottom,
then shoulder-elbow-wrist and hip-knee-ankle per side) plus two spare tokens, 15 and 16, and gathers
the output slots at the end; here the tokens are in output slot order from the JFD on. The outputs on
the 15 scored slots are the official ones (to float rounding). The two ear slots, 3 and 4, which
PoseTrack never annotates, hold the official spare tokens 15 and 16: their temporal stream is the
official one, but they pass through the spatial stack as singleton groups where the official code lets
them skip it, and the official output copies head top's prediction into both ear slots instead. Ear
predictions therefore differ from the official ones and mean nothing; the evaluation, the prediction
files and the drawings use the 15 scored joints only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from dsta.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from dsta.config import load_config
from dsta.model import build_model

__all__ = ["OFFICIAL_JOINT_ORDER", "SLOT_TOKENS", "CONFIG", "is_official", "official_state_dict", "official_config",
           "from_official", "to_official", "load_official", "convert_checkpoint", "main"]  # fmt: skip

#: output slot s of the official model takes its internal token OFFICIAL_JOINT_ORDER[s]
OFFICIAL_JOINT_ORDER = (1, 2, 0, 0, 0, 3, 6, 4, 7, 5, 8, 9, 12, 10, 13, 11, 14)
#: the official token each slot here holds: the scored slots as above, the ear slots 3, 4 the spare tokens
SLOT_TOKENS = (1, 2, 0, 15, 16, 3, 6, 4, 7, 5, 8, 9, 12, 10, 13, 11, 14)
#: the configuration whose model the official file fills (package data of `dsta`)
CONFIG = Path(__file__).resolve().parent / "configs" / "posetrack17_r50_3f.yaml"
#: what the official model is, whatever that config says: load_official builds exactly this
_ARCHITECTURE = {
    "model": "dsta", "backbone": "resnet50", "backbone_kwargs": {}, "frames": [-1, 0, 1], "input_size": [256, 192],
    "skeleton": "posetrack", "jfd": "pooled", "dim": 32, "std_mode": "decoupled", "aggregation": "weighted",
    "depth": 4, "heads": 8, "mlp_ratio": 2.0, "loss": {"variant": "rle", "prior_mean": [0.5, 0.5], "flow_init": "dsta"},
}  # fmt: skip
_MARKERS = ("fc_coord.linear.weight", "Spatial_pos_embed", "Temporal_pos_embed", "weighted_mean.weight")
_RENAMES = (  # (official prefix, prefix here); the first match wins
    ("preact.", "backbone."), ("Spatial_blocks.", "std.spatial_blocks."), ("blocks.", "std.temporal_blocks."),
    ("Spatial_norm.", "std.spatial_norm."), ("Temporal_norm.", "std.temporal_norm."),
    ("weighted_mean.", "std.aggregate."), ("head_coord.0.", "head.coord_norm."), ("head_coord.1.", "head.coord."),
    ("head_sigma.0.", "head.sigma_norm."), ("head_sigma.1.", "head.sigma."), ("flow.s.", "loss_fn.flow.s."),
    ("flow.t.", "loss_fn.flow.t."),
)  # fmt: skip
_WHOLE = {"Spatial_pos_embed": "std.spatial_pos", "Temporal_pos_embed": "std.temporal_pos",
          "fc_coord.linear.weight": "jfd.weight", "fc_coord.linear.bias": "jfd.bias",
          "flow.mask": "loss_fn.flow.masks"}  # fmt: skip


def _unwrap(obj):
    """A release dict -> its state dict; anything else unchanged."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"]
    return obj


def is_official(obj) -> bool:
    """Whether a loaded checkpoint (release dict or bare state dict) holds official DSTA tensors."""
    sd = _unwrap(obj)
    if not isinstance(sd, dict):
        return False
    names = {k.removeprefix("module.") for k in sd if isinstance(k, str)}
    return any(m in names for m in _MARKERS)


def official_state_dict(obj) -> dict[str, torch.Tensor]:
    """The official `{name: tensor}` of a release dict or state dict, `module.` (DataParallel) removed."""
    sd = _unwrap(obj)
    if not isinstance(sd, dict):
        raise CheckpointError(f"expected an official DSTA state dict, got a {type(sd).__name__}")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"official tensor {k!r} is a {type(v).__name__}, not a tensor")
        out[k.removeprefix("module.")] = v
    return out


def official_config() -> dict:
    """The full config (model, data, train) of the released model: the paper config, architecture pinned."""
    cfg = load_config(CONFIG)
    return {**cfg, **_ARCHITECTURE, "name": "dsta_official_r50_posetrack17", "pretrained": None}


def _rename(name: str) -> str | None:
    if name in _WHOLE:
        return _WHOLE[name]
    for old, new in _RENAMES:
        if name.startswith(old):
            return new + name[len(old):]
    return None


def _slot_rows(t: torch.Tensor, dim: int, inverse: bool = False) -> torch.Tensor:
    """JFD rows `[17 * dim, ...]`: official token order -> slot order (or back)."""
    order = torch.tensor(SLOT_TOKENS)
    if inverse:
        order = torch.argsort(order)
    return t.reshape(len(SLOT_TOKENS), dim, *t.shape[1:])[order].reshape(t.shape)


def _why(name: str, shape: tuple, want: tuple) -> str:
    """A hint for a tensor whose shape is not the released model's."""
    if name == "Temporal_pos_embed" and len(shape) == 3:
        return f": it is for {shape[1]} frames, the released model (the only one this loader builds) has 3"
    if name.startswith("fc_coord.linear") and len(shape) >= 1 and shape[0] % 32 == 0:
        extra = f", {shape[1]} backbone channels" if len(shape) == 2 else ""
        return f": it is for {shape[0] // 32} joint tokens{extra}; the released model has 17 tokens from 2048 channels"
    if name.startswith("preact."):
        return ": not the released model's ResNet-50 backbone"
    return ""


def from_official(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Official tensors -> this project's state dict for `model` (the released configuration).

    Raises:
        CheckpointError: naming the first unknown, missing or mis-shaped tensor (e.g. another backbone,
            another number of frames or joints).
    """
    target = model.state_dict()
    out, unknown = {}, []
    for name, t in sd.items():
        new = _rename(name)
        if new is None or new not in target:
            unknown.append(name)
            continue
        want = tuple(target[new].shape)
        if new == "std.temporal_pos":
            shape_ok = t.dim() == 3 and t.shape[0] == 1 and tuple(t.shape[1:]) == want
            t = t[0] if shape_ok else t
        else:
            shape_ok = tuple(t.shape) == want
        if not shape_ok:
            raise CheckpointError(f"official tensor {name!r} has shape {tuple(t.shape)}, the released "
                                         f"model's is {want if new != 'std.temporal_pos' else (1, *want)}"
                                         f"{_why(name, tuple(t.shape), want)}")  # fmt: skip
        if new in ("jfd.weight", "jfd.bias"):
            t = _slot_rows(t, model.jfd.dim)
        if new == "loss_fn.flow.masks" and not torch.equal(t.to(target[new].dtype), target[new]):
            raise CheckpointError(f"official tensor 'flow.mask' is {t.tolist()}, not the alternating "
                                         f"coupling masks {target[new].tolist()} this flow uses")  # fmt: skip
        out[new] = t.to(target[new].dtype) if target[new].is_floating_point() else t
    if unknown:
        hint = _why(unknown[0], tuple(sd[unknown[0]].shape), ())
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise CheckpointError(f"official tensor {unknown[0]!r}{more} has no place in the released "
                                     f"DSTA ResNet-50 3-frame model{hint}")  # fmt: skip
    missing = [k for k in target if k not in out and k != "loss_fn.flow.prior_mean"]
    if missing:
        back = {v: k for k, v in _WHOLE.items()}
        first = back.get(missing[0]) or next((o + missing[0][len(n):] for o, n in _RENAMES if missing[0].startswith(n)),
                                             missing[0])  # fmt: skip
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"official tensor {first!r}{more} is missing: not a complete DSTA_STD_ResNet50")
    out["loss_fn.flow.prior_mean"] = target["loss_fn.flow.prior_mean"]  # the official prior is not a tensor
    return {k: out[k] for k in target}


def to_official(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of `from_official`: this project's released-configuration DSTA -> official tensors."""
    back = {v: k for k, v in _WHOLE.items()}
    out = {}
    for name, t in model.state_dict().items():
        if name == "loss_fn.flow.prior_mean":
            continue
        if name in back:
            official = back[name]
        else:
            official = next((o + name[len(n):] for o, n in _RENAMES if name.startswith(n)), None)
            if official is None:
                raise ValueError(f"to_official: {name!r} has no official counterpart (not the released configuration)")
        if name in ("jfd.weight", "jfd.bias"):
            t = _slot_rows(t, model.jfd.dim, inverse=True)
        out[official] = t.unsqueeze(0) if name == "std.temporal_pos" else t
    return out


def load_official(source, device="cpu") -> torch.nn.Module:
    """The released DSTA as this project's model, in eval mode.

    Args:
        source: path of the official file (loaded with `weights_only=True`), or its loaded release dict
            or state dict (`module.` prefixes allowed).
        device: where to put the model.

    Returns:
        `dsta.model.DSTA` (`model.config` = `official_config()`): `[B, 3, 3, 256, 192]` clips, frames
        -1, 0, +1, ImageNet-normalized RGB -> coords `[B, 17, 2]` in crop units, sigma, score.

    Raises:
        CheckpointError: an unreadable file or tensors that are not the released model's (named).
    """
    obj = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    if not is_official(obj):
        raise CheckpointError(f"{source if isinstance(source, (str, Path)) else 'the given dict'} holds no "
                                     f"official DSTA tensors ({', '.join(_MARKERS)})")  # fmt: skip
    cfg = official_config()
    model = build_model(cfg)
    model.load_state_dict(from_official(official_state_dict(obj), model))
    return model.to(device).eval()


def convert_checkpoint(obj, source=None) -> dict:
    """An official release dict (or state dict) -> this project's checkpoint dict (`checkpoint.load_checkpoint`)."""
    cfg = official_config()
    model = build_model(cfg)
    state = from_official(official_state_dict(obj), model)
    epoch = obj.get("begin_epoch") if isinstance(obj, dict) else None  # the 0-based index of the last epoch
    step = obj.get("tensorboard_global_steps") if isinstance(obj, dict) else None
    return {"model": state, "config": cfg, "epoch": epoch + 1 if isinstance(epoch, int) else None,
            "step": step if isinstance(step, int) else None,
            "official": {"source": str(source) if source is not None else None, "begin_epoch": epoch}}  # fmt: skip


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description="Convert the authors' released DSTA weights (DSTA_STD_ResNet50, "
                                "PoseTrack17) to this project's checkpoint format.")  # fmt: skip
    p.add_argument("input", help="the official .pth file (e.g. from the authors' 'Weights Download' folder)")
    p.add_argument("output", help="checkpoint to write (.pt), read by evaluate.py / infer_video.py / export.py")
    args = p.parse_args(argv)
    try:
        obj = read_checkpoint(args.input)
        if not is_official(obj):
            raise CheckpointError(f"{args.input} is not an official DSTA release file (none of "
                                         f"{', '.join(_MARKERS)} in it)")  # fmt: skip
        ckpt = convert_checkpoint(obj, source=args.input)
    except CheckpointError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    path = save_checkpoint(ckpt, args.output)
    n = sum(t.numel() for t in ckpt["model"].values() if t.is_floating_point())
    print(f"{args.input}: official DSTA ResNet-50, frames -1/0/+1, epoch {ckpt['epoch']}; {n / 1e6:.2f}M values "
          f"-> {path}")  # fmt: skip
    return path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

"""DSTA (He & Yang, CVPR 2024) and the image-based RLE regression baseline, built from `stattn.nn`.

    model = build_model({"backbone": "resnet50", "frames": [-2, -1, 0, 1, 2], "input_size": [256, 192]})
    out = model(frames)                          # frames `[B, T, 3, H, W]` -> RegressionOutput
    loss = model.loss(out, target, target_weight)

DSTA: backbone (all T frames folded into the batch) -> JFD (one token per joint and frame) ->
SpaceTimeDecoupling (key frame's joints) -> RegressionHead (coords in [0, 1] of the crop, sigma, score).
The RLE loss owns the flow (`model.loss_fn.flow`), so optimizer and checkpoints include it; the flow is
never run at inference.

The image baseline (paper Table 1, "RLE"): backbone on the key frame, global average pooling, RLE's
normalized linear layer for the coordinates and a plain linear layer + sigmoid for sigma.

The pooled-clip model (paper Table 4, "w/o JFD and STD"): the image baseline fed with the whole clip:
each frame's globally pooled feature, concatenated over frames and fused by one linear layer, so time
is modelled on whole-pose features instead of per joint.

Config keys (`build_model(cfg)`; other keys, e.g. the `data` / `train` sections, are ignored):

| key | default | meaning |
|---|---|---|
| model | "dsta" | "dsta", "image_baseline" or "pooled_clip" |
| backbone | "resnet50" | `backbones.build_backbone` name, or an `nn.Module` with `out_channels`, `stride` |
| backbone_kwargs | {} | extra keyword arguments of `build_backbone` |
| pretrained | None | backbone weights (`backbones.load_backbone_weights`, scheme "auto") |
| frames | [-1, 0, 1] | frame offsets of a clip; 0 = key frame, must be present |
| input_size | [256, 192] | crop [H, W] |
| skeleton | "posetrack" | "posetrack" or "coco17" (or a `stattn.Skeleton`) |
| jfd | None | "pooled" or "map"; None = "map" for hrnet* backbones, else "pooled" |
| dim, depth, heads, mlp_ratio, drop_path | 32, 4, 8, 2.0, 0.1 | STD token size and blocks |
| drop_path_granularity | "sample" | stochastic depth per clip, or "sequence": per (clip, joint) / (clip, group) |
| std_mode | "decoupled" | "decoupled", "coupled", "temporal" or "spatial" (paper Table 4) |
| aggregation | "weighted" | "weighted" (official code) or "concat" (paper Eq. 9) |
| init | "default" | "default" (stattn's inits) or "dsta" (the official init_weights, see `dsta_init_`) |
| loss | see LOSS_DEFAULTS | `stattn.nn.RLELoss` keyword arguments (variant, prior_mean, flow_init, ...) |
"""
from __future__ import annotations

import copy
import math

import torch
from stattn.nn import JointCentricFeatureDecoder, RegressionHead, RegressionOutput, RLELoss, SpaceTimeDecoupling
from stattn.skeletons import COCO17, POSETRACK, Skeleton
from torch import nn

__all__ = ["MODEL_DEFAULTS", "LOSS_DEFAULTS", "DSTA", "ImageRegressionBaseline", "PooledClipRegression", "build_model",
           "resolve_model_config", "plain_config", "dsta_init_", "count_parameters"]  # fmt: skip

#: DSTA's loss: the RLE code's variant, flow prior N((0.5, 0.5), I), default weights with zero biases.
LOSS_DEFAULTS = {"variant": "rle", "prior_mean": [0.5, 0.5], "flow_init": "dsta"}
MODEL_DEFAULTS = {
    "model": "dsta", "backbone": "resnet50", "backbone_kwargs": {}, "pretrained": None, "frames": [-1, 0, 1],
    "input_size": [256, 192], "skeleton": "posetrack", "jfd": None, "dim": 32, "std_mode": "decoupled",
    "aggregation": "weighted", "depth": 4, "heads": 8, "mlp_ratio": 2.0, "drop_path": 0.1,
    "drop_path_granularity": "sample", "init": "default", "loss": LOSS_DEFAULTS,
}  # fmt: skip
_SKELETONS = {"posetrack": POSETRACK, "coco17": COCO17}
_MODELS = ("dsta", "image_baseline", "pooled_clip")


def _backbone_name(backbone) -> str:
    return backbone if isinstance(backbone, str) else str(getattr(backbone, "name", type(backbone).__name__))


def resolve_model_config(cfg: dict) -> dict:
    """The model keys of `cfg` over `MODEL_DEFAULTS`, checked; frames sorted; `jfd` filled in."""
    out = {k: copy.deepcopy(v) if k != "backbone" else v for k, v in MODEL_DEFAULTS.items()}
    for k in MODEL_DEFAULTS:
        if k in cfg and (cfg[k] is not None or k in ("pretrained", "jfd")):  # None elsewhere = the default
            out[k] = cfg[k]
    out["loss"] = {**LOSS_DEFAULTS, **(cfg.get("loss") or {})}
    if out["model"] not in _MODELS:
        raise ValueError(f"model must be one of {_MODELS}, got {out['model']!r}")
    frames = [int(f) for f in out["frames"]]
    if len(set(frames)) != len(frames) or 0 not in frames:
        raise ValueError(f"frames {frames} must be distinct offsets that include 0 (the key frame)")
    out["frames"] = sorted(frames)
    size = [int(s) for s in out["input_size"]]
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"input_size must be [H, W] with positive sides, got {out['input_size']!r}")
    out["input_size"] = size
    if not isinstance(out["skeleton"], Skeleton) and out["skeleton"] not in _SKELETONS:
        raise ValueError(f"skeleton must be one of {tuple(_SKELETONS)} or a Skeleton, got {out['skeleton']!r}")
    if out["jfd"] is None:
        out["jfd"] = "map" if _backbone_name(out["backbone"]).lower().startswith("hrnet") else "pooled"
    if out["jfd"] not in ("pooled", "map"):
        raise ValueError(f"jfd must be 'pooled' or 'map', got {out['jfd']!r}")
    if out["drop_path_granularity"] not in ("sample", "sequence"):
        raise ValueError(f"drop_path_granularity must be 'sample' or 'sequence', got {out['drop_path_granularity']!r}")
    if out["init"] not in ("default", "dsta"):
        raise ValueError(f"init must be 'default' or 'dsta', got {out['init']!r}")
    return out


def plain_config(cfg: dict) -> dict:
    """`cfg` with a backbone / skeleton instance replaced by its name: YAML- and checkpoint-safe."""
    out = copy.deepcopy({k: v for k, v in cfg.items() if k not in ("backbone", "skeleton")})
    if "backbone" in cfg:
        out["backbone"] = _backbone_name(cfg["backbone"])
    if "skeleton" in cfg:
        out["skeleton"] = cfg["skeleton"].name if isinstance(cfg["skeleton"], Skeleton) else cfg["skeleton"]
    return out


def _check_clip(frames: torch.Tensor, num_frames: int, name: str) -> torch.Tensor:
    if frames.dim() == 4 and num_frames == 1:
        frames = frames.unsqueeze(1)
    if frames.dim() != 5 or frames.shape[1] != num_frames or frames.shape[2] != 3:
        raise ValueError(f"{name}: expected frames [B, {num_frames}, 3, H, W], got {tuple(frames.shape)}")
    return frames


class _RegressionModel(nn.Module):
    """Shared by both models: frame bookkeeping and the RLE loss (always in fp32, outside autocast)."""

    def _setup(self, backbone: nn.Module, frames, input_size, skeleton: Skeleton, loss_fn: nn.Module) -> None:
        for attr in ("out_channels", "stride"):
            if not hasattr(backbone, attr):
                raise ValueError(f"{type(self).__name__}: the backbone needs an `{attr}` attribute")
        self.backbone = backbone
        self.frames = tuple(int(f) for f in frames)
        self.key_frame = self.frames.index(0)
        self.num_frames = len(self.frames)
        self.input_size = tuple(int(s) for s in input_size)
        self.skeleton = skeleton
        self.num_joints = skeleton.num_joints
        self.loss_fn = loss_fn

    def loss(self, output: RegressionOutput, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
        """RLE loss. Args: output of `forward`, target `[B, K, 2]` in [0, 1], target_weight `[B, K]`.
        Returns: scalar (fp32, may be negative)."""
        with torch.autocast(output.coords.device.type, enabled=False):
            return self.loss_fn(output.coords.float(), output.sigma.float(), target.float(), target_weight.float())


class DSTA(_RegressionModel):
    """Backbone -> JFD -> SpaceTimeDecoupling -> RegressionHead (see the module doc).

    Args:
        backbone: module `[N, 3, H, W] -> [N, out_channels, H / stride, W / stride]`.
        frames: sorted frame offsets, 0 included (the key frame).
        input_size: crop (H, W).
        skeleton: joints and the spatial groups.
        jfd: "pooled" or "map".
        dim, std_mode, aggregation, depth, heads, mlp_ratio, drop_path, drop_path_granularity: of
            `SpaceTimeDecoupling` (its `drop_path_granularity`).
        loss_fn: an `RLELoss` (owns the flow).
    """

    def __init__(self, backbone: nn.Module, frames=(-1, 0, 1), input_size=(256, 192), skeleton: Skeleton = POSETRACK,
                 jfd: str = "pooled", dim: int = 32, std_mode: str = "decoupled", aggregation: str = "weighted",
                 depth: int = 4, heads: int = 8, mlp_ratio: float = 2.0, drop_path: float = 0.1,
                 loss_fn: nn.Module | None = None, drop_path_granularity: str = "sample"):  # fmt: skip
        super().__init__()
        self._setup(backbone, frames, input_size, skeleton, loss_fn if loss_fn is not None else RLELoss())
        stride = int(backbone.stride)
        feature_size = (self.input_size[0] // stride, self.input_size[1] // stride) if jfd == "map" else None
        self.jfd = JointCentricFeatureDecoder(int(backbone.out_channels), skeleton.num_joints, dim, mode=jfd,
                                              feature_size=feature_size)  # fmt: skip
        self.std = SpaceTimeDecoupling(dim, skeleton, num_frames=self.num_frames, key_frame=self.key_frame,
                                       mode=std_mode, aggregation=aggregation, depth=depth, num_heads=heads,
                                       mlp_ratio=mlp_ratio, drop_path=drop_path,
                                       drop_path_granularity=drop_path_granularity)  # fmt: skip
        self.head = RegressionHead(self.std.out_dim)
        # start at the crop centre, as the image baseline does (a default Linear starts around +-0.6,
        # partly outside the crop); init="dsta" zeroes the bias afterwards, as the official code does
        nn.init.xavier_uniform_(self.head.coord.weight, gain=0.01)
        nn.init.constant_(self.head.coord.bias, 0.5)

    def forward(self, frames: torch.Tensor) -> RegressionOutput:
        """Args: frames `[B, T, 3, H, W]` (`[B, 3, H, W]` when T = 1), in offset order.
        Returns: RegressionOutput with coords `[B, K, 2]` (crop units), sigma `[B, K, 2]`, score `[B, K, 1]`."""
        x = _check_clip(frames, self.num_frames, "DSTA")
        b, t = x.shape[:2]
        if self.std.mode == "spatial":  # SD only reads the key frame: skip the other frames' backbone passes
            tokens = self.jfd(self.backbone(x[:, self.key_frame]))
            tokens = tokens.unsqueeze(1).expand(b, t, *tokens.shape[1:])
        else:
            tokens = self.jfd(self.backbone(x.flatten(0, 1)))
            tokens = tokens.view(b, t, *tokens.shape[1:])  # [B, T, K, dim]; view keeps B dynamic in ONNX
        return self.head(self.std(tokens))


class ImageRegressionBaseline(_RegressionModel):
    """RLE's image-based regressor on the key frame: GAP -> normalized linear (coords) / linear (sigma).

    The coordinate layer is `stattn.nn.JointCentricFeatureDecoder` in pooled mode with 2 channels per
    joint (RLE's `fc_coord`: `(x W^T) / ||x|| + b`, xavier gain 0.01), plus 0.5 so that it starts at the
    crop centre as RLE does with its [-0.5, 0.5] targets. Sigma: `sigmoid(Linear(C, 2K))`.
    """

    def __init__(self, backbone: nn.Module, frames=(0,), input_size=(256, 192), skeleton: Skeleton = POSETRACK,
                 loss_fn: nn.Module | None = None):  # fmt: skip
        super().__init__()
        self._setup(backbone, frames, input_size, skeleton, loss_fn if loss_fn is not None else RLELoss())
        channels = int(backbone.out_channels)
        self.coord = JointCentricFeatureDecoder(channels, skeleton.num_joints, 2, mode="pooled")
        self.sigma = nn.Linear(channels, 2 * skeleton.num_joints)
        nn.init.xavier_uniform_(self.sigma.weight, gain=0.01)
        nn.init.zeros_(self.sigma.bias)

    def forward(self, frames: torch.Tensor) -> RegressionOutput:
        """Args: frames `[B, 3, H, W]` or `[B, T, 3, H, W]` (the key frame is used).
        Returns: RegressionOutput with coords `[B, K, 2]`, sigma `[B, K, 2]`, score `[B, K, 1]`."""
        if frames.dim() == 5:
            frames = frames[:, self.key_frame]
        if frames.dim() != 4 or frames.shape[1] != 3:
            shape = tuple(frames.shape)
            raise ValueError(f"ImageRegressionBaseline: expected [B, 3, H, W] or [B, T, 3, H, W], got {shape}")
        return self._regress(self.backbone(frames).mean(dim=(-2, -1)))

    def _regress(self, pooled: torch.Tensor) -> RegressionOutput:
        coords = self.coord(pooled) + 0.5
        sigma = torch.sigmoid(self.sigma(pooled)).view(pooled.shape[0], self.num_joints, 2)
        return RegressionOutput(coords, sigma, (1 - sigma).mean(-1, keepdim=True))


class PooledClipRegression(ImageRegressionBaseline):
    """Table 4's "w/o JFD and STD": every frame's pooled feature `[B, T, C]`, concatenated and fused by
    `Linear(T * C, C)`, then the image baseline's heads. With T = 1 it is the baseline plus one layer."""

    def __init__(self, backbone: nn.Module, frames=(-1, 0, 1), input_size=(256, 192), skeleton: Skeleton = POSETRACK,
                 loss_fn: nn.Module | None = None):  # fmt: skip
        super().__init__(backbone, frames, input_size, skeleton, loss_fn=loss_fn)
        channels = int(backbone.out_channels)
        self.fuse = nn.Linear(self.num_frames * channels, channels)

    def forward(self, frames: torch.Tensor) -> RegressionOutput:
        """Args: frames `[B, T, 3, H, W]` (`[B, 3, H, W]` when T = 1). Returns: as `ImageRegressionBaseline`."""
        x = _check_clip(frames, self.num_frames, "PooledClipRegression")
        b, t = x.shape[:2]
        pooled = self.backbone(x.flatten(0, 1)).mean(dim=(-2, -1))  # [B*T, C]
        return self._regress(self.fuse(pooled.view(b, t * pooled.shape[-1])))


def dsta_init_(model: nn.Module) -> nn.Module:
    """The official `init_weights` outside the backbone and the flow: every Conv2d (in DSTA only the
    TD/SD aggregation) drawn from N(0, 0.001), every Linear / Conv2d bias zeroed. (The official code also
    re-initialises the backbone, which the pretrained weights then overwrite; the flow's init is
    `loss.flow_init`.)"""
    for name, child in model.named_children():
        if name in ("backbone", "loss_fn"):
            continue
        for m in child.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def _make_backbone(cfg: dict) -> nn.Module:
    backbone = cfg["backbone"]
    if isinstance(backbone, nn.Module):
        return backbone
    from dsta.backbones import build_backbone  # noqa: PLC0415  (examples/dsta/backbones.py)

    kwargs = {"input_size": tuple(cfg["input_size"]), **(cfg.get("backbone_kwargs") or {})}  # ViTs need it
    return build_backbone(backbone, **kwargs)


def build_model(cfg: dict) -> nn.Module:
    """A `DSTA`, `ImageRegressionBaseline` or `PooledClipRegression` from a config dict (keys in the module doc).

    The resolved, YAML-safe model config is kept as `model.config`. With `pretrained`, the backbone
    weights are loaded after init and the loader's report is kept as `model.pretrained_report`.
    """
    c = resolve_model_config(cfg)
    backbone = _make_backbone(c)
    skeleton = c["skeleton"] if isinstance(c["skeleton"], Skeleton) else _SKELETONS[c["skeleton"]]
    loss = dict(c["loss"])
    if "prior_mean" in loss:
        loss["prior_mean"] = tuple(float(v) for v in loss["prior_mean"])
    loss_fn = RLELoss(**loss)
    if c["model"] == "dsta":
        model = DSTA(backbone, c["frames"], c["input_size"], skeleton, jfd=c["jfd"], dim=int(c["dim"]),
                     std_mode=c["std_mode"], aggregation=c["aggregation"], depth=int(c["depth"]), heads=int(c["heads"]),
                     mlp_ratio=float(c["mlp_ratio"]), drop_path=float(c["drop_path"]), loss_fn=loss_fn,
                     drop_path_granularity=c["drop_path_granularity"])  # fmt: skip
    else:
        cls = ImageRegressionBaseline if c["model"] == "image_baseline" else PooledClipRegression
        model = cls(backbone, c["frames"], c["input_size"], skeleton, loss_fn=loss_fn)
    if c["init"] == "dsta":
        dsta_init_(model)
    model.pretrained_report = None
    if c["pretrained"]:
        from dsta.backbones import load_backbone_weights  # noqa: PLC0415

        model.pretrained_report = load_backbone_weights(model.backbone, c["pretrained"], scheme="auto")
    model.config = plain_config(c)
    return model


def count_parameters(model: nn.Module) -> dict:
    """Parameter counts (millions) per top-level submodule and in total; the flow is training-only."""
    out = {name: sum(p.numel() for p in m.parameters()) / 1e6 for name, m in model.named_children()}
    out["total"] = sum(p.numel() for p in model.parameters()) / 1e6
    out["inference"] = out["total"] - out.get("loss_fn", 0.0)
    return {k: round(v, 4) if math.isfinite(v) else v for k, v in out.items()}

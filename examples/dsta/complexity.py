"""Parameters and GFLOPs of DSTA, in the pose literature's convention (paper Table 3).

    python examples/dsta/complexity.py --backbone hrnet_w48 --frames 3 --input-size 384 288 --json out.json

Everything is built on the ``meta`` device (shapes only, no memory, no arithmetic), so even ViT-H
costs nothing; forward hooks count multiply-accumulates (MACs) from the shapes they see.

Convention ("GFLOPs" = 10^9 MACs, as HRNet, SimpleBaseline, DCPose and DSTA report them):

- ``Conv2d``: output elements x in_channels / groups x kh x kw; ``Linear``: output elements x
  in_features (also the pooled JFD's normalized linear layer and STD's 1x1 aggregation conv, which
  are applied functionally); attention matmuls, which are not modules: 2 x scores x head_dim (QK^T
  and AV) for stattn's temporal / grouped / global attention and the ViT's self-attention, where
  scores counts only the (query, key) pairs the pattern allows;
- not counted: biases, BatchNorm / LayerNorm, activations, softmax, pooling, upsampling, residual
  and position-embedding additions, the JFD's input normalization.

Reported: ``backbone_gflops`` for ONE frame; ``head_gflops`` for the whole clip = JFD on each of the
F frames + STD + regression head; ``params_*`` per part (the RealNVP flow is training-only: it is in
``params_total``, which is what a checkpoint holds, and not in ``params_inference``).

Two other conventions are reported for comparison (``alternatives`` in the JSON):

- ``backbone_gmacs_binary``: the same MACs / 2^30, the unit of the HRNet repository's model summary
  (HRNet-W48 at 384x288: 35.30e9 MACs = 32.9 "GFLOPs", the HRNet paper's number);
- ``backbone_gflops_mmcv_style``: what mmcv's ``get_model_complexity_info`` adds on top: conv biases,
  BatchNorm / LayerNorm 2 per element, ReLU 1 per element, pooling 1 per input element, nearest
  upsampling 1 per output element (HRNet-W48 at 384x288: 35.48, i.e. the 35.5 of PoseWarper / DCPose /
  DSTA Table 3; which tool those papers used is not stated, this is the convention that reproduces it).

By default the JFD / STD / head are built from ``stattn.nn`` with DSTA's defaults (dim 32, 8 heads,
depth 4, MLP ratio 2, weighted aggregation; JFD "map" for HRNet, "pooled" otherwise), which is what
``model.build_model`` builds; ``--model-config`` builds the model from a YAML config instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch
from stattn.nn import (GlobalAttention, GroupedSpatialAttention, JointCentricFeatureDecoder, RealNVP, RegressionHead,
                       SpaceTimeDecoupling, TemporalAttention)  # fmt: skip
from stattn.skeletons import COCO17, POSETRACK
from torch import nn

from dsta.backbones import BACKBONES, Attention, HRModule, build_backbone

__all__ = ["count_macs", "build_parts", "parts_from_model", "complexity", "format_table", "main"]

SKELETONS = {"posetrack": POSETRACK, "coco17": COCO17}
#: paper Table 3 (HRNet-W48, 384x288, 2 auxiliary frames): params (M), backbone GFLOPs, head GFLOPs
PAPER_TABLE3 = {("hrnet_w48", 3, (384, 288)): {"params_total_m": 63.9, "backbone_gflops": 35.5, "head_gflops": 0.02}}
_NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _temporal_pairs(frames: int, window: int | None, causal: bool) -> int:
    """(query frame, key frame) pairs temporal attention allows for one token."""
    return sum(1 for f in range(frames) for g in range(frames)
               if (window is None or abs(f - g) <= window) and (not causal or g <= f))  # fmt: skip


def _hook(counts: Counter, module: nn.Module, inputs, output) -> None:
    """Add one call's MACs (``conv`` / ``linear`` / ``attention``) and mmcv-style extras (``x_*``)."""
    x = inputs[0] if inputs else None
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        counts["conv"] += output.numel() * (module.in_channels // module.groups) * k
        counts["x_bias"] += output.numel() if module.bias is not None else 0
    elif isinstance(module, nn.Linear):
        counts["linear"] += output.numel() * module.in_features
    elif isinstance(module, JointCentricFeatureDecoder) and module.mode == "pooled":
        counts["linear"] += output.numel() * module.in_channels  # F.linear on the pooled feature
    elif isinstance(module, SpaceTimeDecoupling) and module.mode == "decoupled" and module.aggregation == "weighted":
        counts["conv"] += output.numel() * 2  # Conv2d(2, 1, 1) over (TD, SD), applied through its weights
    elif isinstance(module, TemporalAttention):
        b, f, n, c = x.shape
        counts["attention"] += 2 * b * n * _temporal_pairs(f, module.window, module.causal) * c
    elif isinstance(module, GroupedSpatialAttention):
        lead = x.numel() // (x.shape[-2] * x.shape[-1])
        counts["attention"] += 2 * lead * sum(len(g) ** 2 for g in module.groups) * x.shape[-1]
    elif isinstance(module, GlobalAttention):
        b, c = x.shape[0], x.shape[-1]
        length = x.numel() // (b * c)
        counts["attention"] += 2 * b * length * length * c
    elif isinstance(module, Attention):  # the ViT backbone's
        b, length, c = x.shape
        counts["attention"] += 2 * b * length * length * c
    elif isinstance(module, HRModule):  # nearest upsampling inside the fuse step
        branches = len(module.branches)
        counts["x_upsample"] += sum((branches - 1 - i) * y.numel() for i, y in enumerate(output))
    elif isinstance(module, _NORMS):
        counts["x_norm"] += x.numel() * (2 if getattr(module, "weight", None) is not None else 1)
    elif isinstance(module, _ACTS):
        counts["x_act"] += output.numel()
    elif isinstance(module, _POOLS):
        counts["x_pool"] += x.numel()


@torch.no_grad()
def count_macs(module: nn.Module, *inputs: torch.Tensor, return_output: bool = False):
    """Run ``module(*inputs)`` once with counting hooks on every submodule.

    Returns:
        Counter with MACs under ``conv``, ``linear``, ``attention`` (their sum is the convention above)
        and mmcv-style extras under ``x_bias``, ``x_norm``, ``x_act``, ``x_pool``, ``x_upsample``;
        ``(counter, output)`` with ``return_output``.

    Examples:
        >>> count_macs(nn.Conv2d(3, 8, 3, padding=1), torch.zeros(1, 3, 4, 4))["conv"]  # 128 outputs x 27
        3456
    """
    counts: Counter = Counter()
    handles = [m.register_forward_hook(lambda m, i, o: _hook(counts, m, i, o)) for m in module.modules()]
    try:
        output = module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return (counts, output) if return_output else counts


def _macs(c: Counter) -> int:
    return c["conv"] + c["linear"] + c["attention"]


def _mmcv_style(c: Counter) -> int:
    return _macs(c) - c["attention"] + sum(v for k, v in c.items() if k.startswith("x_"))


def frame_offsets(frames: int) -> list[int]:
    """``F`` frames around the key frame: 3 -> [-1, 0, 1], 5 -> [-2, ..., 2], 2 -> [-1, 0]."""
    return list(range(-(frames // 2), frames - frames // 2))


def build_parts(backbone: str, frames: int = 3, input_size=(256, 192), jfd: str | None = None, dim: int = 32,
                depth: int = 4, heads: int = 8, mlp_ratio: float = 2.0, aggregation: str = "weighted",
                std_mode: str = "decoupled", skeleton: str = "posetrack") -> dict[str, nn.Module]:  # fmt: skip
    """DSTA's parts from ``backbones`` and ``stattn.nn`` (call under ``torch.device("meta")``).

    Returns:
        ``{"backbone", "jfd", "std", "head", "flow"}``; ``jfd=None`` means "map" for HRNet, else "pooled".
    """
    bb = build_backbone(backbone, input_size=tuple(input_size))
    mode = jfd or ("map" if bb.family == "hrnet" else "pooled")
    with torch.device("meta"):  # the feature size, from shapes only
        feat = build_backbone(backbone, input_size=tuple(input_size))(torch.empty(1, 3, *input_size))
    skel = SKELETONS[skeleton]
    size = tuple(feat.shape[-2:]) if mode == "map" else None
    parts = {
        "backbone": bb,
        "jfd": JointCentricFeatureDecoder(bb.out_channels, skel, dim, mode=mode, feature_size=size),
        "std": SpaceTimeDecoupling(dim, skel, num_frames=frames, mode=std_mode, aggregation=aggregation,
                                   depth=depth, num_heads=heads, mlp_ratio=mlp_ratio),  # fmt: skip
    }
    parts["head"] = RegressionHead(parts["std"].out_dim)
    parts["flow"] = RealNVP()
    return parts


def parts_from_model(model: nn.Module) -> dict[str, nn.Module]:
    """The parts of a ``model.build_model`` DSTA (its flow lives in ``loss_fn.flow``)."""
    missing = [p for p in ("backbone", "jfd", "std", "head") if not hasattr(model, p)]
    if missing:
        raise ValueError(f"model has no {missing} (complexity needs a DSTA model, not {type(model).__name__})")
    parts = {p: getattr(model, p) for p in ("backbone", "jfd", "std", "head")}
    flow = getattr(getattr(model, "loss_fn", None), "flow", None)
    if flow is not None:
        parts["flow"] = flow
    return parts


def complexity(parts: dict[str, nn.Module], frames: int, input_size) -> dict:
    """Parameters and MACs of DSTA's parts (meta-device tensors are fine). Returns the JSON dict."""
    bb, jfd, std, head = (parts[k] for k in ("backbone", "jfd", "std", "head"))
    dev = next(bb.parameters()).device
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
    modes = {m: m.training for part in parts.values() for m in part.modules()}
    for m in parts.values():
        m.eval()  # no stochastic depth; BN in inference mode
    try:
        c_bb, feat = count_macs(bb, torch.zeros(1, 3, *input_size, device=dev), return_output=True)
        jfd_frames = 1 if std.mode == "spatial" else frames  # SD only reads the key frame
        c_jfd = count_macs(jfd, feat.new_zeros(jfd_frames, *feat.shape[1:]))
        c_std = count_macs(std, feat.new_zeros(1, frames, jfd.num_joints, jfd.dim))
        c_head = count_macs(head, feat.new_zeros(1, jfd.num_joints, std.out_dim))
    finally:
        for m, training in modes.items():
            m.training = training
    g = 1e-9
    head_macs = _macs(c_jfd) + _macs(c_std) + _macs(c_head)
    out = {
        "backbone": getattr(bb, "name", type(bb).__name__), "frames": frames, "input_size": list(input_size),
        "feature_map": list(feat.shape[1:]), "jfd_mode": jfd.mode, "std_mode": std.mode,
        "aggregation": std.aggregation,
        "params_total": sum(params.values()),
        "params_inference": sum(v for k, v in params.items() if k != "flow"),
        "params": params,
        "backbone_gflops": _macs(c_bb) * g,
        "head_gflops": head_macs * g,
        "head_gflops_parts": {"jfd": _macs(c_jfd) * g, "std": _macs(c_std) * g, "head": _macs(c_head) * g},
        "jfd_gflops_per_frame": _macs(c_jfd) * g / jfd_frames,
        "clip_gflops": (_macs(c_bb) * jfd_frames + head_macs) * g,
        "macs_by_kind": {"backbone": {k: c_bb[k] for k in ("conv", "linear", "attention")},
                         "head": {k: c_jfd[k] + c_std[k] + c_head[k] for k in ("conv", "linear", "attention")}},
        "alternatives": {
            "backbone_gmacs_binary": _macs(c_bb) / 2**30,
            "backbone_gflops_mmcv_style": _mmcv_style(c_bb) * g,
            "head_gflops_mmcv_style": (_mmcv_style(c_jfd) + _mmcv_style(c_std) + _mmcv_style(c_head)) * g,
        },
        "convention": "GFLOPs = 1e9 multiply-accumulates of Conv2d, Linear and attention matmuls "
                      "(2 x allowed scores x head dim); norms, activations, softmax, pooling, upsampling, "
                      "additions and biases not counted; backbone for one frame, head for the whole clip",
    }  # fmt: skip
    paper = PAPER_TABLE3.get((out["backbone"], frames, tuple(input_size)))
    if paper is not None:
        out["paper_table3"] = paper
    return out


def format_table(r: dict) -> str:
    """A human-readable summary of :func:`complexity`'s result."""
    p, alt = r["params"], r["alternatives"]
    rows = [
        f"DSTA {r['backbone']}, {r['frames']} frames, {r['input_size'][0]}x{r['input_size'][1]}, "
        f"feature map {r['feature_map']}, JFD {r['jfd_mode']}, STD {r['std_mode']} ({r['aggregation']})",
        f"{'part':<12}{'params':>14}{'GFLOPs (MACs)':>16}",
        f"{'backbone':<12}{p['backbone']:>14,}{r['backbone_gflops']:>16.4g}   (one frame)",
        f"{'jfd':<12}{p['jfd']:>14,}{r['head_gflops_parts']['jfd']:>16.4g}"
        f"   ({r['jfd_gflops_per_frame']:.4g} per frame)",
        f"{'std':<12}{p['std']:>14,}{r['head_gflops_parts']['std']:>16.4g}",
        f"{'head':<12}{p['head']:>14,}{r['head_gflops_parts']['head']:>16.4g}",
    ]
    if "flow" in p:
        rows.append(f"{'flow':<12}{p['flow']:>14,}{'train only':>16}")
    rows += [
        f"{'total':<12}{r['params_total']:>14,}{r['clip_gflops']:>16.4g}   (clip: backbone x frames + head)",
        f"params_total {r['params_total'] / 1e6:.2f}M (inference {r['params_inference'] / 1e6:.2f}M), "
        f"backbone_gflops {r['backbone_gflops']:.2f}, head_gflops {r['head_gflops']:.4g}",
        f"backbone in other conventions: {alt['backbone_gmacs_binary']:.2f} (MACs / 2^30, HRNet repo), "
        f"{alt['backbone_gflops_mmcv_style']:.2f} (mmcv-style)",
    ]
    if "paper_table3" in r:
        t = r["paper_table3"]
        rows.append(f"paper Table 3: {t['params_total_m']}M params, backbone {t['backbone_gflops']}, "
                    f"head {t['head_gflops']}")
    return "\n".join(rows)


def _model_parts(path: str, args) -> tuple[dict[str, nn.Module], int, tuple[int, int]]:
    import yaml  # noqa: PLC0415
    from dsta.model import build_model  # noqa: PLC0415  (examples/dsta/model.py)

    cfg = yaml.safe_load(Path(path).read_text()) or {}
    if args.backbone:
        cfg["backbone"] = args.backbone
    if args.frames:
        cfg["frames"] = frame_offsets(args.frames)
    if args.input_size:
        cfg["input_size"] = list(args.input_size)
    cfg["pretrained"] = None
    with torch.device("meta"):
        model = build_model(cfg)
    return parts_from_model(model), model.num_frames, tuple(model.input_size)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description="Parameters and GFLOPs (= 1e9 multiply-accumulates) of DSTA's backbone (one frame)\n"
        "and head (JFD x frames + STD + regression head), counted with forward hooks on meta tensors\n"
        "(instant, no memory). Conv2d / Linear / attention matmuls are counted; norms, activations,\n"
        "softmax, pooling, upsampling, additions and biases are not (the module docstring has the details).",
        epilog="examples:\n"
        "  python examples/dsta/complexity.py --backbone hrnet_w48 --frames 3 --input-size 384 288   # Table 3\n"
        "  python examples/dsta/complexity.py --backbone resnet50 --frames 5 --json r50.json\n"
        "  python examples/dsta/complexity.py --model-config examples/dsta/configs/cpu_tiny.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", choices=BACKBONES, help="backbone name (default resnet50)")
    parser.add_argument("--frames", type=int, metavar="F", help="frames per clip incl. the key frame (default 3)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="crop size (default 256 192; the paper uses 384 288 for HRNet-W48)")  # fmt: skip
    parser.add_argument("--jfd", choices=("pooled", "map"), help="JFD mode (default: map for HRNet, else pooled)")
    parser.add_argument("--dim", type=int, default=32, help="joint token size (default 32)")
    parser.add_argument("--depth", type=int, default=4, help="blocks per STD stack (default 4)")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (default 8)")
    parser.add_argument("--mlp-ratio", type=float, default=2.0, help="STD MLP ratio (default 2)")
    parser.add_argument("--aggregation", choices=("weighted", "concat"), default="weighted",
                        help="TD/SD fusion: weighted (official code) or concat (paper Eq. 9) (default weighted)")  # fmt: skip
    parser.add_argument("--std-mode", choices=("decoupled", "coupled", "temporal", "spatial"), default="decoupled",
                        help="STD variant: decoupled TD + SD stacks, coupled global attention over all joints of "
                        "all frames, or one of the two stacks alone (default decoupled)")  # fmt: skip
    parser.add_argument("--skeleton", choices=tuple(SKELETONS), default="posetrack",
                        help="joint set and SD groups (default posetrack)")  # fmt: skip
    parser.add_argument("--model-config", metavar="YAML", help="YAML config for model.build_model (the flags above that are "
                        "given override its backbone / frames / input_size; the STD flags are ignored) (default: none)")  # fmt: skip
    parser.add_argument("--json", metavar="OUT", help="write the result to this JSON file (default: not written)")
    args = parser.parse_args(argv)
    if args.frames is not None and args.frames < 1:
        parser.error("--frames must be >= 1")
    if args.model_config:
        parts, frames, size = _model_parts(args.model_config, args)
    else:
        frames, size = args.frames or 3, tuple(args.input_size or (256, 192))
        with torch.device("meta"):
            parts = build_parts(args.backbone or "resnet50", frames, size, jfd=args.jfd, dim=args.dim,
                                depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio,
                                aggregation=args.aggregation, std_mode=args.std_mode,
                                skeleton=args.skeleton)  # fmt: skip
    result = complexity(parts, frames, size)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

"""Backbones for DSTA, written from their papers: ResNet, pose HRNet, ViTPose-style ViT, a tiny CNN.

    build_backbone("resnet50")                      # torchvision naming, C5: [N, 2048, H/32, W/32]
    build_backbone("hrnet_w48")                     # pose HRNet: [N, 48, H/4, W/4]
    build_backbone("vit_h", input_size=(256, 192))  # ViTPose-H: [N, 1280, H/16, W/16]
    load_backbone_weights(backbone, "ckpt.pth")     # torchvision / timm / mmpose / RLE checkpoints

No torchvision, timm, mmcv or mmpose: the modules below use the parameter names of the checkpoints
people have (torchvision / timm ResNet, the HRNet and mmpose HRNet, ViTPose's ViT), so loading one is
a prefix strip or a handful of renames (`backbone_weights.py`).

Every backbone has ``name``, ``family`` (``"resnet" | "hrnet" | "vit" | "tiny"``), ``out_channels``
and ``stride``, and maps `[N, 3, H, W]` to a feature map `[N, out_channels, H / stride, W / stride]`:

| name | out_channels | stride | params (no classifier / final layer) |
|---|---|---|---|
| resnet18 / resnet50 / resnet152 | 512 / 2048 / 2048 | 32 (C5) | 11.18M / 23.51M / 58.14M |
| hrnet_w32 / hrnet_w48 | 32 / 48 | 4 (highest-resolution branch) | 28.5M / 63.6M |
| vit_tiny / vit_s / vit_h | 64 / 384 / 1280 | 16 (patch tokens) | 0.16M / 21.7M / 630.9M |
| tiny | 256 | 16 | 0.39M |

HRNet returns the highest-resolution output of its last stage: what the 1x1 ``final_layer`` of a pose
HRNet sees (that layer is not part of the backbone; its checkpoint keys are reported as unused).
``vit_tiny`` is a test-sized ViT (dim 64, depth 2), not timm's ViT-Ti; ``vit_s`` is ViTPose-S.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dsta.backbone_weights import LoadReport, load_backbone_weights, resize_pos_embed

__all__ = ["build_backbone", "BACKBONES", "ResNet", "PoseHRNet", "ViT", "TinyCNN", "LoadReport",
           "load_backbone_weights", "count_parameters"]  # fmt: skip


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


# ----------------------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    """Two 3x3 convs + identity (He et al. 2016). Names: conv1, bn1, conv2, bn2, downsample.{0,1}."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, cin, H, W]` -> `[N, planes, H / stride, W / stride]`."""
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    """1x1 - 3x3 (strided, "ResNet v1.5") - 1x1 x4 + identity. Names: conv1..3, bn1..3, downsample."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv1x1(cin, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv1x1(planes, planes * 4), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, cin, H, W]` -> `[N, 4 * planes, H / stride, W / stride]`."""
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


def _res_layer(block, cin: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    down = None
    if stride != 1 or cin != planes * block.expansion:
        down = nn.Sequential(_conv1x1(cin, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion))
    layers = [block(cin, planes, stride, down)]
    layers += [block(planes * block.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ResNet without its classifier, returning C5 (stride 32).

    Parameter names are torchvision's (conv1, bn1, layer1..layer4), which timm, mmpose (under
    ``backbone.``) and RLE / DSTA (under ``preact.``) share.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        name: reported name.

    Shape:
        `[N, 3, H, W]` -> `[N, 512 * block.expansion, H / 32, W / 32]`.
    """

    family = "resnet"

    def __init__(self, block, layers: tuple[int, int, int, int], name: str = "resnet") -> None:
        super().__init__()
        self.name, self.stride = name, 32
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            self.add_module(f"layer{i + 1}", _res_layer(block, cin, planes, n, 1 if i == 0 else 2))
            cin = planes * block.expansion
        self.out_channels = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> C5 `[N, out_channels, H / 32, W / 32]`."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# ------------------------------------------------------------------------------------------------ HRNet
class HRModule(nn.Module):
    """One multi-resolution module of HRNet (Sun et al. 2019): parallel branches, then exchange.

    ``branches[i]`` is a stack of residual blocks at resolution ``i`` (stride ``4 * 2**i``);
    ``fuse_layers[i][j]`` carries branch ``j`` to branch ``i``: a 1x1 conv + BN then nearest upsampling
    (``j > i``), ``i - j`` strided 3x3 conv + BN (+ ReLU between) (``j < i``), ``None`` (``j == i``).
    Output ``i`` = ReLU(sum over ``j``). With ``multiscale_output=False`` only output 0 is formed.
    Names are those of the HRNet code and mmpose.
    """

    def __init__(self, channels: tuple[int, ...], num_blocks: tuple[int, ...], multiscale_output: bool = True):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c) for _ in range(n))) for c, n in zip(channels, num_blocks)
        )
        fuse = []
        for i in range(len(channels) if multiscale_output else 1):
            row: list[nn.Module | None] = []
            for j, cj in enumerate(channels):
                if j > i:
                    row.append(nn.Sequential(_conv1x1(cj, channels[i]), nn.BatchNorm2d(channels[i])))
                elif j == i:
                    row.append(None)
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = channels[i] if last else cj
                        step = [_conv3x3(cj, cout, 2), nn.BatchNorm2d(cout)] + ([] if last else [nn.ReLU(inplace=True)])
                        steps.append(nn.Sequential(*step))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """`[N, c_i, H / 2**i, W / 2**i]` for each branch `i` -> same shapes (only `i = 0` if not multiscale)."""
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                z = layer(xs[j])
                if j > i:  # nearest upsampling to branch i's size (= scale 2**(j - i) for sizes divisible by 32)
                    z = F.interpolate(z, size=xs[i].shape[-2:], mode="nearest")
                y = y + z
            out.append(self.relu(y))
        return out


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _transition(pre: tuple[int, ...], cur: tuple[int, ...]) -> nn.ModuleList:
    """Branch adapters between stages: 3x3 conv where widths differ, one strided 3x3 conv for a new branch."""
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            same = pre[i] == c
            layers.append(None if same else _conv_bn_relu(pre[i], c, 1))
        else:  # new lower-resolution branch from the last one: names transitionK.i.0.{0,1}
            layers.append(nn.Sequential(_conv_bn_relu(pre[-1], c, 2)))
    return nn.ModuleList(layers)


class PoseHRNet(nn.Module):
    """HRNet for pose (Sun et al. 2019) without its 1x1 ``final_layer``: returns the stride-4 branch.

    Stem (two stride-2 3x3 convs), ``layer1`` (4 bottlenecks, 256 channels), then stages 2-4 with
    2, 3, 4 branches of widths ``(W, 2W, 4W, 8W)``, 1 / 4 / 3 modules of 4 basic blocks per branch;
    the last module only fuses into the highest-resolution branch, as in the pose HRNet.

    Args:
        width: ``W`` (32 or 48).
        name: reported name.

    Shape:
        `[N, 3, H, W]` -> `[N, width, H / 4, W / 4]` (H, W divisible by 32).
    """

    family = "hrnet"

    def __init__(self, width: int = 48, name: str | None = None) -> None:
        super().__init__()
        self.name, self.stride, self.out_channels = name or f"hrnet_w{width}", 4, width
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _res_layer(Bottleneck, 64, 64, 4)
        widths = tuple(width * 2**i for i in range(4))
        pre: tuple[int, ...] = (256,)
        for s, modules in ((2, 1), (3, 4), (4, 3)):
            cur = widths[:s]
            self.add_module(f"transition{s - 1}", _transition(pre, cur))
            last = modules - 1 if s == 4 else None  # the pose HRNet's last module only forms branch 0
            stage = [HRModule(cur, (4,) * s, multiscale_output=m != last) for m in range(modules)]
            self.add_module(f"stage{s}", nn.Sequential(*stage))
            pre = cur
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _apply_transition(transition: nn.ModuleList, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, t in enumerate(transition):
            if i < len(xs):
                out.append(xs[i] if t is None else t(xs[i]))
            else:
                out.append(t(xs[-1]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> `[N, width, H / 4, W / 4]`."""
        x = self.relu(self.bn1(self.conv1(x)))
        xs = [self.layer1(self.relu(self.bn2(self.conv2(x))))]
        for s in (2, 3, 4):
            xs = getattr(self, f"stage{s}")(self._apply_transition(getattr(self, f"transition{s - 1}"), xs))
        return xs[0]


# -------------------------------------------------------------------------------------------------- ViT
class Attention(nn.Module):
    """Multi-head self-attention with one packed qkv Linear (names: qkv, proj).

    Shape: `[N, L, C]` -> `[N, L, C]`.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, L, C]` -> `[N, L, C]`."""
        n, length, c = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)  # [N, heads, L, head_dim]
        return self.proj(o.transpose(1, 2).reshape(n, length, c))


class Mlp(nn.Module):
    """fc1 - GELU - fc2. Shape: `[..., C]` -> `[..., C]`."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (names: norm1, attn, norm2, mlp) with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return x
        keep = x.new_empty(x.shape[0], 1, 1).bernoulli_(1.0 - self.drop_path)
        return x * keep / (1.0 - self.drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, L, C]` -> `[N, L, C]`."""
        x = x + self._drop(self.attn(self.norm1(x)))
        return x + self._drop(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Conv patchifier (name: proj). ViTPose pads by 2: a 256x192 image gives a 16x12 grid."""

    def __init__(self, dim: int, patch: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> `[N, C, H / patch, W / patch]`."""
        return self.proj(x)


class ViT(nn.Module):
    """Plain ViT as in ViTPose (Xu et al. 2022): no class token, patch tokens returned as a map.

    Names are ViTPose's (mmpose 0.x): ``patch_embed.proj``, ``pos_embed`` `[1, 1 + h * w, C]`,
    ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``last_norm``. Like ViTPose,
    the first ``pos_embed`` row (the class token's in MAE / timm checkpoints) is added to every patch.
    An input whose grid differs from ``input_size``'s gets the grid part of ``pos_embed`` resized
    (bicubic) on the fly.

    Args:
        dim, depth, num_heads, mlp_ratio: transformer size (ViTPose-H: 1280, 32, 16, 4).
        patch: patch size (16). padding: patch-conv padding (ViTPose: 2).
        input_size: `(H, W)` the position embedding is built for.
        drop_path: stochastic depth of the last block (linear from 0).
        name: reported name.

    Shape:
        `[N, 3, H, W]` -> `[N, dim, H / 16, W / 16]`.
    """

    family = "vit"

    def __init__(self, dim: int = 1280, depth: int = 32, num_heads: int = 16, mlp_ratio: float = 4.0,
                 patch: int = 16, padding: int = 2, input_size: tuple[int, int] = (256, 192),
                 drop_path: float = 0.0, name: str = "vit") -> None:  # fmt: skip
        super().__init__()
        self.name, self.stride, self.out_channels = name, patch, dim
        self.patch_embed = PatchEmbed(dim, patch, padding)
        h, w = (int(s) for s in input_size)
        self.grid = ((h + 2 * padding - patch) // patch + 1, (w + 2 * padding - patch) // patch + 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, r) for r in rates)
        self.last_norm = nn.LayerNorm(dim, eps=1e-6)
        self.grad_checkpointing = False  # set True to trade compute for memory when training ViT-H
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def position(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding for a `grid` of patches: `[1, h * w, C]`."""
        pos = self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        return pos if tuple(grid) == self.grid else resize_pos_embed(pos, self.grid, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> `[N, dim, h, w]` with `(h, w)` the patch grid."""
        x = self.patch_embed(x)
        n, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self.position((h, w))
        for blk in self.blocks:
            x = checkpoint(blk, x, use_reentrant=False) if self.grad_checkpointing and self.training else blk(x)
        return self.last_norm(x).transpose(1, 2).reshape(n, c, h, w)


# ----------------------------------------------------------------------------------------------- tiny
class TinyCNN(nn.Module):
    """A small fast CNN for CPU demos and tests: stride-2 3x3 conv + BN + ReLU per stage.

    Args:
        channels: output channels of each stage; the stride is ``2 ** len(channels)``.

    Shape:
        `[N, 3, H, W]` -> `[N, channels[-1], H / 16, W / 16]` (default 4 stages, 0.39M parameters).
    """

    family = "tiny"

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256), name: str = "tiny") -> None:
        super().__init__()
        self.name, self.stride, self.out_channels = name, 2 ** len(channels), channels[-1]
        cins = (3,) + tuple(channels[:-1])
        self.stages = nn.Sequential(*(_conv_bn_relu(i, o, 2) for i, o in zip(cins, channels)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> `[N, out_channels, H / stride, W / stride]`."""
        return self.stages(x)


# ---------------------------------------------------------------------------------------------- registry
_VIT = {  # dim, depth, heads, mlp ratio, default drop path (ViTPose configs)
    "vit_tiny": (64, 2, 4, 4.0, 0.0),
    "vit_s": (384, 12, 12, 4.0, 0.1),
    "vit_h": (1280, 32, 16, 4.0, 0.55),
}
_RESNET = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3)),
           "resnet152": (Bottleneck, (3, 8, 36, 3))}  # fmt: skip
BACKBONES = (*_RESNET, "hrnet_w32", "hrnet_w48", *_VIT, "tiny")


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a backbone by name (see :data:`BACKBONES`); weights are random, see :func:`load_backbone_weights`.

    Args:
        name: one of :data:`BACKBONES`.
        **kwargs: ``input_size=(H, W)`` is accepted by every backbone (ViTs build their position
            embedding for it; the CNNs ignore it). ViTs also take ``dim``, ``depth``, ``num_heads``,
            ``mlp_ratio``, ``drop_path``, ``patch``, ``padding``; ``tiny`` takes ``channels``.

    Returns:
        a module with ``name``, ``family``, ``out_channels``, ``stride``; `[N, 3, H, W]` ->
        `[N, out_channels, H / stride, W / stride]`.

    Examples:
        >>> bb = build_backbone("tiny")
        >>> bb(torch.zeros(1, 3, 64, 48)).shape, bb.stride
        (torch.Size([1, 256, 4, 3]), 16)
    """
    input_size = kwargs.pop("input_size", None)
    if name in _RESNET:
        _no_extra(name, kwargs)
        block, layers = _RESNET[name]
        return ResNet(block, layers, name=name)
    if name in ("hrnet_w32", "hrnet_w48"):
        _no_extra(name, kwargs)
        return PoseHRNet(int(name[len("hrnet_w"):]), name=name)
    if name in _VIT:
        dim, depth, heads, ratio, dp = _VIT[name]
        img_size = kwargs.pop("img_size", None)  # ViTPose's / timm's name for it
        input_size = input_size or img_size or (256, 192)
        cfg = dict(dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio, drop_path=dp)
        unknown = set(kwargs) - set(cfg) - {"patch", "padding"}
        _no_extra(name, {k: kwargs[k] for k in unknown})
        return ViT(**{**cfg, **kwargs}, input_size=tuple(input_size), name=name)
    if name == "tiny":
        return TinyCNN(**kwargs, name=name)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def _no_extra(name: str, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"build_backbone({name!r}) got unexpected arguments: {', '.join(sorted(kwargs))}")


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on meta-device modules)."""
    return sum(p.numel() for p in module.parameters())


if __name__ == "__main__":  # python examples/dsta/backbones.py: parameter counts, built on the meta device
    with torch.device("meta"):
        for n in BACKBONES:
            b = build_backbone(n)
            print(f"{n:10s} {count_parameters(b) / 1e6:8.2f}M  out_channels={b.out_channels:5d}  stride={b.stride}")

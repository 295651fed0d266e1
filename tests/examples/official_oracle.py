"""Test oracle: the authors' `DSTA_STD_ResNet50` (github.com/zgspose/DSTA) in eval mode, written again
as plain functions over a state dict in the official parameter naming.

Independent of `dsta.model` and `stattn` on purpose: no module, layer or attention op of this project
is used, only `torch.nn.functional`, so a mapping or layer mistake in `dsta.official` cannot cancel
out. What it reproduces (docs/official_code.md §1-2):

- input `[B, 9, H, W]`: previous, key and next crop on channels; frames folded into the batch
  frame-major (all previous crops, then all key crops, then all next crops);
- ResNet-50 (`preact.*`, torchvision layout, BatchNorm eps 1e-5) -> global average -> the normalized
  linear `fc_coord`: `(x W^T) / ||x||_2 + b` -> 17 tokens of 32;
- SD on the key frame's tokens 0-14 (5 groups of 3, one embedding per place in a group), tokens 15,
  16 passed through untouched; TD on all 17 tokens over the 3 frames (one embedding per frame);
  4 pre-norm blocks each (8 heads, LayerNorm eps 1e-6, MLP x2 with GELU), a final LayerNorm each;
- `weighted_mean` (a 1x1 convolution over the two streams), output slot s <- token JOINT_ORDER[s],
  LayerNorm + Linear heads, sigma through a sigmoid, `maxvals = mean(1 - sigma)`.

One deliberate difference: the official forward squeezes every size-1 dim after the aggregation, which
breaks a batch of one; here only the channel dim is removed, which is what the code means.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["JOINT_ORDER", "official_forward", "random_official_state_dict"]

#: output slot s of the official model takes internal token JOINT_ORDER[s]
JOINT_ORDER = [1, 2, 0, 0, 0, 3, 6, 4, 7, 5, 8, 9, 12, 10, 13, 11, 14]
_RESNET50 = (3, 4, 6, 3)
_DIM, _HEADS, _JOINTS, _FRAMES, _DEPTH = 32, 8, 17, 3, 4


# ------------------------------------------------------------------------------------ forward
def _bn(sd: dict, name: str, x: torch.Tensor, calibrate: bool = False) -> torch.Tensor:
    """Eval-mode BatchNorm; `calibrate` instead normalizes with the batch's statistics and stores them
    as the running ones (how random test weights get a trained network's centred activations)."""
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=calibrate, momentum=1.0, eps=1e-5)  # fmt: skip


def _bottleneck(sd: dict, name: str, x: torch.Tensor, stride: int, cal: bool) -> torch.Tensor:
    out = F.relu(_bn(sd, f"{name}.bn1", F.conv2d(x, sd[f"{name}.conv1.weight"]), cal))
    out = F.relu(_bn(sd, f"{name}.bn2", F.conv2d(out, sd[f"{name}.conv2.weight"], stride=stride, padding=1), cal))
    out = _bn(sd, f"{name}.bn3", F.conv2d(out, sd[f"{name}.conv3.weight"]), cal)
    if f"{name}.downsample.0.weight" in sd:
        x = _bn(sd, f"{name}.downsample.1", F.conv2d(x, sd[f"{name}.downsample.0.weight"], stride=stride), cal)
    return F.relu(out + x)


def _resnet50(sd: dict, x: torch.Tensor, calibrate: bool = False) -> torch.Tensor:
    """`[N, 3, H, W]` -> C5 `[N, 2048, H / 32, W / 32]`."""
    x = F.relu(_bn(sd, "preact.bn1", F.conv2d(x, sd["preact.conv1.weight"], stride=2, padding=3), calibrate))
    x = F.max_pool2d(x, 3, 2, 1)
    for stage, blocks in enumerate(_RESNET50):
        for i in range(blocks):
            x = _bottleneck(sd, f"preact.layer{stage + 1}.{i}", x, 2 if (i == 0 and stage > 0) else 1, calibrate)
    return x


def _layer_norm(sd: dict, name: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _linear(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _block(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """One pre-norm block on sequences `[S, L, C]` (attention over L, all heads)."""
    s, length, c = x.shape
    h = _layer_norm(sd, f"{name}.norm1", x, 1e-6)
    qkv = _linear(sd, f"{name}.attn.qkv", h).reshape(s, length, 3, _HEADS, c // _HEADS).permute(2, 0, 3, 1, 4)
    scores = (qkv[0] @ qkv[1].transpose(-2, -1)) * (c // _HEADS) ** -0.5
    h = (scores.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(s, length, c)
    x = x + _linear(sd, f"{name}.attn.proj", h)
    h = _layer_norm(sd, f"{name}.norm2", x, 1e-6)
    return x + _linear(sd, f"{name}.mlp.fc2", F.gelu(_linear(sd, f"{name}.mlp.fc1", h)))


def official_forward(sd: dict, x: torch.Tensor) -> dict:
    """The official eval-mode forward.

    Args:
        sd: the official state dict (no `module.` prefix).
        x: `[B, 9, H, W]`: previous, key, next crop (ImageNet-normalized RGB) on channels.

    Returns:
        {"pred_jts": `[B, 17, 2]`, "sigma": `[B, 17, 2]`, "maxvals": `[B, 17, 1]`} in output slot order.
    """
    b = x.shape[0]
    frames = torch.cat(x.split(3, dim=1), 0)  # [3B, 3, H, W], frame-major
    pooled = _resnet50(sd, frames).mean(dim=(2, 3))  # [3B, 2048]
    w, bias = sd["fc_coord.linear.weight"], sd["fc_coord.linear.bias"]
    tokens = pooled.matmul(w.t()) / torch.norm(pooled, dim=1, keepdim=True) + bias
    tokens = torch.stack(tokens.view(_FRAMES * b, _JOINTS, _DIM).split(b, 0), 0)  # [3, B, 17, 32]

    key = tokens[_FRAMES // 2]  # SD: the key frame's tokens 0..14 in 5 groups of 3
    spatial = key[:, :15].reshape(b, 5, 3, _DIM) + sd["Spatial_pos_embed"]
    spatial = spatial.reshape(b * 5, 3, _DIM)
    for i in range(_DEPTH):
        spatial = _block(sd, f"Spatial_blocks.{i}", spatial)
    spatial = _layer_norm(sd, "Spatial_norm", spatial, 1e-6).reshape(b, 15, _DIM)
    spatial = torch.cat([spatial, key[:, 15:]], 1)  # tokens 15, 16 skip SD

    temporal = tokens.permute(1, 2, 0, 3).reshape(b * _JOINTS, _FRAMES, _DIM) + sd["Temporal_pos_embed"]
    for i in range(_DEPTH):
        temporal = _block(sd, f"blocks.{i}", temporal)
    temporal = _layer_norm(sd, "Temporal_norm", temporal, 1e-6).reshape(b, _JOINTS, _FRAMES, _DIM)[:, :, 1]

    both = torch.stack([temporal, spatial], 1)  # [B, 2, 17, 32]: channel 0 = TD
    feat = F.conv2d(both, sd["weighted_mean.weight"], sd["weighted_mean.bias"]).squeeze(1)[:, JOINT_ORDER]
    coord = _linear(sd, "head_coord.1", _layer_norm(sd, "head_coord.0", feat, 1e-5))
    sigma = _linear(sd, "head_sigma.1", _layer_norm(sd, "head_sigma.0", feat, 1e-5)).sigmoid()
    return {"pred_jts": coord, "sigma": sigma, "maxvals": (1 - sigma).mean(2, keepdim=True)}


# ------------------------------------------------------------------------------------ weights
def _resnet50_shapes() -> dict:
    shapes = {"preact.conv1.weight": (64, 3, 7, 7), **_bn_shapes("preact.bn1", 64)}
    cin = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), _RESNET50)):
        for i in range(blocks):
            name = f"preact.layer{stage + 1}.{i}"
            shapes[f"{name}.conv1.weight"] = (planes, cin, 1, 1)
            shapes.update(_bn_shapes(f"{name}.bn1", planes))
            shapes[f"{name}.conv2.weight"] = (planes, planes, 3, 3)
            shapes.update(_bn_shapes(f"{name}.bn2", planes))
            shapes[f"{name}.conv3.weight"] = (4 * planes, planes, 1, 1)
            shapes.update(_bn_shapes(f"{name}.bn3", 4 * planes))
            if i == 0:
                shapes[f"{name}.downsample.0.weight"] = (4 * planes, cin, 1, 1)
                shapes.update(_bn_shapes(f"{name}.downsample.1", 4 * planes))
            cin = 4 * planes
    return shapes


def _bn_shapes(name: str, c: int) -> dict:
    return {f"{name}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{name}.num_batches_tracked": ()
    }


def _block_shapes(name: str) -> dict:
    d = _DIM
    out = {}
    linears = {"attn.qkv": (3 * d, d), "attn.proj": (d, d), "mlp.fc1": (2 * d, d), "mlp.fc2": (d, 2 * d)}
    for sub, (o, i) in linears.items():
        out[f"{name}.{sub}.weight"], out[f"{name}.{sub}.bias"] = (o, i), (o,)
    for norm in ("norm1", "norm2"):
        out[f"{name}.{norm}.weight"], out[f"{name}.{norm}.bias"] = (d,), (d,)
    return out


def official_shapes() -> dict:
    """{name: shape} of every tensor in the official model's state dict."""
    d = _DIM
    shapes = _resnet50_shapes()
    shapes |= {"Spatial_pos_embed": (3, d), "Temporal_pos_embed": (1, _FRAMES, d)}
    for i in range(_DEPTH):
        shapes |= _block_shapes(f"Spatial_blocks.{i}") | _block_shapes(f"blocks.{i}")
    for name in ("Spatial_norm", "Temporal_norm", "head_coord.0", "head_sigma.0"):
        shapes |= {f"{name}.weight": (d,), f"{name}.bias": (d,)}
    shapes |= {"weighted_mean.weight": (1, 2, 1, 1), "weighted_mean.bias": (1,)}
    shapes |= {"head_coord.1.weight": (2, d), "head_coord.1.bias": (2,), "head_sigma.1.weight": (2, d),
               "head_sigma.1.bias": (2,)}  # fmt: skip
    shapes |= {"flow.mask": (6, 2)}
    for net in ("s", "t"):
        for i in range(6):
            for j, (o, k) in zip((0, 2, 4), ((64, 2), (64, 64), (2, 64))):
                shapes[f"flow.{net}.{i}.{j}.weight"], shapes[f"flow.{net}.{i}.{j}.bias"] = (o, k), (o,)
    shapes |= {"fc_coord.linear.weight": (_JOINTS * d, 2048), "fc_coord.linear.bias": (_JOINTS * d,)}
    return shapes


def random_official_state_dict(seed: int = 0, dtype=torch.float32) -> dict:
    """Every official tensor, random but well scaled (activations neither vanish nor explode), so that
    a wrong mapping of any tensor changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in official_shapes().items():
        leaf = name.rsplit(".", 1)[-1]
        if name == "flow.mask":
            out[name] = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 3, dtype=dtype)
        elif leaf == "num_batches_tracked":
            out[name] = torch.tensor(1000)
        elif leaf == "running_var":
            out[name] = (0.5 + torch.rand(shape, generator=g)).to(dtype)
        elif leaf == "running_mean":
            out[name] = (0.1 * torch.randn(shape, generator=g)).to(dtype)
        elif name.startswith("preact.") and leaf in ("weight", "bias") and len(shape) == 1:  # BN affine
            scale = 0.2 if ".bn3." in name or ".downsample.1." in name else 1.0
            base = scale * (0.5 + 0.5 * torch.rand(shape, generator=g)) if leaf == "weight" else 0.1 * torch.randn(
                shape, generator=g)  # fmt: skip
            out[name] = base.to(dtype)
        elif len(shape) == 4:  # convolutions: He init
            fan_in = shape[1] * shape[2] * shape[3]
            out[name] = (torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)).to(dtype)
        elif name == "fc_coord.linear.weight":  # tokens of unit scale after the input normalization
            out[name] = torch.randn(shape, generator=g).to(dtype)
        elif len(shape) == 2 and name not in ("Spatial_pos_embed",):
            out[name] = (torch.randn(shape, generator=g) / math.sqrt(shape[1])).to(dtype)
        else:  # biases, norms' affine, position embeddings
            base = 1.0 if leaf == "weight" and len(shape) == 1 else 0.0
            out[name] = (base + 0.3 * torch.randn(shape, generator=g)).to(dtype)
    with torch.no_grad():  # BatchNorm statistics of a batch of smooth random images, as a trained net has
        _resnet50(out, smooth_images(8, 64, 48, seed=seed + 1, dtype=dtype), calibrate=True)
    return out


def smooth_images(n: int, height: int, width: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """`[n, 3, height, width]` random images with structure at several scales and per-image colour
    offsets: unlike white noise, their pooled backbone features differ from image to image."""
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(n, 1, 3, 1, 1, generator=g).expand(n, 1, 3, height, width).clone()
    for cells in (2, 4, 8):
        coarse = torch.randn(n, 3, cells, max(1, cells * width // height), generator=g)
        out[:, 0] += F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return out[:, 0].to(dtype)

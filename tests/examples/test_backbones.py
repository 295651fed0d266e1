"""examples/dsta/backbones.py + backbone_weights.py: shapes, parameter counts, checkpoint key mapping.

Big backbones (ResNet-152, HRNet-W48, ViT-H) are only built on the meta device (shapes, no memory).
Parameter counts are checked against published numbers (torchvision's model docs; HRNet / ViTPose
papers), which is an independent check of the architectures.
"""
import re

import numpy as np
import pytest
import torch
from dsta.backbone_weights import SCHEMES, detect_scheme, export_state_dict, read_state_dict
from dsta.backbones import BACKBONES, build_backbone, count_parameters, load_backbone_weights

META = torch.device("meta")


def _meta(name, **kw):
    with META:
        return build_backbone(name, **kw)


# ------------------------------------------------------------------------------------------ building
@pytest.mark.parametrize(
    "name, size, channels, stride",
    [("tiny", (64, 48), 256, 16), ("vit_tiny", (64, 48), 64, 16), ("resnet18", (64, 64), 512, 32),
     ("resnet50", (64, 64), 2048, 32), ("hrnet_w32", (64, 64), 32, 4)],
)  # fmt: skip
def test_small_backbones_run_on_cpu(name, size, channels, stride):
    torch.manual_seed(0)
    bb = build_backbone(name, input_size=size).eval()
    assert (bb.name, bb.out_channels, bb.stride) == (name, channels, stride)
    with torch.no_grad():
        y = bb(torch.randn(2, 3, *size))
    assert y.shape == (2, channels, size[0] // stride, size[1] // stride)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_builds_and_maps_shapes_on_meta(name):
    size = (384, 288) if name.startswith("hrnet") else (256, 192)
    bb = _meta(name, input_size=size)
    assert isinstance(bb.out_channels, int) and isinstance(bb.stride, int) and bb.name == name
    y = bb(torch.empty(1, 3, *size, device=META))
    assert y.shape == (1, bb.out_channels, size[0] // bb.stride, size[1] // bb.stride)


def test_tiny_backbone_is_small_and_backward_works():
    bb = build_backbone("tiny")
    assert 100_000 <= count_parameters(bb) <= 500_000
    bb(torch.randn(2, 3, 32, 32)).square().mean().backward()
    assert all(p.grad is not None for p in bb.parameters())


@pytest.mark.parametrize(
    "name, params, classifier",
    [  # torchvision model docs: resnet18 11,689,512, resnet50 25,557,032, resnet152 60,192,808 (with fc)
        ("resnet18", 11_689_512, 512 * 1000 + 1000),
        ("resnet50", 25_557_032, 2048 * 1000 + 1000),
        ("resnet152", 60_192_808, 2048 * 1000 + 1000),
    ],
)
def test_resnet_parameter_counts_match_torchvision(name, params, classifier):
    assert count_parameters(_meta(name)) + classifier == params


def test_big_backbone_parameter_counts():
    final_layer = 48 * 17 + 17  # the pose HRNet's 1x1 head, not part of the backbone
    assert round((count_parameters(_meta("hrnet_w48")) + final_layer) / 1e6, 1) == 63.6  # HRNet paper
    assert round((count_parameters(_meta("hrnet_w32")) + 32 * 17 + 17) / 1e6, 1) == 28.5
    # ViTPose-H: 32 x (12 d^2 + 13 d) + patch conv + pos_embed (1 + 16 x 12 rows) + last_norm, d = 1280
    d = 1280
    expected = 32 * (12 * d * d + 13 * d) + (3 * 16 * 16 * d + d) + 193 * d + 2 * d
    assert count_parameters(_meta("vit_h")) == expected == 630_912_000


def test_vit_input_size_sets_the_grid_and_other_sizes_resize_on_the_fly():
    bb = build_backbone("vit_tiny", input_size=(96, 64)).eval()
    assert bb.grid == (6, 4) and bb.pos_embed.shape == (1, 1 + 24, 64)
    with torch.no_grad():
        assert bb(torch.randn(1, 3, 64, 48)).shape == (1, 64, 4, 3)
    assert len(_meta("vit_h", depth=2).blocks) == 2  # ViT sizes can be overridden


def test_unknown_backbone_and_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet34")
    with pytest.raises(TypeError, match="unexpected"):
        build_backbone("resnet18", width=3)


# ----------------------------------------------------------------------------------- key mapping
def _equal_states(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "scheme, extra",
    [
        ("torchvision", {"fc.weight": (1000, 512), "fc.bias": (1000,)}),
        ("timm", {"fc.weight": (1000, 512), "fc.bias": (1000,)}),
        ("rle", {"fc_coord.weight": (34, 512), "fc_sigma.weight": (34, 512), "flow.s.0.0.weight": (64, 2)}),
        ("mmpose", {"keypoint_head.fc.weight": (34, 512), "head.loss_module.flow.t.0.0.bias": (64,)}),
    ],
)
def test_resnet_checkpoints_of_every_scheme_load_completely(scheme, extra):
    torch.manual_seed(0)
    src, dst = build_backbone("resnet18"), build_backbone("resnet18")
    sd = export_state_dict(src, scheme)
    prefix = {"rle": "preact.", "mmpose": "backbone."}.get(scheme, "")
    for name in ("conv1.weight", "bn1.running_var", "layer1.0.conv2.weight", "layer2.0.downsample.0.weight",
                 "layer2.0.downsample.1.bias", "layer4.1.bn2.num_batches_tracked"):  # fmt: skip
        assert prefix + name in sd  # the scheme's real names
    sd.update({k: torch.zeros(s) for k, s in extra.items()})
    report = load_backbone_weights(dst, sd, scheme="auto")
    assert report.scheme == ("torchvision" if scheme == "timm" else scheme)
    assert report.complete and report.missing == [] and report.mismatched == []
    assert sorted(report.unexpected) == sorted(extra)
    assert report.loaded == len(dst.state_dict())
    assert _equal_states(src, dst)


def test_resnet152_mmpose_and_rle_keys_all_land_on_meta():
    bb = _meta("resnet152")
    for scheme in ("mmpose", "rle"):
        sd = export_state_dict(bb, scheme)
        assert ("backbone." if scheme == "mmpose" else "preact.") + "layer3.35.bn3.weight" in sd
        report = load_backbone_weights(bb, sd)
        assert report.scheme == scheme and report.complete and report.loaded == len(bb.state_dict())


#: mmpose / HRNet-repo key names of a pose HRNet (4 branches, last module fuses into branch 0 only)
_HRNET_KEYS = [
    "conv1.weight", "bn1.running_mean", "conv2.weight", "bn2.weight", "layer1.0.downsample.0.weight",
    "layer1.3.conv3.weight", "transition1.0.0.weight", "transition1.0.1.running_var", "transition1.1.0.0.weight",
    "transition2.2.0.0.weight", "transition3.3.0.1.bias", "stage2.0.branches.1.3.conv2.weight",
    "stage2.0.fuse_layers.0.1.0.weight", "stage2.0.fuse_layers.1.0.0.0.weight",
    "stage3.3.fuse_layers.2.0.1.1.running_var",
    "stage3.0.fuse_layers.2.0.0.0.weight", "stage4.2.fuse_layers.0.3.1.weight", "stage4.2.branches.3.3.bn2.bias",
    "stage4.1.fuse_layers.3.0.2.0.weight",
]  # fmt: skip
_NOT_HRNET_KEYS = ["transition2.0.0.weight", "transition2.1.0.weight", "stage4.2.fuse_layers.1.0.0.0.weight",
                   "stage3.0.fuse_layers.2.0.1.2.weight"]  # fmt: skip


def test_hrnet_w48_naming_matches_mmpose_and_loads_on_meta():
    bb = _meta("hrnet_w48")
    own = bb.state_dict()
    assert all(k in own for k in _HRNET_KEYS), [k for k in _HRNET_KEYS if k not in own]
    assert not any(k in own for k in _NOT_HRNET_KEYS)
    assert own["stage4.2.fuse_layers.0.3.0.weight"].shape == (48, 384, 1, 1)
    sd = export_state_dict(bb, "mmpose")
    sd["keypoint_head.final_layer.weight"] = torch.empty(17, 48, 1, 1, device=META)
    report = load_backbone_weights(bb, sd)
    assert report.scheme == "mmpose" and report.complete and report.unexpected == ["keypoint_head.final_layer.weight"]
    # the HRNet repository's own checkpoints: no prefix, final_layer reported as unused
    sd = dict(bb.state_dict(), **{"final_layer.weight": torch.empty(17, 48, 1, 1, device=META)})
    report = load_backbone_weights(bb, sd)
    assert report.scheme == "native" and report.complete and report.unexpected == ["final_layer.weight"]


def test_hrnet_w32_mmpose_checkpoint_reproduces_the_outputs():
    torch.manual_seed(0)
    src, dst = build_backbone("hrnet_w32").eval(), build_backbone("hrnet_w32").eval()
    for m in src.modules():  # HRNet's conv init (std 0.001) makes outputs ~0: give the BNs values
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 2.0)
            torch.nn.init.normal_(m.bias)
            torch.nn.init.uniform_(m.running_var, 0.5, 2.0)
    report = load_backbone_weights(dst, export_state_dict(src, "mmpose"), scheme="mmpose")
    assert report.complete
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def _mmpretrain_names(sd):
    """ViTPose (mmpose 0.x) names -> mmpose 1.x / mmpretrain names, pos_embed without the class row."""
    out = {}
    for k, v in sd.items():
        k = k.replace("patch_embed.proj.", "patch_embed.projection.").replace("backbone.last_norm.", "backbone.ln1.")
        renames = (("norm1", "ln1"), ("norm2", "ln2"), ("mlp.fc1", "ffn.layers.0.0"), ("mlp.fc2", "ffn.layers.1"))
        for old, new in renames:
            k = re.sub(rf"blocks\.(\d+)\.{re.escape(old)}\.", rf"blocks.\1.{new}.", k)
        k = re.sub(r"blocks\.(\d+)\.", r"layers.\1.", k)
        if k.endswith("pos_embed"):
            v = v[:, 1:] + v[:, :1]  # what ViTPose adds to every patch
        out[k] = v
    return out


@pytest.mark.parametrize("scheme", ["timm", "mmpose", "mmpretrain", "native"])
def test_vit_checkpoints_of_every_scheme_reproduce_the_outputs(scheme):
    torch.manual_seed(0)
    src = build_backbone("vit_tiny", input_size=(64, 48)).eval()
    dst = build_backbone("vit_tiny", input_size=(64, 48)).eval()
    sd = export_state_dict(src, "mmpose" if scheme == "mmpretrain" else scheme)
    extra = {}
    if scheme == "timm":
        assert {"norm.weight", "pos_embed", "blocks.1.attn.qkv.weight", "patch_embed.proj.weight"} <= sd.keys()
        extra = {"cls_token": torch.zeros(1, 1, 64), "head.weight": torch.zeros(10, 64),
                 "fc_norm.weight": torch.ones(64)}
    elif scheme == "mmpose":
        assert {"backbone.last_norm.bias", "backbone.blocks.1.mlp.fc2.weight", "backbone.pos_embed"} <= sd.keys()
        extra = {"keypoint_head.deconv_layers.0.weight": torch.zeros(64, 256, 4, 4)}
    elif scheme == "mmpretrain":
        sd = _mmpretrain_names(sd)
        assert {"backbone.layers.1.ffn.layers.0.0.weight", "backbone.ln1.weight", "backbone.layers.0.ln2.bias",
                "backbone.patch_embed.projection.weight"} <= sd.keys()  # fmt: skip
        assert sd["backbone.pos_embed"].shape == (1, 12, 64)
    sd.update(extra)
    report = load_backbone_weights(dst, sd)
    assert report.scheme == ("mmpose" if scheme == "mmpretrain" else scheme)
    assert report.complete and sorted(report.unexpected) == sorted(extra)
    if scheme == "timm":
        assert any("cls_token" in n for n in report.notes)
    if scheme == "mmpretrain":
        assert any("no class-token row" in n for n in report.notes)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_vit_h_mmpose_keys_all_land_on_meta():
    bb = _meta("vit_h")
    sd = export_state_dict(bb, "mmpose")
    assert len(sd) == 3 + 32 * 12 + 2 and "backbone.blocks.31.attn.qkv.weight" in sd  # 389 tensors
    report = load_backbone_weights(bb, sd)
    assert report.scheme == "mmpose" and report.complete and report.loaded == 389


@pytest.mark.parametrize("with_cls", [True, False])
def test_vit_pos_embed_of_another_grid_is_resized_bicubic(with_cls):
    src = build_backbone("vit_tiny", input_size=(128, 96))  # 8 x 6 grid
    dst = build_backbone("vit_tiny", input_size=(64, 48))  # 4 x 3 grid
    sd = export_state_dict(src, "timm")
    with torch.no_grad():
        sd["pos_embed"] = torch.full((1, 1 + 48, 64), 0.25) if with_cls else torch.full((1, 48, 64), 0.25)
    report = load_backbone_weights(dst, sd)
    assert report.complete and any("resized (bicubic) from a 8x6 to a 4x3" in n for n in report.notes)
    expected_cls = 0.25 if with_cls else 0.0
    torch.testing.assert_close(dst.pos_embed[0, 0], torch.full((64,), expected_cls))
    torch.testing.assert_close(dst.pos_embed[0, 1:], torch.full((12, 64), 0.25))  # a constant stays constant
    # a square ImageNet grid (timm ViT at 224: 14 x 14 + class token) resizes too
    sd["pos_embed"] = torch.zeros(1, 1 + 196, 64)
    assert any("from a 14x14" in n for n in load_backbone_weights(dst, sd).notes)


def test_shape_mismatches_are_reported_not_skipped_silently():
    torch.manual_seed(0)
    bb = build_backbone("resnet18")
    before = bb.layer1[0].conv1.weight.detach().clone()
    sd = export_state_dict(build_backbone("resnet18"), "torchvision")
    sd["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    report = load_backbone_weights(bb, sd)
    assert report.mismatched == [("layer1.0.conv1.weight", (32, 64, 3, 3), (64, 64, 3, 3))]
    assert report.missing == ["layer1.0.conv1.weight"] and not report.complete
    assert torch.equal(bb.layer1[0].conv1.weight, before)
    assert "mismatched" in str(report)


def test_missing_keys_are_reported_but_old_checkpoints_without_bn_counters_are_complete():
    bb = build_backbone("resnet18")
    sd = {k: v for k, v in export_state_dict(bb, "torchvision").items() if not k.endswith("num_batches_tracked")}
    assert load_backbone_weights(bb, sd).complete
    del sd["layer4.1.bn2.weight"]
    report = load_backbone_weights(bb, sd)
    assert report.missing == ["layer4.1.bn2.weight"] and not report.complete


def test_scheme_validation_and_detection():
    bb = build_backbone("tiny")
    with pytest.raises(ValueError, match="unknown scheme"):
        load_backbone_weights(bb, {}, scheme="caffe")
    with pytest.raises(ValueError, match="has no hrnet"):
        load_backbone_weights(_meta("hrnet_w32"), {}, scheme="torchvision")
    assert set(SCHEMES) == {"native", "torchvision", "timm", "rle", "mmpose"}
    assert detect_scheme(["preact.conv1.weight", "fc_coord.weight"], "resnet") == "rle"
    assert detect_scheme(["backbone.conv1.weight"], "hrnet") == "mmpose"
    assert detect_scheme(["cls_token", "blocks.0.norm1.weight"], "vit") == "timm"
    assert detect_scheme(["conv1.weight", "fc.weight"], "resnet") == "torchvision"
    assert detect_scheme(["stages.0.0.weight"], "tiny") == "native"


def test_checkpoint_files_load_with_weights_only(tmp_path):
    """mmpose-style file: {"meta": (numpy arrays inside), "state_dict": DataParallel names}."""
    torch.manual_seed(0)
    src, dst = build_backbone("resnet18"), build_backbone("resnet18")
    sd = {"module." + k: v for k, v in export_state_dict(src, "mmpose").items()}
    sd["module.keypoint_head.fc.weight"] = torch.zeros(34, 512)
    meta = {"epoch": 210, "dataset_meta": {"sigmas": np.array([0.026, 0.025], dtype=np.float32), "flip": np.arange(3)}}
    path = tmp_path / "ckpt.pth"
    torch.save({"meta": meta, "state_dict": sd, "optimizer": {}}, path)
    report = load_backbone_weights(dst, str(path))
    assert report.scheme == "mmpose" and report.complete and report.unexpected == ["keypoint_head.fc.weight"]
    assert _equal_states(src, dst)
    # a raw state dict under "model" also works, and read_state_dict strips module.
    torch.save({"model": sd}, tmp_path / "raw.pt")
    assert "backbone.conv1.weight" in read_state_dict(tmp_path / "raw.pt")


class _Evil:  # anything but tensors / containers / numpy arrays must be refused by weights_only
    pass


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _Evil()}, path)
    with pytest.raises(RuntimeError, match="weights_only=True"):
        load_backbone_weights(build_backbone("resnet18"), path)

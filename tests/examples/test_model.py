"""examples/dsta/model.py: DSTA and the image regression baseline (shapes, modes, loss, gradients, config)."""
import pytest
import torch
import yaml
from dsta.backbones import build_backbone
from dsta.model import DSTA, ImageRegressionBaseline, PooledClipRegression, build_model, dsta_init_, resolve_model_config
from stattn.nn import RegressionOutput, RLELoss
from torch import nn

H, W = 64, 48
BASE = {"backbone": "tiny", "input_size": [H, W], "depth": 2}


def _batch(b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, t, 3, H, W, generator=g)
    target = torch.rand(b, 17, 2, generator=g)
    weight = torch.ones(b, 17)
    weight[:, [3, 4]] = 0  # PoseTrack's unused ear slots
    return frames, target, weight


def _check_output(out, b):
    assert isinstance(out, RegressionOutput)
    assert out.coords.shape == (b, 17, 2) and out.sigma.shape == (b, 17, 2) and out.score.shape == (b, 17, 1)
    assert ((out.sigma > 0) & (out.sigma < 1)).all() and torch.isfinite(out.coords).all()
    torch.testing.assert_close(out.score, (1 - out.sigma).mean(-1, keepdim=True))


def _backward_reaches_everything(model, out, target, weight):
    loss = model.loss(out, target, weight)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("frames", [[-1, 0, 1], [-2, -1, 0, 1, 2]])
@pytest.mark.parametrize("std_mode,aggregation", [("decoupled", "weighted"), ("decoupled", "concat"),
                                                  ("coupled", "weighted"), ("temporal", "weighted"),
                                                  ("spatial", "weighted")])  # fmt: skip
def test_dsta_modes_shapes_loss_and_gradients(frames, std_mode, aggregation):
    torch.manual_seed(0)
    model = build_model({**BASE, "frames": frames, "std_mode": std_mode, "aggregation": aggregation})
    assert isinstance(model, DSTA)
    for name in ("backbone", "jfd", "std", "head", "loss_fn"):
        assert isinstance(getattr(model, name), nn.Module)
    assert isinstance(model.loss_fn, RLELoss)
    assert any(n.startswith("loss_fn.flow.") for n, _ in model.named_parameters())
    assert model.std.num_frames == len(frames) and model.key_frame == frames.index(0)
    assert model.head.coord.in_features == (64 if aggregation == "concat" else 32)
    x, target, weight = _batch(2, len(frames))
    out = model(x)
    _check_output(out, 2)
    _backward_reaches_everything(model, out, target, weight)


def test_dsta_frames_are_folded_into_one_backbone_batch():
    model = build_model({**BASE, "frames": [-1, 0, 1]})
    seen = []
    model.backbone.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    model(_batch(2, 3)[0])
    assert seen == [(6, 3, H, W)]  # one backbone pass over B * T crops
    seen.clear()
    spatial = build_model({**BASE, "std_mode": "spatial"})  # SD only: the other frames are never read
    spatial.backbone.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    spatial(_batch(2, 3)[0])
    assert seen == [(2, 3, H, W)]


def test_key_frame_and_temporal_order_matter():
    """The key frame is the one at offset 0; for a single-frame model [B, 3, H, W] is accepted."""
    torch.manual_seed(0)
    model = build_model({**BASE, "frames": [-2, -1, 0, 1]}).eval()
    assert model.key_frame == 2
    x = _batch(1, 4)[0]
    with torch.no_grad():
        ref = model(x).coords
        changed = x.clone()
        changed[:, 2] += 1.0
        assert not torch.equal(model(changed).coords, ref)
    single = build_model({**BASE, "frames": [0]}).eval()
    with torch.no_grad():
        assert torch.equal(single(x[:, 2]).coords, single(x[:, 2:3]).coords)


def test_jfd_map_mode_default_for_hrnet_and_explicit():
    assert resolve_model_config({"backbone": "hrnet_w32"})["jfd"] == "map"
    assert resolve_model_config({"backbone": "resnet50"})["jfd"] == "pooled"
    model = build_model({**BASE, "jfd": "map"})
    assert model.jfd.mode == "map" and model.jfd.feature_size == (H // 16, W // 16)
    x, target, weight = _batch(2, 3)
    out = model(x)
    _check_output(out, 2)
    _backward_reaches_everything(model, out, target, weight)


@pytest.mark.parametrize("t", [1, 3])
def test_image_baseline(t):
    torch.manual_seed(0)
    frames = [0] if t == 1 else [-1, 0, 1]
    model = build_model({**BASE, "model": "image_baseline", "frames": frames})
    assert isinstance(model, ImageRegressionBaseline)
    x, target, weight = _batch(3, t)
    out = model(x)
    _check_output(out, 3)
    assert (out.coords - 0.5).abs().max() < 0.1  # starts at the crop centre, as RLE
    key = x[:, model.key_frame]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(key).coords, model(x).coords)  # [B, 3, H, W] and [B, T, ...] agree
    model.train()
    _backward_reaches_everything(model, model(x), target, weight)


def test_pooled_clip_uses_every_frame():
    """Table 4's "w/o JFD and STD": whole-pose features of all frames; changing a non-key frame changes the
    prediction (the image baseline ignores it)."""
    torch.manual_seed(0)
    model = build_model({**BASE, "model": "pooled_clip", "frames": [-1, 0, 1]}).eval()
    assert isinstance(model, PooledClipRegression)
    x, target, weight = _batch(3, 3)
    with torch.no_grad():
        out = model(x)
        _check_output(out, 3)
        y = x.clone()
        y[:, 0] = torch.randn_like(y[:, 0])
        assert not torch.allclose(model(y).coords, out.coords)
    with pytest.raises(ValueError, match="expected frames"):
        model(x[:, :2])
    model.train()
    _backward_reaches_everything(model, model(x), target, weight)


def test_backbone_instance_and_plain_config():
    class Fixture(nn.Module):
        out_channels, stride, name = 8, 4, "fixture"

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)

        def forward(self, x):
            return self.conv(x)

    model = build_model({**BASE, "backbone": Fixture(), "frames": [-1, 0, 1]})
    _check_output(model(_batch(2, 3)[0]), 2)
    cfg = model.config
    assert cfg["backbone"] == "fixture" and cfg["skeleton"] == "posetrack"
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg  # plain YAML-able types only
    assert cfg["loss"] == {"variant": "rle", "prior_mean": [0.5, 0.5], "flow_init": "dsta"}
    assert torch.equal(model.loss_fn.flow.prior_mean, torch.tensor([0.5, 0.5]))


def test_dsta_init_matches_official_init_weights():
    torch.manual_seed(0)
    model = build_model({**BASE, "init": "dsta"})
    assert model.std.aggregate.weight.abs().max() < 0.01 and model.std.aggregate.bias.abs().max() == 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and not name.startswith(("backbone", "loss_fn")):
            assert m.bias is None or m.bias.abs().max() == 0, name
    assert dsta_init_(model) is model


def test_config_errors():
    with pytest.raises(ValueError, match="include 0"):
        build_model({**BASE, "frames": [-1, 1]})
    with pytest.raises(ValueError, match="distinct"):
        build_model({**BASE, "frames": [0, 0, 1]})
    with pytest.raises(ValueError, match="model must be"):
        build_model({**BASE, "model": "heatmap"})
    with pytest.raises(ValueError, match="jfd"):
        build_model({**BASE, "jfd": "deformable"})
    model = build_model({**BASE, "frames": [1, 0, -1]})  # sorted into time order
    assert model.frames == (-1, 0, 1)
    with pytest.raises(ValueError, match=r"\[B, 3, 3, H, W\]"):
        model(torch.randn(2, 5, 3, H, W))


def test_loss_options_reach_rle_loss():
    model = build_model({**BASE, "loss": {"variant": "mmpose", "prior_mean": [0, 0], "flow_init": "xavier"}})
    assert model.loss_fn.variant == "mmpose" and torch.equal(model.loss_fn.flow.prior_mean, torch.zeros(2))


def test_backbone_names_build():
    bb = build_backbone("tiny")
    model = build_model({**BASE, "backbone": bb})
    assert model.backbone is bb


def test_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = build_model(BASE).eval()
    x = _batch(2, 3)[0]
    with torch.no_grad():
        ref = model(x)
        out = torch.compile(model, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(out.coords, ref.coords)


@pytest.mark.parametrize("model_name", ["dsta", "image_baseline", "pooled_clip"])
def test_batch_of_one_person_trains(model_name):
    """The official code crashes on a batch of exactly 1 (a squeeze meant for its inference script)."""
    model = build_model({**BASE, "model": model_name, "frames": [-1, 0, 1]})
    frames, target, weight = _batch(1, 3, seed=5)
    out = model(frames)
    _check_output(out, 1)
    model.loss(out, target, weight).backward()

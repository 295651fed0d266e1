"""Reading checkpoint files (examples/dsta/checkpoint_files.py): both torch formats, numpy metadata
pickled under numpy 1.x and 2.x names, refusals; and the architecture hints a checkpoint carries
(examples/dsta/backbone_weights.py).

Every file is written here: the zip format (torch's default) and the legacy one
(``_use_new_zipfile_serialization=False``, which mmpose's publishing tool has used); numpy 1.x names
come from a pickler that writes ``numpy.core.multiarray.*`` where numpy 2 writes ``numpy._core...``.
"""
import os
import pickle
import types

import numpy as np
import pytest
import torch
from dsta.backbone_weights import architecture_hints, export_state_dict
from dsta.backbones import build_backbone, load_backbone_weights
from dsta.checkpoint_files import load_checkpoint

FORMATS = {"zip": True, "legacy": False}  # -> _use_new_zipfile_serialization


class _Numpy1Pickler(pickle._Pickler):
    """Pickles numpy's helpers under numpy 1.x module names (``numpy.core.multiarray._reconstruct``)."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None) or ""
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
            self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _numpy1_dump(obj, f, protocol=None):
    _Numpy1Pickler(f, protocol).dump(obj)


NUMPY1 = types.SimpleNamespace(__name__="numpy1_pickle", Pickler=_Numpy1Pickler, dump=_numpy1_dump)
PICKLERS = {"numpy2-names": pickle, "numpy1-names": NUMPY1}


def _save(obj, path, fmt, names):
    torch.save(obj, path, pickle_module=PICKLERS[names], _use_new_zipfile_serialization=FORMATS[fmt])
    raw = path.read_bytes()  # torch stores pickles uncompressed in both formats: the names are visible
    assert (b"PK" == raw[:2]) == (fmt == "zip")
    assert (b"numpy.core.multiarray\n_reconstruct\n" in raw) == (names == "numpy1-names")
    assert (b"numpy._core.multiarray\n_reconstruct\n" in raw) == (names == "numpy2-names")
    return path


def _dataset_meta():
    """What mmpose keeps in ``meta['dataset_meta']``: arrays of several dtypes, scalars, lists, strings."""
    rng = np.random.default_rng(0)
    return {
        "dataset_name": "coco",
        "num_keypoints": 17,
        "sigmas": rng.random(17).astype(np.float32),
        "dataset_keypoint_weights": rng.random(17),  # float64
        "keypoint_colors": rng.integers(0, 255, (17, 3), dtype=np.uint8),
        "skeleton_links": [(15, 13), (13, 11)],
        "flip_indices": np.array([0, 2, 1, 4, 3], dtype=np.int64),
        "upper_body_ids": np.arange(11, dtype=np.int16)[::2],  # a strided view pickles as a copy
        "score_thr": np.float32(0.3),
        "stride": np.int64(4),
        "use_udp": np.bool_(True),
        "dtype": np.dtype("float16"),
    }


def _same(a, b):
    """Bitwise equality through containers; numpy values must keep their type, dtype and bytes."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


# ------------------------------------------------------------------------------ both formats
@pytest.mark.parametrize("names", PICKLERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_numpy_metadata_loads_bitwise_with_weights_only(tmp_path, fmt, names):
    torch.manual_seed(0)
    src, dst = build_backbone("resnet18"), build_backbone("resnet18")
    sd = export_state_dict(src, "mmpose")
    sd["head.final_layer.weight"] = torch.randn(17, 512, 1, 1)
    ckpt = {"meta": {"epoch": 210, "dataset_meta": _dataset_meta()}, "state_dict": sd}
    path = _save(ckpt, tmp_path / "ckpt.pth", fmt, names)
    with pytest.raises(pickle.UnpicklingError):  # what plain weights_only loading does with this file
        torch.load(path, weights_only=True)
    loaded = load_checkpoint(path)
    assert _same(loaded, ckpt)
    report = load_backbone_weights(dst, path)
    assert report.scheme == "mmpose" and report.complete and report.unexpected == ["head.final_layer.weight"]
    sa, sb = src.state_dict(), dst.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_mmpose_published_vitpose_file_loads_and_reproduces_features(tmp_path):
    """The published layout: legacy format, ``meta`` (config text + numpy dataset_meta), ``state_dict``
    with ``backbone.`` / ``head.`` names, saved by numpy 1.x (the model zoo predates numpy 2)."""
    torch.manual_seed(0)
    src = build_backbone("vit_tiny", input_size=(64, 48)).eval()
    dst = build_backbone("vit_tiny", input_size=(64, 48)).eval()
    cfg = ("model = dict(\n    backbone=dict(\n        arch=dict(\n            embed_dims=64, feedforward_channels=256,"
           " num_heads=4, num_layers=2),\n        img_size=(64, 48),\n        patch_cfg=dict(padding=2),\n"
           "        type='mmpretrain.VisionTransformer'),\n    head=dict(in_channels=64, out_channels=17,"
           " type='HeatmapHead'),\n    type='TopdownPoseEstimator')\n")  # fmt: skip
    meta = {"cfg": cfg, "dataset_meta": _dataset_meta(), "mmengine_version": "0.10.3", "epoch": 210}
    sd = {**export_state_dict(src, "mmpose"), "head.final_layer.weight": torch.randn(17, 64, 1, 1)}
    path = _save({"meta": meta, "state_dict": sd}, tmp_path / "td-hm_ViTPose-tiny.pth", "legacy", "numpy1-names")
    report = load_backbone_weights(dst, path)
    assert report.complete, report
    assert "num_heads=4 checked against the checkpoint (meta['cfg']: num_heads=4)" in report.notes
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_a_callers_own_allow_list_is_left_as_it_was(tmp_path):
    path = _save({"a": np.arange(3)}, tmp_path / "a.pth", "zip", "numpy2-names")
    with torch.serialization.safe_globals([np.dtype]):
        assert _same(load_checkpoint(path), {"a": np.arange(3)})
        assert np.dtype in torch.serialization.get_safe_globals()
    assert np.dtype not in torch.serialization.get_safe_globals()


# ----------------------------------------------------------------------------------- refusals
class _Shell:
    """Unpickling this would run a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Custom:
    pass


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_with_other_globals_are_refused_naming_them(tmp_path, fmt):
    marker = tmp_path / "ran"
    ckpt = {"meta": {"sigmas": np.ones(3)}, "state_dict": {"conv1.weight": torch.zeros(1)},
            "hook": _Shell(f"touch {marker}"), "extra": _Custom()}  # fmt: skip
    path = _save(ckpt, tmp_path / "evil.pth", fmt, "numpy2-names")
    with pytest.raises(RuntimeError) as err:
        load_backbone_weights(build_backbone("resnet18"), path)
    msg = str(err.value)
    assert not marker.exists()
    assert f"{os.system.__module__}.system" in msg and f"{__name__}._Custom" in msg, msg
    assert "numpy" not in msg.split("needs")[1].split(";")[0] and "torch._utils" not in msg  # only the refused ones
    assert "weights_only=True" in msg and "\n" not in msg


def test_a_file_that_is_not_a_checkpoint_gets_one_sentence(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"not a checkpoint at all\n")
    with pytest.raises(RuntimeError, match="cannot read it: not a torch checkpoint") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")


# ------------------------------------------------------------------------- architecture hints
def _vit_sd(num_heads, scheme):
    with torch.device("meta"):
        return export_state_dict(build_backbone("vit_s", num_heads=num_heads), scheme)


def test_timm_vit_small_is_refused_by_vit_s_and_accepted_with_its_head_count(tmp_path):
    """timm's vit_small (6 heads) has exactly the tensors of ViTPose-S (12 heads)."""
    torch.manual_seed(0)
    src = build_backbone("vit_s", num_heads=6, input_size=(224, 224), depth=2)
    ckpt = {"arch": "vit_small_patch16_224", "state_dict": export_state_dict(src, "timm")}
    path = tmp_path / "timm.pth"
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as err:
        load_backbone_weights(build_backbone("vit_s", input_size=(224, 224), depth=2), path)
    msg = str(err.value)
    assert "num_heads=6" in msg and "num_heads=12" in msg and "vit_small_patch16_224" in msg and "vit_s" in msg
    dst = build_backbone("vit_s", num_heads=6, input_size=(224, 224), depth=2)
    report = load_backbone_weights(dst, path)
    assert report.complete and any("num_heads=6 checked" in n for n in report.notes)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(src.eval()(x), dst.eval()(x))


@pytest.mark.parametrize(
    "ckpt, said",
    [  # mmpose 0.x config text (ViTPose), a config dict, timm's args, an mmpretrain arch name
        ({"meta": {"config": "model = dict(type='TopDown', backbone=dict(type='ViT', img_size=(256, 192), "
                             "embed_dim=384, depth=12, num_heads=6, mlp_ratio=4), keypoint_head=dict("
                             "type='TopdownHeatmapSimpleHead', num_heads=12))"}}, "num_heads=6"),
        ({"config": {"num_heads": 6}}, "num_heads=6"),
        ({"args": {"model": "deit_small_patch16_224"}}, "num_heads=6"),
        ({"meta": {"cfg": {"model": {"backbone": {"type": "mmpretrain.VisionTransformer", "arch": "deit-s"}}}}},
         "num_heads=6"),
    ],
)  # fmt: skip
def test_architecture_hints_of_every_source_are_checked(ckpt, said):
    sd = _vit_sd(12, "mmpose")
    with torch.device("meta"):
        bb = build_backbone("vit_s")
    with pytest.raises(ValueError, match=f"says {said} .* has num_heads=12"):
        load_backbone_weights(bb, {**ckpt, "state_dict": sd})


def test_hints_outside_the_backbone_and_without_names_are_not_misread():
    # this example's own checkpoints: a flat config whose heads / depth are the temporal module's
    own = {"config": {"model": "dsta", "backbone": "vit_tiny", "depth": 4, "heads": 8}, "model": {}}
    assert architecture_hints(own) == []
    head_only = {"meta": {"config": "model = dict(keypoint_head=dict(num_heads=3, depth=9))"}}
    assert architecture_hints(head_only) == []
    optimizer_first = ("optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))\n"
                       "model = dict(\n    backbone=dict(type='ViT', depth=12, num_heads=12),\n"
                       "    head=dict())\n")  # fmt: skip
    assert {(w, v) for w, v, _ in architecture_hints({"meta": {"config": optimizer_first}})} == {
        ("num_heads", 12), ("depth", 12)}
    torch.manual_seed(0)
    src = build_backbone("vit_tiny")
    report = load_backbone_weights(build_backbone("vit_tiny"), export_state_dict(src, "timm"))
    assert report.complete and any(n.startswith("head count not checked") for n in report.notes)


def test_resnet_depth_and_family_hints():
    with torch.device("meta"):
        r18, vit = build_backbone("resnet18"), build_backbone("vit_s")
    cfg = {"meta": {"config": "model = dict(backbone=dict(type='ResNet', depth=50), keypoint_head=dict())"}}
    with pytest.raises(ValueError, match="depth=50 .* backbone resnet18 has depth=18"):
        load_backbone_weights(r18, {**cfg, "state_dict": export_state_dict(r18, "mmpose")})
    with pytest.raises(ValueError, match="is a resnet .* backbone vit_s is a vit"):
        load_backbone_weights(vit, {"arch": "resnet50.a1_in1k", "state_dict": _vit_sd(12, "timm")})
    ok = load_backbone_weights(r18, {"arch": "resnet18", "state_dict": export_state_dict(r18, "torchvision")})
    assert ok.complete and "depth=18 checked against the checkpoint (['arch']='resnet18')" in ok.notes

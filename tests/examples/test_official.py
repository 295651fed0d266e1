"""examples/dsta/official.py: the authors' released DSTA weights, run here with the official outputs.

The reference is `official_oracle.official_forward`, the official eval forward rewritten from its
published definition with `torch.nn.functional` only, fed random weights in the official naming.
Small crops (64 x 48) keep the ResNet-50 cheap on a CPU.
"""
import pickle
import warnings

import pytest
import torch
from dsta import evaluate, export, infer_video, official, pipeline
from dsta.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from dsta.config import load_config
from dsta.model import DSTA, build_model

from . import official_oracle as oracle

H, W = 64, 48
SCORED = [0, 1, 2] + list(range(5, 17))


@pytest.fixture(scope="module")
def weights():
    return oracle.random_official_state_dict(seed=0)


@pytest.fixture(scope="module")
def model(weights):
    return official.load_official(weights)


@pytest.fixture(scope="module")
def release_file(tmp_path_factory, weights):
    """A file in the release format: DataParallel prefixes, an optimizer state, the trainer's counters."""
    path = tmp_path_factory.mktemp("official") / "epoch_19_state.pth"
    opt = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}},
           "param_groups": [{"lr": 5e-7, "betas": (0.9, 0.999), "weight_decay": 0.01, "params": [0]}]}  # fmt: skip
    torch.save({"begin_epoch": 19, "state_dict": {f"module.{k}": v for k, v in weights.items()}, "optimizer": opt,
                "tensorboard_global_steps": 4321}, path)  # fmt: skip
    return path


def _clip(b: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """`[B, 3, 3, H, W]`: frames -1, 0, +1 of b people (structured images: features differ per person)."""
    return oracle.smooth_images(3 * b, H, W, seed=seed, dtype=dtype).view(b, 3, 3, H, W)


def _compare(model, weights, clip, atol):
    with torch.no_grad():
        ref = oracle.official_forward(weights, clip.flatten(1, 2))  # the official input: [B, 9, H, W]
        out = model(clip)
    for mine, theirs in ((out.coords, ref["pred_jts"]), (out.sigma, ref["sigma"]), (out.score, ref["maxvals"])):
        torch.testing.assert_close(mine[:, SCORED], theirs[:, SCORED], rtol=0, atol=atol)
    return out, ref


@pytest.mark.parametrize("b", [1, 3])
def test_outputs_equal_the_official_model(model, weights, b):
    assert isinstance(model, DSTA) and not model.training
    out, ref = _compare(model, weights, _clip(b, seed=b), atol=1e-5)
    assert ref["pred_jts"][:, SCORED].std() > 0.1  # not a degenerate comparison: joints and people differ
    assert b == 1 or (ref["pred_jts"][0] - ref["pred_jts"][1]).abs().max() > 0.01
    # the ear slots hold the spare tokens, not the official copy of head top's prediction (documented)
    assert not torch.allclose(out.coords[:, 3], ref["pred_jts"][:, 3])


@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 5])
def test_outputs_equal_the_official_model_on_cuda(weights, b):
    """On CUDA in eval mode the STD blocks take the fused whole-block kernel when eligible; the outputs
    must still be the official ones. TF32 off on both sides: the official model runs in plain fp32."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = official.load_official(weights, device="cuda")
        on_cuda = {k: v.cuda() for k, v in weights.items()}
        _compare(model, on_cuda, _clip(b, seed=20 + b).cuda(), atol=1e-5)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def test_outputs_equal_the_official_model_in_float64():
    # in float64 a single misplaced tensor, row or embedding shows far above rounding
    weights = oracle.random_official_state_dict(seed=1, dtype=torch.float64)
    model = official.load_official(weights).double()  # built in float32: map the float64 tensors again
    model.load_state_dict(official.from_official(weights, model))
    _compare(model, weights, _clip(2, seed=7, dtype=torch.float64), atol=1e-10)


def test_every_frame_and_every_tensor_matters(model, weights):
    """The comparison above can fail: the other frames change the output, and so does a wrong mapping."""
    clip = _clip(2, seed=3)
    moved = clip.clone()
    moved[:, 0] = moved[:, 0].flip(-1)  # only the previous frame differs
    with torch.no_grad():
        assert (model(moved).coords - model(clip).coords)[:, SCORED].abs().max() > 1e-4
    wrong = dict(weights)
    wrong["Spatial_pos_embed"] = weights["Spatial_pos_embed"].flip(0)  # groups' places swapped
    with torch.no_grad():
        diff = (official.load_official(wrong)(clip).coords - model(clip).coords)[:, SCORED].abs().max()
    assert diff > 1e-4


def test_state_dict_round_trip_is_exact(model, weights):
    back = official.to_official(model)
    assert set(back) == set(weights)
    for name, t in weights.items():
        assert torch.equal(back[name], t), name


def test_release_file_loads_everywhere_and_converts(tmp_path, model, release_file):
    clip = _clip(2, seed=11)
    with torch.no_grad():
        expected = model(clip).coords
    # load_official on the file; load_checkpoint recognises it by content (every --checkpoint uses it)
    from_file = official.load_official(release_file)
    ckpt = load_checkpoint(release_file)
    assert ckpt["epoch"] == 20 and ckpt["step"] == 4321 and ckpt["config"]["drop_path_granularity"] == "sequence"
    via_checkpoint = model_from_checkpoint(ckpt, ckpt["config"]).eval()
    via_evaluate, cfg, _ = evaluate.load_model(release_file, torch.device("cpu"))
    assert export.load_model is infer_video.load_model is pipeline.load_model  # one loader for both CLIs
    via_pipeline = pipeline.load_model(release_file, device="cpu")[0]  # infer_video.py and export.py
    for m in (from_file, via_checkpoint, via_evaluate, via_pipeline):
        with torch.no_grad():
            assert torch.equal(m(clip).coords, expected)
    # the converter CLI, and its output read back as an ordinary checkpoint
    out = official.main([str(release_file), str(tmp_path / "dsta_official.pt")])
    converted = load_checkpoint(out)
    assert "official" in converted and converted["epoch"] == 20
    assert converted["config"] == load_config(None, None, base=converted["config"])  # a complete config
    reloaded = model_from_checkpoint(converted, converted["config"]).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(clip).coords, expected)
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.state_dict().items())


def _bad(weights, drop=(), **changes):
    out = {k: v for k, v in weights.items() if k not in drop}
    out.update(changes)
    return out


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(drop=("blocks.2.mlp.fc1.weight",)), r"'blocks\.2\.mlp\.fc1\.weight' is missing"),
        ({"extra.weight": torch.zeros(3)}, r"'extra\.weight' has no place"),
        ({"Temporal_pos_embed": torch.zeros(1, 5, 32)}, r"'Temporal_pos_embed'.*for 5 frames"),
        ({"fc_coord.linear.weight": torch.zeros(15 * 32, 2048)}, r"'fc_coord\.linear\.weight'.*15 joint tokens"),
        ({"preact.layer3.6.conv1.weight": torch.zeros(256, 1024, 1, 1)}, r"'preact\.layer3\.6\.conv1\.weight'.*ResNet-50"),
        ({"preact.layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}, r"'preact\.layer1\.0\.conv1\.weight'.*shape"),
        ({"flow.mask": torch.ones(6, 2)}, r"'flow\.mask'"),
    ],
)
def test_wrong_tensors_are_refused_by_name(weights, change, match):
    with pytest.raises(CheckpointError, match=match):
        official.load_official(_bad(weights, **change))


class _Foreign:  # not a tensor or plain container: weights_only loading refuses it
    pass


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "list", "other_dict", "pickled_object"])
def test_unusable_files_are_one_sentence_and_exit_2(tmp_path, release_file, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(release_file.read_bytes()[:100_000])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    elif kind == "other_dict":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(pickle.dumps({"state_dict": _Foreign()}, protocol=2))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and len(message) < 250 + len(str(path))
    for cli in (official.main, lambda a: evaluate.main(["--checkpoint", a[0], "--out", a[1]])):
        with pytest.raises(SystemExit) as exit_:
            cli([str(path), str(tmp_path / "out")])
        assert exit_.value.code == 2
    with pytest.raises(pipeline.InferenceError):
        pipeline.load_model(path, device="cpu")


# ------------------------------------------------------------------------------- the official protocol
PAPER_CONFIGS = sorted(official.CONFIG.parent.glob("posetrack*.yaml"))


def _lrs_of_the_authors_trainer(lr=5e-5, milestones=(10, 15), gamma=0.1, epochs=20) -> list[float]:
    """Per-epoch learning rates of the authors' trainer: their config's MultiStepLR, and after training
    0-based epoch `epoch` a call of `scheduler.step(epoch)` (the deprecated closed-form path)."""
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma)
    out = []
    for epoch in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # step(epoch) is deprecated; the authors' torch 1.10 took it
            sched.step(epoch)
    return out


def _lrs_of_train_py(cfg: dict) -> list[float]:
    """What train.py does with a config: MultiStepLR(train.milestones, train.gamma), step() after each epoch."""
    t = cfg["train"]
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=float(t["lr"]))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(m) for m in t["milestones"]], float(t["gamma"]))
    out = []
    for _ in range(int(t["epochs"])):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_the_authors_schedule_is_11_5_4_epochs():
    assert _lrs_of_the_authors_trainer() == pytest.approx([5e-5] * 11 + [5e-6] * 5 + [5e-7] * 4, rel=1e-9)


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_configs_follow_the_official_protocol(path):
    cfg = load_config(path)
    assert _lrs_of_train_py(cfg) == pytest.approx(_lrs_of_the_authors_trainer(), rel=1e-9)
    assert cfg["drop_path_granularity"] == "sequence"  # the official per-(person, joint / group) draws
    text = path.read_text()
    assert "evaluate.py --checkpoint" in text and "best.pt --split" not in text  # the final weights are reported


def test_paper_granularity_reaches_every_block():
    cfg = {**load_config(official.CONFIG), "backbone": "tiny", "input_size": [64, 48], "pretrained": None}
    std = build_model(cfg).std
    assert all(b.drop_path.granularity == "sequence" and b.drop_path.group_of is None for b in std.temporal_blocks)
    assert all(b.drop_path.granularity == "sequence" for b in std.spatial_blocks)
    assert std.spatial_blocks[3].drop_path.group_of.tolist() == [0, 0, 0, 5, 6, 1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]
    assert [b.drop_path.p for b in std.temporal_blocks] == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])


def test_readme_paper_commands_evaluate_the_final_weights():
    text = (official.CONFIG.parent.parent / "README.md").read_text()
    commands = [line for line in text.splitlines() if "evaluate.py --checkpoint runs/pt" in line]
    assert commands and all("/last.pt " in line for line in commands)

"""examples/dsta/complexity.py: MAC counting convention, the CLI, and the paper's Table 3 (HRNet-W48).

All counts run on the meta device (shapes only), so HRNet-W48 at 384x288 costs well under a second.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dsta.backbones import Attention, build_backbone
from dsta.complexity import build_parts, complexity, count_macs, frame_offsets, main
from stattn.nn import GlobalAttention, GroupedSpatialAttention, TemporalAttention
from stattn.ops import temporal_mask
from stattn.skeletons import POSETRACK
from torch import nn

META = torch.device("meta")
REPO = Path(__file__).resolve().parents[2]


def _macs(counts):
    return counts["conv"] + counts["linear"] + counts["attention"]


def test_conv_and_linear_macs():
    conv, grouped, linear = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, groups=4), nn.Linear(7, 5)
    assert count_macs(conv, torch.zeros(2, 3, 5, 4))["conv"] == 2 * 8 * 20 * 27  # out elements x cin x k x k
    assert count_macs(grouped, torch.zeros(1, 8, 5, 5))["conv"] == 8 * 9 * 2 * 9
    assert count_macs(linear, torch.zeros(3, 4, 7))["linear"] == 3 * 4 * 5 * 7
    counts = count_macs(nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU()), torch.zeros(2, 3, 5, 4))
    assert _macs(counts) == 2 * 8 * 20 * 27  # BN / ReLU are only in the mmcv-style extras
    assert (counts["x_bias"], counts["x_norm"], counts["x_act"]) == (320, 640, 320)


@pytest.mark.parametrize("window, causal", [(None, False), (1, False), (None, True), (1, True)])
def test_temporal_attention_counts_only_allowed_pairs(window, causal):
    b, f, n, c = 2, 5, 17, 32
    mask = temporal_mask(f, window, causal)
    pairs = f * f if mask is None else int(mask.sum())
    with META:
        layer = TemporalAttention(c, num_heads=8, window=window, causal=causal)
    counts = count_macs(layer, torch.empty(b, f, n, c, device=META))
    assert counts["attention"] == 2 * b * n * pairs * c  # QK^T and AV: scores x head_dim each, summed over heads
    assert counts["linear"] == b * f * n * (3 * c * c + c * c)  # qkv + proj


def test_grouped_global_and_vit_attention_macs():
    b, f, n, c = 2, 3, 17, 32
    with META:
        grouped, dense, vit = GroupedSpatialAttention(c, POSETRACK), GlobalAttention(c), Attention(c, 4)
    x = torch.empty(b, f, n, c, device=META)
    allowed = int(POSETRACK.materialize().sum())  # 5 groups of 3 + 2 singletons = 47 (query, key) pairs
    assert allowed == 5 * 9 + 2
    assert count_macs(grouped, x)["attention"] == 2 * b * f * allowed * c
    assert count_macs(dense, x)["attention"] == 2 * b * (f * n) ** 2 * c
    assert count_macs(vit, torch.empty(b, 12, c, device=META))["attention"] == 2 * b * 12 * 12 * c


def test_meta_and_cpu_counts_agree():
    torch.manual_seed(0)
    bb = build_backbone("tiny")
    cpu = count_macs(bb.eval(), torch.randn(1, 3, 64, 48))
    with META:
        meta_bb = build_backbone("tiny")
    assert count_macs(meta_bb, torch.empty(1, 3, 64, 48, device=META)) == cpu


def test_frame_offsets():
    assert frame_offsets(1) == [0] and frame_offsets(3) == [-1, 0, 1] and frame_offsets(5) == [-2, -1, 0, 1, 2]
    assert frame_offsets(2) == [-1, 0]


def test_cli_on_the_tiny_backbone(tmp_path, capsys):
    out = tmp_path / "c.json"
    r = main(["--backbone", "tiny", "--frames", "3", "--input-size", "64", "48", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    printed = capsys.readouterr().out
    assert "params_total" in printed and "backbone_gflops" in printed
    # tiny: four stride-2 3x3 convs 3 -> 32 -> 64 -> 128 -> 256 at 64x48
    conv = 32 * 24 * 32 * 27 + 16 * 12 * 64 * 288 + 8 * 6 * 128 * 576 + 4 * 3 * 256 * 1152
    assert r["backbone_gflops"] == pytest.approx(conv * 1e-9, rel=1e-12)
    jfd = 3 * 17 * 32 * 256  # pooled normalized linear 256 -> 17 x 32, per frame
    per_block = 3 * 32 * 32 + 32 * 32 + 2 * 32 * 64  # qkv, proj, fc1, fc2 per token
    attn = 4 * (2 * 17 * 3 * 3 * 32 + 2 * (5 * 9 + 2) * 32)  # TD: 17 joints x 3 x 3 frames; SD: groups
    std = 4 * per_block * (3 * 17 + 17) + attn + 2 * 17 * 32  # + the 1x1 TD/SD aggregation
    head = 2 * 17 * 32 * 2  # coord + sigma linears
    parts = r["head_gflops_parts"]
    assert parts["jfd"] * 1e9 == pytest.approx(jfd) and parts["std"] * 1e9 == pytest.approx(std)
    assert parts["head"] * 1e9 == pytest.approx(head)
    assert r["head_gflops"] * 1e9 == pytest.approx(jfd + std + head)
    assert r["params"]["backbone"] == sum(p.numel() for p in build_backbone("tiny").parameters())
    assert r["params_total"] == sum(r["params"].values()) == r["params_inference"] + r["params"]["flow"]
    assert r["jfd_mode"] == "pooled" and r["feature_map"] == [256, 4, 3]


def test_table3_hrnet_w48_384x288_three_frames():
    """Paper Table 3 (HRNet-W48, 2 auxiliary frames): 63.9M params, backbone 35.5, head 0.02 GFLOPs.

    - params: 63.94M with the (training-only) flow, 63.89M without: both 63.9M;
    - backbone: 35.30 GMACs; the HRNet paper's 32.9 is the same count / 2^30, and Table 3's 35.5 is
      what an mmcv-style counter gives (conv biases, BN x2, ReLU, upsampling on top): 35.48;
    - head: 0.0305 with our map-mode JFD (1x1 conv 48 -> 17 + Linear(96 x 72 -> 32) per frame: 9.4M
      MACs x 3 frames + STD 2.3M); the paper's 0.02 cannot be reproduced without its supplementary.
    """
    with META:
        parts = build_parts("hrnet_w48", 3, (384, 288))
    r = complexity(parts, 3, (384, 288))
    assert r["jfd_mode"] == "map" and r["feature_map"] == [48, 96, 72]
    assert round(r["params_total"] / 1e6, 1) == 63.9 and round(r["params_inference"] / 1e6, 1) == 63.9
    assert r["params"]["jfd"] == 48 * 17 + 17 + 96 * 72 * 32 + 32 == 222_049
    assert r["backbone_gflops"] == pytest.approx(35.30, abs=0.005)
    assert round(r["alternatives"]["backbone_gmacs_binary"], 1) == 32.9
    assert round(r["alternatives"]["backbone_gflops_mmcv_style"], 1) == 35.5
    jfd_per_frame = 17 * 48 * 96 * 72 + 17 * 32 * 96 * 72
    assert r["jfd_gflops_per_frame"] * 1e9 == jfd_per_frame
    assert r["head_gflops"] == pytest.approx(0.0305, abs=0.0005)
    assert r["paper_table3"] == {"params_total_m": 63.9, "backbone_gflops": 35.5, "head_gflops": 0.02}


def test_model_config_path_matches_the_direct_path(tmp_path):
    cfg = REPO / "examples" / "dsta" / "configs" / "cpu_tiny.yaml"
    via_model = main(["--model-config", str(cfg), "--frames", "3", "--input-size", "64", "48", "--backbone", "tiny"])
    import yaml

    c = yaml.safe_load(cfg.read_text())
    direct = main(["--backbone", "tiny", "--frames", "3", "--input-size", "64", "48", "--depth", str(c["depth"]),
                   "--jfd", c["jfd"], "--aggregation", c["aggregation"], "--heads", str(c["heads"])])  # fmt: skip
    for key in ("params", "params_total", "backbone_gflops", "head_gflops", "head_gflops_parts"):
        assert via_model[key] == direct[key], key


def test_help_explains_the_convention():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "examples" / "dsta" / "complexity.py"), "--help"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "multiply-accumulates" in done.stdout and "--input-size H W" in done.stdout


def test_every_option_has_help_and_a_default():
    """--std-mode, --skeleton and the rest: each option's help says what it does and its default."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "examples" / "dsta" / "complexity.py"), "--help"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    options = done.stdout.split("options:", 1)[1].split("examples:", 1)[0]
    entries = {}  # "--flag" -> its help text, unwrapped
    for line in options.splitlines():
        if line.lstrip().startswith("--"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line
        elif entries and line.strip():
            entries[flag] += " " + line.strip()
    assert {"--std-mode", "--skeleton", "--backbone", "--frames", "--json"} <= set(entries)
    for flag, text in entries.items():
        assert "default" in text, flag

"""A one-minute tour of stattn's layers on a toy video-pose task (CPU).

Each clip is F frames of a 17-joint skeleton moving smoothly. A "backbone" sees every joint of every
frame through noise, and in the key frame a third of the joints are hidden (occluded) at random.
The model (tokens -> SpaceTimeDecoupling -> RegressionHead, trained with RLELoss) must regress the
key frame's joints. A hidden joint can only be recovered from the other frames (temporal attention) or
from its limb (grouped spatial attention), so the modes of the STD module should rank:
decoupled (TD + SD) <= temporal only < spatial only in error.

    python examples/layers_demo.py              # ~1 minute on 2 CPU cores
    python examples/layers_demo.py --steps 600 --modes decoupled coupled temporal spatial
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import stattn
from stattn.nn import RegressionHead, RLELoss, SpaceTimeDecoupling

try:
    from tqdm import tqdm
except ImportError:  # the demo runs without tqdm, just without a progress bar
    tqdm = None


def make_batch(batch: int, frames: int, gen: torch.Generator, hide: float = 0.33):
    """Smooth joint trajectories `[B, F, 17, 2]` in [0, 1], noisy observations, key-frame targets."""
    skeleton = stattn.POSETRACK
    n = skeleton.num_joints
    rest = 0.5 + 0.18 * torch.randn(batch, 1, n, 2, generator=gen)  # a pose per clip
    velocity = 0.03 * torch.randn(batch, 1, n, 2, generator=gen)  # per-joint drift
    t = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1) - frames // 2
    phase = torch.rand(batch, 1, n, 1, generator=gen) * 6.283
    wobble = 0.02 * torch.sin(0.9 * t + phase)
    joints = (rest + velocity * t + wobble).clamp(0, 1)  # [B, F, N, 2]
    observed = joints + 0.01 * torch.randn(joints.shape, generator=gen)
    visible = torch.ones(batch, frames, n, 1)
    visible[:, frames // 2] = (torch.rand(batch, n, 1, generator=gen) > hide).float()  # occlude the key frame
    observed = observed * visible  # hidden joints read as (0, 0)
    inputs = torch.cat([observed, visible], dim=-1)  # [B, F, N, 3]
    return inputs, joints[:, frames // 2], visible[:, frames // 2, :, 0]


class ToyPoseModel(nn.Module):
    """Per-joint embedding -> STD -> regression head: the DSTA head without a backbone."""

    def __init__(self, frames: int, mode: str, dim: int = 32):
        super().__init__()
        n = stattn.POSETRACK.num_joints
        self.embed = nn.Linear(3, dim)
        self.joint_embed = nn.Parameter(torch.zeros(1, 1, n, dim))  # which joint a token is
        self.std = SpaceTimeDecoupling(dim, num_frames=frames, mode=mode, depth=2, drop_path=0.0)
        self.head = RegressionHead(self.std.out_dim)

    def forward(self, x):
        return self.head(self.std(self.embed(x) + self.joint_embed))


def train_one(mode: str, args) -> dict:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = ToyPoseModel(args.frames, mode)
    loss_fn = RLELoss()
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    steps = range(args.steps)
    bar = tqdm(steps, desc=f"{mode:>9}", leave=False, disable=None) if tqdm else steps  # off when not a TTY
    start = time.perf_counter()
    for _ in bar:
        x, target, _ = make_batch(args.batch, args.frames, gen)
        out = model(x)
        loss = loss_fn(out.coords, out.sigma, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if tqdm:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    train_s = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        x, target, visible = make_batch(2048, args.frames, torch.Generator().manual_seed(10**6))
        err = (model(x).coords - target).norm(dim=-1) * 256  # pixels on a 256-px crop
    hidden = visible == 0
    return {
        "mode": mode,
        "params": sum(p.numel() for p in model.parameters()),
        "err_visible": err[~hidden].mean().item(),
        "err_hidden": err[hidden].mean().item(),
        "train_s": train_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="training steps per mode (default 300)")
    parser.add_argument("--batch", type=int, default=64, help="clips per step (default 64)")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip, key frame in the middle")
    parser.add_argument("--modes", nargs="+", default=["decoupled", "temporal", "spatial"],
                        choices=["decoupled", "coupled", "temporal", "spatial"])  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"stattn {stattn.__version__}: toy video-pose regression, {args.frames} frames, key frame "
          f"{args.frames // 2}, 1/3 of its joints hidden; {args.steps} steps x {args.batch} clips per mode")  # fmt: skip
    probe = torch.empty(1, args.frames, 17, 8, 4)
    backend = stattn.ops._dispatch.choose_backend("temporal_attention", probe, None)
    print(f"attention backend on this machine: {backend}\n")
    rows = [train_one(mode, args) for mode in args.modes]
    print(f"{'STD mode':<10}{'params':>9}{'err visible px':>16}{'err hidden px':>15}{'train s':>9}")
    for r in rows:
        print(f"{r['mode']:<10}{r['params']:>9,}{r['err_visible']:>16.2f}{r['err_hidden']:>15.2f}{r['train_s']:>9.1f}")
    by_mode = {r["mode"]: r["err_hidden"] for r in rows}
    if "temporal" in by_mode and "spatial" in by_mode:
        better = "recovers" if by_mode["temporal"] < by_mode["spatial"] else "does NOT recover"
        print(f"\nTemporal attention {better} hidden joints better than spatial-only "
              f"({by_mode['temporal']:.2f} vs {by_mode['spatial']:.2f} px).")  # fmt: skip


if __name__ == "__main__":
    main()

"""Motion for the synthetic video-pose dataset (`synthetic.py`): articulated people who walk, wave or
turn, with smooth but not rigid joint trajectories, and the PCKh@0.5 distance that scores them."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["make_poses", "pckh_threshold"]


def _wobble(rng, frames: int, n: int, amp: float, periods=(10.0, 40.0)) -> np.ndarray:
    """`[frames, n]` smooth random signals: two sinusoids each with random period and phase."""
    t = np.arange(frames, dtype=np.float64)[:, None]
    out = np.zeros((frames, n))
    for _ in range(2):
        w = 2 * np.pi / rng.uniform(*periods, n)
        out += amp / 2 * np.sin(w * t + rng.uniform(0, 2 * np.pi, n))
    return out


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def make_poses(rng, frames: int, height: float, ground: float, width: int, mode: str | None = None):
    """Joint positions of one person over time.

    Args:
        rng: the generator (consumed).
        frames: number of frames T.
        height: person height in pixels (head top to ankles, standing).
        ground: image row of the feet; width: image width (for where the path runs).
        mode: "walk", "wave" or "turn" (default: random).

    Returns:
        (`[T, 17, 2]` float64 joints in image pixels, ears at NaN; `[T]` yaw: 0 faces the camera,
        +pi/2 faces right; the mode).
    """
    T, h = frames, height
    t = np.arange(T, dtype=np.float64)
    mode = mode or str(rng.choice(["walk", "wave", "turn"], p=[0.5, 0.25, 0.25]))
    omega, phase = 2 * np.pi / rng.uniform(16, 28), rng.uniform(0, 2 * np.pi)
    arm_amp, leg_amp = rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.45)
    wave = np.zeros(2, bool)
    if mode == "walk":
        d = rng.choice([-1.0, 1.0])
        yaw = np.full(T, d * np.pi / 2 * rng.uniform(0.6, 1.0))
        if rng.random() < 0.4:  # turn round mid-walk
            t0, dur = rng.uniform(0.2, 0.7) * T, rng.uniform(6, 14)
            yaw = yaw * (1 - 2 * _smoothstep((t - t0) / dur))
        speed = rng.uniform(0.02, 0.04) * h
    else:
        arm_amp, leg_amp = arm_amp * 0.25, leg_amp * 0.15
        if mode == "wave":
            yaw = np.full(T, rng.uniform(-0.6, 0.6))
            wave = rng.random(2) < 0.5
            wave[rng.integers(0, 2)] = True
        else:
            yaw = rng.uniform(-np.pi, np.pi) + rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.12) * t
        speed = rng.uniform(0.0, 0.006) * h
    yaw = yaw + _wobble(rng, T, 1, 0.15)[:, 0]
    c, s = np.cos(yaw), np.sin(yaw)
    x = np.cumsum(speed * s)
    x = x - (x.min() + x.max()) / 2 + rng.uniform(0.15, 0.85) * width
    stride = np.sin(omega * t + phase)
    y = ground - 0.47 * h - 0.012 * h * np.abs(np.cos(omega * t + phase)) * (mode == "walk")

    torso, head_r, sw, hw = 0.3 * h, 0.07 * h, 0.1 * h, 0.065 * h
    ua, fa, th, sh = 0.17 * h, 0.15 * h, 0.23 * h, 0.23 * h
    wob = _wobble(rng, T, 12, 0.25)  # independent smooth wobble of each angle
    lean = 0.08 * s * (mode == "walk") + wob[:, 0] * 0.3
    nod = wob[:, 1] * 0.6

    def limb(start, length, alpha, beta, side):
        """A segment with forward swing `alpha` and sideways raise `beta` (radians), projected."""
        dx = s * np.sin(alpha) * np.cos(beta) + side * c * np.sin(beta)
        dy = np.cos(alpha) * np.cos(beta)
        return start + length * np.stack([dx, dy], -1)

    J = np.full((T, 17, 2), np.nan)
    pelvis = np.stack([x, y], -1)
    neck = pelvis + torso * np.stack([np.sin(lean), -np.cos(lean)], -1)
    up = np.stack([np.sin(lean + nod), -np.cos(lean + nod)], -1)
    J[:, 1] = neck
    J[:, 2] = neck + 2.2 * head_r * up
    centre = neck + 1.1 * head_r * up
    J[:, 0] = centre + np.stack([0.85 * head_r * s, 0.3 * head_r * np.ones(T)], -1)
    for side, (sho, elb, wri, hip, kne, ank), k in ((1.0, (5, 7, 9, 11, 13, 15), 0), (-1.0, (6, 8, 10, 12, 14, 16), 1)):
        J[:, sho] = neck + np.stack([side * c * sw, 0.1 * torso * np.ones(T)], -1)
        J[:, hip] = pelvis + np.stack([side * c * hw, np.zeros(T)], -1)
        swing = side * stride
        if wave[k]:
            beta_u = rng.uniform(1.8, 2.3) + wob[:, 2 + k] * 0.5
            beta_f = rng.uniform(2.6, 2.9) + rng.uniform(0.3, 0.5) * np.sin(2 * np.pi / rng.uniform(6, 12) * t
                                                                              + rng.uniform(0, 2 * np.pi))  # fmt: skip
            J[:, elb] = limb(J[:, sho], ua, wob[:, 4 + k], beta_u, side)
            J[:, wri] = limb(J[:, elb], fa, wob[:, 4 + k], beta_f, side)
        else:
            a_u = arm_amp * swing + wob[:, 2 + k]
            beta = 0.12 + 0.5 * np.abs(wob[:, 4 + k])
            J[:, elb] = limb(J[:, sho], ua, a_u, beta, side)
            J[:, wri] = limb(J[:, elb], fa, a_u + 0.35 + 0.25 * (1 + swing) + wob[:, 6 + k], beta, side)
        a_t = -leg_amp * swing + 0.5 * wob[:, 8 + k]
        knee = leg_amp * 1.4 * np.maximum(0, np.sin(omega * t + phase + side * np.pi / 2 + np.pi / 3)) + 0.05
        J[:, kne] = limb(J[:, hip], th, a_t, 0.04, side)
        J[:, ank] = limb(J[:, kne], sh, a_t - knee + 0.3 * wob[:, 10 + k], 0.04, side)
    return J, yaw, mode


def pckh_threshold(pts) -> float:
    """PCKh@0.5 distance of a person in pixels (what poseval accepts as a hit): half of poseval's head
    size, 0.6 x the diagonal of the L x L head box, L = |head_top - head_bottom|; `pts` `[17, 2]`."""
    return 0.5 * 0.6 * math.sqrt(2.0) * float(np.linalg.norm(pts[2] - pts[1]))

"""Skeletons: joint names, the joint groups spatial attention works within, and flip pairs.

Groups are a partition of the joints (singletons allowed). The order of joints *inside* a group is
meaningful: it is the position that a per-position spatial embedding refers to (DSTA shares one
embedding per position across groups: head_top/shoulder/hip = 0, nose/elbow/knee = 1, ...).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import torch

__all__ = ["Skeleton", "POSETRACK", "COCO17", "normalize_groups"]


def normalize_groups(groups, num_tokens: int, *, name: str = "groups") -> tuple[tuple[int, ...], ...]:
    """Check that ``groups`` partitions ``range(num_tokens)``; return it as a tuple of int tuples.

    Raises:
        ValueError: naming the problem: not a sequence of sequences, a non-integer or out-of-range
            index, an empty group, an index in two groups (or twice in one), or indices in no group.
    """
    if isinstance(groups, Skeleton):
        groups = groups.groups
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
        raise ValueError(f"{name} must be a sequence of index sequences or a Skeleton, got {type(groups).__name__}")
    out, seen = [], {}
    for gi, group in enumerate(groups):
        if isinstance(group, torch.Tensor):
            group = group.tolist()
        if isinstance(group, (str, bytes)) or not isinstance(group, Sequence):
            raise ValueError(f"{name}[{gi}] must be a sequence of token indices, got {type(group).__name__}")
        if len(group) == 0:
            raise ValueError(f"{name}[{gi}] is empty; every group needs at least one token")
        members = []
        for idx in group:
            if isinstance(idx, bool) or not isinstance(idx, int):
                try:
                    idx = int(idx.__index__())  # numpy / 0-d tensor integers
                except (AttributeError, TypeError):
                    raise ValueError(f"{name}[{gi}] holds {idx!r}, which is not an integer index") from None
            if not 0 <= idx < num_tokens:
                raise ValueError(f"{name}[{gi}] holds index {idx}, outside range(0, {num_tokens})")
            if idx in seen:
                raise ValueError(f"token {idx} appears in {name}[{seen[idx]}] and {name}[{gi}]; groups must not overlap")
            seen[idx] = gi
            members.append(idx)
        out.append(tuple(members))
    missing = sorted(set(range(num_tokens)) - set(seen))
    if missing:
        raise ValueError(f"tokens {missing} are in no group; {name} must cover all {num_tokens} tokens")
    return tuple(out)


@dataclass(frozen=True)
class Skeleton:
    """A skeleton's joints and the partition spatial attention uses.

    Args:
        name: short identifier.
        joints: joint names, one per token slot, `[N]`.
        groups: partition of `range(N)`; order inside a group = position index.
        flip_pairs: (left, right) slot pairs swapped by a horizontal flip.
        joint_weights: per-slot loss weight `[N]` (default 1).
        evaluated: slots that carry annotations / are scored (default all).
    """

    name: str
    joints: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    joint_weights: tuple[float, ...] = field(default=())
    evaluated: tuple[int, ...] = field(default=())

    def __post_init__(self):
        n = len(self.joints)
        object.__setattr__(self, "groups", normalize_groups(self.groups, n, name=f"{self.name}.groups"))
        for a, b in self.flip_pairs:
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise ValueError(f"{self.name}: bad flip pair ({a}, {b}) for {n} joints")
        if not self.joint_weights:
            object.__setattr__(self, "joint_weights", (1.0,) * n)
        if len(self.joint_weights) != n:
            raise ValueError(f"{self.name}: {len(self.joint_weights)} joint weights for {n} joints")
        if not self.evaluated:
            object.__setattr__(self, "evaluated", tuple(range(n)))

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @functools.cached_property
    def group_sizes(self) -> tuple[int, ...]:
        return tuple(len(g) for g in self.groups)

    @functools.cached_property
    def group_index(self) -> tuple[int, ...]:
        """The groups concatenated (the form the ops take, with :attr:`group_sizes`)."""
        return tuple(i for g in self.groups for i in g)

    @property
    def max_group_size(self) -> int:
        return max(self.group_sizes)

    def group_of(self) -> torch.Tensor:
        """`[N]` long: the group index of each joint."""
        out = torch.empty(self.num_joints, dtype=torch.long)
        for gi, g in enumerate(self.groups):
            out[list(g)] = gi
        return out

    def position_in_group(self) -> torch.Tensor:
        """`[N]` long: each joint's position inside its group (0 for the first member)."""
        out = torch.empty(self.num_joints, dtype=torch.long)
        for g in self.groups:
            out[list(g)] = torch.arange(len(g))
        return out

    def flip_permutation(self) -> list[int]:
        """`perm` such that `flipped[..., perm[i], :]` is joint i after a horizontal flip."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def materialize(self) -> torch.Tensor:
        """`[N, N]` bool, True where joint i may attend joint j. For tests and plots only."""
        g = self.group_of()
        return g[:, None] == g[None, :]


_PT_JOINTS = (
    "nose", "head_bottom", "head_top", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
_COCO_JOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear") + _PT_JOINTS[5:]
_LR_PAIRS = ((5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
_LIMBS = ((5, 7, 9), (6, 8, 10), (11, 13, 15), (12, 14, 16))  # l/r arm (shoulder, elbow, wrist), l/r leg

#: PoseTrack in the 17 COCO slots (slots 1, 2 hold head_bottom / head_top; the ear slots 3, 4 are never
#: annotated). Groups as in the official DSTA code: head (head_top, nose, head_bottom), left arm,
#: right arm, left leg, right leg; the unused ear slots are singletons. Weights 1.2 elbows/knees,
#: 1.5 wrists/ankles (DSTA / DCPose training).
POSETRACK = Skeleton(
    name="posetrack",
    joints=_PT_JOINTS,
    groups=((2, 0, 1),) + _LIMBS + ((3,), (4,)),
    flip_pairs=((3, 4),) + _LR_PAIRS,
    joint_weights=(1.0,) * 7 + (1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5),
    evaluated=(0, 1, 2) + tuple(range(5, 17)),
)

#: COCO-17 with unequal groups: a 5-joint head (nose, eyes, ears) and four 3-joint limbs.
COCO17 = Skeleton(
    name="coco17",
    joints=_COCO_JOINTS,
    groups=((0, 1, 2, 3, 4),) + _LIMBS,
    flip_pairs=((1, 2), (3, 4)) + _LR_PAIRS,
    joint_weights=(1.0,) * 7 + (1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5),
)

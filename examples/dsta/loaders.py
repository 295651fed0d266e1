"""What the training and evaluation DataLoaders draw from: a split's clips (`make_clips`), their order
(`EpochSampler` for training, `ShardSampler` for evaluation) and the items (`SeededClips`, `IndexedClips`).
"""
from __future__ import annotations

import math

import torch
from dsta import posetrack_io as pio
from dsta.config import ConfigError
from dsta.data import ImageError, PoseTrackClips
from dsta.transforms import AugmentConfig
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSampler", "ShardSampler", "SeededClips", "IndexedClips", "make_clips"]


class EpochSampler(Sampler):
    """Training order that depends only on (seed, epoch): shuffled with its own generator, padded to a
    multiple of the world size and split by rank (as DistributedSampler), and able to start after the
    first `start` samples of the epoch (mid-epoch resume). Yields `(epoch, index)` for `SeededClips`."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world_size, shuffle
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(n / world_size) if n else 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order += order[: self.per_rank * self.world - self.n]
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self._order()[self.start :]])

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


class ShardSampler(Sampler):
    """Evaluation: rank r takes indices r, r + W, ... (no padding, nothing seen twice)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededClips(Dataset):
    """Training items whose augmentation depends only on (seed, epoch, index): each item is drawn under
    its own torch seed (the global RNG is restored afterwards), whatever the worker count or rank."""

    def __init__(self, clips: PoseTrackClips, seed: int):
        self.clips, self.seed = clips, seed

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch * 10_007 + index) % 2**63)
            return _load_or_report(self.clips, index)


class IndexedClips(Dataset):
    """Evaluation items with `meta["index"]` (to merge the shards of several ranks in dataset order)."""

    def __init__(self, clips: PoseTrackClips):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index):
        item = _load_or_report(self.clips, index)
        if "unreadable" not in item:
            item["meta"]["index"] = index
        return item


def _load_or_report(clips: PoseTrackClips, index: int) -> dict:
    """The item, or `{"unreadable": message}` when `clips` skip unreadable images (collate_clips drops and
    counts it); with on_unreadable="raise" the ImageError propagates."""
    try:
        return clips.load(index)
    except ImageError as e:
        if clips.on_unreadable == "raise":
            raise
        clips.stats["unreadable_images"] += 1
        return {"unreadable": str(e)}


def make_clips(cfg: dict, split: str, *, train: bool, boxes: str = "gt", det_file=None, det_thr=None,
               ann=None) -> tuple[PoseTrackClips, list]:  # fmt: skip
    """The `PoseTrackClips` of a split (annotations `ann` or `cfg["data"][split]`) and its videos.
    Unreadable images are skipped (training and evaluation alike) and reported by the caller."""
    d = cfg["data"]
    ann = ann or d.get(split)
    if not ann:
        raise ConfigError(f"no annotations for split {split!r}: set data.{split} (config or --set data.{split}=PATH)")
    if d["root"] is None:
        raise ConfigError("data.root is not set (the folder the annotations' file names are relative to)")
    videos = pio.load_annotations(ann)
    detections = None
    if boxes == "detections":
        det_file = det_file or d["det_file"]
        if not det_file:
            raise ConfigError("boxes=detections needs a detection file (--det-file or data.det_file)")
        detections = pio.load_detections(det_file)
    elif boxes != "gt":
        raise ValueError(f"boxes must be 'gt' or 'detections', got {boxes!r}")
    h, w = cfg["input_size"]
    clips = PoseTrackClips(videos, d["root"], offsets=[f for f in cfg["frames"] if f != 0], image_size=(w, h),
                           train=train, detections=detections, on_unreadable="skip", enlarge=float(d["enlarge"]),
                           score_threshold=float(d["det_thr"] if det_thr is None else det_thr),
                           augment=AugmentConfig(**(d.get("augment") or {})))  # fmt: skip
    return clips, videos

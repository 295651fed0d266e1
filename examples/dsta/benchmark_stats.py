"""What a generated synthetic split asks of a model: how many key-frame joints are spoiled, and how many
of those a neighbouring frame shows clean ("rescuable"), how far joints move between frames.

    python examples/dsta/benchmark_stats.py data/synth --split val          # print; also stored in the metadata
    python examples/dsta/benchmark_stats.py data/synth --split val --json stats.json

It reads `synthetic_<split>.json`, which `synthetic.generate` writes with a per-frame, per-person state
of every joint (-1 not annotated: outside the image or hidden too long; else the bits HIDDEN, BLURRED,
DEFOCUSED) and each joint's motion since the previous frame in PCKh thresholds. The statistics
(`measure`) are over the key-frame joints, i.e. the annotated joints of the labelled frames:

- corrupted: the joint is hidden, blurred or defocused in the key frame (and each kind on its own);
- rescuable at +-1 (+-2): corrupted in the key frame, annotated and clean in at least one frame
  within 1 (2) frames of it; what temporal context with frames {-1, +1} ({-2..+2}) could use;
- motion: per-frame displacement of every annotated joint (every frame, not only the labelled ones)
  over its person's PCKh@0.5 distance: quartiles, 90th percentile and the share above 1 (a joint that
  moves more than the scoring tolerance between two frames);
- frame rates: the share of frames with each event (focus pull, passing occluder, fast limb, ...).

`joint_subsets` gives the "rescuable" (at +-1) and "clean" joints per GT person for
`subset_eval.evaluate_subsets`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["measure", "joint_subsets", "load_metadata", "format_stats", "main"]

HIDDEN, BLURRED, DEFOCUSED = 1, 2, 4  # as synthetic.HIDDEN, BLURRED, DEFOCUSED (checked in the tests)


def load_metadata(root, split: str) -> dict:
    """`root/synthetic_<split>.json` as a dict; one clear error when it is missing."""
    path = Path(root) / f"synthetic_{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: generate the split with synthetic.py first")
    return json.loads(path.read_text(encoding="utf-8"))


def _labelled(meta: dict, frames: int) -> np.ndarray:
    return np.arange(frames) % int(meta.get("label_every", 1)) == 0


def _clean_within(codes: np.ndarray, radius: int) -> np.ndarray:
    """`[T, 17]` codes -> `[T, 17]` bool: the joint is annotated and clean in some frame u != t with
    |u - t| <= radius."""
    clean = codes == 0
    out = np.zeros_like(clean)
    for d in range(1, radius + 1):
        out[d:] |= clean[:-d]
        out[:-d] |= clean[d:]
    return out


def joint_subsets(meta: dict, radius: int = 1) -> dict[str, dict]:
    """{"rescuable": {(sequence, frame, track_id): `[17]` bool}, "clean": {...}} over the labelled
    frames: rescuable = corrupted in the frame and clean within `radius` frames; clean = annotated and
    not corrupted. Joints corrupted with no clean neighbour are in neither."""
    out = {"rescuable": {}, "clean": {}}
    for name, video in meta["videos"].items():
        for track, rows in video["joints"].items():
            codes = np.asarray(rows, np.int64)
            lab = _labelled(meta, len(codes))
            near = _clean_within(codes, radius)
            for t in np.flatnonzero(lab):
                key = (name, int(t), int(track))
                out["clean"][key] = codes[t] == 0
                out["rescuable"][key] = (codes[t] > 0) & near[t]
    return out


def measure(meta: dict) -> dict:
    """The statistics of the module doc for one split's metadata (fractions in [0, 1])."""
    key, motion, n_frames = [], [], 0
    rescue = {1: [], 2: []}
    for video in meta["videos"].values():
        for track, rows in video["joints"].items():
            codes = np.asarray(rows, np.int64)
            lab = _labelled(meta, len(codes))
            k = codes[lab]
            key.append(k[k >= 0])
            for r in rescue:
                near = _clean_within(codes, r)[lab]
                rescue[r].append(((k > 0) & near)[k >= 0])
            m = np.asarray(video["motion"][track], np.float64)
            motion.append(m[(m >= 0) & (codes >= 0)])
        n_frames += len(video["frame_flags"])
    k = np.concatenate(key) if key else np.zeros(0, np.int64)
    n = max(len(k), 1)
    m = np.concatenate(motion) if motion else np.zeros(0)
    q = np.percentile(m, [25, 50, 75, 90]) if len(m) else [float("nan")] * 4
    kinds = ("occluder", "motion_blur", "defocus", "low_light", "noise")
    flags = [f for v in meta["videos"].values() for f in v["frame_flags"]]
    return {
        "difficulty": meta.get("difficulty"), "split": meta.get("split"), "videos": len(meta["videos"]),
        "key_joints": int(len(k)),
        "corrupted": float((k > 0).sum() / n), "hidden": float((k & HIDDEN > 0).sum() / n),
        "blurred": float((k & BLURRED > 0).sum() / n), "defocused": float((k & DEFOCUSED > 0).sum() / n),
        "rescuable_1": float(np.concatenate(rescue[1]).sum() / n) if rescue[1] else 0.0,
        "rescuable_2": float(np.concatenate(rescue[2]).sum() / n) if rescue[2] else 0.0,
        "motion_q1": float(q[0]), "motion_median": float(q[1]), "motion_q3": float(q[2]), "motion_p90": float(q[3]),
        "motion_over_threshold": float((m > 1).mean()) if len(m) else float("nan"),
        "frame_rates": {kind: sum(bool(f.get(kind)) for f in flags) / max(n_frames, 1) for kind in kinds}
        | {"any": sum(any(f.values()) for f in flags) / max(n_frames, 1)},
    }  # fmt: skip


def format_stats(s: dict) -> str:
    """A few readable lines (percentages) for the console and the reports."""
    fr = s["frame_rates"]
    return "\n".join([
        f"{s['split']} split, difficulty {s['difficulty']}: {s['videos']} videos, {s['key_joints']} annotated "
        f"key-frame joints",
        f"  corrupted in the key frame {s['corrupted']:.1%} (hidden {s['hidden']:.1%}, blurred {s['blurred']:.1%}, "
        f"defocused {s['defocused']:.1%})",
        f"  rescuable: corrupted but clean in a neighbour at +-1 {s['rescuable_1']:.1%}, within +-2 "
        f"{s['rescuable_2']:.1%}",
        f"  motion per frame / PCKh threshold: median {s['motion_median']:.2f} (quartiles {s['motion_q1']:.2f}-"
        f"{s['motion_q3']:.2f}, 90th percentile {s['motion_p90']:.2f}); {s['motion_over_threshold']:.1%} of "
        f"steps exceed the threshold",
        "  frames with: " + ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in fr.items()),
    ])  # fmt: skip


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Measure a generated synthetic split: corrupted, rescuable and moving "
                                "joints (also stored in its synthetic_<split>.json).")  # fmt: skip
    p.add_argument("root", help="dataset root written by synthetic.py (holds synthetic_<split>.json)")
    p.add_argument("--split", default="val", help="split name (default %(default)s)")
    p.add_argument("--json", metavar="OUT.json", help="also write the statistics here (default: none)")
    args = p.parse_args(argv)
    try:
        meta = load_metadata(args.root, args.split)
        stats = measure(meta)
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {args.root}, split {args.split}: cannot measure ({e})", file=sys.stderr)
        raise SystemExit(2) from None
    meta["benchmark"] = stats
    (Path(args.root) / f"synthetic_{args.split}.json").write_text(json.dumps(meta), encoding="utf-8")
    print(format_stats(stats))
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return stats


if __name__ == "__main__":
    main()

"""DSTA on stattn: the example as a package (`pip install -e examples/dsta`, then `import dsta`).

The modules are the example's scripts (`dsta.model`, `dsta.train`, `dsta.evaluate`, `dsta.infer_video`,
...); importing the package itself is cheap and imports none of them. `dsta.estimate(...)` (from
`dsta.pipeline`, imported on first use) runs DSTA over a video and yields per-frame poses:

    import dsta
    for r in dsta.estimate("clip.mp4", "best.pt"):   # r.keypoints [P, 17, 2], r.scores [P, 17], r.track_ids [P]
        ...
"""

__all__ = ["estimate"]


def __getattr__(name):
    if name == "estimate":  # lazy: torch, OpenCV and the model code load only when it is used
        from dsta.pipeline import estimate  # noqa: PLC0415

        return estimate
    raise AttributeError(f"module 'dsta' has no attribute {name!r}")

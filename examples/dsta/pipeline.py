"""DSTA on a video as a pipeline of small steps: frames -> people -> batched prediction -> tracks.

    frames      `windows`: frame t with its clip, the frames t + the model's offsets clamped to the video
    people      a people source gives each frame's (track id, box, box score): `WholeFrame`,
                `FirstFrameBoxes` (first-frame boxes moved by the predicted keypoints), `FrameBoxes`
                (boxes per frame, from a detection file or a detector, linked by IoU)
    crops       `person_crop`: every frame of the clip cropped with the *same* affine crop, that of the
                person's box in frame t (aspect fixed to the model input's W/H, enlarged by `enlarge`)
    prediction  `_Batch`: crops of several frames in one forward pass, mapped back to image pixels
    results     `FrameResult` per frame, in order

`estimate` (also `dsta.estimate`) wires them up from a path or arrays and yields the results without
writing anything; `infer_video.py` adds the writers. `load_model` is the one model loader of the example's
inference CLIs (infer_video, evaluate, export).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from dsta.checkpoint import load_checkpoint, model_from_checkpoint
from dsta.cli import DeviceError, resolve_device
from dsta.config import load_config
from dsta.data import clip_frame_numbers
from dsta.model import build_model
from dsta.posetrack_io import AnnotationError, load_detections
from dsta.tracking import BoxFormatError, IoUTracker, KeypointBoxTracker, clip_box, parse_boxes
from dsta.transforms import affine_matrix, box_to_center_scale, crop_to_image, normalize_image, warp
from dsta.video_io import ArraySource, FrameSource, InferenceError
from stattn.skeletons import POSETRACK

__all__ = ["FrameResult", "Estimate", "estimate", "load_model", "run", "windows", "person_crop", "WholeFrame",
           "FirstFrameBoxes", "FrameBoxes", "detections_by_frame", "InferenceError"]  # fmt: skip

#: the config `estimate` uses without a checkpoint (random weights: structure only)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "cpu_tiny.yaml"


# ------------------------------------------------------------------------------------------- model
def load_model(checkpoint=None, device="cpu", sets=None, *, config=None, seed: int = 0):
    """(model in eval mode on `device`, config dict, checkpoint dict or None).

    From a train.py checkpoint (`checkpoint.load_checkpoint` / `checkpoint.model_from_checkpoint`) or, with random
    weights seeded by `seed`, from a YAML `config` (a smoke test: no download). `sets` override config keys
    (`--set` syntax, e.g. data paths on another machine); `device` as `cli.resolve_device` takes it.
    Every problem is an `InferenceError` with one sentence.
    """
    if (checkpoint is None) == (config is None):
        raise InferenceError("give exactly one of a checkpoint or a config")
    try:
        device = resolve_device(device)
    except DeviceError as exc:
        raise InferenceError(str(exc)) from None
    ckpt = None
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise InferenceError(f"checkpoint {checkpoint} does not exist")
        try:
            ckpt = load_checkpoint(checkpoint)
        except Exception as exc:  # a truncated file, not a torch file, an unpicklable object
            raise InferenceError(f"cannot load checkpoint {checkpoint}: {str(exc).splitlines()[0]}") from None
        cfg = _config(None, sets, ckpt.get("config") or {}, checkpoint)
        try:
            model = model_from_checkpoint(ckpt, cfg)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InferenceError(f"checkpoint {checkpoint}: its weights do not fit the model of its config: "
                                 f"{str(exc).splitlines()[0]}") from None  # fmt: skip
    else:
        if not Path(config).is_file():
            raise InferenceError(f"config {config} does not exist")
        cfg = _config(config, sets, None, config)
        torch.manual_seed(seed)
        model = build_model({**cfg, "pretrained": None})  # random weights: a smoke test, no download
    return model.to(device).eval(), cfg, ckpt


def _config(path, sets, base, name) -> dict:
    try:
        return load_config(path, sets, base=base)
    except (KeyError, ValueError, yaml.YAMLError) as exc:
        raise InferenceError(f"config of {name}: {exc}") from None


# ------------------------------------------------------------------------------------------- results
@dataclass
class FrameResult:
    """The people of one frame. P people; boxes (x, y, w, h) and keypoints in image pixels.

    Attributes:
        index: 0-based frame index.
        name: the frame's file name (folder input) or `f"{index:06d}"` (video, arrays).
        image: `[H, W, 3]` RGB uint8 (None once dropped).
        boxes: `[P, 4]` the boxes the crops came from.
        box_scores: `[P]` detector scores (NaN for given boxes without a score).
        track_ids: `[P]` int.
        keypoints: `[P, 17, 2]` PoseTrack joint order (`stattn.skeletons.POSETRACK`), clipped to the image.
        scores: `[P, 17]` the model's joint confidence mean(1 - sigma) in [0, 1].
    """

    index: int
    name: str
    image: np.ndarray | None
    boxes: np.ndarray
    box_scores: np.ndarray
    track_ids: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray


# ------------------------------------------------------------------------------------------- people
class WholeFrame:
    """One person per frame whose box is the whole frame (track 0)."""

    feedback = False
    description = "whole frame"

    def boxes(self, index, image):
        h, w = image.shape[:2]
        return [(0, (0.0, 0.0, float(w), float(h)), float("nan"))]

    def observe(self, result) -> None:
        pass


class FirstFrameBoxes:
    """First-frame boxes (track ids 0, 1, ...), then each moved by its person's keypoints (`KeypointBoxTracker`).

    `feedback`: the boxes of frame t + 1 need the predictions of frame t, so frames go one at a time."""

    feedback = True
    description = "first-frame boxes + keypoint tracker"

    def __init__(self, boxes):
        self.given = [tuple(float(v) for v in b) for b in boxes]
        if not self.given:
            raise InferenceError("no first-frame box given")
        self.tracker = None

    def boxes(self, index, image):
        h, w = image.shape[:2]
        if self.tracker is None:
            clipped = [clip_box(b, w, h) for b in self.given]
            for i, (b, c) in enumerate(zip(self.given, clipped)):
                if c is None:
                    raise InferenceError(f"first box {i + 1} {b} lies outside the {w}x{h} first frame (or covers "
                                         f"less than a pixel of it; boxes are x,y,w,h in pixels)")  # fmt: skip
            self.tracker = KeypointBoxTracker(clipped, joints=POSETRACK.evaluated)
        return [(tid, box, float("nan")) for tid, box in self.tracker.current()]

    def observe(self, result) -> None:
        h, w = result.image.shape[:2]
        self.tracker.update(np.concatenate([result.keypoints, result.scores[..., None]], -1), w, h)

    @property
    def kept(self) -> int:
        return self.tracker.kept if self.tracker is not None else 0


class FrameBoxes:
    """Boxes per frame from `per_frame(index, image) -> [(box, score), ...]`, linked into tracks by IoU.

    Boxes are clipped to the image; those outside it (or degenerate) are dropped and counted in `dropped`."""

    feedback = False

    def __init__(self, per_frame, description: str = "boxes + IoU tracker"):
        self.per_frame, self.description = per_frame, description
        self.linker = IoUTracker()
        self.dropped = 0

    def boxes(self, index, image):
        h, w = image.shape[:2]
        kept = []
        for box, score in self.per_frame(index, image):
            box = np.asarray(box, np.float64).reshape(-1)
            c = clip_box(box, w, h) if box.size == 4 and np.isfinite(box).all() and (box[2:] > 0).all() else None
            if c is None:
                self.dropped += 1
            else:
                kept.append((c, float("nan") if score is None else float(score)))
        ids = self.linker.assign([b for b, _ in kept])
        return [(tid, box, score) for tid, (box, score) in zip(ids, kept)]

    def observe(self, result) -> None:
        pass


def detections_by_frame(detections, source, first_image_id: int = 0) -> tuple[dict, int]:
    """{frame index: [(box, score), ...] best first} and the number of detections matching no frame.

    A detection belongs to the frame whose name equals the basename of its `image_name` (a digits-only stem
    is the 0-based index of a video's frame), else to frame `image_id - first_image_id`."""
    names = {f.name: i for i, f in enumerate(source.files)} if source.files is not None else {}
    out: dict[int, list] = {}
    unmatched = 0
    for i, det in enumerate(detections):
        t = None
        if "image_name" in det:
            base = Path(str(det["image_name"])).name
            t = names.get(base)
            stem = base.split(".")[0]
            if t is None and source.files is None and stem.isdigit():
                t = int(stem)
        if t is None and "image_id" in det:
            image_id = det["image_id"]
            if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or not str(image_id).isdigit():
                raise InferenceError(f"detection [{i}]: image_id {image_id!r} is not a non-negative integer")
            t = int(image_id) - int(first_image_id)
        if t is None or t < 0 or (source.count is not None and t >= source.count):
            unmatched += 1
            continue
        out.setdefault(t, []).append((tuple(float(v) for v in det["bbox"]), float(det["score"])))
    for t in out:
        out[t].sort(key=lambda d: -d[1])
    return out, unmatched


# ------------------------------------------------------------------------------------------- frames, crops
def windows(frames, offsets):
    """Yield (t, image, clip) per frame: `clip` = the images of frames t + offsets (and t), in time order,
    clamped to the video. Reads ahead max(offsets) frames and keeps only the frames still needed."""
    it = iter(frames)
    lo, hi = min(min(offsets), 0), max(max(offsets), 0)
    buffer: dict[int, np.ndarray] = {}
    n_read, eof, t = 0, False, 0
    while True:
        while not eof and n_read <= t + hi:
            img = next(it, None)
            if img is None:
                eof = True
            else:
                buffer[n_read] = img
                n_read += 1
        if t >= n_read:
            return
        nums, _ = clip_frame_numbers(t, offsets, 0, n_read - 1)
        yield t, buffer[t], [buffer[n] for n in nums]
        for k in [k for k in buffer if k < t + 1 + lo]:
            del buffer[k]
        t += 1


def person_crop(clip, box, input_size, enlarge: float):
    """The clip `[T]` of images cropped around `box` -> (`[T, 3, H, W]` normalised, center `[2]`, scale `[2]`).

    `input_size` is the model's (H, W)."""
    in_h, in_w = (int(s) for s in input_size)
    center, scale = box_to_center_scale(box, in_w / in_h, enlarge)
    m = affine_matrix(center, scale, 0.0, (in_w, in_h))
    warped = {id(img): normalize_image(warp(img, m, (in_w, in_h))) for img in clip}  # clamped frames repeat
    return torch.stack([warped[id(img)] for img in clip]), center, scale


class _Batch:
    """Frames waiting for the model: their people's crops, predicted together in `flush`."""

    def __init__(self):
        self.frames: list[tuple] = []  # (index, name, image, people)
        self.crops, self.centers, self.scales = [], [], []

    def add(self, index, name, image, clip, people, input_size, enlarge) -> None:
        for _, box, _ in people:
            crop, center, scale = person_crop(clip, box, input_size, enlarge)
            self.crops.append(crop)
            self.centers.append(center)
            self.scales.append(scale)
        self.frames.append((index, name, image, people))

    def flush(self, model, batch_size: int, device) -> list[FrameResult]:
        """Predict every crop (`batch_size` per forward) and return the frames' results in order."""
        in_h, in_w = (int(s) for s in model.input_size)
        pixels = np.zeros((0, len(POSETRACK.joints), 2))
        conf = np.zeros((0, len(POSETRACK.joints)))
        if self.crops:
            coords, scores = [], []
            for i in range(0, len(self.crops), batch_size):
                out = model(torch.stack(self.crops[i : i + batch_size]).to(device))
                coords.append(out.coords.float().cpu().numpy())
                scores.append(out.score.float().cpu().numpy()[..., 0])
            pixels = crop_to_image(np.concatenate(coords), np.stack(self.centers), np.stack(self.scales), (in_w, in_h))
            conf = np.concatenate(scores)
        results, j = [], 0
        for index, name, image, people in self.frames:
            h, w = image.shape[:2]
            p = len(people)
            results.append(FrameResult(
                index=index, name=name, image=image,
                boxes=np.array([b for _, b, _ in people], np.float64).reshape(p, 4),
                box_scores=np.array([s for _, _, s in people], np.float64),
                track_ids=np.array([t for t, _, _ in people], np.int64),
                keypoints=np.clip(pixels[j : j + p], 0.0, [w - 1.0, h - 1.0]), scores=conf[j : j + p]))  # fmt: skip
            j += p
        self.__init__()
        return results


@torch.inference_mode()
def run(model, frames, people, *, names=None, enlarge: float = 1.25, batch_size: int = 32, device="cpu"):
    """Yield a `FrameResult` per frame of `frames` (an iterable of `[H, W, 3]` RGB uint8), in order.

    Args:
        model: DSTA (or the image baseline) in eval mode: `frames` (offsets), `input_size` (H, W), forward
            `[B, T, 3, H, W]` -> RegressionOutput.
        people: a people source (`WholeFrame`, `FirstFrameBoxes`, `FrameBoxes`).
        names: frame index -> name (default `f"{index:06d}"`).
        enlarge: box enlargement before the crop (the config's data.enlarge).
        batch_size: crops per forward pass; crops of several frames share one, unless the people source
            needs each frame's predictions before the next frame's boxes.
    """
    offsets = [int(o) for o in model.frames]
    batch = _Batch()
    for t, image, clip in windows(frames, offsets):
        name = names(t) if names is not None else f"{t:06d}"
        batch.add(t, name, image, clip, people.boxes(t, image), model.input_size, enlarge)
        if people.feedback or len(batch.crops) >= batch_size:
            for result in batch.flush(model, batch_size, device):
                people.observe(result)
                yield result
    for result in batch.flush(model, batch_size, device):
        people.observe(result)
        yield result


# ------------------------------------------------------------------------------------------- API
class Estimate:
    """What `estimate` returns: iterate it (once) for the `FrameResult`s; `model`, `config`, `source` and
    `people` (with its `description`, and `dropped` / `kept` counts) describe the run."""

    def __init__(self, model, cfg, source, people, *, enlarge, batch_size, device, weights, unmatched=0):
        self.model, self.config, self.source, self.people = model, cfg, source, people
        self.enlarge, self.batch_size, self.device, self.weights = enlarge, batch_size, device, weights
        self.unmatched = unmatched  # detections of a file that matched no frame
        self._used = False

    def __iter__(self):
        if self._used:  # a video is read once; a tracker has moved on
            raise InferenceError("an Estimate can be iterated only once; call dsta.estimate again")
        self._used = True
        return run(self.model, self.source, self.people, names=self.source.name, enlarge=self.enlarge,
                   batch_size=self.batch_size, device=self.device)  # fmt: skip


def _box_score(item):
    """`[x, y, w, h]` -> (box, None); `((x, y, w, h), score)` -> itself."""
    if len(item) == 2 and np.ndim(item[0]) == 1:
        return tuple(item[0]), item[1]
    return tuple(item), None


def _people(boxes, detector, source, det_threshold, first_image_id):
    """The people source for `estimate`'s `boxes` / `detector` arguments, and unmatched detections."""
    if boxes is not None and detector not in (None, "auto"):
        raise InferenceError("give boxes or a detector, not both")
    if isinstance(boxes, str) and boxes == "whole":
        return WholeFrame(), 0
    if isinstance(boxes, (str, Path)) and (Path(boxes).suffix.lower() == ".json" or Path(boxes).is_file()):
        if not Path(boxes).is_file():
            raise InferenceError(f"detections {boxes}: no such file")
        by_frame, unmatched = detections_by_frame(load_detections(boxes, det_threshold), source, first_image_id)
        description = f"{boxes} (score >= {det_threshold}) + IoU tracker"
        return FrameBoxes(lambda t, _: by_frame.get(t, []), description), unmatched
    if isinstance(boxes, str):
        return FirstFrameBoxes(parse_boxes(boxes)), 0
    if isinstance(boxes, dict):
        per = {int(t): [_box_score(b) for b in v] for t, v in boxes.items()}
        return FrameBoxes(lambda t, _: per.get(t, []), "given boxes per frame + IoU tracker"), 0
    if boxes is not None:
        arr = np.asarray(boxes, np.float64)
        if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all() or (arr[:, 2:] <= 0).any():
            raise InferenceError(f"boxes: expected first-frame boxes [[x, y, w, h], ...] with w, h > 0, got {boxes!r}")
        return FirstFrameBoxes(arr.tolist()), 0
    if detector is None:
        return WholeFrame(), 0
    from dsta.detector import DetectorError, make_detector  # noqa: PLC0415  (cv2 HOG / onnxruntime: only when used)

    spec = "hog" if detector == "auto" else detector
    try:
        det = make_detector(spec)
    except DetectorError as exc:
        raise InferenceError(str(exc)) from None
    name = spec if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)
    return FrameBoxes(lambda _, image: list(zip(*det(image))), f"detector {name} + IoU tracker"), 0


def estimate(video_or_frames, checkpoint=None, *, boxes=None, detector="auto", device="auto", config=None,
             model=None, batch_size: int = 32, max_frames: int | None = None, det_threshold: float = 0.5,
             first_image_id: int = 0, sets=None, enlarge: float | None = None) -> Estimate:  # fmt: skip
    """DSTA poses of every person in every frame of a video; nothing is written.

    Args:
        video_or_frames: a video file, a folder of frames, or a sequence of `[H, W, 3]` RGB uint8 arrays.
        checkpoint: a train.py checkpoint. Without one (and without `config` / `model`) the weights are
            random (`configs/cpu_tiny.yaml`, with a warning): the structure runs, the poses mean nothing.
        boxes: None (use `detector`), `"whole"` (the whole frame is one person), first-frame boxes
            `[[x, y, w, h], ...]` or `"x,y,w,h;..."` (then moved by the predicted keypoints), boxes per frame
            `{index: [[x, y, w, h] or ((x, y, w, h), score), ...]}`, or a COCO-results detection JSON file
            (scores >= `det_threshold`). Per-frame boxes are linked into tracks by IoU.
        detector: with `boxes=None`: `"auto"` / `"hog"` (OpenCV's HOG people detector, no weights), a YOLOv8 /
            YOLOX `.onnx` file, a callable `image -> (boxes [N, 4], scores [N])`, or None (whole frame).
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:N".
        config: a YAML config for random weights instead of a checkpoint; `model`: a model object instead.
        batch_size: crops per forward pass. max_frames: stop after this many frames.
        sets: config overrides (`["key=value"]`). enlarge: box enlargement (default the config's data.enlarge).

    Returns:
        an `Estimate`: iterate it for one `FrameResult` per frame (index, name, image, boxes `[P, 4]`,
        box_scores `[P]`, track_ids `[P]`, keypoints `[P, 17, 2]`, scores `[P, 17]`).

    Examples:
        >>> for r in dsta.estimate("clip.mp4", "best.pt"):  # doctest: +SKIP
        ...     print(r.index, r.track_ids, r.keypoints.shape)
    """
    try:
        dev = resolve_device(device)
    except DeviceError as exc:
        raise InferenceError(str(exc)) from None
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InferenceError(f"batch_size must be a positive integer, got {batch_size!r}")
    if model is not None:
        cfg, weights = (dict(config) if isinstance(config, dict) else {}), "given model"
        model = model.to(dev).eval()
    else:
        if checkpoint is None and config is None:
            warnings.warn("dsta.estimate without a checkpoint: random weights (configs/cpu_tiny.yaml); the "
                          "poses mean nothing", stacklevel=2)  # fmt: skip
            config = DEFAULT_CONFIG
        model, cfg, _ = load_model(checkpoint, dev, sets, config=config)
        weights = str(checkpoint) if checkpoint is not None else f"random ({config})"
    if isinstance(video_or_frames, (str, Path)):
        source = FrameSource(video_or_frames, max_frames)
    else:
        source = ArraySource(video_or_frames, max_frames)
    try:
        people, unmatched = _people(boxes, detector, source, det_threshold, first_image_id)
    except (BoxFormatError, AnnotationError) as exc:
        raise InferenceError(str(exc)) from None
    if enlarge is None:
        enlarge = float((cfg.get("data") or {}).get("enlarge") or 1.25)
    return Estimate(model, cfg, source, people, enlarge=enlarge, batch_size=batch_size, device=dev, weights=weights,
                    unmatched=unmatched)  # fmt: skip

"""Person detectors that run offline, for video inference without a detection file.

A detector is a callable `image` `[H, W, 3]` RGB uint8 -> (`boxes` `[N, 4]` (x, y, w, h) image pixels,
`scores` `[N]`), best first. Two are built in:

- `HOGDetector` (the default, no weights to download): OpenCV's HOG + linear-SVM people detector
  (Dalal & Triggs), run on the frame scaled to at most `max_width` pixels. It finds upright, fully
  visible people of at least ~100 px height at that scale; it misses sitting, cut-off and very close
  people (on the PoseTrack18 sample frames it recalls a minority of the annotated people, see the README).
  OpenCV 5 ships it only in the contrib build (`opencv-contrib-python-headless`, the example's dependency).
- `OnnxDetector`: a user-supplied YOLO-style ONNX model run with onnxruntime, person class (0) only,
  then NMS. Two export layouts are read, told apart by the output's shape:

  - YOLOv8 / YOLO11 (Ultralytics `model.export(format="onnx")`): output `[1, 4 + C, N]`
    (cx, cy, w, h in input pixels, then C class scores, already sigmoid; no objectness). Input: RGB / 255,
    letterboxed to the centre (grey 114 padding).
  - YOLOX (its `tools/export_onnx.py`): output `[1, N, 5 + C]` (cx, cy, w, h, objectness, C class scores;
    score = objectness x class). Input: BGR 0-255, letterboxed to the top-left corner (114 padding). By
    default that export leaves the boxes *raw* (grid offsets and log sizes, strides 8, 16, 32); exported
    with `--decode_in_inference` they are input pixels. Both are read: raw when the centres look like
    offsets (median |cx| below the smallest stride), or say so with `yolox_raw=True / False`.

  The input size is read from the model's input shape (640 x 640 when it is dynamic).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["DetectorError", "HOGDetector", "OnnxDetector", "letterbox", "nms", "decode_yolov8", "decode_yolox",
           "make_detector"]  # fmt: skip

PAD_VALUE = 114
YOLOX_STRIDES = (8, 16, 32)
PERSON = 0  # COCO's person is class 0 of both YOLO exports


class DetectorError(ValueError):
    """A detector that cannot be built or run here; the message says why."""


def nms(boxes, scores, iou_threshold: float = 0.45) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept `boxes` `[N, 4]` (x, y, w, h), best score first."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    area = np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def letterbox(image, size, center: bool = True):
    """Resize `image` `[H, W, 3]` into `size` (width, height) keeping its aspect, pad with 114.

    Returns:
        (padded `[height, width, 3]`, scale, (pad_x, pad_y)): input pixel = image pixel * scale + pad.
    """
    tw, th = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    scale = min(tw / w, th / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    px, py = ((tw - nw) // 2, (th - nh) // 2) if center else (0, 0)
    out = np.full((th, tw, 3), PAD_VALUE, np.uint8)
    out[py : py + nh, px : px + nw] = resized
    return out, scale, (px, py)


def decode_yolov8(output) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv8 output `[1, 4 + C, N]` -> (person boxes `[N, 4]` cx, cy, w, h input pixels, scores `[N]`)."""
    out = np.asarray(output, np.float32).reshape(output.shape[-2], output.shape[-1])
    return out[:4].T, out[4 + PERSON]


def decode_yolox(output, input_size, raw: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX output `[1, N, 5 + C]` -> (person boxes `[N, 4]` cx, cy, w, h input pixels, scores `[N]`).

    Args:
        input_size: (width, height) of the model input (the grids of a raw output depend on it).
        raw: the boxes are grid offsets and log sizes (YOLOX's default export); None = decide from the values.
    """
    out = np.asarray(output, np.float32).reshape(output.shape[-2], output.shape[-1])
    boxes = out[:, :4].copy()
    if raw is None:
        raw = bool(np.median(np.abs(boxes[:, 0])) < min(YOLOX_STRIDES))
    if raw:
        w, h = int(input_size[0]), int(input_size[1])
        grids, strides = [], []
        for s in YOLOX_STRIDES:
            gy, gx = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
            grids.append(np.stack([gx.ravel(), gy.ravel()], 1))
            strides.append(np.full((gx.size, 1), s))
        grid, stride = np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)
        if len(grid) != len(boxes):
            raise DetectorError(f"a raw YOLOX output for a {w}x{h} input has {len(grid)} anchors (strides "
                                f"{YOLOX_STRIDES}), this one {len(boxes)}")  # fmt: skip
        boxes[:, :2] = (boxes[:, :2] + grid) * stride
        boxes[:, 2:] = np.exp(np.clip(boxes[:, 2:], None, 30.0)) * stride
    return boxes, out[:, 4] * out[:, 5 + PERSON]


class OnnxDetector:
    """A YOLOv8 or YOLOX ONNX person detector run with onnxruntime (see the module doc).

    Args:
        path: the .onnx file.
        score_threshold: keep person scores >= this.
        iou_threshold: NMS overlap.
        yolox_raw: for YOLOX: raw (True) or decoded (False) boxes; None = decide from the values.
        providers: onnxruntime execution providers (default: CUDA when onnxruntime has it, else CPU).
    """

    def __init__(self, path, score_threshold: float = 0.3, iou_threshold: float = 0.45,
                 yolox_raw: bool | None = None, providers=None):  # fmt: skip
        path = Path(path)
        if not path.is_file():
            raise DetectorError(f"detector {path}: no such file")
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError:
            raise DetectorError("an ONNX detector needs onnxruntime (pip install onnxruntime)") from None
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # not an ONNX file, an unsupported operator
            raise DetectorError(f"detector {path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
        inp = self.session.get_inputs()[0]
        if len(inp.shape) != 4:
            raise DetectorError(f"detector {path}: expected one image input [1, 3, H, W], got {inp.shape}")
        h, w = inp.shape[2:]
        self.input_name = inp.name
        self.input_size = (w if isinstance(w, int) else 640, h if isinstance(h, int) else 640)
        self.path, self.score_threshold, self.iou_threshold = path, score_threshold, iou_threshold
        self.yolox_raw = yolox_raw
        blank = np.zeros((1, 3, self.input_size[1], self.input_size[0]), np.float32)
        out = self.session.run(None, {self.input_name: blank})[0]
        self.layout = self._layout(np.asarray(out))  # "yolov8" or "yolox": from the output's shape

    def __call__(self, image) -> tuple[np.ndarray, np.ndarray]:
        """`image` `[H, W, 3]` RGB uint8 -> (boxes `[N, 4]` x, y, w, h image pixels, scores `[N]`)."""
        padded, scale, (px, py) = letterbox(image, self.input_size, center=self.layout == "yolov8")
        out = self._run(padded)
        if self.layout == "yolov8":
            cxcywh, scores = decode_yolov8(out)
        else:
            cxcywh, scores = decode_yolox(out, self.input_size, self.yolox_raw)
        ok = (scores >= self.score_threshold) & np.isfinite(cxcywh).all(1) & (cxcywh[:, 2:] > 0).all(1)
        cxcywh, scores = cxcywh[ok].astype(np.float64), scores[ok].astype(np.float64)
        cx, cy, w, h = cxcywh.T
        boxes = np.stack([cx - w / 2 - px, cy - h / 2 - py, w, h], 1) / scale  # undo the letterbox
        keep = nms(boxes, scores, self.iou_threshold)
        return boxes[keep].reshape(-1, 4), scores[keep]

    def _run(self, padded) -> np.ndarray:
        if self.layout == "yolov8":
            x = padded.astype(np.float32) / 255.0  # RGB in [0, 1]
        else:
            x = padded[..., ::-1].astype(np.float32)  # BGR in [0, 255]
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.transpose(2, 0, 1)[None])})[0]
        return np.asarray(out)

    def _layout(self, out) -> str:
        if out.ndim != 3 or out.shape[0] != 1 or min(out.shape[1:]) < 5:
            raise DetectorError(f"detector {self.path}: output {list(out.shape)} is neither YOLOv8's "
                                f"[1, 4 + classes, N] nor YOLOX's [1, N, 5 + classes]")  # fmt: skip
        return "yolov8" if out.shape[1] < out.shape[2] else "yolox"


class HOGDetector:
    """OpenCV's HOG people detector (see the module doc).

    Args:
        max_width: frames wider than this are scaled down first (speed; the detector's window is 64 x 128).
        score_threshold: keep SVM scores >= this.
        iou_threshold: NMS overlap (OpenCV's grouping leaves overlapping boxes at neighbouring scales).
        scale: pyramid step.
    """

    def __init__(self, max_width: int = 960, score_threshold: float = 0.0, iou_threshold: float = 0.45,
                 scale: float = 1.05):  # fmt: skip
        if not hasattr(cv2, "HOGDescriptor"):
            raise DetectorError("this OpenCV build has no HOG people detector (OpenCV 5 keeps it in the contrib "
                                "build: pip install opencv-contrib-python-headless); or give boxes or an ONNX "
                                "detector")  # fmt: skip
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor.getDefaultPeopleDetector())
        self.max_width, self.scale = max_width, scale
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold

    def __call__(self, image) -> tuple[np.ndarray, np.ndarray]:
        """`image` `[H, W, 3]` RGB uint8 -> (boxes `[N, 4]` x, y, w, h image pixels, scores `[N]`)."""
        s = min(1.0, self.max_width / image.shape[1])
        small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else image
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        rects, weights = self.hog.detectMultiScale(gray, winStride=(8, 8), padding=(16, 16), scale=self.scale)
        boxes = np.asarray(rects, np.float64).reshape(-1, 4) / s
        scores = np.asarray(weights, np.float64).reshape(-1)
        ok = scores >= self.score_threshold
        boxes, scores = boxes[ok], scores[ok]
        keep = nms(boxes, scores, self.iou_threshold)
        return boxes[keep], scores[keep]


def make_detector(spec="hog", **kwargs):
    """`"hog"` -> HOGDetector(), a path ending in .onnx -> OnnxDetector(path), a callable -> itself."""
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec.lower() == "hog":
        return HOGDetector(**kwargs)
    if isinstance(spec, (str, Path)) and str(spec).lower().endswith(".onnx"):
        return OnnxDetector(spec, **kwargs)
    raise DetectorError(f"detector {spec!r}: expected 'hog', a path to a .onnx file, or a callable")

"""Detection pre- and postprocessing without ultralytics: letterbox, YOLO output decoding, NMS.

Matches what ultralytics does for its exported YOLOv8 / YOLO11 detect heads, so that the service's boxes agree
with ``YOLO(...).predict`` on the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_VALUE = 114  # ultralytics' letterbox grey


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square model input: ``x_in = x_orig * gain + pad``."""

    gain: float
    pad_x: float
    pad_y: float
    width: int  # original image size
    height: int


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """HxW or HxWx3 uint8 -> (size, size, 3) uint8, aspect kept, centred, padded with grey 114."""
    h, w = image.shape[:2]
    gain = min(size / h, size / w)
    new_w, new_h = round(w * gain), round(h * gain)
    resized = image if (new_w, new_h) == (w, h) else resize_linear(image, new_w, new_h)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    out[top : top + new_h, left : left + new_w] = resized if resized.ndim == 3 else resized[..., None]
    return out, Letterbox(gain, left, top, w, h)


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and no antialiasing: OpenCV's INTER_LINEAR, which ultralytics
    trains and predicts with (PIL's bilinear filter widens when shrinking and shifts boxes of weak models).
    Separable: rows, then columns. HxW or HxWxC uint8."""
    h, w = image.shape[:2]
    ys = np.clip((np.arange(height) + 0.5) * (h / height) - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * (w / width) - 0.5, 0, w - 1)
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    extra = (None,) * (image.ndim - 2)
    wy = (ys - y0).astype(np.float32)[(slice(None), None, *extra)]
    wx = (xs - x0).astype(np.float32)[(slice(None), *extra)]
    img = image.astype(np.float32)
    rows = img[y0] + (img[y1] - img[y0]) * wy
    out = rows[:, x0] + (rows[:, x1] - rows[:, x0]) * wx
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def to_input(images: list[np.ndarray]) -> np.ndarray:
    """Letterboxed (S, S, 3) uint8 images -> (N, 3, S, S) float32 in [0, 1]."""
    x = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)).astype(np.float32)
    x *= 1.0 / 255.0
    return x


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        overlaps = iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][overlaps <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (K, 4) xyxy in original pixel coordinates
    scores: np.ndarray  # (K,)
    classes: np.ndarray  # (K,) int


def postprocess(
    output: np.ndarray, boxes_info: list[Letterbox], conf: float, iou_threshold: float, max_det: int = 100
) -> list[Detections]:
    """YOLO detect output (N, 4 + C, A) -> per-image detections in original coordinates.

    Rows 0..3 are cx, cy, w, h in input pixels; rows 4.. the per-class scores. NMS is per class, as ultralytics
    does by default.
    """
    results = []
    for pred, info in zip(output, boxes_info, strict=True):
        pred = pred.T  # (A, 4 + C)
        cls_scores = pred[:, 4:]
        classes = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(pred)), classes]
        keep = scores > conf
        pred, scores, classes = pred[keep], scores[keep], classes[keep]
        cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        # Per-class NMS in one pass: shift each class's boxes far apart.
        offset = classes[:, None].astype(np.float32) * 7680.0
        kept = nms(xyxy + offset, scores, iou_threshold)[:max_det]
        xyxy, scores, classes = xyxy[kept], scores[kept], classes[kept]
        xyxy[:, [0, 2]] = ((xyxy[:, [0, 2]] - info.pad_x) / info.gain).clip(0, info.width)
        xyxy[:, [1, 3]] = ((xyxy[:, [1, 3]] - info.pad_y) / info.gain).clip(0, info.height)
        results.append(Detections(xyxy.astype(np.float32), scores.astype(np.float32), classes.astype(np.int64)))
    return results

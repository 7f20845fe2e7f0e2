"""BlazeFace short-range face detector (MediaPipe's face_detection_short_range.tflite).

Frames of any size are letterboxed to the model's 128x128 square input, so the
face's aspect ratio is kept; boxes come back in the frame's pixels. Anchors and
box decoding follow MediaPipe's face_detection_short_range graph: SSD anchors
with strides (8, 16, 16, 16), fixed anchor size, 2 anchors per cell per layer,
offsets scaled by the 128 px input; overlapping detections are merged by
weighted non-maximum suppression.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from daetalker.assets import asset_path
from daetalker.face.litert import LiteModel

INPUT = 128
SCORE_CLIP = 100.0


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float
    keypoints: np.ndarray  # (6, 2) px: right eye, left eye, nose tip, mouth, right ear, left ear

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


def ssd_anchors() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1]: 16x16x2 at stride 8, then 8x8x6 at stride 16."""
    rows = []
    for stride, per_cell in ((8, 2), (16, 6)):
        grid = INPUT // stride
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 2)
        rows.append(np.repeat(centres, per_cell, axis=0))
    anchors = np.concatenate(rows).astype(np.float32)
    assert anchors.shape == (896, 2)
    return anchors


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (4,) against boxes b (K, 4)."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, thresh: float = 0.3):
    """MediaPipe's weighted NMS: overlapping boxes are averaged, weighted by score."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    out = []
    remaining = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        overlap = (iou(boxes[i], boxes) > thresh) & remaining
        w = scores[overlap][:, None]
        box = (boxes[overlap] * w).sum(0) / w.sum()
        kp = (kps[overlap] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kp, float(scores[i])))
        remaining &= ~overlap
    return out


class FaceDetector:
    """``detect(rgb)`` -> faces sorted by score, boxes in the frame's pixels."""

    def __init__(self, min_score: float = 0.5, nms_threshold: float = 0.3) -> None:
        self.model = LiteModel(asset_path("face_detection_short_range.tflite"))
        self.anchors = ssd_anchors()
        self.min_score = min_score
        self.nms_threshold = nms_threshold

    def _letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """(128,128,3) float in [-1,1], plus scale and padding to map back."""
        h, w = rgb.shape[:2]
        scale = INPUT / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        pad_y, pad_x = (INPUT - nh) // 2, (INPUT - nw) // 2
        canvas = np.zeros((INPUT, INPUT, 3), np.uint8)
        canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = small
        x = canvas.astype(np.float32) / 127.5 - 1.0
        return x, scale, pad_x, pad_y

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, rgb.shape
        x, scale, pad_x, pad_y = self._letterbox(rgb)
        out = self.model(x[None])
        raw = out["regressors"][0]  # (896, 16) offsets in input px
        logits = np.clip(out["classificators"][0, :, 0].astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        cx = raw[:, 0] / INPUT + anchors[:, 0]
        cy = raw[:, 1] / INPUT + anchors[:, 1]
        bw, bh = raw[:, 2] / INPUT, raw[:, 3] / INPUT
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) / INPUT + anchors[:, None, :]
        dets = []
        for box, kp, score in weighted_nms(boxes, kps, scores, self.nms_threshold):
            # normalised letterbox coords -> frame pixels
            bx = (box * INPUT - [pad_x, pad_y, pad_x, pad_y]) / scale
            kp_px = (kp * INPUT - [pad_x, pad_y]) / scale
            dets.append(Detection(tuple(float(v) for v in bx), score, kp_px.astype(np.float32)))
        return dets

    def detect_refined(self, rgb: np.ndarray, small: float = 0.3, context: float = 2.5) -> list[Detection]:
        """Detect, then re-detect small faces on a square crop around each.

        The short-range model sees the whole frame at 128 px, where a face 18%
        of a portrait frame's width is ~13 px wide and its keypoints are coarse;
        a second pass on a crop of ``context`` x the box gives full-resolution
        boxes and keypoints.
        """
        h, w = rgb.shape[:2]
        out = []
        for det in self.detect(rgb):
            if max(det.width, det.height) >= small * max(h, w):
                out.append(det)
                continue
            cx, cy = det.center
            side = max(det.width, det.height) * context
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            s = int(round(side))
            crop = pad_crop(rgb, x0, y0, s)
            inner = self.detect(crop)
            if not inner:
                out.append(det)
                continue
            best = max(inner, key=lambda d: d.score * d.area)
            shift = np.array([x0, y0], np.float32)
            bx = best.box
            out.append(Detection((bx[0] + x0, bx[1] + y0, bx[2] + x0, bx[3] + y0), best.score,
                                 best.keypoints + shift))
        return sorted(out, key=lambda d: -d.score)


def pad_crop(rgb: np.ndarray, x0: int, y0: int, size: int) -> np.ndarray:
    """Square crop ``[y0:y0+size, x0:x0+size]``, zero-padded where it leaves the frame."""
    h, w = rgb.shape[:2]
    out = np.zeros((size, size, 3), rgb.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, w), min(y0 + size, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return out

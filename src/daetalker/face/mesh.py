"""Face Mesh: 468 3-D landmarks (MediaPipe's face_landmark.tflite, 192x192 input).

The model expects a face-centred, upright square crop. ``from_detection``
builds it the way MediaPipe's graph does: the detection box enlarged 1.5x,
squared, and rotated so the eyes are level; landmarks are mapped back to the
frame's pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from daetalker.assets import asset_path
from daetalker.face.detector import Detection
from daetalker.face.litert import LiteModel

INPUT = 192
ROI_SCALE = 1.5

# Landmark indices used across the project (MediaPipe canonical face mesh).
LIP_INNER_UPPER = 13
LIP_INNER_LOWER = 14
FOREHEAD = 10
CHIN = 152
NOSE_TIP = 1
CHEEK_RIGHT = 234  # subject's right, image left
CHEEK_LEFT = 454
MOUTH = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
         78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415]


def roi_from_detection(det: Detection) -> tuple[float, float, float, float]:
    """(cx, cy, side, angle_rad) of MediaPipe's landmark ROI for a detection."""
    (rx, ry), (lx, ly) = det.keypoints[0], det.keypoints[1]
    angle = -math.atan2(-(ly - ry), lx - rx)  # rotate so that the eyes are level
    cx, cy = det.center
    side = max(det.width, det.height) * ROI_SCALE
    return cx, cy, side, angle


def roi_affine(cx: float, cy: float, side: float, angle: float) -> np.ndarray:
    """2x3 affine mapping frame px -> 192x192 model input for a rotated square ROI."""
    s = INPUT / side
    cos, sin = math.cos(angle) * s, math.sin(angle) * s
    # rotate by -angle about the ROI centre, scale, then move the centre to the input centre
    return np.array(
        [[cos, sin, INPUT / 2 - cos * cx - sin * cy], [-sin, cos, INPUT / 2 + sin * cx - cos * cy]],
        dtype=np.float64,
    )


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap over face height (forehead to chin): scale- and distance-free."""
    gap = np.linalg.norm(landmarks[LIP_INNER_LOWER, :2] - landmarks[LIP_INNER_UPPER, :2])
    face = np.linalg.norm(landmarks[CHIN, :2] - landmarks[FOREHEAD, :2])
    return float(gap / max(face, 1e-6))


class FaceMesh:
    def __init__(self) -> None:
        self.model = LiteModel(asset_path("face_landmark.tflite"))

    def _run(self, patch: np.ndarray) -> tuple[np.ndarray, float]:
        """patch uint8 (192,192,3) RGB -> landmarks (468,3) in patch px, presence in [0,1]."""
        x = patch.astype(np.float32)[None] / 255.0
        out = self.model(x)
        lm = out["conv2d_21"].reshape(468, 3)
        presence = 1.0 / (1.0 + math.exp(-float(out["conv2d_31"].reshape(-1)[0])))
        return lm, presence

    def landmarks(self, rgb_crop: np.ndarray) -> tuple[np.ndarray, float]:
        """Landmarks of a face-centred crop of any size, in the crop's pixels."""
        h, w = rgb_crop.shape[:2]
        patch = cv2.resize(rgb_crop, (INPUT, INPUT), interpolation=cv2.INTER_LINEAR)
        lm, presence = self._run(patch)
        lm = lm * np.array([w / INPUT, h / INPUT, w / INPUT], np.float32)
        return lm.astype(np.float32), presence

    def from_detection(self, rgb: np.ndarray, det: Detection) -> tuple[np.ndarray, float]:
        """Landmarks (468,3) in the frame's pixels for one detected face."""
        cx, cy, side, angle = roi_from_detection(det)
        m = roi_affine(cx, cy, side, angle)
        patch = cv2.warpAffine(rgb, m, (INPUT, INPUT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        lm, presence = self._run(patch)
        inv = cv2.invertAffineTransform(m)
        xy = lm[:, :2] @ inv[:, :2].T + inv[:, 2]
        z = lm[:, 2:3] * (side / INPUT)
        return np.concatenate([xy, z], axis=1).astype(np.float32), presence

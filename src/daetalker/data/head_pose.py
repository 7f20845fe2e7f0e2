"""Head pose (yaw, pitch, roll in degrees) from Face Mesh landmarks by PnP.

The 3-D model is a rigid subset of MediaPipe's canonical face mesh (eyes,
nose, forehead, cheekbones; cm, x right, y up, z toward the viewer), so the
jaw and lips, which move with speech, do not leak into pitch. Coordinates
from mediapipe/modules/face_geometry/data/canonical_face_model.obj,
Copyright The MediaPipe Authors, Apache-2.0.

Angles follow the synthetic speaker's convention (synth.motion): camera axes
x right, y up, z toward the viewer; head-to-camera rotation
R = Ry(yaw) Rx(-pitch) Rz(roll); yaw > 0 face turns to the image's right,
pitch > 0 chin up, roll > 0 head tilts counter-clockwise in the image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# (Face Mesh index, x, y, z) in cm.
RIGID_MODEL = np.array([
    (1, 0.000000, -1.126865, 7.475604),
    (2, 0.000000, -2.089024, 6.058267),
    (4, 0.000000, -0.463170, 7.586580),
    (5, 0.000000, 0.365669, 7.242870),
    (6, 0.000000, 2.473255, 5.788627),
    (9, 0.000000, 4.885979, 5.385258),
    (151, 0.000000, 6.545390, 5.027311),
    (168, 0.000000, 3.271027, 5.236015),
    (33, -4.445859, 2.663991, 3.173422),
    (263, 4.445859, 2.663991, 3.173422),
    (133, -1.856432, 2.585245, 3.757904),
    (362, 1.856432, 2.585245, 3.757904),
    (127, -7.743095, 2.364999, -2.005167),
    (356, 7.743095, 2.364999, -2.005167),
    (98, -1.405627, -1.714196, 5.241087),
    (327, 1.405627, -1.714196, 5.241087),
    (117, -5.258659, 0.945811, 2.974312),
    (346, 5.258659, 0.945811, 2.974312),
    (118, -4.432338, 0.722096, 3.522615),
    (347, 4.432338, 0.722096, 3.522615),
    (50, -4.765501, -0.701554, 3.534632),
    (280, 4.765501, -0.701554, 3.534632),
    (36, -2.844939, -0.720868, 4.433130),
    (266, 2.844939, -0.720868, 4.433130),
    (108, -1.619500, 6.599217, 4.921106),
    (337, 1.619500, 6.599217, 4.921106),
    (69, -3.063932, 6.566144, 4.529981),
    (299, 3.063932, 6.566144, 4.529981),
    (104, -4.538641, 6.319907, 3.683424),
    (333, 4.538641, 6.319907, 3.683424),
    (129, -1.785794, -0.978284, 4.850470),
    (358, 1.785794, -0.978284, 4.850470),
    (48, -1.608635, -0.942516, 5.814193),
    (278, 1.608635, -0.942516, 5.814193),
    (101, -3.327324, 0.104863, 4.113860),
    (330, 3.327324, 0.104863, 4.113860),
    (116, -6.465170, 0.937119, 1.689873),
    (345, 6.465170, 0.937119, 1.689873),
    (123, -6.338145, -0.529279, 1.881175),
    (352, 6.338145, -0.529279, 1.881175),
])
MODEL_INDEX = RIGID_MODEL[:, 0].astype(np.int64)
MODEL_POINTS = RIGID_MODEL[:, 1:].astype(np.float64)  # (K, 3)

# OpenCV's camera has y down and z forward; ours (and the synth's) y up, z toward the viewer.
_FLIP = np.diag([1.0, -1.0, -1.0])


def camera_matrix(focal: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]], np.float64)


def euler_from_rotation(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of R = Ry(yaw) Rx(-pitch) Rz(roll) (camera y up, z to viewer)."""
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, r[1, 2]))))
    yaw = math.degrees(math.atan2(r[0, 2], r[2, 2]))
    roll = math.degrees(math.atan2(r[1, 0], r[1, 1]))
    return yaw, pitch, roll


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.deg2rad([yaw, -pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def head_pose(landmarks: np.ndarray, camera: np.ndarray) -> tuple[float, float, float]:
    """landmarks (468, 2+) image px of one face -> (yaw, pitch, roll) degrees."""
    image_points = np.ascontiguousarray(landmarks[MODEL_INDEX, :2], np.float64)
    ok, rvec, tvec = cv2.solvePnP(MODEL_POINTS, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return math.nan, math.nan, math.nan
    r_cv, _ = cv2.Rodrigues(rvec)
    return euler_from_rotation(_FLIP @ r_cv)


def project_model(yaw: float, pitch: float, roll: float, camera: np.ndarray, distance: float = 60.0) -> np.ndarray:
    """Image px (K, 2) of the model posed at ``distance`` cm in front of the camera (tests)."""
    r = _FLIP @ rotation_from_euler(yaw, pitch, roll)  # -> OpenCV camera
    rvec, _ = cv2.Rodrigues(r)
    pts, _ = cv2.projectPoints(MODEL_POINTS, rvec, np.array([0.0, 0.0, distance]), camera, None)
    return pts.reshape(-1, 2)

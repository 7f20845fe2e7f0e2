"""M-LMD: mouth landmark distance between generated and ground-truth frames (method.md section 6).

Landmarks are Face Mesh's (N, 468, 2 or 3) in the pixels of the same fixed face
crop for both videos (``daetalker.face.mesh``); only x, y are used. Per frame:
the mean Euclidean distance over the 40 lip landmarks (``MOUTH``), divided by
the ground truth's face height |landmark 152 (chin) - landmark 10 (forehead)|, so
the number does not depend on crop resolution or distance to the camera. The
score is the mean over frames (a fraction of face height).

DAE-Talker predicts its own head pose, so a generated head is rarely where the
ground-truth head is; by default each frame's lip landmarks are centred on
their own mean first, so M-LMD measures mouth shape, not head position
(``center=False`` keeps the translation in).
"""

from __future__ import annotations

import numpy as np

from daetalker.face.mesh import CHIN, FOREHEAD, MOUTH


def face_height(landmarks: np.ndarray) -> np.ndarray:
    """(N, 468, >=2) -> (N,) forehead-to-chin distance in pixels."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.linalg.norm(lm[:, CHIN, :2] - lm[:, FOREHEAD, :2], axis=1)


def mouth_lmd(pred: np.ndarray, gt: np.ndarray, center: bool = True) -> float:
    """Mean over frames of mean lip-landmark distance / ground-truth face height."""
    p, g = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if p.shape != g.shape or p.ndim != 3 or p.shape[1] != 468:
        raise ValueError(f"expected two (N, 468, 2|3) landmark arrays of one shape, got {p.shape} and {g.shape}")
    size = face_height(g)
    if np.any(size <= 0):
        raise ValueError(f"ground-truth face height is 0 in frame(s) {np.flatnonzero(size <= 0)[:5].tolist()}")
    pm, gm = p[:, MOUTH, :2], g[:, MOUTH, :2]  # (N, 40, 2)
    if center:
        pm = pm - pm.mean(axis=1, keepdims=True)
        gm = gm - gm.mean(axis=1, keepdims=True)
    per_frame = np.linalg.norm(pm - gm, axis=2).mean(axis=1) / size
    return float(per_frame.mean())

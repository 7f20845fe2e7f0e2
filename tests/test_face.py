"""Face detector and mesh wrappers: maths units, and behaviour on real frames."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from daetalker.face.detector import Detection, FaceDetector, iou, pad_crop, ssd_anchors, weighted_nms
from daetalker.face.mesh import FaceMesh, mouth_opening, roi_affine, roi_from_detection


def test_anchors_match_blazeface_layout():
    a = ssd_anchors()
    assert a.shape == (896, 2)
    # first layer: 16x16 cells, two anchors each, row-major from the top-left
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[1], a[0])
    assert np.allclose(a[2], [1.5 / 16, 0.5 / 16])
    # second block: 8x8 cells with 6 anchors each
    assert np.allclose(a[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_iou_and_weighted_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    assert iou(boxes[0], boxes[:1])[0] == pytest.approx(1.0)
    assert iou(boxes[0], boxes[2:])[0] == 0.0
    assert iou(boxes[0], boxes[1:2])[0] == pytest.approx(81 / 119)
    kps = np.zeros((3, 6, 2), np.float32)
    merged = weighted_nms(boxes, kps, np.array([0.9, 0.3, 0.8]), thresh=0.3)
    assert len(merged) == 2
    box, _, score = merged[0]
    assert score == pytest.approx(0.9)
    # score-weighted mean of the two overlapping boxes
    assert box[0] == pytest.approx((0 * 0.9 + 1 * 0.3) / 1.2)


def test_pad_crop_pads_outside_the_frame():
    img = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    out = pad_crop(img, -1, -2, 4)
    assert out.shape == (4, 4, 3)
    assert (out[:2] == 0).all() and (out[:, 0] == 0).all()
    assert (out[2:, 1:] == img[0:2, 0:3]).all()


def test_roi_affine_maps_centre_and_eye_line():
    m = roi_affine(100.0, 50.0, 96.0, math.radians(30))
    centre = m @ np.array([100.0, 50.0, 1.0])
    assert np.allclose(centre, [96, 96])
    # a point on the rotated eye line lands on a horizontal line through the centre
    p = np.array([100 + 10 * math.cos(math.radians(30)), 50 + 10 * math.sin(math.radians(30)), 1.0])
    assert (m @ p)[1] == pytest.approx(96.0, abs=1e-9)
    det = Detection((0, 0, 10, 10), 1.0, np.array([[2, 5], [8, 5], [5, 6], [5, 8], [0, 5], [10, 5]], np.float32))
    cx, cy, side, angle = roi_from_detection(det)
    assert (cx, cy, side) == (5, 5, 15) and angle == pytest.approx(0.0)


def test_no_face_in_noise():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert FaceDetector().detect(noise) == []


def _first_frame(path: Path) -> np.ndarray:
    w, h = map(int, subprocess.check_output(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "csv=p=0", str(path)]).decode().strip().split(",")[:2])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3)


@pytest.mark.real_clips
def test_real_faces_detected_with_landmarks_inside_box(real_clips_dir):
    det, mesh = FaceDetector(), FaceMesh()
    clips = sorted(real_clips_dir.glob("*.mp4"))
    assert clips
    for clip in clips:
        rgb = _first_frame(clip)
        faces = det.detect_refined(rgb)
        assert faces, clip.name
        face = faces[0]
        lm, presence = mesh.from_detection(rgb, face)
        assert presence > 0.9, clip.name
        # eyes keypoints sit inside the box, landmarks near it, mouth opening plausible
        x0, y0, x1, y1 = face.box
        pad = 0.25 * face.width
        assert ((lm[:, 0] > x0 - pad) & (lm[:, 0] < x1 + pad)).all(), clip.name
        assert ((lm[:, 1] > y0 - pad) & (lm[:, 1] < y1 + pad)).all(), clip.name
        assert 0.0 <= mouth_opening(lm) < 0.3


@pytest.fixture
def real_clips_dir() -> Path:
    root = os.environ.get("DAETALKER_REAL_CLIPS")
    if not root or not Path(root).is_dir():
        pytest.skip("DAETALKER_REAL_CLIPS is not set")
    return Path(root)

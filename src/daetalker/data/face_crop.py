"""One fixed square crop per clip segment, from the faces found in every frame.

DAE-Talker keeps head motion in the frames (method.md section 3), so there is
no per-frame alignment: the crop is the union of the speaker's face boxes over
a segment plus a margin. Faces are linked into tracks across frames; the
speaker is the track that is largest and most present (other tracks are only
counted). When the speaker's face wanders further than ``max_head_motion``
face sizes (a moving camera, a cut), a new segment with its own box starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

MAX_GAP = 12  # frames a track may go undetected and still continue (0.5 s)
MIN_TRACK = 12  # a second track must last this long to take over from the first


@dataclass
class FrameFaces:
    """Detections of one frame, in source pixels."""

    boxes: np.ndarray  # (k, 4) x0, y0, x1, y1
    scores: np.ndarray  # (k,)
    keypoints: np.ndarray  # (k, 6, 2)

    @classmethod
    def empty(cls) -> "FrameFaces":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2), np.float32))


class FaceLog:
    """Detections of every frame in growable arrays, at most ``K`` per frame (by score).

    About 300 bytes a frame, so the detection pass of a long clip stays small;
    ``n_faces`` keeps the true count of faces per frame.
    """

    K = 4

    def __init__(self, capacity: int = 1024) -> None:
        self.boxes = np.zeros((capacity, self.K, 4), np.float32)
        self.scores = np.zeros((capacity, self.K), np.float32)
        self.keypoints = np.zeros((capacity, self.K, 6, 2), np.float32)
        self.n_faces = np.zeros(capacity, np.int32)
        self.n = 0

    def append(self, faces: FrameFaces) -> None:
        if self.n == len(self.n_faces):  # double the arrays
            for name in ("boxes", "scores", "keypoints", "n_faces"):
                old = getattr(self, name)
                new = np.zeros((2 * len(old), *old.shape[1:]), old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        order = np.argsort(-faces.scores, kind="stable")[: self.K]
        k = len(order)
        self.boxes[self.n, :k] = faces.boxes[order]
        self.scores[self.n, :k] = faces.scores[order]
        self.keypoints[self.n, :k] = faces.keypoints[order]
        self.n_faces[self.n] = len(faces.scores)
        self.n += 1

    @classmethod
    def of(cls, frames: list[FrameFaces]) -> "FaceLog":
        log = cls(max(1, len(frames)))
        for f in frames:
            log.append(f)
        return log

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[FrameFaces]:
        return (self[t] for t in range(self.n))

    def __getitem__(self, t: int) -> FrameFaces:
        if not 0 <= t < self.n:
            raise IndexError(t)
        k = min(int(self.n_faces[t]), self.K)
        return FrameFaces(self.boxes[t, :k], self.scores[t, :k], self.keypoints[t, :k])


@dataclass
class Track:
    frames: list[int] = field(default_factory=list)
    index: list[int] = field(default_factory=list)  # detection index within each frame
    weight: float = 0.0  # sum of box areas: large and present for long

    def last_box(self, faces: FaceLog) -> np.ndarray:
        return faces.boxes[self.frames[-1], self.index[-1]]


@dataclass
class Speaker:
    """The speaker's face per frame (NaN / 0 where not found) and how many faces were seen."""

    boxes: np.ndarray  # (N, 4) float, NaN when the speaker was not detected
    scores: np.ndarray  # (N,) 0 when not detected
    keypoints: np.ndarray  # (N, 6, 2) NaN when not detected
    n_faces: np.ndarray  # (N,) int, faces detected in the frame (speaker included)

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.boxes[:, 0])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _near(a: np.ndarray, b: np.ndarray) -> float:
    """IoU, or a proximity score for a fast-moving face that no longer overlaps itself."""
    iou = _iou(a, b)
    if iou > 0:
        return iou
    side = max(a[2] - a[0], a[3] - a[1], 1e-6)
    dist = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    return max(0.0, 0.1 * (1 - dist / (0.5 * side)))


def build_tracks(faces: FaceLog, min_link: float = 0.05) -> list[Track]:
    """Greedy frame-to-frame linking by overlap; a track survives MAX_GAP missed frames."""
    tracks: list[Track] = []
    for t in range(len(faces)):
        ff = faces[t]
        live = [tr for tr in tracks if t - tr.frames[-1] <= MAX_GAP]
        pairs = sorted(((_near(tr.last_box(faces), ff.boxes[i]), j, i)
                        for j, tr in enumerate(live) for i in range(len(ff.scores))), reverse=True)
        used_t, used_d = set(), set()
        for score, j, i in pairs:
            if score < min_link or j in used_t or i in used_d:
                continue
            used_t.add(j), used_d.add(i)
            live[j].frames.append(t), live[j].index.append(i)
        for i in range(len(ff.scores)):
            if i not in used_d:
                tracks.append(Track([t], [i]))
    for tr in tracks:
        b = faces.boxes[tr.frames, tr.index]  # (len, 4)
        tr.weight = float(np.sum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
    return tracks


def pick_speaker(faces: FaceLog) -> Speaker:
    """The heaviest track is the speaker; a later track joins only where the speaker is
    absent (a cut to another shot of the same speaker), never to fill single-frame gaps."""
    n = len(faces)
    boxes = np.full((n, 4), np.nan, np.float32)
    kps = np.full((n, 6, 2), np.nan, np.float32)
    scores = np.zeros(n, np.float32)
    owner = np.full(n, -1)
    tracks = sorted(build_tracks(faces), key=lambda tr: -tr.weight)
    for k, tr in enumerate(tracks):
        frames = np.array(tr.frames)
        if k > 0:
            if len(frames) < MIN_TRACK:
                continue
            span = owner[frames.min() : frames.max() + 1]
            if (span >= 0).mean() > 0.1:  # it lives beside the speaker: someone else
                continue
        for t, i in zip(tr.frames, tr.index):
            if owner[t] < 0:
                owner[t] = k
                boxes[t], kps[t], scores[t] = faces.boxes[t, i], faces.keypoints[t, i], faces.scores[t, i]
    return Speaker(boxes, scores, kps, faces.n_faces[:n].astype(np.int64))


def split_segments(boxes: np.ndarray, max_motion: float) -> list[tuple[int, int]]:
    """[start, end) frame ranges whose face boxes fit in a box of (1 + max_motion) face sizes.

    Frames without a face stay in the segment around them; every frame belongs
    to exactly one segment.
    """
    n = len(boxes)
    cuts = [0]
    union: np.ndarray | None = None
    sides: list[float] = []
    for t in range(n):
        b = boxes[t]
        if np.isnan(b[0]):
            continue
        side = float(max(b[2] - b[0], b[3] - b[1]))
        if union is None:
            union, sides = b.astype(np.float64).copy(), [side]
            continue
        grown = np.array([min(union[0], b[0]), min(union[1], b[1]), max(union[2], b[2]), max(union[3], b[3])])
        face = float(np.mean(sides + [side]))
        if max(grown[2] - grown[0], grown[3] - grown[1]) > (1 + max_motion) * face:
            cuts.append(t)
            union, sides = b.astype(np.float64).copy(), [side]
        else:
            union = grown
            sides.append(side)
    cuts.append(n)
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def crop_box(boxes: np.ndarray, margin: float, lift: float) -> tuple[int, int, int]:
    """(x0, y0, size) of the fixed square crop for the face boxes of one segment.

    The union of the boxes, squared, plus ``margin`` face sizes on each side;
    moved up by ``lift`` face heights because the head extends above the face
    box (hair) more than below it (chin). May leave the frame: ingest pads.
    """
    ok = boxes[~np.isnan(boxes[:, 0])]
    assert len(ok), "crop_box needs at least one face"
    x0, y0 = ok[:, 0].min(), ok[:, 1].min()
    x1, y1 = ok[:, 2].max(), ok[:, 3].max()
    face_w = float(np.median(ok[:, 2] - ok[:, 0]))
    face_h = float(np.median(ok[:, 3] - ok[:, 1]))
    face = max(face_w, face_h)
    size = max(x1 - x0, y1 - y0) + 2 * margin * face
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - lift * face_h
    # Even numbers: ffmpeg then crops 4:2:0 video without converting it to RGB first.
    s = 2 * int(round(size / 2))
    return 2 * int(round((cx - s / 2) / 2)), 2 * int(round((cy - s / 2) / 2)), s


def visible_fraction(x0: int, y0: int, size: int, width: int, height: int) -> float:
    """Share of the crop box that lies inside the source frame (the rest is padding)."""
    w = max(0, min(x0 + size, width) - max(x0, 0))
    h = max(0, min(y0 + size, height) - max(y0, 0))
    return w * h / float(size * size)

"""Head pose, blinks and gaze of the synthetic speaker, per video frame.

Pose convention (degrees, camera looking at the speaker):
  yaw   > 0: the face turns toward the image's right (the speaker's left);
  pitch > 0: the face tilts up (chin up, nose moves up in the image);
  roll  > 0: the head tilts counter-clockwise in the image (top of the head
             moves toward the image's left).
The head rotates about a pivot in the neck, so pitch also moves the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

POSE_CONVENTION = (
    "degrees; yaw>0 face turns toward image right; pitch>0 chin up (nose moves up); "
    "roll>0 head tilts counter-clockwise in the image; rotation R = Ry(yaw) Rx(-pitch) Rz(roll) "
    "about a neck pivot, camera axes x right, y up, z toward the viewer"
)


@dataclass
class Motion:
    yaw: np.ndarray  # (N,) float32 degrees
    pitch: np.ndarray  # (N,)
    roll: np.ndarray  # (N,)
    blink: np.ndarray  # (N,) float32 in [0, 1], 1 = eyes closed
    gaze: np.ndarray  # (N, 2) float32, iris offset in units of the iris radius (x right, y up)
    sway: np.ndarray  # (N, 3) float32 cm, small translation of the head


def _smooth_noise(rng: np.random.Generator, n: int, tau_frames: float) -> np.ndarray:
    """Unit-variance, zero-mean low-passed noise (critically damped, with burn-in)."""
    burn = int(4 * tau_frames) + 1
    x = rng.standard_normal(n + burn)
    a = 1.0 - np.exp(-1.0 / max(tau_frames, 1e-3))
    y = lfilter([a], [1.0, -(1.0 - a)], x)
    y = lfilter([a], [1.0, -(1.0 - a)], y)[burn:]
    # variance of white noise through two cascaded one-poles with pole p = 1 - a
    p = 1.0 - a
    var = a**4 * (1 + p**2) / (1 - p**2) ** 3
    return y / np.sqrt(var)


def _soft_clip(x: np.ndarray, limit: float) -> np.ndarray:
    return limit * np.tanh(x / limit)


def blink_track(rng: np.random.Generator, n: int, fps: int, per_minute: float) -> np.ndarray:
    """Poisson blinks: ~80 ms closing, ~40 ms closed, ~160 ms opening."""
    out = np.zeros(n, np.float64)
    t = np.arange(n) / fps
    rate = per_minute / 60.0
    start = rng.exponential(1.0 / rate) * 0.5 if rate > 0 else np.inf
    while start < n / fps:
        close, hold, open_ = rng.uniform(0.06, 0.1), rng.uniform(0.02, 0.06), rng.uniform(0.12, 0.2)
        depth = rng.uniform(0.85, 1.0)
        u = t - start
        shape = np.where(
            u < 0, 0.0,
            np.where(u < close, u / close,
                     np.where(u < close + hold, 1.0,
                              np.clip(1.0 - (u - close - hold) / open_, 0.0, 1.0))),
        )
        out = np.maximum(out, depth * shape)
        start += close + hold + open_ + rng.exponential(1.0 / rate)
    return out.astype(np.float32)


def head_motion(
    rng: np.random.Generator,
    activity: np.ndarray,
    fps: int,
    pose_std_deg: tuple[float, float, float],
    pose_limit_deg: tuple[float, float, float],
    pose_tau_s: float,
    speech_motion_gain: float,
    blink_per_minute: float,
) -> Motion:
    """Smooth pose that moves more while speaking; nods follow the speech envelope.

    activity: (N,) speech envelope in [0, 1] per frame (e.g. smoothed mouth opening).
    """
    n = len(activity)
    act = lfilter([0.1], [1.0, -0.9], activity.astype(np.float64))  # ~0.4 s envelope
    act = act / max(act.max(), 1e-6)
    gain = (1.0 + speech_motion_gain * act) / (1.0 + 0.5 * speech_motion_gain)
    tau = pose_tau_s * fps
    offsets = rng.normal(0.0, 0.4, 3) * np.asarray(pose_std_deg)  # per-clip resting pose
    yaw = offsets[0] + pose_std_deg[0] * gain * _smooth_noise(rng, n, tau)
    pitch = offsets[1] + pose_std_deg[1] * gain * _smooth_noise(rng, n, tau * 0.8)
    roll = offsets[2] + pose_std_deg[2] * gain * _smooth_noise(rng, n, tau * 1.2)
    # nods: a fast component of the speech envelope drives pitch (emphasis)
    nod = activity - lfilter([0.15], [1.0, -0.85], activity.astype(np.float64))
    pitch = pitch - 0.6 * pose_std_deg[1] * speech_motion_gain * nod / max(np.abs(nod).max(), 1e-6)
    yaw, pitch, roll = (
        _soft_clip(v, lim) for v, lim in zip((yaw, pitch, roll), pose_limit_deg)
    )

    blink = blink_track(rng, n, fps, blink_per_minute)
    # gaze: fixations toward the camera with occasional small saccades
    gaze = np.zeros((n, 2), np.float64)
    i = 0
    while i < n:
        dur = int(rng.uniform(0.6, 2.5) * fps)
        gaze[i : i + dur] = rng.normal(0.0, 0.18, 2)
        i += dur
    sway = 0.35 * np.stack([_smooth_noise(rng, n, tau * 2) for _ in range(3)], axis=1)
    f32 = np.float32
    return Motion(yaw.astype(f32), pitch.astype(f32), roll.astype(f32), blink,
                  gaze.astype(f32), sway.astype(f32))

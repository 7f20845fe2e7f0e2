"""What ffprobe says about a media file, reduced to what ingest needs.

Everything a user can get wrong about an input (empty, not media, no video,
no audio, too short) is raised here as :class:`InputMediaError` with a
``reason`` that becomes the quarantine reason.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from daetalker.errors import InputMediaError


@dataclass(frozen=True)
class MediaInfo:
    path: str
    width: int  # displayed size, after the rotation metadata is applied
    height: int
    rotation: int  # degrees the decoder turns the coded frame (0, 90, 180, 270)
    codec: str
    r_fps: float  # ffprobe's r_frame_rate (the container's base rate)
    avg_fps: float
    variable_fps: bool
    video_start: float  # seconds
    video_duration: float  # seconds of the video stream
    has_audio: bool
    audio_codec: str
    audio_rate: int
    audio_channels: int
    audio_start: float
    audio_duration: float

    def expected_frames(self, fps: int = 25) -> int:
        """Frames at ``fps`` the video stream should give: round(duration x fps)."""
        return round(self.video_duration * fps)


def _fps(text: str | None) -> float:
    try:
        f = Fraction(text or "0/1")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(f) if f.denominator else 0.0


def _float(value: object, default: float = 0.0) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _rotation(stream: dict) -> int:
    """Display rotation from the side data (new ffmpeg) or the ``rotate`` tag (old muxers)."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(round(_float(side["rotation"]))) % 360
    return int(round(_float((stream.get("tags") or {}).get("rotate", 0)))) % 360


def run_ffprobe(path: Path) -> dict:
    cmd = ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["ffprobe failed"])[-1]
        raise InputMediaError(path, "unreadable", f"ffprobe: {detail}",
                              "re-export the file with a standard tool (ffmpeg, a video editor)")
    return json.loads(proc.stdout or "{}")


def probe(path: Path) -> MediaInfo:
    """ffprobe ``path``; :class:`InputMediaError` when it holds no usable video."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise InputMediaError(path, "empty_file", "the file has zero bytes", "copy the file again")
    data = run_ffprobe(path)
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    # Cover art is a video stream too; it is a single attached picture, not video.
    video = [s for s in streams if s.get("codec_type") == "video"
             and not (s.get("disposition") or {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not video:
        kind = "an audio-only file" if audio else "no video or audio stream"
        raise InputMediaError(path, "no_video_stream", f"{kind}; preprocess needs video of the speaker",
                              "give the video file, not the extracted audio")
    v = video[0]
    rotation = _rotation(v)
    w, h = int(v.get("width") or 0), int(v.get("height") or 0)
    if rotation in (90, 270):
        w, h = h, w
    fmt_duration = _float(fmt.get("duration"))
    v_duration = _float(v.get("duration"), fmt_duration)
    r_fps, avg_fps = _fps(v.get("r_frame_rate")), _fps(v.get("avg_frame_rate"))
    a = audio[0] if audio else {}
    info = MediaInfo(
        path=str(path),
        width=w,
        height=h,
        rotation=rotation,
        codec=str(v.get("codec_name", "?")),
        r_fps=r_fps,
        avg_fps=avg_fps,
        variable_fps=bool(r_fps and avg_fps and abs(r_fps - avg_fps) > 0.01 * r_fps),
        video_start=_float(v.get("start_time")),
        video_duration=v_duration,
        has_audio=bool(audio),
        audio_codec=str(a.get("codec_name", "")),
        audio_rate=int(_float(a.get("sample_rate"))),
        audio_channels=int(_float(a.get("channels"))),
        audio_start=_float(a.get("start_time")),
        audio_duration=_float(a.get("duration"), fmt_duration) if audio else 0.0,
    )
    if w <= 0 or h <= 0:
        raise InputMediaError(path, "unreadable", f"video stream {info.codec} has no frame size",
                              "re-encode the video, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
    return info


def check_usable(info: MediaInfo, min_seconds: float, max_audio_gap_s: float) -> None:
    """Refuse inputs that cannot give aligned training data, before any decoding."""
    path = info.path
    if not info.has_audio:
        raise InputMediaError(path, "no_audio_stream", "the video has no audio stream",
                              "use the recording with its sound track")
    if info.video_duration < min_seconds:
        raise InputMediaError(path, "too_short", f"{info.video_duration:.2f} s of video < {min_seconds} s",
                              "use clips of at least a second")
    video_end = info.video_start + info.video_duration
    audio_end = info.audio_start + info.audio_duration
    if audio_end < video_end - max_audio_gap_s:
        raise InputMediaError(
            path, "audio_short",
            f"audio ends at {audio_end:.2f} s, video at {video_end:.2f} s (> {max_audio_gap_s} s gap)",
            "use a recording whose sound covers the whole video, or cut the video to the audio")

"""Streaming decode with the ffmpeg binary: 25 fps RGB frames and 16 kHz mono audio.

Both streams are put on one timeline that starts at 0 (the container's start):
the ``fps`` filter pads or trims the video to start at t=0 and ``aresample``
does the same for audio, so video frame i covers audio samples
[640 i, 640 (i+1)) whatever the source's frame rate (constant or variable) or
stream start offsets. ffmpeg applies the rotation metadata itself (autorotate),
so frames come out in display orientation.

Frames are read from a pipe one at a time and audio goes to a temporary file,
so memory does not grow with the clip's length.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from daetalker.data.probe import MediaInfo
from daetalker.errors import InputMediaError

FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error"]


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled down so the longer side is at most ``max_side`` (never up)."""
    s = min(1.0, max_side / max(width, height))
    return max(1, round(width * s)), max(1, round(height * s))


def timeline_filter(fps: int) -> str:
    # start_time=0: duplicate the first frame if video starts after the container,
    # drop frames with negative timestamps; constant output rate from here on.
    return f"fps={fps}:start_time=0"


def crop_filter(info: MediaInfo, x0: int, y0: int, size: int, out: int) -> str:
    """Square box ``[x0, x0+size) x [y0, y0+size)`` in display px, black outside the frame, scaled to ``out``."""
    w, h = info.width, info.height
    pl, pt = max(0, -x0), max(0, -y0)
    pr, pb = max(0, x0 + size - w), max(0, y0 + size - h)
    # 4:2:0 video can only be padded and cropped at even offsets: with any odd number
    # convert to RGB first (slower), otherwise crop the decoded planes directly.
    parts = [] if all(v % 2 == 0 for v in (w, h, x0, y0, size)) else ["format=rgb24"]
    if pl or pt or pr or pb:
        parts.append(f"pad={w + pl + pr}:{h + pt + pb}:{pl}:{pt}:black")
    parts.append(f"crop={size}:{size}:{x0 + pl}:{y0 + pt}:exact=1")
    parts.append(f"scale={out}:{out}:flags=area")
    return ",".join(parts)


def iter_frames(
    info: MediaInfo,
    size: tuple[int, int],
    fps: int = 25,
    vf: str | None = None,
    start_frame: int = 0,
    n_frames: int | None = None,
    threads: int = 0,
) -> Iterator[np.ndarray]:
    """Yield uint8 (h, w, 3) RGB frames of the 25 fps timeline, one at a time.

    ``size`` is the output (w, h): with ``vf`` None the whole frame is scaled to
    it; otherwise ``vf`` must produce it. ``start_frame``/``n_frames`` select a
    range of the 25 fps timeline (the segments of a clip). Raises
    :class:`InputMediaError` ("decode_error") when ffmpeg fails before any frame.
    """
    w, h = size
    chain = [timeline_filter(fps)]
    if start_frame or n_frames is not None:
        end = "" if n_frames is None else f":end_frame={start_frame + n_frames}"
        chain.append(f"trim=start_frame={start_frame}{end},setpts=PTS-STARTPTS")
    if vf is not None:
        chain.append(vf)
    elif (w, h) != (info.width, info.height):
        chain.append(f"scale={w}:{h}:flags=bilinear")
    cmd = FFMPEG + ["-threads", str(threads), "-i", info.path, "-map", "0:v:0", "-an", "-sn",
                    "-vf", ",".join(chain), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = w * h * 3
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, bufsize=frame_bytes)
        _grow_pipe(proc.stdout, 4 * frame_bytes)
        count = 0
        try:
            assert proc.stdout is not None
            while True:
                frame = np.empty((h, w, 3), np.uint8)
                got = proc.stdout.readinto(memoryview(frame).cast("B"))
                if got < frame_bytes:  # end of stream (a torn last frame is dropped)
                    break
                count += 1
                yield frame
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
        if count == 0 and (proc.returncode or message):
            raise InputMediaError(info.path, "decode_error", f"ffmpeg decoded no frame: {message[-300:]}",
                                  "re-encode the video, e.g. ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4")


def _grow_pipe(stream, size: int) -> None:
    """Let ffmpeg decode a few frames ahead of the reader (Linux; 64 KiB by default)."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), 1031, min(size, 1 << 20))  # F_SETPIPE_SZ, capped by pipe-max-size
    except (ImportError, OSError, AttributeError):
        pass


def start_audio(info: MediaInfo, dst: Path, sample_rate: int = 16000) -> subprocess.Popen:
    """Start decoding the first audio stream to mono float32 raw samples at ``dst``.

    The samples start at the container's t=0 (silence is inserted when audio
    starts late), on the same timeline as :func:`iter_frames`. It runs beside
    the video pass; :func:`finish_audio` waits for it.
    """
    af = f"aresample={sample_rate}:async=1:first_pts=0"
    cmd = FFMPEG + ["-i", info.path, "-map", "0:a:0", "-vn", "-sn", "-ac", "1", "-af", af,
                    "-f", "f32le", "-acodec", "pcm_f32le", "-y", str(dst)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_audio(proc: subprocess.Popen, info: MediaInfo, dst: Path) -> int:
    """Wait for :func:`start_audio`; the number of samples written."""
    _, err = proc.communicate()
    n = Path(dst).stat().st_size // 4 if Path(dst).exists() else 0
    if proc.returncode != 0 or n == 0:
        raise InputMediaError(info.path, "audio_decode_error",
                              f"ffmpeg could not decode the audio: {err.decode(errors='replace').strip()[-300:]}",
                              "re-encode the audio, e.g. ffmpeg -i IN -c:v copy -c:a aac OUT.mp4")
    return n


def extract_audio(info: MediaInfo, dst: Path, sample_rate: int = 16000) -> int:
    """Decode the audio to ``dst`` (see :func:`start_audio`) and return the sample count."""
    return finish_audio(start_audio(info, dst, sample_rate), info, dst)

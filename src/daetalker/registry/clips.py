"""One clip of a request: audio bytes in, mp4 bytes out, in a private folder removed afterwards.

What the served pyfunc (:mod:`daetalker.registry.pyfunc`) does with each row.
A request names no path on the server: the audio arrives as base64, is written
into a fresh temporary folder, decoded there and rendered there; the mp4 comes
back as base64 and the folder is deleted. Pose sources that read files
(``reference:DIR``, ``FILE.csv``) are for in-process use only.

ffmpeg reads the upload through a list of demuxers that never open another
file or URL (no playlists, concat lists, image sequences or network
protocols) and stops decoding just past the audio limit, so a small file that
decodes to hours of audio costs one limit's worth of work before it is refused.
"""

from __future__ import annotations

import base64
import binascii
import math
import numbers
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from daetalker.data.ingest import FFMPEG
from daetalker.errors import DaetalkerError
from daetalker.generate.pose import PREDICTED
from daetalker.timebase import FPS

COLUMNS = ("audio",)
OPTIONAL_COLUMNS = ("pose", "steps", "seed")
PATH_COLUMNS = ("audio_path", "out_path")  # the in-process batch entry's columns, refused over the wire
# Demuxers for audio/video files that hold their own data; each reads only the file it is given.
DEMUXERS = ("wav,w64,mp3,flac,ogg,matroska,webm,mov,mp4,m4a,3gp,3g2,mj2,aac,aiff,caf,au,amr,ac3,eac3,"
            "mpegts,mpeg,avi,asf,flv,opus")  # fmt: skip
SERVED_POSES = "predicted, predicted-motion or constant:YAW,PITCH,ROLL (degrees)"


class ClipError(DaetalkerError, MlflowException):
    """A request the model refuses: ``field`` names the part of it, ``status`` the HTTP answer.

    Also an ``MlflowException``, so MLflow's own scoring server answers it with the message
    and no stack trace.
    """

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        self.field = field
        self.status = status
        MlflowException.__init__(self, f"{field}: {message}", error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class ClipLimits:
    max_audio_seconds: float = 30.0  # all rows of one call together
    max_clips: int = 4


@dataclass(frozen=True)
class ClipRequest:
    audio: bytes
    pose: str = "predicted"
    steps: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Clip:
    video: bytes  # the mp4
    n_frames: int
    duration_s: float  # of the video: n_frames / 25 fps


def cell(row: Any, key: str) -> Any:
    """``row[key]``, with a missing column, None and NaN (pandas' empty cell) all read as None."""
    v = row.get(key) if hasattr(row, "get") else None
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def _integer(row: Any, key: str, i: int, lo: int, hi: int = 2**63 - 1) -> int | None:
    v = cell(row, key)
    if v is None:
        return None
    try:  # JSON allows 1e400 and 10**400: refused here, not as an overflow deep inside
        whole = not isinstance(v, bool) and isinstance(v, numbers.Real) and float(v).is_integer()
    except OverflowError:
        whole = False
    if not whole or not lo <= int(v) <= hi:
        raise ClipError(f"row {i}: {key}", f"must be a whole number in [{lo}, {hi}], got {str(v)[:40]!r}")
    return int(v)


def _audio(row: Any, i: int) -> bytes:
    text = cell(row, "audio")
    if not isinstance(text, str) or not text:
        raise ClipError(f"row {i}: audio", "missing: send the audio file's bytes as base64 text")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ClipError(f"row {i}: audio", "not base64 (fix: send base64.b64encode(file bytes).decode())") from None
    if not data:
        raise ClipError(f"row {i}: audio", "empty: send a recording with speech in it")
    return data


def _pose(row: Any, i: int) -> str:
    pose = cell(row, "pose")
    pose = "predicted" if pose is None else str(pose).strip()
    if pose not in PREDICTED and not pose.startswith("constant:"):
        raise ClipError(f"row {i}: pose", f"{pose[:60]!r} is not served: use {SERVED_POSES}; pose files and "
                        "reference clips are read only in-process")  # fmt: skip
    return pose


def parse_rows(frame: Any, limits: ClipLimits) -> list[ClipRequest]:
    """The clips of a model input DataFrame; refuses unknown or path columns and too many rows."""
    columns = [str(c) for c in frame.columns]
    paths = [c for c in columns if c in PATH_COLUMNS]
    if paths:
        raise ClipError(f"column(s) {paths}", "paths are not accepted: send the audio bytes as base64 in `audio`; "
                        "the video comes back in the answer")  # fmt: skip
    unknown = [c for c in columns if c not in COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise ClipError(f"column(s) {unknown}", f"unknown; expected {COLUMNS} and optional {OPTIONAL_COLUMNS}")
    if "audio" not in columns or len(frame) == 0:
        raise ClipError("audio", "no clip in the request: send at least one row with `audio` (base64)")
    if len(frame) > limits.max_clips:
        raise ClipError("rows", f"{len(frame)} clips in one request; this server takes at most {limits.max_clips}",
                        413)  # fmt: skip
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        out.append(ClipRequest(_audio(row, i), _pose(row, i), _integer(row, "steps", i, 1),
                               _integer(row, "seed", i, 0) or 0))  # fmt: skip
    return out


def decode_upload(data: bytes, work: Path, sample_rate: int, left_s: float, limit_s: float,
                  field: str) -> tuple[Path, float]:
    """Write ``data`` into ``work`` and decode its first audio stream to a mono PCM wav of at most
    ``left_s`` seconds (+ one frame, to tell "longer"); returns the wav and its seconds."""
    import soundfile as sf

    upload, wav = work / "upload", work / "audio.wav"
    upload.write_bytes(data)
    cmd = FFMPEG + ["-format_whitelist", DEMUXERS, "-protocol_whitelist", "file", "-i", f"file:{upload}",
                    "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sample_rate),
                    "-t", f"{left_s + 1.0 / FPS:.3f}", "-c:a", "pcm_s16le", "-f", "wav", "-y", f"file:{wav}"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    except subprocess.TimeoutExpired:
        raise ClipError(field, "decoding took over 120 s; fix: send a plain wav or mp3", 422) from None
    finally:
        upload.unlink()
    if proc.returncode != 0 or not wav.is_file():
        lines = proc.stderr.decode(errors="replace").replace(str(upload), "upload").strip().splitlines()
        raise ClipError(field, f"not audio that this server reads ({(lines or ['no audio stream'])[-1][:160]}); "
                        "fix: send wav, mp3, flac, ogg/opus, m4a or a video file with sound", 422)  # fmt: skip
    seconds = sf.info(str(wav)).frames / sample_rate
    if seconds > left_s:
        raise ClipError(field, f"the request's audio is longer than this server's limit of {limit_s:g} s "
                        "(fix: split it and send the parts one by one)", 413)  # fmt: skip
    if seconds * FPS < 1:
        raise ClipError(field, f"{seconds:.3f} s of audio is shorter than one video frame (0.04 s)", 422)
    return wav, seconds


def render_clips(talker: Any, clips: list[ClipRequest], limits: ClipLimits, deadline: float | None = None) -> list[Clip]:
    """Render each clip with the loaded ``talker`` (``generate.model.Talker``) in the request's private
    temp folder (mode 0700, removed on return); every clip's audio is decoded and measured first."""
    with tempfile.TemporaryDirectory(prefix="daetalker-request-") as tmp:
        wavs, left = [], limits.max_audio_seconds
        for i, clip in enumerate(clips):
            work = Path(tmp) / f"clip-{i}"
            work.mkdir()
            wav, seconds = decode_upload(clip.audio, work, talker.config.preprocess.sample_rate, left,
                                         limits.max_audio_seconds, f"row {i}: audio")  # fmt: skip
            wavs.append(wav)
            left -= seconds
        return [_render(talker, clip, wav, i, deadline) for i, (clip, wav) in enumerate(zip(clips, wavs))]


def _render(talker: Any, clip: ClipRequest, wav: Path, i: int, deadline: float | None) -> Clip:
    from daetalker.generate.video import GenerationTimeout, render_video

    try:
        r = render_video(talker, wav, wav.parent / "video.mp4", pose=clip.pose, steps=clip.steps, seed=clip.seed,
                         progress=False, deadline=deadline)  # fmt: skip
    except GenerationTimeout:
        raise
    except DaetalkerError as e:  # a bad pose or step count: say so without the server's paths
        raise ClipError(f"row {i}", str(e).replace(str(wav.parent), "<request>")) from None
    return Clip(r.path.read_bytes(), r.n_frames, r.n_frames / FPS)

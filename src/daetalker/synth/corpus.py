"""A synthetic speaker corpus: clips that look like real recordings of one person.

For each clip ``clip_XXXX``: an H.264/AAC ``.mp4`` (25 fps), the 16 kHz mono
PCM16 ``.wav`` and a ``.parquet`` of per-frame ground truth. ``corpus.json``
lists the clips with the seed and config.

Determinism: the speaker is drawn from ``[seed, SPEAKER_STREAM]`` and clip i
from ``[seed, CLIP_STREAM, i]`` (numpy ``Generator``, no global RNG; spawned
into a speech and a motion stream), and each clip's speech is synthesised in a
fresh process (see ``sentences``), so a seed reproduces identical wav bytes,
labels and frames before encoding.

Frame i is the speaker's state over the audio window
[i * 640, (i + 1) * 640) samples (mouth averaged over the window, pose at its
centre); ``time_s`` is the frame's presentation time i / fps.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from daetalker.config.base import to_dict
from daetalker.config.synth import SynthConfig
from daetalker.errors import DaetalkerError
from daetalker.hashing import sha256_file
from daetalker.synth.face_render import FaceRenderer, FrameState
from daetalker.synth.motion import POSE_CONVENTION, Motion, head_motion
from daetalker.synth.sentences import speak_clip
from daetalker.synth.speaker import Speaker, draw_speaker
from daetalker.synth.visemes import MouthTrack, mouth_track, segments_from_phonemes

SPEAKER_STREAM = 0x5EA
CLIP_STREAM = 0xC11
COLUMNS = ("frame", "time_s", "yaw", "pitch", "roll", "mouth_open", "viseme", "blink", "voiced")


@dataclass
class Clip:
    """One clip's audio and per-frame state, before rendering."""

    index: int
    audio: np.ndarray  # (N * samples_per_frame,) int16 at cfg.sample_rate
    mouth: MouthTrack
    motion: Motion
    sentences: list[str] = field(default_factory=list)
    fps: int = 25

    @property
    def name(self) -> str:
        return f"clip_{self.index:04d}"

    @property
    def n_frames(self) -> int:
        return len(self.mouth.opening)

    def labels(self) -> pd.DataFrame:
        n = self.n_frames
        return pd.DataFrame({
            "frame": np.arange(n, dtype=np.int32),
            "time_s": np.arange(n, dtype=np.float64) / self.fps,
            "yaw": self.motion.yaw,
            "pitch": self.motion.pitch,
            "roll": self.motion.roll,
            "mouth_open": self.mouth.opening,
            "viseme": pd.Series(self.mouth.viseme, dtype=str),
            "blink": self.motion.blink,
            "voiced": self.mouth.voiced,
        })

    def states(self) -> Iterator[FrameState]:
        m, mo = self.motion, self.mouth
        for i in range(self.n_frames):
            yield FrameState(
                yaw=float(m.yaw[i]), pitch=float(m.pitch[i]), roll=float(m.roll[i]),
                opening=float(mo.opening[i]), spread=float(mo.spread[i]), teeth=float(mo.teeth[i]),
                blink=float(m.blink[i]),
                gaze=(float(m.gaze[i, 0]), float(m.gaze[i, 1])),
                sway=(float(m.sway[i, 0]), float(m.sway[i, 1]), float(m.sway[i, 2])),
            )


def speaker_for(seed: int) -> Speaker:
    return draw_speaker(np.random.default_rng([seed, SPEAKER_STREAM]))


def make_clip(cfg: SynthConfig, seed: int, index: int, target_seconds: float) -> Clip:
    """Speech (sentences until ``target_seconds``), mouth track and head motion of one clip."""
    speech_seed, motion_seed = np.random.SeedSequence([seed, CLIP_STREAM, index]).spawn(2)
    script = speak_clip(cfg, speech_seed, target_seconds)
    rng = np.random.default_rng(motion_seed)

    native = script.spoken[0].sample_rate
    pieces = [np.zeros(int(round(script.lead * native)), np.float32)]
    phonemes: list[tuple[float, str]] = []
    loudness: list[float] = []  # per phoneme: its sentence's gain
    cursor = len(pieces[0]) / native
    for sp in script.spoken:
        pieces.append(sp.samples.astype(np.float32) / 32768.0 * sp.gain)
        phonemes += [(cursor + t, name) for t, name in sp.phonemes]
        loudness += [sp.gain] * len(sp.phonemes)
        pieces.append(np.zeros(int(round(sp.pause_after * native)), np.float32))
        cursor += (len(sp.samples) + len(pieces[-1])) / native
    wave = np.concatenate(pieces)

    sr = cfg.sample_rate
    g = int(np.gcd(sr, native))
    wave = resample_poly(wave, sr // g, native // g).astype(np.float32)
    per = sr // cfg.fps  # 640 samples per frame at 16 kHz / 25 fps
    n_frames = int(np.ceil(len(wave) / per))
    wave = np.pad(wave, (0, n_frames * per - len(wave)))
    noise = rng.standard_normal(len(wave)).astype(np.float32)
    noise = np.convolve(noise, np.ones(4, np.float32) / 2.0, mode="same")  # a little pinker
    wave += noise * np.float32(10 ** (cfg.noise_dbfs / 20) / max(float(noise.std()), 1e-9))
    peak = float(np.abs(wave).max())
    wave *= np.float32(0.7 / peak if peak > 0 else 1.0)  # -3 dBFS peak, like a normalised recording
    audio = np.clip(np.round(wave * 32767.0), -32768, 32767).astype(np.int16)

    segments = segments_from_phonemes(phonemes, n_frames / cfg.fps)
    mouth = mouth_track(segments, n_frames, cfg.fps, cfg.coarticulation_ms,
                        _segment_emphasis(segments, phonemes, loudness, rng))
    motion = head_motion(rng, mouth.opening, cfg.fps, cfg.pose_std_deg, cfg.pose_limit_deg,
                         cfg.pose_tau_s, cfg.speech_motion_gain, cfg.blink_per_minute)
    return Clip(index=index, audio=audio, mouth=mouth, motion=motion,
                sentences=[sp.text for sp in script.spoken], fps=cfg.fps)


def _segment_emphasis(segments, phonemes, loudness, rng) -> np.ndarray:
    """Per-segment opening factor: louder sentences open wider, plus a per-syllable jitter."""
    starts = np.array([t for t, _ in phonemes]) if phonemes else np.zeros(1)
    out = np.empty(len(segments), np.float64)
    for k, (t0, _, _) in enumerate(segments):
        j = int(np.clip(np.searchsorted(starts, t0 + 1e-6) - 1, 0, max(len(loudness) - 1, 0)))
        gain = loudness[j] if loudness else 1.0  # in [0.79, 1.26] (+-2 dB)
        out[k] = (0.85 + 0.15 * (gain - 0.79) / 0.47) * rng.uniform(0.88, 1.08)
    return out


def render_clip(clip: Clip, speaker: Speaker, size: int) -> np.ndarray:
    """All frames in memory: (N, size, size, 3) uint8 RGB."""
    renderer = FaceRenderer(speaker, size)
    out = np.empty((clip.n_frames, size, size, 3), np.uint8)
    for i, st in enumerate(clip.states()):
        out[i] = renderer.render(st)
    return out


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    tmp = _atomic_path(path)
    sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def write_labels(path: Path, labels: pd.DataFrame) -> None:
    tmp = _atomic_path(path)
    labels.to_parquet(tmp, index=False, engine="pyarrow")
    os.replace(tmp, path)


def encode_video(path: Path, frames: Iterator[np.ndarray], size: int, fps: int, wav: Path,
                 crf: int, preset: str) -> None:
    """Pipe RGB frames into ffmpeg: H.264 yuv420p + AAC 128k, written atomically."""
    tmp = _atomic_path(path)
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", str(fps), "-i", "pipe:0",
        "-i", str(wav),
        "-map", "0:v:0", "-map", "1:a:0",
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p", "-threads", "1",
        "-c:a", "aac", "-b:a", "128k",
        "-movflags", "+faststart", "-f", "mp4", str(tmp),
    ]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise DaetalkerError("ffmpeg not found on PATH (install it with: apt-get install ffmpeg)") from None
    try:
        for frame in frames:
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg died; its stderr says why
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        tmp.unlink(missing_ok=True)
        raise DaetalkerError(f"{path}: ffmpeg failed: {err.strip()[-800:]}")
    os.replace(tmp, path)


def write_clip(clip: Clip, renderer: FaceRenderer, out: Path, cfg: SynthConfig) -> dict:
    """Write one clip's wav, parquet and mp4; return its corpus.json entry."""
    wav = out / f"{clip.name}.wav"
    write_wav(wav, clip.audio, cfg.sample_rate)
    write_labels(out / f"{clip.name}.parquet", clip.labels())
    frames = (renderer.render(st) for st in clip.states())
    encode_video(out / f"{clip.name}.mp4", frames, renderer.size, cfg.fps, wav, cfg.crf, cfg.x264_preset)
    names = {"video": f"{clip.name}.mp4", "audio": f"{clip.name}.wav", "labels": f"{clip.name}.parquet"}
    return {
        "name": clip.name,
        **names,
        "sha256": {key: sha256_file(out / name) for key, name in names.items()},
        "frames": clip.n_frames,
        "seconds": len(clip.audio) / cfg.sample_rate,
        "sentences": clip.sentences,
    }


@dataclass(frozen=True)
class ClipRecord:
    """One written clip, as listed in corpus.json."""

    name: str
    video: Path
    audio: Path
    labels: Path
    frames: int
    duration_s: float


COLUMN_MEANING = {
    "frame": "index of the video frame",
    "time_s": "presentation time of the frame, frame / fps",
    "yaw": "degrees, > 0 face turns toward the image's right",
    "pitch": "degrees, > 0 chin up",
    "roll": "degrees, > 0 head tilts counter-clockwise in the image",
    "mouth_open": "inner-lip distance over its maximum, mean over the frame (0 = lips together)",
    "viseme": "viseme class at the frame centre (sil, PP, FF, TH, DD, kk, CH, SS, nn, RR, aa, E, I, O, U)",
    "blink": "eyelid closure, 0 open .. 1 closed",
    "voiced": "speech (a phoneme, not a pause) at the frame centre",
}


def write_corpus(out: Path, minutes: float, seed: int, cfg: SynthConfig,
                 progress: bool = False) -> list[ClipRecord]:
    """Write about ``minutes`` of one speaker into ``out`` (clips + corpus.json); return the clips."""
    from tqdm import tqdm

    if minutes <= 0:
        raise DaetalkerError(f"--minutes must be > 0, got {minutes}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DaetalkerError(f"{out}: --out must be a folder, but a file of that name exists (pick another path)")
    out.mkdir(parents=True, exist_ok=True)
    kept = _unchanged(out, minutes, seed, cfg)
    if kept is not None:
        return kept  # the same corpus is already there, every file intact: a rerun costs a hash per file
    _remove_stale(out)
    speaker = speaker_for(seed)
    renderer = FaceRenderer(speaker, cfg.size)
    total_target = minutes * 60.0
    entries: list[dict] = []
    done = 0.0
    bar = tqdm(total=round(total_target, 1), unit="s", desc="synth", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s of video, {postfix} [{elapsed}<{remaining}]")
    while done < total_target:
        # the last clip only needs to cover what is left (at least one sentence)
        target = min(cfg.clip_seconds, total_target - done)
        clip = make_clip(cfg, seed, len(entries), target)
        entries.append(write_clip(clip, renderer, out, cfg))
        done += entries[-1]["seconds"]
        bar.set_postfix_str(f"{len(entries)} clips", refresh=False)
        bar.total = max(bar.total, round(done, 1))  # the last clip ends on a whole sentence: past the target
        bar.update(entries[-1]["seconds"])
    bar.close()
    manifest = {
        "format": "daetalker-synth-corpus/1",
        "seed": seed,
        "minutes": minutes,
        "size": cfg.size,
        "fps": cfg.fps,
        "sample_rate": cfg.sample_rate,
        "total_seconds": done,
        "columns": list(COLUMNS),
        "column_meaning": COLUMN_MEANING,
        "pose_convention": POSE_CONVENTION,
        "frame_timing": "frame i covers audio samples [i*sr/fps, (i+1)*sr/fps); time_s = i/fps",
        "speaker": speaker.to_dict(),
        "config": to_dict(cfg),
        "clips": entries,
    }
    path = out / "corpus.json"
    tmp = _atomic_path(path)
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, path)
    return _records(out, entries)


def synth_corpus(out: Path, minutes: float, seed: int, cfg: SynthConfig, progress: bool = True) -> Path:
    """:func:`write_corpus` with a progress bar by default; returns the path of corpus.json."""
    write_corpus(out, minutes, seed, cfg, progress=progress)
    return Path(out) / "corpus.json"


def _records(out: Path, entries: list[dict]) -> list[ClipRecord]:
    return [ClipRecord(e["name"], out / e["video"], out / e["audio"], out / e["labels"], e["frames"], e["seconds"])
            for e in entries]


def _unchanged(out: Path, minutes: float, seed: int, cfg: SynthConfig) -> list[ClipRecord] | None:
    """The clips of ``out/corpus.json`` when it was written for these arguments and every file still
    hashes as recorded; else None (the corpus is written anew)."""
    try:
        manifest = json.loads((out / "corpus.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    wanted = json.loads(json.dumps(to_dict(cfg)))  # as corpus.json stores it (tuples become lists)
    same = (manifest.get("format"), manifest.get("seed"), manifest.get("minutes"), manifest.get("config")) == (
        "daetalker-synth-corpus/1", seed, minutes, wanted)
    entries = manifest.get("clips") or []
    if not same or not entries or not all("sha256" in e for e in entries):
        return None
    for e in entries:
        for key, digest in e["sha256"].items():
            path = out / e[key]
            if not path.is_file() or sha256_file(path) != digest:
                return None
    return _records(out, entries)


def _remove_stale(out: Path) -> None:
    """Delete the clips of an earlier corpus in ``out`` so no stale clip survives a re-run."""
    old = out / "corpus.json"
    if not old.exists():
        return
    try:
        clips = json.loads(old.read_text()).get("clips", [])
    except (OSError, json.JSONDecodeError):
        return
    for c in clips:
        for key in ("video", "audio", "labels"):
            name = c.get(key)
            if isinstance(name, str) and "/" not in name and name.startswith("clip_"):
                (out / name).unlink(missing_ok=True)
    old.unlink()

"""Audio in, talking-face mp4 out (method.md section 5), in bounded memory for any length.

audio -> the speech features the bundle's s2l takes (``s2l.features``: log-mel as
preprocess writes it, or Whisper tiny.en's encoder; ``audio_io``) -> speech2latent in
chunks of ``chunk_seconds`` with ``context_seconds`` of real audio on each side
(only the inner frames are kept) -> un-normalised latents -> DDIM (eta 0) from
ONE shared ``x_T`` for the whole video, ``batch_size`` frames per call -> uint8
frames, resized (bicubic) to ``video_size`` (default 256 px, never below the DAE's
size), piped to ffmpeg (H.264 yuv420p at ``crf``, default 10, + the input audio as
AAC). A small DAE's frames are upscaled and encoded near-losslessly because H.264
quantises the few pixels of their eyes and lips away: on the tiny model's
decodes Face Mesh finds a face in 6% of frames after crf 18 at 64 px, 72% after
crf 18 at 256 px and 92% after crf 10 at 256 px (95% before encoding; real
frames keep 100% in every case; ``bench/video_size.py``, docs/generation.md).
crf 10 at 256 px is about 2.4 kB a frame (0.5 Mbit/s).

The shared ``x_T`` is by default the stochastic subcode of the bundle's reference
frame (a typical training frame, DDIM-inverted with its own z at the same step
count): z carries mouth and pose, x_T the fine detail z leaves out. On the tiny
CPU model a random x_T loses the eyes (Face Mesh finds a face in 43-50% of decoded
frames) and the reference subcode keeps them (93-96%; docs/generation.md).
``noise="random"`` draws x_T from ``seed`` as the paper does.

Sharing ``x_T`` makes each frame a deterministic function of its latent, so a
smooth latent sequence gives a smooth video and identical latents give
identical frames; sampling ``x_T`` per frame flickers. Frames are independent
given ``(x_T, z)``, which is why they decode in batches.

The mp4 is written to a hidden temp name beside ``out`` and renamed onto
``out`` only when ffmpeg succeeded: ``out`` is a whole video or untouched.
Silent audio works and gives a closed-mouth video (with a trained model).
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from daetalker.config.s2l import MAX_MOUTH_GAIN
from daetalker.data.ingest import FFMPEG
from daetalker.diffusion import NoiseSchedule, ddim_invert, ddim_sample, linear_schedule, reference_guided
from daetalker.diffusion.ddim import EpsModel
from daetalker import outputs
from daetalker.errors import DaetalkerError
from daetalker.generate.audio_io import prepare_audio
from daetalker.generate.model import Talker, load_bundle
from daetalker.generate.pose import resolve_pose, sampled_motion
from daetalker.models import DiffusionAutoencoder
from daetalker.models.device import autocast
from daetalker.models.images import to_model_range, to_uint8
from daetalker.models.speech2latent import Speech2Latent
from daetalker.timebase import FPS

__all__ = ["GenerationResult", "GenerationTimeout", "decode_latents", "generate_video", "predict_latents", "reference_latent",
           "reference_noise", "render_video", "shared_noise"]  # fmt: skip
VIDEO_SIZE = 256  # px of the written video unless the DAE is larger
CRF = 10  # x264 constant rate factor: near-lossless (18 is the usual "visually lossless" for real video)
NOISE_MODES = ("reference", "random")
log = logging.getLogger(__name__)


class GenerationTimeout(DaetalkerError):
    """Rendering passed its ``deadline`` (a server's per-request limit); the partial video was removed."""


@dataclass(frozen=True)
class GenerationResult:
    path: Path
    n_frames: int
    seconds: float  # wall time of the whole call
    fps_decode: float  # frames per second of the DDIM decoding alone


def shared_noise(image_size: int, seed: int, device: torch.device | str = "cpu", channels: int = 3) -> torch.Tensor:
    """The one x_T (1, C, R, R) in diffusion space every frame of a video starts from."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn((1, channels, image_size, image_size), generator=g).to(device)


def _eps_fn(dae: DiffusionAutoencoder, bf16: bool) -> EpsModel:
    """What the DDIM loops consume: eps (B, C, R, R) in fp32 from ``dae`` under optional bf16 autocast."""
    device = next(dae.parameters()).device

    def eps(x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with autocast(device, bf16):
            return dae.eps(x, t, z).float()

    return eps


@torch.no_grad()
def reference_latent(
    dae: DiffusionAutoencoder, frame: np.ndarray, *, bf16: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A uint8 (H, W, 3) frame in diffusion space (1, C, R, R) and its semantic latent z (1, D)."""
    device = next(dae.parameters()).device
    with autocast(device, bf16):
        x0 = dae.to_space(to_model_range(frame[None], dae.pixel_size).to(device))  # (1, C, R, R)
        z = dae.encode(x0).float()
    return x0.float(), z


@torch.no_grad()
def reference_noise(
    dae: DiffusionAutoencoder, frame: np.ndarray, *, steps: int, schedule: NoiseSchedule, bf16: bool = False
) -> torch.Tensor:
    """The stochastic subcode x_T (1, C, R, R) of a uint8 (H, W, 3) frame: DDIM inversion with its own z."""
    x0, z = reference_latent(dae, frame, bf16=bf16)
    return ddim_invert(_eps_fn(dae, bf16), x0, z, steps, schedule)


@torch.no_grad()
def predict_latents(
    s2l: Speech2Latent, mel: np.ndarray, n_frames: int, pose: np.ndarray | None, *, chunk_frames: int,
    context_frames: int, pose_offset: np.ndarray | None = None, steer_pose: bool = False, mouth_gain: float = 1.0,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_frame, normalised latents (m, D))`` chunk by chunk, covering frames 0..n_frames-1.

    Each chunk sees ``context_frames`` of audio (and pose) on both sides; audio shorter than one
    chunk runs whole. ``pose`` (n_frames, 3) degrees replaces the predicted pose; ``pose_offset``
    (n_frames, 3) degrees is added to it (with ``pose`` None); ``steer_pose`` pins the pose fed in
    in each latent, ``mouth_gain`` scales the mouth's movement in it (:mod:`daetalker.models.pose_steering`).
    """
    device, k = s2l.feature_mean.device, s2l.k
    assert len(mel) >= k * n_frames and chunk_frames >= 1 and context_frames >= 0
    for a in range(0, n_frames, chunk_frames):
        b = min(n_frames, a + chunk_frames)
        lo, hi = max(0, a - context_frames), min(n_frames, b + context_frames)
        feats = torch.from_numpy(np.array(mel[k * lo : k * hi], np.float32))[None].to(device)  # (1, k*T, F)
        p, off = (None if v is None else torch.from_numpy(np.asarray(v[lo:hi], np.float32))[None].to(device)
                  for v in (pose, pose_offset))  # (1, T, 3) degrees
        out = s2l(feats, pose=p, pose_offset=off, steer_pose=steer_pose, mouth_gain=mouth_gain)
        yield a, out.latent[0, a - lo : b - lo].float()


@torch.no_grad()
def decode_latents(
    dae: DiffusionAutoencoder, z: torch.Tensor, x_T: torch.Tensor, *, steps: int, schedule: NoiseSchedule,
    batch_size: int, bf16: bool = False, clip_x0: bool = True, guide: tuple[torch.Tensor, float] | None = None,
) -> Iterator[torch.Tensor]:
    """DDIM-decode latents z (N, D) from x_T (1, C, R, R) shared, or (N, C, R, R) per frame; yield frame
    batches (B, 3, P, P) in [-1, 1] (decoded by the first stage in latent space).

    ``clip_x0=False`` for an inverted x_T: it lies on the model's own deterministic path.
    ``guide``: (z_ref (1, D), scale) for reference guidance (:mod:`daetalker.diffusion.guidance`).
    """
    device = next(dae.parameters()).device
    assert x_T.shape[0] in (1, len(z)), f"x_T must be (1|N, C, R, R), got {tuple(x_T.shape)}"
    eps = _eps_fn(dae, bf16)
    if guide is not None:
        eps = reference_guided(eps, guide[0].to(device), guide[1])

    for i in range(0, len(z), batch_size):
        zb = z[i : i + batch_size].to(device)
        xb = x_T.expand(len(zb), -1, -1, -1) if x_T.shape[0] == 1 else x_T[i : i + batch_size]
        x0 = ddim_sample(eps, xb.to(device).contiguous(), zb, steps, schedule, clip_x0=clip_x0 and dae.clips_x0)
        with autocast(device, bf16):
            frames = dae.to_pixels(x0)
        yield frames  # outside autocast: the caller's code runs while this generator waits


class _Mp4Writer:
    """ffmpeg reading rgb24 frames on stdin, muxing them with ``audio`` into ``path`` (H.264 + AAC)."""

    def __init__(self, path: Path, size: int, audio: Path, n_frames: int, crf: int = CRF) -> None:
        self.path = path
        self.log = tempfile.TemporaryFile()
        cmd = FFMPEG + [
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", str(FPS), "-i", "pipe:0",
            "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-preset", "veryfast",
            "-crf", str(crf), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-t", f"{n_frames / FPS:.3f}",
            "-movflags", "+faststart", "-f", "mp4", "-y", str(path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log)

    def _error(self) -> DaetalkerError:
        self.log.seek(0)
        err = self.log.read().decode(errors="replace").strip()[-400:]
        return DaetalkerError(f"{self.path}: ffmpeg failed to write the video: {err}")

    def write(self, frames: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError:
            self.proc.wait()
            raise self._error() from None

    def close(self) -> None:
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            raise self._error()
        self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _check_options(out: Path, audio: str | Path, *, noise: str, batch_size: int, chunk_seconds: float,
                   context_seconds: float, video_size: int | None, crf: int) -> None:
    """Refuse bad options and an ``out`` that is not a new .mp4 apart from the inputs, before any work."""
    if batch_size < 1 or chunk_seconds <= 0 or context_seconds < 0:
        raise DaetalkerError("batch_size must be >= 1, chunk_seconds > 0 and context_seconds >= 0")
    if noise not in NOISE_MODES:
        raise DaetalkerError(f"--noise {noise}: must be one of {', '.join(NOISE_MODES)}")
    if video_size is not None and (video_size < 16 or video_size % 2):
        raise DaetalkerError(f"--size {video_size}: must be an even number of pixels >= 16 (H.264 4:2:0)")
    if not 0 <= crf <= 51:
        raise DaetalkerError(f"--crf {crf}: must be in [0, 51] (x264's range; lower is better quality)")
    outputs.require_file_target("--out", out, (".mp4",))  # before minutes of rendering, not after
    outputs.refuse_inputs("--out", out, {"--audio": audio})


def generate_video(
    model: str | Path,
    audio: str | Path,
    out: str | Path,
    *,
    pose: str | None = "predicted",
    steps: int | None = None,
    guidance: float | None = None,
    steer_pose: bool | None = None,
    mouth_gain: float | None = None,
    seed: int = 0,
    noise: str = "reference",
    batch_size: int = 16,
    chunk_seconds: float = 10.0,
    context_seconds: float = 2.0,
    per_frame_noise: bool = False,
    video_size: int | None = None,
    crf: int = CRF,
    device: str | None = None,
    progress: bool = True,
) -> GenerationResult:
    """Load the talker bundle folder ``model`` (verified) and render ``audio`` with it to ``out`` (.mp4).

    A registered ``models:/NAME@ALIAS`` is fetched into a folder by the caller
    (``daetalker.registry.log_model.local_bundle``). ``device``: default CUDA if there is one.
    The other options are :func:`render_video`'s; ``seconds`` of the result includes the loading.
    """
    t0 = time.perf_counter()
    _check_options(Path(out), audio, noise=noise, batch_size=batch_size, chunk_seconds=chunk_seconds,
                   context_seconds=context_seconds, video_size=video_size, crf=crf)  # fmt: skip
    talker = load_bundle(model, device, str(model))
    result = render_video(talker, audio, out, pose=pose, steps=steps, guidance=guidance, steer_pose=steer_pose,
                          mouth_gain=mouth_gain, seed=seed, noise=noise, batch_size=batch_size,
                          chunk_seconds=chunk_seconds, context_seconds=context_seconds,
                          per_frame_noise=per_frame_noise, video_size=video_size, crf=crf,
                          progress=progress)  # fmt: skip
    return replace(result, seconds=time.perf_counter() - t0)


def render_video(
    talker: Talker,
    audio: str | Path,
    out: str | Path,
    *,
    pose: str | None = "predicted",
    steps: int | None = None,
    guidance: float | None = None,
    steer_pose: bool | None = None,
    mouth_gain: float | None = None,
    seed: int = 0,
    noise: str = "reference",
    batch_size: int = 16,
    chunk_seconds: float = 10.0,
    context_seconds: float = 2.0,
    per_frame_noise: bool = False,
    video_size: int | None = None,
    crf: int = CRF,
    progress: bool = True,
    deadline: float | None = None,
) -> GenerationResult:
    """Render ``audio`` with a loaded ``talker`` to ``out`` (.mp4); load once, render many.

    ``pose``: see :mod:`daetalker.generate.pose`; ``steps``: DDIM steps (default ``dae.sample_steps``);
    ``guidance``: reference-guidance scale (default ``dae.guidance``; :mod:`daetalker.diffusion.guidance`);
    ``steer_pose``: pin the pose in each latent (default ``s2l.steer_pose``; :mod:`daetalker.models.pose_steering`);
    ``mouth_gain``: scale the mouth's movement in each latent (default ``s2l.mouth_gain``; same module);
    ``noise``: the shared x_T is the reference frame's subcode (``reference``; bundles without a
    reference frame fall back to random) or drawn from ``seed`` (``random``); ``per_frame_noise``
    samples x_T per frame from ``seed`` (ablation: it flickers); ``video_size``: side of the written
    frames (default: ``VIDEO_SIZE`` or the DAE's size if larger); ``crf``: x264 quality (0-51, lower
    is better); ``deadline``: a ``time.monotonic()`` value past which rendering stops between frame
    batches with :class:`GenerationTimeout` (a server's per-request limit frees its slot).
    """
    t0 = time.perf_counter()
    out = Path(out)
    _check_options(out, audio, noise=noise, batch_size=batch_size, chunk_seconds=chunk_seconds,
                   context_seconds=context_seconds, video_size=video_size, crf=crf)  # fmt: skip
    dcfg = talker.dae_cfg
    steps = dcfg.sample_steps if steps is None else int(steps)
    if not 1 <= steps <= dcfg.timesteps:
        raise DaetalkerError(f"--steps {steps}: must be in [1, {dcfg.timesteps}]")
    guidance = dcfg.guidance if guidance is None else float(guidance)
    if not 0.0 <= guidance <= 10.0:
        raise DaetalkerError(f"--guidance {guidance:g}: must be in [0, 10] (1 = plain DDIM)")
    gain = mouth_gain_of(talker, mouth_gain)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="daetalker-generate-") as work:
        prepared = prepare_audio(Path(audio), Path(work) / "audio", talker.config.preprocess, talker.config.s2l)
        n = prepared.n_frames
        pose_arr, motion = resolve_pose(pose, n), sampled_motion(pose, talker.s2l, n, seed)
        schedule = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
        x_T, inverted, z_ref = _start_noise(talker, noise, per_frame_noise, seed, steps, schedule)
        size = video_size or max(VIDEO_SIZE, talker.dae.pixel_size)
        controls = LatentControls(pose_arr, motion, steers_pose(talker, steer_pose), gain)
        frames = _render_frames(talker, prepared.features(), n, controls, x_T, steps=steps,
                                guide=(z_ref, guidance), schedule=schedule, batch_size=batch_size,
                                chunk_frames=round(chunk_seconds * FPS), context_frames=round(context_seconds * FPS),
                                clip_x0=not inverted, size=size,
                                per_frame_seed=seed if per_frame_noise else None)  # fmt: skip
        decode_s = _write_mp4(_until(frames, deadline), out, Path(audio), n, size, crf, progress)
    return GenerationResult(out, n, time.perf_counter() - t0, n / max(decode_s, 1e-9))


def steers_pose(talker: Talker, steer_pose: bool | None = None) -> bool:
    """Whether rendering moves the latents to the pose fed in: ``steer_pose``, else the bundle's
    ``s2l.steer_pose``, and only where the steering was fitted."""
    wanted = talker.config.s2l.steer_pose if steer_pose is None else bool(steer_pose)
    return wanted and talker.s2l.steering_fitted


def mouth_gain_of(talker: Talker, mouth_gain: float | None = None) -> float:
    """The mouth gain rendering applies: ``mouth_gain``, else the bundle's ``s2l.mouth_gain``; 1 where the
    mouth direction was not fitted (bundles from before it)."""
    gain = talker.config.s2l.mouth_gain if mouth_gain is None else float(mouth_gain)
    if not 0.0 <= gain <= MAX_MOUTH_GAIN:
        raise DaetalkerError(f"--mouth-gain {gain:g}: must be in [0, {MAX_MOUTH_GAIN:g}] (1 = as predicted)")
    return gain if talker.s2l.mouth_steering_fitted else 1.0


@dataclass(frozen=True)
class LatentControls:
    """What speech2latent is given besides the speech (see :func:`predict_latents`)."""

    pose: np.ndarray | None = None  # (n, 3) degrees replacing the predicted pose
    pose_offset: np.ndarray | None = None  # (n, 3) degrees of motion added to the predicted pose
    steer_pose: bool = False  # pin the pose fed in, in each latent
    mouth_gain: float = 1.0  # scale of the mouth's movement in each latent


def _start_noise(talker: Talker, noise: str, per_frame_noise: bool, seed: int, steps: int,
                 schedule: NoiseSchedule) -> tuple[torch.Tensor, bool, torch.Tensor]:
    """The shared x_T (1, C, R, R), whether it is the inverted reference frame (decoded without clipping
    x0), and the latent (1, D) reference guidance measures from: the reference frame's, else the mean."""
    dcfg, dae = talker.dae_cfg, talker.dae
    if talker.reference_frame is None:
        if noise == "reference":
            log.warning("%s has no reference frame (bundled before it was stored): random x_T", talker.source)
        z_ref = talker.latent_mean[None]
    else:
        x0, z_ref = reference_latent(dae, talker.reference_frame, bf16=dcfg.bf16)
        if noise == "reference" and not per_frame_noise:
            return ddim_invert(_eps_fn(dae, dcfg.bf16), x0, z_ref, steps, schedule), True, z_ref
    return shared_noise(dae.image_size, seed, next(dae.parameters()).device, dae.channels), False, z_ref


def _render_frames(
    talker: Talker, mel: np.ndarray, n_frames: int, controls: LatentControls, x_T: torch.Tensor, *, steps: int,
    guide: tuple[torch.Tensor, float], schedule: NoiseSchedule, batch_size: int, chunk_frames: int,
    context_frames: int, clip_x0: bool, size: int, per_frame_seed: int | None,
) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(uint8 frames (B, size, size, 3), seconds spent decoding them)`` in order, chunk by chunk.

    ``controls``: what speech2latent is given besides the speech;
    ``guide``: (z_ref (1, D), scale) of reference guidance; ``per_frame_seed``: draw each frame's own x_T
    from this seed instead of sharing ``x_T`` (ablation).
    """
    dcfg = talker.dae_cfg
    noise_gen = None if per_frame_seed is None else torch.Generator(device="cpu").manual_seed(per_frame_seed)
    chunks = predict_latents(talker.s2l, mel, n_frames, controls.pose, pose_offset=controls.pose_offset,
                             steer_pose=controls.steer_pose, mouth_gain=controls.mouth_gain,
                             chunk_frames=chunk_frames, context_frames=context_frames)  # fmt: skip
    for _, z_norm in chunks:
        z = z_norm * talker.latent_std + talker.latent_mean  # back to the DAE's latent space
        x = x_T
        if noise_gen is not None:
            x = torch.randn((len(z), *x_T.shape[1:]), generator=noise_gen).to(x_T.device)
        t_dec = time.perf_counter()
        for frames in decode_latents(talker.dae, z, x, steps=steps, schedule=schedule, batch_size=batch_size,
                                     bf16=dcfg.bf16, clip_x0=clip_x0, guide=guide):  # fmt: skip
            if size != talker.dae.pixel_size:
                frames = F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False,
                                       antialias=size < talker.dae.pixel_size)
            batch = to_uint8(frames)
            yield batch, time.perf_counter() - t_dec
            t_dec = time.perf_counter()


def _until(frames: Iterator[tuple[np.ndarray, float]], deadline: float | None) -> Iterator[tuple[np.ndarray, float]]:
    """``frames``, stopped with :class:`GenerationTimeout` once ``time.monotonic()`` passes ``deadline``."""
    for item in frames:
        if deadline is not None and time.monotonic() > deadline:
            raise GenerationTimeout("rendering took longer than its deadline and was stopped")
        yield item


def _write_mp4(frames: Iterator[tuple[np.ndarray, float]], out: Path, audio: Path, n_frames: int, size: int,
               crf: int, progress: bool) -> float:
    """Pipe ``frames`` into ``out`` (whole or untouched: written beside it, then renamed); the decoding seconds."""
    from tqdm.auto import tqdm

    tmp_out = outputs.partial_path(out)
    writer = _Mp4Writer(tmp_out, size, audio, n_frames, crf=crf)
    decode_s = 0.0
    try:
        with tqdm(total=n_frames, desc="generate", unit="frame", disable=not progress, mininterval=1.0) as bar:
            for batch, seconds in frames:
                decode_s += seconds
                writer.write(batch)
                bar.update(len(batch))
        writer.close()
        os.replace(tmp_out, out)
    except BaseException:
        writer.kill()
        tmp_out.unlink(missing_ok=True)
        raise
    return decode_s

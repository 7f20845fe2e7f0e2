"""LSE-D and LSE-C: lip-sync error by the SyncNet protocol (syncnet_python ``SyncNetInstance.evaluate``).

Protocol (method.md section 6; the Wav2Lip evaluation scripts run it with vshift 15):

1. 25 fps video, 16 kHz mono audio; L = min(frames, floor(samples / 640)).
2. Windows i = 0 .. L - 6 (the protocol's ``range(0, L - 5)``): frames i..i+4 against
   MFCC steps 4 i .. 4 i + 19, each through the SyncNet's lip / audio stream.
3. The audio embeddings are zero-padded by vshift rows at both ends; for column
   j = 0 .. 2 vshift, d[i, j] = ||lip[i] - aud_pad[i + j] + 1e-6||_2 (torch's
   ``pairwise_distance``, eps included), i.e. lip window i against audio window
   i + j - vshift. Windows near the ends meet the zero padding: the protocol
   keeps those terms in the mean, and so do we.
4. D[j] = mean_i d[i, j]; LSE-D = min_j D[j]; LSE-C = median_j D[j] - LSE-D.
5. AV offset = vshift - argmin_j D[j].

LSE-D and LSE-C take the best offset, so they score how well lips and sound match
*once re-aligned*: audio 10 frames out of sync scores almost as well as in-sync
audio (it only loses the windows whose partners fall into the zero padding), and
the AV offset is what reveals the shift. A talker must be in sync as it plays, so
the same columns are also read at offset 0 (this project's addition, not part of
the protocol): **LSE-D at 0** = D(0) and **LSE-C at 0** = median_k D(k) - D(0).
For a synced video they equal LSE-D / LSE-C; a shifted track raises D(0) to the
off-sync level and drops LSE-C at 0 to about 0, while the AV offset names the shift.

Sign convention of the offset (from step 5): offset = i - a, where lip window i
best matches audio window a. A positive offset means the audio runs *ahead* of
the video by that many frames (the sound of frame i is heard at frame i - offset);
delaying the audio by ``offset`` frames (640 samples each) re-syncs it. Audio
advanced by k frames, ``audio[640 k:]``, is reported as offset +k.

LSE numbers depend on the SyncNet weights (and on the video encoding), so every
``LseResult`` carries the sha256 of the weights that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from daetalker.errors import DaetalkerError
from daetalker.evaluate.mfcc import SAMPLES_PER_FRAME, protocol_mfcc
from daetalker.evaluate.syncnet import LIP_FRAMES, SyncNetLike, lip_windows, mfcc_windows

VSHIFT = 15
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance adds eps to the difference


@dataclass
class LseResult:
    lse_d: float  # min_k D(k), lower is better
    lse_c: float  # median_k D(k) - min_k D(k), higher is better
    offset: int  # AV offset in video frames; > 0: audio ahead of video
    dists: np.ndarray  # (2 vshift + 1,) D per column j; column j is offset vshift - j
    weights_sha256: str = ""  # the SyncNet weights that produced the embeddings
    n_windows: int = 0
    frame_dists: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)  # (n_windows, 2 vshift + 1)

    @property
    def lse_d0(self) -> float:
        """D(0): the mean distance with the audio as it is muxed (lower is better)."""
        return self.dist_at(0)

    @property
    def lse_c0(self) -> float:
        """median_k D(k) - D(0): LSE-C's confidence read at offset 0 (higher is better)."""
        return self.conf_at(0)

    def dist_at(self, offset: int) -> float:
        """D(offset): the mean distance with the audio moved to AV offset ``offset`` (``dist_at(0)`` = D(0))."""
        return float(self.dists[(len(self.dists) - 1) // 2 - int(offset)])

    def conf_at(self, offset: int) -> float:
        """median_k D(k) - D(offset): the confidence read at ``offset`` (``conf_at(0)`` = C(0))."""
        return float(np.median(self.dists)) - self.dist_at(offset)

    @property
    def offsets(self) -> np.ndarray:
        """(2 vshift + 1,) the AV offset of each entry of ``dists``."""
        vshift = (len(self.dists) - 1) // 2
        return vshift - np.arange(len(self.dists))

    def as_dict(self) -> dict[str, float | int | str]:
        return {"lse_d": self.lse_d, "lse_c": self.lse_c, "av_offset": self.offset, "lse_d0": self.lse_d0,
                "lse_c0": self.lse_c0, "syncnet_sha256": self.weights_sha256, "lse_windows": self.n_windows}


def lse_from_embeddings(lip_emb: np.ndarray | torch.Tensor, aud_emb: np.ndarray | torch.Tensor,
                        vshift: int = VSHIFT, weights_sha256: str = "") -> LseResult:
    """(W, D) lip and (W, D) audio embeddings of the same windows -> LSE by the protocol (float64)."""
    lip = np.asarray(torch.as_tensor(lip_emb).detach().cpu(), dtype=np.float64)
    aud = np.asarray(torch.as_tensor(aud_emb).detach().cpu(), dtype=np.float64)
    assert lip.ndim == 2 and lip.shape == aud.shape, (lip.shape, aud.shape)
    n = lip.shape[0]
    if n < 1:
        raise DaetalkerError("LSE needs at least one 5-frame window (a video of 6 frames or more)")
    aud_pad = np.concatenate([np.zeros((vshift, aud.shape[1])), aud, np.zeros((vshift, aud.shape[1]))])
    frame_dists = np.stack(
        [np.linalg.norm(lip - aud_pad[j:j + n] + PAIRWISE_EPS, axis=1) for j in range(2 * vshift + 1)], axis=1
    )  # (W, 2 vshift + 1)
    dists = frame_dists.mean(axis=0)
    j_min = int(np.argmin(dists))  # first minimum, as torch.min
    minval = float(dists[j_min])
    return LseResult(lse_d=minval, lse_c=float(np.median(dists)) - minval, offset=vshift - j_min, dists=dists,
                     weights_sha256=weights_sha256, n_windows=n, frame_dists=frame_dists)


def protocol_length(n_frames: int, n_samples: int) -> int:
    """Frames the protocol scores: min(frames, floor(samples / 640)); windows = this - 5."""
    return min(int(n_frames), int(n_samples) // SAMPLES_PER_FRAME)


def _device(model: SyncNetLike) -> torch.device:
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if params else None
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def lip_embeddings(model: SyncNetLike, frames: np.ndarray, n_windows: int, batch: int = 64) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB frames -> (n_windows, D) lip embeddings; frames prepared batch by batch."""
    out, device = [], _device(model)
    for s in range(0, n_windows, batch):
        count = min(batch, n_windows - s)
        prepared = model.prepare_frames(frames[s:s + count + LIP_FRAMES - 1]).to(device)
        out.append(model.forward_lip(lip_windows(prepared, 0, count)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def audio_embeddings(model: SyncNetLike, audio_16k: np.ndarray, n_windows: int, batch: int = 256) -> torch.Tensor:
    """16 kHz mono audio -> (n_windows, D) audio embeddings of protocol MFCC windows."""
    mfcc = torch.from_numpy(protocol_mfcc(audio_16k)).float().to(_device(model))  # (13, T)
    out = [model.forward_aud(mfcc_windows(mfcc, s, min(batch, n_windows - s))).float().cpu()
           for s in range(0, n_windows, batch)]
    return torch.cat(out)


def lse(video_frames_or_embeddings: np.ndarray | torch.Tensor, audio_16k: np.ndarray, model: SyncNetLike,
        vshift: int = VSHIFT, batch: int = 64) -> LseResult:
    """LSE of one video against its audio.

    ``video_frames_or_embeddings`` is either uint8 (N, H, W, 3) RGB face crops at
    25 fps, or the (W, D) lip embeddings a previous call computed (reuse them to
    score one video against several audio tracks). ``audio_16k`` is mono 16 kHz,
    int16 or float in [-1, 1]. The model must be in eval mode.
    """
    assert not getattr(model, "training", False), "put the SyncNet in eval mode (BatchNorm statistics)"
    video = video_frames_or_embeddings
    audio = np.asarray(audio_16k)
    if video.ndim == 4 and video.dtype in (np.uint8, torch.uint8):  # frames (N, H, W, 3)
        n_windows = protocol_length(len(video), len(audio)) - LIP_FRAMES
        if n_windows < 1:
            raise DaetalkerError(f"LSE needs >= 6 frames with audio; got {len(video)} frames, {len(audio)} samples")
        lip = lip_embeddings(model, video, n_windows, batch)
    else:
        lip = torch.as_tensor(video)
        assert lip.ndim == 2, f"expected uint8 (N,H,W,3) frames or (W,D) embeddings, got {tuple(lip.shape)}"
        n_windows = min(lip.shape[0], len(audio) // SAMPLES_PER_FRAME - LIP_FRAMES)
        if n_windows < 1:
            raise DaetalkerError(f"audio of {len(audio)} samples is too short for LSE")
        lip = lip[:n_windows]
    aud = audio_embeddings(model, audio, n_windows)
    return lse_from_embeddings(lip, aud, vshift, getattr(model, "weights_sha256", ""))


def mean_lse(results: list[LseResult]) -> dict[str, float | int | str]:
    """Scores averaged over videos, with the one weights hash they share.

    The protocol reports LSE-D and LSE-C; the offset-0 pair and the mean |AV offset|
    sit beside them (a signed mean offset would let lags of opposite sign cancel).
    """
    if not results:
        raise DaetalkerError("no videos to average LSE over")
    hashes = {r.weights_sha256 for r in results}
    assert len(hashes) == 1, f"LSE values from different SyncNet weights cannot be averaged: {hashes}"
    mean = {k: float(np.mean([getattr(r, k) for r in results])) for k in ("lse_d", "lse_c", "lse_d0", "lse_c0")}
    return {**mean, "av_offset_abs": float(np.mean([abs(r.offset) for r in results])),
            "syncnet_sha256": hashes.pop(), "videos": len(results)}

"""SyncNet lip-sync experts: the official architecture and a light one the project trains.

Both expose one interface, which is all that LSE scoring and training use:

- ``prepare_frames(frames)``: uint8 (N, H, W, 3) RGB face crops -> float (N, 3, h, w),
  the model's own view of a frame (region, size, colour order, scale);
- ``forward_lip(x)``: (B, 3, 5, h, w), 5 consecutive prepared frames -> (B, D);
- ``forward_aud(x)``: (B, 1, 13, 20), 20 steps of protocol MFCC (see ``mfcc.py``) -> (B, D).

``OfficialSyncNet`` reproduces ``S`` of joonson/syncnet_python ``SyncNetModel.py``
(Chung & Zisserman 2016, "Out of time") layer for layer, with the same parameter
names, so the public ``syncnet_v2.model`` state dict loads with
``load_state_dict``. Its lip stream takes the whole 224x224 face crop as 5
stacked colour frames (Conv3d with 3 input channels, kernel depth 5), in BGR
order (the protocol reads frames with ``cv2.imread``) and in 0..255, without
normalisation. Its embeddings are 1024-d and unnormalised.

``LightSyncNet`` is Wav2Lip's expert recipe at CPU size: the lower half of the
crop, the 5 frames stacked as 15 channels, ReLU'd and L2-normalised embeddings
(so distances lie in [0, sqrt 2]); it standardises MFCC, and its lip view (minus the
mean face, pixel by pixel), with training-set statistics kept as buffers, so a
checkpoint carries everything it needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from daetalker.config.syncnet import SyncNetConfig
from daetalker.errors import CheckpointError
from daetalker.evaluate.mfcc import MFCC_PER_FRAME, N_MFCC

LIP_FRAMES = 5  # video frames per window (0.2 s at 25 fps)
MFCC_STEPS = 20  # MFCC steps per window (0.2 s at 100 Hz)
LIGHT_FORMAT = "daetalker-syncnet-light-v1"
LIP_STATS = {"lip_mean", "lip_std"}  # buffers added after v1's first checkpoints: optional on load


class SyncNetLike(Protocol):
    kind: str
    weights_sha256: str

    def prepare_frames(self, frames: np.ndarray) -> torch.Tensor: ...

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor: ...


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) float -> (N, 3, *size), bilinear, antialiased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _as_uint8_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    # a copy: frames are often a read-only memory map, and torch wants writable memory
    x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.array(frames))
    assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[-1] == 3, (x.dtype, tuple(x.shape))
    return x


# ----------------------------------------------------------------- official
class OfficialSyncNet(nn.Module):
    """``S`` of syncnet_python, parameter names and shapes included (do not rename layers)."""

    kind = "official"

    def __init__(self, num_layers_in_fc_layers: int = 1024) -> None:
        super().__init__()
        self.weights_sha256 = "untrained"
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
            nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
            nn.BatchNorm2d(192),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
            nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(384),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_layers_in_fc_layers)
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_layers_in_fc_layers)
        )
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
            nn.BatchNorm3d(96),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
            nn.BatchNorm3d(512),
            nn.ReLU(inplace=True),
        )

    def prepare_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB crops -> (N, 3, 224, 224) BGR in 0..255 (the protocol's input)."""
        x = _as_uint8_frames(frames).flip(-1).movedim(-1, 1).float()  # RGB -> BGR, channels first
        return _resize(x, (224, 224)).clamp_(0, 255)

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, N_MFCC, MFCC_STEPS), tuple(x.shape)
        mid = self.netcnnaud(x)  # (B, 512, 1, 1)
        return self.netfcaud(mid.flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, LIP_FRAMES, 224, 224), tuple(x.shape)
        mid = self.netcnnlip(x)  # (B, 512, 1, 1, 1)
        return self.netfclip(mid.flatten(1))


# -------------------------------------------------------------------- light
def _conv_stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class _Residual(nn.Module):
    """x + ReLU(BN(conv(x))): Wav2Lip's expert stacks these after each strided conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = _conv_stage(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _encoder(in_shape: tuple[int, int, int], channels: tuple[int, ...], embed_dim: int) -> nn.Sequential:
    """(C, H, W) -> embed_dim: first stage keeps the size, later ones halve it; flatten; linear; ReLU.

    Flatten, not global pooling: where in the window a sound or a lip shape lies is
    the very thing sync depends on (the official net's last conv spans the whole map).
    """
    c_in, h, w = in_shape
    layers: list[nn.Module] = []
    for i, c in enumerate(channels):
        layers += [_conv_stage(c_in, c, 1 if i == 0 else 2), _Residual(c)]
        c_in = c
        if i:
            h, w = (h + 1) // 2, (w + 1) // 2
    layers += [nn.Flatten(), nn.Linear(c_in * h * w, embed_dim), nn.ReLU()]
    return nn.Sequential(*layers)


class LightSyncNet(nn.Module):
    """A lip-sync expert small enough to train on a CPU (sizes from ``SyncNetConfig``)."""

    kind = "light"

    def __init__(self, *, lip_size: tuple[int, int] = (48, 96), lip_channels: tuple[int, ...] = (32, 64, 128, 256),
                 audio_channels: tuple[int, ...] = (32, 64, 128, 256), embed_dim: int = 256) -> None:
        super().__init__()
        self.weights_sha256 = "untrained"
        self.lip_size = (int(lip_size[0]), int(lip_size[1]))
        self.arch = {"lip_size": list(self.lip_size), "lip_channels": list(lip_channels),
                     "audio_channels": list(audio_channels), "embed_dim": embed_dim}
        self.lip = _encoder((3 * LIP_FRAMES, *self.lip_size), tuple(lip_channels), embed_dim)
        self.aud = _encoder((1, N_MFCC, MFCC_STEPS), tuple(audio_channels), embed_dim)
        # MFCC standardisation: protocol MFCC has c0 ~ 20 (log energy of int16 audio) and
        # liftered coefficients ~ +-40; the trainer sets these from the training clips.
        self.register_buffer("mfcc_mean", torch.zeros(N_MFCC))
        self.register_buffer("mfcc_std", torch.ones(N_MFCC))
        # Lip standardisation: the training frames' mean face (per pixel) and the spread around it
        # (per colour channel). Without it the lip embedding is the mean face's: its cosine to its own
        # mean is 0.996 at initialisation, and the sync signal, proportional to its spread, can stay at
        # chance for 1500+ steps (docs/evaluation.md, "Stability of the calibration test").
        # Identity (zeros / ones) in checkpoints written before it existed.
        self.register_buffer("lip_mean", torch.zeros(3, *self.lip_size))
        self.register_buffer("lip_std", torch.ones(3))

    @classmethod
    def from_config(cls, cfg: SyncNetConfig) -> "LightSyncNet":
        return cls(lip_size=(cfg.lip_height, cfg.lip_width), lip_channels=cfg.lip_channels,
                   audio_channels=cfg.audio_channels, embed_dim=cfg.embed_dim)

    def prepare_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB crops -> (N, 3, h, w) lower half in [-1, 1] (Wav2Lip's expert view)."""
        x = _as_uint8_frames(frames)
        h = x.shape[1]
        x = x[:, h // 2:].movedim(-1, 1).float().div_(127.5).sub_(1.0)
        return _resize(x, self.lip_size).clamp_(-1, 1)

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, LIP_FRAMES, *self.lip_size), tuple(x.shape)
        x = (x - self.lip_mean[:, None]) / self.lip_std[:, None, None, None]
        e = self.lip(x.flatten(1, 2))  # (B, 15, h, w) -> (B, D)
        return F.normalize(e, dim=1)

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, N_MFCC, MFCC_STEPS), tuple(x.shape)
        x = (x - self.mfcc_mean[:, None]) / self.mfcc_std[:, None]
        return F.normalize(self.aud(x), dim=1)


# ------------------------------------------------------------------ windows
def lip_windows(prepared: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """(N, 3, h, w) prepared frames -> (count, 3, 5, h, w): window i holds frames i..i+4."""
    assert start >= 0 and start + count + LIP_FRAMES - 1 <= prepared.shape[0], (start, count, prepared.shape)
    chunk = prepared[start:start + count + LIP_FRAMES - 1]
    return chunk.unfold(0, LIP_FRAMES, 1).permute(0, 1, 4, 2, 3)  # (count, 3, h, w, 5) -> (count, 3, 5, h, w)


def mfcc_windows(mfcc: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """(13, T) protocol MFCC -> (count, 1, 13, 20): window i holds steps 4 i .. 4 i + 19."""
    first, last = MFCC_PER_FRAME * start, MFCC_PER_FRAME * (start + count - 1) + MFCC_STEPS
    assert start >= 0 and last <= mfcc.shape[1], (start, count, tuple(mfcc.shape))
    return mfcc[:, first:last].unfold(1, MFCC_STEPS, MFCC_PER_FRAME).permute(1, 0, 2).unsqueeze(1)


# -------------------------------------------------------------- load / save
def light_checkpoint(model: LightSyncNet, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state written for a trained LightSyncNet (tensors and plain types only)."""
    return {"format": LIGHT_FORMAT, "arch": json.dumps(model.arch), "model": model.state_dict(), **(extra or {})}


def _official_from_state(state: dict[str, torch.Tensor], path: Path) -> OfficialSyncNet:
    model = OfficialSyncNet()
    result = model.load_state_dict(state, strict=False)
    # Files saved by old torch releases lack BatchNorm's num_batches_tracked (unused in eval).
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: not a syncnet_python state dict (missing {missing[:4]}, unexpected "
            f"{result.unexpected_keys[:4]}); pass the official syncnet_v2.model or a `daetalker train-syncnet` output"
        )
    return model


def load_syncnet(path: Path) -> SyncNetLike:
    """Load the official ``syncnet_v2.model`` or a ``train-syncnet`` checkpoint, in eval mode.

    The returned model's ``weights_sha256`` is the sha256 of the file: every LSE
    value is stored with it, since LSE numbers depend on the weights.
    """
    from daetalker.checkpoint import file_sha256, load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: SyncNet weights not found (train them with `daetalker train-syncnet`)")
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():  # ours: verify the sidecar written with the checkpoint
        state = load_checkpoint(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot be read as a weights-only torch file: {e}") from e
    if isinstance(state, dict) and state.get("format") == LIGHT_FORMAT:
        arch = json.loads(state["arch"])
        model: nn.Module = LightSyncNet(lip_size=tuple(arch["lip_size"]), lip_channels=tuple(arch["lip_channels"]),
                                        audio_channels=tuple(arch["audio_channels"]), embed_dim=arch["embed_dim"])
        result = model.load_state_dict(state["model"], strict=False)
        missing = set(result.missing_keys) - LIP_STATS  # older checkpoints: identity lip statistics
        if missing or result.unexpected_keys:
            raise CheckpointError(f"{path}: not a LightSyncNet state (missing {sorted(missing)[:4]}, "
                                  f"unexpected {result.unexpected_keys[:4]}); retrain with `daetalker train-syncnet`")
    elif isinstance(state, dict) and any(str(k).startswith("netcnnaud.") for k in state):
        model = _official_from_state(state, path)
    else:
        raise CheckpointError(f"{path}: neither a syncnet_python state dict nor a `daetalker train-syncnet` checkpoint")
    model.weights_sha256 = file_sha256(path)[0]
    return model.eval()

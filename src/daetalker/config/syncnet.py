"""Config of the project's lip-sync expert (``daetalker train-syncnet``) and of LSE scoring.

The official SyncNet weights cannot be fetched offline, so the project trains a
light SyncNet from scratch on the speaker's own data, as Wav2Lip trains its
expert (Prajwal et al. 2020). Sizes are (default) values; profiles override them.
The LSE protocol values (vshift 15) are those of the Wav2Lip evaluation scripts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SyncNetConfig:
    # --- light SyncNet (lip stream sees the lower half of the face crop) ---
    lip_height: int = 48  # lower half of the crop resized to lip_height x lip_width (Wav2Lip: 48x96)
    lip_width: int = 96
    lip_channels: tuple[int, ...] = (32, 64, 128, 256, 512)  # one stride-2 conv stage each
    audio_channels: tuple[int, ...] = (32, 64, 128, 256)
    embed_dim: int = 512
    # --- training (BCE on the cosine of ReLU'd, L2-normalised embeddings, as Wav2Lip's expert) ---
    lr: float = 1e-4
    batch_size: int = 64
    max_steps: int = 20000
    neg_min_offset: int = 2  # in-clip negatives are shifted by 2..vshift frames (default)
    neg_other_clip: float = 0.25  # share of negatives whose audio comes from another clip (default)
    log_every: int = 100
    eval_every: int = 2000  # held-out accuracy during training (0 = only at the end)
    eval_pairs_per_clip: int = 64  # held-out windows per clip, each scored in sync and off sync
    seed: int = 0
    # bf16 autocast for the training steps where the CPU has it (fp32 master weights; scoring stays fp32):
    # 1.66x faster per step at the tiny profile's net (bench/train_syncnet.py). Off by default: the grid-s1
    # expert trained so (seed 0) ranks another sentence's audio above one held-out video's own (LSE-C 0.482
    # vs 0.476), where every fp32 run measured keeps >= 1.11x (docs/real-speaker.md).
    bf16: bool = False
    # --- LSE protocol (syncnet_python / Wav2Lip evaluation) ---
    vshift: int = 15  # offsets -vshift..vshift video frames
    embed_batch: int = 64  # windows per forward pass when scoring a video
    mlflow: bool = True  # log to MLflow when a run is active

    def __post_init__(self) -> None:
        if self.lip_height < 8 or self.lip_width < 8:
            raise ValueError(f"lip region {self.lip_height}x{self.lip_width} too small (>= 8x8)")
        if not self.lip_channels or not self.audio_channels:
            raise ValueError("lip_channels and audio_channels need at least one stage")
        if not 1 <= self.neg_min_offset <= self.vshift:
            raise ValueError(f"neg_min_offset must be in [1, vshift={self.vshift}]")
        if not 0.0 <= self.neg_other_clip <= 1.0:
            raise ValueError("neg_other_clip must be in [0, 1]")
        if self.batch_size < 2 or self.max_steps < 1 or self.vshift < 1:
            raise ValueError("batch_size >= 2, max_steps >= 1 and vshift >= 1 are required")

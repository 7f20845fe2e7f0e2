"""Config of speech2latent and its trainer (method.md section 4).

Model sizes are the (default) values of a sibling model of the same lab:
attention dim 512, 2 heads, macaron FFN 512, conv kernel 13, dropout 0.2,
4 Conformer blocks before and 4 after the pose adaptor. ``latent_dim`` is not
here: it is the DAE's (``dae.latent_dim``) and is passed in at build time.
The audio front-end's parameters (mel bins, hop, window) live in
``preprocess``, which writes the features; ``features`` only picks the kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_MOUTH_GAIN = 10.0  # far past where the decoded mouth stops growing (grid-s1: about 4)


@dataclass
class S2LConfig:
    # --- speech features (daetalker.features) ---
    # log_mel: preprocess's mel.npy. whisper-tiny: Whisper tiny.en's encoder (the pinned asset
    # whisper_tiny_en_ct2.bin), 384-d at 50 Hz, computed from each clip's audio.wav at training time.
    # The default: on grid-s1's 90 held-out sentences speech2latent's latents read out the mouth at
    # r 0.56 from whisper-tiny against 0.34 from log-mel (docs/speech-features.md).
    features: Literal["log_mel", "pretrained", "whisper-tiny"] = "whisper-tiny"
    # Local TorchScript export of a wav2vec 2.0 / HuBERT encoder (features=pretrained); never downloaded.
    encoder_path: str = ""
    encoder_frames_per_video_frame: int = 2  # wav2vec 2.0 / HuBERT run at 50 Hz = 2 per 25 fps frame
    # --- model ---
    d_model: int = 512  # attention dim
    heads: int = 2
    ffn_dim: int = 512  # each of the two macaron feed-forwards
    conv_kernel: int = 13  # depthwise conv of the Conformer convolution module (odd)
    dropout: float = 0.2
    blocks_before: int = 4  # Conformer blocks before the pose adaptor
    blocks_after: int = 4  # ... and after it
    frontend_kernel: int = 5  # conv over feature frames before they are stacked per video frame (odd)
    pose_predictor_dim: int = 256
    pose_predictor_kernel: int = 3
    pose_predictor_layers: int = 2
    # --- optimisation ---
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    batch_size: int = 16  # global batch of windows, split over DDP ranks
    max_steps: int = 100_000
    window_seconds: float = 10.0  # training windows (shorter clips are padded and masked)
    pose_loss: Literal["l1", "mse"] = "l1"  # on std-normalised yaw/pitch/roll
    pose_loss_weight: float = 1.0
    # --- generation ---
    # Move each generated latent so it carries the pose fed in (predicted or given), along the pose
    # direction fitted on the training latents (daetalker.models.pose_steering): speech features also
    # carry head motion, which otherwise leaks past a given pose.
    steer_pose: bool = True
    # Scale the mouth's movement in each generated latent by this gain along the mouth direction fitted
    # on the training latents (1 = as speech2latent made it). A DAE trained on a CPU budget draws the
    # mouth z asks for at a fraction of its size; a real speaker's settings raise it (docs/real-speaker.md).
    mouth_gain: float = 1.0
    # --- bookkeeping ---
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 100
    val_every: int = 1000
    bf16: bool = True
    compile: bool = False
    num_workers: int = 2
    seed: int = 0
    mlflow: bool = True

    def __post_init__(self) -> None:
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by heads {self.heads}")
        if self.conv_kernel % 2 == 0 or self.frontend_kernel % 2 == 0 or self.pose_predictor_kernel % 2 == 0:
            raise ValueError("conv_kernel, frontend_kernel and pose_predictor_kernel must be odd (same-length convs)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.blocks_before < 0 or self.blocks_after < 0 or self.blocks_before + self.blocks_after < 1:
            raise ValueError("need blocks_before, blocks_after >= 0 and at least one Conformer block")
        if self.batch_size < 1 or self.max_steps < 1 or self.window_seconds <= 0:
            raise ValueError("batch_size, max_steps and window_seconds must be positive")
        if self.encoder_frames_per_video_frame < 1:
            raise ValueError("encoder_frames_per_video_frame must be >= 1")
        if self.pose_loss_weight < 0:
            raise ValueError("pose_loss_weight must be >= 0")
        if not 0.0 <= self.mouth_gain <= MAX_MOUTH_GAIN:
            raise ValueError(f"mouth_gain must be in [0, {MAX_MOUTH_GAIN:g}] (1 = as predicted), got {self.mouth_gain}")

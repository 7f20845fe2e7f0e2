"""Config of the first-stage autoencoder (``daetalker train-autoencoder``, issue 16).

It maps face crops to a small latent grid and back, so the DAE diffuses the grid
instead of pixels: the DAE's cost follows the grid (32x32x4 at 128 px, factor 4)
while every decoded frame keeps the crop's resolution. Plain (no KL term): the
per-channel shift and scale recorded from the training frames make the latents
~N(0, 1) per channel, which the DAE's noise schedule assumes. Values are
(default) choices measured on the demo speaker (docs/latent-dae.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AutoencoderConfig:
    # --- model ---
    image_size: int = 128  # side of the frames it encodes (the crop is resized on load)
    channels: tuple[int, ...] = (16, 32, 64)  # one level each; factor = 2 ** (len - 1)
    res_blocks: int = 1  # residual blocks per level
    latent_channels: int = 4
    # --- loss: L1 + grad_weight * L1 of image gradients, mouth box weighted like the DAE's ---
    grad_weight: float = 1.0
    mouth_weight: float = 5.0  # extra per-pixel weight inside the mouth box (0: none)
    # --- optimisation ---
    lr: float = 2e-3
    warmup_steps: int = 100
    lr_decay_steps: int = 0  # cosine to 0 at this step; 0 = max_steps
    grad_clip: float = 1.0
    batch_size: int = 16
    max_steps: int = 3000
    # --- bookkeeping ---
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 50
    sample_every: int = 1000  # reconstruction grids of held-out frames (0 = only at the end)
    sample_count: int = 8
    stats_frames: int = 1024  # training frames that set the latent shift and scale
    eval_frames: int = 256  # held-out frames scored at the end (PSNR, SSIM, mouth r)
    # --- performance ---
    bf16: bool = True  # autocast where the device supports it (CUDA; models/device.py)
    num_workers: int = 0
    seed: int = 0
    mlflow: bool = True

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.factor

    def __post_init__(self) -> None:
        if not self.channels or any(c < 4 for c in self.channels):
            raise ValueError(f"channels must be >= 4 each, got {self.channels}")
        if self.image_size % self.factor:
            raise ValueError(f"image_size {self.image_size} must be divisible by the factor {self.factor}")
        if self.latent_channels < 1 or self.res_blocks < 0:
            raise ValueError("latent_channels >= 1 and res_blocks >= 0 are required")
        if self.batch_size < 1 or self.max_steps < 1:
            raise ValueError("batch_size and max_steps must be >= 1")
        if self.grad_weight < 0 or self.mouth_weight < 0:
            raise ValueError("grad_weight and mouth_weight must be >= 0")

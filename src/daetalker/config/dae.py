"""Config of the diffusion autoencoder and its trainer (method.md section 2).

Defaults are the diffae reference at 256 px (DAE-Talker's setting); the
profiles override sizes. Values the papers do not state are marked (default).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DAEConfig:
    # --- model (diffae 256 px reference) ---
    image_size: int = 256  # side of the frames it encodes and decodes
    # "pixel": the UNet diffuses the frames themselves (the paper). "latent": it diffuses the grid of
    # the first-stage autoencoder (``train-autoencoder``; image_size / factor per side, its latent
    # channels), and frames are decoded by that autoencoder (issue 16, docs/latent-dae.md).
    space: str = "pixel"
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)  # decoder UNet, one entry per resolution
    enc_channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4, 4)  # semantic encoder
    num_res_blocks: int = 2  # decoder ResBlocks per resolution (the up path has one more)
    enc_num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)  # feature-map sides with self-attention
    attn_heads: int = 1
    embed_dim: int = 512  # time embedding width (sinusoid(base_channels) -> MLP -> embed_dim)
    latent_dim: int = 512  # semantic latent z
    # standardise z per dimension inside the encoder (see models/encoder.py). Not in diffae: without
    # it the encoder collapses to a constant z on one speaker's frames (measured), so it is on.
    latent_norm: bool = True
    latent_calib_frames: int = 512  # training frames that set the EMA encoder's z statistics
    dropout: float = 0.1
    # --- diffusion ---
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # what the UNet predicts: "eps" (the paper) or "v" = sqrt(a) eps - sqrt(1-a) x0 (default off).
    # Under eps-MSE the x0 error at high noise weighs ~SNR -> 0, so nothing asks z for the mouth there;
    # v puts weight ~1 on it and the decoder must read the mouth from z (measured: docs/dae.md).
    prediction: str = "eps"
    # MSE weighting: 0 = the paper's plain mean; gamma > 0 = Min-SNR-gamma (default off)
    min_snr_gamma: float = 0.0
    # extra per-pixel loss weight inside each frame's mouth box (Face Mesh lips; default 0 = the paper).
    # The lips are ~1% of a loose head crop, so at small sizes and short budgets z learns pose long
    # before it learns the mouth, which is what speech2latent needs most (measured: docs/dae.md).
    mouth_weight: float = 0.0
    # --- optimisation ---
    lr: float = 1e-4
    warmup_steps: int = 0  # linear LR warm-up (default; diffae used 5000 on long runs)
    # cosine LR decay to 0 at this step; 0 = constant LR (the paper). Short CPU budgets gain from it.
    lr_decay_steps: int = 0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    # decay_n = min(ema_decay, (1 + n) / (10 + n)): lets short runs use a useful EMA (default off)
    ema_warmup: bool = False
    batch_size: int = 64  # global batch, split evenly over DDP ranks
    max_steps: int = 1_000_000
    # --- bookkeeping ---
    ckpt_every: int = 1000
    keep_checkpoints: int = 3  # numbered checkpoints kept beside latest.pt
    log_every: int = 100
    sample_every: int = 5000  # reconstruction grids (0 = only at the end)
    sample_steps: int = 20  # DDIM steps for logged reconstructions, and generation's default
    # reference guidance at generation (daetalker.diffusion.guidance): each step goes this many times as
    # far from the reference frame's latent as z asks; 1 = plain DDIM, > 1 costs a second model call
    guidance: float = 1.0
    # DDIM steps of the inversion x0 -> x_T (and of the decode back) in logged reconstructions: the
    # round trip is exact only as the step count grows (tiny, 4000 steps: 37.1 dB at 20, 43.1 at 100)
    invert_steps: int = 100
    sample_count: int = 8  # held-out frames in each logged grid
    # --- performance ---
    bf16: bool = True  # autocast where the device supports it
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (GPU; slow first steps)
    num_workers: int = 2
    seed: int = 0
    mlflow: bool = True  # log to MLflow when a tracking URI is set

    def check_grid(self, side: int) -> None:
        """The UNet and the encoder halve ``side`` (the frame's, or the latent grid's) once per level."""
        n_down = len(self.channel_mult) - 1
        if side % (2**n_down):
            raise ValueError(f"a {side} px grid must be divisible by 2**{n_down} (len(channel_mult) - 1 downsamplings)")
        if side % (2 ** (len(self.enc_channel_mult) - 1)):
            raise ValueError(f"a {side} px grid is too small for enc_channel_mult")

    def __post_init__(self) -> None:
        if self.space not in ("pixel", "latent"):
            raise ValueError(f"space must be 'pixel' or 'latent', got {self.space!r}")
        if self.space == "pixel":
            self.check_grid(self.image_size)
        if self.batch_size < 1 or self.max_steps < 1:
            raise ValueError("batch_size and max_steps must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError("need 0 < beta_start < beta_end < 1")
        if self.mouth_weight < 0:
            raise ValueError(f"mouth_weight must be >= 0, got {self.mouth_weight}")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {self.prediction!r}")
        if not 0.0 <= self.guidance <= 10.0:
            raise ValueError(f"guidance must be in [0, 10], got {self.guidance}")
        for name in ("sample_steps", "invert_steps"):
            if not 1 <= getattr(self, name) <= self.timesteps:
                raise ValueError(f"{name} must be in [1, timesteps], got {getattr(self, name)}")

"""speech2latent: speech features -> one normalised DAE latent per video frame (method.md section 4).

``features (B, k*T, F)`` -> conv front-end (k feature frames -> 1 video frame)
-> Conformer x ``blocks_before`` -> pose adaptor -> Conformer x ``blocks_after``
-> Linear -> ``latent (B, T, latent_dim)``, with ``k`` = feature frames per
video frame (4 for 10 ms log-mel at 25 fps, 2 for 50 Hz wav2vec 2.0).

Pose adaptor (as FastSpeech 2's variance adaptor, for yaw/pitch/roll): a
predictor regresses the pose from the hidden sequence; a projector embeds a
pose sequence and adds it to the hidden sequence. Training feeds the
ground-truth pose, inference the predicted pose or one the user supplies.

Statistics live in buffers (saved with the weights): per-bin feature mean/std
standardise the input; pose mean/std map degrees to the unit scale the
predictor and projector work in; pose_residual_std/rho describe the head motion
the predictor leaves out (:mod:`daetalker.models.pose_residual`, fitted after
training; zero in checkpoints from before it); pose_probe_w/b and pose_steer pin
a given pose in the latent at inference, and mouth_probe_w/b and mouth_steer
scale the mouth's movement by a gain (:mod:`daetalker.models.pose_steering`,
both fitted after training; zero: off). ``pose`` in and out are in degrees.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from daetalker.config.s2l import S2LConfig
from daetalker.models.conformer import Conformer, lengths_to_mask
from daetalker.models.pose_residual import sample_ar1
from daetalker.models.pose_steering import amplify, steer

POSE_DIM = 3  # yaw, pitch, roll


class S2LOutput(NamedTuple):
    latent: torch.Tensor  # (B, T, latent_dim), normalised latent space; zero on padded frames
    pose: torch.Tensor  # (B, T, 3) predicted pose in degrees; zero on padded frames


class PosePredictor(nn.Module):
    """[Conv1d -> ReLU -> LayerNorm -> Dropout] x layers -> Linear: (B, T, D) -> normalised pose (B, T, 3)."""

    def __init__(self, *, dim: int, hidden: int, kernel_size: int, layers: int, dropout: float) -> None:
        super().__init__()
        assert kernel_size % 2 == 1 and layers >= 1
        self.convs = nn.ModuleList(
            nn.Conv1d(dim if i == 0 else hidden, hidden, kernel_size, padding=kernel_size // 2) for i in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, POSE_DIM)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[..., None]  # (B, T, 1)
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = h.masked_fill(~keep, 0.0)
            h = conv(h.transpose(1, 2)).transpose(1, 2)  # (B, T, hidden)
            h = self.dropout(norm(F.relu(h)))
        return self.out(h).masked_fill(~keep, 0.0)


class Speech2Latent(nn.Module):
    def __init__(
        self,
        *,
        feature_dim: int,
        frames_per_video_frame: int,
        latent_dim: int,
        dim: int = 512,
        heads: int = 2,
        ffn_dim: int = 512,
        conv_kernel: int = 13,
        dropout: float = 0.2,
        blocks_before: int = 4,
        blocks_after: int = 4,
        frontend_kernel: int = 5,
        pose_predictor_dim: int = 256,
        pose_predictor_kernel: int = 3,
        pose_predictor_layers: int = 2,
    ) -> None:
        super().__init__()
        assert frames_per_video_frame >= 1 and frontend_kernel % 2 == 1
        self.feature_dim, self.k, self.latent_dim, self.dim = feature_dim, frames_per_video_frame, latent_dim, dim

        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.register_buffer("pose_mean", torch.zeros(POSE_DIM))
        self.register_buffer("pose_std", torch.ones(POSE_DIM))
        self.register_buffer("pose_residual_std", torch.zeros(POSE_DIM))  # unit scale; 0: not fitted
        self.register_buffer("pose_residual_rho", torch.zeros(POSE_DIM))
        self.register_buffer("pose_probe_w", torch.zeros(POSE_DIM, latent_dim))  # zeros: steering not fitted
        self.register_buffer("pose_probe_b", torch.zeros(POSE_DIM))
        self.register_buffer("pose_steer", torch.zeros(latent_dim, POSE_DIM))
        self.register_buffer("mouth_probe_w", torch.zeros(latent_dim))  # zeros: mouth gain not fitted
        self.register_buffer("mouth_probe_b", torch.zeros(()))
        self.register_buffer("mouth_steer", torch.zeros(latent_dim))

        # Local context at the feature rate, then a conv with kernel = stride = k: one vector per
        # video frame, built only from that frame's k feature frames.
        self.frontend_conv = nn.Conv1d(feature_dim, dim, frontend_kernel, padding=frontend_kernel // 2)
        self.frontend_stack = nn.Conv1d(dim, dim, frames_per_video_frame, stride=frames_per_video_frame)
        self.frontend_norm = nn.LayerNorm(dim)
        self.frontend_dropout = nn.Dropout(dropout)

        stack = dict(dim=dim, heads=heads, ffn_dim=ffn_dim, conv_kernel=conv_kernel, dropout=dropout)
        self.encoder = Conformer(depth=blocks_before, **stack)
        self.pose_predictor = PosePredictor(
            dim=dim,
            hidden=pose_predictor_dim,
            kernel_size=pose_predictor_kernel,
            layers=pose_predictor_layers,
            dropout=dropout,
        )
        self.pose_projector = nn.Linear(POSE_DIM, dim)
        self.decoder = Conformer(depth=blocks_after, **stack)
        self.head = nn.Linear(dim, latent_dim)

    @classmethod
    def from_config(
        cls, cfg: S2LConfig, *, feature_dim: int, frames_per_video_frame: int, latent_dim: int
    ) -> "Speech2Latent":
        return cls(
            feature_dim=feature_dim,
            frames_per_video_frame=frames_per_video_frame,
            latent_dim=latent_dim,
            dim=cfg.d_model,
            heads=cfg.heads,
            ffn_dim=cfg.ffn_dim,
            conv_kernel=cfg.conv_kernel,
            dropout=cfg.dropout,
            blocks_before=cfg.blocks_before,
            blocks_after=cfg.blocks_after,
            frontend_kernel=cfg.frontend_kernel,
            pose_predictor_dim=cfg.pose_predictor_dim,
            pose_predictor_kernel=cfg.pose_predictor_kernel,
            pose_predictor_layers=cfg.pose_predictor_layers,
        )

    @torch.no_grad()
    def set_stats(
        self,
        *,
        feature_mean: torch.Tensor | None = None,
        feature_std: torch.Tensor | None = None,
        pose_mean: torch.Tensor | None = None,
        pose_std: torch.Tensor | None = None,
    ) -> None:
        """Store training-set statistics (per feature bin; per pose axis in degrees)."""
        for name, value, is_std in (
            ("feature_mean", feature_mean, False),
            ("feature_std", feature_std, True),
            ("pose_mean", pose_mean, False),
            ("pose_std", pose_std, True),
        ):
            if value is None:
                continue
            buf = getattr(self, name)
            value = torch.as_tensor(value, dtype=buf.dtype, device=buf.device)
            assert value.shape == buf.shape, f"{name} must be {tuple(buf.shape)}, got {tuple(value.shape)}"
            buf.copy_(value.clamp_min(1e-5) if is_std else value)

    @torch.no_grad()
    def set_pose_residual(self, std: torch.Tensor, rho: torch.Tensor) -> None:
        """Store the fitted AR(1) of the pose residual: per-axis std (unit scale) and lag-1 correlation."""
        self.pose_residual_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        self.pose_residual_rho.copy_(torch.as_tensor(rho, dtype=torch.float32))

    def sample_pose_residual(self, n_frames: int, seed: int) -> torch.Tensor:
        """(n_frames, 3) degrees of head motion the speech does not explain; zeros if never fitted."""
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        unit = sample_ar1(n_frames, self.pose_residual_std, self.pose_residual_rho, gen)  # (n, 3)
        return unit * self.pose_std.float().cpu()

    @torch.no_grad()
    def set_pose_steering(self, w: torch.Tensor, b: torch.Tensor, g: torch.Tensor) -> None:
        """Store the fitted probe (W (3, D), b (3,)) and steering matrix G (D, 3), unit pose scale."""
        for buf, value in ((self.pose_probe_w, w), (self.pose_probe_b, b), (self.pose_steer, g)):
            buf.copy_(torch.as_tensor(value, dtype=buf.dtype))

    @property
    def steering_fitted(self) -> bool:
        return bool(self.pose_steer.abs().sum() > 0)

    @torch.no_grad()
    def set_mouth_steering(self, w: torch.Tensor, b: torch.Tensor, g: torch.Tensor) -> None:
        """Store the fitted mouth probe (w (D,), b ()) and its direction g (D,), standardised mouth opening."""
        for buf, value in ((self.mouth_probe_w, w), (self.mouth_probe_b, b), (self.mouth_steer, g)):
            buf.copy_(torch.as_tensor(value, dtype=buf.dtype).reshape(buf.shape))

    @property
    def mouth_steering_fitted(self) -> bool:
        return bool(self.mouth_steer.abs().sum() > 0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Checkpoints from before the residual or the steering was fitted lack their buffers: "not fitted".
        for name, shape in (("pose_residual_std", (POSE_DIM,)), ("pose_residual_rho", (POSE_DIM,)),
                            ("pose_probe_w", (POSE_DIM, self.latent_dim)), ("pose_probe_b", (POSE_DIM,)),
                            ("pose_steer", (self.latent_dim, POSE_DIM)), ("mouth_probe_w", (self.latent_dim,)),
                            ("mouth_probe_b", ()), ("mouth_steer", (self.latent_dim,))):
            state_dict.setdefault(prefix + name, torch.zeros(shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def pose_from_unit(self, pose_unit: torch.Tensor) -> torch.Tensor:
        return pose_unit * self.pose_std + self.pose_mean

    def pose_to_unit(self, pose: torch.Tensor) -> torch.Tensor:
        return (pose - self.pose_mean) / self.pose_std

    def frontend(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, k*T, F) -> (B, T, D); padded feature frames are zeroed so they cannot reach valid ones."""
        feat_mask = mask.repeat_interleave(self.k, dim=1)[..., None]  # (B, k*T, 1)
        x = ((features - self.feature_mean) / self.feature_std).masked_fill(~feat_mask, 0.0)
        h = F.silu(self.frontend_conv(x.transpose(1, 2)))  # (B, D, k*T)
        h = self.frontend_stack(h).transpose(1, 2)  # (B, T, D)
        return self.frontend_dropout(self.frontend_norm(h))

    def forward(
        self,
        features: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        pose: torch.Tensor | None = None,
        pose_offset: torch.Tensor | None = None,
        steer_pose: bool = False,
        mouth_gain: float = 1.0,
    ) -> S2LOutput:
        """features (B, k*T, F); mask (B, T) bool or lengths (B,) in video frames; pose (B, T, 3) degrees.

        Without ``pose`` (inference) the predicted pose drives the projector, plus ``pose_offset``
        (B, T, 3) degrees if given (a draw of :meth:`sample_pose_residual`). Non-finite pose
        labels (frames without a face) are replaced by the prediction. The prediction is detached
        where it is fed back, so only the pose loss trains the predictor. ``steer_pose`` (inference)
        moves each latent so it carries the pose fed in, after ``mouth_gain`` (inference) scaled the
        mouth's movement in it (:mod:`daetalker.models.pose_steering`; either is off where not fitted).
        """
        b, n, f = features.shape
        assert f == self.feature_dim, f"expected {self.feature_dim} feature bins, got {f}"
        assert n % self.k == 0, f"feature frames ({n}) must be a multiple of {self.k} per video frame"
        t = n // self.k
        assert mask is None or lengths is None, "pass mask or lengths, not both"
        if lengths is not None:
            mask = lengths_to_mask(lengths.to(features.device), t)
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=features.device)
        assert mask.shape == (b, t) and mask.dtype == torch.bool, f"mask must be bool (B, T) = {(b, t)}"
        keep = mask[..., None]  # (B, T, 1)

        h = self.encoder(self.frontend(features, mask), mask)  # (B, T, D)
        pose_unit_pred = self.pose_predictor(h, mask)  # (B, T, 3)
        if pose is None:
            pose_unit = pose_unit_pred.detach()
            if pose_offset is not None:
                assert pose_offset.shape == (b, t, POSE_DIM), f"pose_offset must be (B, T, 3) = {(b, t, 3)}"
                pose_unit = pose_unit + pose_offset.to(h.dtype) / self.pose_std
        else:
            assert pose.shape == (b, t, POSE_DIM), f"pose must be (B, T, 3) = {(b, t, 3)}, got {tuple(pose.shape)}"
            pose_unit = self.pose_to_unit(pose.to(h.dtype))
            pose_unit = torch.where(torch.isfinite(pose_unit), pose_unit, pose_unit_pred.detach())
        h = h + self.pose_projector(pose_unit.masked_fill(~keep, 0.0))
        h = self.decoder(h, mask)
        latent = self.head(h)  # (B, T, latent_dim)
        if mouth_gain != 1.0 and self.mouth_steering_fitted:  # first: the pose is pinned after it
            latent = amplify(latent.float(), self.mouth_probe_w, self.mouth_probe_b, self.mouth_steer, mouth_gain)
        if steer_pose and self.steering_fitted:
            latent = steer(latent.float(), pose_unit.float(), self.pose_probe_w, self.pose_probe_b, self.pose_steer)
        latent = latent.masked_fill(~keep, 0.0)
        pose_pred = self.pose_from_unit(pose_unit_pred).masked_fill(~keep, 0.0)
        return S2LOutput(latent=latent, pose=pose_pred)


def s2l_loss(
    latent_pred: torch.Tensor,
    latent_target: torch.Tensor,
    pose_pred: torch.Tensor,
    pose_target: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    pose_std: torch.Tensor | None = None,
    pose_loss: str = "l1",
    pose_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Masked latent MSE + ``pose_weight`` x masked pose L1/MSE on std-normalised angles.

    Frames whose pose label is non-finite (no face found) are left out of the pose term;
    without labels (``pose_target`` None) the pose term is 0.
    Returns {"loss", "latent_mse", "pose"} as scalar tensors.
    """
    b, t, d = latent_pred.shape
    assert latent_target.shape == (b, t, d) and mask.shape == (b, t) and pose_pred.shape == (b, t, POSE_DIM)
    assert pose_loss in ("l1", "mse"), f"pose_loss must be 'l1' or 'mse', got {pose_loss!r}"
    m = mask[..., None].to(latent_pred.dtype)  # (B, T, 1)
    latent_mse = ((latent_pred - latent_target) ** 2 * m).sum() / (m.sum() * d).clamp_min(1.0)

    if pose_target is None:
        pose_term = latent_pred.new_zeros(())
    else:
        assert pose_target.shape == (b, t, POSE_DIM)
        valid = (mask & torch.isfinite(pose_target).all(dim=-1))[..., None].to(pose_pred.dtype)  # (B, T, 1)
        std = pose_pred.new_ones(POSE_DIM) if pose_std is None else pose_std.to(pose_pred)
        err = (pose_pred - torch.nan_to_num(pose_target, nan=0.0, posinf=0.0, neginf=0.0)) / std
        per = err.abs() if pose_loss == "l1" else err**2
        pose_term = (per * valid).sum() / (valid.sum() * POSE_DIM).clamp_min(1.0)

    return {"loss": latent_mse + pose_weight * pose_term, "latent_mse": latent_mse, "pose": pose_term}

"""Pure diffusion maths (schedule, noising, loss, DDIM); models know nothing of sampling."""

from daetalker.diffusion.ddim import ddim_invert, ddim_sample, ddim_step, ddim_timesteps
from daetalker.diffusion.schedule import (
    NoiseSchedule,
    eps_loss,
    linear_schedule,
    min_snr_weights,
    predict_x0,
    q_sample,
    sample_timesteps,
)

__all__ = [
    "NoiseSchedule",
    "ddim_invert",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "eps_loss",
    "linear_schedule",
    "min_snr_weights",
    "predict_x0",
    "q_sample",
    "sample_timesteps",
]

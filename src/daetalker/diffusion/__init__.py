"""Pure diffusion maths (schedule, noising, loss, DDIM); models know nothing of sampling."""

from daetalker.diffusion.ddim import ddim_invert, ddim_sample, ddim_step, ddim_timesteps
from daetalker.diffusion.guidance import reference_guided
from daetalker.diffusion.schedule import (
    NoiseSchedule,
    box_weights,
    eps_from_v,
    eps_loss,
    linear_schedule,
    min_snr_weights,
    predict_x0,
    q_sample,
    sample_timesteps,
    v_target,
)

__all__ = [
    "NoiseSchedule",
    "box_weights",
    "ddim_invert",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "eps_from_v",
    "eps_loss",
    "linear_schedule",
    "min_snr_weights",
    "predict_x0",
    "q_sample",
    "reference_guided",
    "sample_timesteps",
    "v_target",
]

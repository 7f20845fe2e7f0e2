"""Networks as plain ``nn.Module``s: sizes come from the stage config, never from code.

Also what running them needs: ``loading`` (the DAE and speech2latent from verified
checkpoints), ``device`` (device choice, bf16 autocast), ``images`` (uint8 frames
<-> the networks' [-1, 1] tensors), ``latent_stats`` (reading ``latent_stats.npz``).
"""

from daetalker.models.autoencoder import DiffusionAutoencoder, count_parameters
from daetalker.models.encoder import SemanticEncoder
from daetalker.models.unet import UNet

__all__ = ["DiffusionAutoencoder", "SemanticEncoder", "UNet", "count_parameters"]

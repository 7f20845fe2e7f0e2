"""Networks as plain ``nn.Module``s: sizes come from the stage config, never from code."""

from daetalker.models.autoencoder import DiffusionAutoencoder, count_parameters
from daetalker.models.encoder import SemanticEncoder
from daetalker.models.unet import UNet

__all__ = ["DiffusionAutoencoder", "SemanticEncoder", "UNet", "count_parameters"]

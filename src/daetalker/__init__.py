"""DAE-Talker: speech-driven talking faces with a diffusion autoencoder, as an MLOps system."""
__version__ = "0.1.0"

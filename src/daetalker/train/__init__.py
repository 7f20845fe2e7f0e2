"""Training: the DAE trainer and latent extraction, plus pieces every trainer shares.

Shared: ``checkpoint`` (atomic, verified checkpoints), ``ema``, ``distributed``
(torchrun/DDP), ``sampler`` (resumable sharded sampling), ``loop`` (loggers,
precision, RNG state). Modules are imported directly (``from
daetalker.train.dae_trainer import train_dae``) so that the CLI starts without torch.
"""

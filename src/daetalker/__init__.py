"""DAE-Talker: speech-driven talking faces with a diffusion autoencoder, as an MLOps system."""

import os

# How OpenMP threads wait between ops (set before torch loads libgomp; subprocesses inherit it; users
# may override). libgomp's default spins ~300k iterations: beside a busy process (kfp.local steps beside
# the MLflow server, a pipeline beside pytest) every parallel op then stalls on the spinning thread (20
# tiny DAE steps took 214 s instead of 27.5 s). PASSIVE never spins, but the DAE's thousands of small ops
# then pay a wake-up each: the latent tiny DAE trained at 44.7 images/s alone, against 71.3 with a
# bounded spin of 20000 iterations, which beside a busy process runs 0.57x PASSIVE's, far from the
# default's stall (bench/omp_wait.py, docs/latent-dae.md). Pipeline steps and trainers run alone.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")

__version__ = "0.1.0"

"""DAE-Talker: speech-driven talking faces with a diffusion autoencoder, as an MLOps system."""

import os

# OpenMP threads spin while they wait by default. When another process holds a core (kfp.local
# steps beside the MLflow server, a pipeline beside pytest), every parallel op then stalls on the
# spinning thread: 20 tiny DAE steps took 214 s instead of 27.5 s with PASSIVE beside one busy
# process (measured); alone it costs nothing measurable (bench/omp_wait.py). Set before torch loads
# libgomp; subprocesses inherit it; users may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

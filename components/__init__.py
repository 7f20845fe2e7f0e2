"""Kubeflow Pipelines components: thin wrappers that call ``daetalker.stages.steps``.

Every component runs in the one torch-stack image (components/Dockerfile); the
package is installed there, so ``packages_to_install`` stays empty and the
local runner (kfp.local, use_venv=False) executes them in this interpreter.
"""

import os

# Images built from components/Dockerfile (CPU) and the CUDA variant.
CPU_IMAGE = os.environ.get("DAETALKER_IMAGE", "ghcr.io/daetalker/daetalker:0.1.0-cpu")
GPU_IMAGE = os.environ.get("DAETALKER_GPU_IMAGE", "ghcr.io/daetalker/daetalker:0.1.0-cuda")

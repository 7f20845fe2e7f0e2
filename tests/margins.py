"""Margins of the tests that train a model, so a verdict can be checked on other seeds and thread counts.

A trained-model test takes its training seed from :func:`train_seed` and reports
how far each asserted figure is from its bar with :func:`record`.
``bench/stability.py`` reruns those tests under 1 and 2 torch threads
(``$DAETALKER_TEST_THREADS``, read by the ``one_torch_thread`` fixture) and other
seeds (``$DAETALKER_TEST_SEED``) and prints the figures side by side.
"""

from __future__ import annotations

import json
import os


def train_seed(default: int = 0) -> int:
    """The training seed of this run: ``$DAETALKER_TEST_SEED`` (the stability check), else ``default``."""
    return int(os.environ.get("DAETALKER_TEST_SEED", default))


def record(test: str, seed: int, **figures: float) -> None:
    """Append one row of figures to ``$DAETALKER_MARGINS_OUT`` (JSON lines), when the check asks for them."""
    path = os.environ.get("DAETALKER_MARGINS_OUT")
    if not path:
        return
    import torch

    row = {"test": test, "seed": seed, "threads": torch.get_num_threads(),
           **{k: round(float(v), 5) for k, v in figures.items()}}
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")

"""Thin loader for LiteRT (TFLite) models: one interpreter per model file per process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def load_interpreter(path: Path, threads: int = 1):
    """An allocated interpreter. One thread by default: preprocessing parallelises over clips."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


class LiteModel:
    """Runs a single-input model and returns its outputs by name."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.interpreter = load_interpreter(path, threads)
        inp = self.interpreter.get_input_details()[0]
        self.input_index = inp["index"]
        self.input_shape = tuple(int(s) for s in inp["shape"])
        self.outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        assert x.shape == self.input_shape and x.dtype == np.float32, (x.shape, x.dtype)
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(i).copy() for name, i in self.outputs.items()}

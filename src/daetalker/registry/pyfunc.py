"""The packaged talker as an MLflow pyfunc model: audio in, video file out.

``mlflow.pyfunc.load_model("models:/talker-<speaker>@champion")`` downloads the
model, and :meth:`TalkerModel.load_context` refuses it unless every bundled
file matches the hashes recorded at registration. The weights are read on the
first ``predict`` (by ``generate_video``), so loading to inspect or verify a
model is cheap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from daetalker.bundle import BundleManifest, verify_bundle

INPUT_COLUMNS = ("audio_path", "out_path")
OPTIONAL_COLUMNS = ("pose", "steps", "seed")


def signature() -> Any:
    """Input: one row per clip to render; output: the written video and its frame count."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([
        ColSpec("string", "audio_path"),
        ColSpec("string", "out_path"),
        ColSpec("string", "pose", required=False),  # pose source passed to generate_video
        ColSpec("long", "steps", required=False),  # DDIM steps
        ColSpec("long", "seed", required=False),
    ])  # fmt: skip
    outputs = Schema([ColSpec("string", "video_path"), ColSpec("long", "n_frames")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _cell(row: Any, key: str, cast: type) -> Any:
    if key not in row:
        return None
    v = row[key]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return cast(v)


class TalkerModel(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper around the bundle; ``manifest_sha256`` pins ``bundle.json`` as registered."""

    def __init__(self, manifest_sha256: str | None = None) -> None:
        self.manifest_sha256 = manifest_sha256
        self.bundle_dir: Path | None = None
        self.manifest: BundleManifest | None = None

    def load_context(self, context: Any) -> None:
        bundle = Path(context.artifacts["bundle"])
        self.manifest = verify_bundle(bundle, self.manifest_sha256)  # IntegrityError: refuse to load
        self.bundle_dir = bundle

    # No type hints on predict: MLflow would try to derive a schema from them; signature() is the schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """``model_input``: DataFrame with audio_path, out_path and optional pose, steps, seed."""
        import pandas as pd

        missing = [c for c in INPUT_COLUMNS if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks column(s) {missing}; expected {INPUT_COLUMNS} (+ optional {OPTIONAL_COLUMNS})")
        if self.bundle_dir is None:
            self.load_context(context)
        from daetalker.generate.video import generate_video
        paths, frames = [], []
        for _, row in model_input.iterrows():
            kwargs = {k: _cell(row, k, t) for k, t in (("pose", str), ("steps", int), ("seed", int))}
            result = generate_video(self.bundle_dir, Path(row["audio_path"]), Path(row["out_path"]),
                                    **{k: v for k, v in kwargs.items() if v is not None})  # fmt: skip
            paths.append(str(result.path))
            frames.append(int(result.n_frames))
        return pd.DataFrame({"video_path": paths, "n_frames": pd.Series(frames, dtype="int64")})

"""The packaged talker as an MLflow pyfunc model: audio bytes in, mp4 bytes out.

``mlflow.pyfunc.load_model("models:/talker-<speaker>@champion")`` downloads the
model, and :meth:`TalkerModel.load_context` refuses it unless every bundled
file matches the hashes recorded at registration. The weights are read on the
first ``predict`` and kept, so loading to inspect or verify a model is cheap
and later calls do not reload.

The served signature (what ``mlflow models serve`` and ``daetalker serve``
accept) names no file: ``audio`` is the base64 of an audio file, ``video`` the
base64 of the mp4 (:mod:`daetalker.registry.clips` does the work, in a private
temporary folder per call). :meth:`TalkerModel.predict_paths` reads and writes
files named by the caller; it is for in-process batch use and is never served.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from daetalker.bundle import BundleManifest, verify_bundle
from daetalker.registry.clips import (
    COLUMNS,
    OPTIONAL_COLUMNS,
    PATH_COLUMNS,
    ClipLimits,
    ClipRequest,
    cell,
    parse_rows,
    render_clips,
)

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "PATH_COLUMNS", "TalkerModel", "signature"]


def signature() -> Any:
    """Input: one row per clip, the audio as base64; output: the mp4 as base64, its frames and seconds."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([
        ColSpec("string", "audio"),  # base64 of any audio (or video) file ffmpeg reads
        ColSpec("string", "pose", required=False),  # predicted | predicted-motion | constant:YAW,PITCH,ROLL
        ColSpec("long", "steps", required=False),  # DDIM steps
        ColSpec("long", "seed", required=False),
    ])  # fmt: skip
    outputs = Schema([ColSpec("string", "video"), ColSpec("long", "n_frames"), ColSpec("double", "duration_s")])
    return ModelSignature(inputs=inputs, outputs=outputs)


class TalkerModel(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper around the bundle; ``manifest_sha256`` pins ``bundle.json`` as registered.

    Versions registered before the bytes signature unpickle into this class too; the class
    attributes below stand in for what their pickles lack.
    """

    limits = ClipLimits()  # a server sets its own (daetalker serve's config)
    _talker: Any = None
    _load_lock: Any = None

    def __init__(self, manifest_sha256: str | None = None) -> None:
        self.manifest_sha256 = manifest_sha256
        self.bundle_dir: Path | None = None
        self.manifest: BundleManifest | None = None

    def __getstate__(self) -> dict[str, Any]:  # the loaded networks and the lock stay out of the pickle
        return {k: v for k, v in self.__dict__.items() if k not in ("_talker", "_load_lock")}

    def load_context(self, context: Any) -> None:
        bundle = Path(context.artifacts["bundle"])
        self.manifest = verify_bundle(bundle, self.manifest_sha256)  # IntegrityError: refuse to load
        self.bundle_dir = bundle
        self._talker = None

    def talker(self, context: Any = None) -> Any:
        """The loaded networks (``generate.model.Talker``), read once and shared by later calls."""
        if self.bundle_dir is None:
            self.load_context(context)
        if self._load_lock is None:
            self._load_lock = threading.Lock()
        with self._load_lock:
            if self._talker is None:
                from daetalker.generate.model import load_bundle

                self._talker = load_bundle(self.bundle_dir, None, str(self.bundle_dir))
        return self._talker

    # No type hints on predict: MLflow would try to derive a schema from them; signature() is the schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """``model_input``: DataFrame with ``audio`` (base64) and optional pose, steps, seed."""
        import pandas as pd

        records = self.render(parse_rows(model_input, self.limits), context=context)
        return pd.DataFrame.from_records(records, columns=["video", "n_frames", "duration_s"]).astype(
            {"n_frames": "int64", "duration_s": "float64"})

    def render(self, clips: list[ClipRequest], deadline: float | None = None, context: Any = None) -> list[dict]:
        """Parsed clips (:func:`~daetalker.registry.clips.parse_rows`) -> one answer record each; stops
        with ``GenerationTimeout`` past ``deadline`` (``time.monotonic()``; a server's per-request limit)."""
        done = render_clips(self.talker(context), clips, self.limits, deadline)
        return [{"video": base64.b64encode(c.video).decode("ascii"), "n_frames": c.n_frames,
                 "duration_s": c.duration_s} for c in done]  # fmt: skip

    def predict_paths(self, model_input: Any) -> Any:
        """In-process batch entry, never served: ``audio_path`` and ``out_path`` columns name files the
        caller owns (optional pose, steps, seed); returns ``video_path`` and ``n_frames``."""
        import pandas as pd

        from daetalker.generate.video import render_video

        missing = [c for c in PATH_COLUMNS if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks column(s) {missing}; expected {PATH_COLUMNS} (+ optional {OPTIONAL_COLUMNS})")
        talker = self.talker()
        paths, frames = [], []
        for _, row in model_input.iterrows():
            kwargs = {k: t(v) for k, t in (("pose", str), ("steps", int), ("seed", int))
                      if (v := cell(row, k)) is not None}
            result = render_video(talker, Path(row["audio_path"]), Path(row["out_path"]), progress=False, **kwargs)
            paths.append(str(result.path))
            frames.append(int(result.n_frames))
        return pd.DataFrame({"video_path": paths, "n_frames": pd.Series(frames, dtype="int64")})

"""Logging a bundle as a pyfunc model, and getting a verified bundle back from a model URI.

:func:`local_bundle` is what commands that take ``--model DIR|models:/NAME@ALIAS`` call
(``generate``, ``evaluate``): generation itself only reads bundle folders.

The model carries its requirements explicitly (no inference: that would load
the model in a subprocess). ``daetalker`` itself is not on PyPI: serving
environments get it from the project's image (``components/``), and the
version that logged the model is in the model's metadata.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import daetalker
from daetalker.bundle import manifest_sha256, verify_bundle
from daetalker.errors import DaetalkerError, IntegrityError

MODEL_NAME = "talker"  # the logged model's name inside its run
_REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "pyyaml", "soundfile", "scipy", "opencv-python-headless")


def pip_requirements() -> list[str]:
    out = []
    for dist in _REQUIREMENTS:
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(dist)
    return out


def log_bundle(bundle_dir: Path | str, run: Any = None, name: str = MODEL_NAME) -> Any:
    """Log ``bundle_dir`` (verified first) as a pyfunc model in ``run`` (active run, or its id); returns ModelInfo."""
    import mlflow

    from daetalker.registry.pyfunc import TalkerModel, signature

    bundle = Path(bundle_dir)
    manifest = verify_bundle(bundle)
    digest = manifest_sha256(bundle)
    run_id = run if isinstance(run, str) else (run.info.run_id if run is not None else None)
    active = mlflow.active_run()
    if run_id is not None and (active is None or active.info.run_id != run_id):
        with mlflow.start_run(run_id=run_id):
            return log_bundle(bundle, None, name)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=TalkerModel(manifest_sha256=digest),
        artifacts={"bundle": str(bundle)},
        signature=signature(),
        pip_requirements=pip_requirements(),
        metadata={"bundle_sha256": digest, "daetalker_version": daetalker.__version__, **manifest.meta},
    )


def fetch_bundle(model_uri: str, dst: Path | str | None = None, tracking_uri: str | None = None) -> Path:
    """Download ``model_uri`` (e.g. ``models:/talker-synth@champion``) and return its verified bundle folder.

    For callers that want the files, not the pyfunc wrapper (``daetalker generate``). The registry
    read is ``tracking_uri``, by default the project's store (:func:`tracking_store`), never
    MLflow's default ``./mlflow.db``; an error names the store it read.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from daetalker.services.mlflow_server import tracking_store

    store = tracking_store(uri=tracking_uri)
    # models:/ resolution opens a client on the *current* tracking URI whatever download_artifacts is
    # given; set it for this call only, so the caller's MLflow settings stay as they were
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    try:
        with _use_tracking_uri(store.uri):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri,
                                                             dst_path=str(dst) if dst else None))
    except MlflowException as e:  # unknown name, alias or version; server down
        raise DaetalkerError(
            f"{model_uri}: cannot fetch it from the MLflow registry at {store} ({str(e).splitlines()[0][:200]}) "
            "(fix: list the speaker's versions and aliases with `daetalker registry history SPEAKER`)") from e
    model = Model.load(str(local / "MLmodel"))
    entry = model.flavors.get("python_function", {}).get("artifacts", {}).get("bundle")
    expected = (model.metadata or {}).get("bundle_sha256")
    if not entry or not expected:
        raise IntegrityError(f"{model_uri}: not a daetalker talker model (no bundle artifact or bundle_sha256 in its MLmodel)")
    bundle = local / entry["path"]
    verify_bundle(bundle, expected)
    return bundle


@contextmanager
def local_bundle(source: str | Path, tracking_uri: str | None = None) -> Iterator[Path]:
    """A bundle folder for ``source``: a folder path as it is, or a ``models:/`` URI fetched and verified.

    A fetched model lives in a temporary folder removed when the ``with`` block ends. The
    folder path is not checked here: the loader (``generate.model.load_bundle``) verifies it.
    """
    text = str(source)
    if not text.startswith("models:/"):
        yield Path(text)
        return
    with tempfile.TemporaryDirectory(prefix="daetalker-model-") as work:
        yield fetch_bundle(text, Path(work) / "model", tracking_uri)

"""The model a server answers with, and following its alias.

``source`` is a bundle folder (served as it is, never reloaded) or a registry
URI: ``models:/NAME@ALIAS`` (followed: :meth:`Champion.reload` reads where the
alias points now and swaps in that version when it moved, so a promotion or
rollback reaches a running server) or ``models:/NAME/VERSION`` (fixed).
A version is downloaded into a private temporary folder and loaded through
``mlflow.pyfunc.load_model``, which verifies every bundled file against the
hashes recorded at registration; the networks are read before it is swapped
in, so requests never wait for a load. Requests in flight finish on the
version they started with.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from daetalker.errors import DaetalkerError, ServiceError
from daetalker.registry.clips import ClipLimits

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
log = logging.getLogger(__name__)


@dataclass
class Served:
    model: Any  # the TalkerModel, networks loaded
    name: str  # registered model name, or the bundle folder's name
    version: str | None  # None for a folder
    bundle_sha256: str
    source: str
    loaded_at: float = field(default_factory=time.time)
    workdir: Path | None = None  # the download, removed when this version is swapped out

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "version": self.version, "bundle_sha256": self.bundle_sha256,
                "source": self.source, "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}


def _load_folder(folder: Path, limits: ClipLimits) -> Served:
    from daetalker.bundle import manifest_sha256
    from daetalker.registry.pyfunc import TalkerModel

    if not (folder / "bundle.json").is_file():
        raise DaetalkerError(f"--model {folder}: not a bundle folder (no bundle.json) nor a models:/NAME@ALIAS URI")
    digest = manifest_sha256(folder)
    model = TalkerModel(digest)
    model.load_context(SimpleNamespace(artifacts={"bundle": str(folder)}))
    model.limits = limits
    model.talker()
    return Served(model, folder.name, None, digest, str(folder))


class Champion:
    """Holds the served version; ``current`` is swapped whole, so readers need no lock."""

    def __init__(self, source: str, limits: ClipLimits, tracking_uri: str | None = None) -> None:
        self.source = str(source)
        self.limits = limits
        self.tracking_uri = tracking_uri
        self.match = URI.match(self.source)
        if self.source.startswith("models:/") and not self.match:
            raise DaetalkerError(f"--model {source}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        self.store_uri = self._store_uri() if self.match else None
        self._reload_lock = threading.Lock()
        self.current = self._load(self._target_version())

    @property
    def follows_alias(self) -> bool:
        return bool(self.match and self.match["alias"])

    def _store_uri(self) -> str:
        """The registry, read once: this process serves one registry for its life. Set as MLflow's
        global URI too (``models:/`` downloads read that; MLflow's ``_use_tracking_uri`` would unset
        ``$MLFLOW_TRACKING_URI`` on leaving, and the next reload would read another registry)."""
        import mlflow

        from daetalker.services.mlflow_server import tracking_store

        uri = tracking_store(uri=self.tracking_uri).uri
        mlflow.set_tracking_uri(uri)
        return uri

    def _target_version(self) -> str | None:
        """The version the source names now (None for a folder); the registry is read for an alias."""
        if not self.match:
            return None
        if not self.match["alias"]:
            return self.match["version"]
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        uri = self.store_uri
        try:
            mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(self.match["name"], self.match["alias"])
        except MlflowException as e:
            raise ServiceError(f"{self.source}: cannot resolve the alias at {uri} ({str(e).splitlines()[0][:200]}) "
                               "(fix: check the name and alias with `daetalker registry history SPEAKER`)") from e
        return str(mv.version)

    def _load(self, version: str | None) -> Served:
        if not self.match:
            return _load_folder(Path(self.source), self.limits)
        import mlflow.pyfunc

        name = self.match["name"]
        work = Path(tempfile.mkdtemp(prefix="daetalker-serve-"))
        try:
            pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}", dst_path=str(work))
            model = pyfunc.unwrap_python_model()
            model.limits = self.limits
            model.talker()
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        digest = (pyfunc.metadata.metadata or {}).get("bundle_sha256", "")
        return Served(model, name, version, digest, self.source, workdir=work)

    def reload(self) -> dict[str, Any]:
        """Follow the alias: load and swap in the version it names if that is not the served one."""
        with self._reload_lock:
            before = self.current
            version = self._target_version()
            if not self.follows_alias or version == before.version:
                return {"changed": False, "previous": before.describe(), "current": before.describe()}
            self.current = self._load(version)
            log.info("%s: now serving version %s (was %s)", self.source, version, before.version)
            if before.workdir is not None:  # the networks are in memory; the files are not read again
                shutil.rmtree(before.workdir, ignore_errors=True)
            return {"changed": True, "previous": before.describe(), "current": self.current.describe()}

    def close(self) -> None:
        if self.current.workdir is not None:
            shutil.rmtree(self.current.workdir, ignore_errors=True)

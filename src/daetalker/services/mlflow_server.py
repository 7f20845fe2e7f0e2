"""The local MLflow tracking server: SQLite backend, proxied artifact folder.

State lives in one folder (``$DAETALKER_STATE`` or ``./.state``)::

    mlflow.db       SQLite backend and model registry
    artifacts/      artifact store, served through the server (--artifacts-destination)
    mlflow.pid      pid (= process-group id) of the running server
    mlflow.url      its URL
    mlflow.log      its stdout/stderr

Port: 5000 when free (MLflow's usual port, so bookmarks keep working), else a
free port the kernel picks. The server runs in its own session, so it outlives
the command that started it; ``stop`` signals the whole process group.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from daetalker.errors import ServiceError
from daetalker.services.process import (
    LOOPBACK,
    free_port,
    group_alive,
    log_tail,
    port_is_free,
    read_pid,
    stop_group,
)

DEFAULT_PORT = 5000
START_TIMEOUT_S = 120.0  # ~7 s on 2 cores; generous for a cold disk cache


def default_state_dir() -> Path:
    """``$DAETALKER_STATE`` or ``./.state`` (gitignored)."""
    return Path(os.environ.get("DAETALKER_STATE") or ".state").resolve()


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    # MLflow 3 otherwise forks job-consumer processes that outlive the server.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # The server must not log its own runs to another tracking server.
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


class MlflowServer:
    """One MLflow server per state folder; ``start`` is idempotent."""

    def __init__(self, state_dir: Path | str | None = None, port: int | None = None) -> None:
        self.state_dir = Path(state_dir).resolve() if state_dir else default_state_dir()
        self.port = port
        self.pid_file = self.state_dir / "mlflow.pid"
        self.url_file = self.state_dir / "mlflow.url"
        self.log_file = self.state_dir / "mlflow.log"
        self.db_file = self.state_dir / "mlflow.db"
        self.artifacts_dir = self.state_dir / "artifacts"

    # ------------------------------------------------------------ queries
    @property
    def pid(self) -> int | None:
        return read_pid(self.pid_file, expect="mlflow")

    @property
    def url(self) -> str | None:
        """URL of the running server, or None when it is down."""
        if self.pid is None:
            return None
        try:
            return self.url_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def is_healthy(self, timeout: float = 2.0) -> bool:
        url = self.url
        return url is not None and _health_ok(url, timeout)

    # ------------------------------------------------------------ control
    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start the server (or find it running) and return its URL once /health answers."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            pid, url = self.pid, self.url
            if pid is not None and url:
                self._wait_healthy(pid, url, timeout)
                return url
            if pid is not None:  # running but its URL file is gone: unusable, restart
                stop_group(pid)
            self._clear()
            port = self._pick_port()
            url = f"http://{LOOPBACK}:{port}"
            cmd = [
                sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", f"sqlite:///{self.db_file}",
                "--artifacts-destination", str(self.artifacts_dir),
                "--host", LOOPBACK, "--port", str(port),
                "--workers", "1",  # ~7 s to start; 4 workers take ~16 s
            ]  # fmt: skip
            with open(self.log_file, "wb") as log:
                proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=_server_env(),
                    cwd=self.state_dir,
                    start_new_session=True,
                )
            self.pid_file.write_text(f"{proc.pid}\n")
            self.url_file.write_text(f"{url}\n")
            try:
                self._wait_healthy(proc.pid, url, timeout)
            except ServiceError:
                stop_group(proc.pid, timeout=5.0)
                self._clear()
                raise
            return url

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the server's whole process group. False if it was not running."""
        with self._lock():
            pid = self.pid
            if pid is not None:
                stop_group(pid, timeout=timeout)
            self._clear()
            return pid is not None

    # ------------------------------------------------------------ internals
    def _pick_port(self) -> int:
        if self.port is not None:
            if not port_is_free(self.port):
                raise ServiceError(
                    f"MLflow: port {self.port} on {LOOPBACK} is in use by another program "
                    f"(fix: pass a free --port, or omit --port to pick one)"
                )
            return self.port
        return DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()

    def _wait_healthy(self, pid: int, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _health_ok(url, timeout=1.0):
                return
            if not group_alive(pid):
                raise ServiceError(
                    f"MLflow server exited during start-up; see {self.log_file}:\n"
                    f"{log_tail(self.log_file)}"
                )
            time.sleep(0.2)
        raise ServiceError(
            f"MLflow server at {url} did not answer /health within {timeout:.0f} s; "
            f"see {self.log_file}:\n{log_tail(self.log_file)}"
        )

    def _clear(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        self.url_file.unlink(missing_ok=True)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # Two commands starting the server at once must not start two servers.
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "mlflow.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _health_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class TrackingStore:
    """The MLflow server a command reads and writes, and why that one."""

    uri: str
    source: str  # "$MLFLOW_TRACKING_URI" or "the local server of <state dir>"

    def __str__(self) -> str:
        return f"{self.uri} ({self.source})"


def tracking_store(state_dir: Path | str | None = None, uri: str | None = None) -> TrackingStore:
    """The one answer to "which MLflow?" for every command: ``uri`` if a caller was given one, else
    ``$MLFLOW_TRACKING_URI``, else the project's local server under the state folder (started if
    down). Never MLflow's own default (``./mlflow.db`` in whatever folder the command runs from)."""
    if uri:
        return TrackingStore(uri, "given by the caller")
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return TrackingStore(uri, "$MLFLOW_TRACKING_URI")
    server = MlflowServer(state_dir)
    return TrackingStore(server.start(), f"the local server of {server.state_dir}; set MLFLOW_TRACKING_URI "
                                         "to read another")


def ensure_tracking_uri(state_dir: Path | str | None = None) -> str:
    """:func:`tracking_store`'s URI.

    A server started here keeps running after this process exits, like
    ``daetalker mlflow up``; ``daetalker mlflow down`` stops it.
    """
    return tracking_store(state_dir).uri

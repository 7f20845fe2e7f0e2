"""The local servers really start, answer, and stop with their whole process group."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from daetalker.errors import ServiceError
from daetalker.services.mlflow_server import MlflowServer, ensure_tracking_uri
from daetalker.services.process import free_port, group_members, port_is_free
from daetalker.services.s3_server import S3Server


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``daetalker`` entry point, as a user runs it."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "daetalker"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def health(url: str) -> str:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
        return r.read().decode()


@pytest.mark.slow
def test_mlflow_cli_and_api_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (MlflowServer.start from Python is what the session's mlflow_server fixture runs.)
    state = tmp_path / "state"
    try:
        _lifecycle(state, monkeypatch)
    finally:  # a failed assertion must not leave a server running
        MlflowServer(state).stop()


def _lifecycle(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    r = cli("mlflow", "up", "--state", str(state), "--port", str(port))
    assert r.returncode == 0, r.stderr
    print(r.stderr.strip())  # "MLflow started in X s"
    url = f"http://127.0.0.1:{port}"
    assert r.stdout.strip() == url and health(url) == "OK"

    server = MlflowServer(state)
    pid = server.pid
    assert pid is not None and (state / "mlflow.pid").read_text().strip() == str(pid)
    assert server.url == url and server.is_healthy()
    # Its own process group (pid == pgid), holding the uvicorn worker too.
    assert os.getpgid(pid) == pid and len(group_members(pid)) >= 2

    # Idempotent: starting again from Python or the CLI finds the same server.
    assert MlflowServer(state, port=free_port()).start(timeout=10) == url and server.pid == pid
    r = cli("mlflow", "up", "--state", str(state))
    assert r.returncode == 0 and r.stdout.strip() == url and server.pid == pid
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DAETALKER_STATE", str(state))
    assert ensure_tracking_uri() == url and server.pid == pid
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:1")
    assert ensure_tracking_uri() == "http://example.invalid:1"

    r = cli("mlflow", "status", "--state", str(state))
    assert r.returncode == 0 and r.stdout.strip() == f"up {url}"
    r = cli("mlflow", "down", "--state", str(state))
    assert r.returncode == 0 and r.stdout.strip() == "stopped", r.stderr
    # The whole group is gone (no orphaned worker), the pid file too, the port is free.
    assert group_members(pid) == []
    assert not (state / "mlflow.pid").exists() and server.url is None and not server.is_healthy()
    assert port_is_free(port)
    r = cli("mlflow", "status", "--state", str(state))
    assert r.returncode == 1 and r.stdout.strip() == "down"
    assert server.stop() is False  # stopping twice is harmless
    r = cli("mlflow", "down", "--state", str(state))
    assert r.returncode == 0 and r.stdout.strip() == "not running"


def test_mlflow_port_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(ServiceError, match=f"port {busy} .* in use"):
            MlflowServer(tmp_path, port=busy).start()
    assert not (tmp_path / "mlflow.pid").exists()


@pytest.mark.slow
def test_mlflow_start_failure_names_the_log_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").mkdir()  # SQLite cannot open a folder: MLflow retries forever
    server = MlflowServer(tmp_path, port=free_port())
    with pytest.raises(ServiceError) as info:
        server.start(timeout=8)
    msg = str(info.value)
    assert "did not answer /health within 8 s" in msg and str(tmp_path / "mlflow.log") in msg
    assert not (tmp_path / "mlflow.pid").exists() and server.pid is None
    # The half-started server was stopped with its whole group: nothing still runs from here.
    leftovers = [
        p.parent.name
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if _readable(p) and str(tmp_path).encode() in p.read_bytes()
    ]
    assert leftovers == []


def _readable(p: Path) -> bool:
    try:
        p.read_bytes()
    except OSError:
        return False
    return True


def test_stale_pid_file_reads_as_down(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / "mlflow.pid").write_text(f"{proc.pid}\n")
    (tmp_path / "mlflow.url").write_text("http://127.0.0.1:1\n")
    server = MlflowServer(tmp_path)
    assert server.pid is None and server.url is None and not server.is_healthy()
    # A live process that is not MLflow (pid reused) is not taken for the server either.
    (tmp_path / "mlflow.pid").write_text(f"{os.getpid()}\n")
    assert server.pid is None


@pytest.mark.slow
def test_s3_server_serves_checks_signatures_and_stops(tmp_path: Path) -> None:
    server = S3Server(tmp_path, bucket="probe")
    try:
        t0 = time.monotonic()
        endpoint = server.start()
        print(f"seaweedfs start: {time.monotonic() - t0:.1f} s")
        pid = server.pid
        assert pid is not None and os.getpgid(pid) == pid
        # Every listening port is one of the pinned, free-picked ones on loopback.
        assert endpoint == f"http://127.0.0.1:{server.ports['s3']}"
        assert len(set(server.ports.values())) == 8
        assert all(not port_is_free(p) for p in server.ports.values())
        identities = json.loads((tmp_path / "identities.json").read_text())
        assert identities["identities"][0]["credentials"][0]["secretKey"] == server.secret_key
        assert (tmp_path / "identities.json").stat().st_mode & 0o077 == 0

        payload = os.urandom(300_000)
        client = server.client()
        client.put_object(Bucket="probe", Key="a/b.bin", Body=payload)
        assert client.get_object(Bucket="probe", Key="a/b.bin")["Body"].read() == payload
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["probe"]
        env = server.env()
        assert env["AWS_ACCESS_KEY_ID"] == server.access_key and env["DAETALKER_S3_ENDPOINT"] == endpoint

        from botocore.exceptions import ClientError

        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            server.client(secret_key="not-the-secret").get_object(Bucket="probe", Key="a/b.bin")
    finally:  # a failed assertion must not leave the server running
        t0 = time.monotonic()
        server.stop()
        print(f"seaweedfs stop: {time.monotonic() - t0:.1f} s")
    assert group_members(pid) == []
    assert all(port_is_free(p) for p in server.ports.values())
    assert not (tmp_path / "weed.pid").exists()

"""Shared fixtures: real servers on loopback, a hermetic environment, real clips.

Fixtures for every test module:

``mlflow_server`` (session)
    A real MLflow server (SQLite + artifact folder in a temp dir, free port).
    Yields its URL and sets ``MLFLOW_TRACKING_URI`` to it until the session
    ends, so ``daetalker.tracking.start_run`` and plain ``mlflow`` calls log
    there. Stopped by pid (whole process group) at the end.
``s3_server`` (session)
    A real SeaweedFS S3 store with one bucket and per-run credentials. Yields
    the :class:`~daetalker.services.S3Server`: ``.endpoint``, ``.bucket``,
    ``.access_key``, ``.secret_key``, ``.client()`` (boto3) and ``.env()``, the
    variables a client needs. Credentials are NOT put in the environment; a
    test that wants them does ``for k, v in s3_server.env().items():
    monkeypatch.setenv(k, v)``.
``real_clips``
    ``Path`` of ``$DAETALKER_REAL_CLIPS``; skips the test when unset.
``grid_s1``
    ``Path`` of ``$DAETALKER_REAL_SPEAKERS/grid-s1`` (one real speaker's GRID sentences); skips when unset.

The autouse ``_hermetic_env`` fixture makes every test independent of the
caller's shell: analytics and MLflow job runners off, no inherited tracking
server, S3 remote or AWS credentials, and ``DAETALKER_STATE`` pointed at a
session temp dir (so nothing writes ``./.state``; any MLflow server a test
starts there through ``ensure_tracking_uri`` is stopped at the end).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

import daetalker  # noqa: F401  (sets GOMP_SPINCOUNT before any test module loads torch)

_CLEARED = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
    "DAETALKER_S3_ENDPOINT",
    "DAETALKER_S3_BUCKET",
    "DAETALKER_S3_PREFIX",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Session-wide environment for all tests; restored afterwards. Yields the state dir."""
    from daetalker.services.mlflow_server import MlflowServer

    state = tmp_path_factory.mktemp("daetalker-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GX_ANALYTICS_ENABLED", "false")
        mp.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        mp.setenv("DVC_NO_ANALYTICS", "1")
        mp.setenv("DAETALKER_STATE", str(state))
        # No ~/.aws files either: boto3 must see only what a test gives it.
        mp.setenv("AWS_CONFIG_FILE", str(state / "no-aws-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(state / "no-aws-credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no 1-s probes of 169.254.169.254
        for name in _CLEARED:
            mp.delenv(name, raising=False)
        try:
            yield state
        finally:
            MlflowServer(state).stop()


@pytest.fixture(scope="session")
def mlflow_server(_hermetic_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real MLflow server for the whole session (also in MLFLOW_TRACKING_URI)."""
    from daetalker.services.mlflow_server import MlflowServer
    from daetalker.services.process import free_port

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), port=free_port())
    url = server.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", url)
        try:
            yield url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_server(_hermetic_env: Path, tmp_path_factory: pytest.TempPathFactory):
    """A running SeaweedFS S3 server with bucket ``daetalker-test`` (see module docstring)."""
    from daetalker.services.s3_server import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3"), bucket="daetalker-test")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Micro models gain nothing from intra-op threads and lose a lot on a shared 2-core box. Modules
    that train or sample them use this (``pytestmark``); module scope covers their module fixtures
    too, and the setting is restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("DAETALKER_TEST_THREADS", "1")))  # bench/stability.py asks for 2
    yield
    torch.set_num_threads(n)


@pytest.fixture
def real_clips() -> Path:
    """Folder of real speaker clips from ``$DAETALKER_REAL_CLIPS``; skips when unset."""
    value = os.environ.get("DAETALKER_REAL_CLIPS")
    if not value:
        pytest.skip("DAETALKER_REAL_CLIPS is not set (folder of real speaker clips)")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"DAETALKER_REAL_CLIPS={value} is not a folder")
    return path


@pytest.fixture(scope="session")
def grid_s1() -> Path:
    """grid-s1 (video/<id>.mpg, align/<id>.align) from ``$DAETALKER_REAL_SPEAKERS``; skips when unset."""
    value = os.environ.get("DAETALKER_REAL_SPEAKERS")
    if not value:
        pytest.skip("DAETALKER_REAL_SPEAKERS is not set (folder holding grid-s1/)")
    path = Path(value) / "grid-s1"
    if not (path / "video").is_dir():
        pytest.fail(f"DAETALKER_REAL_SPEAKERS={value} has no grid-s1/video folder")
    return path

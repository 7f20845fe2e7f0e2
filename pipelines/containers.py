"""Run the local pipeline's tasks in the image: kfp.local's DockerRunner against podman.

There is no Docker engine here; podman serves a Docker-compatible API
(``podman system service``) on a unix socket under the state folder. The
service runs in its own session, is started for one pipeline run and stopped
by its pid, like the MLflow server. The podman settings this machine kind needs
(runc, no default rlimits) come from components/image/containers.conf through
``CONTAINERS_CONF``, for the service only.

Each task's container:

- runs the image ``make image`` built (the one the components name);
- shares the host's network, so the MLflow server and the S3 store that bind
  127.0.0.1 are reached at the same URLs;
- mounts the workspace (and the state folder, when it lies outside it) at the
  same path, so the run context's paths hold inside; kfp mounts the pipeline
  root itself; nothing else of the checkout is there;
- runs as the caller's uid:gid (files written into the workspace keep their
  owner, as ``docker run --user $(id -u):$(id -g)`` does) with a read-only root
  file system and tmpfs /tmp and $HOME.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from daetalker.errors import ServiceError
from daetalker.services.process import log_tail, read_pid, stop_group

CONTAINERS_CONF = Path(__file__).resolve().parent.parent / "components" / "image" / "containers.conf"
IMAGE_HOME = "/home/daetalker"  # HOME in the image (components/Dockerfile)
RUN_LABEL = "io.daetalker.pipeline-run"  # on each step's container: the MLflow parent run it belongs to
START_TIMEOUT_S = 30.0
# Host variables a task needs: the tracking server, the parent run, the S3 remote and its credentials.
PASSED_ENV = ("MLFLOW_TRACKING_URI", "DAETALKER_PARENT_RUN_ID", "DAETALKER_S3_ENDPOINT", "DAETALKER_S3_BUCKET",
              "DAETALKER_S3_PREFIX", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
              "DAETALKER_DEBUG", "DAETALKER_ACTOR")  # fmt: skip


class PodmanService:
    """``podman system service`` on ``STATE/podman/docker.sock``; ``start`` returns a DOCKER_HOST URL."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir).resolve() / "podman"
        self.socket = self.dir / "docker.sock"
        self.pid_file = self.dir / "service.pid"
        self.log_file = self.dir / "service.log"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return read_pid(self.pid_file, expect="podman")

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        if self.pid is not None:
            return self.url
        podman = shutil.which("podman")
        if podman is None:
            raise ServiceError("podman is not installed (fix: `make image`, which installs podman and runc and "
                               "builds the image)")  # fmt: skip
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}
        with open(self.log_file, "wb") as log:
            proc = subprocess.Popen([podman, "system", "service", "--time=0", self.url], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)  # fmt: skip
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while not self._answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"podman system service did not answer on {self.socket} "
                                   f"(log {self.log_file}):\n{log_tail(self.log_file)}")  # fmt: skip
            time.sleep(0.2)
        return self.url

    def _answers(self) -> bool:
        import docker

        if not self.socket.exists():
            return False
        try:
            client = docker.DockerClient(base_url=self.url, timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except docker.errors.DockerException:
            return False

    def stop(self) -> bool:
        """Stop the service's process group by its pid. False if it was not running."""
        pid = self.pid
        if pid is not None:
            stop_group(pid, timeout=10.0)
        self.pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)
        return pid is not None

    def __enter__(self) -> "PodmanService":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ContainerTasks:
    """How DockerRunner runs each task (see the module docstring)."""

    image: str
    workspace: Path
    state_dir: Path
    run_id: str = ""  # labels the containers, so that an interrupted run stops its step (stop_containers)
    env: dict[str, str] = field(default_factory=dict)

    def mounts(self) -> list[Any]:
        from docker.types import Mount

        paths = [self.workspace.resolve()]
        state = self.state_dir.resolve()
        if not state.is_relative_to(paths[0]):
            paths.append(state)
        return [Mount(target=str(p), source=str(p), type="bind") for p in paths]

    def environment(self) -> dict[str, str]:
        passed = {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
        return {**passed, "DAETALKER_STATE": str(self.state_dir.resolve()), "HOME": IMAGE_HOME, **self.env}

    def runner(self) -> Any:
        import kfp.local

        return kfp.local.DockerRunner(
            network_mode="host", user=f"{os.getuid()}:{os.getgid()}", read_only=True,
            tmpfs={"/tmp": "rw,exec", IMAGE_HOME: "rw"}, mounts=self.mounts(), environment=self.environment(),
            working_dir=str(self.workspace.resolve()), labels={RUN_LABEL: self.run_id},
        )  # fmt: skip


def stop_containers(docker_host: str, run_id: str) -> int:
    """Stop the run's containers that still run (the step of an interrupted run); how many there were."""
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        running = client.containers.list(filters={"label": f"{RUN_LABEL}={run_id}"})
        for container in running:
            container.stop(timeout=5)
        return len(running)
    finally:
        client.close()


def one_image_for_every_task() -> str:
    """Locally there is one image, the CPU one ``make image`` builds: the steps that name the GPU image
    (training, evaluation) run in it too. The component modules read the image names when first
    imported, so this runs before they are."""
    import components

    if components.GPU_IMAGE != components.CPU_IMAGE:
        loaded = [m for m in ("components.training", "components.evaluation", "components.registry")
                  if m in sys.modules]  # fmt: skip
        if loaded:
            raise ServiceError(f"{', '.join(loaded)} already name the image {components.GPU_IMAGE} (fix: set "
                               f"DAETALKER_GPU_IMAGE={components.CPU_IMAGE} for a local run in containers)")  # fmt: skip
        components.GPU_IMAGE = components.CPU_IMAGE
    return components.CPU_IMAGE


def warn_if_stale(image: str, built_from: str, checkout: Path) -> None:
    """The steps run the package installed in the image, not the checkout's: say so when they differ."""
    import warnings

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()
    if head and built_from != head:
        warnings.warn(f"image {image} was built from commit {built_from[:12]}, the checkout is at {head[:12]}: "
                      "the steps run the image's code (fix: `make image`)", stacklevel=2)  # fmt: skip


@contextmanager
def podman_gone_container_is_not_found() -> Iterator[None]:
    """Debian's podman 4.3 answers a look-up of a container it is removing with 500 "no such container"
    where Docker answers 404. kfp's DockerRunner removes each container as it exits and takes 404
    (NotFound) as "it has exited"; the 500 failed a quick step at random (1 run in 5 of a 1-s step).
    While this is open, that answer is raised as NotFound."""
    import docker.api.client as api_client
    import docker.errors

    original = api_client.create_api_error_from_http_exception

    def translate(e: Any) -> Any:
        r = e.response
        if r is not None and r.status_code == 500 and "no such container" in (r.text or "").lower():
            raise docker.errors.NotFound(e, response=r, explanation=r.text) from e
        return original(e)

    api_client.create_api_error_from_http_exception = translate
    try:
        yield
    finally:
        api_client.create_api_error_from_http_exception = original


def require_image(docker_host: str, image: str) -> str:
    """The git commit the image was built from (its revision label); a clear error when podman's store lacks it."""
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        return client.images.get(image).labels.get("org.opencontainers.image.revision", "unknown")
    except docker.errors.ImageNotFound:
        raise ServiceError(f"image {image} is not in podman's store (fix: `make image`, or set DAETALKER_IMAGE "
                           "to an image built from components/Dockerfile)") from None  # fmt: skip
    finally:
        client.close()

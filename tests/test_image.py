"""The built CPU image (``make image``), run with podman as user 1000 with a read-only root file system.

Skipped, with the reason, where podman or the image is missing: building the
image takes ~12 minutes of the 2-core CI budget, so CI (a clean clone) does not
build it and these tests run where ``make image`` was run.
"""

import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import docker
import pandas as pd
import pytest
from kfp import dsl

from daetalker.assets import ASSETS
from daetalker.services.process import group_alive

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = ROOT / "components" / "image" / "containers.conf"
IMAGE = os.environ.get("DAETALKER_IMAGE", "ghcr.io/daetalker/daetalker:0.1.0-cpu")

pytestmark = pytest.mark.slow


def _podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: `make image` installs it and builds the image (not done in CI: "
                    "the build takes ~12 min of its time budget)")  # fmt: skip
    found = subprocess.run(["podman", "image", "exists", IMAGE], env=_podman_env(), capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"image {IMAGE} is not built: run `make image` (not done in CI: it takes ~12 min)")
    # An image of another commit may lack what this checkout pins (assets, commands): test the checkout's own.
    built = subprocess.run(["podman", "image", "inspect", "--format",
                            '{{index .Labels "org.opencontainers.image.revision"}}', IMAGE],
                           env=_podman_env(), capture_output=True, text=True).stdout.strip()  # fmt: skip
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if built.removesuffix("+dirty") != head:
        pytest.skip(f"image {IMAGE} was built from commit {built or 'unknown'}, the checkout is at {head or 'unknown'}: "
                    "run `make image` to test this checkout's image")  # fmt: skip
    return IMAGE


def run_in_image(image: str, *args: str, mounts: dict[Path, str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:  # fmt: skip
    """``podman run`` as user 1000, root file system read-only, no network (nothing may be downloaded)."""
    cmd = ["podman", "run", "--rm", "--read-only", "--user", "1000:1000", "--network", "none",
           "--tmpfs", "/home/daetalker:rw,mode=1777"]  # fmt: skip
    for host, inside in (mounts or {}).items():
        cmd += ["-v", f"{host}:{inside}:rw"]
    return subprocess.run([*cmd, image, *args], env=_podman_env(), capture_output=True, text=True, timeout=timeout)


def test_cli_help_runs_as_user_1000_on_a_read_only_root(image):
    help_ = run_in_image(image, "daetalker", "--help")
    assert help_.returncode == 0, help_.stderr
    for command in ("preprocess", "train-dae", "generate", "pipeline", "assets"):
        assert command in help_.stdout
    who = run_in_image(image, "sh", "-c", "id -u; id -g; touch /opt/venv/x 2>&1; echo rc=$?")
    lines = who.stdout.splitlines()
    assert lines[:2] == ["1000", "1000"]
    assert "Read-only file system" in who.stdout and lines[-1] == "rc=1"


def test_every_asset_is_in_the_image_with_its_pinned_sha256(image):
    proc = run_in_image(image, "daetalker", "assets")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in proc.stdout.splitlines() if not line.startswith("#")}
    assert set(rows) == set(ASSETS)
    for name, asset in ASSETS.items():
        _, state, sha256, path, _ = rows[name]
        assert (state, sha256, path) == ("ok", asset.sha256, f"/opt/daetalker/assets/{name}")


def test_preprocess_of_a_short_clip_in_the_image(image, tmp_path):
    """The synthetic speaker's clip (espeak-ng, ffmpeg) and its preprocessing (LiteRT face models), in the image."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # written by uid 1000 inside
    mounts = {data: "/data"}
    synth = run_in_image(image, "daetalker", "synth", "--out", "/data/raw", "--minutes", "0.1", "--no-progress",
                         "--no-mlflow", mounts=mounts)  # fmt: skip
    assert synth.returncode == 0, synth.stdout + synth.stderr
    prep = run_in_image(image, "daetalker", "preprocess", "--in", "/data/raw", "--out", "/data/ds", "--profile",
                        "tiny", "--no-mlflow", mounts=mounts)  # fmt: skip
    assert prep.returncode == 0, prep.stdout + prep.stderr
    assert re.search(r"^[1-9]\d* clips \([1-9]\d* frames", prep.stdout, re.M), prep.stdout
    manifest = pd.read_parquet(data / "ds" / "manifest.parquet")
    assert len(manifest) >= 1
    assert (data / "ds" / "manifest.parquet").stat().st_uid == 1000  # written by the image's user


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def probe(workspace: str, url: str) -> str:
    """What a pipeline step sees in its container: user, root file system, host loopback, workspace, $HOME."""
    import json
    import os
    import urllib.request

    def writable(path: str) -> bool:
        try:
            with open(path, "w") as f:
                f.write("x")
            return True
        except OSError:
            return False

    with open(os.path.join(workspace, "from-the-container.txt"), "w") as f:
        f.write("written in the image")
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    return json.dumps({"uid": os.getuid(), "gid": os.getgid(), "http": body, "root": writable("/opt/x"),
                       "home": writable(os.path.expanduser("~/x")), "tmp": writable("/tmp/x"),
                       "state": os.environ["DAETALKER_STATE"], "cwd": os.getcwd()})


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from the host")

    def log_message(self, *args: object) -> None:
        pass


def test_a_pipeline_step_runs_in_the_image_through_podmans_docker_api(image, tmp_path, monkeypatch):
    """kfp.local's DockerRunner with pipelines.containers' settings, as `pipeline run --containers` uses them."""
    import kfp.local

    from daetalker.errors import ServiceError
    from pipelines.containers import (RUN_LABEL, ContainerTasks, PodmanService, podman_gone_container_is_not_found,
                                      require_image, stop_containers)  # fmt: skip

    workspace, state = tmp_path / "ws", tmp_path / "state"
    workspace.mkdir()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    service = PodmanService(state)
    try:
        monkeypatch.setenv("DOCKER_HOST", service.start())
        pid = service.pid
        assert pid is not None
        assert re.fullmatch(r"[0-9a-f]{40}|unknown", require_image(service.url, image))  # the commit it was built from
        with pytest.raises(ServiceError, match="make image"):
            require_image(service.url, "localhost/daetalker-never-built:0")
        kfp.local.init(runner=ContainerTasks(image, workspace, state).runner(), pipeline_root=str(tmp_path / "root"))
        with podman_gone_container_is_not_found():  # a 1-s step: the race that shim covers
            task = probe(workspace=str(workspace), url=f"http://127.0.0.1:{server.server_port}/")
        # an interrupted run stops its step's container, and only its own
        client = docker.DockerClient(base_url=service.url)
        step = client.containers.run(image, ["sh", "-c", "trap 'exit 0' TERM; sleep 120 & wait"], detach=True,
                                     labels={RUN_LABEL: "run-a"})  # fmt: skip
        assert stop_containers(service.url, "run-b") == 0 and stop_containers(service.url, "run-a") == 1
        step.reload()
        assert step.status == "exited"
        step.remove()
        client.close()
    finally:
        service.stop()
        server.shutdown()
    assert not group_alive(pid) and not service.socket.exists()
    seen = json.loads(task.output)
    assert (seen["uid"], seen["gid"]) == (os.getuid(), os.getgid())
    assert seen["http"] == "hello from the host"  # the host's loopback: MLflow and S3 are reached the same way
    assert (seen["root"], seen["home"], seen["tmp"]) == (False, True, True)
    assert (seen["state"], seen["cwd"]) == (str(state.resolve()), str(workspace.resolve()))
    assert (workspace / "from-the-container.txt").read_text() == "written in the image"

"""``daetalker serve`` on loopback: bytes in, a decodable mp4 out, and nothing else gets in or out.

One real server (a subprocess of the CLI, stopped by pid) serves a micro
random bundle with small limits; requests go through ``http.client``. Every
answer is checked for stack traces and server paths as it arrives. The alias
test registers two versions on the session's MLflow server and moves
``@champion`` between them under a running server.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import soundfile as sf

from daetalker.services.process import free_port

SR = 16000
LIMITS = ["serve.max_audio_seconds=3", "serve.max_body_mb=0.5", "serve.max_concurrent=1", "serve.max_queue=1",
          "serve.max_clips=2", "serve.request_timeout_s=120"]  # fmt: skip
LEAKS = ("Traceback", 'File "', "site-packages", ".py\", line")


def tone(path: Path, seconds: float, sr: int = SR) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class Server:
    """A ``daetalker serve`` subprocess on a free loopback port; its TMPDIR is ``tmp``."""

    def __init__(self, model: str, root: Path, settings: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.tmp = root / "server-tmp"
        self.cwd = root / "server-cwd"
        self.tmp.mkdir(parents=True)
        self.cwd.mkdir()
        self.log = root / "server.log"
        args = [str(Path(sys.executable).parent / "daetalker"), "serve", "--model", model, "--port", str(self.port)]
        for s in settings:
            args += ["--set", s]
        full_env = {**os.environ, "TMPDIR": str(self.tmp), "OMP_NUM_THREADS": "1", **(env or {})}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(args, cwd=self.cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip

    def wait_ready(self, timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"server exited: {self.log.read_text()[-2000:]}"
            try:
                if request(self.port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request; the answer must be JSON without a stack trace or a server path."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    text = raw.decode(errors="replace")
    for leak in LEAKS:
        assert leak not in text, f"{method} {path} -> {resp.status} leaks {leak!r}: {text[:800]}"
    assert resp.getheader("content-type", "").startswith("application/json"), text[:300]
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw)


def invoke(port: int, rows: list[dict[str, Any]] | None = None, doc: Any = None) -> tuple[int, dict[str, str], Any]:
    payload = json.dumps(doc if doc is not None else {"dataframe_records": rows}).encode()
    return request(port, "POST", "/invocations", payload, {"Content-Type": "application/json"})


def probe(mp4: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,codec_name,nb_read_frames:format=duration", "-of", "json", str(mp4)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from daetalker.bundle.build import make_test_bundle

    return Path(make_test_bundle(tmp_path_factory.mktemp("serve-bundle") / "bundle"))


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(str(bundle), tmp_path_factory.mktemp("serve"), LIMITS)
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serve-clips")
    out = {"1s": tone(d / "one.wav", 1.0), "2s": tone(d / "two.wav", 2.0), "4s": tone(d / "four.wav", 4.0)}
    out["mp3"] = d / "one.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(out["1s"]), "-c:a", "libmp3lame", "-y", str(out["mp3"])],
                   check=True)  # fmt: skip
    # a minute of silence that compresses to a few kB: the limit must hold before decoding it all
    out["long-opus"] = d / "long.ogg"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "60",
                    "-c:a", "libopus", "-b:a", "6k", "-y", str(out["long-opus"])], check=True)  # fmt: skip
    return out


def leftovers(server: Server) -> list[str]:
    return sorted(p.name for p in server.tmp.iterdir())


# ---------------------------------------------------------------- the round trip


def test_round_trip_gives_a_decodable_mp4_with_the_input_duration(server: Server, clips: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    before = leftovers(server)
    status, _, body = invoke(server.port, [{"audio": b64(clips["1s"]), "steps": 1}])
    assert status == 200, body
    (pred,) = body["predictions"]
    assert pred["n_frames"] == 25 and pred["duration_s"] == pytest.approx(1.0)
    mp4 = tmp_path / "out.mp4"
    mp4.write_bytes(base64.b64decode(pred["video"]))
    info = probe(mp4)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert video["codec_name"] == "h264" and int(video["nb_read_frames"]) == 25
    assert any(s["codec_type"] == "audio" for s in info["streams"])
    assert float(info["format"]["duration"]) == pytest.approx(1.0, abs=0.05)

    # another format, MLflow's other DataFrame layout: same answer shape
    status, _, body = invoke(server.port, doc={"dataframe_split": {"columns": ["audio", "steps"],
                                                                   "data": [[b64(clips["mp3"]), 1]]}})
    assert status == 200, body
    assert 24 <= body["predictions"][0]["n_frames"] <= 26  # mp3 adds encoder padding
    assert leftovers(server) == before  # each request's private folder is gone
    assert not list(server.cwd.iterdir())


def test_health_and_version_name_the_served_bundle(server: Server, bundle: Path) -> None:
    from daetalker.bundle import manifest_sha256

    status, _, health = request(server.port, "GET", "/health")
    assert status == 200 and health["status"] == "ok"
    status, _, version = request(server.port, "GET", "/version")
    assert status == 200
    assert version["bundle_sha256"] == manifest_sha256(bundle) and version["version"] is None
    assert version["follows_alias"] is False
    status, _, body = request(server.port, "POST", "/reload")  # a folder is served as it is
    assert status == 200 and body["changed"] is False


# ---------------------------------------------------------------- nothing outside the request's folder


def test_a_request_cannot_read_a_server_file(server: Server, clips: dict[str, Path], tmp_path: Path) -> None:
    secret_wav = tone(tmp_path / "secret.wav", 2.0)
    secret_ts = tmp_path / "secret.ts"  # HLS opens a segment with a media extension, anywhere on the disk
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(secret_wav), "-c:a", "aac", "-f", "mpegts", "-y", str(secret_ts)],
                   check=True)  # fmt: skip
    secret_txt = tmp_path / "secret.txt"
    secret_txt.write_text("yaw,pitch,roll\nTOP-SECRET-7731\n")
    (tmp_path / "clip").mkdir()
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{secret_ts}\n#EXT-X-ENDLIST\n"
    playlist = tmp_path / "upload"
    playlist.write_text(hls)  # the attack is real: plain ffmpeg, even limited to the file protocol, reads the secret
    plain = subprocess.run(["ffmpeg", "-v", "error", "-protocol_whitelist", "file", "-i", f"file:{playlist}",
                            "-f", "wav", "-y", str(tmp_path / "leak.wav")], capture_output=True)  # fmt: skip
    assert plain.returncode == 0 and sf.info(str(tmp_path / "leak.wav")).duration > 1.9
    playlists = {
        "hls": hls,
        "ffconcat": "ffconcat version 1.0\nfile 'secret.wav'\n",
        "sdp": "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 9 RTP/AVP 0\n",
    }
    for name, text in playlists.items():  # demuxers that open other files or sockets are not on the list
        status, _, body = invoke(server.port, [{"audio": base64.b64encode(text.encode()).decode()}])
        assert status == 422, (name, body)
        assert "not audio" in body["message"]
    attempts = [
        ([{"audio": str(secret_wav)}], 400, "base64"),  # a path where bytes belong
        ([{"audio": b64(clips["1s"]), "pose": f"reference:{tmp_path / 'clip'}"}], 400, "pose"),
        ([{"audio": b64(clips["1s"]), "pose": str(secret_txt).replace(".txt", ".csv")}], 400, "pose"),
        ([{"audio_path": str(secret_wav), "out_path": str(tmp_path / "x.mp4")}], 400, "audio_path"),
    ]
    for rows, want, word in attempts:
        status, _, body = invoke(server.port, rows)
        assert status == want and word in body["message"], (rows[0].keys(), body)
        assert "TOP-SECRET" not in json.dumps(body)


def test_a_request_cannot_write_a_server_file(server: Server, clips: dict[str, Path], tmp_path: Path) -> None:
    scratch = tmp_path / "scratch.mp4"
    scratch.write_bytes(b"precious")
    for rows in ([{"audio": b64(clips["1s"]), "out_path": str(scratch)}],
                 [{"audio_path": str(clips["1s"]), "out_path": str(scratch)}],
                 [{"audio": b64(clips["1s"]), "video_path": str(scratch)}]):  # fmt: skip
        status, _, body = invoke(server.port, rows)
        assert status == 400, body
    assert scratch.read_bytes() == b"precious" and sorted(p.name for p in tmp_path.iterdir()) == ["scratch.mp4"]
    assert not list(server.cwd.iterdir())


# ---------------------------------------------------------------- limits and bad input


def test_oversize_and_too_long_requests_are_refused_with_413(server: Server, clips: dict[str, Path]) -> None:
    big = json.dumps({"dataframe_records": [{"audio": "A" * (600 * 1024)}]}).encode()  # 0.5 MB limit
    status, _, body = request(server.port, "POST", "/invocations", big, {"Content-Type": "application/json"})
    assert status == 413 and "at most" in body["message"]
    t0 = time.monotonic()
    for rows in ([{"audio": b64(clips["4s"])}],  # 4 s > 3 s
                 [{"audio": b64(clips["long-opus"])}],  # 60 s in a few kB
                 [{"audio": b64(clips["2s"])}, {"audio": b64(clips["2s"])}]):  # 2 + 2 s in one request
        status, _, body = invoke(server.port, rows)
        assert status == 413 and "limit of 3 s" in body["message"], body
    assert time.monotonic() - t0 < 20  # refused after decoding, before rendering
    status, _, body = invoke(server.port, [{"audio": b64(clips["1s"])}] * 3)  # serve.max_clips=2
    assert status == 413 and "at most 2" in body["message"]


@pytest.mark.parametrize("case, status, word", [
    ("not-json", 400, "not JSON"),
    ("wrong-type", 415, "application/json"),
    ("list", 400, "dataframe_records"),
    ("no-audio", 400, "audio"),
    ("bad-base64", 400, "base64"),
    ("noise-bytes", 422, "not audio"),
    ("steps-zero", 400, "steps"),
    ("steps-text", 400, "steps"),
    ("steps-too-many", 400, "steps"),
    ("seed-huge", 400, "seed"),
    ("pose-range", 400, "pose"),
    ("unknown-column", 400, "unknown"),
    ("empty", 400, "no clip"),
])  # fmt: skip
def test_malformed_requests_get_a_json_message(server: Server, clips: dict[str, Path], case: str, status: int,
                                               word: str) -> None:
    audio = b64(clips["1s"])
    docs = {
        "list": [{"audio": audio}],
        "no-audio": {"dataframe_records": [{"steps": 2}]},
        "bad-base64": {"dataframe_records": [{"audio": "@@not base64@@"}]},
        "noise-bytes": {"dataframe_records": [{"audio": base64.b64encode(os.urandom(4096)).decode()}]},
        "steps-zero": {"dataframe_records": [{"audio": audio, "steps": 0}]},
        "steps-text": {"dataframe_records": [{"audio": audio, "steps": "many"}]},
        "steps-too-many": {"dataframe_records": [{"audio": audio, "steps": 10**6}]},
        "seed-huge": {"dataframe_records": [{"audio": audio, "seed": 10**400}]},
        "pose-range": {"dataframe_records": [{"audio": audio, "pose": "constant:0,400,0"}]},
        "unknown-column": {"dataframe_records": [{"audio": audio, "voice": "x"}]},
        "empty": {"dataframe_records": []},
    }
    body, ctype = json.dumps(docs.get(case)).encode(), "application/json"
    if case == "not-json":
        body = b"{'dataframe_records': "
    if case == "wrong-type":
        ctype = "text/csv"
    got, _, answer = request(server.port, "POST", "/invocations", body, {"Content-Type": ctype})
    assert got == status and word in answer["message"], answer
    assert set(answer) == {"error_code", "message"}


def test_serve_config_names_what_is_wrong(tmp_path: Path) -> None:
    from daetalker.config.serve import load_serve_config
    from daetalker.errors import ConfigError

    assert load_serve_config(None, ["serve.max_queue=0"]).max_queue == 0
    path = tmp_path / "serve.yaml"
    path.write_text("serve:\n  max_concurrent: 2\n  port: 9000\n")
    cfg = load_serve_config(path, ["serve.port=9001"])
    assert (cfg.max_concurrent, cfg.port, cfg.host) == (2, 9001, "127.0.0.1")
    for overrides, word in ((["serve.max_concurent=2"], "serve.max_concurent"), (["max_queue=2"], "serve.KEY"),
                            (["serve.max_concurrent=0"], "serve.max_concurrent"), (["serve.port=70000"], "serve.port")):
        with pytest.raises(ConfigError, match=word):
            load_serve_config(None, overrides)


def test_unknown_routes_and_methods_answer_json(server: Server) -> None:
    assert request(server.port, "GET", "/nothing-here")[0] == 404
    assert request(server.port, "GET", "/invocations")[0] == 405


def test_an_unexpected_failure_is_logged_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    from starlette.requests import Request

    from daetalker.serve.app import json_errors

    async def boom(request: Request) -> Any:
        raise RuntimeError("secret detail from /srv/models/x.py")

    resp = asyncio.run(json_errors(boom)(Request({"type": "http", "method": "POST", "path": "/invocations",
                                                  "headers": []})))  # fmt: skip
    body = json.loads(resp.body)
    assert resp.status_code == 500 and "secret" not in body["message"] and "error id" in body["message"]
    assert "secret detail" in caplog.text  # the operator sees it, under the id
    assert body["message"].split("error id ")[1][:12] in caplog.text


# ---------------------------------------------------------------- concurrency and time limits


def test_concurrent_clients_succeed_or_get_429(server: Server, clips: dict[str, Path]) -> None:
    rows = [{"audio": b64(clips["2s"]), "steps": 1}]
    results: list[tuple[int, dict[str, str], Any]] = []

    def client() -> None:
        results.append(invoke(server.port, rows))

    threads = [threading.Thread(target=client) for _ in range(6)]  # 1 running + 1 waiting is the most it holds
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    statuses = sorted(r[0] for r in results)
    assert len(statuses) == 6 and set(statuses) <= {200, 429, 503}, [r[2] for r in results]
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    for status, headers, body in results:
        if status == 429:
            assert int(headers["retry-after"]) > 0 and "busy" in body["message"]
        if status == 200:
            assert body["predictions"][0]["n_frames"] == 50
    assert request(server.port, "GET", "/health")[2]["running"] == 0  # every slot was given back


def test_admission_queues_then_refuses_429_and_times_out_503() -> None:
    from daetalker.serve.admission import Admission, Refused

    async def scenario() -> list[Any]:
        gate = Admission(max_concurrent=1, max_queue=1)
        release = asyncio.Event()

        async def hold() -> str:
            async with gate.slot(5):
                await release.wait()
            return "ran"

        async def wait(wait_s: float) -> Any:
            try:
                async with gate.slot(wait_s):
                    return "ran"
            except Refused as e:
                return e.status

        first = asyncio.create_task(hold())
        await asyncio.sleep(0)
        queued = asyncio.create_task(wait(0.2))  # waits, then gives up: 503
        await asyncio.sleep(0)
        full = await wait(5)  # 1 running + 1 waiting: 429 at once
        timed_out = await queued
        later = asyncio.create_task(wait(5))  # waits for the slot and gets it
        await asyncio.sleep(0.05)
        release.set()
        return [await first, full, timed_out, await later, gate.inside, gate.running]

    assert asyncio.run(scenario()) == ["ran", 429, 503, "ran", 0, 0]


def test_rendering_stops_at_its_deadline_and_leaves_no_file(bundle: Path, clips: dict[str, Path],
                                                            tmp_path: Path) -> None:
    from daetalker.generate.model import load_bundle
    from daetalker.generate.video import GenerationTimeout, render_video

    talker = load_bundle(bundle)
    with pytest.raises(GenerationTimeout):
        render_video(talker, clips["1s"], tmp_path / "v.mp4", steps=1, progress=False, deadline=time.monotonic())
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- following the champion


@pytest.mark.slow
def test_reload_follows_promotion_and_rollback_without_restart(mlflow_server: str, tmp_path: Path,
                                                               clips: dict[str, Path]) -> None:
    import mlflow

    from daetalker.bundle import manifest_sha256
    from daetalker.bundle.build import make_test_bundle
    from daetalker.registry.log_model import log_bundle
    from daetalker.registry.promote import rollback

    name, speaker = "talker-serve-test", "serve-test"
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("serve-test")
    digests = {}
    for seed in (0, 1):
        b = Path(make_test_bundle(tmp_path / f"b{seed}", seed=seed))
        with mlflow.start_run() as run:
            info = log_bundle(b, run)
        digests[mlflow.register_model(info.model_uri, name).version] = manifest_sha256(b)
    v1, v2 = sorted(digests, key=int)
    rollback(speaker, v1, "serve test: first champion", force=True)
    s = Server(f"models:/{name}@champion", tmp_path, LIMITS, env={"MLFLOW_TRACKING_URI": mlflow_server})
    try:
        s.wait_ready()
        version = request(s.port, "GET", "/version")[2]
        assert (version["version"], version["bundle_sha256"], version["follows_alias"]) == (v1, digests[v1], True)
        rollback(speaker, v2, "serve test: promote the second", force=True)
        assert request(s.port, "GET", "/version")[2]["version"] == v1  # until asked
        status, _, body = request(s.port, "POST", "/reload")
        assert status == 200 and body["changed"] and body["current"]["version"] == v2, body
        assert request(s.port, "GET", "/version")[2]["bundle_sha256"] == digests[v2]
        status, _, answer = invoke(s.port, [{"audio": b64(clips["1s"]), "steps": 1}])
        assert status == 200 and answer["predictions"][0]["n_frames"] == 25
        rollback(speaker, v1, "serve test: roll back")  # v1 was champion before: a real rollback
        assert request(s.port, "POST", "/reload")[2]["current"]["version"] == v1
        assert request(s.port, "GET", "/version")[2]["bundle_sha256"] == digests[v1]
        assert request(s.port, "POST", "/reload")[2]["changed"] is False
        assert s.proc.poll() is None  # the same process throughout
        assert [p.name for p in s.tmp.iterdir() if p.name.startswith("daetalker-serve-")] != []  # v1's download
    finally:
        s.stop()
    assert not [p for p in s.tmp.iterdir() if p.name.startswith("daetalker-serve-")]  # removed on exit
    assert s.proc.returncode == 0 and "error:" not in s.log.read_text()  # SIGTERM is a normal stop, not an error

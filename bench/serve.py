"""Serving a talker over HTTP vs generating in-process: requests/s and latency for 5 s clips.

Starts ``daetalker serve`` on a free loopback port (and, with ``--mlflow``, MLflow's
own scoring server, ``mlflow models serve --env-manager local``, on the same
pyfunc) and sends the same 5 s clip from 1, 2 and 4 concurrent clients,
``--per-client`` requests each (bounded: a level also stops when ``--budget-s``
is spent), in ``--rounds`` rounds that also render the clip in-process with the
bundle loaded once: in a fresh thread, as the servers do (the baseline, the
floor any server can reach), and in the main thread, as ``daetalker generate``
does (on a busy shared CPU that was several times slower: see
``in_process_main_thread``). Interleaving puts a shared machine's noise on
every target alike. Loopback only;
every server is stopped by pid. Prints JSON: per server and client count, the
statuses, requests/s, latency p50/p90/p95 and p50 over the in-process median.

    python bench/serve.py [--model BUNDLE_DIR] [--seconds 5] [--steps 4] [--clients 1,2,4] [--per-client 1]
                          [--rounds 3] [--concurrent 1[,2]] [--mlflow]

Without ``--model`` it serves a micro random bundle (``make_test_bundle``): the
figures then measure the server, not a real model.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from daetalker.services.process import free_port

BIN = Path(sys.executable).parent


def speech_like(path: Path, seconds: float, sr: int = 16000) -> Path:
    """A voiced buzz with a 4 Hz syllable envelope: audio of the right length and loudness."""
    t = np.arange(int(seconds * sr)) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    sig = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700, 1200), 1))
    sf.write(path, (0.15 * env * sig / 2).astype(np.float32), sr)
    return path


def post(port: int, body: bytes) -> tuple[int, float]:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    if resp.status == 200:  # a real answer: an mp4 in it
        assert base64.b64decode(json.loads(raw)["predictions"][0]["video"])[4:8] == b"ftyp"
    return resp.status, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def load_level(port: int, body: bytes, clients: int, per_client: int, budget_s: float) -> tuple[list, float]:
    """``clients`` threads, each sending up to ``per_client`` requests back to back until the budget is
    spent; the (status, seconds) of each and the wall time of the level."""
    results: list[tuple[int, float]] = []
    stop_at = time.monotonic() + budget_s
    lock = threading.Lock()

    def client() -> None:
        for _ in range(per_client):
            if time.monotonic() > stop_at:
                return
            r = post(port, body)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def summary(results: list[tuple[int, float]], wall: float, in_process_s: float) -> dict:
    ok = [s for code, s in results if code == 200]
    statuses: dict[str, int] = {}
    for code, _ in results:
        statuses[str(code)] = statuses.get(str(code), 0) + 1
    p50 = pct(ok, 50)
    return {"requests": len(results), "statuses": statuses, "req_per_s": round(len(ok) / wall, 3),
            "p50_s": round(p50, 2), "p90_s": round(pct(ok, 90), 2), "p95_s": round(pct(ok, 95), 2),
            "p50_over_in_process": round(p50 / in_process_s, 3)}  # fmt: skip


def wait_ready(proc: subprocess.Popen, port: int, path: str, log: Path, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-1500:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready in {timeout} s: {log.read_text()[-1500:]}")


def start(cmd: list[str], port: int, health: str, log: Path) -> subprocess.Popen:
    with log.open("w") as f:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # mlflow execs `uvicorn`
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        wait_ready(proc, port, health, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def in_process(bundle: Path, clip: Path, steps: int | None, work: Path):
    """Functions that render ``clip`` once with the bundle loaded once, in this (main) thread or in a
    fresh thread as the server does, and return the seconds."""
    from daetalker.generate.model import load_bundle
    from daetalker.generate.video import render_video

    talker = load_bundle(bundle)
    render_video(talker, clip, work / "warm.mp4", steps=steps, progress=False)

    def once() -> float:
        t0 = time.perf_counter()
        render_video(talker, clip, work / "v.mp4", steps=steps, progress=False)
        return time.perf_counter() - t0

    def in_thread() -> float:
        out: list[float] = []
        t = threading.Thread(target=lambda: out.append(once()))
        t.start()
        t.join()
        return out[0]

    return once, in_thread


def pyfunc_folder(bundle: Path, dst: Path) -> Path:
    """The bundle as a saved pyfunc model, what ``mlflow models serve`` loads (as registration logs it)."""
    import mlflow.pyfunc

    from daetalker.bundle import manifest_sha256
    from daetalker.registry.log_model import pip_requirements
    from daetalker.registry.pyfunc import TalkerModel, signature

    mlflow.pyfunc.save_model(str(dst), python_model=TalkerModel(manifest_sha256(bundle)),
                             artifacts={"bundle": str(bundle)}, signature=signature(),
                             pip_requirements=pip_requirements())  # fmt: skip
    return dst


def server_commands(bundle: Path, work: Path, mlflow: bool, concurrent: list[int]) -> dict[str, tuple[list[str], int, str]]:
    cmds = {}
    for n in concurrent:  # a queue long enough that 4 clients are never refused
        port = free_port()
        cmds[f"daetalker serve (max_concurrent={n})"] = (
            [str(BIN / "daetalker"), "serve", "--model", str(bundle), "--port", str(port), "--set", f"serve.max_concurrent={n}",
             "--set", "serve.max_queue=8", "--set", "serve.request_timeout_s=900", "--set", "serve.max_audio_seconds=60"],
            port, "/health")  # fmt: skip
    if mlflow:
        p = free_port()
        cmds["mlflow models serve"] = ([str(BIN / "mlflow"), "models", "serve", "-m", str(pyfunc_folder(bundle, work / "pyfunc")),
                                        "--env-manager", "local", "--host", "127.0.0.1", "-p", str(p)], p, "/ping")  # fmt: skip
    return cmds


def measure(args: argparse.Namespace, bundle: Path, work: Path) -> dict:
    """Rounds of: one in-process render, then each server at each client count (noise on a shared box
    falls on every target alike)."""
    clip = speech_like(work / "clip.wav", args.seconds)
    row = {"audio": base64.b64encode(clip.read_bytes()).decode(), **({"steps": args.steps} if args.steps else {})}
    body = json.dumps({"dataframe_records": [row]}).encode()
    once, in_thread = in_process(bundle, clip, args.steps, work)
    targets = server_commands(bundle, work, args.mlflow, [int(c) for c in args.concurrent.split(",")])
    levels = [int(c) for c in args.clients.split(",")]
    procs, runs = {}, {(t, c): ([], 0.0) for t in targets for c in levels}
    inproc: list[float] = []
    main_thread: list[float] = []
    try:
        for name, (cmd, port, health) in targets.items():
            procs[name] = start(cmd, port, health, work / f"{port}.log")
            post(port, body)  # warm-up: MLflow's server reads the weights on its first request
        for _ in range(args.rounds):
            inproc.append(in_thread())
            main_thread.append(once())
            for c in levels:
                for name, (_, port, _) in targets.items():
                    res, wall = load_level(port, body, c, args.per_client, args.budget_s)
                    prev = runs[(name, c)]
                    runs[(name, c)] = (prev[0] + res, prev[1] + wall)
    finally:
        for proc in procs.values():
            stop(proc)
    base = statistics.median(inproc)
    out: dict = {"in_process": {"median_s": round(base, 2), "runs_s": [round(t, 2) for t in inproc]},
                 "in_process_main_thread": {"median_s": round(statistics.median(main_thread), 2),
                                            "runs_s": [round(t, 2) for t in main_thread]}}  # fmt: skip
    for name in targets:
        out[name] = [{"clients": c, **summary(*runs[(name, c)], base)} for c in levels]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="bundle folder (default: a micro random bundle)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the bundle's)")
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--per-client", type=int, default=1, help="requests per client per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=120.0, help="per level and round: no new request after this")
    ap.add_argument("--concurrent", default="1", help="daetalker serve's serve.max_concurrent, one server each")
    ap.add_argument("--mlflow", action="store_true", help="also MLflow's scoring server on the same pyfunc")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        bundle = args.model
        if bundle is None:
            from daetalker.bundle.build import make_test_bundle

            bundle = Path(make_test_bundle(work / "bundle"))
        figures = measure(args, bundle, work)
    report = {"model": str(args.model or "micro random bundle"), "clip_s": args.seconds, "steps": args.steps,
              "rounds": args.rounds, "cpus": os.cpu_count(), "load_avg_start_end": [load0, os.getloadavg()[0]],
              **figures}  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

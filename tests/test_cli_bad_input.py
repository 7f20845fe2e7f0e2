"""The CLI's bad-input matrix (issue 14): a user's mistake gives a message, an exit code and no lost file.

Every case runs the real ``daetalker`` entry point in a subprocess and checks its
exit code, the words its message must hold (the argument, the file, the fix),
that no ``Traceback`` was printed, and that the files it was given are
byte-identical afterwards. Signals: a ``generate`` stopped by SIGTERM or Ctrl-C
leaves no partial video and no temporary folder.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from daetalker.bundle.build import make_test_bundle

SR = 16000


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 200 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: a test bundle, speech (wav and mp4), a dataset-like folder, configs, a pose file."""
    root = tmp_path_factory.mktemp("user")
    make_test_bundle(root / "bundle")
    sf.write(root / "talk.wav", tone(1.5), SR)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=32x32:d=1.5", "-i",
                    str(root / "talk.wav"), "-shortest", "-c:v", "libx264", "-c:a", "aac", str(root / "talk.mp4")],
                   check=True)  # fmt: skip
    os.symlink(root / "talk.mp4", root / "link.mp4")
    os.link(root / "talk.mp4", root / "hard.mp4")
    (root / "data").mkdir()
    (root / "data" / "notes.txt").write_text("my dataset\n")
    (root / "outdir").mkdir()
    (root / "bad.yaml").write_text("dae: [1\n")
    (root / "far.csv").write_text("yaw,pitch,roll\n" + "120,0,0\n" * 37)
    (root / "metrics.json").write_text("{not json")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (links followed), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Case:
    id: str
    args: list[str]
    code: int  # expected exit code
    words: list[str]  # each must appear in the output; {mlflow} stands for the session server's URL
    mlflow: bool = False  # run with MLFLOW_TRACKING_URI set to the session's server


CASES = [
    # outputs never overwrite inputs
    Case("generate-out-is-audio", ["generate", "--audio", "talk.mp4", "--model", "bundle", "--out", "talk.mp4"], 2,
         ["--out talk.mp4", "is the input --audio", "fix:"]),
    Case("generate-out-links-to-audio", ["generate", "--audio", "talk.mp4", "--model", "bundle", "--out", "link.mp4"],
         2, ["--out link.mp4", "is the input --audio"]),
    Case("generate-out-hardlink-of-audio", ["generate", "--audio", "talk.mp4", "--model", "bundle", "--out",
                                            "hard.mp4"], 2, ["--out hard.mp4", "is the input --audio"]),
    Case("generate-out-inside-bundle", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out",
                                        "bundle/x.mp4"], 2, ["is inside the input --model bundle", "outside bundle"]),
    Case("generate-out-is-folder", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out", "outdir"], 2,
         ["--out outdir", "is a folder", "outdir/out.mp4"]),
    Case("generate-out-not-mp4", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out", "talk.wav"], 2,
         ["--out talk.wav", ".mp4"]),
    Case("synth-out-is-file", ["synth", "--out", "talk.wav", "--minutes", "0.1"], 2, ["--out talk.wav", "is a file"]),
    Case("train-dae-out-is-data", ["train-dae", "--data", "data", "--out", "data", "--no-mlflow"], 2,
         ["--out data", "is the input --data"]),
    Case("train-dae-out-inside-data", ["train-dae", "--data", "data", "--out", "data/run", "--no-mlflow"], 2,
         ["is inside the input --data"]),
    Case("train-syncnet-out-is-data", ["train-syncnet", "--data", "data", "--out", "data", "--no-mlflow"], 2,
         ["is the input --data"]),
    Case("extract-latents-out-is-data", ["extract-latents", "--data", "data", "--model", "bundle/dae.pt", "--out",
                                         "data"], 2, ["is the input --data"]),
    Case("evaluate-out-inside-data", ["evaluate", "--model", "bundle", "--data", "data", "--out", "data/eval",
                                      "--syncnet-weights", "bundle/dae.pt", "--no-mlflow"], 2, ["is inside the input --data"]),
    Case("bundle-out-is-latents", ["bundle", "--dae", "bundle/dae.pt", "--s2l", "bundle/s2l.pt", "--latents",
                                   "bundle", "--out", "bundle"], 2, ["is the input --latents"]),
    Case("train-s2l-out-is-latents", ["train-s2l", "--data", "data", "--latents", "bundle", "--out", "bundle",
                                      "--no-mlflow"], 2, ["is the input --latents"]),
    Case("compile-out-is-folder", ["pipeline", "compile", "--out", "outdir"], 2, ["--out outdir", "is a folder"]),
    Case("compile-out-not-yaml", ["pipeline", "compile", "--out", "talk.txt"], 2, ["--out talk.txt", ".yaml"]),
    # numeric options and pose are range-checked before any work
    Case("pose-out-of-range", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out", "o.mp4", "--pose",
                               "constant:1000,0,0"], 2, ["--pose", "[-90, 90]", "fix:"]),
    Case("pose-not-numbers", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out", "o.mp4", "--pose",
                              "constant:a,b"], 2, ["--pose", "three finite numbers"]),
    Case("pose-csv-out-of-range", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out", "o.mp4",
                                   "--pose", "far.csv"], 2, ["far.csv", "beyond +-90", "fix:"]),
    Case("crf-out-of-range", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out", "o.mp4", "--crf", "99"],
         2, ["--crf"]),
    Case("steps-zero", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out", "o.mp4", "--steps", "0"], 2,
         ["--steps"]),
    Case("batch-size-zero", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out", "o.mp4",
                             "--batch-size", "0"], 2, ["--batch-size"]),
    Case("size-negative", ["generate", "--audio", "talk.wav", "--model", "bundle", "--out", "o.mp4", "--size", "-4"],
         2, ["--size"]),
    Case("synth-zero-minutes", ["synth", "--out", "corpus", "--minutes", "0"], 2, ["--minutes"]),
    Case("mlflow-port-privileged", ["mlflow", "up", "--port", "80"], 2, ["--port"]),
    Case("pipeline-run-zero-minutes", ["pipeline", "run", "--out", "run", "--minutes", "0"], 2, ["--minutes"]),
    # missing or unreadable inputs, wrong config
    Case("audio-missing", ["generate", "--audio", "nothere.wav", "--model", "bundle", "--out", "o.mp4"], 2,
         ["nothere.wav", "fix:"]),
    Case("audio-not-media", ["generate", "--audio", "bad.yaml", "--model", "bundle", "--out", "o.mp4"], 2,
         ["bad.yaml", "could not decode", "fix:"]),
    Case("model-folder-missing", ["generate", "--audio", "talk.wav", "--model", "nobundle", "--out", "o.mp4"], 2,
         ["--model nobundle", "fix:"]),
    Case("config-not-yaml", ["train-dae", "--data", "data", "--out", "run", "--config", "bad.yaml"], 2,
         ["bad.yaml", "not valid YAML"]),
    Case("config-bad-value", ["train-dae", "--data", "data", "--out", "run", "--set", "dae.lr=abc"], 2,
         ["dae.lr", "expected float"]),
    Case("config-unknown-key", ["train-dae", "--data", "data", "--out", "run", "--set", "dae.nokey=1"], 2,
         ["nokey"]),
    Case("profile-unknown", ["train-dae", "--data", "data", "--out", "run", "--profile", "huge"], 2,
         ["unknown profile 'huge'", "tiny"]),
    Case("data-not-a-dataset", ["train-dae", "--data", "data", "--out", "run", "--no-mlflow"], 2,
         ["data/manifest.parquet", "daetalker preprocess"]),
    Case("evaluate-data-missing", ["evaluate", "--model", "bundle", "--data", "nodata", "--out", "eval",
                                   "--syncnet-weights", "bundle/dae.pt", "--no-mlflow"], 2,
         ["nodata/manifest.parquet", "daetalker preprocess"]),
    Case("evaluate-champion-not-json", ["evaluate", "--model", "bundle", "--data", "data", "--out", "eval",
                                        "--syncnet-weights", "bundle/dae.pt", "--champion-metrics", "metrics.json",
                                        "--no-mlflow"], 2, ["metrics.json", "not JSON"]),
    Case("validate-missing", ["validate", "--data", "nodata", "--no-mlflow"], 2, ["nodata/manifest.parquet"]),
    Case("preprocess-in-missing", ["preprocess", "--in", "novideos", "--out", "ds"], 2, ["novideos", "fix:"]),
    Case("preprocess-out-inside-in", ["preprocess", "--in", "data", "--out", "data/ds"], 2,
         ["--out data/ds", "is inside the input --in data"]),
    Case("preprocess-out-is-in", ["preprocess", "--in", "data", "--out", "data"], 2, ["is the input --in data"]),
    Case("preprocess-nothing-usable", ["preprocess", "--in", "data", "--out", "ds"], 2,
         ["data", "no video or audio file found", "fix:"]),
    Case("history-at-not-a-time", ["registry", "history", "nobody", "--at", "notatime"], 2, ["--at", "ISO time"]),
    # the registry named: which store was read
    Case("promote-unknown-model", ["promote", "--speaker", "nobody", "--version", "1", "--reason", "r"], 2,
         ["no registered model talker-nobody", "{mlflow} ($MLFLOW_TRACKING_URI)", "fix:"], mlflow=True),
    Case("register-unknown-run", ["register", "--run", "0123456789abcdef", "--speaker", "nobody"], 2,
         ["0123456789abcdef", "{mlflow} ($MLFLOW_TRACKING_URI)", "fix:"], mlflow=True),
    Case("verify-unknown-model", ["registry", "verify", "nobody"], 2,
         ["models:/talker-nobody@champion", "{mlflow} ($MLFLOW_TRACKING_URI)", "fix:"], mlflow=True),
    Case("generate-unknown-model", ["generate", "--audio", "talk.wav", "--model", "models:/talker-nobody@champion",
                                    "--out", "o.mp4"], 2, ["talker-nobody", "{mlflow} ($MLFLOW_TRACKING_URI)"],
         mlflow=True),
]


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "daetalker.cli", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_bad_input_matrix(ws: Path, tmp_path: Path, mlflow_server: str) -> None:
    """Every case: its exit code, its words, no traceback, every file of the user's folder unchanged."""
    before = snapshot(ws)
    logs = tmp_path / "outputs"
    logs.mkdir()
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    with ThreadPoolExecutor(2) as pool:  # each case is a fresh interpreter: ~2 s of imports
        results = list(pool.map(lambda c: run_cli(c.args, ws, env if c.mlflow else None), CASES))
    problems = []
    for case, r in zip(CASES, results):
        text = r.stdout + r.stderr
        (logs / f"{case.id}.txt").write_text(text)
        flat = " ".join(text.split())  # rich may wrap a long message
        if r.returncode != case.code:
            problems.append(f"{case.id}: exit {r.returncode}, expected {case.code}")
        words = [w.replace("{mlflow}", mlflow_server) for w in case.words]
        problems += [f"{case.id}: lacks {w!r}" for w in words if w not in flat]
        if "Traceback" in text:
            problems.append(f"{case.id}: printed a traceback")
    assert not problems, "\n".join(problems) + "\n\n" + "\n".join(
        f"--- {c.id}\n{(logs / f'{c.id}.txt').read_text()[-600:]}" for c in CASES)
    assert sum((logs / f"{c.id}.txt").read_text().count("Traceback") for c in CASES) == 0
    after = snapshot(ws)
    assert {k: after.get(k) for k in before} == before  # byte-identical: nothing the user gave was touched
    # the only new files: the reports of the preprocess that kept nothing (its quarantine says why)
    assert {k for k in after if k not in before} == {"ds/manifest.parquet", "ds/preprocess.json",
                                                      "ds/quarantine.parquet"}
    for made in ("o.mp4", "corpus", "run", "eval", "mlflow.db", "data/run", "data/eval", "data/ds"):
        assert not (ws / made).exists(), f"{made} was left behind by a refused command"
    assert not list(ws.glob(".*.partial*"))


def test_unknown_registered_model_names_the_store_it_read(ws: Path, mlflow_server: str, tmp_path: Path) -> None:
    """models:/ URIs are read from the project's tracking server, never ./mlflow.db where the command runs."""
    r = run_cli(["generate", "--audio", str(ws / "talk.wav"), "--model", "models:/talker-nobody@champion", "--out",
                 "o.mp4"], tmp_path, {"MLFLOW_TRACKING_URI": mlflow_server})  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "talker-nobody" in r.stderr and mlflow_server in r.stderr and "$MLFLOW_TRACKING_URI" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlflow.db, no mlruns/


def test_generate_reads_a_registered_model_from_the_project_store(ws: Path, mlflow_server: str, tmp_path: Path) -> None:
    import mlflow

    from daetalker.registry.log_model import log_bundle

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("cli-bad-input")
    with mlflow.start_run() as run:
        info = log_bundle(ws / "bundle", run)
    version = mlflow.register_model(info.model_uri, "talker-matrix")
    mlflow.MlflowClient(mlflow_server).set_registered_model_alias("talker-matrix", "champion", version.version)
    r = run_cli(["generate", "--audio", str(ws / "talk.wav"), "--model", "models:/talker-matrix@champion", "--out",
                 "o.mp4", "--steps", "2"], tmp_path, {"MLFLOW_TRACKING_URI": mlflow_server})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]  # and no ./mlflow.db


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopped_generate_leaves_no_partial_file_or_temp_folder(ws: Path, tmp_path: Path, sig: int, code: int) -> None:
    """SIGTERM (a scheduler, `kill`) cleans up like Ctrl-C: no hidden partial mp4, no folder in $TMPDIR."""
    sf.write(tmp_path / "long.wav", tone(120.0), SR)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out" / "talk.mp4"
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    # A runner started in the background (`cmd &` in a script) passes SIGINT on ignored, and Python keeps an
    # ignored SIGINT: the child gets the default back, as in a terminal, so the test does not depend on it.
    proc = subprocess.Popen([sys.executable, "-m", "daetalker.cli", "generate", "--audio", str(tmp_path / "long.wav"),
                             "--model", str(ws / "bundle"), "--out", str(out), "--steps", "4"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(".talk.mp4.*.partial.mp4")):  # rendering has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert list(out.parent.iterdir()) == [] and list(tmp.iterdir()) == []

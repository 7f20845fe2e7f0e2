"""Registration, gated promotion, rollback and the audit trail, against real MLflow servers.

Invariant checked after every scenario (``assert_trail_matches_registry``):
replaying the alias moves that the audit runs claim as applied, in order,
gives exactly the registry's aliases - no move without a record, no record of
a move that did not happen - and the local log's hash chain is intact.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from daetalker.errors import IntegrityError, ServiceError
from daetalker.registry import promote as promote_mod
from daetalker.registry.audit import Actor, Move, current_actor
from daetalker.registry.audit_log import AuditLog
from daetalker.registry.history import champion_at, history
from daetalker.registry.names import CHALLENGER, CHAMPION, RegistryError
from daetalker.registry.promote import audit_log_path, promote, reconcile, rollback
from daetalker.registry.register import register_model
from daetalker.registry.retry import RetryPolicy
from daetalker.services.process import free_port

FAST = RetryPolicy(tries=3, first_delay_s=0.1, factor=2.0, request_timeout_s=5)
FACE = {"face_found_rate": 1.0, "lse_c_vs_gt": 0.9}  # a face in every frame, lips in sync (issue 16 floors)
BASE = {"lse_c": 6.0, "lse_d": 7.0, "fid": 30.0, "pose_mae": 3.0, **FACE}
BETTER = {"lse_c": 6.5, "lse_d": 6.6, "fid": 25.0, "pose_mae": 2.5, **FACE}
BEST = {"lse_c": 7.0, "lse_d": 6.2, "fid": 20.0, "pose_mae": 2.0, **FACE}
WORSE = {"lse_c": 5.0, "lse_d": 7.8, "fid": 45.0, "pose_mae": 4.0, **FACE}
ALICE, BOB = Actor("alice", "test"), Actor("bob", "test")


# ------------------------------------------------------------------ helpers
def fake_version(client: MlflowClient, name: str, metrics: dict[str, float]) -> str:
    """A registered version whose gate metrics are set as tags (promotion reads only tags)."""
    exp = mlflow.set_experiment("registry-test-src").experiment_id
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass
    tags = {f"metric.{k}": repr(v) for k, v in metrics.items()} | {"profile": "base128"}
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags)
    return str(mv.version)


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).aliases)


def audit_runs(client: MlflowClient, name: str) -> list[Any]:
    exp = client.get_experiment_by_name("daetalker-audit")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.model = '{name}'", max_results=500)
    return sorted(runs, key=lambda r: r.data.tags.get("outcome_at") or r.data.tags["decided_at"])


def assert_trail_matches_registry(client: MlflowClient, name: str, state: Path) -> None:
    replay: dict[str, str] = {}
    for run in audit_runs(client, name):
        t = run.data.tags
        assert t["status"] in ("committed", "aborted", "partial"), f"undecided audit run {run.info.run_id}"
        applied = set(filter(None, t.get("applied", "").split(",")))
        for move in filter(None, t["moves"].split(";")):
            alias, _, span = move.partition(":")
            if alias in applied:
                replay[alias] = span.split("->")[1]
    assert replay == aliases(client, name)
    entries = AuditLog(audit_log_path(name, state)).entries()  # chain verified
    ids = [e["record"]["id"] for e in entries if e["kind"] == "intent"]
    outs = [e["id"] for e in entries if e["kind"] == "outcome"]
    assert sorted(ids) == sorted(outs) and len(set(outs)) == len(outs)  # one outcome per decision


class TcpProxy:
    """A loopback TCP forwarder that can drop: the MLflow server as the client sees it during an outage."""

    def __init__(self, target_url: str) -> None:
        host, port = target_url.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.port = free_port()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        assert self._listener is not None
        for s in [self._listener, *self._conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self._lock:
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A dedicated MLflow server that a test may stop.

    Its start-up (10-25 s on a loaded machine) runs in the background from the
    first test that asks for it (the outage tests), so it overlaps them rather
    than adding to the suite's time; ``ready()`` waits for it.
    """
    from daetalker.services.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("own-mlflow"), port=free_port())
    box: dict[str, Any] = {}

    def start() -> None:
        try:
            box["url"] = server.start()
        except BaseException as e:  # noqa: BLE001 - re-raised in ready()
            box["error"] = e

    thread = threading.Thread(target=start, daemon=True)
    thread.start()

    def ready() -> str:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["url"]

    server.ready = ready  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        thread.join()
        server.stop()


@pytest.fixture
def client(mlflow_server: str) -> MlflowClient:
    mlflow.set_tracking_uri(mlflow_server)
    return MlflowClient(mlflow_server)


# ------------------------------------------------------------------ actor and log (no server)
def _jwt(claims: dict[str, Any]) -> str:
    def enc(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2ln"


def test_actor_comes_from_env_then_service_account_then_user(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    assert current_actor({"DAETALKER_ACTOR": "ci-bot", "USER": "root"}, sa) == Actor("ci-bot", "env:DAETALKER_ACTOR")
    assert current_actor({"USER": "carol"}, sa) == Actor("carol", "env:USER")
    sa.mkdir()
    (sa / "namespace").write_text("kubeflow\n")
    assert current_actor({"USER": "root", "KUBERNETES_SERVICE_ACCOUNT": "pipeline-runner"}, sa) == Actor(
        "system:serviceaccount:kubeflow:pipeline-runner", "k8s:env"
    )
    (sa / "token").write_text(_jwt({"sub": "system:serviceaccount:team-a:promoter", "iss": "k8s"}))
    assert current_actor({"USER": "root"}, sa) == Actor("system:serviceaccount:team-a:promoter", "k8s:token")
    (sa / "token").write_text("not-a-jwt")
    assert current_actor({}, sa).source == "k8s:env"  # unreadable token: fall back to the namespace


def test_audit_log_chain_detects_edits_inserts_and_deletions(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    threads = [threading.Thread(target=lambda i=i: log.append({"kind": "x", "i": i})) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = log.entries()
    assert [e["seq"] for e in entries] == list(range(8)) and sorted(e["i"] for e in entries) == list(range(8))
    lines = log.path.read_text().splitlines(keepends=True)

    log.path.write_text("".join(lines[:3] + [lines[3].replace('"kind":"x"', '"kind":"y"')] + lines[4:]))  # one edited
    with pytest.raises(IntegrityError, match="line 5 does not follow line 4"):
        log.entries()
    log.path.write_text("".join(lines[:2] + lines[3:]))  # one removed
    with pytest.raises(IntegrityError, match="line 3 does not follow"):
        log.entries()
    log.path.write_text("".join(lines[:2] + [lines[1]] + lines[2:]))  # one duplicated
    with pytest.raises(IntegrityError, match="line 3 does not follow"):
        log.entries()
    log.path.write_text("".join(lines[:5]) + "garbage\n")
    with pytest.raises(IntegrityError, match="line 6 is not JSON"):
        log.entries()


# ------------------------------------------------------------------ registration + the acceptance story
def training_run(tmp: Path, metrics: dict[str, float], seed: int, eval_metrics: dict[str, float] | None = None) -> str:
    """What a pipeline's training run leaves: a bundle artifact, metrics, lineage tags (config + data)."""
    from daetalker.config import load_config
    from daetalker.bundle import write_bundle
    from daetalker.tracking import start_run
    from test_registry_bundle import model_files

    bundle = write_bundle(tmp / f"bundle{seed}", **model_files(tmp / f"src{seed}", seed), config=load_config("tiny"))
    eval_id = ""
    if eval_metrics is not None:
        with start_run("registry-accept", "evaluate", tags={"daetalker.step": "evaluate"}) as ev:
            mlflow.log_metrics(eval_metrics)
        eval_id = ev.info.run_id
    tags = {"data_hash": f"md5-{seed}.dir", "pipeline_run_id": f"pipeline-{seed}",
            "validation_report": f"s3://reports/{seed}/validation.html", "eval_run_id": eval_id}  # fmt: skip
    with start_run("registry-accept", f"train-{seed}", config=load_config("tiny"), tags=tags) as run:
        mlflow.log_artifacts(str(bundle), "bundle")
        mlflow.log_metrics({**metrics, "loss": 0.1})
    return run.info.run_id


def test_registration_records_lineage_and_is_idempotent(client: MlflowClient, tmp_path: Path) -> None:
    stale = {"lse_c": 1.0, "lse_d": 12.0, "fid": 99.0, "pose_mae": 9.0, **FACE}
    run_id = training_run(tmp_path, stale, seed=11, eval_metrics=BASE)
    v = register_model(run_id, "lineage", actor=ALICE)
    assert v.created and v.name == "talker-lineage"
    mv = client.get_model_version("talker-lineage", v.version)
    src = client.get_run(run_id)
    t = mv.tags
    assert t["source_run_id"] == run_id and t["registered_by"] == "alice" and t["speaker"] == "lineage"
    assert t["git_commit"] == src.data.tags["git_commit"] and t["config_hash"] == src.data.tags["config_hash"]
    assert t["data_hash"] == "md5-11.dir" and t["pipeline_run_id"] == "pipeline-11" and t["profile"] == "tiny"
    assert t["validation_report"] == "s3://reports/11/validation.html" and t["eval_run_id"] == src.data.tags["eval_run_id"]
    # The evaluation run's numbers, not the training run's stale ones.
    assert {k: float(t[f"metric.{k}"]) for k in BASE} == BASE and "metric.loss" not in t
    again = register_model(run_id, "lineage")
    assert not again.created and again.version == v.version
    assert len(client.search_model_versions("name = 'talker-lineage'")) == 1

    with pytest.raises(RegistryError, match="no MLflow run"):
        register_model("0" * 32, "lineage")
    with mlflow.start_run(experiment_id=src.info.experiment_id) as bare:
        mlflow.log_metrics(BASE)
    with pytest.raises(RegistryError, match="no 'bundle' artifact"):
        register_model(bare.info.run_id, "lineage")
    client.set_terminated(bare.info.run_id, "FAILED")
    with pytest.raises(RegistryError, match="FAILED"):
        register_model(bare.info.run_id, "lineage")
    with pytest.raises(RegistryError, match="speaker"):
        register_model(run_id, "Bad Name!")


def test_a_bundle_identical_to_a_version_is_not_registered_again(client: MlflowClient, tmp_path: Path) -> None:
    """A retrain that gives the same bytes (same data, config, code, seed) names the version it equals."""
    from daetalker.registry.register import DuplicateBundle

    first = register_model(training_run(tmp_path / "a", BASE, seed=12), "twins", actor=ALICE)
    second_run = training_run(tmp_path / "b", BASE, seed=12)
    with pytest.raises(DuplicateBundle, match=f"identical to talker-twins v{first.version}") as e:
        register_model(second_run, "twins", actor=ALICE)
    assert e.value.version == first.version and "fix:" in str(e.value)
    assert len(client.search_model_versions("name = 'talker-twins'")) == 1


def test_acceptance_better_run_wins_worse_run_is_challenger_rollback_and_history(
    client: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    t0 = datetime.now(timezone.utc)
    v1 = register_model(training_run(tmp_path, BASE, seed=1), "accept").version
    v2 = register_model(training_run(tmp_path, BETTER, seed=2), "accept").version
    v3 = register_model(training_run(tmp_path, WORSE, seed=3), "accept").version
    name = "talker-accept"

    monkeypatch.setenv("DAETALKER_ACTOR", "pipeline-sa")
    r1 = promote("accept", v1, "first model", origin="pipeline", pipeline_run_id="p1", state_dir=state)
    assert r1.passed and aliases(client, name) == {CHAMPION: v1, CHALLENGER: v1}
    r2 = promote("accept", v2, "weekly retrain", origin="pipeline", pipeline_run_id="p2", state_dir=state)
    assert r2.passed and aliases(client, name) == {CHAMPION: v2, CHALLENGER: v2}
    t_v2 = datetime.now(timezone.utc)

    dry = promote("accept", v3, "what if", dry_run=True, state_dir=state)
    assert dry.status == "dry-run" and not dry.passed and [m.alias for m in dry.moves] == [CHALLENGER]
    assert aliases(client, name) == {CHAMPION: v2, CHALLENGER: v2} and len(audit_runs(client, name)) == 2

    r3 = promote("accept", v3, "retrain on noisy clips", state_dir=state)
    assert not r3.passed and r3.status == "committed"
    assert aliases(client, name) == {CHAMPION: v2, CHALLENGER: v3}
    assert "FAIL" in r3.decision_text and r3.moves == [Move(CHALLENGER, v2, v3)] and r3.applied == [CHALLENGER]

    monkeypatch.setenv("DAETALKER_ACTOR", "oncall-dana")
    with pytest.raises(RegistryError, match="never been champion"):
        rollback("accept", v3, "not a rollback", state_dir=state)
    with pytest.raises(RegistryError, match="already champion"):
        rollback("accept", v2, "noop", state_dir=state)
    rb = rollback("accept", v1, "v2 lip sync drifts on long clips", state_dir=state)
    assert rb.status == "committed" and aliases(client, name) == {CHAMPION: v1, CHALLENGER: v3}

    # The served model loads from the registry by alias, verified.
    champ = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert champ.metadata.metadata["bundle_sha256"] == client.get_model_version(name, v1).tags["bundle_sha256"]

    events = history("accept")
    moves = [(e.action, e.alias, e.from_version, e.to_version, e.applied, e.actor, e.reason) for e in events]
    assert moves == [
        ("promote", CHALLENGER, "", v1, True, "pipeline-sa", "first model"),
        ("promote", CHAMPION, "", v1, True, "pipeline-sa", "first model"),
        ("promote", CHALLENGER, v1, v2, True, "pipeline-sa", "weekly retrain"),
        ("promote", CHAMPION, v1, v2, True, "pipeline-sa", "weekly retrain"),
        ("promote", CHALLENGER, v2, v3, True, "pipeline-sa", "retrain on noisy clips"),
        ("rollback", CHAMPION, v2, v1, True, "oncall-dana", "v2 lip sync drifts on long clips"),
    ]
    assert [e.decision for e in events][-2:] == ["fail", "pass"] and events[0].origin == "pipeline"
    assert champion_at(events, t0) is None and champion_at(events, t_v2) == v2
    assert champion_at(events, datetime.now(timezone.utc) + timedelta(seconds=1)) == v1
    assert_trail_matches_registry(client, name, state)

    # Each decision's run holds the table and the log as it was then.
    last = audit_runs(client, name)[-2]  # the failed promotion of v3
    text = Path(client.download_artifacts(last.info.run_id, "decision.txt", str(tmp_path))).read_text()
    assert "fid" in text and "FAIL" in text
    logged = Path(client.download_artifacts(last.info.run_id, "audit_log.jsonl", str(tmp_path))).read_text()
    local = audit_log_path(name, state).read_text()
    assert local.startswith(logged) and len(logged.splitlines()) == int(last.data.tags["log_seq"])

    # The CLI reads the same trail.
    from daetalker.cli.registry import app
    out = CliRunner().invoke(app, ["registry", "history", "accept", "--state", str(state), "--at", t_v2.isoformat()])
    assert out.exit_code == 0, out.output
    assert "oncall-dana" in out.output and "weekly retrain" in out.output and "hash chain intact" in out.output
    assert f"champion at {t_v2.isoformat()}: {v2}" in out.output
    out = CliRunner().invoke(app, ["promote", "-s", "accept", "-v", v3, "-r", "check", "--dry-run", "--strict"])
    assert out.exit_code == 1 and "decision: fail" in out.output
    out = CliRunner().invoke(app, ["registry", "verify", "accept"])
    assert out.exit_code == 0 and "4 files match" in out.output


def test_user_errors_are_named(client: MlflowClient, tmp_path: Path) -> None:
    fake_version(client, "talker-errs", BASE)
    with pytest.raises(RegistryError, match="reason is required"):
        promote("errs", "1", "  ", state_dir=tmp_path)
    with pytest.raises(RegistryError, match="no registered model talker-nobody"):
        promote("nobody", "1", "x", state_dir=tmp_path)
    with pytest.raises(RegistryError, match="has no version '9'"):
        promote("errs", "9", "x", state_dir=tmp_path)
    assert not any(audit_runs(client, "talker-errs"))


def test_tampered_local_log_blocks_further_changes(client: MlflowClient, tmp_path: Path) -> None:
    v1 = fake_version(client, "talker-tamper", BASE)
    v2 = fake_version(client, "talker-tamper", BETTER)
    promote("tamper", v1, "first", state_dir=tmp_path, actor=ALICE)
    path = audit_log_path("talker-tamper", tmp_path)
    path.write_text(path.read_text().replace('"reason":"first"', '"reason":"forged"'))
    with pytest.raises(IntegrityError, match="does not follow"):
        promote("tamper", v2, "second", state_dir=tmp_path, actor=ALICE)
    assert aliases(client, "talker-tamper") == {CHAMPION: v1, CHALLENGER: v1}


# ------------------------------------------------------------------ races
def test_a_held_lock_makes_others_wait_then_fail_naming_the_holder(client: MlflowClient, tmp_path: Path) -> None:
    from daetalker.registry.lock import model_lock

    v1 = fake_version(client, "talker-held", BASE)
    lock = tmp_path / "registry" / "talker-held.lock"
    with model_lock(lock, "alice: promote talker-held v9"):
        t = time.monotonic()
        with pytest.raises(ServiceError, match=r"holds this lock \(.*alice: promote talker-held v9"):
            promote("held", v1, "x", state_dir=tmp_path, actor=BOB, lock_timeout_s=0.5)
        assert 0.5 <= time.monotonic() - t < 5
    assert promote("held", v1, "x", state_dir=tmp_path, actor=BOB).status == "committed"  # released on exit
    assert lock.read_text() == ""


def _race(speaker: str, versions: list[str], state: Path, hook: Any) -> list[Any]:
    results: list[Any] = [None] * len(versions)

    def go(i: int) -> None:
        try:
            results[i] = promote(speaker, versions[i], f"race {i}", state_dir=state, actor=Actor(f"t{i}", "test"),
                                 on_step=hook, policy=FAST)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - reported to the test
            results[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(versions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def _serialised(client: MlflowClient, name: str, results: list[Any], champion: str) -> bool:
    """Both decisions committed, the later one judged against the earlier one's outcome."""
    if not all(getattr(r, "status", None) == "committed" for r in results):
        return False
    runs = audit_runs(client, name)[-2:]
    first, second = (r.data.tags for r in runs)
    return (second["prev_champion"] == first["new_champion"]
            and json.loads(Path(client.download_artifacts(runs[1].info.run_id, "record.json")).read_text())
            ["decision"]["champion_version"] == first["new_champion"]
            and aliases(client, name)[CHAMPION] == champion == second["new_champion"])  # fmt: skip


def test_two_racing_promotions_leave_one_champion_and_both_decisions(client: MlflowClient, tmp_path: Path) -> None:
    name = "talker-race"
    v1, v2, v3 = (fake_version(client, name, m) for m in (BASE, BETTER, BEST))
    promote("race", v1, "baseline", state_dir=tmp_path, actor=ALICE)
    # Each promotion pauses after deciding, so without serialisation both would judge against v1.
    results = _race("race", [v2, v3], tmp_path, lambda p: time.sleep(0.3) if p == "decided" else None)
    assert all(getattr(r, "status", None) == "committed" for r in results), results
    # Whatever the order, v3 (best) ends as champion: v3 first -> v2 fails against it; v2 first -> v3 beats v2.
    assert _serialised(client, name, results, v3)
    assert len(audit_runs(client, name)) == 3
    assert_trail_matches_registry(client, name, tmp_path)


def test_without_the_lock_the_race_check_fails(client: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: drop the lock and force both to decide before either applies."""
    name = "talker-nolock"
    v1, v2, v3 = (fake_version(client, name, m) for m in (BASE, BETTER, BEST))
    promote("nolock", v1, "baseline", state_dir=tmp_path, actor=ALICE)
    monkeypatch.setattr(promote_mod, "model_lock", lambda *a, **k: nullcontext())
    barrier = threading.Barrier(2, timeout=30)
    results = _race("nolock", [v2, v3], tmp_path, lambda p: barrier.wait() if p == "decided" else None)
    assert not _serialised(client, name, results, v3)


# ------------------------------------------------------------------ outages
def _stop_at(point: str, action: Any) -> Any:
    def hook(p: str) -> None:
        if p == point:
            action()

    return hook


@pytest.mark.usefixtures("own_server")  # only to start it early, see own_server
@pytest.mark.parametrize("point, status, applied", [
    ("intent_logged", "aborted", []),  # down before the audit run exists
    ("intent_recorded", "aborted", []),  # down after the intent, before any alias moved
    ("outcome_logged", "committed", [CHALLENGER, CHAMPION]),  # moved and verified; MLflow missed the outcome
])  # fmt: skip
def test_outage_mid_promotion_is_reconciled_truthfully(
    client: MlflowClient, mlflow_server: str, tmp_path: Path, point: str, status: str, applied: list[str]
) -> None:
    name = f"talker-out-{point.replace('_', '-')}"
    v1, v2 = fake_version(client, name, BASE), fake_version(client, name, BETTER)
    proxy = TcpProxy(mlflow_server)
    promote(name, v1, "baseline", state_dir=tmp_path, actor=ALICE, tracking_uri=proxy.url)
    t = time.monotonic()
    with pytest.raises(ServiceError, match="did not answer .* in 3 tries"):
        promote(name, v2, "better", state_dir=tmp_path, actor=BOB, tracking_uri=proxy.url, policy=FAST,
                on_step=_stop_at(point, proxy.down))  # fmt: skip
    assert time.monotonic() - t < 15  # bounded: FAST retries, no client-side back-off
    proxy.up()
    before = aliases(client, name)
    assert before == ({CHAMPION: v2, CHALLENGER: v2} if applied else {CHAMPION: v1, CHALLENGER: v1})
    open_runs = [r for r in audit_runs(client, name) if r.data.tags["status"] == "intent"]
    assert len(open_runs) == (0 if point == "intent_logged" else 1)
    assert all(not r.data.tags.get("applied") for r in open_runs)  # an intent claims nothing

    done = reconcile(name, state_dir=tmp_path, tracking_uri=proxy.url)
    assert [(r.version, o.status, o.applied) for r, o in done] == [(v2, status, applied)]
    assert reconcile(name, state_dir=tmp_path, tracking_uri=proxy.url) == []  # settled
    last = audit_runs(client, name)[-1].data.tags
    assert last["status"] == status and last["actor"] == "bob" and last["applied"] == ",".join(applied)
    assert_trail_matches_registry(client, name, tmp_path)
    # The next promotion proceeds normally.
    again = promote(name, v2, "retry after outage", state_dir=tmp_path, actor=BOB, tracking_uri=proxy.url)
    assert again.status == "committed" and aliases(client, name) == {CHAMPION: v2, CHALLENGER: v2}
    assert_trail_matches_registry(client, name, tmp_path)
    proxy.down()


def test_server_restart_within_the_retry_budget_is_ridden_through(
    client: MlflowClient, mlflow_server: str, tmp_path: Path
) -> None:
    name = "talker-blip"
    v1 = fake_version(client, name, BASE)
    proxy = TcpProxy(mlflow_server)

    def blip() -> None:
        proxy.down()
        threading.Timer(1.0, proxy.up).start()

    patient = RetryPolicy(tries=5, first_delay_s=0.25, factor=2.0, request_timeout_s=5)  # 3.75 s of waiting
    r = promote(name, v1, "first", state_dir=tmp_path, actor=ALICE, tracking_uri=proxy.url, policy=patient,
                on_step=_stop_at("moved:challenger", blip))  # fmt: skip
    assert r.status == "committed" and r.applied == [CHALLENGER, CHAMPION]
    assert audit_runs(client, name)[-1].data.tags["recovered"] == "false"
    assert_trail_matches_registry(client, name, tmp_path)
    proxy.down()


@pytest.mark.slow
def test_stopping_the_mlflow_server_between_alias_moves(own_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real server process stopped after the challenger moved and before the champion did."""
    server = own_server
    shared = mlflow.get_tracking_uri()
    url = server.ready()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    mlflow.set_tracking_uri(url)
    own = MlflowClient(url)
    try:
        name = "talker-stop"
        v1, v2 = fake_version(own, name, BASE), fake_version(own, name, BETTER)
        promote(name, v1, "baseline", state_dir=tmp_path, actor=ALICE)
        with pytest.raises(ServiceError, match="set talker-stop@champion"):
            promote(name, v2, "better", state_dir=tmp_path, actor=BOB, policy=FAST,
                    on_step=_stop_at("moved:challenger", server.stop))  # fmt: skip
        assert server.pid is None
        server.start()
        assert aliases(own, name) == {CHAMPION: v1, CHALLENGER: v2}  # half done
        pending = audit_runs(own, name)[-1].data.tags
        assert pending["status"] == "intent" and not pending.get("applied")
        # The next change reconciles first: only the challenger move is claimed.
        with pytest.raises(RegistryError, match="already champion"):
            rollback(name, v1, "check", state_dir=tmp_path, actor=ALICE)
        last = audit_runs(own, name)[-1].data.tags
        assert last["status"] == "partial" and last["applied"] == CHALLENGER and last["recovered"] == "true"
        assert_trail_matches_registry(own, name, tmp_path)
        events = [e for e in history(name) if e.version == v2]
        assert [(e.alias, e.applied, e.status) for e in events] == [(CHALLENGER, True, "partial"), (CHAMPION, False, "partial")]
    finally:
        server.stop()
        mlflow.set_tracking_uri(shared)

"""``daetalker pipeline compile|submit|schedule``: argument mapping onto the KFP API, without a cluster.

The KFP client is either a recording fake (what each command asks of it) or
the real ``kfp.Client`` talking to a tiny HTTP server on loopback (what goes
over the wire: the token, the run's parameters, the recurring run's trigger).
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from daetalker.cli import app
from daetalker.kubeflow import submit

REV = "d1a14f79191d575fda3f546fe14ee220.dir"


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


class FakeClient:
    """Records the kfp.Client constructor arguments and calls."""

    made: list["FakeClient"] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[str, dict]] = []
        FakeClient.made.append(self)

    def create_run_from_pipeline_package(self, pipeline_file, **kw):
        self.calls.append(("run", {"pipeline_file": pipeline_file, **kw,
                                   "pipeline": yaml.safe_load_all(Path(pipeline_file).read_text()).__next__()}))
        return SimpleNamespace(run_id="run-1")

    def create_experiment(self, name, namespace=None):
        self.calls.append(("experiment", {"name": name, "namespace": namespace}))
        return SimpleNamespace(experiment_id="exp-1")

    def create_recurring_run(self, **kw):
        self.calls.append(("recurring", {**kw, "pipeline": next(yaml.safe_load_all(
            Path(kw["pipeline_package_path"]).read_text()))}))
        return SimpleNamespace(recurring_run_id="rr-1")


@pytest.fixture
def fake_kfp(monkeypatch):
    import kfp

    FakeClient.made = []
    monkeypatch.setattr(kfp, "Client", FakeClient)
    monkeypatch.delenv(submit.TOKEN_ENV, raising=False)
    monkeypatch.delenv(submit.SA_TOKEN_PATH_ENV, raising=False)
    return FakeClient


def test_compile_writes_each_pipeline_with_its_platform_spec(tmp_path):
    # same bytes on every compile: tests/test_pipeline_compile.py (this only checks the command's wiring)
    for name in ("train-speaker", "retrain-speaker", "evaluate-promote"):
        a = tmp_path / f"{name}.yaml"
        r = cli("pipeline", "compile", "--pipeline", name, "--out", str(a))
        assert r.exit_code == 0, r.output
        docs = list(yaml.safe_load_all(a.read_text()))
        assert docs[0]["pipelineInfo"]["name"] == name and len(docs) == 2  # with the platform (kubernetes) spec
    r = cli("pipeline", "compile", "--pipeline", "train-speaker", "--local", "--out", str(tmp_path / "l.yaml"))
    assert r.exit_code == 0 and len(list(yaml.safe_load_all((tmp_path / "l.yaml").read_text()))) == 1
    r = cli("pipeline", "compile", "--pipeline", "nope", "--out", str(tmp_path / "x.yaml"))
    assert r.exit_code != 0 and "retrain-speaker" in r.output


def test_submit_maps_arguments_onto_create_run(fake_kfp, monkeypatch):
    monkeypatch.setenv(submit.TOKEN_ENV, "tok-123")
    r = cli("pipeline", "submit", "--host", "http://127.0.0.1:1", "--pipeline", "retrain-speaker",
            "--param", "speaker=ana", "--param", f"data_rev={REV}", "--param", "dae_nodes=2",
            "--param", "gpus_per_node=4", "--experiment", "voices", "--namespace", "team-a", "--no-cache")
    assert r.exit_code == 0, r.output
    (c,) = fake_kfp.made
    assert c.kwargs == {"host": "http://127.0.0.1:1", "namespace": "team-a", "existing_token": "tok-123"}
    (kind, call), = c.calls
    assert kind == "run" and call["pipeline"]["pipelineInfo"]["name"] == "retrain-speaker"
    assert call["arguments"] == {"speaker": "ana", "data_rev": REV, "dae_nodes": 2, "gpus_per_node": 4}
    assert (call["experiment_name"], call["namespace"], call["enable_caching"]) == ("voices", "team-a", False)
    assert "run-1" in r.output


def test_submit_compiles_the_pipeline_it_is_asked_for_or_sends_a_given_package(fake_kfp, tmp_path):
    r = cli("pipeline", "submit", "--host", "http://h", "--pipeline", "evaluate-promote",
            "--param", "speaker=ana", "--param", "version=3")
    assert r.exit_code == 0, r.output
    call = fake_kfp.made[-1].calls[-1][1]
    assert call["pipeline"]["pipelineInfo"]["name"] == "evaluate-promote"
    assert call["arguments"] == {"speaker": "ana", "version": "3"} and call["enable_caching"] is None
    assert "existing_token" not in fake_kfp.made[-1].kwargs
    package = tmp_path / "mine.yaml"
    assert cli("pipeline", "compile", "--pipeline", "train-speaker", "--out", str(package)).exit_code == 0
    r = cli("pipeline", "submit", "--host", "http://h", "--package", str(package), "--param", "synth_minutes=0.5")
    assert r.exit_code == 0, r.output
    call = fake_kfp.made[-1].calls[-1][1]
    assert call["pipeline_file"] == str(package) and call["arguments"] == {"synth_minutes": 0.5}


@pytest.mark.parametrize("params, message", [
    (["speaker=ana", "data_rev=latest"], "data revision 'latest'"),
    (["speaker=ana", "dae_nodes=two"], "dae_nodes='two': expected a number integer"),
    (["speaker=ana", "colour=red"], "has no such parameter"),
    (["data_rev=" + REV], "needs --param for speaker"),
    (["speaker"], "expected KEY=VALUE"),
])
def test_submit_refuses_bad_parameters_before_calling_kfp(fake_kfp, params, message):
    r = cli("pipeline", "submit", "--host", "http://h", *[a for p in params for a in ("--param", p)])
    assert r.exit_code != 0
    assert message in str(r.exception)
    assert not fake_kfp.made or not fake_kfp.made[-1].calls


def test_schedule_creates_a_recurring_run_one_at_a_time_without_catch_up(fake_kfp):
    r = cli("pipeline", "schedule", "--speaker", "ana", "--cron", "0 30 2 * * SUN", "--host", "http://h",
            "--param", "gpus_per_node=2")
    assert r.exit_code == 0, r.output
    (c,) = fake_kfp.made
    assert c.calls[0] == ("experiment", {"name": "daetalker", "namespace": None})
    kind, call = c.calls[1]
    assert kind == "recurring" and call["pipeline"]["pipelineInfo"]["name"] == "retrain-speaker"
    assert call["experiment_id"] == "exp-1" and call["job_name"] == "retrain-speaker-ana"
    assert call["cron_expression"] == "0 30 2 * * SUN"
    assert call["max_concurrency"] == 1 and call["no_catchup"] is True and call["enabled"] is True
    assert call["params"] == {"speaker": "ana", "gpus_per_node": 2}  # no data_rev: each run takes the published one
    assert "rr-1" in r.output


@pytest.mark.parametrize("cron, message", [
    ("0 3 * * *", "has 5 fields; Kubeflow Pipelines reads 6, seconds first (fix: '0 0 3 * * *'"),
    ("0 0 3 * *", "has 5 fields"),
    ("0 0 0 3 * * *", "expected 6 fields"),
    ("60 0 3 * * *", "second field '60'"),
    ("0 0 24 * * *", "hour field '24'"),
    ("0 0 3 0 * *", "day of month field '0'"),
    ("0 0 3 * 13 *", "month field '13'"),
    ("0 0 3 * * FUNDAY", "day of week field 'FUNDAY'"),
    ("0 0 5-3 * * *", "hour field '5-3'"),
    ("0 */0 * * * *", "minute field '*/0'"),
    ("? 0 3 * * *", "second field '?'"),
])
def test_schedule_refuses_cron_expressions_kfp_would_not_run(fake_kfp, cron, message):
    r = cli("pipeline", "schedule", "--speaker", "ana", "--cron", cron, "--host", "http://h")
    assert r.exit_code != 0 and message in str(r.exception)
    assert not fake_kfp.made  # refused before any client is made


@pytest.mark.parametrize("cron", ["0 0 3 * * *", "*/30 * * * * *", "0 0 9 ? * MON-FRI", "0 0,30 8-18/2 1,15 JAN-JUN 0",
                                  "0 15 10 ? * 6", "0 0 3 1 */3 *"])
def test_cron_expressions_kfp_accepts_pass(cron):
    assert submit.check_cron(cron) == cron


def test_schedule_refuses_a_pinned_revision(fake_kfp):
    r = cli("pipeline", "schedule", "--speaker", "ana", "--cron", "0 0 3 * * *", "--host", "http://h",
            "--param", f"data_rev={REV}")
    assert r.exit_code != 0 and "daetalker data publish --speaker ana" in str(r.exception)


class _KfpApi(BaseHTTPRequestHandler):
    """Just enough of the KFP v2beta1 REST API for create_run / create_recurring_run."""

    seen: list[tuple[str, str, str | None, dict]] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, self.headers.get("Authorization"), {}))
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply({"experiments": [{"experiment_id": "exp-9", "display_name": "daetalker"}]})
        self._reply({})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.seen.append(("POST", self.path, self.headers.get("Authorization"), body))
        ids = {"/apis/v2beta1/runs": {"run_id": "run-9"}, "/apis/v2beta1/recurringruns": {"recurring_run_id": "rr-9"}}
        self._reply(ids.get(self.path, {}))

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def kfp_api():
    _KfpApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", _KfpApi.seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_real_kfp_client_sends_token_parameters_and_schedule(kfp_api, monkeypatch):
    host, seen = kfp_api
    monkeypatch.setenv(submit.TOKEN_ENV, "tok-xyz")
    r = cli("pipeline", "submit", "--host", host, "--param", "speaker=ana", "--param", f"data_rev={REV}")
    assert r.exit_code == 0, r.output
    r = cli("pipeline", "schedule", "--speaker", "ana", "--cron", "0 0 3 * * *", "--host", host)
    assert r.exit_code == 0, r.output
    assert seen and all(auth == "Bearer tok-xyz" for _, _, auth, _ in seen)
    run = next(body for verb, path, _, body in seen if path == "/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-9"
    assert run["runtime_config"]["parameters"] == {"speaker": "ana", "data_rev": REV}
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "retrain-speaker"
    assert "kubernetes" in run["pipeline_spec"]["platform_spec"]["platforms"]  # the cluster settings travel
    job = next(body for verb, path, _, body in seen if path == "/apis/v2beta1/recurringruns")
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert job["max_concurrency"] in (1, "1") and job["no_catchup"] is True and job["mode"] == "ENABLE"
    assert job["runtime_config"]["parameters"] == {"speaker": "ana"}


# ---------------------------------------------------------------- the evaluate-promote gate step


def _version(client, name: str, metrics: dict[str, float]) -> str:
    import mlflow

    run = client.create_run(mlflow.set_experiment("evaluate-promote-test").experiment_id)
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    tags = {f"metric.{k}": repr(v) for k, v in metrics.items()} | {"profile": "base128", "eval_run_id": "first-eval"}
    return str(client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                           tags=tags).version)


def _evaluation(client, metrics: dict[str, float]) -> str:
    import mlflow

    run = client.create_run(mlflow.set_experiment("evaluate-promote-test").experiment_id)
    for k, v in metrics.items():
        client.log_metric(run.info.run_id, k, v)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_gate_step_records_the_new_evaluation_and_gates_on_it(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    from daetalker.kubeflow.context import RunContext
    from daetalker.stages.steps import promote_version_step
    from daetalker.registry.names import RegistryError
    from daetalker.registry.promote import promote

    client, name = MlflowClient(mlflow_server), "talker-evalpromo"
    face = {"face_found_rate": 1.0, "lse_c_vs_gt": 0.9}  # a face in every frame, lips in sync (issue 16 floors)
    base = {"lse_c": 6.0, "lse_d": 7.0, "fid": 30.0, "pose_mae": 3.0, **face}
    champion = _version(client, name, base)
    promote("evalpromo", champion, "first model", origin="manual")
    candidate = _version(client, name, {"lse_c": 2.0, "lse_d": 9.5, "fid": 80.0, "pose_mae": 20.0,
                                        **face})  # fails as registered
    ctx = RunContext(speaker="evalpromo", profile="base128", workspace=str(tmp_path),
                     tags={"daetalker.data_rev": REV}).to_json()
    better = _evaluation(client, {"lse_c": 6.4, "lse_d": 6.8, "fid": 28.0, "pose_mae": 2.8, "psnr": 30.0, **face})
    out = promote_version_step(ctx, candidate, json.dumps({"eval_run_id": better, "report": "r.html",
                                                           "metrics": "m.json"}), "", "re-scored on new clips")
    assert out["passed"] is True and out["aliases"] == {"champion": candidate, "challenger": candidate}
    tags = client.get_model_version(name, candidate).tags
    assert float(tags["metric.lse_c"]) == 6.4 and float(tags["metric.psnr"]) == 30.0
    assert (tags["eval_run_id"], tags["eval_data_hash"], tags["previous_eval_run_id"]) == (better, REV, "first-eval")

    strict = "floors:\n  lse_c: {min: 9.0}\n"  # thresholds as a pipeline parameter: YAML text
    third = _version(client, name, base)
    out = promote_version_step(ctx, third, json.dumps({"eval_run_id": _evaluation(client, base), "report": "r",
                                                        "metrics": "m"}), strict, "strict gate")
    assert out["passed"] is False and out["aliases"] == {"champion": candidate, "challenger": third}

    no_metrics = _evaluation(client, {"psnr": 1.0})
    with pytest.raises(RegistryError, match="has no lse_c, lse_d, fid, pose_mae, face_found_rate, lse_c_vs_gt"):
        promote_version_step(ctx, third, json.dumps({"eval_run_id": no_metrics, "report": "r", "metrics": "m"}))


def test_local_runs_refuse_what_they_cannot_run_before_starting_anything(tmp_path):
    r = cli("pipeline", "run", "--pipeline", "evaluate-promote", "--out", str(tmp_path / "o"))
    assert r.exit_code != 0 and "pipeline submit" in str(r.exception)
    r = cli("pipeline", "run", "--pipeline", "retrain-speaker", "--speaker", "ana", "--containers",
            "--out", str(tmp_path / "o"))
    assert r.exit_code != 0 and "drop --containers" in str(r.exception)
    r = cli("pipeline", "run", "--pipeline", "nope", "--out", str(tmp_path / "o"))
    assert r.exit_code != 0 and "retrain-speaker" in r.output
    assert not (tmp_path / "o").exists()

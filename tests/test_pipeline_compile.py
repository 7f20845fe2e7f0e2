"""The pipelines compiled for a cluster, read back from their YAML (compilation only, no cluster).

Each pipeline is compiled twice (same bytes), loaded back with the KFP SDK and
its protos, and the settings a cluster run depends on are read from the YAML:
resources and GPUs, Secrets as environment, /dev/shm, the data-cache volume,
caching flags, the dataset revision reaching every data step, the distributed
training branch, and upstream files reaching tasks as input artifacts.
"""

import json
from pathlib import Path

import pytest
import yaml

from daetalker.kubeflow.cluster import TASKS
from pipelines.local import compile_pipeline

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ("train-speaker", "retrain-speaker", "evaluate-promote")
GPU_STEPS = {"train-autoencoder", "train-dae", "extract-latents", "train-s2l", "evaluate"}
NEVER_CACHED = {"open-workspace", "register-and-gate", "promote-version"}


class Compiled:
    """One compiled pipeline: its pipeline spec, platform spec and every task, nested DAGs included."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bytes = path.read_bytes()
        docs = list(yaml.safe_load_all(self.bytes))
        self.spec = docs[0]
        self.platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
        self.tasks: dict[str, dict] = {}  # task name -> task, from the root DAG and every condition's DAG
        for dag in [self.spec["root"]["dag"]] + [c["dag"] for c in self.spec["components"].values() if "dag" in c]:
            self.tasks |= dag["tasks"]

    def executor_label(self, task: str) -> str | None:
        return self.spec["components"][self.tasks[task]["componentRef"]["name"]].get("executorLabel")

    def container(self, task: str) -> dict:
        return self.spec["deploymentSpec"]["executors"][self.executor_label(task)]["container"]

    def component(self, task: str) -> str:
        """The component's KFP name (from the Python function the container runs)."""
        args = self.container(task)["args"]
        return args[args.index("--function_to_execute") + 1].replace("_", "-")

    def container_tasks(self) -> list[str]:
        return [t for t in self.tasks if self.executor_label(t)]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Compiled, Compiled]]:
    out = tmp_path_factory.mktemp("compiled")
    return {name: (Compiled(compile_pipeline(out / f"{name}-a.yaml", name, cluster=True)),
                   Compiled(compile_pipeline(out / f"{name}-b.yaml", name, cluster=True)))
            for name in PIPELINES}  # fmt: skip


@pytest.fixture(scope="module")
def cluster_settings():
    import pipelines

    return pipelines.cluster_settings()


@pytest.mark.parametrize("name", PIPELINES)
def test_compiling_twice_gives_the_same_bytes(name, compiled):
    a, b = compiled[name]
    assert a.bytes == b.bytes


@pytest.mark.parametrize("name", PIPELINES)
def test_yaml_loads_back_with_the_kfp_sdk(name, compiled):
    from google.protobuf import json_format
    from kfp import components
    from kfp.pipeline_spec import pipeline_spec_pb2

    c = compiled[name][0]
    assert components.load_component_from_file(str(c.path)).name == name
    docs = list(yaml.safe_load_all(c.bytes))
    json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())  # unknown fields raise
    json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())


@pytest.mark.parametrize("name", PIPELINES)
def test_every_task_gets_resources_secrets_shm_and_the_data_cache(name, compiled, cluster_settings):
    c = compiled[name][0]
    s = cluster_settings
    tasks = c.container_tasks()
    assert tasks
    for t in tasks:
        res = c.container(t)["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert res.get(key), f"{name}/{t}: no {key}"
        size = TASKS[c.component(t)]
        assert (res["resourceCpuRequest"], res["resourceMemoryLimit"]) == (size.cpu_request, size.memory_limit)
        env = {e["name"]: e["value"] for e in c.container(t)["env"]}
        assert env["MLFLOW_TRACKING_URI"] == s.mlflow_uri and env["DAETALKER_S3_BUCKET"] == s.s3_bucket
        assert env["DAETALKER_STATE"].startswith(s.data_mount + "/")  # registry locks shared by every run
        k8s = c.platform[c.executor_label(t)]
        secrets = {x["secretName"]: x for x in k8s["secretAsEnv"]}
        s3 = {m["secretKey"]: m["envVar"] for m in secrets["daetalker-s3"]["keyToEnv"]}
        assert s3 == {"access-key-id": "AWS_ACCESS_KEY_ID", "secret-access-key": "AWS_SECRET_ACCESS_KEY"}
        assert secrets["daetalker-s3"]["optional"] is False and secrets["daetalker-mlflow"]["optional"] is True
        assert {m["envVar"] for m in secrets["daetalker-mlflow"]["keyToEnv"]} == {
            "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
        assert not any(e.startswith("AWS_SECRET") or "PASSWORD" in e for e in env), f"{t}: a credential as a literal"
        (shm,) = k8s["emptyDirMounts"]
        assert (shm["mountPath"], shm["medium"], shm["sizeLimit"]) == ("/dev/shm", "Memory", size.shm)
        (pvc,) = k8s["pvcMount"]
        assert pvc["mountPath"] == s.data_mount
        assert pvc["pvcNameParameter"]["runtimeValue"]["constant"] == s.data_pvc


@pytest.mark.parametrize("name", PIPELINES)
def test_gpu_steps_request_gpus_on_gpu_nodes_and_the_others_none(name, compiled, cluster_settings):
    c = compiled[name][0]
    gpu_tasks = set()
    for t in c.container_tasks():
        container, k8s = c.container(t), c.platform[c.executor_label(t)]
        acc = container["resources"].get("accelerator")
        if acc:
            gpu_tasks.add(c.component(t))
            assert acc["resourceType"] == "nvidia.com/gpu" and acc["resourceCount"] == "1", t
            assert container["image"] == cluster_settings.gpu_image, t
            assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
        else:
            assert container["image"] == cluster_settings.cpu_image, f"{t}: the CUDA image without a GPU"
            assert "nodeSelector" not in k8s and "tolerations" not in k8s
    expected = {"evaluate", "train-syncnet"} | (GPU_STEPS if name != "evaluate-promote" else set())
    assert expected <= gpu_tasks
    assert not gpu_tasks & {"train-dae-job", "train-s2l-job", "open-workspace", "register-and-gate"}


def _cached(task: dict) -> bool:
    return task.get("cachingOptions", {}).get("enableCache", False) is True


@pytest.mark.parametrize("name", PIPELINES)
def test_registry_steps_and_the_checkout_are_never_cached(name, compiled):
    c = compiled[name][0]
    for t in c.container_tasks():
        assert _cached(c.tasks[t]) == (c.component(t) not in NEVER_CACHED), t
    assert NEVER_CACHED & {c.component(t) for t in c.container_tasks()}


def _ctx_source(c: Compiled, task: str) -> str:
    """The task or pipeline input a task's ``ctx`` comes from (through condition DAGs)."""
    p = c.tasks[task]["inputs"]["parameters"]["ctx"]
    if "taskOutputParameter" in p:
        return f"{p['taskOutputParameter']['producerTask']}.{p['taskOutputParameter']['outputParameterKey']}"
    return p["componentInputParameter"].removeprefix("pipelinechannel--").replace("open-workspace-", "open-workspace.")


@pytest.mark.parametrize("name", ["retrain-speaker", "evaluate-promote"])
def test_the_data_revision_keys_every_data_step(name, compiled):
    """data_rev -> open-workspace -> ctx (which names the resolved revision) -> every other step."""
    c = compiled[name][0]
    ws = c.tasks["open-workspace"]["inputs"]["parameters"]
    assert ws["data_rev"] == {"componentInputParameter": "data_rev"}
    assert ws["published_if_empty"]["runtimeValue"]["constant"] is True
    consumers = [t for t in c.container_tasks() if t != "open-workspace"]
    assert consumers
    for t in consumers:
        assert _ctx_source(c, t) == "open-workspace.ctx", t
    assert "latest" not in json.dumps(c.spec["root"]["inputDefinitions"])


def test_the_run_context_of_a_revision_names_it_and_nothing_run_specific(tmp_path, monkeypatch):
    from daetalker.kubeflow.workspace import open_workspace_step
    from daetalker.versioning import revision

    calls = []
    monkeypatch.setattr(revision, "checkout", lambda root, rev, state_dir=None: calls.append((root, rev)))
    rev = "d1a14f79191d575fda3f546fe14ee220.dir"
    a = open_workspace_step("ana", "tiny", rev, str(tmp_path), "retrain-speaker", True)
    assert a == open_workspace_step("ana", "tiny", rev, str(tmp_path), "retrain-speaker", True)  # cache key stable
    ctx = json.loads(a[0])
    assert ctx["tags"]["daetalker.data_rev"] == rev and ctx["parent_run_id"] == ""
    assert ctx["workspace"] == str(tmp_path / "ana" / "retrain-speaker" / rev)
    assert json.loads(a[1]) == {"data_hash": rev}
    assert calls[0] == (tmp_path / "ana" / "retrain-speaker" / rev, rev)
    b = open_workspace_step("ana", "tiny", "0" * 32 + ".dir", str(tmp_path), "retrain-speaker", True)
    assert b[0] != a[0]  # another revision, another cache key
    for bad in ("latest", "main", "d1a14f79"):
        with pytest.raises(Exception, match="data revision"):
            open_workspace_step("ana", "tiny", bad, str(tmp_path), "retrain-speaker", True)


@pytest.mark.parametrize("name", ["train-speaker", "retrain-speaker"])
def test_training_branches_to_a_pytorchjob_on_nodes(name, compiled, cluster_settings):
    from daetalker.kubeflow.cluster import ClusterSettings

    c = compiled[name][0]
    for job, local, nodes in (("train-dae-job", "train-dae", "dae_nodes"), ("train-s2l-job", "train-s2l", "s2l_nodes")):
        branches = {t: task for t, task in c.tasks.items() if task.get("triggerPolicy", {}).get("condition")}
        conditions = {task["triggerPolicy"]["condition"] for task in branches.values()}
        assert f"int(inputs.parameter_values['pipelinechannel--{nodes}']) > 0" in conditions
        assert f"!(int(inputs.parameter_values['pipelinechannel--{nodes}']) > 0)" in conditions
        params = c.tasks[job]["inputs"]["parameters"]
        assert params["nodes"] == {"componentInputParameter": f"pipelinechannel--{nodes}"}
        assert params["gpus_per_node"] == {"componentInputParameter": "pipelinechannel--gpus_per_node"}
        sent = ClusterSettings.from_json(params["cluster"]["runtimeValue"]["constant"])
        assert sent.data_pvc == cluster_settings.data_pvc and sent.gpu_image == cluster_settings.gpu_image
        assert local in c.tasks
    # the step after each branch takes whichever ran
    assert "oneof" in json.dumps(c.tasks["extract-latents"]["inputs"]["artifacts"]["dae"])


@pytest.mark.parametrize("name", PIPELINES)
def test_upstream_files_reach_tasks_as_input_artifacts(name, compiled):
    """On a cluster a task sees only the artifacts it declares; paths in upstream JSON must lie in them."""
    c = compiled[name][0]
    wanted = {"train-dae": {"autoencoder"}, "extract-latents": {"dae"}, "train-s2l": {"latents"},
              "train-s2l-job": {"latents"},
              "package-model": {"dae", "latents", "s2l"}, "evaluate": {"bundle", "expert"}}  # fmt: skip
    seen = 0
    for t in c.container_tasks():
        if c.component(t) in wanted:
            seen += 1
            assert set(c.tasks[t]["inputs"].get("artifacts", {})) == wanted[c.component(t)], t
    assert seen


def test_every_component_has_a_size_and_every_size_a_component(compiled):
    used = {c.component(t) for c, _ in compiled.values() for t in c.container_tasks()}
    assert used == set(TASKS)


def test_the_local_pipeline_carries_no_cluster_settings(tmp_path):
    c = Compiled(compile_pipeline(tmp_path / "local.yaml", "train-speaker", cluster=False))
    assert c.platform == {}
    assert "ctx" in c.spec["root"]["inputDefinitions"]["parameters"]  # run_local passes its own context
    for t in c.container_tasks():
        assert "resources" not in c.container(t) and "env" not in c.container(t)
    assert c.tasks["train-autoencoder"]["dependentTasks"] == ["version-data"]
    assert c.tasks["train-dae"]["dependentTasks"] == ["train-autoencoder", "version-data"]
    assert not _cached(c.tasks["register-and-gate"])


def test_apply_refuses_a_task_without_a_size():
    from kfp import dsl

    from daetalker.kubeflow.cluster import apply_to_pipeline
    import pipelines

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def unsized(x: str) -> str:
        return x

    with pytest.raises(KeyError, match="unsized"):
        @dsl.pipeline(name="p")
        def p(x: str = "a") -> str:
            t = unsized(x=x)
            apply_to_pipeline(pipelines.cluster_settings())
            return t.output

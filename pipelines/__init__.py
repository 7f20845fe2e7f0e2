"""The speaker pipelines by name, built for kfp.local or for a cluster."""

from typing import Any, Callable

from components import CPU_IMAGE, GPU_IMAGE
from daetalker.kubeflow.cluster import ClusterSettings


def cluster_settings() -> ClusterSettings:
    """infra/'s defaults with the images the components run in."""
    return ClusterSettings(gpu_image=GPU_IMAGE, cpu_image=CPU_IMAGE)


def builders() -> dict[str, Callable[[ClusterSettings | None], Any]]:
    from pipelines import evaluate_promote, retrain_speaker, train_speaker

    return {train_speaker.NAME: train_speaker.build, retrain_speaker.NAME: retrain_speaker.build,
            evaluate_promote.NAME: evaluate_promote.build}  # fmt: skip


def build(name: str, cluster: bool = True) -> Any:
    """The pipeline ``name``, with the cluster settings applied to every task when ``cluster``."""
    found = builders()
    if name not in found:
        raise KeyError(f"no pipeline {name!r}; choose one of {', '.join(found)}")
    return found[name](cluster_settings() if cluster else None)

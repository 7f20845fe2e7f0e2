"""Dataset versioning with DVC: the dataset folder is tracked by ``data.dvc``,
its content lives in a DVC remote (a local folder or S3), and every MLflow run
records the md5 in ``data.dvc`` as lineage."""

from daetalker.versioning.dvc_repo import (
    Remote,
    configure_remote,
    data_hash,
    init_repo,
    pull,
    push,
    select_remote,
    status,
    track,
)

__all__ = [
    "Remote",
    "configure_remote",
    "data_hash",
    "init_repo",
    "pull",
    "push",
    "select_remote",
    "status",
    "track",
]

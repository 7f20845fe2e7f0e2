"""A dataset revision: the md5 that ``data.dvc`` records for ``data/``, checked out anywhere.

The revision is content-addressed (``<md5>.dir``, the hash of the folder's
listing), so it names one immutable dataset: the key the cluster pipelines
cache on. Names that can move ("latest", a branch) are refused. Checking a
revision out needs only the DVC remote, not the git history that recorded
it: ``data.dvc`` is rebuilt from the hash and ``dvc pull`` fetches the folder
listing and its files.

A speaker's *published* revision is the one scheduled retraining picks up: a
small JSON object beside the DVC remote (``<remote>-revisions/<speaker>.json``)
that ``daetalker data publish`` moves. A run resolves it once, at its start,
to the immutable hash that its steps then take.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import yaml

from daetalker.errors import DaetalkerError
from daetalker.versioning import dvc_repo

DATA_REV = re.compile(r"[0-9a-f]{32}\.dir")
DVC_FILE = "data.dvc"


def check_rev(rev: str) -> str:
    """``rev`` if it is a dataset revision; a DaetalkerError naming the fix otherwise."""
    rev = rev.strip()
    if not DATA_REV.fullmatch(rev):
        raise DaetalkerError(
            f"data revision {rev!r}: expected the md5 that data.dvc records for the dataset folder, "
            "e.g. d1a14f79191d575fda3f546fe14ee220.dir (fix: copy it from data.dvc, the 'data_hash' tag "
            "of a registered version, or the output of `daetalker data track data`); names that can move, "
            "such as 'latest' or a branch, are refused because runs are cached on the revision"
        )
    return rev


def pinned_rev(root: Path | str) -> str | None:
    """The revision ``root/data.dvc`` pins, or None when there is no such file."""
    if not (Path(root) / DVC_FILE).is_file():
        return None
    return dvc_repo.data_hash(root, DVC_FILE)


def init_workspace(root: Path | str) -> Path:
    """``root`` as a git + DVC repository (created if needed)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q", str(root)], check=True, capture_output=True)
    return dvc_repo.init_repo(root)


def checkout(root: Path | str, rev: str, state_dir: Path | str | None = None) -> Path:
    """Make ``root`` a git + DVC repository holding revision ``rev`` of ``data/``; returns ``root/data``.

    A ``root`` that already has a ``data.dvc`` keeps it (a pipeline that
    versioned new data there has moved it past ``rev``); only missing files
    are fetched. The remote comes from the environment (:func:`dvc_repo.select_remote`).
    """
    rev = check_rev(rev)
    root = init_workspace(root)
    remote = dvc_repo.select_remote(root, state_dir)
    if pinned_rev(root) is None:
        # ``hash: md5`` marks a DVC 3 hash (remote layout files/md5/); without it DVC looks up the 2.x layout.
        (root / DVC_FILE).write_text(yaml.safe_dump({"outs": [{"md5": rev, "hash": "md5", "path": "data"}]}))
    dvc_repo.pull(root, remote.name)
    return root / "data"


# ---------------------------------------------------------------- published revisions


def _pointer(remote: dvc_repo.Remote, speaker: str) -> tuple[str, str]:
    """(bucket or folder, key) of ``speaker``'s pointer: beside the remote, outside DVC's own layout."""
    if remote.url.startswith("s3://"):
        u = urlparse(remote.url)
        prefix = u.path.strip("/")
        return u.netloc, f"{prefix}-revisions/{speaker}.json" if prefix else f"revisions/{speaker}.json"
    return remote.url.rstrip("/") + "-revisions", f"{speaker}.json"


def _s3(remote: dvc_repo.Remote):
    import boto3

    return boto3.client("s3", endpoint_url=remote.endpoint)  # credentials from the environment only


def publish(remote: dvc_repo.Remote, speaker: str, rev: str, actor: str = "") -> dict[str, str]:
    """Make ``rev`` the revision that scheduled runs of ``speaker`` train on next."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"speaker": speaker, "rev": check_rev(rev), "published_at": when, "by": actor}
    where, key = _pointer(remote, speaker)
    body = json.dumps(record, indent=2)
    if remote.url.startswith("s3://"):
        _s3(remote).put_object(Bucket=where, Key=key, Body=body.encode())
    else:
        Path(where).mkdir(parents=True, exist_ok=True)
        tmp = Path(where) / f".{key}.tmp"
        tmp.write_text(body)
        tmp.replace(Path(where) / key)  # atomic: a reader sees the old or the new pointer
    return record


def published(remote: dvc_repo.Remote, speaker: str) -> str:
    """The revision last published for ``speaker`` (DaetalkerError if there is none)."""
    where, key = _pointer(remote, speaker)
    try:
        if remote.url.startswith("s3://"):
            body = _s3(remote).get_object(Bucket=where, Key=key)["Body"].read().decode()
        else:
            body = (Path(where) / key).read_text()
    except Exception as e:
        missing = isinstance(e, FileNotFoundError) or getattr(e, "response", {}).get("Error", {}).get("Code") == "NoSuchKey"
        if not missing:
            raise
        raise DaetalkerError(
            f"no published dataset revision for speaker {speaker!r} beside {remote.describe()} "
            f"(fix: `daetalker data publish --speaker {speaker}` in the checkout whose data.dvc names it)"
        ) from None
    return check_rev(json.loads(body)["rev"])

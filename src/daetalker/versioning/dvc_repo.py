"""DVC versioning of the dataset: init, remote selection, track, push, pull.

Data commands (init, add, push, pull, status) run the ``dvc`` command line of
this interpreter in a subprocess rather than ``dvc.repo.Repo`` in-process:
fsspec caches S3 filesystems with the credentials they were made with, so an
in-process retry after fixing a wrong secret would silently reuse the old one.
Config is read and written in-process with ``dvc.config.Config`` (plain files,
no filesystem objects), which saves ~1.5 s per call on 2 cores.

Remote selection (:func:`remote_from_env`)::

    DAETALKER_S3_ENDPOINT and DAETALKER_S3_BUCKET set
        -> remote "s3" = s3://$BUCKET/$DAETALKER_S3_PREFIX (default prefix "dvc"),
           endpointurl = $DAETALKER_S3_ENDPOINT
    otherwise
        -> remote "local" = $DAETALKER_STATE/dvc-remote (default ./.state/dvc-remote)

S3 credentials come only from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the
environment; nothing here writes them to a file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from daetalker.errors import DaetalkerError, ServiceError

CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
DVC_TIMEOUT_S = 1800.0
# How S3 (SeaweedFS, AWS, MinIO) and s3fs word a refused or missing credential.
_AUTH_ERROR = re.compile(
    r"Forbidden|\b403\b|SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied|"
    r"Unable to locate credentials|NoCredentialsError|PermissionError",
)
_UNREACHABLE = re.compile(r"Could not connect|Connection refused|Cannot connect to host|EndpointConnectionError")


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    endpoint: str | None = None  # S3 endpoint URL, None for AWS or a local path

    def describe(self) -> str:
        where = f"{self.url} at {self.endpoint}" if self.endpoint else self.url
        return f"DVC remote '{self.name}' ({where})"


# ---------------------------------------------------------------- plumbing
def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")  # no phone-home daemon per command
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=DVC_TIMEOUT_S,
    )


def _dvc_ok(root: Path, *args: str) -> str:
    r = _dvc(root, *args)
    if r.returncode != 0:
        raise ServiceError(f"`dvc {' '.join(args)}` failed in {root}: {_error_line(r)}")
    return r.stdout


def _error_line(r: subprocess.CompletedProcess[str]) -> str:
    """DVC's own ERROR line (or the last non-empty line) of a failed command."""
    lines = [ln.strip() for ln in (r.stderr + "\n" + r.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or [f"exit code {r.returncode}"])[-1]


def _git_toplevel(root: Path) -> Path:
    r = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise DaetalkerError(f"{root}: not inside a git repository (fix: run `git init` there first)")
    return Path(r.stdout.strip())


# ---------------------------------------------------------------- repo and remote
def _config(root: Path):
    from dvc.config import Config

    return Config(dvc_dir=str(root / ".dvc"))


def init_repo(root: Path | str) -> Path:
    """``dvc init`` in the git repo at ``root`` if needed; autostage .dvc files into git."""
    root = Path(root).resolve()
    _git_toplevel(root)
    if not (root / ".dvc").is_dir():
        _dvc_ok(root, "init", "--quiet")
    core = _config(root)["core"]
    if core.get("autostage") is not True or core.get("analytics") is not False:
        with _config(root).edit("repo") as conf:
            conf["core"]["autostage"] = True
            conf["core"]["analytics"] = False  # no phone-home daemon after each command
    return root


def remote_from_env(root: Path | str, state_dir: Path | str | None = None) -> Remote:
    """The remote the environment asks for (see the module docstring).

    A local remote's ``url`` is absolute here; it is stored relative to .dvc/
    when it lies inside the repo, so the committed config works in every clone.
    """
    endpoint = os.environ.get("DAETALKER_S3_ENDPOINT")
    bucket = os.environ.get("DAETALKER_S3_BUCKET")
    if endpoint and bucket:
        prefix = os.environ.get("DAETALKER_S3_PREFIX", "dvc").strip("/")
        return Remote("s3", f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}", endpoint)
    state = Path(state_dir or os.environ.get("DAETALKER_STATE") or Path(root) / ".state").resolve()
    return Remote("local", str(state / "dvc-remote"))


def configure_remote(root: Path | str, state_dir: Path | str | None = None) -> Remote:
    """Write the environment's remote into .dvc/config as the default remote."""
    from dvc.config_schema import RelPath

    root = Path(root).resolve()
    remote = remote_from_env(root, state_dir)
    section: dict[str, str] = {"url": remote.url}
    if remote.endpoint:
        section["endpointurl"] = remote.endpoint
    else:
        Path(remote.url).mkdir(parents=True, exist_ok=True)
        if Path(remote.url).is_relative_to(root):
            section["url"] = RelPath(remote.url)  # saved relative to .dvc/
    with _config(root).edit("repo") as conf:
        conf["remote"][remote.name] = section
        conf["core"]["remote"] = remote.name
    return remote


def remotes(root: Path | str) -> tuple[str | None, dict[str, Remote]]:
    """(default remote name, remotes by name), all DVC config levels merged."""
    conf = _config(Path(root).resolve())
    found = {
        name: Remote(name, str(sec["url"]), sec.get("endpointurl"))
        for name, sec in conf["remote"].items()
    }
    return conf["core"].get("remote"), found


def default_remote(root: Path | str) -> Remote | None:
    name, found = remotes(root)
    return found.get(name) if name else None


def select_remote(root: Path | str, state_dir: Path | str | None = None) -> Remote:
    """The remote ``daetalker data`` uses: S3 when the environment names one (written
    into .dvc/config), else the repo's default remote, else a new local one."""
    if os.environ.get("DAETALKER_S3_ENDPOINT") and os.environ.get("DAETALKER_S3_BUCKET"):
        return configure_remote(root, state_dir)
    return default_remote(root) or configure_remote(root, state_dir)


def _remote_or_fail(root: Path, name: str | None) -> Remote:
    default, found = remotes(root)
    name = name or default
    if name is None:
        raise ServiceError(
            f"{root}/.dvc/config: no default DVC remote "
            "(fix: `daetalker data push` configures one from DAETALKER_S3_ENDPOINT/DAETALKER_S3_BUCKET, "
            "or a local folder under $DAETALKER_STATE)"
        )
    if name not in found:
        raise ServiceError(
            f"{root}/.dvc/config: no DVC remote named '{name}' (fix: `daetalker data push` configures one)"
        )
    return found[name]


# ---------------------------------------------------------------- data
def track(root: Path | str, path: Path | str) -> str:
    """``dvc add path``; returns the md5 recorded in ``path.dvc`` (``...dir`` for a folder)."""
    root = Path(root).resolve()
    rel = Path(path)
    rel = rel.resolve().relative_to(root) if rel.is_absolute() else rel
    if not (root / rel).exists():
        raise DaetalkerError(f"{root / rel}: nothing to track (fix: point at an existing file or folder)")
    _dvc_ok(root, "add", "--quiet", str(rel))
    return data_hash(root, rel.with_name(rel.name + ".dvc"))


def data_hash(root: Path | str, dvc_file: Path | str = "data.dvc") -> str:
    """The md5 of the data a ``.dvc`` file points at, as recorded in it."""
    path = Path(root) / dvc_file
    try:
        meta = yaml.safe_load(path.read_text())
        return str(meta["outs"][0]["md5"])
    except FileNotFoundError:
        raise DaetalkerError(f"{path}: no such DVC file (fix: `daetalker data track <folder>` creates it)") from None
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as e:
        raise DaetalkerError(f"{path}: not a DVC file with one output and an md5 ({e!r})") from None


def _transfer(root: Path | str, verb: str, remote: str | None) -> int:
    root = Path(root).resolve()
    rem = _remote_or_fail(root, remote)
    r = _dvc(root, verb, "--remote", rem.name)
    text = r.stdout + "\n" + r.stderr
    if r.returncode != 0:
        raise _transfer_error(root, verb, rem, r)
    counts = re.findall(r"(\d+) files? (?:pushed|fetched)", text)
    return sum(int(c) for c in counts)


def _transfer_error(root: Path, verb: str, rem: Remote, r: subprocess.CompletedProcess[str]) -> ServiceError:
    text = r.stdout + "\n" + r.stderr
    cause = _error_line(r)
    if rem.url.startswith("s3://") and _AUTH_ERROR.search(text):
        missing = [v for v in CREDENTIAL_VARS if not os.environ.get(v)]
        state = f"{' and '.join(missing)} not set" if missing else "set but refused"
        return ServiceError(
            f"dvc {verb}: {rem.describe()} refused the credentials ({state}): {cause} "
            f"(fix: export {CREDENTIAL_VARS[0]} and {CREDENTIAL_VARS[1]} with a key this server accepts; "
            "they are read from the environment only, never from .dvc/config)"
        )
    if _UNREACHABLE.search(text):
        return ServiceError(
            f"dvc {verb}: cannot reach {rem.describe()}: {cause} "
            "(fix: start the object store or correct DAETALKER_S3_ENDPOINT, then `daetalker data push` again)"
        )
    if "missing-files" in text or "Checkout failed" in text:
        return ServiceError(
            f"dvc {verb}: {rem.describe()} lacks data that {root} references: {cause} "
            "(fix: run `daetalker data push` in the checkout that added the data)"
        )
    return ServiceError(f"dvc {verb} with {rem.describe()} failed in {root}: {cause}")


def push(root: Path | str, remote: str | None = None) -> int:
    """Upload tracked data to ``remote`` (default: the repo's default). Returns files pushed."""
    return _transfer(root, "push", remote)


def pull(root: Path | str, remote: str | None = None) -> int:
    """Download and check out tracked data. Returns files fetched from the remote."""
    return _transfer(root, "pull", remote)


def status(root: Path | str, remote: str | None = None) -> dict[str, object]:
    """What differs between the local cache and the remote (``dvc status -c --json``)."""
    import json

    root = Path(root).resolve()
    rem = _remote_or_fail(root, remote)
    r = _dvc(root, "status", "--cloud", "--json", "--remote", rem.name)
    if r.returncode != 0:
        raise _transfer_error(root, "status", rem, r)
    return {"remote": rem, "changes": json.loads(r.stdout or "{}")}

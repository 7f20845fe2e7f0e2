"""DVC round trips: track -> push -> pull into an empty clone gives identical bytes."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daetalker.cli import app
from daetalker.errors import DaetalkerError, ServiceError
from daetalker.versioning import dvc_repo


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def make_repo(root: Path) -> dict[str, bytes]:
    """A git repo with a small dataset folder; returns the files' bytes by relative path."""
    root.mkdir()
    git(root, "init", "-q")
    rng = __import__("random").Random(7)
    files = {
        "data/clips/a.bin": rng.randbytes(120_000),
        "data/clips/b.bin": rng.randbytes(3_000),
        "data/manifest.json": b'{"clips": ["a", "b"]}\n',
    }
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    return files


def commit_all(root: Path) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-qm", "data")


def clone(src: Path, dst: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(src), str(dst)], check=True)
    assert not (dst / "data").exists()  # an empty clone: only the pointers came along
    return dst


def dir_md5(files: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.md5(v).hexdigest() for k, v in files.items()}


def read_tree(root: Path, rels) -> dict[str, bytes]:
    return {rel: (root / rel).read_bytes() for rel in rels}


@pytest.mark.slow
def test_local_remote_track_push_pull_api_and_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("DAETALKER_STATE", str(state))
    origin = tmp_path / "origin"
    files = make_repo(origin)
    runner = CliRunner()

    dvc_repo.init_repo(origin)
    remote = dvc_repo.configure_remote(origin)
    assert remote.name == "local" and Path(remote.url) == state / "dvc-remote"
    md5 = dvc_repo.track(origin, "data")
    assert md5.endswith(".dir") and len(md5) == 36
    assert dvc_repo.data_hash(origin) == md5
    assert "/data" in (origin / ".gitignore").read_text()  # the data itself stays out of git
    assert "data.dvc" in git(origin, "diff", "--cached", "--name-only")  # autostaged
    commit_all(origin)

    r = runner.invoke(app, ["data", "status", "--root", str(origin)])
    assert r.exit_code == 1 and "new" in r.output, r.output  # not pushed yet
    assert dvc_repo.push(origin) == 4  # 3 files + the directory listing
    r = runner.invoke(app, ["data", "status", "--root", str(origin)])
    assert r.exit_code == 0 and "in sync with DVC remote 'local'" in r.output, r.output
    # The remote holds the content, one object per file, addressed by md5.
    objects = {p.name for p in (state / "dvc-remote").rglob("*") if p.is_file()}
    assert {h[2:] for h in dir_md5(files).values()} | {md5[2:]} == objects

    copy = clone(origin, tmp_path / "copy")
    r = runner.invoke(app, ["data", "pull", "--root", str(copy)])
    assert r.exit_code == 0 and r.output.startswith("4 files fetched from DVC remote 'local'"), r.output
    assert read_tree(copy, files) == files

    # Changing one byte changes the recorded hash.
    (origin / "data/clips/b.bin").write_bytes(b"x" + files["data/clips/b.bin"][1:])
    r = runner.invoke(app, ["data", "track", "data", "--root", str(origin)])
    assert r.exit_code == 0 and r.output.strip() == dvc_repo.data_hash(origin) != md5


@pytest.mark.slow
def test_s3_remote_push_pull_into_empty_clone(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DAETALKER_S3_PREFIX", "roundtrip")
    origin = tmp_path / "origin"
    files = make_repo(origin)

    dvc_repo.init_repo(origin)
    remote = dvc_repo.configure_remote(origin)
    assert remote.name == "s3" and remote.url == f"s3://{s3_server.bucket}/roundtrip"
    assert remote.endpoint == s3_server.endpoint
    md5 = dvc_repo.track(origin, "data")
    commit_all(origin)
    assert dvc_repo.push(origin) == 4

    keys = {
        o["Key"]
        for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="roundtrip/")["Contents"]
    }
    expected = {f"roundtrip/files/md5/{h[:2]}/{h[2:]}" for h in dir_md5(files).values()}
    assert expected <= keys and f"roundtrip/files/md5/{md5[:2]}/{md5[2:]}" in keys

    # Secrets never land in a file the repo keeps (config, config.local, git history).
    for path in list((origin / ".dvc").rglob("config*")) + [origin / "data.dvc"]:
        assert s3_server.secret_key not in path.read_text()
        assert s3_server.access_key not in path.read_text()
    assert s3_server.secret_key not in git(origin, "log", "-p")

    copy = clone(origin, tmp_path / "copy")
    assert dvc_repo.default_remote(copy) == remote  # the remote travelled with git
    assert dvc_repo.pull(copy) == 4
    assert read_tree(copy, files) == files
    assert dvc_repo.status(copy)["changes"] == {}


@pytest.mark.slow
def test_wrong_secret_names_remote_and_variables(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DAETALKER_S3_PREFIX", "refused")
    origin = tmp_path / "origin"
    make_repo(origin)
    dvc_repo.init_repo(origin)
    remote = dvc_repo.configure_remote(origin)
    dvc_repo.track(origin, "data")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(ServiceError) as info:
        dvc_repo.push(origin)
    msg = str(info.value)
    assert "DVC remote 's3'" in msg and remote.url in msg and s3_server.endpoint in msg
    assert "AWS_ACCESS_KEY_ID" in msg and "AWS_SECRET_ACCESS_KEY" in msg and "refused" in msg
    assert "not-the-secret" not in msg

    # Nothing reached the bucket under that prefix.
    listing = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="refused/")
    assert listing.get("KeyCount", 0) == 0


@pytest.mark.slow
def test_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DaetalkerError, match="not inside a git repository"):
        dvc_repo.init_repo(tmp_path)
    git(tmp_path, "init", "-q")
    dvc_repo.init_repo(tmp_path)
    with pytest.raises(DaetalkerError, match=r"data.dvc: no such DVC file .*daetalker data track"):
        dvc_repo.data_hash(tmp_path)
    with pytest.raises(ServiceError, match="no default DVC remote"):
        dvc_repo.push(tmp_path)
    with pytest.raises(ServiceError, match="no DVC remote named 'elsewhere'"):
        dvc_repo.pull(tmp_path, remote="elsewhere")

    # Data that was never pushed: the pull names the remote and the fix.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    dvc_repo.track(tmp_path, tmp_path / "data")  # an absolute path works too
    remote = dvc_repo.configure_remote(tmp_path, state_dir=tmp_path / "state")
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    with pytest.raises(ServiceError, match=r"DVC remote 'local' .* lacks data .*daetalker data push") as info:
        dvc_repo.pull(tmp_path)
    assert remote.url in str(info.value)
    # A remote inside the repo is stored relative to .dvc/, so clones elsewhere find it.
    assert "url = ../state/dvc-remote" in (tmp_path / ".dvc" / "config").read_text()

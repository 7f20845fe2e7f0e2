"""``daetalker data checkout|publish``: dataset revisions by content hash, and the one a schedule picks up.

Real DVC against a local remote (the session's ``DAETALKER_STATE``), in temp git repositories.
"""

import json
import subprocess

import pytest
from typer.testing import CliRunner

from daetalker.cli import app
from daetalker.versioning import dvc_repo


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A checkout whose data/ is tracked and pushed; yields (repo, revision)."""
    repo = tmp_path_factory.mktemp("origin")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "data" / "raw" / "ana").mkdir(parents=True)
    (repo / "data" / "raw" / "ana" / "clip.txt").write_text("hello\n")
    (repo / "data" / "frames.bin").write_bytes(bytes(range(256)) * 8)
    dvc_repo.init_repo(repo)
    dvc_repo.configure_remote(repo)
    rev = dvc_repo.track(repo, "data")
    dvc_repo.push(repo)
    return repo, rev


def test_checkout_materialises_a_revision_from_the_remote_alone(pushed, tmp_path):
    repo, rev = pushed
    into = tmp_path / "elsewhere"
    r = cli("data", "checkout", rev, "--into", str(into))
    assert r.exit_code == 0, r.output
    assert (into / "data" / "raw" / "ana" / "clip.txt").read_text() == "hello\n"
    assert (into / "data" / "frames.bin").read_bytes() == (repo / "data" / "frames.bin").read_bytes()
    assert dvc_repo.data_hash(into) == rev and (into / ".git").is_dir()  # a repo later steps can version in


def test_checkout_refuses_names_that_can_move(tmp_path):
    for bad in ("latest", "main", "d1a14f79"):
        r = cli("data", "checkout", bad, "--into", str(tmp_path / "x"))
        assert r.exit_code != 0 and "data revision" in str(r.exception)
    assert not (tmp_path / "x").exists()


def test_published_revision_is_what_a_run_without_one_resolves(pushed, tmp_path):
    from daetalker.kubeflow.workspace import open_workspace_step
    from daetalker.versioning import revision

    repo, rev = pushed
    with pytest.raises(Exception, match="no published dataset revision for speaker 'ana'"):
        open_workspace_step("ana", "tiny", "", str(tmp_path / "ws"), "retrain-speaker", True)
    r = cli("data", "publish", "--speaker", "ana", "--root", str(repo))
    assert r.exit_code == 0, r.output
    assert revision.published(dvc_repo.remote_from_env(tmp_path), "ana") == rev
    ctx, versioned = open_workspace_step("ana", "tiny", "", str(tmp_path / "ws"), "retrain-speaker", True)
    assert json.loads(versioned) == {"data_hash": rev}  # resolved once, then the steps are keyed on it
    workspace = json.loads(ctx)["workspace"]
    assert workspace.endswith(f"/ana/retrain-speaker/{rev}")
    assert (tmp_path / "ws" / "ana" / "retrain-speaker" / rev / "data" / "raw" / "ana" / "clip.txt").is_file()
    # an empty revision in train-speaker opens an empty workspace instead
    ctx, _ = open_workspace_step("ana", "tiny", "", str(tmp_path / "ws"), "train-speaker", False)
    assert json.loads(ctx)["workspace"].endswith("/ana/train-speaker/scratch")


def test_published_revision_lives_beside_an_s3_remote(s3_server, monkeypatch):
    from daetalker.versioning import revision

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    remote = dvc_repo.remote_from_env(".")
    with pytest.raises(Exception, match="no published dataset revision for speaker 'bo'"):
        revision.published(remote, "bo")
    rev = "0123456789abcdef0123456789abcdef.dir"
    revision.publish(remote, "bo", rev, "tester")
    assert revision.published(remote, "bo") == rev
    listed = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket)["Contents"]]
    assert listed == ["dvc-revisions/bo.json"]  # outside the DVC remote's own prefix (dvc/)
    with pytest.raises(Exception, match="data revision 'latest'"):
        revision.publish(remote, "bo", "latest")

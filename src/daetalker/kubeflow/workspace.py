"""The first step of a cluster pipeline: a workspace on the data cache, at one dataset revision.

The workspace (``<root>/<speaker>/<pipeline>/<revision>``, a git + DVC
repository) is where every step reads and writes the speaker's data, as the
checkout is for local runs. Steps add to it (processed data, reports, a newer
``data.dvc``), so each pipeline gets its own: an evaluation of a revision never
sees what a retraining derived from it. The returned run context is a pure function of the inputs: it
names the revision and nothing run-specific (no MLflow parent run), so the
steps that take it are cached on the revision and on nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

from daetalker.kubeflow.context import RunContext

SCRATCH = "scratch"  # the workspace of a run that makes its own corpus (train-speaker)


def open_workspace_step(speaker: str, profile: str, data_rev: str, workspace_root: str, pipeline: str,
                        published_if_empty: bool, overrides: str = "", code: str = "",
                        runner: str = "kfp") -> tuple[str, str]:  # fmt: skip
    """(run context JSON, ``{"data_hash": <revision>}`` JSON).

    An empty ``data_rev`` means the speaker's published revision (resolved
    here, so the steps after this one are keyed on its hash) when
    ``published_if_empty``, else an empty workspace for a corpus the run makes.
    A local run (``daetalker pipeline run``) also passes its config ``overrides``
    (one KEY=VALUE a line), its ``code`` version (part of every later step's
    cache key) and ``runner`` ``kfp.local``. The settings saved with the
    speaker's footage (``config/speaker.py``) go under ``overrides``.
    """
    from daetalker.config import load_config
    from daetalker.config.speaker import merge_settings, read_settings
    from daetalker.registry.names import model_name
    from daetalker.versioning import dvc_repo, revision

    speaker = model_name(speaker).removeprefix("talker-")  # it becomes a path: refuse a bad name before any work
    settings = tuple(line.strip() for line in overrides.splitlines() if line.strip())
    load_config(profile, None, list(settings))  # and an unknown profile or a bad override
    if not data_rev and published_if_empty:
        data_rev = revision.published(dvc_repo.remote_from_env(workspace_root), speaker)
    root = Path(workspace_root) / speaker / pipeline / (revision.check_rev(data_rev) if data_rev else SCRATCH)
    if data_rev:
        revision.checkout(root, data_rev)
        # the speaker's own settings (`speaker add --set`) travel with the revision; this run's go over them
        settings = merge_settings(read_settings(root / "data" / "raw" / speaker), settings)
        load_config(profile, None, list(settings))
    else:
        revision.init_workspace(root)  # version-data configures the remote when it pushes
    ctx = RunContext(speaker=speaker, profile=profile, workspace=str(root), overrides=settings, code=code,
                     tags={"daetalker.data_rev": data_rev or "none", "daetalker.runner": runner})  # fmt: skip
    return ctx.to_json(), json.dumps({"data_hash": data_rev})

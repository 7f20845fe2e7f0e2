"""Registration: a finished training run's bundle becomes a version of ``talker-<speaker>``.

The run (FINISHED, or RUNNING when a pipeline registers from inside it) must have logged the bundle folder as artifact path ``bundle`` and the
evaluation metrics (or name an evaluation run that did). The version's tags
carry everything needed to answer "trained on which data and code, scored
how": git commit, DVC data hash, config hash, profile, pipeline run, evaluation
run, validation report, the bundle's manifest hash and ``metric.<name>`` for
each metric. Registering the same run again returns the version it made.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from daetalker.errors import DaetalkerError, ServiceError
from daetalker.registry.audit import Actor, current_actor
from daetalker.bundle import manifest_sha256, verify_bundle
from daetalker.registry.names import GATE_METRICS, INFO_METRICS, METRIC_TAG, RegistryError, model_name
from daetalker.registry.retry import RetryPolicy, bounded_http, call, is_transient

BUNDLE_ARTIFACT = "bundle"
# version tag -> run tags it may come from, first found wins
LINEAGE_SOURCES: dict[str, tuple[str, ...]] = {
    "git_commit": ("git_commit", "mlflow.source.git.commit"),
    "git_dirty": ("git_dirty",),
    "data_hash": ("data_hash", "dvc.data_hash"),
    "config_hash": ("config_hash",),
    "pipeline_run_id": ("pipeline_run_id", "daetalker.pipeline_run_id", "mlflow.parentRunId"),
    "eval_run_id": ("eval_run_id", "daetalker.eval_run_id"),
    "validation_report": ("validation_report", "daetalker.validation_report"),
}


class DuplicateBundle(RegistryError):
    """The bundle is byte-identical (same manifest hash) to an existing version: nothing new to register."""

    def __init__(self, name: str, version: str, digest: str, run_id: str) -> None:
        super().__init__(f"run {run_id}: its bundle is identical to {name} v{version} (bundle sha256 {digest[:16]}...); "
                         f"nothing registered (fix: promote or serve v{version}; retrain with other data or config "
                         "to get a new version)")
        self.name, self.version, self.digest = name, version, digest


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    source_run_id: str
    tags: dict[str, str]
    created: bool  # False: this run was registered before, this is that version


def _first(tags: Mapping[str, str], keys: tuple[str, ...]) -> str:
    return next((tags[k] for k in keys if tags.get(k)), "")


def version_tags(
    run: Any, speaker: str, eval_run: Any | None, overrides: Mapping[str, str], bundle_sha: str, actor: Actor,
) -> dict[str, str]:  # fmt: skip
    """The tags a new version gets from its training run (and evaluation run)."""
    tags = {k: _first(run.data.tags, src) or "none" for k, src in LINEAGE_SOURCES.items()}
    tags.update({k: v for k, v in overrides.items() if v})
    metrics = dict(run.data.metrics)
    if eval_run is not None:  # the evaluation's numbers are the ones the gate reads
        metrics.update(eval_run.data.metrics)
    tags.update({f"{METRIC_TAG}{k}": repr(float(v)) for k, v in metrics.items() if k in (*GATE_METRICS, *INFO_METRICS)})
    tags.update({
        "speaker": speaker,
        "source_run_id": run.info.run_id,
        "profile": run.data.params.get("profile") or run.data.tags.get("profile", "none"),
        "bundle_sha256": bundle_sha,
        "registered_by": actor.name,
    })  # fmt: skip
    return tags


def register_model(
    run_id: str,
    speaker: str,
    *,
    eval_run_id: str = "",
    validation_report: str = "",
    pipeline_run_id: str = "",
    actor: Actor | None = None,
    tracking_uri: str | None = None,
    policy: RetryPolicy = RetryPolicy(),
) -> RegisteredVersion:
    """Register the bundle logged by training run ``run_id`` as a new version of ``talker-<speaker>``.

    The keyword arguments fill lineage the run's tags lack (the pipeline passes
    its own ids). The bundle is verified before anything is written. Registering
    the same run again returns its version; a bundle identical to an existing
    version's raises :class:`DuplicateBundle` naming it.
    """
    from mlflow import MlflowClient

    from daetalker.services.mlflow_server import tracking_store

    name = model_name(speaker)
    speaker = name.removeprefix("talker-")
    store = tracking_store(uri=tracking_uri)
    client = MlflowClient(store.uri)
    with bounded_http(policy):
        run = call("read the training run", lambda: _get_run(client, store, run_id, "--run"), policy)
        if run.info.status in ("FAILED", "KILLED"):  # RUNNING is allowed: a pipeline registers from its own run
            raise RegistryError(f"run {run_id} is {run.info.status}; register a run that completed")
        found = call("find versions of this run",
                     lambda: _search_versions(client, f"name = '{name}' and tags.source_run_id = '{run_id}'"), policy)
        if found:
            return RegisteredVersion(name, str(found[0].version), run_id, dict(found[0].tags), created=False)
        eval_id = eval_run_id or _first(run.data.tags, LINEAGE_SOURCES["eval_run_id"])
        eval_run = call("read the evaluation run", lambda: _get_run(client, store, eval_id, "evaluation"),
                        policy) if eval_id else None  # fmt: skip
        overrides = {"eval_run_id": eval_id, "validation_report": validation_report, "pipeline_run_id": pipeline_run_id}
        mv, tags = _register_bundle(client, str(store.uri), run, name, speaker, eval_run, overrides,
                                    actor or current_actor(), policy)  # fmt: skip
        call("describe the registered model", lambda: _describe(client, name, speaker), policy)
    return RegisteredVersion(name, str(mv.version), run_id, tags, created=True)


def _get_run(client: Any, store: Any, run_id: str, what: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(f"no MLflow run {run_id!r} ({what}) at {store} (fix: copy the run id from the MLflow "
                                "UI)") from None
        raise


def _register_bundle(client: Any, uri: str, run: Any, name: str, speaker: str, eval_run: Any | None,
                     overrides: dict[str, str], actor: Actor, policy: RetryPolicy) -> tuple[Any, dict[str, str]]:
    """Download and verify the run's bundle, refuse a duplicate, then log and register it."""
    run_id = run.info.run_id
    if not call("list the run's bundle", lambda: client.list_artifacts(run_id, BUNDLE_ARTIFACT), policy):
        raise RegistryError(
            f"run {run_id} has no '{BUNDLE_ARTIFACT}' artifact (fix: log the folder written by write_bundle "
            f"with mlflow.log_artifacts(folder, '{BUNDLE_ARTIFACT}') in the training run)"
        )
    with tempfile.TemporaryDirectory(prefix="daetalker-register-") as tmp:
        local = Path(call("download the bundle", lambda: client.download_artifacts(run_id, BUNDLE_ARTIFACT, tmp), policy))
        verify_bundle(local)
        digest = manifest_sha256(local)
        same = call("find versions of this bundle",
                    lambda: _search_versions(client, f"name = '{name}' and tags.bundle_sha256 = '{digest}'"), policy)
        if same:
            raise DuplicateBundle(name, str(same[0].version), digest, run_id)
        tags = version_tags(run, speaker, eval_run, overrides, digest, actor)
        # Not retried: a half-done log/register is not idempotent; rerunning register is (it finds the version).
        try:
            return _log_and_register(uri, run, name, speaker, local, tags, actor), tags
        except DaetalkerError:
            raise
        except Exception as e:
            if is_transient(e):
                raise ServiceError(f"MLflow at {uri} failed while registering run {run_id}: {e} (fix: rerun "
                                   "register; it is idempotent)") from e
            raise


def _log_and_register(uri: str, run: Any, name: str, speaker: str, bundle: Path, tags: dict[str, str], actor: Actor) -> Any:
    """Log the pyfunc model in a ``register`` run beside the training run, then register it."""
    import mlflow

    from daetalker.registry.log_model import log_bundle
    from daetalker.tracking import lineage_tags

    mlflow.set_tracking_uri(uri)
    run_tags = {**lineage_tags(), "daetalker.step": "register", "daetalker.speaker": speaker,
                "source_run_id": run.info.run_id, "registered_by": actor.name}  # fmt: skip
    with mlflow.start_run(experiment_id=run.info.experiment_id, run_name=f"register {name}", tags=run_tags) as reg_run:
        info = log_bundle(bundle, reg_run)
        return mlflow.register_model(info.model_uri, name, tags=tags)


def _search_versions(client: Any, flt: str) -> list[Any]:
    return list(client.search_model_versions(flt))


def _describe(client: Any, name: str, speaker: str) -> None:
    client.set_registered_model_tag(name, "speaker", speaker)
    client.update_registered_model(
        name, description=f"DAE-Talker for speaker '{speaker}'. @champion is served; history: `daetalker registry history {name}`."
    )


def record_evaluation(
    speaker: str,
    version: str | int,
    eval_run_id: str,
    *,
    data_hash: str = "",
    tracking_uri: str | None = None,
    policy: RetryPolicy = RetryPolicy(),
) -> dict[str, str]:
    """Make evaluation run ``eval_run_id`` the one the gate reads for ``version`` (a re-evaluation).

    Replaces the version's ``metric.*`` tags with the run's figures and records
    the run and the data it scored (``eval_data_hash``); the previous run stays
    named in ``previous_eval_run_id``. Returns the tags written.
    """
    from mlflow import MlflowClient

    from daetalker.services.mlflow_server import ensure_tracking_uri

    name = model_name(speaker)
    client = MlflowClient(tracking_uri or ensure_tracking_uri())
    with bounded_http(policy):
        run = call("read the evaluation run", lambda: client.get_run(eval_run_id), policy)
        mv = call(f"read {name} v{version}", lambda: client.get_model_version(name, str(version)), policy)
        metrics = {k: v for k, v in run.data.metrics.items() if k in (*GATE_METRICS, *INFO_METRICS)}
        missing = [m for m in GATE_METRICS if m not in metrics]
        if missing:
            raise RegistryError(f"evaluation run {eval_run_id} has no {', '.join(missing)}; the gate needs "
                                f"{', '.join(GATE_METRICS)} (fix: evaluate with `daetalker evaluate` first)")  # fmt: skip
        previous = mv.tags.get("eval_run_id", "none")
        if previous == eval_run_id:  # recorded before (a retried step): keep the one before it
            previous = mv.tags.get("previous_eval_run_id", "none")
        tags = {f"{METRIC_TAG}{k}": repr(float(v)) for k, v in metrics.items()}
        tags |= {"eval_run_id": eval_run_id, "eval_data_hash": data_hash or "none", "previous_eval_run_id": previous}
        for k, v in tags.items():
            call(f"tag {name} v{version}", lambda k=k, v=v: client.set_model_version_tag(name, str(version), k, v), policy)
    return tags

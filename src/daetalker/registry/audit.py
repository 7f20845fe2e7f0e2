"""Who decided what: the actor, the decision record, and its MLflow audit run.

Every promotion or rollback decision becomes one run in the MLflow experiment
``daetalker-audit``. Its tags say everything ``registry history`` prints
(so history is one search), its artifacts hold the full record, the decision
table and the hash-chained local log as it was. The run's ``status`` tag goes
``intent`` (RUNNING) -> ``committed`` (FINISHED) | ``aborted`` (KILLED) |
``partial`` (FAILED); only ``committed`` and ``partial`` claim alias moves, and
only the moves listed in ``applied``, which were read back from the registry.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from daetalker.registry.audit_log import now_iso
from daetalker.registry.names import AUDIT_EXPERIMENT
from daetalker.registry.retry import RetryPolicy, call

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_RUN_STATUS = {"intent": "RUNNING", "committed": "FINISHED", "aborted": "KILLED", "partial": "FAILED"}


# ------------------------------------------------------------------ actor
@dataclass(frozen=True)
class Actor:
    name: str
    source: str  # where the name came from: env:DAETALKER_ACTOR, k8s:token, k8s:env, env:USER, uid


def _token_subject(token_file: Path) -> str | None:
    """The ``sub`` claim of the pod's service-account JWT (read, not verified: it names, the API server authenticates)."""
    try:
        payload = token_file.read_text().strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (OSError, IndexError, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return str(sub) if sub else None


def current_actor(env: Mapping[str, str] | None = None, sa_dir: Path = SERVICE_ACCOUNT_DIR) -> Actor:
    """``$DAETALKER_ACTOR``; else the Kubernetes service account of this pod; else ``$USER``, else the uid's name.

    In a pod ``$USER`` is meaningless (often root or unset), so the service
    account wins over it: the token's ``sub`` claim
    (``system:serviceaccount:<namespace>:<name>``), else the namespace file plus
    ``$KUBERNETES_SERVICE_ACCOUNT`` (set from the pod spec's serviceAccountName).
    """
    env = os.environ if env is None else env
    if env.get("DAETALKER_ACTOR"):
        return Actor(env["DAETALKER_ACTOR"], "env:DAETALKER_ACTOR")
    sub = _token_subject(sa_dir / "token")
    if sub:
        return Actor(sub, "k8s:token")
    ns_file = sa_dir / "namespace"
    if ns_file.is_file():
        ns = ns_file.read_text().strip()
        sa = env.get("KUBERNETES_SERVICE_ACCOUNT") or "unknown"
        return Actor(f"system:serviceaccount:{ns}:{sa}", "k8s:env")
    for var in ("USER", "LOGNAME"):
        if env.get(var):
            return Actor(env[var], f"env:{var}")
    try:  # containers often run without $USER
        import pwd

        return Actor(pwd.getpwuid(os.getuid()).pw_name, "uid")
    except (KeyError, ImportError):
        return Actor(f"uid-{os.getuid()}", "uid")


# ------------------------------------------------------------------ record
@dataclass(frozen=True)
class Move:
    alias: str
    from_version: str | None
    to_version: str

    def __str__(self) -> str:
        return f"{self.alias}:{self.from_version or '-'}->{self.to_version}"


@dataclass
class AuditRecord:
    """One decision: what was asked, by whom, why, the gate's table, and the planned alias moves."""

    model: str
    action: str  # promote | rollback
    version: str
    actor: str
    actor_source: str
    reason: str
    origin: str  # manual | pipeline
    passed: bool
    decision: dict[str, Any]  # DecisionTable.to_dict(), or the rollback's note
    aliases_before: dict[str, str]
    moves: list[Move]
    pipeline_run_id: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    decided_at: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AuditRecord":
        d = dict(d)
        d["moves"] = [Move(**m) for m in d["moves"]]
        return cls(**d)


@dataclass(frozen=True)
class Outcome:
    status: str  # committed | aborted | partial
    applied: list[str]  # aliases whose move was read back from the registry
    observed: dict[str, str]  # the registry's aliases when the outcome was decided
    recovered: bool = False  # decided by reconcile after an interrupted call
    at: str = field(default_factory=now_iso)


def observe(record: AuditRecord, aliases: Mapping[str, str], recovered: bool) -> Outcome:
    """The outcome the registry shows: a move counts only if its alias now points at its target."""
    applied = [m.alias for m in record.moves if aliases.get(m.alias) == m.to_version]
    if len(applied) == len(record.moves):
        status = "committed"
    else:
        status = "partial" if applied else "aborted"
    return Outcome(status, applied, dict(aliases), recovered)


# ------------------------------------------------------------------ MLflow runs
def audit_experiment_id(client: Any, policy: RetryPolicy) -> str:
    from mlflow.exceptions import MlflowException

    def get_or_create() -> str:
        exp = client.get_experiment_by_name(AUDIT_EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(AUDIT_EXPERIMENT, tags={"daetalker.kind": "audit"})
        except MlflowException as e:  # created by a concurrent caller
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(AUDIT_EXPERIMENT).experiment_id

    return call("get audit experiment", get_or_create, policy)


def _tags(record: AuditRecord) -> dict[str, str]:
    return {
        "audit_id": record.id,
        "model": record.model,
        "action": record.action,
        "version": record.version,
        "actor": record.actor,
        "actor_source": record.actor_source,
        "reason": record.reason[:5000],
        "origin": record.origin,
        "pipeline_run_id": record.pipeline_run_id,
        "decision": "pass" if record.passed else "fail",
        "summary": str(record.decision.get("summary", ""))[:5000],
        "moves": ";".join(str(m) for m in record.moves),
        "prev_champion": record.aliases_before.get("champion", ""),
        "prev_challenger": record.aliases_before.get("challenger", ""),
        "decided_at": record.decided_at,
        "status": "intent",
        "mlflow.note.content": f"{record.action} {record.model} v{record.version} by {record.actor}: {record.reason}",
    }


def find_audit_run(client: Any, experiment_id: str, audit_id: str) -> Any | None:
    runs = client.search_runs([experiment_id], f"tags.audit_id = '{audit_id}'", max_results=2)
    return runs[0] if runs else None


def open_audit_run(client: Any, record: AuditRecord, decision_text: str, policy: RetryPolicy) -> str:
    """The decision's run with status ``intent``; idempotent (a retry finds the run it made)."""
    exp = audit_experiment_id(client, policy)

    def create() -> str:
        run = find_audit_run(client, exp, record.id)
        if run is None:
            run = client.create_run(exp, tags=_tags(record), run_name=f"{record.action} {record.model} v{record.version}")
        run_id = run.info.run_id
        client.log_text(run_id, json.dumps(record.to_dict(), indent=2), "record.json")
        client.log_text(run_id, decision_text + "\n", "decision.txt")
        return run_id

    return call("record the decision (audit run)", create, policy)


def close_audit_run(
    client: Any, run_id: str, outcome: Outcome, aliases_after: Mapping[str, str], log_text: str,
    log_head: tuple[int, str], policy: RetryPolicy,
) -> None:  # fmt: skip
    """Write the outcome to the audit run and end it; idempotent."""

    def close() -> None:
        client.log_text(run_id, json.dumps(asdict(outcome), indent=2), "outcome.json")
        if log_text:
            client.log_text(run_id, log_text, "audit_log.jsonl")
        for k, v in {
            "applied": ",".join(outcome.applied),
            "new_champion": aliases_after.get("champion", ""),
            "new_challenger": aliases_after.get("challenger", ""),
            "outcome_at": outcome.at,
            "recovered": str(outcome.recovered).lower(),
            "log_seq": str(log_head[0]),
            "log_head": log_head[1],
            "status": outcome.status,  # last: a run reads as decided only once everything else is there
        }.items():
            client.set_tag(run_id, k, v)
        client.set_terminated(run_id, _RUN_STATUS[outcome.status])

    call("record the outcome (audit run)", close, policy)


def search_audit_runs(client: Any, model: str, policy: RetryPolicy, extra_filter: str = "") -> list[Any]:
    """All audit runs of ``model``, oldest first."""
    exp = call("find audit experiment", lambda: client.get_experiment_by_name(AUDIT_EXPERIMENT), policy)
    if exp is None:
        return []
    flt = f"tags.model = '{model}'" + (f" and {extra_filter}" if extra_filter else "")
    runs: list[Any] = []
    token = None
    while True:
        page = call(
            "search audit runs",
            lambda: client.search_runs([exp.experiment_id], flt, order_by=["attributes.start_time ASC"],
                                       max_results=1000, page_token=token),
            policy,
        )  # fmt: skip
        runs.extend(page)
        token = page.token
        if not token:
            return sorted(runs, key=lambda r: (r.data.tags.get("decided_at", ""), r.info.start_time))


def _artifact_json(client: Any, run_id: str, name: str, policy: RetryPolicy) -> dict[str, Any]:
    import tempfile

    def fetch() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(client.download_artifacts(run_id, name, tmp)).read_text())

    return call(f"read {name} of audit run {run_id}", fetch, policy)


def load_record(client: Any, run_id: str, policy: RetryPolicy) -> AuditRecord:
    return AuditRecord.from_dict(_artifact_json(client, run_id, "record.json", policy))


def load_outcome(client: Any, run_id: str, policy: RetryPolicy) -> Outcome:
    return Outcome(**_artifact_json(client, run_id, "outcome.json", policy))


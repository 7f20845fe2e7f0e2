"""Gated promotion and rollback, with an audit trail that survives races and outages.

Protocol for one decision (promote or rollback) on model ``talker-<speaker>``:

1. take the model's lock (``lock.py``), so decisions on one model are serial;
2. reconcile: finish the records of any decision a crash or outage interrupted;
3. read the aliases and versions, run the gate, plan the alias moves;
4. append an ``intent`` to the local hash-chained log, then open the MLflow
   audit run (status ``intent``): no alias moves before both exist;
5. move the aliases (each call retried; setting an alias is idempotent);
6. read the aliases back and derive the outcome from what the registry shows;
7. append the ``outcome`` to the local log, then close the MLflow run with it.

An outage between 4 and 7 leaves an intent without an outcome. An intent claims
nothing; the next call (step 2, under the lock, before anything else can move
an alias) reads the registry and records exactly the moves it finds applied:
``committed``, ``aborted`` (none) or ``partial``. So no alias moves without a
record, and no record claims a move that did not happen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from daetalker.errors import ServiceError
from daetalker.registry import audit
from daetalker.registry.audit import Actor, AuditRecord, Move, Outcome, current_actor, observe
from daetalker.registry.audit_log import AuditLog
from daetalker.registry.gate import DecisionTable, evaluate_gate
from daetalker.registry.lock import DEFAULT_TIMEOUT_S, model_lock
from daetalker.registry.names import CHALLENGER, CHAMPION, RegistryError, metrics_from_tags, model_name
from daetalker.registry.retry import RetryPolicy, bounded_http, call
from daetalker.registry.thresholds import Thresholds, load_thresholds

Hook = Callable[[str], None]


@dataclass(frozen=True)
class PromotionResult:
    model: str
    version: str
    action: str
    passed: bool
    status: str  # committed | partial | dry-run
    moves: list[Move]
    applied: list[str]
    aliases_before: dict[str, str]
    aliases_after: dict[str, str]
    decision_text: str
    audit_run_id: str = ""
    record_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for a pipeline step's output."""
        return asdict(self)

    def format(self) -> str:
        lines = [f"{self.action} {self.model} v{self.version}", self.decision_text]
        for m in self.moves:
            done = "applied" if m.alias in self.applied else ("planned" if self.status == "dry-run" else "NOT applied")
            lines.append(f"{m.alias}: {m.from_version or '-'} -> {m.to_version} ({done})")
        if not self.moves:
            lines.append("no alias changes")
        lines.append(f"status: {self.status}" + (f"; audit run {self.audit_run_id}" if self.audit_run_id else ""))
        return "\n".join(lines)


@dataclass
class _Session:
    client: Any
    model: str
    log: AuditLog
    lock_path: Path
    policy: RetryPolicy
    store: str  # which MLflow, for error messages
    hook: Hook = field(default=lambda point: None)


def registry_dir(state_dir: Path | str | None = None) -> Path:
    from daetalker.services.mlflow_server import default_state_dir

    return (Path(state_dir) if state_dir else default_state_dir()) / "registry"


def audit_log_path(model: str, state_dir: Path | str | None = None) -> Path:
    return registry_dir(state_dir) / f"{model}.audit.jsonl"


def _session(speaker: str, tracking_uri: str | None, state_dir: Path | str | None, policy: RetryPolicy,
             hook: Hook | None) -> _Session:  # fmt: skip
    from mlflow import MlflowClient

    from daetalker.services.mlflow_server import tracking_store

    model = model_name(speaker)
    store = tracking_store(uri=tracking_uri)
    client = MlflowClient(store.uri)
    root = registry_dir(state_dir)
    return _Session(client, model, AuditLog(audit_log_path(model, state_dir)), root / f"{model}.lock", policy,
                    str(store), hook or (lambda point: None))  # fmt: skip


# ------------------------------------------------------------------ registry reads
def _aliases(s: _Session) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    def read() -> dict[str, str]:
        try:
            return {k: str(v) for k, v in s.client.get_registered_model(s.model).aliases.items()}
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(f"no registered model {s.model} in the MLflow registry at {s.store} (fix: `daetalker register --run RUN_ID --speaker ...` first)") from None
            raise

    return call(f"read aliases of {s.model}", read, s.policy)


def aliases(speaker: str, *, tracking_uri: str | None = None, policy: RetryPolicy = RetryPolicy()) -> dict[str, str]:
    """alias -> version of talker-<speaker> now (empty when the model has none)."""
    return _aliases(_session(speaker, tracking_uri, None, policy, None))


def _version(s: _Session, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    def read() -> Any:
        try:
            return s.client.get_model_version(s.model, str(version))
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RegistryError(f"{s.model} has no version {version!r} (fix: pick one from the MLflow UI or `daetalker registry history`)") from None
            raise

    mv = call(f"read {s.model} v{version}", read, s.policy)
    if mv.status != "READY":
        raise RegistryError(f"{s.model} v{version} is {mv.status}, not READY (fix: wait for registration to finish)")
    return mv


def _decision_text(record: AuditRecord) -> str:
    if record.decision.get("rows") is not None and record.action == "promote":
        return DecisionTable.from_dict(record.decision).format()
    return f"decision: {record.decision.get('summary', '')}"


# ------------------------------------------------------------------ reconcile
def _reconcile(s: _Session) -> list[tuple[AuditRecord, Outcome]]:
    """Record the outcome of every interrupted decision from what the registry shows now."""
    entries = s.log.entries()  # IntegrityError if the local log was tampered with
    intents = {e["record"]["id"]: e["record"] for e in entries if e["kind"] == "intent"}
    outcomes = {e["id"]: e for e in entries if e["kind"] == "outcome"}
    open_runs = {
        r.data.tags["audit_id"]: r.info.run_id
        for r in audit.search_audit_runs(s.client, s.model, s.policy, "tags.status = 'intent'")
    }
    pending = [i for i in intents if i not in outcomes] + [i for i in open_runs if i not in intents or i in outcomes]
    if not pending:
        return []
    exp = audit.audit_experiment_id(s.client, s.policy)
    aliases = _aliases(s)
    done = []
    for rid in pending:
        if rid in outcomes:  # decided here; MLflow missed the outcome
            record = AuditRecord.from_dict(intents[rid])
            outcome = Outcome(**outcomes[rid]["outcome"])
            audit.close_audit_run(s.client, open_runs[rid], outcome, aliases, s.log.text(), s.log.head(), s.policy)
            done.append((record, outcome))
            continue
        if rid in intents:
            record = AuditRecord.from_dict(intents[rid])
        else:  # started on another host: mirror its intent here first
            record = audit.load_record(s.client, open_runs[rid], s.policy)
            s.log.append({"kind": "intent", "record": record.to_dict(), "copied_from": open_runs[rid]})
        run = None if rid in open_runs else call("find audit run", lambda: audit.find_audit_run(s.client, exp, rid), s.policy)
        if run is not None and run.data.tags.get("status") != "intent":
            # Decided elsewhere (another host reconciled it): copy that outcome, do not re-decide.
            outcome = audit.load_outcome(s.client, run.info.run_id, s.policy)
            s.log.append({"kind": "outcome", "id": rid, "audit_run_id": run.info.run_id, "outcome": asdict(outcome)})
            done.append((record, outcome))
            continue
        run_id = open_runs.get(rid) or audit.open_audit_run(s.client, record, _decision_text(record), s.policy)
        outcome = observe(record, aliases, recovered=True)
        s.log.append({"kind": "outcome", "id": rid, "audit_run_id": run_id, "outcome": asdict(outcome)})
        audit.close_audit_run(s.client, run_id, outcome, aliases, s.log.text(), s.log.head(), s.policy)
        done.append((record, outcome))
    return done


# ------------------------------------------------------------------ apply one decision
def _apply(s: _Session, record: AuditRecord) -> PromotionResult:
    text = _decision_text(record)
    s.log.append({"kind": "intent", "record": record.to_dict()})
    s.hook("intent_logged")
    run_id = audit.open_audit_run(s.client, record, text, s.policy)
    s.hook("intent_recorded")
    try:
        for m in record.moves:
            call(f"set {s.model}@{m.alias} -> v{m.to_version}",
                 lambda m=m: s.client.set_registered_model_alias(s.model, m.alias, m.to_version), s.policy)  # fmt: skip
            s.hook(f"moved:{m.alias}")
        after = _aliases(s)
    except (RegistryError, ServiceError):  # outage: the next call reconciles under the lock
        raise
    except Exception:
        _reconcile(s)  # an unexpected refusal: record now what did happen, then report it
        raise
    outcome = observe(record, after, recovered=False)
    s.log.append({"kind": "outcome", "id": record.id, "audit_run_id": run_id, "outcome": asdict(outcome)})
    s.hook("outcome_logged")
    audit.close_audit_run(s.client, run_id, outcome, after, s.log.text(), s.log.head(), s.policy)
    result = PromotionResult(s.model, record.version, record.action, record.passed, outcome.status, record.moves,
                             outcome.applied, record.aliases_before, after, text, run_id, record.id)  # fmt: skip
    if outcome.status != "committed":
        raise RegistryError(
            f"{s.model}: aliases read back as {after}, not as planned; something outside daetalker changed them "
            f"during the {record.action} (recorded as {outcome.status} in audit run {run_id}; rerun to decide again)"
        )
    return result


def _plan(aliases: dict[str, str], version: str, passed: bool) -> list[Move]:
    wanted = [CHALLENGER] + ([CHAMPION] if passed else [])
    return [Move(a, aliases.get(a), version) for a in wanted if aliases.get(a) != version]


def _check_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise RegistryError("a reason is required (fix: --reason 'why this change', e.g. 'weekly retrain on new clips')")
    return reason


# ------------------------------------------------------------------ public API
def promote(
    speaker: str,
    version: str | int,
    reason: str,
    *,
    thresholds: Thresholds | Path | str | None = None,
    dry_run: bool = False,
    actor: Actor | None = None,
    origin: str = "manual",
    pipeline_run_id: str = "",
    tracking_uri: str | None = None,
    state_dir: Path | str | None = None,
    policy: RetryPolicy = RetryPolicy(),
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
    on_step: Hook | None = None,
) -> PromotionResult:
    """Run the gate on ``version`` of ``talker-<speaker>``; it becomes challenger, and champion if it passes.

    ``thresholds``: rules or a YAML file (default: the packaged file, with the
    version's ``profile`` tag selecting per-profile floors). ``dry_run`` prints
    the decision without moving or recording anything. ``on_step(point)`` is
    called at each protocol step (tests use it to stop the server mid-way).
    """
    reason = _check_reason(reason)
    version = str(version)
    actor = actor or current_actor()
    s = _session(speaker, tracking_uri, state_dir, policy, on_step)
    with bounded_http(policy), model_lock(s.lock_path, f"{actor.name}: promote {s.model} v{version}", lock_timeout_s):
        if not dry_run:
            _reconcile(s)
        aliases = _aliases(s)
        cand = _version(s, version)
        champ = aliases.get(CHAMPION)
        champ_metrics = metrics_from_tags(_version(s, champ).tags) if champ else None
        rules = thresholds if isinstance(thresholds, Thresholds) else load_thresholds(thresholds, cand.tags.get("profile"))
        table = evaluate_gate(metrics_from_tags(cand.tags), champ_metrics, rules)
        record = AuditRecord(
            s.model, "promote", version, actor.name, actor.source, reason, origin, table.passed,
            {**table.to_dict(), "champion_version": champ or ""}, aliases, _plan(aliases, version, table.passed),
            pipeline_run_id,
        )  # fmt: skip
        s.hook("decided")
        if dry_run:
            return PromotionResult(s.model, version, "promote", table.passed, "dry-run", record.moves, [], aliases,
                                   aliases, table.format())  # fmt: skip
        return _apply(s, record)


def rollback(
    speaker: str,
    to_version: str | int,
    reason: str,
    *,
    force: bool = False,
    actor: Actor | None = None,
    origin: str = "manual",
    tracking_uri: str | None = None,
    state_dir: Path | str | None = None,
    policy: RetryPolicy = RetryPolicy(),
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
    on_step: Hook | None = None,
) -> PromotionResult:
    """Move champion back to ``to_version``, which must have been champion before (``force`` skips that check).

    The gate is not applied: a rollback is a human override, recorded as one.
    """
    reason = _check_reason(reason)
    to_version = str(to_version)
    actor = actor or current_actor()
    s = _session(speaker, tracking_uri, state_dir, policy, on_step)
    with bounded_http(policy), model_lock(s.lock_path, f"{actor.name}: rollback {s.model} to v{to_version}", lock_timeout_s):
        _reconcile(s)
        aliases = _aliases(s)
        _version(s, to_version)
        champ = aliases.get(CHAMPION)
        if champ == to_version:
            raise RegistryError(f"{s.model} v{to_version} is already champion; nothing to roll back")
        if not force and to_version not in past_champions(s):
            raise RegistryError(
                f"{s.model} v{to_version} has never been champion, so this is not a rollback "
                f"(fix: `daetalker promote` it through the gate, or pass --force to override)"
            )
        note = f"rollback: champion v{champ or '-'} -> v{to_version}; gate not applied (manual override)"
        record = AuditRecord(s.model, "rollback", to_version, actor.name, actor.source, reason, origin, True,
                             {"summary": note, "forced": force}, aliases, [Move(CHAMPION, champ, to_version)])  # fmt: skip
        s.hook("decided")
        return _apply(s, record)


def past_champions(s: _Session) -> set[str]:
    """Versions the audit trail shows as champion at some time."""
    out = set()
    for run in audit.search_audit_runs(s.client, s.model, s.policy):
        tags = run.data.tags
        applied = set(filter(None, tags.get("applied", "").split(",")))
        for move in filter(None, tags.get("moves", "").split(";")):
            alias, _, target = move.partition(":")
            if alias == CHAMPION and alias in applied:
                out.add(target.split("->")[-1])
    return out


def reconcile(
    speaker: str,
    *,
    tracking_uri: str | None = None,
    state_dir: Path | str | None = None,
    policy: RetryPolicy = RetryPolicy(),
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[tuple[AuditRecord, Outcome]]:
    """Record the outcome of decisions that a crash or outage interrupted (every promote/rollback does this first)."""
    s = _session(speaker, tracking_uri, state_dir, policy, None)
    with bounded_http(policy), model_lock(s.lock_path, f"reconcile {s.model}", lock_timeout_s):
        return _reconcile(s)

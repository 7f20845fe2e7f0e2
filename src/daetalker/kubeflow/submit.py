"""Submit and schedule compiled pipelines on a Kubeflow Pipelines deployment (``kfp.Client``).

Parameters are checked against the compiled pipeline before anything is sent:
unknown or missing names, values of the declared type, and dataset revisions
that can move. Authentication follows the KFP SDK: a bearer token from
``KF_PIPELINES_TOKEN`` (e.g. ``kubectl create token ...`` or an identity
proxy's), else the projected ServiceAccount token at ``KF_PIPELINES_SA_TOKEN_PATH``
(in-cluster), else none (a port-forward to a standalone KFP).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from daetalker.errors import DaetalkerError

TOKEN_ENV = "KF_PIPELINES_TOKEN"
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
ClientFactory = Callable[..., Any]


class SubmitError(DaetalkerError):
    """A submission the user can fix: a bad parameter or cron expression."""


# ---------------------------------------------------------------- parameters

_CASTS: dict[str, Callable[[str], Any]] = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "BOOLEAN": lambda v: {"true": True, "false": False}[v.lower()],
}


def pipeline_inputs(package: Path) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's parameters: name -> {parameterType, defaultValue?, isOptional?}."""
    spec = next(yaml.safe_load_all(Path(package).read_text()))
    return dict(spec["root"].get("inputDefinitions", {}).get("parameters", {}))


def parse_params(items: list[str], package: Path) -> dict[str, Any]:
    """``["speaker=ana", "dae_nodes=2"]`` -> typed arguments for the compiled pipeline at ``package``."""
    from daetalker.versioning.revision import check_rev

    inputs = pipeline_inputs(package)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SubmitError(f"--param {item!r}: expected KEY=VALUE, e.g. speaker=ana")
        if key not in inputs:
            raise SubmitError(f"--param {key}: {package.name} has no such parameter; "
                              f"it has {', '.join(sorted(inputs))}")  # fmt: skip
        kind = inputs[key]["parameterType"]
        try:
            out[key] = _CASTS[kind](value)
        except (KeyError, ValueError):
            raise SubmitError(f"--param {key}={value!r}: expected a {kind.lower().replace('_', ' ')}") from None
    required = [k for k, v in inputs.items() if "defaultValue" not in v and not v.get("isOptional")]
    missing = sorted(k for k in required if k not in out)
    if missing:
        raise SubmitError(f"{package.name} needs --param for {', '.join(missing)}")
    if out.get("data_rev"):  # empty: the speaker's published revision, resolved by the run
        out["data_rev"] = check_rev(out["data_rev"])
    return out


# ---------------------------------------------------------------- cron

_CRON_FIELDS = (  # name, low, high, names (robfig/cron with seconds, as the KFP backend parses it)
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day of week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_PART = re.compile(r"^(?P<range>\*|\?|(?P<lo>\w+)(?:-(?P<hi>\w+))?)(?:/(?P<step>\d+))?$")


def _value(token: str, low: int, names: tuple[str, ...]) -> int:
    if token.upper() in names:
        return names.index(token.upper()) + low
    if not token.isdigit():
        raise ValueError(token)
    return int(token)


def check_cron(expr: str) -> str:
    """``expr`` if it is a 6-field cron expression KFP accepts (seconds first); SubmitError otherwise."""
    fields = expr.split()
    if len(fields) == 5:
        raise SubmitError(
            f"cron {expr!r} has 5 fields; Kubeflow Pipelines reads 6, seconds first "
            f"(fix: '0 {expr}' runs at second 0 of the times you meant)"
        )
    if len(fields) != 6:
        raise SubmitError(f"cron {expr!r}: expected 6 fields (second minute hour day-of-month month day-of-week), "
                          f"got {len(fields)}")  # fmt: skip
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        for part in text.split(","):
            m = _PART.match(part)
            allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
            bad = f"cron {expr!r}: {name} field {text!r} is not valid ({allowed}"
            if m is None or (m["range"] == "?" and name not in ("day of month", "day of week")):
                raise SubmitError(bad + ")")
            try:
                lo = _value(m["lo"], low, names) if m["lo"] else low
                hi = _value(m["hi"], low, names) if m["hi"] else (high if m["step"] or not m["lo"] else lo)
            except ValueError:
                raise SubmitError(bad + ")") from None
            if not (low <= lo <= hi <= high) or (m["step"] is not None and int(m["step"]) < 1):
                raise SubmitError(bad + ")")
    return " ".join(fields)


# ---------------------------------------------------------------- the KFP API


def client(host: str, namespace: str | None = None, factory: ClientFactory | None = None) -> Any:
    """A ``kfp.Client`` for ``host`` with the credentials the environment provides."""
    kwargs: dict[str, Any] = {"host": host}
    if namespace:
        kwargs["namespace"] = namespace
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        kwargs["existing_token"] = token
    elif os.environ.get(SA_TOKEN_PATH_ENV):
        from kfp.client import ServiceAccountTokenVolumeCredentials

        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(os.environ[SA_TOKEN_PATH_ENV])
    if factory is None:
        from kfp import Client as factory
    return factory(**kwargs)


def submit(kfp_client: Any, package: Path, params: dict[str, Any], *, experiment: str, run_name: str | None = None,
           namespace: str | None = None, enable_caching: bool | None = None) -> str:  # fmt: skip
    """Start one run of the compiled pipeline; returns its run id."""
    result = kfp_client.create_run_from_pipeline_package(
        str(package), arguments=params, run_name=run_name, experiment_name=experiment, namespace=namespace,
        enable_caching=enable_caching,
    )  # fmt: skip
    return str(result.run_id)


def schedule(kfp_client: Any, package: Path, params: dict[str, Any], *, cron: str, experiment: str, job_name: str,
             namespace: str | None = None) -> str:  # fmt: skip
    """A recurring run on ``cron``: one run at a time, no backfill of missed times. Returns its id."""
    exp = kfp_client.create_experiment(name=experiment, namespace=namespace)
    job = kfp_client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=job_name, cron_expression=check_cron(cron), max_concurrency=1,
        no_catchup=True, params=params, pipeline_package_path=str(package), enabled=True,
    )  # fmt: skip
    return str(job.recurring_run_id)

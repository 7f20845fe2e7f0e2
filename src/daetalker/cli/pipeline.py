"""``daetalker pipeline run|compile|submit|schedule``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

pipeline_app = typer.Typer(help="Run the Kubeflow pipelines locally (kfp.local), or compile, submit and schedule "
                                "them on a cluster.", no_args_is_help=True)  # fmt: skip

PIPELINE_NAMES = ("train-speaker", "retrain-speaker", "evaluate-promote")
PipelineOpt = Annotated[str, typer.Option("--pipeline", help=f"One of {', '.join(PIPELINE_NAMES)}.")]
HostOpt = Annotated[str, typer.Option("--host", envvar="KF_PIPELINES_ENDPOINT", help="KFP API endpoint, e.g. "
                                      "http://localhost:8080 (a port-forward of svc/ml-pipeline-ui).")]  # fmt: skip
ParamOpt = Annotated[Optional[list[str]], typer.Option("--param", help="Pipeline parameter KEY=VALUE (repeatable).")]
NamespaceOpt = Annotated[Optional[str], typer.Option("--namespace", help="Kubeflow profile namespace (multi-user).")]
ExperimentOpt = Annotated[str, typer.Option("--experiment", help="KFP experiment.")]
PackageOpt = Annotated[Optional[Path], typer.Option("--package", help="A compiled YAML (default: compile --pipeline now).")]


def _check_name(name: str) -> str:
    if name not in PIPELINE_NAMES:
        raise typer.BadParameter(f"{name!r}; choose one of {', '.join(PIPELINE_NAMES)}", param_hint="--pipeline")
    return name


@pipeline_app.command("run")
def run(
    pipeline: Annotated[str, typer.Option("--pipeline", help="train-speaker (a synthetic corpus made in the run) "
                                          "or retrain-speaker (a speaker's published dataset revision: "
                                          "`daetalker speaker add`).")] = "train-speaker",
    out: Annotated[Path, typer.Option(help="Folder for the local pipeline root and outputs.")] = Path("demo-out"),
    profile: Annotated[str, typer.Option("--profile", "-p", help="tiny, base128 or paper256.")] = "tiny",
    speaker: Annotated[str, typer.Option(help="Speaker name (registered model talker-<speaker>).")] = "synthetic",
    minutes: Annotated[float, typer.Option(min=0.01, max=600.0, help="Minutes of synthetic speech to generate "
                                           "(train-speaker).")] = 2.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the synthetic speaker (train-speaker).")] = 0,
    data_rev: Annotated[str, typer.Option("--data-rev", help="retrain-speaker: the dataset revision (md5 in "
                                          "data.dvc; default: the speaker's published one).")] = "",
    workspace: Annotated[Optional[Path], typer.Option(help="DVC repo holding data/ (default: this git checkout).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Config override KEY=VALUE (repeatable).")] = None,
    local: Annotated[bool, typer.Option("--local/--no-local", help="Run with kfp.local (the only runner here).")] = True,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Serve a step whose inputs (data, config, code, "
                                        "upstream outputs) match an earlier run's from the cache.")] = True,
    containers: Annotated[bool, typer.Option("--containers/--no-containers", help="Run every step in the image "
                                             "`make image` built (kfp.local's DockerRunner through podman) instead of "
                                             "this interpreter.")] = False,
) -> None:
    """Run train-speaker or retrain-speaker end to end on this machine, logging every step to MLflow.

    One line per step (status, seconds, its log file under OUT/logs); steps whose inputs did
    not change since an earlier run are reused (--no-cache runs everything). With --containers the
    steps run in the image, so it must hold the code you run: `make image` after changing src/.
    """
    from rich.console import Console

    from pipelines.local import run_local

    result = run_local(out, speaker=speaker, profile=profile, overrides=set_ or [],
                       workspace=workspace, synth_minutes=minutes, synth_seed=seed, enable_caching=cache,
                       containers=containers, pipeline=_check_name(pipeline), data_rev=data_rev)  # fmt: skip
    c = Console()
    done = ", ".join(f"{n} {status}" for status, n in result.steps.items())
    where = " in containers" if containers else ""
    c.print(f"[bold green]pipeline finished[/]{where} in {result.seconds:.0f} s ({done})")
    c.print(f"MLflow: {result.tracking_uri}  (parent run {result.run_id})")
    for k, v in result.outputs.items():
        c.print(f"  {k}: {v}")


@pipeline_app.command("compile")
def compile_(
    pipeline: PipelineOpt = "train-speaker",
    out: Annotated[Optional[Path], typer.Option(help="Output YAML (default: pipelines/<pipeline>.yaml).")] = None,
    cluster: Annotated[bool, typer.Option("--cluster/--local", help="With the kfp-kubernetes settings (resources, "
                                          "GPUs, Secrets, /dev/shm, data cache), or as kfp.local runs it.")] = True,
) -> None:
    """Write the Kubeflow Pipelines YAML of a pipeline (the same bytes every time)."""
    from pipelines.local import compile_pipeline

    name = _check_name(pipeline)
    typer.echo(compile_pipeline(out or Path("pipelines") / f"{name}.yaml", name, cluster))


def _package(name: str, package: Optional[Path], tmp: str) -> Path:
    """The given compiled YAML, else ``name`` compiled for the cluster into ``tmp``."""
    from pipelines.local import compile_pipeline

    return package if package else compile_pipeline(Path(tmp) / f"{name}.yaml", name, cluster=True)


@pipeline_app.command("submit")
def submit_cmd(
    host: HostOpt,
    pipeline: PipelineOpt = "retrain-speaker",
    param: ParamOpt = None,
    package: PackageOpt = None,
    experiment: ExperimentOpt = "daetalker",
    run_name: Annotated[Optional[str], typer.Option("--run-name", help="Name shown in the KFP UI.")] = None,
    namespace: NamespaceOpt = None,
    cache: Annotated[Optional[bool], typer.Option("--cache/--no-cache", help="Override the compiled caching settings "
                                                  "(--no-cache after wiping the data-cache volume).")] = None,
) -> None:
    """Start one run on Kubeflow Pipelines (token: KF_PIPELINES_TOKEN)."""
    from daetalker.kubeflow import submit

    name = _check_name(pipeline)
    with tempfile.TemporaryDirectory(prefix="daetalker-kfp-") as tmp:
        path = _package(name, package, tmp)
        params = submit.parse_params(param or [], path)
        run_id = submit.submit(submit.client(host, namespace), path, params, experiment=experiment,
                               run_name=run_name, namespace=namespace, enable_caching=cache)  # fmt: skip
    typer.echo(f"run {run_id}: {host.rstrip('/')}/#/runs/details/{run_id}")


@pipeline_app.command("schedule")
def schedule_cmd(
    speaker: Annotated[str, typer.Option("--speaker", "-s", help="Speaker to retrain (talker-<speaker>).")],
    cron: Annotated[str, typer.Option("--cron", help="6 fields, seconds first: '0 0 3 * * SUN' = Sundays 03:00 UTC.")],
    host: HostOpt,
    pipeline: PipelineOpt = "retrain-speaker",
    param: ParamOpt = None,
    package: PackageOpt = None,
    experiment: ExperimentOpt = "daetalker",
    name: Annotated[Optional[str], typer.Option("--name", help="Recurring run name (default: <pipeline>-<speaker>).")]
    = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Retrain SPEAKER on a schedule: one run at a time, no catch-up, on its published data revision."""
    from daetalker.kubeflow import submit

    pipe = _check_name(pipeline)
    cron = submit.check_cron(cron)
    if any(p.startswith("data_rev=") and p != "data_rev=" for p in param or []):
        raise submit.SubmitError("a schedule with a fixed data_rev would retrain on the same data every time (fix: "
                                 "drop it; each run takes the revision that "
                                 f"`daetalker data publish --speaker {speaker}` last set)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="daetalker-kfp-") as tmp:
        path = _package(pipe, package, tmp)
        params = submit.parse_params([f"speaker={speaker}", *(param or [])], path)
        job_id = submit.schedule(submit.client(host, namespace), path, params, cron=cron, experiment=experiment,
                                 job_name=name or f"{pipe}-{speaker}", namespace=namespace)  # fmt: skip
    typer.echo(f"recurring run {job_id} ({cron}): {host.rstrip('/')}/#/recurringrun/details/{job_id}")

app = typer.Typer()
app.add_typer(pipeline_app, name="pipeline")

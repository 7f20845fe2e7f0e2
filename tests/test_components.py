"""Each Kubeflow component on its own: its ``python_func`` called with temporary artifacts.

The habit of the Vertex pipeline samples: a component is a plain function once
its decorator is peeled off (``comp.python_func``), so it is tested with
``dsl.Output`` / ``dsl.Input`` artifacts whose ``uri`` is a temp folder, without
compiling or running the pipeline. The artifacts are made as the KFP executor
makes them (the parent folder exists, the artifact's own path does not), and an
input artifact is a new object on the producer's ``uri`` and metadata, as a
downstream task receives it.

One module-scoped chain runs the train-speaker steps once (micro models, a
9-second synthetic corpus, a real git + DVC workspace with the session's local
remote, the session MLflow server); each test then asserts on what its
component returned and wrote. The evaluate-promote steps (``open_workspace``,
``fetch_model``, ``promote_version``) follow on the registered version. The
``*_job`` components run against the fake training operator of
tests/test_infra.py (``FakeJobsApi``), the only thing a test box lacks.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl
from kfp.dsl.executor import makedirs_recursively

from components import data as data_c
from components import evaluation as eval_c
from components import registry as registry_c
from components import training as training_c
from daetalker.kubeflow.context import RunContext
from test_calibration import SMALL as SMALL_SYNCNET
from test_dae_train import MICRO as MICRO_DAE
from test_s2l_train import TINY_S2L

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SPEAKER = "comps"  # a registered model of its own: talker-comps, version 1
# The micro models of the trainer tests, cut to a few steps (later overrides win).
OVERRIDES = (
    *MICRO_DAE, "dae.max_steps=4", "dae.ckpt_every=2", "dae.lr_decay_steps=4", "dae.warmup_steps=1",
    "dae.sample_steps=2",
    *TINY_S2L, "s2l.max_steps=4", "s2l.ckpt_every=2", "s2l.val_every=4",
    *SMALL_SYNCNET, "syncnet.max_steps=4", "syncnet.batch_size=8", "syncnet.log_every=2",
    # short clips of short sentences: the one test clip evaluate renders and scores is ~3 s
    "synth.clip_seconds=1.5", "synth.words_per_sentence=[2,4]", "synth.x264_preset=ultrafast",
    "preprocess.min_usable_minutes=0.1",
)  # fmt: skip
MINUTES = 0.15  # 4 clips: train, train, val, test
REJECT_ALL = "floors:\n  lse_c: {min: 1000.0}\n"  # no model passes: it stays challenger
ACCEPT_ALL = "floors:\n  lse_d: {max: 1000000.0}\n"  # every finite model passes: champion


def loads(text: str) -> dict[str, Any]:
    out = json.loads(text)
    assert isinstance(out, dict)
    return out


class Artifacts:
    """Artifact folders laid out as a pipeline root: ``<root>/<task>/<name>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def output(self, cls: type, task: str, name: str) -> Any:
        """An output artifact as the executor hands it over: its parent folder made, nothing inside."""
        art = cls(name=name, uri=str(self.root / task / name))
        makedirs_recursively(art.path)
        return art

    @staticmethod
    def input(art: Any) -> Any:
        """The artifact as the next task receives it: same uri and metadata, a fresh object."""
        return type(art)(name=art.name, uri=art.uri, metadata=dict(art.metadata))


# ---------------------------------------------------------------- the chain (module scope: runs once)


@pytest.fixture(scope="module")
def arts(tmp_path_factory) -> Artifacts:
    return Artifacts(tmp_path_factory.mktemp("pipeline-root"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """An empty git repository; version_data makes it a DVC repo with the session's local remote."""
    ws = tmp_path_factory.mktemp("ws")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    return ws


@pytest.fixture(scope="module")
def parent_run(mlflow_server: str):
    """The pipeline's MLflow parent run, as ``pipelines.local.run_local`` opens it."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    name = f"daetalker-{SPEAKER}"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, tags={"daetalker.step": "pipeline", "daetalker.speaker": SPEAKER},
                            run_name="pipeline-components")  # fmt: skip
    yield run
    client.set_terminated(run.info.run_id)


@pytest.fixture(scope="module")
def ctx(workspace: Path, parent_run) -> str:
    return RunContext(speaker=SPEAKER, profile="tiny", workspace=str(workspace), overrides=OVERRIDES,
                      parent_run_id=parent_run.info.run_id, tags={"daetalker.runner": "kfp.local"}).to_json()


@pytest.fixture(scope="module")
def synthesised(ctx: str) -> str:
    return data_c.synth_corpus.python_func(ctx=ctx, minutes=MINUTES, seed=3)


@pytest.fixture(scope="module")
def preprocessed(ctx: str, synthesised: str) -> str:
    return data_c.preprocess.python_func(ctx=ctx, upstream=synthesised)


@pytest.fixture(scope="module")
def validated(ctx: str, preprocessed: str) -> str:
    return data_c.validate.python_func(ctx=ctx, upstream=preprocessed)


@pytest.fixture(scope="module")
def versioned(ctx: str, validated: str) -> str:
    return data_c.version_data.python_func(ctx=ctx, upstream=validated)


@pytest.fixture(scope="module")
def first_stage(ctx: str, versioned: str, arts: Artifacts) -> tuple[str, Any]:
    """The chain's DAE diffuses pixels (MICRO_DAE): the task returns at once, with no checkpoint."""
    model = arts.output(dsl.Model, "train-autoencoder", "model")
    return training_c.train_autoencoder.python_func(ctx=ctx, versioned=versioned, model=model), model


@pytest.fixture(scope="module")
def dae(ctx: str, versioned: str, first_stage, arts: Artifacts) -> tuple[str, Any]:
    model = arts.output(dsl.Model, "train-dae", "model")
    return training_c.train_dae.python_func(ctx=ctx, versioned=versioned, first_stage=first_stage[0],
                                            autoencoder=arts.input(first_stage[1]), model=model), model


@pytest.fixture(scope="module")
def latents(ctx: str, dae, arts: Artifacts) -> tuple[str, Any]:
    trained, model = dae
    out = arts.output(dsl.Dataset, "extract-latents", "latents")
    return training_c.extract_latents.python_func(ctx=ctx, trained=trained, dae=arts.input(model), latents=out), out


@pytest.fixture(scope="module")
def s2l(ctx: str, latents, arts: Artifacts) -> tuple[str, Any]:
    extracted, lat = latents
    model = arts.output(dsl.Model, "train-s2l", "model")
    return training_c.train_s2l.python_func(ctx=ctx, extracted=extracted, latents=arts.input(lat), model=model), model


@pytest.fixture(scope="module")
def packaged(ctx: str, dae, latents, s2l, arts: Artifacts) -> tuple[str, Any]:
    (trained_dae, dae_model), (extracted, lat), (trained_s2l, s2l_model) = dae, latents, s2l
    bundle = arts.output(dsl.Model, "package-model", "bundle")
    out = registry_c.package_model.python_func(ctx=ctx, trained_dae=trained_dae, extracted=extracted,
                                               trained_s2l=trained_s2l, dae=arts.input(dae_model),
                                               latents=arts.input(lat), s2l=arts.input(s2l_model), bundle=bundle)
    return out, bundle


@pytest.fixture(scope="module")
def syncnet(ctx: str, versioned: str, arts: Artifacts) -> tuple[str, Any]:
    expert = arts.output(dsl.Model, "train-syncnet", "expert")
    return eval_c.train_syncnet.python_func(ctx=ctx, versioned=versioned, expert=expert), expert


@pytest.fixture(scope="module")
def evaluated(ctx: str, packaged, syncnet, arts: Artifacts) -> tuple[str, Any]:
    (pkg, bundle), (expert_out, expert) = packaged, syncnet
    report = arts.output(dsl.HTML, "evaluate", "report")
    out = eval_c.evaluate.python_func(ctx=ctx, packaged=pkg, syncnet=expert_out, bundle=arts.input(bundle),
                                      expert=arts.input(expert), report=report)  # fmt: skip
    return out, report


@pytest.fixture(scope="module")
def registered(ctx: str, packaged, evaluated) -> str:
    return registry_c.register_and_gate.python_func(ctx=ctx, packaged=packaged[0], evaluated=evaluated[0],
                                                    thresholds=REJECT_ALL, reason="components test")  # fmt: skip


@pytest.fixture(scope="module")
def opened(versioned: str, workspace: Path, tmp_path_factory) -> tuple[str, str]:
    """evaluate-promote's first task: the speaker's published revision, checked out of the DVC remote alone."""
    from daetalker.versioning import dvc_repo, revision

    revision.publish(dvc_repo.select_remote(workspace), SPEAKER, loads(versioned)["data_hash"], "test")
    root = tmp_path_factory.mktemp("workspaces")
    out = data_c.open_workspace.python_func(speaker=SPEAKER, profile="tiny", data_rev="", workspace_root=str(root),
                                            pipeline="evaluate-promote", published_if_empty=True)  # fmt: skip
    return out.ctx, out.versioned


@pytest.fixture(scope="module")
def fetched(opened, registered: str, arts: Artifacts) -> tuple[str, Any]:
    bundle = arts.output(dsl.Model, "fetch-model", "bundle")
    version = loads(registered)["version"]
    return registry_c.fetch_model.python_func(ctx=opened[0], version=version, bundle=bundle), bundle


def log_evaluation(client: Any, parent_run, evaluated: str, metrics: dict[str, float]) -> str:
    """evaluate's output JSON naming a new evaluation run that logged ``metrics`` (the rest as ``evaluated``)."""
    run = client.create_run(parent_run.info.experiment_id, run_name="evaluate",
                            tags={"daetalker.step": "re-evaluate", "daetalker.speaker": SPEAKER})  # fmt: skip
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return json.dumps({**loads(evaluated), **metrics, "eval_run_id": run.info.run_id})


@pytest.fixture(scope="module")
def reevaluated(evaluated, mlflow_server: str, parent_run) -> str:
    """An evaluation the gate can read: the micro DAE's frames hold no face the labeller finds, so the real
    evaluation has no pose_mae, and a re-evaluation without every gate metric is refused (tested below).
    This one carries the real evaluation's figures plus a pose_mae where it lacked one."""
    from mlflow import MlflowClient

    from daetalker.registry.names import GATE_METRICS

    client = MlflowClient(mlflow_server)
    real = client.get_run(loads(evaluated[0])["eval_run_id"]).data.metrics
    metrics = {k: real.get(k, 5.0) for k in GATE_METRICS}
    return log_evaluation(client, parent_run, evaluated[0], metrics)


@pytest.fixture(scope="module")
def promoted(opened, registered: str, reevaluated: str) -> str:
    return registry_c.promote_version.python_func(ctx=opened[0], version=loads(registered)["version"],
                                                  evaluated=reevaluated, thresholds=ACCEPT_ALL,
                                                  reason="components test")  # fmt: skip


# ---------------------------------------------------------------- data components


def test_synth_corpus_writes_the_clips_into_the_workspace(synthesised: str, workspace: Path) -> None:
    out = loads(synthesised)
    raw = workspace / "data" / "raw" / SPEAKER
    assert out["raw_dir"] == str(raw) and Path(out["corpus"]) == raw / "corpus.json"
    corpus = json.loads((raw / "corpus.json").read_text())
    assert out["clips"] >= 2 and out["clips"] == len(corpus["clips"])
    assert (corpus["seed"], corpus["minutes"]) == (3, MINUTES)
    assert all((raw / c[key]).is_file() for c in corpus["clips"] for key in ("video", "audio", "labels"))
    assert MINUTES * 60 <= out["seconds"] <= MINUTES * 60 + 10


def test_preprocess_writes_the_dataset(preprocessed: str, workspace: Path) -> None:
    out = loads(preprocessed)
    data = workspace / "data" / "processed" / SPEAKER
    assert out["data_dir"] == str(data) and (data / "manifest.parquet").is_file()
    assert out["clips"] >= 2 and out["quarantined"] == 0 and out["frames"] > 0 and out["split_strategy"]
    assert len(list((data / "clips").iterdir())) == out["clips"]


def test_validate_passes_and_writes_its_reports(validated: str) -> None:
    out = loads(validated)
    assert Path(out["validation"]).is_file() and Path(out["report"]).is_file()
    assert out["report"].endswith(".html") and out["usable_minutes"] >= 0.1


def test_validate_fails_the_task_on_a_dataset_below_the_floor(ctx: str, validated: str, tmp_path: Path) -> None:
    import shutil

    # on a copy of the dataset (validate writes its reports beside it), outside the pipeline's MLflow run
    run = RunContext.from_json(ctx)
    shutil.copytree(run.processed_dir(), tmp_path / "data" / "processed" / SPEAKER)
    strict = replace(run, workspace=str(tmp_path), overrides=(*run.overrides, "preprocess.min_usable_minutes=60"),
                     parent_run_id="", experiment="components-refused")  # fmt: skip
    with pytest.raises(Exception, match="(?i)usable"):
        data_c.validate.python_func(ctx=strict.to_json(), upstream=validated)


def test_version_data_tracks_and_pushes_data(versioned: str, workspace: Path, _hermetic_env: Path) -> None:
    from daetalker.versioning import dvc_repo, revision

    out = loads(versioned)
    assert revision.check_rev(out["data_hash"]) == dvc_repo.data_hash(workspace)
    assert (workspace / "data.dvc").is_file()
    assert Path(out["remote"]).is_relative_to(_hermetic_env)  # the session's local remote, not ./.state
    assert dvc_repo.default_remote(workspace).url == out["remote"]
    pushed = Path(out["remote"]) / "files" / "md5" / out["data_hash"][:2] / out["data_hash"][2:]
    assert pushed.is_file()  # the folder listing is on the remote: any workspace can check it out


def test_open_workspace_checks_the_published_revision_out_of_the_remote(opened, versioned: str,
                                                                      workspace: Path) -> None:  # fmt: skip
    ctx_json, versioned_out = opened
    rev = loads(versioned)["data_hash"]
    assert loads(versioned_out) == {"data_hash": rev}
    opened_ctx = RunContext.from_json(ctx_json)
    assert (opened_ctx.speaker, opened_ctx.profile) == (SPEAKER, "tiny")
    assert opened_ctx.workspace.endswith(f"/{SPEAKER}/evaluate-promote/{rev}")
    assert opened_ctx.tags["daetalker.data_rev"] == rev and not opened_ctx.parent_run_id  # cached on the revision
    manifest = opened_ctx.processed_dir() / "manifest.parquet"
    assert manifest.read_bytes() == (workspace / "data" / "processed" / SPEAKER / "manifest.parquet").read_bytes()


# ---------------------------------------------------------------- training components


def test_train_autoencoder_skips_for_a_pixel_space_dae(first_stage) -> None:
    out_json, model = first_stage
    out = loads(out_json)
    assert out["checkpoint"] == "" and "'pixel'" in out["skipped"]
    assert loads((Path(model.path) / "skipped.json").read_text()) == out  # the artifact exists either way


# A latent-space DAE on the chain's data: the first stage (micro: 32 px -> 16x16x4, a few steps), then the
# DAE task that takes it from its artifact.
LATENT = ("dae.space=latent", "dae.image_size=32", "dae.dropout=0.0", "autoencoder.image_size=32",
          "autoencoder.channels=[8,16]", "autoencoder.batch_size=8", "autoencoder.max_steps=4",
          "autoencoder.ckpt_every=2", "autoencoder.log_every=2", "autoencoder.sample_every=0",
          "autoencoder.sample_count=2", "autoencoder.eval_frames=4", "autoencoder.bf16=false")  # fmt: skip


def test_train_autoencoder_trains_the_first_stage_that_train_dae_takes(ctx: str, versioned: str, arts: Artifacts,
                                                                      mlflow_server: str, parent_run) -> None:
    from mlflow import MlflowClient

    from daetalker import checkpoint as ckpt_io
    from daetalker.models.loading import load_first_stage

    latent_ctx = replace(RunContext.from_json(ctx), overrides=(*OVERRIDES, *LATENT)).to_json()
    model = arts.output(dsl.Model, "train-autoencoder-latent", "model")
    trained = training_c.train_autoencoder.python_func(ctx=latent_ctx, versioned=versioned, model=model)
    out = loads(trained)
    assert Path(out["checkpoint"]) == Path(model.path) / "checkpoints" / "latest.pt" and out["final_step"] == 4
    assert load_first_stage(out["checkpoint"])[2] == out["sha256"]
    assert model.metadata["data_hash"] == loads(versioned)["data_hash"]
    assert {"psnr", "ssim", "mouth_pearson", "m_lmd", "face_found_rate"} <= set(out["held_out"])
    assert out["held_out"]["split"] == "held_out" and out["held_out"]["psnr"] > 0
    runs = MlflowClient(mlflow_server).search_runs(
        [parent_run.info.experiment_id], f"tags.`daetalker.step` = 'train-autoencoder' and "
                                         f"tags.`mlflow.parentRunId` = '{parent_run.info.run_id}'")  # fmt: skip
    assert len(runs) == 1 and runs[0].data.tags["first_stage_sha256"] == out["sha256"]
    assert {"heldout_psnr", "heldout_ssim", "loss", "images_per_s"} <= set(runs[0].data.metrics)

    dae_model = arts.output(dsl.Model, "train-dae-latent", "model")
    dae_out = loads(training_c.train_dae.python_func(ctx=latent_ctx, versioned=versioned, first_stage=trained,
                                                     autoencoder=arts.input(model), model=dae_model))  # fmt: skip
    assert ckpt_io.load_checkpoint(dae_out["checkpoint"])["first_stage"]["sha256"] == out["sha256"]
    # a checkpoint outside the declared input artifact would not reach the task's pod on a cluster
    elsewhere = dsl.Model(name="model", uri=str(arts.root / "not-the-autoencoder"))
    with pytest.raises(ValueError, match="declare its artifact as an input"):
        training_c.train_dae.python_func(ctx=latent_ctx, versioned=versioned, first_stage=trained,
                                         autoencoder=elsewhere, model=arts.output(dsl.Model, "refused-dae", "model"))


def test_train_dae_checkpoints_into_its_model_artifact(dae, versioned: str) -> None:
    from daetalker import checkpoint as ckpt_io

    trained, model = dae
    out = loads(trained)
    assert Path(out["checkpoint"]) == Path(model.path) / "checkpoints" / "latest.pt"
    assert out["final_step"] == 4 and (Path(model.path) / "metrics.jsonl").is_file()
    assert ckpt_io.verify(out["checkpoint"])["sha256"] == out["sha256"]
    assert model.metadata["data_hash"] == loads(versioned)["data_hash"]  # lineage on the artifact itself
    assert set(out["metrics"]) and all(isinstance(v, float) for v in out["metrics"].values())


def test_extract_latents_writes_its_dataset_artifact(latents, dae, ctx: str, arts: Artifacts) -> None:
    extracted, lat = latents
    out = loads(extracted)
    assert Path(out["latents_dir"]) == Path(lat.path)
    assert (Path(lat.path) / "latents.json").is_file() and (Path(lat.path) / "latent_stats.npz").is_file()
    clips = json.loads((Path(lat.path) / "latents.json").read_text())["clips"]
    assert clips and all((Path(lat.path) / "latents" / f"{c['clip_id']}.npy").is_file() for c in clips)
    # a checkpoint outside the declared input artifact would not reach the task's pod on a cluster
    elsewhere = dsl.Model(name="model", uri=str(arts.root / "not-the-dae"))
    with pytest.raises(ValueError, match="declare its artifact as an input"):
        training_c.extract_latents.python_func(ctx=ctx, trained=dae[0], dae=elsewhere,
                                               latents=arts.output(dsl.Dataset, "refused", "latents"))
    assert not (arts.root / "refused" / "latents").exists()


def test_train_s2l_checkpoints_into_its_model_artifact(s2l) -> None:
    from daetalker import checkpoint as ckpt_io

    trained, model = s2l
    out = loads(trained)
    assert Path(out["checkpoint"]) == Path(model.path) / "checkpoints" / "latest.pt"
    assert out["final_step"] == 4 and ckpt_io.verify(out["checkpoint"])
    assert all(isinstance(v, float) for v in out["metrics"].values())


# The *_job components create a PyTorchJob and wait for it: here against tests/test_infra.py's fake
# training operator (which writes a checkpoint instead of training), with the pod's namespace given.
# The job's run folder goes into the context's workspace (the data cache), so they get one of their own.


@pytest.fixture
def job_cluster(monkeypatch, tmp_path: Path, ctx: str):
    from daetalker.kubeflow import pytorchjob
    from test_infra import FakeJobsApi

    api = FakeJobsApi()
    monkeypatch.setattr(pytorchjob, "custom_objects_api", lambda: api)
    monkeypatch.setattr(pytorchjob, "current_namespace", lambda *a, **k: "kubeflow")
    return api, replace(RunContext.from_json(ctx), workspace=str(tmp_path / "ws")).to_json()


def _job_args(api) -> list[str]:
    (job,) = api.created
    return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]


def test_train_dae_job_collects_the_job_run_into_its_model_artifact(job_cluster, versioned: str,
                                                                    arts: Artifacts) -> None:  # fmt: skip
    import pipelines

    api, job_ctx = job_cluster
    model = arts.output(dsl.Model, "train-dae-job", "model")
    pixel = json.dumps({"checkpoint": ""})  # train_autoencoder's output when it skipped (pixel-space DAE)
    first = arts.output(dsl.Model, "train-autoencoder-skipped", "model")
    out = loads(training_c.train_dae_job.python_func(ctx=job_ctx, versioned=versioned, first_stage=pixel,
                                                     autoencoder=arts.input(first), nodes=2, gpus_per_node=1,
                                                     cluster=pipelines.cluster_settings().to_json(), model=model))
    assert Path(out["checkpoint"]) == Path(model.path) / "checkpoints" / "latest.pt" and out["step"] == 7
    assert out["data_hash"] == model.metadata["data_hash"] == loads(versioned)["data_hash"]
    args = _job_args(api)
    assert args[:1] == ["train-dae"] and args[args.index("--data") + 1] == str(RunContext.from_json(
        job_ctx).processed_dir()) and "--resume" in args and "--autoencoder" not in args
    assert "dae.max_steps=4" in args  # the run's overrides reach the training pods


def test_train_dae_job_hands_the_first_stage_to_its_pods(job_cluster, versioned: str, arts: Artifacts) -> None:
    """A latent-space DAE as a PyTorchJob: the autoencoder is staged on the data cache and passed on."""
    import torch

    import pipelines
    from daetalker import checkpoint as ckpt_io

    api, job_ctx = job_cluster
    first = arts.output(dsl.Model, "train-autoencoder-trained", "model")
    ckpt = ckpt_io.save_checkpoint({"w": torch.ones(2)}, Path(first.path) / "checkpoints", 4)
    trained = json.dumps({"checkpoint": str(ckpt)})
    training_c.train_dae_job.python_func(ctx=job_ctx, versioned=versioned, first_stage=trained,
                                         autoencoder=arts.input(first), nodes=1, gpus_per_node=1,
                                         cluster=pipelines.cluster_settings().to_json(),
                                         model=arts.output(dsl.Model, "train-dae-job-latent", "model"))  # fmt: skip
    args = _job_args(api)
    staged = Path(args[args.index("--autoencoder") + 1])
    assert staged.is_relative_to(RunContext.from_json(job_ctx).workspace) and not staged.is_relative_to(first.path)
    assert ckpt_io.verify(staged)["sha256"] == ckpt_io.verify(ckpt)["sha256"]
    outside = json.dumps({"checkpoint": str(ckpt)})
    with pytest.raises(ValueError, match="not inside input artifact"):  # only declared inputs reach a pod
        training_c.train_dae_job.python_func(ctx=job_ctx, versioned=versioned, first_stage=outside,
                                             autoencoder=arts.input(arts.output(dsl.Model, "other", "model")),
                                             nodes=1, gpus_per_node=1, cluster=pipelines.cluster_settings().to_json(),
                                             model=arts.output(dsl.Model, "train-dae-job-x", "model"))  # fmt: skip


def test_train_s2l_job_stages_the_latents_where_its_pods_read_them(job_cluster, latents, arts: Artifacts) -> None:
    import pipelines

    api, job_ctx = job_cluster
    extracted, lat = latents
    model = arts.output(dsl.Model, "train-s2l-job", "model")
    out = loads(training_c.train_s2l_job.python_func(ctx=job_ctx, extracted=extracted, latents=arts.input(lat),
                                                     nodes=1, gpus_per_node=0,
                                                     cluster=pipelines.cluster_settings().to_json(), model=model))
    assert Path(out["checkpoint"]) == Path(model.path) / "checkpoints" / "latest.pt" and out["job"]
    staged = Path(_job_args(api)[_job_args(api).index("--latents") + 1])
    assert staged.is_relative_to(RunContext.from_json(job_ctx).workspace) and (staged / "latents.json").is_file()


# ---------------------------------------------------------------- release and evaluation components


def test_package_model_writes_a_verified_bundle_and_a_sample_video(packaged) -> None:
    from daetalker.bundle.format import REQUIRED, verify_bundle

    out_json, bundle = packaged
    out = loads(out_json)
    assert Path(out["bundle"]) == Path(bundle.path) / "bundle"
    manifest = verify_bundle(out["bundle"])
    assert set(REQUIRED) <= set(manifest.files) and manifest.meta["speaker"] == SPEAKER
    assert Path(out["sample_video"]) == Path(bundle.path) / "sample.mp4" and Path(out["sample_video"]).stat().st_size
    assert out["sample_frames"] > 0 and out["bundle_run_id"]


def test_train_syncnet_writes_the_expert_into_its_artifact(syncnet, versioned: str) -> None:
    from daetalker.hashing import sha256_file

    out_json, expert = syncnet
    out = loads(out_json)
    assert Path(out["checkpoint"]).is_relative_to(expert.path) and Path(out["report"]).is_relative_to(expert.path)
    assert out["steps"] == 4 and sha256_file(out["checkpoint"]) == out["sha256"]
    assert expert.metadata["data_hash"] == loads(versioned)["data_hash"]


def test_evaluate_writes_metrics_and_report_into_its_html_artifact(evaluated) -> None:
    from daetalker.registry.names import GATE_METRICS as GATE_KEYS

    out_json, report = evaluated
    out = loads(out_json)
    assert Path(out["report"]) == Path(report.path) / "report" / "report.html"
    assert "<html" in Path(out["report"]).read_text().lower()
    assert Path(out["metrics"]).is_relative_to(report.path)
    metrics = json.loads(Path(out["metrics"]).read_text())
    for key in GATE_KEYS:
        assert out[key] == metrics[key], key
    assert out["eval_run_id"]


def test_evaluate_refuses_a_bundle_outside_its_input_artifact(ctx: str, packaged, syncnet, arts: Artifacts) -> None:
    other = dsl.Model(name="bundle", uri=str(arts.root / "another-task" / "bundle"))
    with pytest.raises(ValueError, match="declare its artifact as an input"):
        eval_c.evaluate.python_func(ctx=ctx, packaged=packaged[0], syncnet=syncnet[0], bundle=other,
                                    expert=arts.input(syncnet[1]), report=arts.output(dsl.HTML, "refused", "report"))


def test_register_and_gate_registers_a_version_and_gates_it(registered: str, packaged, evaluated,
                                                           mlflow_server: str, parent_run) -> None:  # fmt: skip
    from mlflow import MlflowClient

    from daetalker.bundle.format import manifest_sha256

    out = loads(registered)
    assert (out["model"], out["version"]) == (f"talker-{SPEAKER}", "1")
    assert out["passed"] is False and out["aliases"] == {"challenger": "1"}  # REJECT_ALL: challenger only
    pkg, ev = loads(packaged[0]), loads(evaluated[0])
    assert (out["sample_video"], out["report"], out["metrics"]) == (pkg["sample_video"], ev["report"], ev["metrics"])
    client = MlflowClient(mlflow_server)
    tags = client.get_model_version(out["model"], out["version"]).tags
    assert tags["source_run_id"] == pkg["bundle_run_id"] and tags["eval_run_id"] == ev["eval_run_id"]
    assert tags["bundle_sha256"] == manifest_sha256(pkg["bundle"])
    assert tags["pipeline_run_id"] == parent_run.info.run_id and tags["profile"] == "tiny"
    runs = client.search_runs([parent_run.info.experiment_id], "tags.`daetalker.step` = 'register-promote'")
    assert len(runs) == 1 and runs[0].data.tags["gate_passed"] == "false"
    assert runs[0].data.tags["mlflow.parentRunId"] == parent_run.info.run_id


def test_fetch_model_downloads_a_verified_bundle(fetched, packaged) -> None:
    from daetalker.bundle.format import manifest_sha256, verify_bundle

    out_json, bundle = fetched
    out = loads(out_json)
    assert (out["model"], out["version"]) == (f"talker-{SPEAKER}", "1")
    assert Path(out["bundle"]).is_relative_to(bundle.path)
    verify_bundle(out["bundle"])
    assert manifest_sha256(out["bundle"]) == manifest_sha256(loads(packaged[0])["bundle"])  # what was registered


def test_promote_version_records_the_evaluation_and_promotes(promoted: str, reevaluated: str, evaluated, opened,
                                                            mlflow_server: str, parent_run) -> None:  # fmt: skip
    from mlflow import MlflowClient

    from daetalker.registry.names import RegistryError

    out = loads(promoted)
    assert (out["model"], out["version"]) == (f"talker-{SPEAKER}", "1")
    assert out["passed"] is True and out["aliases"] == {"challenger": "1", "champion": "1"}  # ACCEPT_ALL
    ev = loads(evaluated[0])
    assert (out["report"], out["metrics"]) == (ev["report"], ev["metrics"])
    client = MlflowClient(mlflow_server)
    tags = client.get_model_version(out["model"], out["version"]).tags
    assert tags["eval_run_id"] == loads(reevaluated)["eval_run_id"]
    assert tags["eval_data_hash"] == loads(opened[1])["data_hash"]  # the revision open_workspace checked out
    assert float(tags["metric.lse_d"]) == pytest.approx(loads(reevaluated)["lse_d"])
    # an evaluation the gate cannot read is refused before the registry changes
    partial = log_evaluation(client, parent_run, evaluated[0], {"lse_c": 1.0, "lse_d": 8.0, "fid": 100.0})
    with pytest.raises(RegistryError, match="has no pose_mae"):
        registry_c.promote_version.python_func(ctx=opened[0], version=out["version"], evaluated=partial,
                                               thresholds=ACCEPT_ALL, reason="components test")  # fmt: skip
    after = client.get_model_version(out["model"], out["version"]).tags
    assert after["eval_run_id"] == tags["eval_run_id"]
    assert client.get_registered_model(out["model"]).aliases == {"challenger": "1", "champion": "1"}


def test_every_step_logged_its_stage_run_under_the_pipeline_run(promoted: str, mlflow_server: str,
                                                               parent_run) -> None:  # fmt: skip
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([parent_run.info.experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parent_run.info.run_id}'")
    steps = {r.data.tags.get("daetalker.step"): r for r in runs}
    for step in ("synth", "preprocess", "validate", "version-data", "train-dae", "extract-latents", "train-s2l",
                 "package", "train-syncnet", "evaluate", "register-promote"):
        assert steps[step].info.status == "FINISHED", step
        assert steps[step].data.tags["daetalker.runner"] == "kfp.local", step
    assert steps["train-dae"].data.tags["data_hash"] == client.get_run(
        steps["version-data"].info.run_id).data.tags["dvc.data_hash"]

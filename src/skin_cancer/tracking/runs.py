"""MLflow run logging: the only module that logs a pipeline's runs (a sweep's parent run is
`tracking.groups`', the model's flavours and version `tracking.registry`'s).

One pipeline execution -> one MLflow run that holds the whole picture of the resulting model. The
training stages open it and log each epoch as it ends; the track stage completes it from the DVC
outputs, or starts a new one from them when DVC restored the training stages from its cache, so a
run is complete either way. What it is made of comes in as `RunFiles`: the stages know where.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skin_cancer.config import flatten
from skin_cancer.host import describe as describe_host
from skin_cancer.io import read_json
from skin_cancer.operating_point import OperatingPoint
from skin_cancer.schema import Config
from skin_cancer.tracking.access import explained_refusals
from skin_cancer.tracking.groups import GROUP_TAG, adopt_parent, group_parent, parent_run, run_group
from skin_cancer.tracking.run_description import epoch_metrics, host_tags, run_name, run_params, run_tags
from skin_cancer.tracking.store import check_tracking, ensure_experiment, store_lock, tracking_uri


def log_datasets(files: RunFiles, evaluated: list[str]) -> None:
    """The train, validation and test manifests and every scored set as MLflow dataset inputs, each
    with its content digest, so a run says which images made it (call inside a run)."""
    import mlflow

    from skin_cancer.data.prepare import read_manifest

    frames = {
        context: read_manifest(files.prepared / f"{split}.csv")[["source", "label", "sha256"]]
        for context, split in (("training", "train"), ("validation", "val"), ("test", "test"))
    }
    for name in evaluated:
        predictions = files.evaluation / name / "predictions.csv"
        if name not in ("test", "clean_test") and predictions.is_file():
            frames[name] = pd.read_csv(predictions)[["path", "actual"]]
    for context, frame in frames.items():
        log_input(mlflow.data.from_pandas(frame, name=context), context)


def log_input(dataset, context: str, attempts: int = 3) -> None:
    """`mlflow.log_input` that survives another run inserting the same new dataset at the same moment.

    A tracking server on PostgreSQL checks for the dataset, then inserts it: two sweep jobs logging
    the same manifest at once both insert, and the unique key refuses the second (BAD_REQUEST). The
    refused request wrote nothing; sent again, it finds the dataset and links it to this run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return mlflow.log_input(dataset, context=context)
        except MlflowException as error:
            if error.error_code != "BAD_REQUEST" or "unique" not in str(error).lower() or attempt == attempts - 1:
                raise


@dataclass(frozen=True)
class RunFiles:
    """The pipeline's outputs a run is made of, by role; the stages say where they are."""

    # Each training phase, in order: the history CSV its stage writes, the record of the run it logged into.
    phases: dict[str, tuple[Path, Path]]
    prepared: Path  # the manifests: train.csv, val.csv, test.csv
    prepare_report: Path
    audit: Path  # the audit's report and tables
    audit_report: Path
    metrics: Path
    operating_point: Path
    evaluation: Path  # a folder per scored set
    figures: Path
    reports: tuple[Path, ...]  # logged at the run's top level
    pipeline: tuple[Path, ...]  # logged under pipeline/


def describe_run(client, experiment_id: str, cfg: Config, prepare_report: dict, run_id: str | None = None) -> str:
    """Create (or, given `run_id`, update) the pipeline's run: its name, tags and sweep group parent."""
    tags = run_tags(cfg, prepare_report)
    group = run_group(cfg.tracking)
    if group:
        tags[GROUP_TAG] = group
        tags["mlflow.parentRunId"] = parent_run(client, experiment_id, group)
    if run_id is None:
        return client.create_run(experiment_id, run_name=run_name(cfg), tags=tags).info.run_id
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in {**tags, "mlflow.runName": run_name(cfg)}.items()])
    return run_id


def open_run(client, record: Path, next_metrics: str) -> str | None:
    """The run that `record` (a training stage's output) names, if this pipeline may go on logging
    into it: still RUNNING, no params yet (no track stage has written it) and no metric starting with
    `next_metrics` (what comes next has not logged there). None when DVC restored the stage that wrote
    `record` from its cache after a track stage finished that run, or when the run is in another store."""
    from mlflow.exceptions import MlflowException

    if not record.is_file():
        return None
    try:
        run = client.get_run(read_json(record)["run_id"])
    except MlflowException:
        return None
    if run.info.status != "RUNNING" or run.data.params or any(k.startswith(next_metrics) for k in run.data.metrics):
        return None
    return run.info.run_id


def pipeline_run_id(client, experiment_id: str, cfg: Config, files: RunFiles, before: list[str], next_metrics: str) -> str:
    """The run that the training phases `before` logged into, described anew, when it can go on
    (see `open_run`); else a new run holding their epochs, read from their history files."""
    prepare_report = read_json(files.prepare_report)
    run_id = open_run(client, files.phases[before[-1]][1], next_metrics) if before else None
    if run_id is not None:
        return describe_run(client, experiment_id, cfg, prepare_report, run_id)
    run_id = describe_run(client, experiment_id, cfg, prepare_report)
    if before:
        history = pd.concat([pd.read_csv(files.phases[phase][0]) for phase in before], ignore_index=True)
        client.log_batch(run_id, metrics=epoch_metrics(history))
    return run_id


@contextlib.contextmanager
def training_run(cfg: Config, files: RunFiles, phase: str, first_epoch: int = 0, *, chief: bool = True):
    """The pipeline's MLflow run while `phase` ("head" or "finetune") trains.

    Yields (Keras callbacks, record): the callbacks log each epoch's metrics as `<phase>.<metric>`
    (step = epoch counted across phases) when the epoch ends, so the curves are in the MLflow UI
    while training runs; the record ({"run_id"}) is what the stage writes as `files.phases[phase]`'s record.
    The earlier phase's run goes on when it can, the track stage adopts the run, and it stays RUNNING
    until then; training that fails or is stopped marks it FAILED. A non-chief worker of distributed
    training (`chief=False`) logs nothing."""
    if not chief:
        yield [], None
        return
    import time

    import keras
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = check_tracking(cfg.tracking)
    with store_lock(uri), explained_refusals(uri, f"opening the {phase} run"):
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, cfg.tracking.experiment_name, uri)
        before = list(files.phases)[: list(files.phases).index(phase)]
        run_id = pipeline_run_id(client, experiment_id, cfg, files, before, f"{phase}.")
        client.log_batch(run_id, tags=host_tags(describe_host(), phase))

    def log_epoch(epoch: int, logs: dict | None) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(f"{phase}.{k}", float(v), now, first_epoch + epoch + 1) for k, v in (logs or {}).items()]
        with store_lock(uri):
            client.log_batch(run_id, metrics=metrics)

    try:
        yield [keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)], {"run_id": run_id}
    except BaseException:
        with store_lock(uri):
            client.set_terminated(run_id, status="FAILED")
        raise


@contextlib.contextmanager
def pipeline_run(cfg: Config, files: RunFiles):
    """The pipeline's MLflow run, active, with params, test metrics, datasets, reports and figures of
    the current DVC outputs: the run the training stages logged their epochs into when DVC ran them
    in this pipeline, else a new one with the epochs from the history files (DVC restored them).
    Yields {run_id, experiment_id, tracking_uri, group, numbers}; the run ends on leaving. Writers of
    a local SQLite store are serialised throughout."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg.tracking)
    prepare_report = read_json(files.prepare_report)
    metrics = read_json(files.metrics)
    audit_report = read_json(files.audit_report)
    operating_point = OperatingPoint.load(files.operating_point)
    with store_lock(uri):
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, cfg.tracking.experiment_name, uri)
        run_id = pipeline_run_id(client, experiment_id, cfg, files, list(files.phases), "test.")
        with mlflow.start_run(run_id=run_id):
            log_datasets(files, list(metrics))
            client.log_batch(run_id, params=run_params(cfg), tags=host_tags(operating_point.host, "calibrate"))
            # One namespace per evaluated set: validation.*, test.*, clean_test.*, <external set>.*
            numbers = {
                **flatten(metrics),
                **flatten(audit_report["summary"], "audit."),
                "operating_point.threshold": operating_point.threshold,
                "operating_point.temperature": operating_point.temperature,
            }
            mlflow.log_metrics({k: v for k, v in numbers.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            mlflow.log_metrics(
                {f"data.{split}.{label}": n for split, c in prepare_report["counts"].items() for label, n in c.items()}
            )
            for folder, name in ((files.evaluation, "evaluation"), (files.figures, "figures"), (files.audit, "audit")):
                mlflow.log_artifacts(str(folder), artifact_path=name)
            for path in files.reports:
                mlflow.log_artifact(str(path))
            for path in files.pipeline:
                mlflow.log_artifact(str(path), artifact_path="pipeline")
            group = run_group(cfg.tracking)
            if group:
                adopt_parent(client, experiment_id, run_id, group)
            yield {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": uri, "group": group, "numbers": numbers}


def log_failed_job(cfg: Config, name: str, overrides: list[str], log: Path, started: float) -> str:
    """The sweep job's run marked FAILED, with its overrides, group and log: the run its experiment's
    training opened, if it got that far, else a new one."""
    client, experiment_id, parent = group_parent(cfg.tracking)
    tags = {GROUP_TAG: cfg.tracking.run_group, "mlflow.parentRunId": parent, "dvc.exp_name": name, "recipe": cfg.recipe}
    tags["sweep.overrides"] = " ".join(overrides)
    opened = client.search_runs([experiment_id], filter_string=f"tags.`dvc.exp_name` = '{name}'")
    if opened:
        run = opened[0]
        for key, value in {**tags, "mlflow.runName": f"{name} (failed)"}.items():
            client.set_tag(run.info.run_id, key, value)
    else:
        run = client.create_run(experiment_id, start_time=int(started * 1000), run_name=f"{name} (failed)", tags=tags)
    if not run.data.params:
        client.log_batch(run.info.run_id, params=run_params(cfg))
    client.log_artifact(run.info.run_id, str(log))
    client.set_terminated(run.info.run_id, status="FAILED")
    return run.info.run_id

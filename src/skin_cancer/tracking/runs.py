"""MLflow run logging: the only module that logs runs.

One pipeline execution -> one MLflow run that holds the whole picture of the resulting model. The
training stages open it and log each epoch as it ends; the track stage completes it from the DVC
outputs, or starts a new one from them when DVC restored the training stages from its cache, so a
run is complete either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pandas as pd

from skin_cancer import paths
from skin_cancer.config import Config, TrackingConfig, flatten, to_dict
from skin_cancer.host import describe as describe_host
from skin_cancer.io import read_json
from skin_cancer.operating_point import OperatingPoint
from skin_cancer.tracking.access import explained_refusals
from skin_cancer.tracking.store import check_tracking, ensure_experiment, store_lock, tracking_uri

GROUP_TAG = "sweep.group"


def run_group(cfg: TrackingConfig) -> str | None:
    """The sweep group of this run: config, else the DVC experiments' baseline commit."""
    if cfg.run_group:
        return cfg.run_group
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    return f"dvc-exp@{baseline[:7]}" if baseline else None


def parent_run(client, experiment_id: str, group: str) -> str:
    """Id of the group's parent run, created on first use.

    Safe with concurrent writers on a tracking server, where no file lock reaches, and for users who
    may not delete runs (EDIT): the oldest parent (start time, then id) is the group's. A writer that
    finds younger ones deletes them where it may, else takes them out of the group (the group and
    parent tags removed, `sweep.duplicate_of` set: what EDIT allows). The oldest is never removed,
    so every writer converges on it; a run that chose a parent before an older one appeared is
    re-pointed when it ends (`adopt_parent`)."""
    from mlflow.exceptions import MlflowException

    query = f"tags.`{GROUP_TAG}` = '{group}' and tags.`sweep.parent` = 'true'"
    if not client.search_runs([experiment_id], filter_string=query):
        run = client.create_run(experiment_id, run_name=f"sweep {group}", tags={GROUP_TAG: group, "sweep.parent": "true"})
        with contextlib.suppress(MlflowException):  # already removed as a duplicate by another writer
            client.set_terminated(run.info.run_id)
    found = sorted(client.search_runs([experiment_id], filter_string=query), key=lambda r: (r.info.start_time, r.info.run_id))
    for duplicate in found[1:]:
        # Another writer may have removed it already; a user without MANAGE may not delete it.
        with contextlib.suppress(MlflowException):
            client.set_tag(duplicate.info.run_id, "sweep.duplicate_of", found[0].info.run_id)
            client.set_tag(duplicate.info.run_id, "mlflow.runName", f"sweep {group} (duplicate parent, empty)")
            for tag in (GROUP_TAG, "sweep.parent"):
                client.delete_tag(duplicate.info.run_id, tag)
            client.delete_run(duplicate.info.run_id)
    return found[0].info.run_id


def adopt_parent(client, experiment_id: str, run_id: str, group: str) -> str:
    """Point the run at its group's surviving parent (see `parent_run`), once its own logging is done
    and every concurrent writer's parent exists; returns the parent's id."""
    parent = parent_run(client, experiment_id, group)
    if client.get_run(run_id).data.tags.get("mlflow.parentRunId") != parent:
        client.set_tag(run_id, "mlflow.parentRunId", parent)
    return parent


def git_commit() -> str:
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_tags(cfg: Config, prepare_report: dict) -> dict[str, str]:
    tags = {
        "recipe": cfg.recipe,
        "git.commit": git_commit(),
        "data.fingerprint": prepare_report["fingerprint"],
        "data.root": prepare_report["root"],
        "model.backbone": cfg.model.backbone,
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def host_tags(host: dict[str, str], stage: str):
    """The machine a stage ran on as run tags `host.<stage>.<key>` (skin_cancer.host)."""
    from mlflow.entities import RunTag

    return [RunTag(f"host.{stage}.{key}", value) for key, value in host.items()]


def epoch_metrics(history: pd.DataFrame):
    """MLflow Metric entities, one per phase, metric and epoch (step = epoch across both phases)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    out = []
    for row in history.to_dict("records"):
        for key, value in row.items():
            if key not in ("epoch", "phase") and pd.notna(value):
                out.append(Metric(f"{row['phase']}.{key}", float(value), now, int(row["epoch"])))
    return out


def log_datasets(evaluated: list[str]) -> None:
    """The train, validation and test manifests and every scored set as MLflow dataset inputs, each
    with its content digest, so a run says which images made it (call inside a run)."""
    import mlflow

    from skin_cancer.data.prepare import read_manifest

    frames = {
        context: read_manifest(paths.PREPARED / f"{split}.csv")[["source", "label", "sha256"]]
        for context, split in (("training", "train"), ("validation", "val"), ("test", "test"))
    }
    for name in evaluated:
        predictions = paths.EVALUATION / name / "predictions.csv"
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


def run_params(cfg: Config):
    """Every parameter as a dotted key (`model.dropout`), None written as "null" as in params.yaml.
    A label map is one parameter, its JSON: a collection's labels ("melanoma (in situ)") are not
    valid MLflow keys."""
    from mlflow.entities import Param

    def leaves(mapping: dict, prefix: str = ""):
        for key, value in mapping.items():
            if isinstance(value, dict) and key != "label_map":
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    def text(value) -> str:
        return "null" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)

    return [Param(key, text(value)) for key, value in leaves(to_dict(cfg))]


def run_name(cfg: Config) -> str:
    """The recipe and the parameters that differ from the composition of conf/ with that recipe
    alone, e.g. "default: model.dropout=0.2, train.head.lr=0.0001"."""
    from skin_cancer.config import compose, validate

    try:
        experiment = [] if cfg.recipe == "default" else [f"experiment={cfg.recipe}"]
        base = flatten(to_dict(validate(compose(experiment))))
    except Exception:  # no conf/ here, or a recipe that is no experiment file: Hydra's errors vary
        return cfg.recipe
    # tracking.* says where a run goes, not what it is
    changed = [f"{k}={v}" for k, v in flatten(to_dict(cfg)).items() if base.get(k, v) != v and not k.startswith("tracking.")]
    return f"{cfg.recipe}: {', '.join(changed)}" if changed else cfg.recipe


# Each training phase: the history file its stage writes and the record of the run it logged into.
PHASES = {"head": (paths.TRAIN_HISTORY, paths.TRAIN_RUN), "finetune": (paths.FINETUNE_HISTORY, paths.FINETUNE_RUN)}


def describe_run(client, experiment_id: str, cfg: Config, run_id: str | None = None) -> str:
    """Create (or, given `run_id`, update) the pipeline's run: its name, tags and sweep group parent."""
    tags = run_tags(cfg, read_json(paths.PREPARE_REPORT))
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


def pipeline_run_id(client, experiment_id: str, cfg: Config, before: list[str], next_metrics: str) -> str:
    """The run that the training phases `before` logged into, described anew, when it can go on
    (see `open_run`); else a new run holding their epochs, read from their history files."""
    run_id = open_run(client, PHASES[before[-1]][1], next_metrics) if before else None
    if run_id is not None:
        return describe_run(client, experiment_id, cfg, run_id)
    run_id = describe_run(client, experiment_id, cfg)
    if before:
        history = pd.concat([pd.read_csv(PHASES[phase][0]) for phase in before], ignore_index=True)
        client.log_batch(run_id, metrics=epoch_metrics(history))
    return run_id


@contextlib.contextmanager
def training_run(cfg: Config, phase: str, first_epoch: int = 0, *, chief: bool = True):
    """The pipeline's MLflow run while `phase` ("head" or "finetune") trains.

    Yields (Keras callbacks, record): the callbacks log each epoch's metrics as `<phase>.<metric>`
    (step = epoch counted across phases) when the epoch ends, so the curves are in the MLflow UI
    while training runs; the record ({"run_id"}) is what the stage writes as PHASES[phase]'s record.
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
        before = list(PHASES)[: list(PHASES).index(phase)]
        run_id = pipeline_run_id(client, experiment_id, cfg, before, f"{phase}.")
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
def pipeline_run(cfg: Config):
    """The pipeline's MLflow run, active, with params, test metrics, datasets, reports and figures of
    the current DVC outputs: the run the training stages logged their epochs into when DVC ran them
    in this pipeline, else a new one with the epochs from the history files (DVC restored them).
    Yields {run_id, experiment_id, tracking_uri, group, numbers}; the run ends on leaving. Writers of
    a local SQLite store are serialised throughout."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg.tracking)
    prepare_report = read_json(paths.PREPARE_REPORT)
    metrics = read_json(paths.METRICS)
    audit_report = read_json(paths.AUDIT_REPORT)
    operating_point = OperatingPoint.load(paths.OPERATING_POINT)
    with store_lock(uri):
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, cfg.tracking.experiment_name, uri)
        run_id = pipeline_run_id(client, experiment_id, cfg, list(PHASES), "test.")
        with mlflow.start_run(run_id=run_id):
            log_datasets(list(metrics))
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
            mlflow.log_artifacts(str(paths.EVALUATION), artifact_path="evaluation")
            mlflow.log_artifacts(str(paths.FIGURES), artifact_path="figures")
            mlflow.log_artifacts(str(paths.AUDIT), artifact_path="audit")
            for path in (paths.MODEL_REPORT, paths.MODEL_REPORT.with_suffix(".html")):
                mlflow.log_artifact(str(path))
            for path in (
                paths.METRICS,
                paths.TRAIN_HISTORY,
                paths.FINETUNE_HISTORY,
                paths.PREPARE_REPORT,
                paths.OPERATING_POINT,
                Path("params.yaml"),
            ):
                mlflow.log_artifact(str(path), artifact_path="pipeline")
            group = run_group(cfg.tracking)
            if group:
                adopt_parent(client, experiment_id, run_id, group)
            yield {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": uri, "group": group, "numbers": numbers}


def _group_parent(cfg: TrackingConfig):
    """(client, experiment id, parent run id) of the configured sweep group."""
    from mlflow.tracking import MlflowClient

    uri = check_tracking(cfg)
    with store_lock(uri), explained_refusals(uri, "opening the sweep's parent run"):
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, cfg.experiment_name, uri)
        return client, experiment_id, parent_run(client, experiment_id, cfg.run_group)


def log_failed_job(cfg: Config, name: str, overrides: list[str], log: Path, started: float) -> str:
    """The sweep job's run marked FAILED, with its overrides, group and log: the run its experiment's
    training opened, if it got that far, else a new one."""
    client, experiment_id, parent = _group_parent(cfg.tracking)
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


def experiment_metric(cfg: TrackingConfig, exp_name: str, metric: str) -> float:
    """A metric of the run that the `track` stage logged inside DVC experiment `exp_name`."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    query = f"tags.`dvc.exp_name` = '{exp_name}'"
    runs = client.search_runs([experiment.experiment_id], filter_string=query) if experiment else []
    if not runs or metric not in runs[0].data.metrics:
        raise LookupError(f"no MLflow run with {metric} for DVC experiment {exp_name} in {uri}")
    return runs[0].data.metrics[metric]


def record_best_trial(cfg: TrackingConfig, overrides: str, value: float, results: Path) -> None:
    """The best trial of a search (its overrides and validation value) as tags and an artifact of
    the sweep's parent run."""
    client, _, parent = _group_parent(cfg)
    client.set_tag(parent, "sweep.best_overrides", overrides)
    client.set_tag(parent, "sweep.best_value", str(value))
    client.log_artifact(parent, str(results))

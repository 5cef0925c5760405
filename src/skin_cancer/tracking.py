"""MLflow run logging: the only module that logs runs.

One pipeline execution -> one MLflow run that holds the whole picture of the resulting model,
assembled from the DVC outputs, so a run is complete even when DVC restored stages from cache.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from skin_cancer import paths
from skin_cancer.config import Config, TrackingConfig, flatten, to_dict
from skin_cancer.io import read_json
from skin_cancer.operating_point import OperatingPoint
from skin_cancer.registry import register_model
from skin_cancer.serving import serving_model, serving_signature
from skin_cancer.store import check_reachable, ensure_experiment, store_lock, tracking_uri

GROUP_TAG = "sweep.group"


def run_group(cfg: TrackingConfig) -> str | None:
    """The sweep group of this run: config, else the DVC experiments' baseline commit."""
    if cfg.run_group:
        return cfg.run_group
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    return f"dvc-exp@{baseline[:7]}" if baseline else None


def parent_run(client, experiment_id: str, group: str) -> str:
    """Id of the group's parent run, created on first use.

    Safe with concurrent writers on a tracking server, where no file lock reaches: every writer
    that finds several parents keeps the oldest (start time, then id) and deletes its own
    duplicate, so all of them converge on one parent."""
    query = f"tags.`{GROUP_TAG}` = '{group}' and tags.`sweep.parent` = 'true'"
    if not client.search_runs([experiment_id], filter_string=query):
        run = client.create_run(experiment_id, run_name=f"sweep {group}", tags={GROUP_TAG: group, "sweep.parent": "true"})
        with contextlib.suppress(Exception):  # already deleted as a duplicate by another writer
            client.set_terminated(run.info.run_id)
    found = sorted(client.search_runs([experiment_id], filter_string=query), key=lambda r: (r.info.start_time, r.info.run_id))
    for duplicate in found[1:]:
        with contextlib.suppress(Exception):  # another writer may have deleted it already
            client.delete_run(duplicate.info.run_id)
    return found[0].info.run_id


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


def pip_requirements() -> list[str]:
    """Every direct requirement of the project, pinned to the installed version: what the served
    model's own code (logged with it) imports, so it loads in an environment built from these alone."""
    from importlib.metadata import requires

    pins = []
    for requirement in requires("skin-cancer") or []:
        name = requirement.split(";")[0].split("[")[0]
        for separator in ("=", ">", "<", "~", "!", " "):
            name = name.split(separator)[0]
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{name}=={version(name)}")
    return pins


def model_signature(image_size: int, units: int = 1):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, image_size, image_size, 3), "image")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, units), "probability")]),
    )


def serving_example() -> pd.DataFrame:
    """One test image, base64-encoded as the REST endpoint takes it."""
    import base64

    from skin_cancer.data import read_manifest

    first = read_manifest(paths.PREPARED / "test.csv").path.iloc[0]
    return pd.DataFrame({"image": [base64.b64encode(Path(first).read_bytes()).decode()]})


def log_datasets(evaluated: list[str]) -> None:
    """The train, validation and test manifests and every scored set as MLflow dataset inputs, each
    with its content digest, so a run says which images made it (call inside a run)."""
    import mlflow

    from skin_cancer.data import read_manifest

    frames = {
        context: read_manifest(paths.PREPARED / f"{split}.csv")[["source", "label", "sha256"]]
        for context, split in (("training", "train"), ("validation", "val"), ("test", "test"))
    }
    for name in evaluated:
        predictions = paths.EVALUATION / name / "predictions.csv"
        if name not in ("test", "clean_test") and predictions.is_file():
            frames[name] = pd.read_csv(predictions)[["path", "actual"]]
    for context, frame in frames.items():
        mlflow.log_input(mlflow.data.from_pandas(frame, name=context), context=context)


def run_params(cfg: Config):
    """Every parameter as a dotted key (`model.dropout`), None written as "null" as in params.yaml."""
    from mlflow.entities import Param

    return [Param(k, "null" if v is None else str(v)) for k, v in flatten(to_dict(cfg)).items()]


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


def log_pipeline_run(cfg: Config) -> dict:
    """Log params, per-epoch metrics of both phases, test metrics, reports, figures and the model
    of the current DVC outputs as one MLflow run; returns {run_id, experiment_id, tracking_uri}."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg.tracking)
    prepare_report = read_json(paths.PREPARE_REPORT)
    history = pd.concat([pd.read_csv(p) for p in (paths.TRAIN_HISTORY, paths.FINETUNE_HISTORY)], ignore_index=True)
    metrics = read_json(paths.METRICS)
    audit_report = read_json(paths.AUDIT_REPORT)
    operating_point = OperatingPoint.load(paths.OPERATING_POINT)
    with store_lock(uri):
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, cfg.tracking.experiment_name, uri)
        tags = run_tags(cfg, prepare_report)
        group = run_group(cfg.tracking)
        if group:
            tags[GROUP_TAG] = group
            tags["mlflow.parentRunId"] = parent_run(client, experiment_id, group)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name(cfg), tags=tags) as run:
            log_datasets(list(metrics))
            client.log_batch(run.info.run_id, metrics=epoch_metrics(history), params=run_params(cfg))
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
            if cfg.tracking.log_model:
                from skin_cancer.model import load_model

                model = load_model(paths.MODEL)
                mlflow.keras.log_model(
                    model,
                    name="model",
                    signature=model_signature(cfg.data.image_size, model.output_shape[-1]),
                    pip_requirements=pip_requirements(),
                    metadata={"operating_point": operating_point.to_dict()},
                )
                # The same model behind a pyfunc that takes base64 image files: what the registry
                # holds and `mlflow models serve` serves.
                # It carries the package's code (code_paths), so it loads where the project is not installed.
                mlflow.pyfunc.log_model(
                    name="serving",
                    python_model=serving_model(),
                    artifacts={"model": str(paths.MODEL), "operating_point": str(paths.OPERATING_POINT)},
                    code_paths=[str(Path(__file__).resolve().parent)],
                    signature=serving_signature(),
                    pip_requirements=pip_requirements(),
                    input_example=serving_example(),
                    metadata={"operating_point": operating_point.to_dict()},
                )
        logged = {"run_id": run.info.run_id, "experiment_id": experiment_id, "tracking_uri": uri, "group": group}
        if cfg.tracking.log_model and cfg.tracking.registered_model:
            comparable = {
                "task.classes": ",".join(operating_point.class_names),
                "validation.fingerprint": str(operating_point.validation_fingerprint),
            }
            logged["registry"] = register_model(client, run.info.run_id, cfg.tracking, numbers, comparable)
        return logged


def _group_parent(cfg: TrackingConfig):
    """(client, experiment id, parent run id) of the configured sweep group."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    check_reachable(uri)
    with store_lock(uri):
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, cfg.experiment_name, uri)
        return client, experiment_id, parent_run(client, experiment_id, cfg.run_group)


def log_failed_job(cfg: Config, name: str, overrides: list[str], log: Path, started: float) -> str:
    """A run marked FAILED for a sweep job whose experiment failed: its overrides, group and log."""
    client, experiment_id, parent = _group_parent(cfg.tracking)
    tags = {GROUP_TAG: cfg.tracking.run_group, "mlflow.parentRunId": parent, "dvc.exp_name": name, "recipe": cfg.recipe}
    tags["sweep.overrides"] = " ".join(overrides)
    run = client.create_run(experiment_id, start_time=int(started * 1000), run_name=f"{name} (failed)", tags=tags)
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

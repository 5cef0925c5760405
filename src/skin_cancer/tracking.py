"""MLflow tracking: the only module that imports mlflow.

One pipeline execution -> one MLflow run that holds the whole picture of the resulting model,
assembled from the DVC outputs, so a run is complete even when DVC restored stages from cache.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from skin_cancer import paths
from skin_cancer.config import Config, TrackingConfig, flatten, project_params, project_root, to_dict
from skin_cancer.io import read_json

DEFAULT_STORE = Path("mlruns")
GROUP_TAG = "sweep.group"


def tracking_uri(cfg: TrackingConfig | None = None) -> str:
    """Config value (default: the project's composed params), else MLFLOW_TRACKING_URI, else the
    project's embedded SQLite store."""
    if cfg is None:
        params = project_params()
        cfg = params.tracking if params else None
    if cfg is not None and cfg.uri:
        return cfg.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{project_root() / DEFAULT_STORE / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def store_lock(uri: str):
    """Serialise writers of a local SQLite store (parallel queued DVC experiments share it)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db.parent / ".mlflow.lock"), timeout=600):
        yield


def ensure_experiment(client, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    db = sqlite_path(uri)
    # A SQLite store's default artifact root is relative to the working directory, which is a
    # temporary copy in queued DVC experiments: keep artifacts beside the database instead.
    location = (db.parent / "artifacts" / name).as_uri() if db else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # a concurrent writer created it first
        return client.get_experiment_by_name(name).experiment_id


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


def model_signature(image_size: int):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, image_size, image_size, 3), "image")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, 1), "probability")]),
    )


def serving_signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema(
            [
                ColSpec("double", "probability"),
                ColSpec("string", "label"),
                ColSpec("double", "threshold"),
                ColSpec("string", "error"),
            ]
        ),
    )


def serving_model():
    """An MLflow pyfunc model around `serving.Classifier`: rows with a base64 `image` column in,
    probability, label, threshold (or error) out. Defined here so that only this module imports
    mlflow; cloudpickle stores the class with the model."""
    import mlflow.pyfunc

    class ImageClassifierModel(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            from skin_cancer.serving import load_classifier

            self.classifier = load_classifier(context.artifacts["model"])

        def predict(self, context, model_input, params=None):
            from skin_cancer.serving import predict_encoded

            images = model_input["image"] if isinstance(model_input, pd.DataFrame) else model_input
            results = predict_encoded(self.classifier, list(images))
            return pd.DataFrame(results, columns=["probability", "label", "threshold", "error"])

    return ImageClassifierModel()


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


def run_name(cfg: Config) -> str:
    """The recipe and the parameters that differ from the composition of conf/ with that recipe
    alone, e.g. "default: model.dropout=0.2, train.head.lr=0.0001"."""
    from skin_cancer.config import compose, validate

    try:
        experiment = [] if cfg.recipe == "default" else [f"experiment={cfg.recipe}"]
        base = flatten(to_dict(validate(compose(experiment))))
    except Exception:  # no conf/ here, or a recipe that is no experiment file: Hydra's errors vary
        return cfg.recipe
    changed = [f"{k}={v}" for k, v in flatten(to_dict(cfg)).items() if base.get(k, v) != v]
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
    operating_point = read_json(paths.OPERATING_POINT)
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
            params = {k: ("null" if v is None else v) for k, v in flatten(to_dict(cfg)).items()}
            client.log_batch(
                run.info.run_id,
                metrics=epoch_metrics(history),
                params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()],
            )
            # One namespace per evaluated set: validation.*, test.*, clean_test.*, <external set>.*
            numbers = {
                **flatten(metrics),
                **flatten(audit_report["summary"], "audit."),
                "operating_point.threshold": operating_point["threshold"],
                "operating_point.temperature": operating_point["temperature"],
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
                import keras

                mlflow.keras.log_model(
                    keras.saving.load_model(paths.MODEL),
                    name="model",
                    signature=model_signature(cfg.data.image_size),
                    pip_requirements=pip_requirements(),
                    metadata={"operating_point": operating_point},
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
                    metadata={"operating_point": operating_point},
                )
        logged = {"run_id": run.info.run_id, "experiment_id": experiment_id, "tracking_uri": uri, "group": group}
        if cfg.tracking.log_model and cfg.tracking.registered_model:
            comparable = {
                "task.classes": ",".join(operating_point["class_names"]),
                "validation.fingerprint": str(operating_point.get("validation_fingerprint")),
            }
            logged["registry"] = register_model(client, run.info.run_id, cfg.tracking, numbers, comparable)
        return logged


HEADLINE = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "roc_auc",
    "roc_auc_ci_low",
    "roc_auc_ci_high",
    "ece",
    "threshold",
)
# Version tags that say which versions may be compared for the champion alias.
COMPARABLE = ("task.classes", "validation.fingerprint")


def promote(new: float | None, current: float | None) -> bool:
    """Whether a new model version takes the champion alias: it has the metric, and the alias is free
    or held by a version with a lower (or no) value."""
    if new is None or math.isnan(new):
        return False
    return current is None or math.isnan(current) or new > current


def _value(tags: dict, metric: str) -> float | None:
    try:
        return float(tags[metric])
    except (KeyError, ValueError):
        return None


def best_comparable(versions: list, like: dict, metric: str):
    """The version with the highest `metric` tag among `versions` whose COMPARABLE tags equal `like`'s
    (ties: the older version keeps it), or None."""
    best = None
    for v in sorted(versions, key=lambda v: int(v.version)):
        if all(v.tags.get(k) == like.get(k) for k in COMPARABLE) and promote(
            _value(v.tags, metric), _value(best.tags, metric) if best else None
        ):
            best = v
    return best


def register_model(client, run_id: str, cfg: TrackingConfig, numbers: dict, comparable: dict) -> dict:
    """Register the run's model as a new version of `cfg.registered_model`, tagged with the headline
    metrics and `comparable` (task, validation fingerprint), and point `cfg.champion_alias` at the best
    version comparable with it, unless the alias is held by a version that is not comparable.

    The alias is set to the best of all comparable versions, then read back and set again while
    another writer's stale choice is found: concurrent sweep workers converge on the best."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tags = {
        k: str(v)
        for k, v in numbers.items()
        if k.rsplit(".", 1)[-1] in HEADLINE or k in (cfg.champion_metric, "operating_point.temperature")
    }
    tags.update(comparable)
    version = mlflow.register_model(f"runs:/{run_id}/serving", cfg.registered_model, tags=tags)

    def holder():
        try:
            return client.get_model_version_by_alias(cfg.registered_model, cfg.champion_alias)
        except MlflowException:  # no version holds the alias yet
            return None

    previous = holder()
    reason = None
    if previous is not None and any(previous.tags.get(k) != comparable.get(k) for k in COMPARABLE):
        reason = f"version {previous.version} holds @{cfg.champion_alias} but was validated on other data or classes"
    else:
        for _ in range(5):
            best = best_comparable(
                client.search_model_versions(f"name = '{cfg.registered_model}'"), comparable, cfg.champion_metric
            )
            current = holder()
            if best is None or (current is not None and current.version == best.version):
                break
            client.set_registered_model_alias(cfg.registered_model, cfg.champion_alias, best.version)
    final = holder()
    return {
        "name": cfg.registered_model,
        "version": int(version.version),
        "metric": cfg.champion_metric,
        "value": numbers.get(cfg.champion_metric),
        "previous_champion": int(previous.version) if previous else None,
        "previous_value": _value(previous.tags, cfg.champion_metric) if previous else None,
        "champion": final is not None and final.version == version.version,
        "not_comparable": reason,
    }


def load_logged_model(uri: str):
    """(Keras model, operating point) of an MLflow model URI: `runs:/<run>/model`,
    `models:/<name>@<alias>` or `models:/<name>/<version>`; DataError naming a missing one."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from skin_cancer.data import DataError

    mlflow.set_tracking_uri(tracking_uri())
    try:
        info = mlflow.models.get_model_info(uri)
        if "keras" in info.flavors:
            model = mlflow.keras.load_model(uri)
        else:  # the registered serving pyfunc wraps the Keras model
            model = mlflow.pyfunc.load_model(uri).unwrap_python_model().classifier.model
    except (MlflowException, OSError, AttributeError) as error:
        raise DataError(f"{uri}: {str(error).splitlines()[0]}") from None
    operating_point = (info.metadata or {}).get("operating_point")
    if not operating_point:
        raise DataError(f"{uri}: the model carries no operating point (logged before the calibrate stage existed?)")
    return model, operating_point


def model_versions(name: str) -> list[dict]:
    """Registered versions of `name`, newest first: version, aliases, run id, version tags (headline
    metrics) and the run's data fingerprint; [] when the registry or the name does not exist."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    out = []
    for v in sorted(versions, key=lambda v: -int(v.version)):
        run_tags = client.get_run(v.run_id).data.tags if v.run_id else {}
        out.append(
            {
                "version": int(v.version),
                "aliases": list(v.aliases),
                "run_id": v.run_id,
                "tags": dict(v.tags),
                "data_fingerprint": run_tags.get("data.fingerprint"),
                "recipe": run_tags.get("recipe"),
            }
        )
    return out

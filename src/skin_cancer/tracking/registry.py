"""The model registry: the pipeline's run gets the model in its Keras and serving flavours, and its
serving model becomes a version, tagged with its headline metrics and what makes versions
comparable; the champion alias points at the best comparable one. Loading a logged model back by URI
is the serving side's (serving.load_classifier), so that this module may import it and not the
other way round."""

from __future__ import annotations

import contextlib
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from skin_cancer.model_folder import MODEL_FILE, OOD_FILE, OPERATING_POINT_FILE
from skin_cancer.operating_point import OperatingPoint
from skin_cancer.schema import Config, TrackingConfig
from skin_cancer.tracking.access import explained_refusals
from skin_cancer.tracking.runs import RunFiles, pipeline_run
from skin_cancer.tracking.store import check_tracking, tracking_uri

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
    "n_images",
    "n_positive",
    "specificity_shift_from_validation",
)
# Version tags that say which versions may be compared for the champion alias.
COMPARABLE = ("task.classes", "validation.fingerprint")
# Errors that no retry can mend: the user may not move the alias.
REFUSED = ("PERMISSION_DENIED", "UNAUTHENTICATED")


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
    version comparable with it. A holder validated on other data or classes (a smoke run, another
    split) is replaced, and the result says so (`replaced`): the data of the newest run decide which
    versions compete, else one early smoke run would hold the alias for good.

    The alias is set to the best of all comparable versions, then read back and set again while
    another writer's stale choice is found (or another writer created it first): concurrent sweep
    workers converge on the best."""
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
    incomparable = previous is not None and any(previous.tags.get(k) != comparable.get(k) for k in COMPARABLE)
    for _ in range(5):
        best = best_comparable(client.search_model_versions(f"name = '{cfg.registered_model}'"), comparable, cfg.champion_metric)
        current = holder()
        if best is None or (current is not None and current.version == best.version):
            break
        try:
            client.set_registered_model_alias(cfg.registered_model, cfg.champion_alias, best.version)
        except MlflowException as error:
            # Two workers that both saw no alias both insert it; the server refuses the second
            # (a unique key). Lost that race: the next pass reads who holds it and corrects it.
            if error.error_code in REFUSED or holder() is None:
                raise
    final = holder()
    replaced = None
    if incomparable and final is not None and final.version != previous.version:
        replaced = f"version {previous.version}, validated on other data or classes, lost @{cfg.champion_alias}"
    return {
        "name": cfg.registered_model,
        "version": int(version.version),
        "metric": cfg.champion_metric,
        "value": numbers.get(cfg.champion_metric),
        "previous_champion": int(previous.version) if previous else None,
        "previous_value": _value(previous.tags, cfg.champion_metric) if previous else None,
        "champion": final is not None and final.version == version.version,
        "replaced": replaced,
    }


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


def log_models(cfg: Config, models: Path, operating_point: OperatingPoint, make_rest) -> None:
    """The model of folder `models` (model.keras, operating_point.json, ood.npz) in the active run:
    its Keras flavour (`model`) and, behind the REST pyfunc `make_rest()` builds (a
    serving.rest.RestModel, given by the caller so that tracking does not import serving),
    `serving`: what the registry holds and `mlflow models serve` serves.
    Both carry the operating point; `serving` carries the package's code (code_paths), pinned
    requirements and an input example, so it loads where the project is not installed."""
    import mlflow

    from skin_cancer.models.classifier import load_model

    model = load_model(models / MODEL_FILE)
    mlflow.keras.log_model(
        model,
        name="model",
        signature=model_signature(cfg.data.image_size, model.output_shape[-1]),
        pip_requirements=pip_requirements(),
        metadata={"operating_point": operating_point.to_dict()},
    )
    rest = make_rest()
    mlflow.pyfunc.log_model(
        name="serving",
        python_model=rest.python_model,
        artifacts={
            "model": str(models / MODEL_FILE),
            "operating_point": str(models / OPERATING_POINT_FILE),
            "ood": str(models / OOD_FILE),
        },
        code_paths=[str(Path(__file__).resolve().parents[1])],  # the whole skin_cancer package
        signature=rest.signature,
        pip_requirements=pip_requirements(),
        input_example=rest.example,
        model_config=rest.limits,
        metadata={"operating_point": operating_point.to_dict()},
    )


def publish(cfg: Config, files: RunFiles, models: Path, make_rest) -> dict:
    """The track stage's work: the pipeline's MLflow run (`tracking.pipeline_run` of `files`) with the
    model of folder `models` (`tracking.log_model`; `make_rest` builds its REST pyfunc, see
    log_models), registered as a version (`tracking.registered_model`) that takes the champion
    alias when it beats the comparable ones.
    Returns {run_id, experiment_id, tracking_uri, group[, registry]}."""
    from mlflow.tracking import MlflowClient

    operating_point = OperatingPoint.load(files.operating_point)
    uri = check_tracking(cfg.tracking)  # before the run opens: a refusal half-way would leave half a run
    with explained_refusals(uri, "logging the run and registering its model"), pipeline_run(cfg, files) as run:
        numbers = run.pop("numbers")
        if cfg.tracking.log_model:
            log_models(cfg, models, operating_point, make_rest)
            if cfg.tracking.registered_model:
                comparable = {
                    "task.classes": ",".join(operating_point.class_names),
                    "validation.fingerprint": str(operating_point.validation_fingerprint),
                }
                client = MlflowClient(run["tracking_uri"])
                run["registry"] = register_model(client, run["run_id"], cfg.tracking, numbers, comparable)
    return run


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

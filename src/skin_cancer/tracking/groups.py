"""Sweep groups in MLflow: one parent run per sweep, found and kept by every writer at once (jobs
on other machines, users who may not delete runs), and the sweep's verdicts on that parent."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from skin_cancer.schema import TrackingConfig
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


def group_parent(cfg: TrackingConfig):
    """(client, experiment id, parent run id) of the configured sweep group."""
    from mlflow.tracking import MlflowClient

    uri = check_tracking(cfg)
    with store_lock(uri), explained_refusals(uri, "opening the sweep's parent run"):
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, cfg.experiment_name, uri)
        return client, experiment_id, parent_run(client, experiment_id, cfg.run_group)


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
    client, _, parent = group_parent(cfg)
    client.set_tag(parent, "sweep.best_overrides", overrides)
    client.set_tag(parent, "sweep.best_value", str(value))
    client.log_artifact(parent, str(results))

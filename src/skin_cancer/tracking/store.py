"""Where MLflow runs and models live: the tracking URI (config, environment, or the project's
embedded SQLite store), a lock for local SQLite writers, and the experiment."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from skin_cancer.config import project_params, project_root
from skin_cancer.schema import TrackingConfig

DEFAULT_STORE = Path("mlruns")


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


def check_tracking(cfg: TrackingConfig) -> str:
    """The tracking URI, once its server answers and accepts the user's credentials and permission to
    write to the experiment and registered model: checked before a run's work, not after it."""
    from skin_cancer.tracking.access import check_access

    uri = tracking_uri(cfg)
    check_reachable(uri)
    check_access(uri, cfg.experiment_name, cfg.registered_model)
    return uri


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """Raise ConnectionError naming the URI when a tracking server does not answer its health check,
    so that a run fails before training rather than after it."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(f"tracking server {uri} does not answer: {reason}") from None

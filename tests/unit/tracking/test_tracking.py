"""Tracking and registry rules without a trained model: where runs go, who may import mlflow, which
version is champion, and the alias race on a real SQLite registry."""

import pytest
from mlflow.tracking import MlflowClient

from skin_cancer.schema import TrackingConfig
from skin_cancer.tracking.store import tracking_uri
from tests.helpers import ROOT


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri(TrackingConfig(uri=None)) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(TrackingConfig(uri=None)) == "http://127.0.0.1:5000"
    assert tracking_uri(TrackingConfig(uri="sqlite:///elsewhere.db")) == "sqlite:///elsewhere.db"


def test_only_the_tracking_module_logs_runs_and_mlflow_stays_in_its_modules():
    """Run logging lives in tracking/runs.py; mlflow is imported only by the tracking package and,
    in serving, by the code that loads a logged model and the REST pyfunc, never at import time."""
    import ast

    sources = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "src").rglob("*.py")}
    loggers = [name for name, text in sources.items() if "mlflow.start_run" in text or "mlflow.log_" in text]
    assert loggers == ["src/skin_cancer/tracking/runs.py"]
    importers = {name for name, text in sources.items() if "import mlflow" in text or "from mlflow" in text}
    tracking = {f"src/skin_cancer/tracking/{m}.py" for m in ("runs", "run_description", "groups", "store", "registry", "access")}
    assert importers == tracking | {"src/skin_cancer/serving/classifier.py", "src/skin_cancer/serving/rest.py"}
    for name in importers:
        top_level = [n for n in ast.parse(sources[name]).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not any("mlflow" in ast.unparse(n) for n in top_level), name


@pytest.mark.parametrize(
    "new, current, promoted",
    [
        (0.9, None, True),
        (0.9, 0.8, True),
        (0.8, 0.9, False),
        (0.9, 0.9, False),
        (None, 0.8, False),
        (float("nan"), None, False),
        (0.7, float("nan"), True),
    ],
)
def test_champion_alias_policy(new, current, promoted):
    from skin_cancer.tracking.registry import promote

    assert promote(new, current) == promoted


def version(number: int, value: float | None, fingerprint: str = "val-a", classes: str = "benign,malignant"):
    from types import SimpleNamespace

    tags = {"task.classes": classes, "validation.fingerprint": fingerprint}
    if value is not None:
        tags["validation.roc_auc"] = str(value)
    return SimpleNamespace(version=str(number), tags=tags)


def test_the_champion_is_chosen_among_comparable_versions_only():
    from skin_cancer.tracking.registry import best_comparable

    like = {"task.classes": "benign,malignant", "validation.fingerprint": "val-a"}
    versions = [
        version(1, 0.80),
        version(2, 0.99, fingerprint="smoke-20-per-class"),
        version(3, 0.85),
        version(4, 0.97, classes="mel,nv"),
        version(5, 0.85),
        version(6, None),
    ]
    assert best_comparable(versions, like, "validation.roc_auc").version == "3"  # a tie keeps the older
    assert best_comparable(versions, {**like, "validation.fingerprint": "other"}, "validation.roc_auc") is None


def sqlite_registry(tmp_path, n_runs: int) -> tuple[str, TrackingConfig, list[str]]:
    """A SQLite tracking store with `n_runs` runs that each logged a pyfunc model under `serving`."""
    import mlflow

    class Identity(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Not the environment variable: an earlier test's set_tracking_uri would take precedence.
    mlflow.set_tracking_uri(uri)
    cfg = TrackingConfig(
        uri=uri,
        experiment_name="registry",
        run_group="",
        log_model=True,
        registered_model="classifier",
        champion_alias="champion",
        champion_metric="validation.roc_auc",
    )
    run_ids = []
    for _ in range(n_runs):
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(name="serving", python_model=Identity())
        run_ids.append(run.info.run_id)
    return uri, cfg, run_ids


def test_a_worker_that_loses_the_race_to_create_the_alias_still_leaves_it_on_the_best(tmp_path):
    """On a PostgreSQL-backed server two workers that both saw no alias both insert it and the second
    is refused (a unique key): the loser re-reads and moves the alias to the best comparable version."""
    import mlflow
    from mlflow.exceptions import RestException

    from skin_cancer.tracking.registry import register_model

    class OutracedClient(MlflowClient):
        """The other worker sets the alias (to its own, worse, version) just before this one does."""

        raced = False

        def set_registered_model_alias(self, name, alias, version):
            if not self.raced:
                self.raced = True
                super().set_registered_model_alias(name, alias, "1")
                # What the server answers (a string error_code given to MlflowException reads INTERNAL_ERROR)
                raise RestException({"error_code": "BAD_REQUEST", "message": "duplicate key value violates unique constraint"})
            super().set_registered_model_alias(name, alias, version)

    uri, cfg, run_ids = sqlite_registry(tmp_path, 2)
    comparable = {"task.classes": "benign,malignant", "validation.fingerprint": "val-a"}
    mlflow.register_model(f"runs:/{run_ids[0]}/serving", "classifier", tags={**comparable, "validation.roc_auc": "0.81"})

    result = register_model(OutracedClient(uri), run_ids[1], cfg, {"validation.roc_auc": 0.84}, comparable)
    assert result["version"] == 2 and result["champion"]
    assert str(MlflowClient(uri).get_model_version_by_alias("classifier", "champion").version) == "2"


def test_a_champion_validated_on_other_data_does_not_hold_the_alias_for_good(tmp_path):
    """A smoke run registered first takes the free alias; the first version validated on the real
    split takes it over (and says so), and from then on the best of that split holds it."""
    from skin_cancer.tracking.registry import register_model

    uri, cfg, run_ids = sqlite_registry(tmp_path, 3)
    client = MlflowClient(uri)
    real = {"task.classes": "benign,malignant", "validation.fingerprint": "val-a"}
    smoke = register_model(client, run_ids[0], cfg, {"validation.roc_auc": 0.99}, {**real, "validation.fingerprint": "smoke"})
    first = register_model(client, run_ids[1], cfg, {"validation.roc_auc": 0.84}, real)
    assert smoke["champion"] and first["champion"] and first["previous_champion"] == 1
    worse = register_model(client, run_ids[2], cfg, {"validation.roc_auc": 0.80}, real)
    assert not worse["champion"] and worse["previous_champion"] == 2
    assert first["replaced"] == "version 1, validated on other data or classes, lost @champion"
    assert smoke["replaced"] is None and worse["replaced"] is None
    assert str(client.get_model_version_by_alias("classifier", "champion").version) == "2"


def test_a_run_that_loses_the_race_to_insert_a_dataset_still_logs_it(tmp_path, monkeypatch):
    """Two sweep jobs logging the same new manifest at once on a PostgreSQL-backed server: the second
    insert is refused by the unique key; the job sends it again and the run links the dataset."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.tracking import MlflowClient

    from skin_cancer.tracking.runs import log_input

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    dataset = mlflow.data.from_pandas(pd.DataFrame({"source": ["a.jpg"], "label": ["benign"]}), name="training")
    original = MlflowClient.log_inputs
    raced = []

    def outraced(self, run_id, datasets=None, models=None):
        if not raced:  # the other job's run inserts the dataset first
            raced.append(True)
            with mlflow.start_run(nested=True) as other:
                original(self, other.info.run_id, datasets)
            # What the server answers (psycopg.errors.UniqueViolation)
            raise RestException(
                {"error_code": "BAD_REQUEST", "message": 'duplicate key value violates unique constraint "dataset_pk"'}
            )
        return original(self, run_id, datasets, models)

    monkeypatch.setattr(MlflowClient, "log_inputs", outraced)
    with mlflow.start_run() as run:
        log_input(dataset, "training")
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert raced and [i.dataset.name for i in inputs] == ["training"]
    refused = RestException({"error_code": "PERMISSION_DENIED", "message": "no EDIT permission"})

    def refuse(*args, **kwargs):
        raise refused

    monkeypatch.setattr(MlflowClient, "log_inputs", refuse)
    with pytest.raises(MlflowException, match="no EDIT permission"), mlflow.start_run():
        log_input(dataset, "training")  # anything but a lost race is raised at once


@pytest.mark.parametrize(
    "experiment, label_map", [("loco_derm7pt", "audit.against.derm7pt"), ("all_collections", "data.sources.derm7pt")]
)
def test_every_parameter_of_a_run_is_a_valid_mlflow_key(tmp_path, compose, experiment, label_map):
    """Derm7pt's labels ("melanoma (in situ)") are not valid MLflow keys: a label map is logged whole."""
    import json

    from skin_cancer.tracking.run_description import run_params

    cfg = compose(f"experiment={experiment}")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("params"))
    client.log_batch(run.info.run_id, params=run_params(cfg))
    logged = client.get_run(run.info.run_id).data.params
    assert json.loads(logged[f"{label_map}.label_map"])["melanoma (in situ)"] == "malignant"
    assert logged["model.dropout"] == str(cfg.model.dropout) and logged["data.per_class_limit"] == "null"


def test_readers_outside_the_stages_use_the_composed_params(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from skin_cancer.config import compose

    params = OmegaConf.merge(compose([], ROOT / "conf"), {"tracking": {"uri": "http://127.0.0.1:5999"}})
    (tmp_path / "params.yaml").write_text(OmegaConf.to_yaml(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == "http://127.0.0.1:5999"

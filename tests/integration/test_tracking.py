"""Tracking a finished tiny pipeline: one MLflow run with the whole picture, the logged and served
models, registry versions and the champion alias, runs of sweeps and of failed training."""

import json
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from skin_cancer.config import write_params
from skin_cancer.stages.track import publish
from tests.helpers import ROOT, predict_outside_the_project, runs


def test_one_run_holds_the_whole_picture(outputs, tmp_path):
    logged = publish(outputs)
    assert logged["tracking_uri"] == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client, found = runs(logged["tracking_uri"])
    assert len(found) == 1
    run = found[0]
    assert len(run.data.params) >= 20
    assert run.data.params["model.dropout"] == str(outputs.model.dropout)
    assert run.data.params["train.head.lr"] == str(outputs.train.head.lr)
    head = client.get_metric_history(run.info.run_id, "head.val_auc")
    finetune = client.get_metric_history(run.info.run_id, "finetune.val_auc")
    assert [m.step for m in head] == [1, 2] and [m.step for m in finetune] == [3, 4]
    for key in (
        "test.accuracy",
        "test.roc_auc",
        "test.roc_auc_ci_low",
        "test.sensitivity",
        "test.specificity",
        "test.sensitivity_at_specificity_90",
        "test.ece",
        "clean_test.accuracy",
        "validation.ece",
        "operating_point.threshold",
        "operating_point.temperature",
        "audit.clean_test_images",
    ):
        assert key in run.data.metrics, key
    assert {"recipe", "git.commit", "data.fingerprint"} <= set(run.data.tags)
    listed = lambda folder: {a.path for a in client.list_artifacts(run.info.run_id, folder)}  # noqa: E731
    assert {"evaluation/test", "evaluation/clean_test"} <= listed("evaluation")
    assert {"evaluation/test/confusion_matrix.json", "evaluation/test/classification_report.json"} <= listed("evaluation/test")
    assert {
        "figures/test_confusion_matrix.png",
        "figures/test_roc.png",
        "figures/test_reliability.png",
        "figures/training_curves.png",
    } <= listed("figures")
    assert {"audit/report.json", "audit/pairs.csv"} <= listed("audit")
    assert {"model_report.md", "model_report.html"} <= listed("")
    assert {"pipeline/report.json", "pipeline/operating_point.json"} <= listed("pipeline")
    # Artifacts live beside the database, not in the working directory.
    assert (tmp_path / "mlruns" / "artifacts").is_dir()


def test_logged_model_loads_as_pyfunc_and_predicts_like_keras(outputs):
    import mlflow

    logged = publish(outputs)
    mlflow.set_tracking_uri(logged["tracking_uri"])
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{logged['run_id']}/model")
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = keras.saving.load_model("models/model.keras").predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x)).reshape(-1, 1), expected, atol=1e-5)
    assert tuple(pyfunc.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 32, 32, 3)
    # The validation-fitted temperature and threshold travel with the model.
    stored = pyfunc.metadata.metadata["operating_point"]
    assert stored == json.loads(open("models/operating_point.json").read())


def test_parallel_runs_of_one_group_are_all_kept_under_one_parent(outputs, tmp_path):
    """Two processes log at once (as `dvc queue start -j 2` workers do): no run is lost."""
    outputs.tracking.log_model = False
    outputs.tracking.run_group = "sweep-test"
    write_params(outputs)
    code = "from skin_cancer.config import load_params; from skin_cancer.stages.track import publish; publish(load_params())"
    workers = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path) for _ in range(3)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0, 0]
    client, found = runs(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    parents = [r for r in found if r.data.tags.get("sweep.parent") == "true"]
    children = [r for r in found if r.data.tags.get("sweep.parent") != "true"]
    assert len(parents) == 1 and len(children) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}


def test_track_stage_records_the_run(outputs, tmp_path):
    result = subprocess.run([sys.executable, "-m", "skin_cancer.stages.track"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "reports" / "mlflow_run.json").read_text())
    assert MlflowClient(record["tracking_uri"]).get_run(record["run_id"]).info.status == "FINISHED"


def test_each_run_registers_a_version_and_the_alias_follows_the_best(outputs, tmp_path):

    metrics = json.loads(open("reports/metrics.json").read())
    first = publish(outputs)["registry"]
    assert (first["version"], first["champion"]) == (1, True)
    metrics["validation"]["roc_auc"] -= 0.1  # a worse model on validation: the alias stays
    with open("reports/metrics.json", "w") as handle:
        json.dump(metrics, handle)
    second = publish(outputs)["registry"]
    assert (second["version"], second["champion"], second["previous_champion"]) == (2, False, 1)
    metrics["validation"]["roc_auc"] += 0.2  # a better one takes it
    with open("reports/metrics.json", "w") as handle:
        json.dump(metrics, handle)
    third = publish(outputs)["registry"]
    assert (third["version"], third["champion"]) == (3, True)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    champion = client.get_model_version_by_alias("skin-cancer-classifier", "champion")
    assert int(champion.version) == 3 and float(champion.tags["test.roc_auc"]) == pytest.approx(metrics["test"]["roc_auc"])
    from skin_cancer.serving.classifier import load_classifier

    assert load_classifier("models:/skin-cancer-classifier@champion").threshold == metrics["validation"]["threshold"]
    from skin_cancer.errors import DataError

    with pytest.raises(DataError, match="models:/skin-cancer-classifier@nobody"):
        load_classifier("models:/skin-cancer-classifier@nobody")


def test_the_served_model_loads_and_predicts_where_the_project_is_not_importable(outputs, tmp_path):
    import mlflow
    import pandas as pd

    from skin_cancer import paths
    from skin_cancer.serving.classifier import load_classifier

    logged = publish(outputs)
    mlflow.set_tracking_uri(logged["tracking_uri"])
    model_dir = mlflow.artifacts.download_artifacts(
        run_id=logged["run_id"], artifact_path="serving", dst_path=str(tmp_path / "elsewhere")
    )
    requirements = (Path(model_dir) / "requirements.txt").read_text()
    for package in ("tensorflow-cpu==", "keras==", "openvino==", "mlflow==", "pandas==", "pillow==", "scikit-learn=="):
        assert package in requirements.lower(), package
    assert (Path(model_dir) / "serving_input_example.json").is_file()
    # The out-of-distribution detector travels beside the model, where load_classifier looks for it.
    (detector,), (keras_file,) = Path(model_dir).rglob("ood.npz"), Path(model_dir).rglob("model.keras")
    assert detector.parent == keras_file.parent
    image = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[0]
    predicted = predict_outside_the_project(model_dir, image, tmp_path)
    expected = load_classifier("models/model.keras").predict([image])[0]
    assert predicted["probability"] == pytest.approx(expected["probability"], abs=1e-5)


def test_a_run_names_its_recipe_and_changes_and_records_its_datasets(outputs):
    import shutil

    shutil.copytree(ROOT / "conf", "conf")  # the run name says what differs from conf/'s composition
    logged = publish(outputs)
    client = MlflowClient(logged["tracking_uri"])
    run = client.get_run(logged["run_id"])
    assert run.info.run_name.startswith("default: ") and "model.width=0.35" in run.info.run_name
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert {"training", "validation", "test"} <= contexts
    assert all(i.dataset.digest for i in run.inputs.dataset_inputs)


def test_training_logs_each_epoch_into_the_run_that_the_track_stage_completes(outputs, tmp_path):
    """The head and fine-tuning epochs reach MLflow while the stages train, in one RUNNING run that
    `track` completes; a fine-tuning re-run after that run finished (DVC restored `train` from its
    cache) opens a new run holding the head's epochs from its history file."""
    from skin_cancer import paths
    from skin_cancer.host import describe as describe_host
    from skin_cancer.stages import finetune, train

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    steps = lambda run_id, key: [m.step for m in client.get_metric_history(run_id, key)]  # noqa: E731
    train.main(outputs)
    run_id = json.loads(paths.TRAIN_RUN.read_text())["run_id"]
    assert client.get_run(run_id).info.status == "RUNNING" and steps(run_id, "head.val_auc") == [1, 2]
    finetune.main(outputs)
    assert json.loads(paths.FINETUNE_RUN.read_text())["run_id"] == run_id
    assert client.get_run(run_id).info.status == "RUNNING" and steps(run_id, "finetune.val_auc") == [3, 4]
    tracked = int(time.time() * 1000)
    assert publish(outputs)["run_id"] == run_id
    _, found = runs(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert [r.info.run_id for r in found] == [run_id] and found[0].info.status == "FINISHED"
    assert found[0].data.params["model.dropout"] == str(outputs.model.dropout)
    # The machine of each stage: numbers differ across instruction sets.
    tags, here = found[0].data.tags, describe_host()
    assert tags["host.head.cpu"] == tags["host.finetune.cpu"] == tags["host.calibrate.cpu"] == here["cpu"]
    assert tags["host.finetune.isa"] == here["isa"] and tags["host.calibrate.tensorflow"] == here["tensorflow"]
    assert f"Calibrated on {here['cpu']}" in paths.MODEL_REPORT.read_text()
    logged = [m for key in ("head.loss", "finetune.loss") for m in client.get_metric_history(run_id, key)]
    assert len(logged) == 4 and all(m.timestamp < tracked for m in logged)

    finetune.main(outputs)
    again = json.loads(paths.FINETUNE_RUN.read_text())["run_id"]
    assert again != run_id and steps(again, "head.val_auc") == [1, 2] and steps(again, "finetune.val_auc") == [3, 4]


def test_training_that_fails_marks_its_run_failed_and_a_failed_sweep_job_keeps_it(outputs, tmp_path, monkeypatch):
    from skin_cancer import paths
    from skin_cancer.tracking.runs import RunFiles, log_failed_job, training_run

    monkeypatch.setenv("DVC_EXP_NAME", "sweep-1-0")
    outputs.tracking.run_group = "sweep-1"
    with pytest.raises(RuntimeError), training_run(outputs, RunFiles(**paths.RUN_FILES), "head") as (callbacks, record):
        callbacks[0].on_epoch_end(0, {"loss": 0.5})
        raise RuntimeError("out of memory")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = client.get_run(record["run_id"])
    assert run.info.status == "FAILED" and run.data.metrics == {"head.loss": 0.5}
    (tmp_path / "dvc.log").write_text("failed\n")
    assert log_failed_job(outputs, "sweep-1-0", ["model.dropout=0.1"], tmp_path / "dvc.log", time.time()) == run.info.run_id
    run = client.get_run(record["run_id"])
    assert run.data.tags["sweep.overrides"] == "model.dropout=0.1" and run.info.run_name == "sweep-1-0 (failed)"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["dvc.log"]

"""The real pipeline: `dvc repro` and a queued DVC sweep in a temporary copy of the project, on a
small real subset of the Kaggle data with the real ImageNet weights (minutes)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import ROOT, SHARED

KAGGLE = SHARED / "data" / "skin-cancer-mvb"
# The default config's data roots (relative, ../shared/data/...) stay as they are: the project copy
# gets a `shared` link beside it, as a checkout has ../shared.
SMOKE = """# @package _global_
data:
  per_class_limit: 20
evaluate:
  external:
    ham10000:
      per_class_limit: 20
train:
  feature_views: 2
  head:
    epochs: 1
  finetune:
    epochs: 1
    warmup_epochs: 0
"""

pytestmark = pytest.mark.slow


def sh(*args, cwd, check=True, timeout=900):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@localhost",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@localhost",
    }
    for key in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        env.pop(key, None)
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the project whose default experiment is a 20-images-per-class smoke run."""
    if not KAGGLE.is_dir():
        pytest.fail(f"{KAGGLE} not found: the end-to-end test reads the real Kaggle data from ../shared")
    work = tmp_path_factory.mktemp("project")
    shared = work.parent / "shared"
    if not shared.exists():
        shared.symlink_to(SHARED)
    for name in ("conf", "src", ".dvc", "dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
    shutil.rmtree(work / ".dvc" / "tmp", ignore_errors=True)
    shutil.rmtree(work / ".dvc" / "cache", ignore_errors=True)
    (work / "conf" / "experiment" / "smoke.yaml").write_text(SMOKE)
    config = work / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("- experiment: null", "- experiment: smoke"))
    sh("git", "init", "-q", cwd=work)
    sh("skin-cancer", "compose", cwd=work)
    sh("git", "add", "-A", cwd=work)
    sh("git", "commit", "-qm", "smoke project", cwd=work)
    return work


def mlflow_runs(project):
    client = MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("skin-cancer")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


def test_dvc_repro_runs_the_pipeline_into_one_complete_mlflow_run(project, shared_weights):
    log = sh("dvc", "repro", cwd=project)
    for stage in ("sources", "audit", "prepare", "features", "train", "finetune", "calibrate", "evaluate", "report", "track"):
        assert f"Running stage '{stage}'" in log
    client, runs = mlflow_runs(project)
    assert len(runs) == 1
    run = runs[0]
    assert len(run.data.params) >= 20 and run.data.params["data.per_class_limit"] == "20"
    assert client.get_metric_history(run.info.run_id, "head.val_auc")[0].step == 1
    assert client.get_metric_history(run.info.run_id, "finetune.val_loss")[0].step == 2
    assert {
        "test.accuracy",
        "test.roc_auc",
        "test.roc_auc_ci_low",
        "test.sensitivity",
        "test.specificity",
        "test.sensitivity_at_specificity_90",
        "test.ece",
        "clean_test.roc_auc",
        "ham10000.roc_auc",
        "ham10000.excluded",
        "operating_point.threshold",
        "audit.duplicate_clusters",
    } <= set(run.data.metrics)
    # The 40 smoke images are HAM10000 copies: the audit carries their lesions over.
    assert run.data.metrics["audit.test_images"] == 40
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/test_confusion_matrix.png", "figures/ham10000_roc.png"} <= artifacts
    assert "evaluation/test/confusion_matrix.json" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluation/test")}
    assert {"model_report.md", "model_report.html"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(f"sqlite:///{project}/mlruns/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert np.asarray(model.predict(np.zeros((2, 224, 224, 3), dtype="float32"))).shape == (2, 1)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-qm", "first run", cwd=project)


def test_second_repro_only_refingerprints_the_sources(project, shared_weights):
    log = sh("dvc", "repro", cwd=project)
    assert re.findall(r"Running stage '(\w+)'", log) == ["sources"]
    assert len(mlflow_runs(project)[1]) == 1


def test_dvc_metrics_plots_and_exp_show(project, shared_weights):
    metrics = json.loads(sh("dvc", "metrics", "show", "--json", cwd=project))
    assert "roc_auc" in json.dumps(metrics) and "sensitivity" in json.dumps(metrics)
    sh("dvc", "plots", "show", "-o", "plots_html", cwd=project)
    html = (project / "plots_html" / "index.html").read_text()
    for plot in (
        "reports_evaluation_test_predictions_csv",
        "reports_evaluation_clean_test_predictions_csv",
        "test_confusion_matrix.png",
        "ham10000_reliability.png",
        "training_curves.png",
    ):
        assert plot in html, plot
    shutil.rmtree(project / "plots_html")
    table = sh("dvc", "exp", "show", "--csv", cwd=project)
    assert "model.dropout" in table and "accuracy" in table


def test_changing_the_head_dropout_reruns_from_train_not_prepare(project, shared_weights):
    sh("skin-cancer", "compose", "model.dropout=0.3", cwd=project)
    log = sh("dvc", "repro", cwd=project)
    ran = set(re.findall(r"Running stage '(\w+)'", log))
    assert ran == {"sources", "train", "finetune", "calibrate", "evaluate", "report", "track"}
    assert len(mlflow_runs(project)[1]) == 2
    sh("git", "checkout", "params.yaml", cwd=project)
    sh("dvc", "checkout", cwd=project)


def test_the_readmes_sweep_lands_every_run_grouped(project, shared_weights):
    """The README's sweep, word for word, on the default (relative) data roots."""
    before = {r.info.run_id for r in mlflow_runs(project)[1]}
    sh("dvc", "exp", "run", "--queue", "-S", "model.dropout=0.2,0.4", "-S", "train.head.lr=0.001,0.0001", cwd=project)
    sh("dvc", "queue", "start", "-j", "2", cwd=project)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = sh("dvc", "queue", "status", cwd=project)
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(5)
    assert "Success" in status and "Failed" not in status, status + sh("dvc", "queue", "logs", "--help", cwd=project, check=False)
    client, runs = mlflow_runs(project)
    new = [r for r in runs if r.info.run_id not in before]
    children = [r for r in new if r.data.tags.get("sweep.parent") != "true"]
    parents = [r for r in new if r.data.tags.get("sweep.parent") == "true"]
    assert sorted((r.data.params["model.dropout"], r.data.params["train.head.lr"]) for r in children) == [
        ("0.2", "0.0001"),
        ("0.2", "0.001"),
        ("0.4", "0.0001"),
        ("0.4", "0.001"),
    ]
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.data.tags.get("dvc.exp_name") for r in children)
    # Queued experiments ran in temporary copies, yet their runs and artifacts landed in the project.
    assert all(r.info.artifact_uri.startswith((project / "mlruns").as_uri()) for r in children)


def test_a_small_seven_class_run_on_real_ham10000(project, shared_weights):
    """experiment=ham10000 (the seven ISIC diagnoses) on a few real HAM10000 images per class: one
    MLflow run with per-class metrics and the 7 x 7 confusion matrix, DVC metrics and plots."""
    small = ["data.per_class_limit=10", "train.feature_views=2", "train.head.epochs=1", "train.finetune.epochs=1"]
    small += ["train.finetune.warmup_epochs=0", "evaluate.external.ham10000.per_class_limit=10"]
    small += ["+evaluate.external.kaggle.per_class_limit=10"]
    sh("dvc", "exp", "run", "-S", "experiment=ham10000", *[arg for s in small for arg in ("-S", s)], cwd=project, timeout=1200)
    _, runs = mlflow_runs(project)
    run = next(r for r in runs if r.data.tags.get("recipe") == "ham10000")
    classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert {"test.balanced_accuracy", "test.macro_auc", "test.mel.sensitivity", "test.malignant.roc_auc"} <= set(run.data.metrics)
    assert run.data.metrics["test.n_images"] == 7 * 10 and {f"test.{c}.roc_auc" for c in classes} <= set(run.data.metrics)
    confusion = json.loads((project / "reports" / "evaluation" / "test" / "confusion_matrix.json").read_text())
    assert confusion["labels"] == list(classes) and len(confusion["matrix"]) == 7
    assert "balanced_accuracy" in sh("dvc", "metrics", "show", cwd=project)

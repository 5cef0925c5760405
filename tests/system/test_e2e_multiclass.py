"""The seven-class recipe through DVC on real HAM10000 images, in its own copy of the project (it
shares nothing with test_e2e.py's runs, so it runs beside them)."""

import json

import pytest

from tests.system.smoke_project import mlflow_runs, sh, smoke_project


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return smoke_project(tmp_path_factory.mktemp("project"))


def test_a_small_seven_class_run_on_real_ham10000(project, shared_weights):
    """experiment=ham10000 (the seven ISIC diagnoses) on a few real HAM10000 images per class: one
    MLflow run with per-class metrics and the 7 x 7 confusion matrix, DVC metrics and plots."""
    small = ["data.per_class_limit=10", "train.feature_views=2", "train.head.epochs=1", "train.finetune.epochs=1"]
    small += ["train.finetune.warmup_epochs=0", "evaluate.external.ham10000.per_class_limit=10"]
    small += ["+evaluate.external.kaggle.per_class_limit=10", "evaluate.tta_views=2", "evaluate.bootstrap_resamples=200"]
    sh("dvc", "exp", "run", "-S", "experiment=ham10000", *[arg for s in small for arg in ("-S", s)], cwd=project, timeout=1200)
    _, runs = mlflow_runs(project)
    run = next(r for r in runs if r.data.tags.get("recipe") == "ham10000")
    classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert {"test.balanced_accuracy", "test.macro_auc", "test.mel.sensitivity", "test.malignant.roc_auc"} <= set(run.data.metrics)
    assert run.data.metrics["test.n_images"] == 7 * 10 and {f"test.{c}.roc_auc" for c in classes} <= set(run.data.metrics)
    confusion = json.loads((project / "reports" / "evaluation" / "test" / "confusion_matrix.json").read_text())
    assert confusion["labels"] == list(classes) and len(confusion["matrix"]) == 7
    assert "balanced_accuracy" in sh("dvc", "metrics", "show", cwd=project)

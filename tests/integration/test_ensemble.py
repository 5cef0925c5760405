"""Ensembles of trained members: assembled, calibrated, evaluated, served and explained as one model,
and refused when a member could have trained on this validation split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from skin_cancer import paths
from skin_cancer.config import ConfigError
from skin_cancer.evaluation.calibration import apply_temperature
from skin_cancer.evaluation.explain import grad_cam, member_grad_cams
from skin_cancer.models.classifier import load_model
from skin_cancer.models.ensemble import build_ensemble, load_members
from skin_cancer.serving.classifier import load_classifier
from tests.helpers import predict_outside_the_project


def member_folders(names, temperatures=None) -> list[str]:
    """Copies of the finished pipeline's models/ folder, each a member (optionally with another
    temperature in its operating point)."""
    for i, name in enumerate(names):
        shutil.copytree("models", name)
        if temperatures:
            op = json.loads(paths.OPERATING_POINT.read_text())
            (Path(name) / "operating_point.json").write_text(json.dumps({**op, "temperature": temperatures[i]}))
    return list(names)


def test_an_ensemble_averages_its_members_calibrated_probabilities(trained):
    folders = member_folders(["a", "b"], temperatures=[0.5, 2.0])
    members = load_members(folders)
    ensemble = build_ensemble(members, 32)
    x = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    raw = load_model(paths.MODEL).predict(x, verbose=0)[:, 0]
    expected = (apply_temperature(raw, 0.5) + apply_temperature(raw, 2.0)) / 2
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected.reshape(-1, 1), atol=1e-5)
    # A member at another input size sees the image resized to its own.
    larger = build_ensemble(members, 48)
    assert larger.input.shape[1:3] == (48, 48) and larger.get_layer("member_0_resize").output.shape[1:3] == (32, 32)


def test_an_ensemble_runs_every_stage_and_is_served_and_explained_like_one_model(trained, tmp_path):
    import mlflow

    from skin_cancer.config import write_params
    from skin_cancer.stages import calibrate, evaluate, features, finetune, report, train
    from skin_cancer.stages.track import publish

    trained.model.backbone, trained.model.members = "ensemble", member_folders(["a", "b"])
    for stage in (features, train, finetune, calibrate, evaluate, report):
        stage.main(trained)
    assert json.loads((paths.FEATURES / "info.json").read_text())["enabled"] is False
    metrics = json.loads(paths.METRICS.read_text())
    assert metrics["test"]["n_images"] == 12 and "roc_auc_ci_low" in metrics["test"]
    assert (paths.FIGURES / "test_gradcam.png").exists()
    assert "An ensemble of 2 trained members" in paths.MODEL_REPORT.read_text()
    classifier = load_classifier(paths.MODEL)
    image_path = str(next(Path(trained.data.root).glob("test/*/*.jpg")))
    assert 0 <= classifier.predict([image_path])[0]["probability"] <= 1
    image = classifier.load_file(Path(image_path))
    maps = member_grad_cams(classifier.model, image)
    heatmap, probability = grad_cam(classifier.model, image)
    assert [name for name, _ in maps] == ["member_0", "member_1"] and heatmap.shape == (32, 32) and heatmap.max() <= 1
    np.testing.assert_allclose(heatmap, maps[0][1] / (maps[0][1].max() + 1e-8), atol=1e-5)  # identical members
    assert 0 <= probability <= 1
    # The served model brings its own code (the ensemble's layer too) where the project is not installed.
    write_params(trained)
    logged = publish(trained)
    mlflow.set_tracking_uri(logged["tracking_uri"])
    model_dir = mlflow.artifacts.download_artifacts(
        run_id=logged["run_id"], artifact_path="serving", dst_path=str(tmp_path / "out")
    )
    served = predict_outside_the_project(model_dir, image_path, tmp_path)
    assert served["probability"] == pytest.approx(classifier.predict([image_path])[0]["probability"], abs=1e-5)


def test_members_validated_on_other_images_or_classes_are_refused(trained):
    from skin_cancer.stages import train

    (folder,) = member_folders(["other"])
    before = paths.HEAD_MODEL.stat().st_mtime_ns
    op = json.loads((Path(folder) / "operating_point.json").read_text())
    (Path(folder) / "operating_point.json").write_text(json.dumps({**op, "validation_fingerprint": "0123456789abcdef"}))
    trained.model.backbone, trained.model.members = "ensemble", [folder]
    with pytest.raises(ConfigError, match=r"other was validated on other images .*may have trained on this validation split"):
        train.main(trained)
    (Path(folder) / "operating_point.json").write_text(json.dumps({**op, "class_names": ["malignant", "benign"]}))
    with pytest.raises(ConfigError, match=r"other predicts \['malignant', 'benign'\]"):
        train.main(trained)
    trained.model.members = ["nowhere"]
    with pytest.raises(ConfigError, match=r"nowhere has no model.keras or operating_point.json"):
        train.main(trained)
    assert paths.HEAD_MODEL.stat().st_mtime_ns == before  # the trained head is left as it was

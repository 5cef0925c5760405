"""Stage functions end to end on generated images and a tiny model (seconds, no real weights)."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from skin_cancer import paths
from skin_cancer.config import write_params
from skin_cancer.data.prepare import read_manifest
from skin_cancer.errors import DataError
from skin_cancer.models.classifier import compile_classifier, get_backbone, unfreeze
from skin_cancer.stages import audit, evaluate, features, prepare, report, train
from tests.helpers import make_csv_collection, run_all

NOTEBOOK_ON_IMAGES = ("experiment=notebook", "model.frozen_until=block_12_add", "train.head.epochs=1", "train.finetune.epochs=1")
# EfficientNet-Lite0 (random weights: no ImageNet weights are converted for a smoke test).
LITE0 = ("model=efficientnet_lite0", "model.width=1.0", "model.weights=null", "data.image_size=32")


@pytest.mark.parametrize(
    "recipe", [(), NOTEBOOK_ON_IMAGES, LITE0], ids=["cached-features", "notebook-images", "efficientnet-lite0"]
)
def test_stages_produce_every_declared_output(request, recipe):
    if recipe:
        cfg = request.getfixturevalue("workspace")(*recipe)
        run_all(cfg)
    else:  # the default tiny pipeline, run once per session
        cfg = request.getfixturevalue("trained")
    for path in (
        paths.AUDIT_REPORT,
        paths.PREPARE_REPORT,
        paths.HEAD_MODEL,
        paths.MODEL,
        paths.MODEL_H5,
        paths.OPERATING_POINT,
        paths.METRICS,
        paths.TRAIN_HISTORY,
        paths.FINETUNE_HISTORY,
        paths.TRAIN_RUN,
        paths.FINETUNE_RUN,
        paths.FIGURES / "training_curves.png",
        paths.FIGURES / "test_gradcam.png",
        paths.MODEL_REPORT,
        paths.MODEL_REPORT.with_suffix(".html"),
    ):
        assert path.exists(), path
    for name in ("test", "clean_test"):
        for figure in ("confusion_matrix", "roc", "pr", "reliability"):
            assert (paths.FIGURES / f"{name}_{figure}.png").exists(), (name, figure)
        for table in ("predictions.csv", "confusion_matrix.json", "classification_report.json", "roc.csv", "reliability.csv"):
            assert (paths.EVALUATION / name / table).exists(), (name, table)
    history = pd.concat([pd.read_csv(paths.TRAIN_HISTORY), pd.read_csv(paths.FINETUNE_HISTORY)])
    assert list(history.phase) == ["head"] * cfg.train.head.epochs + ["finetune"] * cfg.train.finetune.epochs
    assert list(history.epoch) == list(range(1, len(history) + 1))
    metrics = json.loads(paths.METRICS.read_text())
    assert metrics["test"]["n_images"] == 12 and 0 <= metrics["test"]["accuracy"] <= 1
    assert metrics["clean_test"]["n_images"] == 12  # generated images have no copies
    for key in ("roc_auc_ci_low", "balanced_accuracy", "ece", "brier", "sensitivity_at_specificity_90"):
        assert key in metrics["test"], key
    assert metrics["validation"]["n_images"] == 8
    report = paths.MODEL_REPORT.read_text()
    assert "Not a medical device" in report and "| ROC AUC |" in report and "clean_test" in report
    model = keras.saving.load_model(paths.MODEL)
    assert model.input.shape == (None, 32, 32, 3)
    legacy = keras.saving.load_model(paths.MODEL_H5, compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(legacy.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_features_stage_caches_views(trained):
    train_features = np.load(paths.FEATURES / "train.npy")
    assert train_features.dtype == np.float16 and train_features.shape[1] == trained.train.feature_views
    assert json.loads((paths.FEATURES / "info.json").read_text())["cut_layer"] == trained.model.frozen_until


def test_jitter_changes_the_cached_training_views_only(trained_with):
    before = {split: np.load(paths.FEATURES / f"{split}.npy") for split in ("train", "val")}
    features.main(trained_with("train.jitter.min_scale=0.25", "train.jitter.contrast=0.3"))
    np.testing.assert_array_equal(np.load(paths.FEATURES / "val.npy"), before["val"])
    assert np.abs(np.load(paths.FEATURES / "train.npy").astype(float) - before["train"]).mean() > 1e-3


def test_same_seed_and_data_give_the_same_metrics(trained):
    first = json.loads(paths.METRICS.read_text())  # the session's run of this config, copied here
    run_all(trained)
    assert json.loads(paths.METRICS.read_text()) == first


def test_train_seed_varies_training_alone(trained, trained_with):
    split = (paths.PREPARED / "val.csv").read_text()

    def head_weights(stage_cfg):
        train.main(stage_cfg)
        return keras.saving.load_model(paths.HEAD_MODEL).get_layer("classifier").get_weights()[0]

    default = keras.saving.load_model(paths.HEAD_MODEL).get_layer("classifier").get_weights()[0]
    np.testing.assert_array_equal(head_weights(trained_with(f"train.seed={trained.seed}")), default)
    reseeded = trained_with("train.seed=7")
    prepare.main(reseeded)
    assert (paths.PREPARED / "val.csv").read_text() == split
    assert not np.array_equal(head_weights(reseeded), default)


def test_finetune_trains_only_above_the_cut(trained):
    head = keras.saving.load_model(paths.HEAD_MODEL)
    final = keras.saving.load_model(paths.MODEL)
    for name, changed in (("block_1_expand", False), ("block_15_expand", True), ("block_15_expand_BN", False)):
        before = get_backbone(head).get_layer(name).get_weights()[0]
        after = get_backbone(final).get_layer(name).get_weights()[0]
        assert (not np.array_equal(before, after)) == changed, name


def test_source_weights_carry_the_class_weights_and_change_training(trained):
    from skin_cancer.models.training import image_sources, loss_weights, source_weights

    manifest = read_manifest(paths.PREPARED / "train.csv")
    # Every benign and half the malignant training images "found in" another collection: one source
    # with both classes, unbalanced, beside the data's own malignant images.
    positives = manifest.index[manifest.label_index == 1]
    manifest.loc[(manifest.label_index == 0) | manifest.index.isin(positives[::2]), "found_in"] = "ham10000"
    manifest.to_csv(paths.PREPARED / "train.csv", index=False)
    cfg = trained
    assert loss_weights(cfg, manifest, 2) == (None, None)
    cfg.train.class_weight = "balanced"
    per_class, weights = loss_weights(cfg, manifest, 2)
    assert weights is None and per_class[0] == pytest.approx(len(manifest) / (2 * (manifest.label_index == 0).sum()))
    cfg.train.source_weight = "balanced"
    # Keras takes class weights or per-image weights, not both: the per-image ones carry both.
    no_class_weights, weights = loss_weights(cfg, manifest, 2)
    by_source = source_weights(image_sources(manifest), manifest.label_index)
    assert no_class_weights is None and len(set(np.round(by_source, 6))) == 3
    np.testing.assert_allclose(weights, by_source * manifest.label_index.map(per_class).to_numpy())

    def head_weights():
        train.main(cfg)
        return keras.saving.load_model(paths.HEAD_MODEL).get_layer("classifier").get_weights()[0]

    cfg.train.class_weight = "none"
    weighted = head_weights()
    cfg.train.source_weight = "none"
    assert not np.allclose(weighted, head_weights())


def test_failed_stage_leaves_no_output(workspace, monkeypatch):
    cfg = workspace()
    audit.main(cfg)
    prepare.main(cfg)

    def boom(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(features, "compute_features", boom)
    with pytest.raises(RuntimeError):
        features.main(cfg)
    assert not paths.FEATURES.exists()
    assert not [p for p in paths.FEATURES.parent.iterdir() if p.name.startswith(".")]


def test_external_set_excludes_training_copies_and_gets_its_own_namespace(trained, trained_with, make_dataset, tmp_path):
    """An external class-folder set with copies of training images and a label to map: copies are
    excluded and counted, the rest scored under the set's own metrics and figures."""
    import shutil

    from PIL import Image

    external = make_dataset(train=0, test=5, seed=11, name="external") / "test"
    external.rename(tmp_path / "ext")
    external = tmp_path / "ext"
    (external / "malignant").rename(external / "mel")
    (external / "benign").rename(external / "nv")
    (external / "bkl").mkdir()
    shutil.copy(external / "nv" / "0.jpg", external / "bkl" / "0.jpg")
    training = trained.data.root + "/train/benign/3.jpg"
    Image.open(training).transpose(Image.Transpose.ROTATE_90).save(external / "nv" / "copy_of_train.png")
    # Formats and modes tf.data cannot decode as they are: converted, then scored like the rest.
    Image.open(external / "mel" / "1.jpg").save(external / "mel" / "scan.tiff")
    Image.open(external / "nv" / "1.jpg").convert("CMYK").save(external / "nv" / "cmyk.jpg")
    (external / "nv" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    cfg = trained_with(
        f"+evaluate.external.ext.root={external}",
        "+evaluate.external.ext.label_map={mel: malignant, nv: benign, bkl: null}",
        "+evaluate.external.ext.recalibration_sample=4",
    )
    evaluate.main(cfg)
    report.main(cfg)
    metrics = json.loads(paths.METRICS.read_text())
    record = json.loads((paths.EVALUATION / "ext" / "exclusions.json").read_text())
    assert record["left_out_by_label_map"] == 1
    excluded = pd.read_csv(paths.EVALUATION / "ext" / "excluded.csv")
    assert list(excluded.key) == ["nv/broken.jpg", "nv/copy_of_train.png"]
    assert record["excluded"] == {"copy of a training image": 1, "unreadable": 1}
    assert metrics["ext"]["n_images"] == 12 and metrics["ext"]["excluded"] == 2
    scored = pd.read_csv(paths.EVALUATION / "ext" / "predictions.csv")
    assert {"mel/scan.tiff", "nv/cmyk.jpg"} <= {p.split("ext/")[1] for p in scored.path}
    assert (paths.FIGURES / "ext_roc.png").exists() and "ext" in paths.MODEL_REPORT.read_text()
    # Threshold transfer, and the operating point re-fitted on a labelled sample scored on the rest.
    assert metrics["ext"]["specificity_shift_from_validation"] == pytest.approx(
        metrics["ext"]["specificity"] - metrics["validation"]["specificity"]
    )
    again = metrics["ext_recalibrated"]
    assert again["sample_images"] == 4 and again["n_images"] == 12 - 4
    assert again["specificity_gain"] == pytest.approx(again["specificity"] - again["frozen_specificity"])
    rest = pd.read_csv(paths.EVALUATION / "ext_recalibrated" / "predictions.csv")
    assert len(rest) == 8 and set(rest.path) < set(scored.path)


def test_unmapped_external_labels_fail_the_evaluate_stage(trained_with, make_dataset):
    cfg = trained_with(
        f"+evaluate.external.ext.root={make_dataset(train=1, test=2, name='ext2')}",
        "+evaluate.external.ext.label_map={malignant: malignant}",
    )
    from skin_cancer.errors import DataError

    with pytest.raises(DataError, match=r"unmapped: \['benign'\]"):
        evaluate.main(cfg)


@pytest.mark.parametrize("as_data", [True, False], ids=["csv-collection-as-data", "csv-collection-as-source"])
def test_a_lesion_collection_runs_every_stage_with_its_test_lesions_held_out(workspace, tmp_path, as_data):
    """A HAM10000-like collection as the data (test part cut by lesion) or as a second training
    source beside the Kaggle-layout data (its test part held out, scored as an external set)."""
    ham = make_csv_collection(tmp_path / "ham", {"mel": 10, "nv": 10, "bkl": 5})
    label_map = "{mel: malignant, nv: benign, bkl: benign}"
    if as_data:
        overrides = [f"data.root={ham}", f"data.label_map={label_map}"]
    else:
        overrides = [f"+data.sources.ham.root={ham}", f"+data.sources.ham.label_map={label_map}"]
    cfg = workspace(
        *overrides,
        f"+evaluate.external.ham_test.root={ham}",
        "+evaluate.external.ham_test.split=test",
        f"+evaluate.external.ham_test.label_map={label_map}",
    )
    run_all(cfg)
    train, val, test = (read_manifest(paths.PREPARED / f"{s}.csv") for s in ("train", "val", "test"))
    lesion = lambda frame: set(frame.source.str.extract(r"images/(\w+_\d+)_\d\.jpg")[0].dropna())  # noqa: E731
    held_out = lesion(pd.read_csv(paths.EVALUATION / "ham_test" / "predictions.csv").rename(columns={"path": "source"}))
    assert len(held_out) == 5  # a fifth of the 25 lesions
    assert not held_out & lesion(pd.concat([train, val]))
    assert (lesion(test) == held_out) if as_data else set(test.collection) == {"data"}
    report = json.loads(paths.PREPARE_REPORT.read_text())
    assert set(report["collections"]) == ({"data"} if as_data else {"data", "ham"})
    metrics = json.loads(paths.METRICS.read_text())
    assert metrics["ham_test"]["n_images"] == 10 and metrics["ham_test"]["excluded"] == 0


def test_a_uniform_class_prior_is_fitted_with_the_operating_point_and_used_everywhere(trained_three_classes):
    """evaluate.class_prior=uniform: calibrate stores each class's training share, and the evaluate
    stage, the served classifier and the report all divide it out."""
    from skin_cancer.operating_point import OperatingPoint
    from skin_cancer.serving.classifier import load_classifier
    from skin_cancer.stages import calibrate, evaluate, report

    cfg = trained_three_classes
    before = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv")
    cfg.evaluate.class_prior = "uniform"
    for stage in (calibrate, evaluate, report):
        stage.main(cfg)
    op = OperatingPoint.load(paths.OPERATING_POINT)
    train_labels = read_manifest(paths.PREPARED / "train.csv").label
    assert op.class_prior == pytest.approx([(train_labels == c).mean() for c in op.class_names])
    after = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv")
    columns = [f"probability_{c}" for c in op.class_names]
    expected = before[columns].to_numpy() / op.class_prior
    np.testing.assert_allclose(after[columns], expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    served = load_classifier(paths.MODEL).predict(list(after.path[:3]))
    for row, result in zip(after[columns].to_numpy(), served):
        assert [result["probabilities"][c] for c in op.class_names] == pytest.approx(row, abs=1e-5)
    assert "uniform class prior" in paths.MODEL_REPORT.read_text()


def test_three_generated_classes_run_every_stage(trained_three_classes):
    """A K-class model (softmax, argmax, temperature on logits) through every stage, with a
    malignant/benign-labelled external set scored through its malignant score."""
    cfg = trained_three_classes
    ham = Path(cfg.data.root)
    op = json.loads(paths.OPERATING_POINT.read_text())
    assert op["class_names"] == ["bkl", "mel", "nv"] and op["threshold"] is None and op["threshold_policy"] == "argmax"
    assert keras.saving.load_model(paths.MODEL).output_shape == (None, 3)
    metrics = json.loads(paths.METRICS.read_text())
    test = metrics["test"]
    assert test["n_images"] == len(read_manifest(paths.PREPARED / "test.csv"))
    keys = ("balanced_accuracy", "balanced_accuracy_ci_low", "macro_auc", "top_label_ece", "mel.sensitivity", "malignant.roc_auc")
    for key in keys:
        assert test[key] is not None, key
    predictions = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv")
    assert {"probability_bkl", "probability_mel", "probability_nv"} <= set(predictions.columns)
    np.testing.assert_allclose(predictions.filter(like="probability_").sum(axis=1), 1.0, atol=1e-4)
    confusion = json.loads((paths.EVALUATION / "test" / "confusion_matrix.json").read_text())
    assert np.asarray(confusion["matrix"]).shape == (3, 3) and (paths.FIGURES / "test_confusion_matrix.png").exists()
    binary = json.loads((paths.EVALUATION / "binary" / "exclusions.json").read_text())
    assert binary["scored_as"] == "malignant_score" and metrics["binary"]["roc_auc"] is not None
    report = paths.MODEL_REPORT.read_text()
    assert "| balanced accuracy |" in report and "| mel: sensitivity |" in report and "argmax" in report
    # Using the model: the top class, every class's probability, the top three, the malignant score.
    from skin_cancer.serving.classifier import load_classifier

    result = load_classifier(paths.MODEL).predict([predictions.path.iloc[0]])[0]
    assert result["label"] in op["class_names"] and result["threshold"] is None
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert [t["label"] for t in result["top3"]][0] == result["label"]
    assert result["malignant_score"] == pytest.approx(result["probabilities"]["mel"])
    from skin_cancer.cli import main as cli

    assert cli(["predict", str(ham / "images"), "--out", "k.csv"]) == 0
    table = pd.read_csv("k.csv")
    assert {"probability_bkl", "probability_mel", "probability_nv", "top3"} <= set(table.columns) and len(table) == 72
    assert cli(["explain", predictions.path.iloc[0], "--class", "nv", "--out", "maps"]) == 0
    assert len(list(Path("maps").glob("*_gradcam.png"))) == 1
    assert cli(["explain", predictions.path.iloc[0], "--class", "melanoma"]) == 2  # not a class of the model: a usage error
    # Tracked: one run with the per-class metrics, and a served model that answers with every class.
    import base64

    import mlflow

    from skin_cancer.stages.track import publish

    write_params(cfg)
    logged = publish(cfg)
    mlflow.set_tracking_uri(logged["tracking_uri"])
    run = mlflow.get_run(logged["run_id"])
    assert {"test.balanced_accuracy", "test.macro_auc", "test.mel.sensitivity", "binary.roc_auc"} <= set(run.data.metrics)
    served = mlflow.pyfunc.load_model(f"runs:/{logged['run_id']}/serving")
    encoded = base64.b64encode(open(predictions.path.iloc[0], "rb").read()).decode()
    answer = served.predict(pd.DataFrame({"image": [encoded]}))
    assert json.loads(answer.probabilities.iloc[0]).keys() == set(op["class_names"])


def test_frozen_batchnorm_statistics_do_not_move_during_training(classifier):
    unfreeze(classifier, "block_12_add", freeze_batchnorm=True)
    compile_classifier(classifier, 1e-2)
    bn = get_backbone(classifier).get_layer("block_15_expand_BN")
    before = [w.numpy().copy() for w in bn.weights]
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    classifier.fit(x, np.arange(8) % 2, epochs=2, verbose=0)
    for old, new in zip(before, bn.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_the_stress_test_scores_the_clean_test_images_under_each_change(trained_with):
    """evaluate.stress: one set per change with its move from the clean test, in the metrics (so in
    MLflow) and the model report; no tables or figures of its own; unknown names refused by name."""
    before = json.loads(paths.METRICS.read_text())
    cfg = trained_with("evaluate.stress=[vignette_r0.8_hard,jpeg_50]")
    evaluate.main(cfg)
    report.main(cfg)
    metrics = json.loads(paths.METRICS.read_text())
    for name in ("vignette_r0.8_hard", "jpeg_50"):
        m = metrics[f"stress_{name}"]
        assert m["n_images"] == metrics["clean_test"]["n_images"]
        assert m["specificity_change"] == pytest.approx(m["specificity"] - metrics["clean_test"]["specificity"])
        assert not (paths.EVALUATION / f"stress_{name}").exists()
    # A hard vignette is not a no-op: the model sees other pixels (its probabilities move).
    assert metrics["stress_vignette_r0.8_hard"]["brier"] != metrics["clean_test"]["brier"]
    assert {k: v for k, v in metrics.items() if not k.startswith("stress_")} == before
    text = paths.MODEL_REPORT.read_text()
    assert "## Shortcut stress test" in text and "| vignette_r0.8_hard |" in text
    with pytest.raises(DataError, match=r"evaluate.stress: unknown \['vignette_big'\]"):
        evaluate.main(trained_with("evaluate.stress=[vignette_big]"))

"""DVC stage `evaluate`: the final model on the test manifest, at a threshold fixed in advance or
chosen on validation -> metrics, confusion matrix, ROC, classification report, predictions and
training curves."""
import keras
import pandas as pd

from skin_cancer import evaluation as ev
from skin_cancer import paths
from skin_cancer.config import Config
from skin_cancer.data import read_manifest
from skin_cancer.io import atomic_dir, read_json, write_json
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    report = read_json(paths.PREPARE_REPORT)
    class_names = [*report["negative_classes"], report["positive_class"]]
    test = read_manifest(paths.PREPARED / "test.csv")
    model = keras.saving.load_model(paths.MODEL)
    threshold = cfg.evaluate.threshold
    if cfg.evaluate.threshold_policy != "fixed":
        val = read_manifest(paths.PREPARED / "val.csv")
        val_prob = ev.predict_probabilities(model, val.path, cfg.data.image_size, cfg.evaluate)
        threshold = ev.choose_threshold(val.label_index, val_prob, cfg.evaluate)
    prob = ev.predict_probabilities(model, test.path, cfg.data.image_size, cfg.evaluate)
    metrics = ev.binary_metrics(test.label_index, prob, threshold)
    metrics.update(ev.ranking_metrics(
        test.label_index, prob, target_specificity=cfg.evaluate.target_specificity,
        target_sensitivity=cfg.evaluate.target_sensitivity, n_resamples=cfg.evaluate.bootstrap_resamples,
        seed=cfg.seed))
    metrics["threshold_policy"] = cfg.evaluate.threshold_policy
    # The conventional 0.5 threshold too, so that a chosen threshold never hides what 0.5 gives.
    metrics["at_0.5"] = {k: v for k, v in ev.binary_metrics(test.label_index, prob, 0.5).items()
                         if k in ("accuracy", "sensitivity", "specificity")}
    confusion = ev.confusion(test.label_index, prob, threshold, class_names)
    roc = ev.roc_points(test.label_index, prob)
    history = pd.concat([pd.read_csv(paths.TRAIN_HISTORY), pd.read_csv(paths.FINETUNE_HISTORY)], ignore_index=True)
    predictions = pd.DataFrame({
        "path": test.source, "actual": test.label, "probability": prob,
        "predicted": [class_names[int(p >= threshold)] for p in prob],
    })
    with atomic_dir(paths.EVALUATION) as out:
        write_json(out / "confusion_matrix.json", confusion)
        write_json(out / "classification_report.json", ev.report(test.label_index, prob, threshold, class_names))
        predictions.to_csv(out / "predictions.csv", index=False)
        roc.to_csv(out / "roc.csv", index=False)
        ev.plot_confusion(confusion, out / "confusion_matrix.png")
        ev.plot_roc(roc, metrics["roc_auc"], out / "roc.png")
        ev.plot_history(history, out / "training_curves.png")
    write_json(paths.METRICS, ev.json_safe(metrics))
    print(ev.summary_table(metrics))


if __name__ == "__main__":
    run_stage(main)

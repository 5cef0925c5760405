"""Scoring the final model: the test split, its clean subset, its per-source subsets and every
external set, each with its metrics, tables and figures (what the `evaluate` stage writes)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn.metrics as skm

from skin_cancer.data import copies, shifts
from skin_cancer.data.collections import other_collections
from skin_cancer.data.external import external_set
from skin_cancer.data.prepare import read_manifest
from skin_cancer.errors import DataError
from skin_cancer.evaluation import calibration, explain, outputs
from skin_cancer.evaluation import figures as figures_
from skin_cancer.evaluation import metrics as ev
from skin_cancer.evaluation import multiclass as mc
from skin_cancer.io import write_json
from skin_cancer.models import inference
from skin_cancer.operating_point import OperatingPoint
from skin_cancer.schema import Config

# The classes of a set scored through a K-class model's malignant score (label index 0, 1).
MALIGNANT_SCORE_CLASSES = ["benign", "malignant"]
# Sets `stress_<name>`: the clean test images under a stress of skin_cancer.data.shifts.
STRESS = "stress_"


def scored_sets(
    cfg: Config, model, op: OperatingPoint, prepared: Path
) -> tuple[dict[str, tuple[pd.DataFrame, np.ndarray]], dict]:
    """{set name: (frame, calibrated probability)} for test, clean test, the per-source subsets and
    each external set (training copies removed), and each external set's exclusion record; the
    manifests are `prepared`'s."""
    predictor = inference.compile_predictor(model, op.tta_views, op.runtime)

    def predict(frame, name):
        raw = inference.predict_files(predictor, frame.path, cfg.data.image_size, cfg.evaluate.batch_size, f"evaluate: {name}")
        return calibration.apply_temperature(raw, op.temperature, op.class_prior)

    test = read_manifest(prepared / "test.csv")
    test_prob = predict(test, "test")
    clean = (test.leak == "").to_numpy()
    sets = {"test": (test, test_prob), "clean_test": (test[clean].reset_index(drop=True), test_prob[clean])}
    for base, (frame, prob) in list(sets.items()) if not op.multiclass else []:
        for name, mask in ev.source_subsets(frame, other_collections(cfg), base).items():
            sets[name] = (frame[mask].reset_index(drop=True), prob[mask])
    clean_frame = sets["clean_test"][0]
    for name in cfg.evaluate.stress:
        with tempfile.TemporaryDirectory() as folder:
            stressed = clean_frame.assign(path=shifts.write_stressed(clean_frame.path, name, Path(folder)))
            sets[f"{STRESS}{name}"] = (stressed, predict(stressed, f"stress {name}"))
    records = {}
    if cfg.evaluate.external:
        training = pd.concat([read_manifest(prepared / f"{s}.csv") for s in ("train", "val")])
        training_prints = copies.fingerprint(
            list(training.path), cfg.audit.workers, cfg.data.max_image_pixels, "evaluate: hashing train/val"
        )
        for name, spec in cfg.evaluate.external.items():
            with tempfile.TemporaryDirectory() as converted:
                frame, found = external_set(
                    name,
                    spec,
                    cfg.data,
                    training_prints,
                    op.class_names,
                    Path(converted),
                    derived=bool(op.malignant_classes),
                    seed=cfg.seed,
                    candidate_distance=cfg.audit.candidate_distance,
                    min_correlation=cfg.audit.min_correlation,
                    workers=cfg.audit.workers,
                )
                prob = predict(frame, name)
                if found["record"]["scored_as"] == "malignant_score":
                    prob = mc.malignant_score(prob, op.class_names, op.malignant_classes)
                sets[name] = (frame, prob)
            records[name] = found
    return sets, records


def score(cfg: Config, model, op: OperatingPoint, prepared: Path, out: Path, figures: Path) -> dict:
    """Metrics of every scored set of the manifests in `prepared` (one namespace each; validation's
    and its per-source subsets' come from the operating point), with tables under `out/<set>/` and
    figures under `figures/`; returns the metrics."""
    class_names, threshold = op.class_names, op.threshold
    refit = [name for name, spec in cfg.evaluate.external.items() if spec.recalibration_sample]
    if op.multiclass and refit:
        raise DataError(f"evaluate.external.{refit[0]}.recalibration_sample: re-fitting a threshold needs a binary model")
    if op.multiclass and cfg.evaluate.stress:
        raise DataError("evaluate.stress: the stress test scores specificity at a binary model's threshold; set it to []")
    # Checked here, not in the schema: every stage reads the schema, only this one the stresses.
    unknown = [name for name in cfg.evaluate.stress if name not in shifts.STRESSES or name == "none"]
    if unknown:
        raise DataError(f"evaluate.stress: unknown {unknown}; the stresses are {[n for n in shifts.STRESSES if n != 'none']}")
    sets, records = scored_sets(cfg, model, op, prepared)
    metrics = {"validation": op.validation, **op.validation_by_source}
    bins = cfg.evaluate.calibration_bins
    for name, (frame, prob) in sets.items():
        if outputs.is_class_matrix(prob):
            metrics[name] = mc.multiclass_metrics(
                frame.label_index,
                prob,
                class_names,
                malignant=op.malignant_classes or [],
                bins=bins,
                resamples=cfg.evaluate.bootstrap_resamples,
                seed=cfg.seed,
                groups=frame.group,
            )
            metrics[name].update(threshold_policy=op.threshold_policy, temperature=op.temperature)
            write_multiclass_set(name, frame, prob, class_names, out, figures)
            continue
        # A binary model's threshold; a K-class model scored through its malignant score: 0.5.
        set_threshold, set_classes = (threshold, class_names) if not op.multiclass else (0.5, MALIGNANT_SCORE_CLASSES)
        # Intervals resample lesions / copy clusters (the audit's groups), not images.
        metrics[name] = ev.set_metrics(frame.label_index, prob, set_threshold, cfg.evaluate, cfg.seed, groups=frame.group)
        metrics[name].update(threshold_policy=op.threshold_policy, temperature=op.temperature)
        if name.startswith(STRESS):  # numbers only: the clean test's tables and figures show the images
            for key in ("roc_auc", "sensitivity", "specificity"):
                metrics[name][f"{key}_change"] = metrics[name][key] - metrics["clean_test"][key]
            continue
        write_set(name, frame, prob, set_threshold, metrics[name], set_classes, bins, out, figures)
    for name, found in records.items():
        write_json(out / name / "exclusions.json", found["record"])
        found["excluded"].to_csv(out / name / "excluded.csv", index=False)
        metrics[name]["excluded"] = sum(found["record"]["excluded"].values())
        # Threshold transfer: how far the validation-frozen operating point moves on a new collection.
        for key in ("sensitivity", "specificity", "balanced_accuracy"):
            if metrics[name].get(key) is not None and op.validation.get(key) is not None:
                metrics[name][f"{key}_shift_from_validation"] = metrics[name][key] - op.validation[key]
        size = cfg.evaluate.external[name].recalibration_sample
        if size:
            frame, prob = sets[name]
            new, rest, rest_prob = recalibrated_set(frame, prob, size, cfg, threshold)
            metrics[f"{name}_recalibrated"] = new
            bins = cfg.evaluate.calibration_bins
            write_set(f"{name}_recalibrated", rest, rest_prob, new["threshold"], new, class_names, bins, out, figures)
    test, test_prob = sets["test"]
    explain.gradcam_grid(model, test, test_prob, threshold, class_names, cfg.data.image_size, figures / "test_gradcam.png")
    return ev.json_safe(metrics)


def recalibrated_set(frame: pd.DataFrame, prob, size: int, cfg: Config, frozen_threshold: float):
    """(metrics, frame, probabilities) of an external set's images outside a labelled recalibration
    sample, at a temperature and threshold re-fitted on that sample; the metrics carry the frozen
    operating point's numbers on the same images (`frozen_*`) and the gain."""
    y, groups = frame.label_index.to_numpy(), frame.group.to_numpy()
    sample = calibration.recalibration_sample(y, groups, size, cfg.seed)
    temperature, threshold = calibration.recalibrate(y[sample], prob[sample], cfg.evaluate)
    rest_prob = calibration.apply_temperature(prob[~sample], temperature)
    metrics = ev.set_metrics(y[~sample], rest_prob, threshold, cfg.evaluate, cfg.seed, groups=groups[~sample])
    frozen = ev.binary_metrics(y[~sample], prob[~sample], frozen_threshold)
    frozen.update(calibration.calibration_metrics(y[~sample], prob[~sample], cfg.evaluate.calibration_bins))
    metrics.update(temperature=temperature, sample_images=int(sample.sum()), sample_lesions=len(set(groups[sample])))
    for key in ("accuracy", "sensitivity", "specificity", "balanced_accuracy", "ece"):
        metrics[f"frozen_{key}"] = frozen[key]
        metrics[f"{key}_gain"] = metrics[key] - frozen[key]
    return metrics, frame[~sample].reset_index(drop=True), rest_prob


def write_multiclass_set(name: str, frame: pd.DataFrame, prob: np.ndarray, class_names: list[str], out: Path, figures: Path):
    """Predictions (every class's probability), the K x K confusion matrix (counts; a row-normalised
    figure) and the classification report of one K-class set under `out/<name>/` and `figures/`."""
    y_true, predicted = frame.label_index.to_numpy(), outputs.predicted_classes(prob, None)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"path": frame.source, "actual": frame.label, "predicted": np.asarray(class_names)[predicted]})
    for k, label in enumerate(class_names):
        table[f"probability_{label}"] = np.round(prob[:, k], 6)
    table.to_csv(folder / "predictions.csv", index=False)
    conf = {"labels": class_names, "matrix": mc.confusion_counts(y_true, prob).tolist()}
    write_json(folder / "confusion_matrix.json", conf)
    labels = list(range(len(class_names)))
    report = skm.classification_report(
        y_true, predicted, labels=labels, target_names=class_names, output_dict=True, zero_division=0
    )
    write_json(folder / "classification_report.json", report)
    figures_.plot_confusion(conf, figures / f"{name}_confusion_matrix.png", f"Confusion matrix ({name}), rows sum to 1", True)


def write_set(
    name: str,
    frame: pd.DataFrame,
    prob,
    threshold: float,
    metrics: dict,
    class_names: list[str],
    bins: int,
    out: Path,
    figures: Path,
) -> None:
    """Predictions, confusion matrix, classification report, ROC and reliability tables of one set
    under `out/<name>/`, and its figures as `figures/<name>_*.png`."""
    y_true = frame.label_index.to_numpy()
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "path": frame.source,
            "actual": frame.label,
            "probability": np.round(prob, 6),
            "predicted": np.asarray(class_names)[outputs.predicted_classes(prob, threshold)],
        }
    ).to_csv(folder / "predictions.csv", index=False)
    conf = ev.confusion(y_true, prob, threshold, class_names)
    write_json(folder / "confusion_matrix.json", conf)
    write_json(folder / "classification_report.json", ev.report(y_true, prob, threshold, class_names))
    table = calibration.reliability(y_true, prob, bins)
    table.to_csv(folder / "reliability.csv", index=False)
    figures_.plot_confusion(conf, figures / f"{name}_confusion_matrix.png", f"Confusion matrix ({name})")
    figures_.plot_reliability(table, metrics, figures / f"{name}_reliability.png", name)
    if metrics.get("roc_auc") is not None and not np.isnan(metrics["roc_auc"]):
        points = ev.roc_points(y_true, prob)
        points.to_csv(folder / "roc.csv", index=False)
        figures_.plot_roc(points, metrics["roc_auc"], figures / f"{name}_roc.png", name)
        figures_.plot_pr(y_true, prob, metrics["pr_auc"], figures / f"{name}_pr.png", name)

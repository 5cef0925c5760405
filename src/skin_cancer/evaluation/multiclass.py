"""Metrics of a K-class classifier (K >= 2) from its class probabilities: balanced multi-class
accuracy (the ISIC 2018 Task 3 ranking metric: mean per-class recall), per-class sensitivity,
specificity, precision, F1 and one-vs-rest ROC AUC, macro AUC, top-label calibration error, the
K x K confusion matrix, lesion-grouped bootstrap intervals, and a derived malignant-vs-benign score
(the summed probability of the malignant classes) with the binary metrics, so multi-class and binary
models compare on one scale. Decisions are the argmax."""

from __future__ import annotations

import numpy as np

from skin_cancer.evaluation.metrics import bootstrap_ci, roc_auc
from skin_cancer.evaluation.outputs import predicted_classes


def class_shares(label_index, k: int) -> list[float]:
    """Each of the K classes' share of the labels; a class without any is an error (its prior would be 0)."""
    counts = np.bincount(np.asarray(label_index, dtype=int), minlength=k)
    if not counts.all():
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no training image: no class prior to divide out")
    return (counts / counts.sum()).tolist()


def balanced_accuracy(y_true, prob) -> float:
    """Mean recall over the classes present in `y_true` (scikit-learn's balanced_accuracy_score,
    without its warning when a resample lacks a class that is still predicted)."""
    counts = confusion_counts(y_true, prob)
    present = counts.sum(axis=1) > 0
    return float((counts.diagonal()[present] / counts.sum(axis=1)[present]).mean())


def macro_auc(y_true, prob) -> float:
    """Unweighted mean of the one-vs-rest ROC AUCs over the K classes (every class must be present):
    scikit-learn's roc_auc_score(multi_class="ovr", average="macro")."""
    y_true, prob = np.asarray(y_true), np.asarray(prob)
    return float(np.mean([roc_auc(y_true == k, prob[:, k]) for k in range(prob.shape[1])]))


def confusion_counts(y_true, prob) -> np.ndarray:
    """K x K counts: rows are true classes, columns predicted ones (scikit-learn's confusion_matrix,
    without the input checks that dominate when the bootstrap asks for it a thousand times)."""
    k = np.shape(prob)[1]
    return np.bincount(np.asarray(y_true).astype(int) * k + predicted_classes(prob, None), minlength=k * k).reshape(k, k)


def per_class(y_true, prob, classes: list[str]) -> dict[str, dict[str, float]]:
    """{class: n, sensitivity, specificity, precision, f1, roc_auc (one vs rest)}; a value that is
    undefined on this set (no image of the class, no call of it) is None."""
    y_true, prob = np.asarray(y_true), np.asarray(prob)
    counts = confusion_counts(y_true, prob)
    total = counts.sum()
    out = {}
    for k, name in enumerate(classes):
        tp = counts[k, k]
        fn, fp = counts[k].sum() - tp, counts[:, k].sum() - tp
        tn = total - tp - fn - fp
        ratio = lambda a, b: float(a / b) if b else None  # noqa: E731
        precision, sensitivity = ratio(tp, tp + fp), ratio(tp, tp + fn)
        positives = y_true == k
        out[name] = {
            "n": int(positives.sum()),
            "sensitivity": sensitivity,
            "specificity": ratio(tn, tn + fp),
            "precision": precision,
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "roc_auc": roc_auc(positives, prob[:, k]) if 0 < positives.sum() < len(y_true) else None,
        }
    return out


def top_label_ece(y_true, prob, bins: int) -> float:
    """Expected calibration error of the top label: |confidence - accuracy| of the argmax class,
    weighted over equal-width confidence bins."""
    prob = np.asarray(prob)
    confidence = prob.max(axis=1)
    correct = predicted_classes(prob, None) == np.asarray(y_true)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = sum(abs(confidence[which == b].mean() - correct[which == b].mean()) * (which == b).sum() for b in np.unique(which))
    return float(gap / len(prob))


def malignant_score(prob, classes: list[str], malignant: list[str]) -> np.ndarray:
    """The probability that a lesion is malignant: the sum over the malignant classes."""
    unknown = sorted(set(malignant) - set(classes))
    if unknown:
        raise ValueError(f"malignant classes {unknown} are not classes of the model {classes}")
    return np.asarray(prob)[:, [classes.index(c) for c in malignant]].sum(axis=1)


def multiclass_metrics(
    y_true, prob, classes: list[str], *, malignant: list[str], bins: int, resamples: int, seed: int, groups=None
) -> dict:
    """Everything reported for one K-class set, flat (MLflow-ready): accuracy, balanced_accuracy and
    macro_auc with intervals (resampling `groups` where known; none when `resamples` is 0), also as
    `roc_auc` (what the champion alias compares), top_label_ece, `<class>.<metric>` per
    class, and `malignant.roc_auc` / `.sensitivity` / `.specificity` (at 0.5) of the derived score."""
    y_true, prob = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    all_present = len(np.unique(y_true)) == len(classes)
    metrics: dict = {
        "n_images": int(len(y_true)),
        "accuracy": float((predicted_classes(prob, None) == y_true).mean()),
        "balanced_accuracy": balanced_accuracy(y_true, prob),
        "macro_auc": macro_auc(y_true, prob) if all_present else None,
        "top_label_ece": top_label_ece(y_true, prob, bins),
    }
    metrics["roc_auc"] = metrics["macro_auc"]
    for key, statistic in (("balanced_accuracy", balanced_accuracy), ("macro_auc", macro_auc)):
        if metrics[key] is not None and resamples:
            low, high = bootstrap_ci(y_true, prob, statistic, n_resamples=resamples, seed=seed, groups=groups)
            metrics.update({f"{key}_ci_low": low, f"{key}_ci_high": high})
    for name, values in per_class(y_true, prob, classes).items():
        metrics.update({f"{name}.{key}": value for key, value in values.items()})
    if malignant:
        score = malignant_score(prob, classes, malignant)
        is_malignant = np.isin(np.asarray(classes)[y_true], malignant)
        called = score >= 0.5
        metrics["malignant.n_positive"] = int(is_malignant.sum())
        if 0 < is_malignant.sum() < len(y_true):
            metrics["malignant.roc_auc"] = roc_auc(is_malignant, score)
            metrics["malignant.sensitivity"] = float(called[is_malignant].mean())
            metrics["malignant.specificity"] = float((~called[~is_malignant]).mean())
    return metrics

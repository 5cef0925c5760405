"""Metrics of a scored set: threshold and ranking metrics, lesion-level bootstrap intervals,
per-source subsets (scikit-learn and numpy; pure functions, no files). Calibration and the
threshold are evaluation.calibration's."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skin_cancer.evaluation.calibration import calibration_metrics
from skin_cancer.evaluation.outputs import predicted_classes
from skin_cancer.schema import EvaluateConfig


def binary_metrics(y_true, prob, threshold: float) -> dict[str, float]:
    """Accuracy, ROC AUC, sensitivity, specificity and friends for a positive-class probability."""
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    y_pred = predicted_classes(prob, threshold)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    ratio = lambda a, b: float(a / b) if b else float("nan")  # noqa: E731
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "roc_auc": roc_auc(y_true, prob) if both_classes else float("nan"),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)) if both_classes else float("nan"),
        "threshold": float(threshold),
        "n_images": int(len(y_true)),
        "n_positive": int(y_true.sum()),
    }


def roc_counts(y_true, prob) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (false positives, true positives) at every distinct threshold, highest first.

    scikit-learn's roc_curve computes the same, but its input checks cost thirty times the curve
    itself, and the bootstrap asks for thousands of curves per set. Unlike roc_curve (which drops
    collinear points by default) every threshold is kept, so the operating points below are the
    achievable ones even where tied probabilities make a diagonal step."""
    y_true, prob = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    if np.isnan(prob).any():  # scikit-learn refused these; a sort would rank them silently
        raise ValueError(f"{int(np.isnan(prob).sum())} of {len(prob)} probabilities are NaN")
    order = np.argsort(-prob, kind="mergesort")
    distinct = np.r_[np.flatnonzero(np.diff(prob[order])), len(prob) - 1]
    true_positives = np.cumsum(y_true[order])[distinct]
    return distinct + 1 - true_positives, true_positives


def roc_rates(y_true, prob) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) from (0, 0) through every threshold to (1, 1)."""
    return _rates(*roc_counts(y_true, prob))


def _rates(false_positives, true_positives) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[0, false_positives / false_positives[-1]], np.r_[0, true_positives / true_positives[-1]]


def roc_auc(y_true, prob) -> float:
    """Area under the ROC curve (trapezoids, ties as half), equal to scikit-learn's roc_auc_score."""
    fpr, tpr = roc_rates(y_true, prob)
    return float(np.trapezoid(tpr, fpr))


def curve_statistics(target_specificity: float, target_sensitivity: float):
    """A function (labels, probabilities) -> the threshold-free metrics, ROC AUC, PR AUC (average
    precision), sensitivity at `target_specificity` and specificity at `target_sensitivity`, all read
    off one ROC curve: the bootstrap sorts each resample once, not once per metric."""
    sensitivity_name = f"sensitivity_at_specificity_{round(target_specificity * 100)}"
    specificity_name = f"specificity_at_sensitivity_{round(target_sensitivity * 100)}"

    def statistics(y_true, prob) -> dict[str, float]:
        false_positives, true_positives = roc_counts(y_true, prob)
        fpr, tpr = _rates(false_positives, true_positives)
        gained = np.diff(np.r_[0, true_positives / true_positives[-1]])
        return {
            "roc_auc": float(np.trapezoid(tpr, fpr)),
            "pr_auc": float(np.sum(gained * true_positives / (true_positives + false_positives))),
            sensitivity_name: float(tpr[1 - fpr >= target_specificity].max()),
            specificity_name: float((1 - fpr[tpr >= target_sensitivity]).max()),
        }

    return statistics


def group_sampler(groups):
    """A function rng -> indices of one bootstrap resample that draws whole groups with replacement
    (all images of a drawn group, once per draw): images of one lesion or copy cluster are not
    independent. The groups' layout is worked out once, not once per resample."""
    codes = pd.factorize(pd.Series(groups), sort=False)[0]
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.cumsum(sizes) - sizes

    def draw(rng: np.random.Generator) -> np.ndarray:
        pick = rng.integers(0, len(sizes), len(sizes))
        lengths = sizes[pick]
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return order[np.repeat(starts[pick], lengths) + within]

    return draw


def bootstrap_intervals(
    y_true, prob, statistics, *, n_resamples: int, seed: int, level: float = 0.95, groups=None
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence interval of each value of `statistics(y_true, prob)` (a dict,
    seeded), resampling `groups` (lesions, copy clusters) with replacement where given, else images;
    resamples that lack a class of the set are redrawn. Every value is read off the same resamples.
    `prob`: (n,) binary or (n, K) class probabilities."""
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    present = len(np.unique(y_true))
    draw = group_sampler(np.arange(len(y_true)) if groups is None else np.asarray(groups))
    rng = np.random.default_rng(seed)
    values = []
    while len(values) < n_resamples:
        idx = draw(rng)
        if len(np.unique(y_true[idx])) == present:
            values.append(statistics(y_true[idx], prob[idx]))
    names = list(values[0])
    low, high = np.quantile([[value[name] for name in names] for value in values], [(1 - level) / 2, (1 + level) / 2], axis=0)
    return {name: (float(low[i]), float(high[i])) for i, name in enumerate(names)}


def bootstrap_ci(y_true, prob, statistic, **kwargs) -> tuple[float, float]:
    """`bootstrap_intervals` of one statistic (labels, probabilities) -> float."""
    return bootstrap_intervals(y_true, prob, lambda y, p: {"value": statistic(y, p)}, **kwargs)["value"]


def operating_point_statistics(threshold: float):
    """A function (labels, probabilities) -> accuracy, sensitivity, specificity and balanced accuracy
    at a frozen threshold, for the bootstrap."""

    def statistics(y, p) -> dict[str, float]:
        called = predicted_classes(p, threshold) == 1
        sensitivity, specificity = float(np.mean(called[y == 1])), float(np.mean(~called[y == 0]))
        return {
            "accuracy": float(np.mean(called == y)),
            "sensitivity": sensitivity,
            "specificity": specificity,
            "balanced_accuracy": (sensitivity + specificity) / 2,
        }

    return statistics


def source_subsets(frame: pd.DataFrame, sources, prefix: str) -> dict[str, np.ndarray]:
    """Masks of a scored frame by provenance (the audit's `found_in`), so that a model that tells
    sources apart cannot hide behind a mixed test set. Per other dataset `s`:
    `<prefix>_from_<s>`: the images with a copy in `s` (one source, both classes where present);
    `<prefix>_positives_not_from_<s>`: the positives without a copy in `s`, against every negative.
    Subsets that lack a class are left out."""
    found = frame.found_in.astype(str).str.split(";")
    positive = frame.label_index.to_numpy() == 1
    out = {}
    for source in sources:
        inside = found.map(lambda names, s=source: s in names).to_numpy()
        for name, mask in (
            (f"{prefix}_from_{source}", inside),
            (f"{prefix}_positives_not_from_{source}", (positive & ~inside) | ~positive),
        ):
            if 0 < positive[mask].sum() < mask.sum():
                out[name] = mask
    return out


def per_source_metrics(frame: pd.DataFrame, prob, threshold: float, sources, prefix: str) -> dict[str, dict]:
    """`binary_metrics` of each of `source_subsets` (no intervals): how a split's numbers look inside
    one source, e.g. validation's, so that a recipe can be chosen on them without a test split."""
    y, prob = frame.label_index.to_numpy(), np.asarray(prob)
    return {name: binary_metrics(y[mask], prob[mask], threshold) for name, mask in source_subsets(frame, sources, prefix).items()}


def set_metrics(y_true, prob, threshold: float, cfg: EvaluateConfig, seed: int, groups=None) -> dict:
    """Everything we report for one labelled set at a frozen threshold: threshold metrics (also at
    0.5, so a chosen threshold never hides what 0.5 gives), ranking metrics with bootstrap
    intervals where both classes are present (resampling `groups` where known), and calibration."""
    metrics = binary_metrics(y_true, prob, threshold)
    # Independent units the intervals resample: lesions / copy clusters where known, else images.
    metrics["bootstrap_units"] = int(pd.Series(groups).nunique() if groups is not None else len(np.asarray(y_true)))
    if len(np.unique(np.asarray(y_true).astype(int))) == 2:
        ranking = curve_statistics(cfg.target_specificity, cfg.target_sensitivity)
        at_threshold = operating_point_statistics(threshold)
        metrics.update(ranking(np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)))
        intervals = bootstrap_intervals(
            y_true,
            prob,
            lambda y, p: {**ranking(y, p), **at_threshold(y, p)},
            n_resamples=cfg.bootstrap_resamples,
            seed=seed,
            groups=groups,
        )
        for name, (low, high) in intervals.items():
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = low, high
    metrics.update(calibration_metrics(y_true, prob, cfg.calibration_bins))
    metrics["at_0.5"] = {
        k: v for k, v in binary_metrics(y_true, prob, 0.5).items() if k in ("accuracy", "sensitivity", "specificity")
    }
    return metrics


def json_safe(metrics: dict) -> dict:
    """NaN (undefined metric) as null, which JSON and DVC can read."""
    return {
        k: json_safe(v) if isinstance(v, dict) else (None if isinstance(v, float) and np.isnan(v) else v)
        for k, v in metrics.items()
    }


def confusion(y_true, prob, threshold: float, class_names: list[str]) -> dict:
    """Confusion matrix as JSON-ready dict: rows are true classes, columns predicted classes."""
    y_pred = predicted_classes(prob, threshold)
    matrix = skm.confusion_matrix(np.asarray(y_true).astype(int), y_pred, labels=[0, 1])
    return {"labels": class_names, "matrix": matrix.tolist()}


def report(y_true, prob, threshold: float, class_names: list[str]) -> dict:
    """scikit-learn's classification report as a dict."""
    y_pred = predicted_classes(prob, threshold)
    return skm.classification_report(
        np.asarray(y_true).astype(int), y_pred, labels=[0, 1], target_names=class_names, output_dict=True, zero_division=0
    )


def roc_points(y_true, prob) -> pd.DataFrame:
    fpr, tpr, thresholds = skm.roc_curve(np.asarray(y_true).astype(int), np.asarray(prob))
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1.0)})


def summary_table(metrics: dict[str, float]) -> str:
    """A small fixed-width table for the end of the evaluate stage; K-class sets lead with balanced
    accuracy and macro AUC, and melanoma's sensitivity and AUC stand out."""
    keys = [
        k
        for k in (
            "balanced_accuracy" if "macro_auc" in metrics else "accuracy",
            "macro_auc",
            "mel.sensitivity",
            "mel.roc_auc",
            "malignant.roc_auc",
            "top_label_ece",
            "accuracy",
            "roc_auc",
            "pr_auc",
            "sensitivity",
            "specificity",
            "precision",
            "f1",
            "balanced_accuracy",
            "ece",
            "brier",
            "threshold",
        )
        if k in metrics
    ]
    keys = list(dict.fromkeys(keys))
    keys += [k for k in metrics if k.startswith(("sensitivity_at_", "specificity_at_")) and "_ci_" not in k]
    width = max(len(k) for k in keys)
    lines = [f"{'metric':<{width}}  value   95% CI", f"{'-' * width}  ------  ---------------"]
    for k in keys:
        interval = f"  [{metrics[k + '_ci_low']:.4f}, {metrics[k + '_ci_high']:.4f}]" if f"{k}_ci_low" in metrics else ""
        value = "n/a" if metrics[k] is None else f"{metrics[k]:.4f}"  # e.g. precision with no positive call
        lines.append(f"{k:<{width}}  {value:<6}{interval}")
    return "\n".join(lines)

"""Test-set metrics (scikit-learn) and the figures declared as DVC plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skin_cancer.config import EvaluateConfig
from skin_cancer.io import atomic_path


def predict_probabilities(model, image_paths, image_size: int, cfg: EvaluateConfig) -> np.ndarray:
    """Positive-class probability per image, averaged over `cfg.tta_views` dihedral views."""
    from skin_cancer.pipeline import image_dataset

    views = tuple(range(cfg.tta_views))
    ds = image_dataset(list(image_paths), np.zeros(len(image_paths)), image_size, cfg.batch_size, views=views)
    prob = model.predict(ds.map(lambda x, y: x), verbose=2).reshape(len(image_paths), len(views))
    return prob.mean(axis=1)


def choose_threshold(y_val, prob_val, cfg: EvaluateConfig) -> float:
    """The decision threshold, chosen without looking at the test split.

    "fixed": `cfg.threshold`; "youden": the validation threshold maximising Youden's J
    (sensitivity + specificity - 1).
    """
    if cfg.threshold_policy == "fixed":
        return float(cfg.threshold)
    fpr, tpr, thresholds = skm.roc_curve(np.asarray(y_val).astype(int), np.asarray(prob_val))
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thresholds[best], 1e-6, 1.0))


def binary_metrics(y_true, prob, threshold: float) -> dict[str, float]:
    """Accuracy, ROC AUC, sensitivity, specificity and friends for a positive-class probability."""
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    y_pred = (prob >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    ratio = lambda a, b: float(a / b) if b else float("nan")  # noqa: E731
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "roc_auc": float(skm.roc_auc_score(y_true, prob)) if both_classes else float("nan"),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)) if both_classes else float("nan"),
        "threshold": float(threshold),
        "n_images": int(len(y_true)),
        "n_positive": int(y_true.sum()),
    }


def sensitivity_at_specificity(y_true, prob, target: float) -> float:
    """Highest sensitivity among thresholds whose specificity is at least `target`."""
    fpr, tpr, _ = skm.roc_curve(np.asarray(y_true).astype(int), np.asarray(prob))
    return float(tpr[1 - fpr >= target].max())


def specificity_at_sensitivity(y_true, prob, target: float) -> float:
    """Highest specificity among thresholds whose sensitivity is at least `target`."""
    fpr, tpr, _ = skm.roc_curve(np.asarray(y_true).astype(int), np.asarray(prob))
    return float((1 - fpr[tpr >= target]).max())


def bootstrap_ci(y_true, prob, statistic, *, n_resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic(y_true, prob)`, resampling images with
    replacement (seeded); resamples that lack a class are redrawn."""
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    rng = np.random.default_rng(seed)
    values = []
    while len(values) < n_resamples:
        idx = rng.integers(0, len(y_true), len(y_true))
        if 0 < y_true[idx].sum() < len(idx):
            values.append(statistic(y_true[idx], prob[idx]))
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def ranking_metrics(y_true, prob, *, target_specificity: float, target_sensitivity: float,
                    n_resamples: int, seed: int) -> dict[str, float]:
    """Threshold-free metrics with 95% bootstrap intervals: ROC AUC, PR AUC (average precision),
    sensitivity at a fixed specificity and specificity at a fixed sensitivity."""
    y_true, prob = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    statistics = {
        "roc_auc": skm.roc_auc_score,
        "pr_auc": skm.average_precision_score,
        f"sensitivity_at_specificity_{round(target_specificity * 100)}": lambda y, p: sensitivity_at_specificity(y, p, target_specificity),
        f"specificity_at_sensitivity_{round(target_sensitivity * 100)}": lambda y, p: specificity_at_sensitivity(y, p, target_sensitivity),
    }
    out = {}
    for name, statistic in statistics.items():
        out[name] = float(statistic(y_true, prob))
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_ci(y_true, prob, statistic, n_resamples=n_resamples, seed=seed)
    return out


def json_safe(metrics: dict) -> dict:
    """NaN (undefined metric) as null, which JSON and DVC can read."""
    return {k: json_safe(v) if isinstance(v, dict) else (None if isinstance(v, float) and np.isnan(v) else v)
            for k, v in metrics.items()}


def confusion(y_true, prob, threshold: float, class_names: list[str]) -> dict:
    """Confusion matrix as JSON-ready dict: rows are true classes, columns predicted classes."""
    y_pred = (np.asarray(prob) >= threshold).astype(int)
    matrix = skm.confusion_matrix(np.asarray(y_true).astype(int), y_pred, labels=[0, 1])
    return {"labels": class_names, "matrix": matrix.tolist()}


def report(y_true, prob, threshold: float, class_names: list[str]) -> dict:
    """scikit-learn's classification report as a dict."""
    y_pred = (np.asarray(prob) >= threshold).astype(int)
    return skm.classification_report(np.asarray(y_true).astype(int), y_pred, labels=[0, 1],
                                     target_names=class_names, output_dict=True, zero_division=0)


def roc_points(y_true, prob) -> pd.DataFrame:
    fpr, tpr, thresholds = skm.roc_curve(np.asarray(y_true).astype(int), np.asarray(prob))
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1.0)})


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(conf: dict, path: Path, title: str = "Confusion matrix (test)") -> None:
    plt = _pyplot()
    matrix = np.asarray(conf["matrix"])
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black", fontsize=12)
    ticks = range(len(conf["labels"]))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=conf["labels"], yticklabels=conf["labels"],
           xlabel="predicted", ylabel="true", title=title)
    _save(fig, path)


def plot_roc(points: pd.DataFrame, auc: float, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(points.fpr, points.tpr, label=f"ROC AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           title="ROC curve (test)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_history(history: pd.DataFrame, path: Path) -> None:
    """Loss and AUC per epoch for both phases, with the phase boundary marked."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "auc")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:
                ax.plot(history.epoch, history[key], style, marker="o", markersize=3, label=key)
        head_epochs = history[history.phase == "head"].epoch
        if len(head_epochs) and len(head_epochs) < len(history):
            ax.axvline(head_epochs.max() + 0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set(xlabel="epoch", title=metric)
        ax.legend()
    fig.suptitle("Training curves (head, then fine-tuning)")
    _save(fig, path)


def summary_table(metrics: dict[str, float]) -> str:
    """A small fixed-width table for the end of the evaluate stage."""
    keys = [k for k in ("accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity", "precision", "f1",
                        "balanced_accuracy", "threshold") if k in metrics]
    keys += [k for k in metrics if k.startswith(("sensitivity_at_", "specificity_at_")) and "_ci_" not in k]
    width = max(len(k) for k in keys)
    lines = [f"{'metric':<{width}}  value   95% CI", f"{'-' * width}  ------  ---------------"]
    for k in keys:
        interval = f"  [{metrics[k + '_ci_low']:.4f}, {metrics[k + '_ci_high']:.4f}]" if f"{k}_ci_low" in metrics else ""
        lines.append(f"{k:<{width}}  {metrics[k]:.4f}{interval}")
    return "\n".join(lines)

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
    keys = ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1", "balanced_accuracy", "threshold")
    width = max(len(k) for k in keys)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{k:<{width}}  {metrics[k]:.4f}" for k in keys]
    return "\n".join(lines)

"""Figures declared as DVC plots (matplotlib, Agg backend): confusion matrix, ROC, PR and
reliability diagram per scored set, and the training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skin_cancer.io import atomic_path


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(conf: dict, path: Path, title: str = "Confusion matrix (test)", normalise: bool = False) -> None:
    """Counts per (true, predicted) class; `normalise`: each row divided by its total (recall on the
    diagonal), the counts in brackets, so rare classes are as readable as common ones."""
    plt = pyplot()
    counts = np.asarray(conf["matrix"])
    matrix = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
    size = max(4.2, 0.8 * len(counts) + 1.6)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(matrix, cmap="Blues", vmin=0)
    for (i, j), value in np.ndenumerate(matrix):
        text = f"{value:.2f}\n({counts[i, j]})" if normalise else str(value)
        colour = "white" if value > matrix.max() / 2 else "black"
        ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=12 if len(counts) <= 3 else 8)
    ticks = range(len(conf["labels"]))
    ax.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=conf["labels"],
        yticklabels=conf["labels"],
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    save_figure(fig, path)


def plot_roc(points: pd.DataFrame, auc: float, path: Path, name: str = "test") -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(points.fpr, points.tpr, label=f"ROC AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set(
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (true positive rate)",
        title=f"ROC curve ({name})",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    save_figure(fig, path)


def plot_pr(y_true, prob, average_precision: float, path: Path, name: str) -> None:
    plt = pyplot()
    precision, recall, _ = skm.precision_recall_curve(np.asarray(y_true).astype(int), np.asarray(prob))
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(recall, precision, label=f"PR AUC (AP) = {average_precision:.3f}")
    ax.axhline(np.mean(y_true), linestyle="--", color="grey", linewidth=0.8, label="prevalence")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title=f"Precision-recall ({name})", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    save_figure(fig, path)


def plot_reliability(table: pd.DataFrame, metrics: dict, path: Path, name: str) -> None:
    """Reliability diagram: observed fraction of the positive class against the mean predicted
    probability per bin (marker area ~ images in the bin)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="perfect calibration")
    ax.plot(table.mean_predicted, table.fraction_positive, "-", color="C0", linewidth=1)
    ax.scatter(
        table.mean_predicted,
        table.fraction_positive,
        s=10 + 200 * table["count"] / max(table["count"].max(), 1),
        color="C0",
        label=f"ECE {metrics['ece']:.3f}, Brier {metrics['brier']:.3f}",
    )
    ax.set(
        xlabel="predicted probability of the positive class",
        ylabel="observed fraction positive",
        title=f"Reliability ({name})",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="upper left")
    save_figure(fig, path)


def plot_history(history: pd.DataFrame, path: Path) -> None:
    """Loss and AUC per epoch for both phases, with the phase boundary marked."""
    plt = pyplot()
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
    save_figure(fig, path)

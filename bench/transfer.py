"""Benchmark: how a model does on collections it has never seen. Trains the default recipe on
{Kaggle, HAM10000, both} and scores every model on {Kaggle clean test, HAM10000 unseen lesions
melanoma vs nevus, HAM10000 unseen lesions malignant vs benign, any --external set}: ROC AUC with
lesion-level 95% intervals, sensitivity and specificity at the validation-frozen threshold, ECE.
Writes transfer.json, transfer.md (the table) and transfer.png (a heatmap) under --workdir.

    python bench/transfer.py                              # all three training collections
    python bench/transfer.py --rows ham10000 both         # some rows; earlier rows in transfer.json are kept
    python bench/transfer.py --external derm7pt=/data/derm7pt   # also score an extra labelled set
    python bench/transfer.py --table-only                 # redraw table and heatmap from transfer.json
    python bench/transfer.py --model efficientnet_lite0   # another backbone: transfer_efficientnet_lite0.{json,md,png}

"HAM10000 unseen lesions" is HAM10000's lesion-grouped test part (data.test_fraction, data.test_seed):
the same lesions for every model, less any image that copies one of that model's training images and
the rest of its lesion. Each pipeline runs in its own workspace through bench/pipeline.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import bench, stage_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HAM_ALL = "{mel:malignant,bcc:malignant,akiec:malignant,nv:benign,bkl:benign,df:benign,vasc:benign}"
# Every model also scores HAM10000's test lesions with all seven diagnoses mapped to the binary task.
SCORED_EVERYWHERE = [
    "+evaluate.external.ham10000_malignant.root=../shared/data/ham10000",
    "+evaluate.external.ham10000_malignant.split=test",
    f"+evaluate.external.ham10000_malignant.label_map={HAM_ALL}",
    "+evaluate.external.ham10000_malignant.per_class_limit=400",
]
ROWS = {
    "kaggle": ("Kaggle", []),
    "ham10000": ("HAM10000", ["experiment=ham10000_binary"]),
    "both": ("Kaggle + HAM10000", ["experiment=kaggle_ham10000"]),
}
# Column -> the metrics namespace that holds it, for models trained on Kaggle and for the rest.
COLUMNS = {
    "Kaggle clean test": {"kaggle": "clean_test", "both": "clean_test", "ham10000": "kaggle"},
    "HAM10000 unseen, mel vs nv": "ham10000",
    "HAM10000 unseen, malignant vs benign": "ham10000_malignant",
}
CELL_KEYS = ("n_images", "n_positive", "roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "sensitivity", "specificity", "ece")


def cells(row: str, metrics: dict, externals: list[str]) -> dict:
    """{column: the metrics of the set it reads} for one trained model."""
    out = {}
    columns = {**COLUMNS, **{name: name for name in externals}}
    for column, namespace in columns.items():
        name = namespace[row] if isinstance(namespace, dict) else namespace
        if name in metrics:
            out[column] = {key: metrics[name].get(key) for key in CELL_KEYS} | {"set": name}
    return out


def cell_text(c: dict | None, missing: str = "n/a") -> str:
    """One table cell: AUC [95% interval], sensitivity / specificity, ECE, n; a re-fitted set's gains."""
    if c is None:
        return missing
    text = (
        f"{c['roc_auc']:.3f} [{c['roc_auc_ci_low']:.3f}, {c['roc_auc_ci_high']:.3f}]<br>"
        f"sens {c['sensitivity']:.3f} / spec {c['specificity']:.3f}<br>ECE {c['ece']:.3f}, n {c['n_images']}"
    )
    if "specificity_gain" in c:
        gains = f"sens {c['sensitivity_gain']:+.3f} / spec {c['specificity_gain']:+.3f}"
        text += f"<br>vs frozen: {gains} ({c['sample_images']} labelled)"
    return text


def markdown(results: dict) -> str:
    """The transfer matrix as a Markdown table: AUC [95% interval], sensitivity / specificity, ECE, n."""
    columns = list(dict.fromkeys(c for r in results.values() for c in r["cells"]))
    lines = ["| trained on | validation AUC | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for r in results.values():
        row = [r["label"], f"{r['validation_auc']:.3f}"]
        row += [cell_text(r["cells"].get(column)) for column in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def heatmap(results: dict, path: Path, ylabel: str = "trained on", title: str = "Transfer") -> None:
    """ROC AUC per (row, scored on) with its interval and the frozen threshold's specificity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = list(dict.fromkeys(c for r in results.values() for c in r["cells"]))
    rows = list(results.values())
    auc = np.array([[r["cells"].get(c, {}).get("roc_auc", np.nan) for c in columns] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(2.6 * len(columns) + 2, 1.2 * len(rows) + 1.6))
    image = ax.imshow(auc, cmap="RdYlGn", vmin=0.5, vmax=1.0)
    for i, r in enumerate(rows):
        for j, column in enumerate(columns):
            c = r["cells"].get(column)
            if c:
                text = (
                    f"AUC {c['roc_auc']:.3f}\n[{c['roc_auc_ci_low']:.3f}, {c['roc_auc_ci_high']:.3f}]\n"
                    f"sens {c['sensitivity']:.2f} spec {c['specificity']:.2f}"
                )
                ax.text(j, i, text, ha="center", va="center", fontsize=8)
    # Wrapped: long column names on one line run into their neighbours.
    labels = [textwrap.fill(c, 18, break_on_hyphens=False) for c in columns]
    ax.set_xticks(range(len(columns)), labels, fontsize=8)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("scored on")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}: ROC AUC [lesion-level 95% interval], threshold frozen on validation", fontsize=9)
    fig.colorbar(image, ax=ax, label="ROC AUC")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS), help="training collections to run")
    parser.add_argument("--external", action="append", default=[], metavar="NAME=ROOT", help="repeatable: an extra labelled set")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table and heatmap from transfer.json")
    parser.add_argument("--model", help="a backbone other than the default (conf/model/<name>.yaml)")
    args = parser.parse_args()
    externals = dict(item.split("=", 1) for item in args.external)
    workdir = args.workdir.resolve()
    suffix = f"_{args.model}" if args.model else ""
    out = workdir / f"transfer{suffix}.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    if not args.table_only:
        env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
        extra = [f"+evaluate.external.{name}.root={Path(root).resolve()}" for name, root in externals.items()]
        for row in args.rows:
            label, overrides = ROWS[row]
            backbone = [f"model={args.model}"] if args.model else []
            run = bench(f"transfer_{row}{suffix}", overrides + backbone + SCORED_EVERYWHERE + extra, workdir, env, [], 1)
            metrics = run["metrics"]
            results[row] = {
                "label": label,
                "overrides": run["overrides"],
                "total_s": run["total_s"],
                "validation_auc": metrics["validation"]["roc_auc"],
                "threshold": metrics["test"]["threshold"],
                "cells": cells(row, metrics, list(externals)),
            }
            out.write_text(json.dumps(results, indent=2))  # after every row: a later failure loses nothing
    results = {row: results[row] for row in ROWS if row in results}
    (workdir / f"transfer{suffix}.md").write_text(markdown(results))
    heatmap(results, workdir / f"transfer{suffix}.png")
    print(markdown(results))
    print(f"wrote {out}, {workdir / f'transfer{suffix}.md'}, {workdir / f'transfer{suffix}.png'}")


if __name__ == "__main__":
    main()

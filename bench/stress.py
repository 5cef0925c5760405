"""Shortcut stress test: how far do a model's ranking (ROC AUC) and its specificity at its own frozen
threshold move when the images change the way they change between collections: a dermatoscope's
vignette (three radii and softnesses), the lesion filling more or less of the frame, squashed aspect,
darker, brighter or gamma-shifted light, boosted contrast and saturation, a colour cast, hair, lower
resolution, stronger JPEG compression, or a copy made like the shared HAM10000 one (200x150 JPEG)?
The changes are `skin_cancer.data.shifts.STRESSES`.

    python bench/stress.py PROJECT [PROJECT ...] [--split val|test]

PROJECT is a finished pipeline (models/model.keras, models/operating_point.json and
data/prepared/<split>.csv), e.g. the folders bench/pipeline.py leaves under bench/results/. Run it
on `val` to choose between recipes (no test image is looked at) and on `test` to report. Writes
bench/results/stress_<split>.json and a figure beside it. The target (issue #30): a vignette moves
specificity by at most 0.05, every other change by at most 0.10.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import skin_cancer  # noqa: F401  first: it caps NumPy and OpenBLAS at AVX2, which works only before they load

# isort: split
import numpy as np

from skin_cancer import host
from skin_cancer.data.shifts import STRESSES as SHIFTS
from skin_cancer.data.shifts import write_stressed

ROOT = Path(__file__).resolve().parents[1]
# Largest fall of specificity at the frozen threshold allowed: a vignette alone, anything else.
VIGNETTE_BOUND, OTHER_BOUND = 0.05, 0.10


def shifted_files(paths: list[str], folder: Path) -> dict[str, list[str]]:
    """Every image under every shift, written once and shared by all models."""
    return {name: write_stressed(paths, name, folder / name) for name in SHIFTS}


def stress(
    project: Path, files: dict[str, list[str]], labels: np.ndarray, groups: np.ndarray, views: int | None = None, seed: int = 0
) -> dict:
    """Metrics of one project's model under every shift, with the change from no shift; `views`:
    test-time views (default: the model's own)."""
    from skin_cancer.evaluation import metrics as ev
    from skin_cancer.serving.classifier import load_classifier

    # Without the out-of-distribution flag: it withholds the probability of the images it flags (a
    # vignette flags some), and the stress test measures the model's own shift (bench/ood.py the flag's).
    classifier = replace(load_classifier(project / "models" / "model.keras"), ood=None)
    classifier = classifier.with_views(views) if views else classifier
    rows = {}
    for name, paths in files.items():
        prob = np.array([r["probability"] for r in classifier.predict(paths)])
        m = ev.binary_metrics(labels, prob, classifier.threshold)
        low, high = ev.bootstrap_ci(labels, prob, ev.roc_auc, n_resamples=500, seed=seed, groups=groups)
        rows[name] = {
            "roc_auc": m["roc_auc"],
            "roc_auc_ci": [low, high],
            "sensitivity": m["sensitivity"],
            "specificity": m["specificity"],
            "balanced_accuracy": m["balanced_accuracy"],
            "mean_p_benign": float(prob[labels == 0].mean()),
        }
    for row in rows.values():
        row["specificity_change"] = row["specificity"] - rows["none"]["specificity"]
        row["roc_auc_change"] = row["roc_auc"] - rows["none"]["roc_auc"]
    return {"threshold": classifier.threshold, "shifts": rows, "summary": summary(rows)}


def summary(rows: dict) -> dict:
    """What the recipe selection reads: balanced accuracy at the frozen threshold averaged over every
    condition (no shift included), the largest change of specificity under any shift, and that
    largest change among the vignettes and among the rest, each against its bound."""
    vignettes = [abs(r["specificity_change"]) for name, r in rows.items() if name.startswith("vignette")]
    others = [abs(r["specificity_change"]) for name, r in rows.items() if not name.startswith("vignette")]
    return {
        "mean_balanced_accuracy": float(np.mean([r["balanced_accuracy"] for r in rows.values()])),
        "worst_specificity_change": min(r["specificity_change"] for r in rows.values()),
        "largest_vignette_specificity_move": max(vignettes, default=0.0),
        "largest_other_specificity_move": max(others, default=0.0),
        "within_bounds": max(vignettes, default=0.0) <= VIGNETTE_BOUND and max(others, default=0.0) <= OTHER_BOUND,
    }


def plot(results: dict, split: str, path: Path) -> None:
    from skin_cancer.evaluation.figures import pyplot, save_figure

    plt = pyplot()
    names = list(SHIFTS)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=False)
    width = 0.8 / max(len(results), 1)
    for k, (model, result) in enumerate(results.items()):
        x = np.arange(len(names)) + k * width
        axes[0].bar(x, [result["shifts"][n]["roc_auc"] for n in names], width, label=model)
        axes[1].bar(x, [result["shifts"][n]["specificity"] for n in names], width, label=model)
    for ax, title in zip(axes, ("ROC AUC", "specificity at the frozen threshold")):
        ax.set_xticks(np.arange(len(names)) + width * (len(results) - 1) / 2, names, rotation=35, ha="right")
        ax.set_title(f"{title} ({split})")
        ax.set_ylim(0, 1)
    axes[1].legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("projects", nargs="+", type=Path)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--views", type=int, choices=range(1, 9), metavar="1-8", help="test-time views (default: the model's)")
    args = parser.parse_args()
    print(f"host: {host.one_line(host.describe())}", flush=True)
    from skin_cancer.data.prepare import read_manifest

    frame = read_manifest(args.projects[0] / "data" / "prepared" / f"{args.split}.csv")
    for project in args.projects[1:]:
        other = read_manifest(project / "data" / "prepared" / f"{args.split}.csv")
        if list(other.sha256) != list(frame.sha256):
            raise SystemExit(f"{project}: its {args.split} split differs from {args.projects[0]}'s; compare on one split")
    labels, groups = frame.label_index.to_numpy(), frame.group.to_numpy()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = shifted_files(list(frame.path), Path(tmp))
        for project in args.projects:
            results[project.name] = stress(project, files, labels, groups, args.views)
    views = args.views or "the models' own"
    print(f"{args.split}: {len(frame)} images, {int(labels.sum())} malignant, {views} test-time views")
    print(f"{'model':<22} {'shift':<26} {'AUC':>6} {'AUC 95% CI':>14} {'sens':>6} {'spec':>6} {'d spec':>7}")
    for model, result in results.items():
        for name, row in result["shifts"].items():
            low, high = row["roc_auc_ci"]
            print(
                f"{model:<22} {name:<26} {row['roc_auc']:6.3f} [{low:.3f}, {high:.3f}] {row['sensitivity']:6.3f} "
                f"{row['specificity']:6.3f} {row['specificity_change']:+7.3f}"
            )
    for model, result in results.items():
        s = result["summary"]
        print(
            f"{model:<22} mean balanced accuracy {s['mean_balanced_accuracy']:.4f}, "
            f"worst specificity change {s['worst_specificity_change']:+.3f}, largest move: vignette "
            f"{s['largest_vignette_specificity_move']:.3f} (bound {VIGNETTE_BOUND}), other "
            f"{s['largest_other_specificity_move']:.3f} (bound {OTHER_BOUND})"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"stress_{args.split}.json"
    out.write_text(json.dumps(results, indent=2))
    plot(results, args.split, args.out / f"stress_{args.split}.png")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

"""Benchmark: leave one collection out (LOCO). For each of the four collections (Kaggle folders,
HAM10000, ISIC 2017, Derm7pt), train the recipe on the other three (experiment=loco_<name>) and score
the fourth whole, never seen: ROC AUC with 95% intervals (resampling lesions where the collection
names them), sensitivity and specificity at the threshold frozen on the three collections'
validation images, ECE; Derm7pt also as melanoma against every other diagnosis, ISIC 2017's
challenge validation part beside its training part; the training data's own test part beside it.
Writes loco.json, loco.md (the table, with the mean over held-out collections, the number recipes
are chosen on) and loco.png (a heatmap) under --workdir.

    python bench/loco.py                               # all four folds, the default recipe
    python bench/loco.py --cap 600                     # each training collection at most 600 images per class
    python bench/loco.py --rows derm7pt --variant vig train.jitter.vignette=0.5   # a candidate recipe
    python bench/loco.py --recalibrate 100             # also re-fit the operating point on 100 labelled held-out images
    python bench/loco.py --rescore --recalibrate 100   # the same on finished folds: only `evaluate` runs again
    python bench/loco.py --table-only                  # redraw from loco.json

Each fold runs in its own workspace through bench/pipeline.py (`dvc repro` from an empty cache).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import ROOT, bench, compose, repro, stage_env  # noqa: E402
from transfer import CELL_KEYS, cell_text, heatmap  # noqa: E402

ROWS = {"kaggle": "Kaggle folders", "ham10000": "HAM10000", "isic2017": "ISIC 2017", "derm7pt": "Derm7pt"}
# Column -> the metrics namespace that holds it; the held-out collection is `held_out` in every fold.
COLUMNS = {
    "held out, whole": "held_out",
    "Derm7pt melanoma vs rest": "held_out_melanoma",
    "ISIC 2017 validation (150)": "isic2017_validation",
    "held out, re-fitted on a labelled sample": "held_out_recalibrated",
    "trained-on test part (clean)": "clean_test",
}
HEADLINE = "held out, whole"


def cap_overrides(held_out: str, cap: int | None) -> list[str]:
    """At most `cap` images per split and class from every training collection of a fold (a seeded sample)."""
    if cap is None:
        return []
    from skin_cancer.config import compose

    sources = compose([f"experiment=loco_{held_out}"], ROOT / "conf").data.sources
    return [f"data.per_class_limit={cap}", *(f"+data.sources.{name}.per_class_limit={cap}" for name in sources)]


def recalibrate_overrides(size: int | None) -> list[str]:
    """Re-fit temperature and threshold on a seeded labelled sample of about `size` held-out images
    (whole lesions, half per class) and score the rest both ways: `held_out_recalibrated`."""
    return [] if size is None else [f"+evaluate.external.held_out.recalibration_sample={size}"]


def rescore(work: Path, overrides: list[str], env: dict) -> dict:
    """Run only `evaluate` again in a finished fold's workspace under `overrides` (scoring settings),
    with this checkout's code and configuration (stages compose from the checkout's conf/)."""
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, work / name, dirs_exist_ok=True)
    compose(work, overrides, env)
    walls, _, _ = repro(work, env, "-f", "-s", "evaluate")
    print(f"{work.name:>24} evaluate {walls['evaluate']:8.1f} s", flush=True)
    return json.loads((work / "reports" / "metrics.json").read_text())


GAIN_KEYS = ("sensitivity_gain", "specificity_gain", "sample_images")


def cells(metrics: dict) -> dict:
    """{column: the metrics it shows}; a re-fitted set also its gains over the frozen operating point."""
    return {
        column: {key: metrics[name].get(key) for key in (*CELL_KEYS, *GAIN_KEYS) if key in metrics[name] or key in CELL_KEYS}
        | {"set": name}
        for column, name in COLUMNS.items()
        if name in metrics
    }


def mean_row(results: dict) -> str:
    """The mean over held-out collections of the headline column: what recipes are chosen on."""
    held = [r["cells"][HEADLINE] for r in results.values() if HEADLINE in r["cells"]]
    if not held:
        return ""
    mean = {key: statistics.fmean(c[key] for c in held) for key in ("roc_auc", "sensitivity", "specificity", "ece")}
    return (
        f"\nMean over {len(held)} held-out collections: ROC AUC {mean['roc_auc']:.3f}, sensitivity "
        f"{mean['sensitivity']:.3f}, specificity {mean['specificity']:.3f}, ECE {mean['ece']:.3f}.\n"
    )


def markdown(results: dict) -> str:
    """One row per held-out collection: AUC [95% interval], sensitivity / specificity, ECE, n."""
    columns = [c for c in COLUMNS if any(c in r["cells"] for r in results.values())]
    lines = [
        "| held out | trained on | pipeline s | validation AUC | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 4) + "|",
    ]
    for r in results.values():
        row = [r["label"], r["trained_on"], f"{r['total_s']:.0f}", f"{r['validation_auc']:.3f}"]
        row += [cell_text(r["cells"].get(column), "-") for column in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n" + mean_row(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="held-out collections to run")
    parser.add_argument("--cap", type=int, help="images per split and class from each training collection")
    parser.add_argument("--variant", nargs="+", default=[], metavar="NAME OVERRIDE", help="a named candidate recipe")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--recalibrate", type=int, metavar="N", help="re-fit the operating point on N labelled held-out images")
    parser.add_argument("--rescore", action="store_true", help="re-run only `evaluate` in the folds' finished workspaces")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table and heatmap from loco.json")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    name, *overrides = args.variant or ["default"]
    out = workdir / f"loco_{name}.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    if not args.table_only:
        env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
        for row in args.rows:
            fold = [f"experiment=loco_{row}", *cap_overrides(row, args.cap), *overrides, *recalibrate_overrides(args.recalibrate)]
            if args.rescore:
                results[row].update(overrides=fold, cells=cells(rescore(workdir / f"loco_{row}_{name}", fold, env)))
                out.write_text(json.dumps(results, indent=2))
                continue
            run = bench(f"loco_{row}_{name}", fold, workdir, env, [], 1)
            metrics = run["metrics"]
            results[row] = {
                "label": ROWS[row],
                "trained_on": ", ".join(ROWS[r] for r in ROWS if r != row),
                "overrides": run["overrides"],
                "stages": run["stages"],
                "total_s": run["total_s"],
                "validation_auc": metrics["validation"]["roc_auc"],
                "threshold": metrics["test"]["threshold"],
                "cells": cells(metrics),
            }
            out.write_text(json.dumps(results, indent=2))  # after every fold: a later failure loses nothing
    results = {row: results[row] for row in ROWS if row in results}
    if not results:
        raise SystemExit(f"{out}: no fold has been run")
    table = markdown(results)
    (workdir / f"loco_{name}.md").write_text(table)
    heatmap(results, workdir / f"loco_{name}.png", ylabel="held out", title="Leave one collection out")
    print(table)
    print(f"wrote {out}, {workdir / f'loco_{name}.md'}, {workdir / f'loco_{name}.png'}")


if __name__ == "__main__":
    main()

"""Benchmark: run-to-run spread of a recipe on a fixed split. `dvc repro evaluate` for every training
seed (`train.seed`) in one workspace: DVC runs the data stages once and `train` to `evaluate` again
for each seed (the `sources` fingerprint stage always runs). The
validation and test metrics of each seed are printed with their median, range, mean and standard
deviation (the README's headline is the median and range).

    python bench/seeds.py                          # default recipe, seeds 42 1 2 3 4
    python bench/seeds.py --seeds 42 7 --recipe notebook
    python bench/seeds.py --seeds 42 1 2 --variant ft10 train.finetune.epochs=10   # a candidate recipe

A difference between two recipes smaller than this spread is not evidence that one is better.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import skin_cancer  # noqa: F401  first: it caps NumPy and OpenBLAS at AVX2, which works only before they load

# isort: split
import numpy as np
from pipeline import RECIPES, ROOT, compose, fresh_workspace, repro, stage_env

from skin_cancer import host

COLUMNS = {
    "validation AUC": ("validation", "roc_auc"),
    "test acc": ("test", "accuracy"),
    "test AUC": ("test", "roc_auc"),
    "sens": ("test", "sensitivity"),
    "spec": ("test", "specificity"),
    "threshold": ("test", "threshold"),
    "clean acc": ("clean_test", "accuracy"),
    "clean AUC": ("clean_test", "roc_auc"),
    "HAM AUC": ("ham10000", "roc_auc"),
    "HAM sens": ("ham10000", "sensitivity"),
    "HAM spec": ("ham10000", "specificity"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    parser.add_argument("--variant", nargs="+", default=[], metavar="NAME OVERRIDE", help="a named candidate recipe")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    print(f"host: {host.one_line(host.describe())}", flush=True)
    name, *extra = args.variant or [args.recipe]
    overrides = [*RECIPES[args.recipe], *extra]
    start = time.perf_counter()
    work = fresh_workspace(args.workdir.resolve() / f"seeds-{name}")
    env = stage_env()
    rows = []
    for seed in args.seeds:
        compose(work, [*overrides, f"train.seed={seed}"], env)
        walls, total, _ = repro(work, env, "evaluate")
        print(f"seed {seed:>5} dvc repro {total:8.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in walls.items()), flush=True)
        metrics = json.loads((work / "reports" / "metrics.json").read_text())
        rows.append(
            {"seed": seed, **{column: metrics.get(split, {}).get(key, float("nan")) for column, (split, key) in COLUMNS.items()}}
        )
    print(f"\n{name} ({' '.join(overrides) or 'default'}), training seeds on one split")
    print(f"{'seed':>6} " + " ".join(f"{c:>14}" for c in COLUMNS))
    for row in rows:
        print(f"{row['seed']:>6} " + " ".join(f"{row[c]:14.4f}" for c in COLUMNS))
    values = np.array([[row[c] for c in COLUMNS] for row in rows], dtype=float)
    for label, stat in (
        ("median", np.median),
        ("mean", np.mean),
        ("sd", lambda v, axis: np.std(v, axis=axis, ddof=1)),
        ("min", np.min),
        ("max", np.max),
    ):
        print(f"{label:>6} " + " ".join(f"{v:14.4f}" for v in stat(values, axis=0)))
    out = args.workdir / f"seeds-{name}.json"
    seconds = round(time.perf_counter() - start)
    out.write_text(json.dumps({"overrides": overrides, "host": host.describe(), "seconds": seconds, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

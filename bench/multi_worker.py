"""Benchmark: the default recipe trained in one process and on MultiWorkerMirroredStrategy workers on
this machine (loopback), on one split: wall time of each training stage, validation and test metrics.

    python bench/multi_worker.py                   # none, 1 worker, 2 workers
    python bench/multi_worker.py --workers 2 4

`dvc repro evaluate` for every variant in one workspace: DVC runs the data stages once and `train`
to `evaluate` again for each. Dropout and the cached
view drawn for each image are random per replica, so two workers differ from one process as another
training seed does: compare with the spread of `bench/seeds.py`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import ROOT, compose, fresh_workspace, repro, stage_env
from seeds import COLUMNS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    work = fresh_workspace(args.workdir.resolve() / "multi_worker")
    env = stage_env()
    variants = {"one process": []} | {
        f"{n} worker{'s' if n > 1 else ''}": ["train.distribute.strategy=multi_worker", f"train.distribute.workers={n}"]
        for n in args.workers
    }
    rows = []
    for label, overrides in variants.items():
        compose(work, overrides, env)
        times, total, _ = repro(work, env, "evaluate")
        print(f"{label:<12} dvc repro {total:8.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()), flush=True)
        metrics = json.loads((work / "reports" / "metrics.json").read_text())
        rows.append(
            {
                "variant": label,
                "train_s": round(times["train"], 1),
                "finetune_s": round(times["finetune"], 1),
                **{column: metrics.get(split, {}).get(key, float("nan")) for column, (split, key) in COLUMNS.items()},
            }
        )
    print(f"\n{'variant':<12} {'train s':>8} {'finetune s':>10} " + " ".join(f"{c:>14}" for c in COLUMNS))
    for row in rows:
        print(
            f"{row['variant']:<12} {row['train_s']:8.1f} {row['finetune_s']:10.1f} "
            + " ".join(f"{row[c]:14.4f}" for c in COLUMNS)
        )
    out = args.workdir / "multi_worker.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

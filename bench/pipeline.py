"""Benchmark: run the whole pipeline on the full data for one or more recipes and print the wall
time and peak memory of every stage, then the metrics of every evaluated set.

    python bench/pipeline.py                       # default recipe and experiment=notebook
    python bench/pipeline.py --recipe default --data /path/to/kaggle
    python bench/pipeline.py --recipe default --repeat features --repeats 3   # spread of a noisy stage
    python bench/pipeline.py --variant sog model.color_constancy=shades_of_gray   # a candidate recipe
    python bench/pipeline.py --recipe ham10000      # the seven diagnoses on the full HAM10000

Each recipe runs in a fresh copy of the project (under --workdir), stage by stage in dvc.yaml's
order, so both recipes are measured the same way on the same machine in one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"default": [], "notebook": ["experiment=notebook"], "ham10000": ["experiment=ham10000"]}
COPY = ("conf", "src", "dvc.yaml", "pyproject.toml")


def stage_env(**extra: str) -> dict:
    """The environment stages run in: this interpreter's scripts first on PATH, and the project as
    DVC_ROOT so that relative data roots resolve as in the project."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_ROOT": str(ROOT), **extra}


def run_stage(cmd: str, cwd: Path, env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak resident memory in MiB, exit code) of one stage command."""
    start = time.perf_counter()
    process = subprocess.Popen(shlex.split(cmd), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status:
        sys.stderr.write(process.stderr.read().decode()[-3000:])
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def fresh_workspace(work: Path) -> Path:
    """An empty copy of the project's code and configuration at `work`."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in COPY:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    return work


def compose(work: Path, overrides: list[str], env: dict) -> dict:
    """Write `work`'s params.yaml for `overrides`; returns dvc.yaml's stages."""
    subprocess.run([sys.executable, "-m", "skin_cancer.cli", "compose", *overrides], cwd=work, env=env, check=True)
    return yaml.safe_load((work / "dvc.yaml").read_text())["stages"]


def spread(values: list[float]) -> str:
    """Median [min, max] of repeated timings."""
    ordered = sorted(values)
    return f"{statistics.median(ordered):.1f} s [{ordered[0]:.1f}, {ordered[-1]:.1f}] over {len(ordered)}"


def bench(
    recipe: str, overrides: list[str], workdir: Path, env: dict, repeat: list[str], repeats: int, last: str | None = None
) -> dict:
    """Run every stage (up to `last`) of `overrides`' pipeline in a fresh copy under `workdir`."""
    work = fresh_workspace(workdir / recipe)
    env = {**env, "PYTHONPATH": str(work / "src")}  # the copied code, whatever happens to the checkout meanwhile
    stages = compose(work, overrides, env)
    if last:
        stages = dict(list(stages.items())[: list(stages).index(last) + 1])
    rows = []
    for name, stage in stages.items():
        walls = []
        for _ in range(repeats if name in repeat else 1):  # a stage re-run overwrites its own outputs
            wall, peak, code = run_stage(stage["cmd"], work, env)
            walls.append(wall)
            print(f"{recipe:>9} {name:<9} {wall:8.1f} s {peak:8.0f} MiB", flush=True)
            if code:
                raise SystemExit(f"{recipe}: stage {name} failed with exit code {code}")
        row = {"stage": name, "wall_s": round(statistics.median(walls), 1), "peak_rss_mib": round(peak)}
        if len(walls) > 1:
            row.update(runs_s=[round(w, 1) for w in walls])
            print(f"{recipe:>9} {name:<9} {spread(walls)}", flush=True)
        rows.append(row)
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    return {
        "recipe": recipe,
        "overrides": overrides,
        "stages": rows,
        "total_s": round(sum(r["wall_s"] for r in rows), 1),
        "metrics": metrics,
    }


def summary(m: dict) -> str:
    """One line per scored set: K-class sets by balanced accuracy and macro AUC, binary ones by ROC AUC,
    sensitivity and specificity; 95% intervals where computed."""

    def ci(key):
        low, high = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
        return f"{m[key]:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None else "")

    if "macro_auc" in m:
        auc = ci("macro_auc") if m["macro_auc"] is not None else "n/a"
        return f"{m['n_images']:6d} images  balanced accuracy {ci('balanced_accuracy')}  macro AUC {auc}"
    return f"{m['n_images']:6d} images  ROC AUC {ci('roc_auc')}  sens {m['sensitivity']:.3f}  spec {m['specificity']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", choices=sorted(RECIPES), help="repeatable; default: all")
    parser.add_argument(
        "--variant", nargs="+", action="append", default=[], metavar="NAME OVERRIDE", help="repeatable: a named recipe"
    )
    parser.add_argument("--data", help="Kaggle-layout folder (default: data.root of conf/)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--repeat", action="append", default=[], metavar="STAGE", help="stage to run --repeats times")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each --repeat stage; its median counts")
    args = parser.parse_args()
    env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{args.workdir.resolve() / 'mlflow.db'}")
    results = []
    recipes = {name: RECIPES[name] for name in args.recipe or ([] if args.variant else ["default", "notebook"])}
    recipes.update({name: overrides for name, *overrides in args.variant})
    for recipe, overrides in recipes.items():
        overrides = overrides + ([f"data.root={Path(args.data).resolve()}"] if args.data else [])
        results.append(bench(recipe, overrides, args.workdir.resolve(), env, args.repeat, args.repeats))
    for r in results:
        print(f"\n{r['recipe']}: {r['total_s']:.1f} s")
        for name, m in r["metrics"].items():  # validation first: recipes are chosen on it
            print(f"  {name:<40} {summary(m)}")
    if len(results) == 2 and results[1]["total_s"]:
        print(f"\n{results[0]['recipe']} / {results[1]['recipe']} wall time: {results[0]['total_s'] / results[1]['total_s']:.2f}")
    out = args.workdir / f"pipeline_{'_'.join(recipes)}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

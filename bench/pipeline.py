"""Benchmark: run the whole pipeline on the full data through `dvc repro`, as a user does, for one or
more recipes; print the wall time of every stage and of the whole command, its peak memory, then the
metrics of every evaluated set.

    python bench/pipeline.py                       # default recipe and experiment=notebook
    python bench/pipeline.py --runs 3              # three rounds, recipes alternating: min/median/max
    python bench/pipeline.py --recipe default --data /path/to/kaggle
    python bench/pipeline.py --recipe default --repeat features --repeats 3   # spread of a noisy stage
    python bench/pipeline.py --variant sog model.color_constancy=shades_of_gray   # a candidate recipe
    python bench/pipeline.py --recipe ham10000      # the seven diagnoses on the full HAM10000

Every run starts from a fresh git + DVC copy of the project (under --workdir) with an empty cache, so
DVC's own work (hashing, caching outputs, the lock file) is in the time, and every recipe of one
invocation is measured the same way on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from skin_cancer import host

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"default": [], "notebook": ["experiment=notebook"], "ham10000": ["experiment=ham10000"]}
COPY = ("conf", "src", "dvc.yaml", "pyproject.toml", ".dvc", ".dvcignore", ".gitignore")
# What dvc repro prints as it reaches each stage.
STAGE_LINE = re.compile(r"^(?:Running stage|Stage|Restored stage) '([\w@.-]+)'")


def stage_env(**extra: str) -> dict:
    """The environment commands run in: this interpreter's scripts first on PATH, and the project as
    DVC_ROOT so that relative data roots resolve as in the project (`dvc repro` sets its own)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_ROOT": str(ROOT), **extra}
    for key in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):  # of an enclosing DVC run, if any
        env.pop(key, None)
    return env


def fresh_workspace(work: Path) -> Path:
    """A copy of the project's code and configuration at `work`: its own git repository, DVC's
    configuration without cache or run cache, and `shared` beside it as a checkout has ../shared."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in COPY:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    for name in ("cache", "tmp"):
        shutil.rmtree(work / ".dvc" / name, ignore_errors=True)
    shared = work.parent / "shared"
    if not shared.exists():
        shared.symlink_to(ROOT.parent / "shared")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench workspace"]):
        subprocess.run([*git, *args], cwd=work, check=True)
    return work


def in_workspace(work: Path, env: dict) -> dict:
    """`env` running the code copied into `work`, whatever happens to the checkout meanwhile."""
    return {**env, "PYTHONPATH": str(work / "src")}


def repro(work: Path, env: dict, *args: str) -> tuple[dict[str, float], float, float]:
    """Run `dvc repro *args` in `work`: (wall seconds per stage it ran, whole command's wall seconds,
    peak resident memory of any of its processes in MiB). A stage's time runs from DVC announcing it
    to DVC announcing the next, so it includes DVC hashing and caching that stage's outputs; what
    DVC does before the first stage is the row `dvc`."""
    start = time.perf_counter()
    process = subprocess.Popen(
        ["dvc", "repro", *args],
        cwd=work,
        env=in_workspace(work, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    walls, current, since, tail = {}, "dvc", start, []
    for line in process.stdout:
        tail = [*tail[-40:], line]
        match = STAGE_LINE.match(line)
        if match:
            now = time.perf_counter()
            walls[current] = walls.get(current, 0.0) + now - since
            current, since = match.group(1), now
    _, status, usage = os.wait4(process.pid, 0)
    end = time.perf_counter()
    walls[current] = walls.get(current, 0.0) + end - since
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{work.name}: dvc repro {' '.join(args)} failed:\n{''.join(tail)}")
    return walls, end - start, usage.ru_maxrss / 1024


def compose(work: Path, overrides: list[str], env: dict) -> dict:
    """Write `work`'s params.yaml for `overrides`; returns dvc.yaml's stages."""
    subprocess.run(
        [sys.executable, "-m", "skin_cancer.cli", "compose", *overrides], cwd=work, env=in_workspace(work, env), check=True
    )
    return yaml.safe_load((work / "dvc.yaml").read_text())["stages"]


def spread(values: list[float]) -> str:
    """Median [min, max] of repeated timings."""
    ordered = sorted(values)
    return f"{statistics.median(ordered):.1f} s [{ordered[0]:.1f}, {ordered[-1]:.1f}] over {len(ordered)}"


def bench(
    recipe: str, overrides: list[str], workdir: Path, env: dict, repeat: list[str], repeats: int, last: str | None = None
) -> dict:
    """`dvc repro` (up to stage `last`) of `overrides`' pipeline in a fresh copy under `workdir`;
    each stage in `repeat` then re-run alone `repeats - 1` more times (`dvc repro -f -s`)."""
    work = fresh_workspace(workdir / recipe)
    stages = compose(work, overrides, env)
    walls, total, peak = repro(work, env, *([last] if last else []))
    print(f"{recipe:>9} dvc repro {total:8.1f} s {peak:8.0f} MiB", flush=True)
    rows = []
    for name in ["dvc", *stages]:
        if name not in walls:
            continue
        runs = [walls[name]] + [repro(work, env, "-f", "-s", name)[0][name] for _ in range(repeats - 1) if name in repeat]
        print(f"{recipe:>9} {name:<9} {runs[0]:8.1f} s", flush=True)
        row = {"stage": name, "wall_s": round(statistics.median(runs), 1)}
        if len(runs) > 1:
            row.update(runs_s=[round(w, 1) for w in runs])
            print(f"{recipe:>9} {name:<9} {spread(runs)}", flush=True)
        rows.append(row)
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    return {
        "recipe": recipe,
        "overrides": overrides,
        "stages": rows,
        "total_s": round(total, 1),
        "peak_rss_mib": round(peak),
        "host": host.describe(),
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
    parser.add_argument("--runs", type=int, default=1, help="rounds of every recipe, alternating; medians count")
    parser.add_argument("--repeat", action="append", default=[], metavar="STAGE", help="stage to run --repeats times")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each --repeat stage; its median counts")
    args = parser.parse_args()
    print(f"host: {host.one_line(host.describe())}", flush=True)
    env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{args.workdir.resolve() / 'mlflow.db'}")
    recipes = {name: RECIPES[name] for name in args.recipe or ([] if args.variant else ["default", "notebook"])}
    recipes.update({name: overrides for name, *overrides in args.variant})
    rounds = []
    for _ in range(args.runs):  # alternating, so that a slow spell of the machine hits every recipe
        results = []
        for recipe, overrides in recipes.items():
            overrides = overrides + ([f"data.root={Path(args.data).resolve()}"] if args.data else [])
            results.append(bench(recipe, overrides, args.workdir.resolve(), env, args.repeat, args.repeats))
        rounds.append(results)
    for r in rounds[-1]:
        print(f"\n{r['recipe']} (last run): {r['total_s']:.1f} s")
        for name, m in r["metrics"].items():  # validation first: recipes are chosen on it
            print(f"  {name:<40} {summary(m)}")
    totals = {recipe: [results[i]["total_s"] for results in rounds] for i, recipe in enumerate(recipes)}
    print()
    for recipe, walls in totals.items():
        print(f"{recipe:>9} dvc repro: {spread(walls)}")
    names = list(recipes)
    ratios = [results[0]["total_s"] / results[1]["total_s"] for results in rounds] if len(names) == 2 else []
    if ratios:
        ratio = statistics.median(totals[names[0]]) / statistics.median(totals[names[1]])
        print(f"{names[0]} / {names[1]}: {ratio:.3f} (medians); per round {', '.join(f'{r:.3f}' for r in ratios)}")
    out = args.workdir / f"pipeline_{'_'.join(recipes)}.json"
    out.write_text(json.dumps({"totals_s": totals, "ratios": ratios, "rounds": rounds}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

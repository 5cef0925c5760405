"""Benchmark: every backbone side by side. Per backbone: parameters, multiply-adds, frozen-part and
whole-model throughput on this machine's cores, then the whole pipeline of a recipe with that backbone
and the notebook recipe as the time baseline of the same invocation; validation and test metrics with
lesion-level 95% intervals. Writes backbones.json, backbones.md (the table) and backbones.png under
--workdir.

    python bench/backbones.py                                # all backbones, default recipe + notebook baseline
    python bench/backbones.py --backbones mobilenet_v2 efficientnet_lite0
    python bench/backbones.py --static-only                  # sizes and throughput, no pipelines
    python bench/backbones.py --recipe ham10000 --no-baseline   # the seven diagnoses per backbone
    python bench/backbones.py --table-only                   # redraw table and figure from backbones.json
    python bench/backbones.py --ensemble-only                # the pre-registered ensemble of the two best

After the backbones (and the baseline), the pre-registered ensemble of the two best by validation
runs too; the table names the default the pre-registered rule picks (docs/backbones.md).

The transfer matrix per backbone is `bench/transfer.py --model <backbone>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import skin_cancer  # noqa: F401  first: it caps NumPy and OpenBLAS at AVX2, which works only before they load

# isort: split
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RECIPES, bench, stage_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# The pre-registered rule (docs/backbones.md): within this much validation metric, the faster wins;
# a pipeline over this fraction of the notebook recipe's time is not eligible for the default, and
# a recipe without that baseline (the seven diagnoses) has the fixed budget instead.
TIE, TIME_BOUND = 0.005, 0.5
BUDGET_S = {"ham10000": 30 * 60}
ENSEMBLE = "ensemble"


def multiply_adds(model) -> int:
    """Multiply-adds of one forward pass through the convolution and dense layers (what papers call
    FLOPs for these networks). Keras has no counter and TensorFlow's profiler needs a frozen v1 graph,
    so this reads each layer's kernel and output shape."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            total += h * w * c * int(np.prod(layer.kernel_size))
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            total += h * w * c * int(np.prod(layer.kernel.shape[:-1]))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def throughput(forward, size: int, batch: int, seconds: float = 20.0) -> float:
    """Images per second of `forward` on batches of random images, after one warm-up batch."""
    images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    forward(images)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        forward(images)
        done += batch
    return done / (time.perf_counter() - start)


def static(backbone: str) -> dict:
    """Sizes and throughput of `backbone`'s classifier as the default recipe builds it (OpenVINO)."""
    from skin_cancer.config import compose, validate
    from skin_cancer.models.classifier import build_classifier, feature_extractor, get_backbone
    from skin_cancer.models.inference import compile_model

    cfg = validate(compose([f"model={backbone}"], ROOT / "conf"))
    model = build_classifier(cfg.model, cfg.data.image_size)
    frozen = feature_extractor(model, cfg.model.frozen_until)
    return {
        "input_size": cfg.data.image_size,
        "frozen_until": cfg.model.frozen_until,
        "backbone_params": get_backbone(model).count_params(),
        "multiply_adds": multiply_adds(get_backbone(model)),
        "feature_shape": list(frozen.output.shape[1:]),
        "features_img_s": round(throughput(compile_model(frozen, "openvino"), cfg.data.image_size, 64), 1),
        "predict_img_s": round(throughput(compile_model(model, "openvino"), cfg.data.image_size, 16), 1),
    }


def validation_metric(pipeline: dict) -> float:
    """Balanced accuracy for K classes, ROC AUC for two: the metric the rule chooses by."""
    m = pipeline["metrics"]["validation"]
    return m["balanced_accuracy"] if "macro_auc" in m else m["roc_auc"]


def cost_s(pipeline: dict) -> float:
    """Whole time a result costs: an ensemble's includes its members' pipelines."""
    return pipeline["total_s"] + pipeline.get("members_s", 0.0)


def time_bound_s(results: dict) -> float | None:
    """TIME_BOUND x the notebook recipe's time in the same invocation, else the recipe's budget."""
    baseline = results.get("_baseline", {}).get("total_s")
    return TIME_BOUND * baseline if baseline else results.get("_budget_s")


def within_time(results: dict, pipeline: dict) -> bool:
    """Whether `pipeline` (members included) fits the time bound (none known: it does)."""
    bound = time_bound_s(results)
    return bound is None or cost_s(pipeline) <= bound


def ranked(results: dict, eligible_only: bool = True) -> list[str]:
    """Single backbones best first by the pre-registered rule: the highest validation metric; of
    those within TIE of it, the fastest; over the time bound, not eligible (unless `eligible_only`
    is false: the ensemble's members are the two best whatever their time)."""
    left = {
        name: r["pipeline"]
        for name, r in results.items()
        if name in BACKBONES and r.get("pipeline") and (not eligible_only or within_time(results, r["pipeline"]))
    }
    order = []
    while left:
        best = max(validation_metric(p) for p in left.values())
        close = [name for name, p in left.items() if validation_metric(p) >= best - TIE]
        order.append(min(close, key=lambda name: cost_s(left[name])))
        del left[order[-1]]
    return order


def choice(results: dict) -> str | None:
    """The default by the pre-registered rule: the best single backbone, or the ensemble of the two
    best if its validation metric beats it by more than TIE within the time bound."""
    order = ranked(results)
    if not order:
        return None
    ensemble = results.get(ENSEMBLE, {}).get("pipeline")
    if (
        ensemble
        and validation_metric(ensemble) > validation_metric(results[order[0]]["pipeline"]) + TIE
        and within_time(results, ensemble)
    ):
        return ENSEMBLE
    return order[0]


def run_ensemble(results: dict, recipe: str, workdir: Path, env: dict) -> dict:
    """The pre-registered ensemble: the two best single backbones' trained models (by validation,
    whatever their time: the table shows what it would cost), at the larger
    member's input size (each member resizes to its own)."""
    members = ranked(results, eligible_only=False)[:2]
    if len(members) < 2:
        raise SystemExit(f"the ensemble needs two backbones with pipelines in backbones_{recipe}.json")
    folders = ",".join(str(workdir / f"{recipe}_{name}" / "models") for name in members)
    size = max(results[name]["static"]["input_size"] for name in members)
    overrides = [*RECIPES[recipe], f"model={ENSEMBLE}", f"model.members=[{folders}]", f"model.input_size={size}"]
    pipeline = bench(f"{recipe}_{ENSEMBLE}", overrides, workdir, env, [], 1)
    pipeline["members_s"] = sum(results[name]["pipeline"]["total_s"] for name in members)
    static = {
        "members": members,
        "input_size": size,
        "backbone_params": sum(results[name]["static"]["backbone_params"] for name in members),
        "multiply_adds": sum(results[name]["static"]["multiply_adds"] for name in members),
    }
    return {"static": static, "pipeline": pipeline}


def metric(m: dict, key: str) -> str:
    if m is None or m.get(key) is None:
        return "n/a"
    low, high = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    return f"{m[key]:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else "")


def markdown(results: dict) -> str:
    """One row per backbone: size, speed, pipeline time (and its ratio to the baseline), and the
    validation and test numbers of its recipe."""
    baseline = results.get("_baseline", {}).get("total_s")
    k_class = any(
        "macro_auc" in r.get("pipeline", {}).get("metrics", {}).get("validation", {})
        for r in results.values()
        if isinstance(r, dict)
    )
    lines = [
        "| backbone | input | params | multiply-adds | features img/s | predict img/s | pipeline s (x baseline) "
        + (
            "| validation balanced accuracy | test balanced accuracy | test macro AUC |"
            if k_class
            else "| validation | clean test | HAM10000 unseen mel vs nv |"
        ),
        "|---" * 10 + "|",
    ]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        s, p = r["static"], r.get("pipeline")
        if p:
            m = p["metrics"]
            key = "balanced_accuracy" if "macro_auc" in m["validation"] else "roc_auc"
            ratio = f" ({cost_s(p) / baseline:.2f})" if baseline else ""
            clean = m.get("clean_test") or m.get("test")
            ham = m.get("ham10000")
            if k_class:
                last = metric(clean, "macro_auc")
            else:
                last = f"{metric(ham, 'roc_auc')}<br>spec {ham['specificity']:.3f}" if ham and "roc_auc" in ham else "n/a"
            own = f"{p['total_s']:.0f}" + (f" + members {p['members_s']:.0f}" if "members_s" in p else "")
            cells = [own + ratio, metric(m["validation"], key), metric(clean, key), last]
        else:
            cells = ["not run"] * 4
        label = f"{name} ({' + '.join(s['members'])})" if "members" in s else name
        speeds = [f"{s[k]:.1f}" if k in s else "-" for k in ("features_img_s", "predict_img_s")]
        lines.append(
            f"| {label} | {s['input_size']} | {s['backbone_params'] / 1e6:.2f} M | {s['multiply_adds'] / 1e6:.0f} M | "
            + " | ".join(speeds + cells)
            + " |"
        )
    chosen = choice(results)
    if chosen:
        lines.append(f"\nChosen by the pre-registered rule (validation only): **{chosen}**.")
    return "\n".join(lines) + "\n"


def figure(results: dict, path: Path) -> None:
    """Validation metric with its interval against pipeline time, one point per backbone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        p = r.get("pipeline") if not name.startswith("_") else None
        if not p:
            continue
        m = p["metrics"]["validation"]
        key = "balanced_accuracy" if "macro_auc" in m else "roc_auc"
        low, high = m.get(f"{key}_ci_low", m[key]), m.get(f"{key}_ci_high", m[key])
        ax.errorbar(cost_s(p), m[key], yerr=[[m[key] - low], [high - m[key]]], fmt="o", capsize=4)
        ax.annotate(name, (cost_s(p), m[key]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.margins(x=0.15)  # room for the last label
    if time_bound_s(results):
        label = f"{TIME_BOUND} x notebook recipe" if "_baseline" in results else "time budget"
        ax.axvline(time_bound_s(results), ls="--", color="grey", lw=1, label=label)
        ax.legend(fontsize=8)
    ax.set_xlabel("whole pipeline, s (this machine)")
    ax.set_ylabel("validation " + ("ROC AUC" if key == "roc_auc" else "balanced accuracy"))
    ax.set_title("Backbones: validation metric vs whole-pipeline time", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default", help="the recipe each backbone runs")
    parser.add_argument("--no-baseline", action="store_true", help="skip the notebook recipe's timing run")
    parser.add_argument("--static-only", action="store_true", help="sizes and throughput only")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table and figure from backbones.json")
    parser.add_argument(
        "--ensemble-only", action="store_true", help="only the ensemble of the two best backbones in backbones.json"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"backbones_{args.recipe}.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    if args.recipe in BUDGET_S:
        results["_budget_s"] = BUDGET_S[args.recipe]
    env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
    if args.ensemble_only:
        results[ENSEMBLE] = run_ensemble(results, args.recipe, workdir, env)
        out.write_text(json.dumps(results, indent=2))
    elif not args.table_only:
        for name in args.backbones:
            results.setdefault(name, {})["static"] = static(name)
            print(name, results[name]["static"], flush=True)
            out.write_text(json.dumps(results, indent=2))
        if not args.static_only:
            for name in args.backbones:
                overrides = [*RECIPES[args.recipe], f"model={name}"]
                results[name]["pipeline"] = bench(f"{args.recipe}_{name}", overrides, workdir, env, [], 1)
                out.write_text(json.dumps(results, indent=2))  # after every backbone: a later failure loses nothing
            if not args.no_baseline:
                results["_baseline"] = bench("notebook", RECIPES["notebook"], workdir, env, [], 1)
                out.write_text(json.dumps(results, indent=2))
            if len(ranked(results, eligible_only=False)) >= 2:
                results[ENSEMBLE] = run_ensemble(results, args.recipe, workdir, env)
                out.write_text(json.dumps(results, indent=2))
    (workdir / f"backbones_{args.recipe}.md").write_text(markdown(results))
    figure(results, workdir / f"backbones_{args.recipe}.png")
    print(markdown(results))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

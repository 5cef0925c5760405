"""What a pipeline's MLflow run says about itself: its name, tags, parameters and per-epoch metrics,
built as MLflow entities from the configuration and the pipeline's files. Nothing is logged here:
`tracking.runs` logs them."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd

from skin_cancer.config import flatten, to_dict
from skin_cancer.schema import Config


def git_commit() -> str:
    """The commit a run comes from: a DVC experiment's baseline, else HEAD, else "unknown"."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_tags(cfg: Config, prepare_report: dict) -> dict[str, str]:
    """The tags that say what a run is: recipe, commit, data, backbone and its DVC experiment."""
    tags = {
        "recipe": cfg.recipe,
        "git.commit": git_commit(),
        "data.fingerprint": prepare_report["fingerprint"],
        "data.root": prepare_report["root"],
        "model.backbone": cfg.model.backbone,
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def host_tags(host: dict[str, str], stage: str):
    """The machine a stage ran on as run tags `host.<stage>.<key>` (skin_cancer.host)."""
    from mlflow.entities import RunTag

    return [RunTag(f"host.{stage}.{key}", value) for key, value in host.items()]


def epoch_metrics(history: pd.DataFrame):
    """MLflow Metric entities, one per phase, metric and epoch (step = epoch across both phases)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    out = []
    for row in history.to_dict("records"):
        for key, value in row.items():
            if key not in ("epoch", "phase") and pd.notna(value):
                out.append(Metric(f"{row['phase']}.{key}", float(value), now, int(row["epoch"])))
    return out


def run_params(cfg: Config):
    """Every parameter as a dotted key (`model.dropout`), None written as "null" as in params.yaml.
    A label map is one parameter, its JSON: a collection's labels ("melanoma (in situ)") are not
    valid MLflow keys."""
    from mlflow.entities import Param

    def leaves(mapping: dict, prefix: str = ""):
        for key, value in mapping.items():
            if isinstance(value, dict) and key != "label_map":
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    def text(value) -> str:
        return "null" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)

    return [Param(key, text(value)) for key, value in leaves(to_dict(cfg))]


def run_name(cfg: Config) -> str:
    """The recipe and the parameters that differ from the composition of conf/ with that recipe
    alone, e.g. "default: model.dropout=0.2, train.head.lr=0.0001"."""
    from skin_cancer.config import compose, validate

    try:
        experiment = [] if cfg.recipe == "default" else [f"experiment={cfg.recipe}"]
        base = flatten(to_dict(validate(compose(experiment))))
    except Exception:  # no conf/ here, or a recipe that is no experiment file: Hydra's errors vary
        return cfg.recipe
    # tracking.* says where a run goes, not what it is
    changed = [f"{k}={v}" for k, v in flatten(to_dict(cfg)).items() if base.get(k, v) != v and not k.startswith("tracking.")]
    return f"{cfg.recipe}: {', '.join(changed)}" if changed else cfg.recipe

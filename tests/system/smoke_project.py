"""The end-to-end tests' project: a temporary git + DVC copy of this one whose default experiment is
a small real run, and the commands run in it as a user runs them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import ROOT, SHARED

KAGGLE = SHARED / "data" / "skin-cancer-mvb"
# The default config's data roots (relative, ../shared/data/...) stay as they are: the project copy
# gets a `shared` link beside it, as a checkout has ../shared.
SMOKE = """# @package _global_
data:
  per_class_limit: 20
evaluate:
  tta_views: 2
  bootstrap_resamples: 200
  external:
    ham10000:
      per_class_limit: 20
train:
  feature_views: 2
  head:
    epochs: 1
  finetune:
    epochs: 1
    warmup_epochs: 0
"""


def sh(*args, cwd, check=True, timeout=900, extra_env=None):
    """Run a command as a user would: no variables of an enclosing DVC run or tracking server, unless
    given in `extra_env`."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@localhost",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@localhost",
    }
    for key in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "SLURM_CONF"):
        env.pop(key, None)
    env.update(extra_env or {})
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def smoke_project(work: Path) -> Path:
    """A git + DVC copy of the project in the empty folder `work`, whose default experiment is a
    20-images-per-class smoke run on the real Kaggle data (a one-line failure without ../shared)."""
    if not KAGGLE.is_dir():
        pytest.fail(f"{KAGGLE} not found: the end-to-end tests read the real Kaggle data from ../shared", pytrace=False)
    shared = work.parent / "shared"
    if not shared.exists():
        shared.symlink_to(SHARED)
    for name in ("conf", "src", ".dvc", "dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
    shutil.rmtree(work / ".dvc" / "tmp", ignore_errors=True)
    shutil.rmtree(work / ".dvc" / "cache", ignore_errors=True)
    (work / "conf" / "experiment" / "smoke.yaml").write_text(SMOKE)
    config = work / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("- experiment: null", "- experiment: smoke"))
    sh("git", "init", "-q", cwd=work)
    sh("skin-cancer", "compose", cwd=work)
    sh("git", "add", "-A", cwd=work)
    sh("git", "commit", "-qm", "smoke project", cwd=work)
    return work


def mlflow_runs(project):
    client = MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("skin-cancer")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []

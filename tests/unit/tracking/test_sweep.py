"""Sweeps: what a Hydra job hands to DVC, the objective it reports, and a tracking server that is down."""

import pytest

from skin_cancer.config import ConfigError
from skin_cancer.tracking.store import check_reachable
from skin_cancer.tracking.sweep import experiment_overrides, objective_metric, sweep_overrides
from tests.helpers import free_port


def test_a_sweep_gets_one_group_and_folder_unless_given():
    args = sweep_overrides(["-m", "model.dropout=0.2,0.4"], "sweep-1")
    assert args[:2] == ["-m", "model.dropout=0.2,0.4"]
    assert "tracking.run_group=sweep-1" in args
    assert any(a.startswith("hydra.sweep.dir=") and a.endswith("sweeps/sweep-1") for a in args)
    assert "tracking.run_group=mine" in sweep_overrides(["tracking.run_group=mine"], "sweep-1")
    assert sum(a.startswith("tracking.run_group=") for a in sweep_overrides(["tracking.run_group=mine"], "sweep-1")) == 1


def test_a_job_passes_its_pipeline_overrides_to_dvc_and_not_hydras():
    task = ["model.dropout=0.2", "sweep=grid", "hydra.launcher.n_jobs=2", "+evaluate.external.x.root=/x", "tracking.run_group=s"]
    task += ["+hydra.launcher.gres=gpu:1", "hydra/launcher=slurm"]
    assert experiment_overrides(task) == ["model.dropout=0.2", "+evaluate.external.x.root=/x", "tracking.run_group=s"]


def test_a_sweep_chooses_on_validation_only(tiny_cfg):
    assert objective_metric(tiny_cfg) == "validation.roc_auc"
    tiny_cfg.tracking.champion_metric = "test.roc_auc"
    with pytest.raises(ConfigError, match="validation metrics only"):
        objective_metric(tiny_cfg)


def test_a_tracking_server_that_is_down_is_named_before_any_work():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"tracking server {uri} does not answer"):
        check_reachable(uri, timeout=2)
    check_reachable("sqlite:///nowhere/mlflow.db")  # a local store needs no server

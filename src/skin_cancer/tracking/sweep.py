"""Hydra multirun sweeps: `skin-cancer sweep -m model.dropout=0.2,0.4 train.head.lr=1e-3,1e-4`.

Hydra expands the sweep (its basic grid sweeper, or Optuna's TPE with `sweep=search`) and hands every
job to its launcher (joblib runs them in parallel here, `hydra/launcher=slurm` sends them to a SLURM
cluster). A job is one DVC experiment in a temporary copy of the project (`dvc exp run --temp`), so
parallel jobs never share a workspace yet reuse every cached stage, and its MLflow run is nested
under one parent per sweep (`tracking.run_group`). A job returns the configured validation metric
(`tracking.champion_metric`), which the Optuna sweeper maximises; a test metric is refused.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from skin_cancer.config import ConfigError, project_root, validate
from skin_cancer.schema import Config

SWEEPS = Path("sweeps")  # Hydra's job folders and dvc logs, one folder per sweep (git-ignored)


class SweepJobError(RuntimeError):
    """A job's DVC experiment failed; its MLflow run is marked failed and the other jobs go on."""


def sweep_overrides(argv: list[str], sweep_id: str) -> list[str]:
    """The command line plus what makes one sweep one group: its id as `tracking.run_group` and its
    Hydra folder, unless given."""
    extra = {
        "tracking.run_group": sweep_id,
        "hydra.sweep.dir": str(project_root() / SWEEPS / sweep_id),
        "hydra.run.dir": str(project_root() / SWEEPS / sweep_id),
    }
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in argv if "=" in arg}
    return [*argv, *(f"{key}={value}" for key, value in extra.items() if key not in given)]


def experiment_overrides(task_overrides: list[str]) -> list[str]:
    """A job's own overrides as DVC's `-S` takes them: the sweep selector (only Hydra settings) is
    not a parameter of the pipeline."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in task_overrides]
    return [o for o, key in zip(task_overrides, keys) if key != "sweep" and not key.startswith(("hydra.", "hydra/"))]


def pipeline_config(config: DictConfig) -> Config:
    """The typed pipeline config of a Hydra config (without its `hydra` node)."""
    return validate(OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]), resolve=True))


def objective_metric(cfg: Config) -> str:
    """What a job returns to the sweeper: `tracking.champion_metric`, which must be a validation metric."""
    metric = cfg.tracking.champion_metric
    if not metric.startswith("validation."):
        raise ConfigError(f"tracking.champion_metric={metric!r}: a sweep chooses on validation metrics only")
    return metric


def run_job(config: DictConfig) -> float:
    """One sweep job: a DVC experiment of its overrides; returns its validation metric."""
    from hydra.core.hydra_config import HydraConfig

    from skin_cancer.tracking.groups import experiment_metric
    from skin_cancer.tracking.runs import log_failed_job

    cfg = pipeline_config(config)
    metric = objective_metric(cfg)
    hydra = HydraConfig.get()
    overrides = experiment_overrides(list(hydra.overrides.task))
    name = f"{cfg.tracking.run_group}-{hydra.job.num}"
    log = Path(hydra.runtime.output_dir) / "dvc.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = ["dvc", "exp", "run", "--temp", "--name", name, *[a for o in overrides for a in ("-S", o)]]
    started = time.time()
    with open(log, "w") as handle:
        print(" ".join(command), file=handle, flush=True)
        code = subprocess.run(command, cwd=project_root(), stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        log_failed_job(cfg, name, overrides, log, started)
        raise SweepJobError(f"sweep job {name} ({' '.join(overrides)}): dvc exp run failed with exit code {code}; see {log}")
    value = experiment_metric(cfg.tracking, name, metric)
    print(f"{name}: {' '.join(overrides)} -> {metric} = {value:.4f}")
    return value


class SweepCallbacks(Callback):
    """Before any job: the objective is a validation metric and the tracking store answers and lets
    the user write. After the last: the Optuna sweeper's best trial goes onto the sweep's parent run."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from skin_cancer.tracking.store import check_tracking

        cfg = pipeline_config(config)
        objective_metric(cfg)
        check_tracking(cfg.tracking)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self.on_multirun_start(config)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from skin_cancer.tracking.groups import record_best_trial

        results = Path(config.hydra.sweep.dir) / "optimization_results.yaml"
        if results.is_file():
            best = OmegaConf.load(results)
            overrides = " ".join(f"{k}={v}" for k, v in best.best_params.items())
            record_best_trial(pipeline_config(config).tracking, overrides, best.best_value, results)
            print(f"best trial: {overrides} ({best.best_value:.4f}); stored in {results}")


def main(argv: list[str]) -> int:
    """Run Hydra's command line over the project's conf/ with `run_job` as the task."""
    import hydra

    sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
    sys.argv = ["skin-cancer sweep", *sweep_overrides(argv, sweep_id)]
    hydra.main(config_path=str(project_root() / "conf"), config_name="config", version_base="1.3")(run_job)()
    return 0

"""DVC stage `track`: one MLflow run for the pipeline's current outputs -> reports/mlflow_run.json."""
from skin_cancer import paths
from skin_cancer.config import Config
from skin_cancer.io import write_json
from skin_cancer.stages import run_stage
from skin_cancer.tracking import log_pipeline_run


def main(cfg: Config) -> None:
    run = log_pipeline_run(cfg)
    write_json(paths.MLFLOW_RUN, run)
    print(f"track: MLflow run {run['run_id']} in {run['tracking_uri']}")


if __name__ == "__main__":
    run_stage(main)

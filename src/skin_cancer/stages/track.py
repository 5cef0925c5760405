"""DVC stage `track`: the pipeline's MLflow run completed from its current outputs, its model
registered (and made champion when it beats the current one) -> reports/mlflow_run.json."""

from skin_cancer import paths
from skin_cancer.config import to_dict
from skin_cancer.data.prepare import read_manifest
from skin_cancer.io import write_json
from skin_cancer.schema import Config
from skin_cancer.serving.rest import rest_model
from skin_cancer.stages import run_stage
from skin_cancer.tracking import registry
from skin_cancer.tracking.runs import RunFiles


def publish(cfg: Config) -> dict:
    """The pipeline's MLflow run and registered model (tracking.registry.publish), the REST model's
    example request being the first test image and its request limits serving.*. The REST model is
    built only once the tracking server has let the run in: defining it makes MLflow print
    warnings, which would bury a refusal."""
    files = RunFiles(**paths.RUN_FILES)
    example = read_manifest(paths.PREPARED / "test.csv").path.iloc[0]
    return registry.publish(cfg, files, paths.MODELS, lambda: rest_model(example, to_dict(cfg.serving)))


def main(cfg: Config) -> None:
    run = publish(cfg)
    write_json(paths.MLFLOW_RUN, run)
    print(f"track: MLflow run {run['run_id']} in {run['tracking_uri']}")
    if "registry" in run:
        r = run["registry"]
        verdict = (
            f"now @{cfg.tracking.champion_alias}"
            if r["champion"]
            else f"@{cfg.tracking.champion_alias} stays on version {r['previous_champion']} ({r['previous_value']})"
        )
        if r["replaced"]:
            verdict += f"; {r['replaced']}"
        print(f"track: registered {r['name']} version {r['version']} ({r['metric']} {r['value']}): {verdict}")


if __name__ == "__main__":
    run_stage(main)

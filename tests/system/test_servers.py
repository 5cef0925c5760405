"""Real servers on loopback: the project's tracking server (`mlflow server` on PostgreSQL: registry,
concurrent sweep workers) and `mlflow models serve` answering base64 images over HTTP."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from PIL import Image

from skin_cancer import paths
from tests.helpers import free_port, post_json, runs, server, tracking_server

pytestmark = pytest.mark.slow


def test_registry_on_a_tracking_server_and_mlflow_models_serve(trained, tmp_path, monkeypatch):
    """The project's PostgreSQL-backed `mlflow server`: the run is logged and registered there, the champion is loaded from it,
    and the real `mlflow models serve` serves models:/NAME@champion from it over HTTP."""
    import base64

    from skin_cancer.config import write_params
    from skin_cancer.registry import publish
    from skin_cancer.serving import MAX_BATCH, load_classifier

    write_params(trained)
    with tracking_server() as (tracking_uri, _):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        first = publish(trained)
        assert first["tracking_uri"] == tracking_uri and first["registry"]["champion"]
        metrics = json.loads(open("reports/metrics.json").read())
        metrics["validation"]["roc_auc"] += 0.01  # a better model on validation takes the alias
        with open("reports/metrics.json", "w") as handle:
            json.dump(metrics, handle)
        second = publish(trained)["registry"]
        assert (second["version"], second["champion"], second["previous_champion"]) == (2, True, 1)
        champion = load_classifier("models:/skin-cancer-classifier@champion")
        assert champion.source == "models:/skin-cancer-classifier@champion"
        assert champion.threshold == pytest.approx(metrics["validation"]["threshold"])
        assert not (tmp_path / "mlruns").exists()  # nothing went to the embedded store
        port = free_port()
        serve = [
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/skin-cancer-classifier@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        with server(serve, port, tmp_path / "serve.log", "/ping") as url:
            good = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[0]
            encoded = base64.b64encode(open(good, "rb").read()).decode()
            png = tmp_path / "good.png"
            Image.open(good).save(png)
            rows = [
                [encoded],
                [base64.b64encode(png.read_bytes()).decode()],
                [base64.b64encode(b"not an image").decode()],
                ["%% not base64 %%"],
            ]
            status, body = post_json(f"{url}/invocations", {"dataframe_split": {"columns": ["image"], "data": rows}})
            assert status == 200, body
            jpeg, png_result, garbage, not_base64 = body["predictions"]
            expected = load_classifier("models/model.keras").predict([good])[0]
            assert jpeg["probability"] == pytest.approx(expected["probability"], abs=1e-5)
            assert jpeg["label"] == expected["label"] and jpeg["threshold"] == pytest.approx(expected["threshold"])
            assert 0 <= png_result["probability"] <= 1
            assert "not a recognised image" in garbage["error"] and "not base64" in not_base64["error"]
            status, body = post_json(
                f"{url}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[encoded]] * (MAX_BATCH + 1)}}
            )
            assert status >= 400 and f"at most {MAX_BATCH} images" in json.dumps(body)


# One sweep worker: log a run under the sweep's parent and register it, all at once with the others.
WORKER = """
import sys, time
import mlflow
from mlflow.tracking import MlflowClient
from skin_cancer.config import TrackingConfig
from skin_cancer.registry import register_model
from skin_cancer.store import ensure_experiment
from skin_cancer.tracking import GROUP_TAG, parent_run

uri, value, fingerprint, start_at = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])

class Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input

time.sleep(max(0.0, start_at - time.time()))
mlflow.set_tracking_uri(uri)
client = MlflowClient(uri)
experiment = ensure_experiment(client, "skin-cancer", uri)
parent = parent_run(client, experiment, "sweep-x")
with mlflow.start_run(experiment_id=experiment, tags={GROUP_TAG: "sweep-x", "mlflow.parentRunId": parent}) as run:
    mlflow.pyfunc.log_model(name="serving", python_model=Identity())
cfg = TrackingConfig(uri=uri, experiment_name="skin-cancer", run_group="sweep-x", log_model=True,
                     registered_model="classifier", champion_alias="champion", champion_metric="validation.roc_auc")
result = register_model(client, run.info.run_id, cfg, {"validation.roc_auc": value},
                        {"task.classes": "benign,malignant", "validation.fingerprint": fingerprint})
print(result["version"], result["champion"], result["not_comparable"])
"""


def test_concurrent_sweep_workers_on_a_tracking_server(tmp_path):
    """Four processes log and register at once through the PostgreSQL-backed `mlflow server`: one parent run,
    four children under it, the alias on the best; a later smoke run validated on other images,
    though higher, does not take it."""
    import time

    with tracking_server() as (uri, _):

        def worker(value, fingerprint, start_at):
            return subprocess.Popen(
                [sys.executable, "-c", WORKER, uri, str(value), fingerprint, str(start_at)],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        start_at = time.time() + 20  # after every worker has imported mlflow
        workers = [worker(value, "val-a", start_at) for value in (0.81, 0.84, 0.83, 0.82)]
        for process in workers:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err[-3000:]
        smoke = worker(0.99, "smoke-20-per-class", 0)
        out, err = smoke.communicate(timeout=300)
        assert smoke.returncode == 0, err[-3000:]
        verdict = out.strip().splitlines()[-1]  # mlflow prints "View run ..." lines before it
        assert verdict.split()[1] == "False" and "validated on other data" in verdict

        client, found = runs(uri)
        parents = [r for r in found if r.data.tags.get("sweep.parent") == "true"]
        children = [r for r in found if r.data.tags.get("sweep.parent") != "true"]
        assert len(parents) == 1 and len(children) == 5
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
        champion = client.get_model_version_by_alias("classifier", "champion")
        assert champion.tags["validation.roc_auc"] == "0.84"

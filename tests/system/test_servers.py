"""Real servers on loopback: the project's tracking server (`mlflow server` on PostgreSQL: registry,
concurrent sweep workers) and `mlflow models serve` answering base64 images over HTTP."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from PIL import Image

from skin_cancer import paths
from tests.helpers import free_port, post_json, runs, server, tracking_server, tracking_user


def test_registry_on_a_tracking_server_and_mlflow_models_serve(trained, tmp_path, monkeypatch):
    """The project's PostgreSQL-backed `mlflow server`: the run is logged and registered there, the champion is loaded from it,
    and the real `mlflow models serve` serves models:/NAME@champion from it over HTTP."""
    import base64

    from skin_cancer.config import write_params
    from skin_cancer.serving.classifier import load_classifier
    from skin_cancer.stages.track import publish

    trained.serving.max_batch = 9  # not the default: the served model keeps the run's serving.*
    write_params(trained)
    with tracking_server() as (tracking_uri, _, folder):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        for key, value in tracking_user(folder, "researcher").items():  # EDIT: what running the pipeline needs
            monkeypatch.setenv(key, value)
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
            status, body = post_json(f"{url}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[encoded]] * 10}})
            assert status == 400 and "at most 9 images, this one 10" in json.dumps(body)
            test_images = list(pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path)
            answers_concurrent_mixed_traffic(f"{url}/invocations", test_images)


def mixed_requests(images: list[str], count: int, seed: int = 0) -> list[tuple[str, object]]:
    """`count` requests as (kind, JSON body or raw text): 70% one valid image, 15% a batch of eight,
    10% valid rows mixed with garbage rows, 5% malformed JSON."""
    import base64
    import random

    rng = random.Random(seed)
    encoded = [base64.b64encode(open(image, "rb").read()).decode() for image in images]
    garbage = [base64.b64encode(b"not an image").decode(), "%% not base64 %%", ""]
    requests = []
    for i in range(count):
        draw = rng.random()
        if draw < 0.70:
            rows, kind = [rng.choice(encoded)], "single"
        elif draw < 0.85:
            rows, kind = rng.choices(encoded, k=8), "batch"
        elif draw < 0.95:
            rows, kind = [rng.choice(encoded), rng.choice(garbage), rng.choice(encoded)], "garbage"
        else:
            requests.append(("malformed", '{"dataframe_split": {"columns": ["image"], "data": [[' + str(i)))
            continue
        requests.append((kind, {"dataframe_split": {"columns": ["image"], "data": [[row] for row in rows]}}))
    return requests


def answers_concurrent_mixed_traffic(url: str, images: list[str]) -> None:
    """300 mixed requests from four clients at once: every valid request and row answered 200 with the
    probabilities of a sequential run, garbage rows in their own row, malformed JSON a 4xx, the
    server alive after."""
    from concurrent.futures import ThreadPoolExecutor

    requests = mixed_requests(images, 300)
    sequential = [post_json(url, body) for _, body in requests]
    with ThreadPoolExecutor(4) as clients:
        concurrent = list(clients.map(lambda request: post_json(url, request[1]), requests))
    for (kind, _), (status, answer), (_, expected) in zip(requests, concurrent, sequential):
        if kind == "malformed":
            assert 400 <= status < 500, answer
            continue
        assert status == 200, answer
        rows = answer["predictions"]
        assert json.dumps(rows) == json.dumps(expected["predictions"])  # as text: a garbage row's NaN equals itself
        failed = [isinstance(row["error"], str) for row in rows]  # a valid row's error is NaN (pandas' missing value)
        assert failed == ([False, True, False] if kind == "garbage" else [False] * len(rows))
    assert sum(kind != "malformed" for kind, _ in requests) > 250  # the mix is what it says
    status, answer = post_json(url, requests[0][1])
    assert status == 200 and answer == sequential[0][1]


# One sweep worker: once imported, say so in folder `start` and wait for its `go` file, so that all
# log at the same moment; log a run under the sweep's parent and register it (unless its fingerprint
# is "-"); with a gate file, wait for it between logging and adopting the surviving parent.
WORKER = """
import os, sys, time
import mlflow
from mlflow.tracking import MlflowClient
from skin_cancer.schema import TrackingConfig
from skin_cancer.tracking.registry import register_model
from skin_cancer.tracking.store import ensure_experiment
from skin_cancer.tracking.groups import GROUP_TAG, adopt_parent, parent_run

uri, value, fingerprint, start, group, gate = sys.argv[1:7]
value = float(value)

class Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input

open(os.path.join(start, f"ready-{os.getpid()}"), "w").close()
while not os.path.exists(os.path.join(start, "go")):
    time.sleep(0.05)
mlflow.set_tracking_uri(uri)
client = MlflowClient(uri)
experiment = ensure_experiment(client, "skin-cancer", uri)
parent = parent_run(client, experiment, group)
with mlflow.start_run(experiment_id=experiment, tags={GROUP_TAG: group, "mlflow.parentRunId": parent}) as run:
    mlflow.pyfunc.log_model(name="serving", python_model=Identity())
while gate != "-" and not os.path.exists(gate):
    time.sleep(0.2)
adopt_parent(client, experiment, run.info.run_id, group)  # as the track stage does once it has logged
if fingerprint == "-":  # not registered: the model's permissions are not this test's subject
    print("logged")
    sys.exit(0)
cfg = TrackingConfig(uri=uri, experiment_name="skin-cancer", run_group=group, log_model=True,
                     registered_model="classifier", champion_alias="champion", champion_metric="validation.roc_auc")
result = register_model(client, run.info.run_id, cfg, {"validation.roc_auc": value},
                        {"task.classes": "benign,malignant", "validation.fingerprint": fingerprint})
print(result["version"], result["champion"], result["replaced"])
"""


def sweep_worker(cwd, uri, value, fingerprint, start, group="sweep-x", gate="-", env=None):
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, uri, str(value), fingerprint, str(start), group, str(gate)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out.strip().splitlines()[-1]  # mlflow prints "View run ..." lines before the worker's verdict


def test_concurrent_sweep_workers_on_a_tracking_server(tmp_path, monkeypatch):
    """Four processes log and register at once through the PostgreSQL-backed `mlflow server`, as an EDIT
    user (who may not delete runs): one parent run, four children under it, the alias on the best;
    a later run validated on other images takes it over and says whose it was. Four MANAGE users
    (who delete duplicate parents) log under a parent that is then deleted, because an older one
    appears while they log (a writer whose clock is behind): all four end under that surviving one."""
    import os
    import time

    from mlflow.tracking import MlflowClient

    with tracking_server() as (uri, _, folder):
        for key, value in tracking_user(folder, "sweeper").items():  # the workers inherit the credentials
            monkeypatch.setenv(key, value)
        managers = {**os.environ, **tracking_user(folder, "manager", "MANAGE")}
        gate = tmp_path / "older-parent-created"
        start = tmp_path / "start"
        start.mkdir()
        workers = [sweep_worker(tmp_path, uri, value, "val-a", start) for value in (0.81, 0.84, 0.83, 0.82)]
        deleters = [sweep_worker(tmp_path, uri, 0.5, "-", start, "sweep-y", gate, managers) for _ in range(4)]
        deadline = time.time() + 300
        while len(list(start.glob("ready-*"))) < len(workers + deleters):  # every one has imported mlflow
            assert all(p.poll() is None for p in workers + deleters) and time.time() < deadline, "a worker did not start"
            time.sleep(0.2)
        (start / "go").touch()
        for process in workers:
            finish(process)
        best = MlflowClient(uri).get_model_version_by_alias("classifier", "champion")
        assert best.tags["validation.roc_auc"] == "0.84"
        verdict = finish(sweep_worker(tmp_path, uri, 0.70, "another-split", start))
        assert verdict == f"5 True version {best.version}, validated on other data or classes, lost @champion"

        parents, children = sweep_group(uri, "sweep-x")
        assert len(parents) == 1 and len(children) == 5
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
        # Parents made at the same moment by other workers, which EDIT may not delete, left the group.
        client, found = runs(uri)
        duplicates = [r for r in found if r.data.tags.get("sweep.duplicate_of") == parents[0].info.run_id]
        assert all(r.data.tags.get("sweep.group") is None for r in duplicates)

        # The MANAGE workers have logged under the group's parent; now an older one appears.
        deadline = time.time() + 300
        while len([r for r in sweep_group(uri, "sweep-y")[1] if r.info.status == "FINISHED"]) < 4:
            assert all(p.poll() is None for p in deleters) and time.time() < deadline, "the MANAGE workers did not log"
            time.sleep(1)
        logged_under = {r.data.tags["mlflow.parentRunId"] for r in sweep_group(uri, "sweep-y")[1]}
        experiment = client.get_experiment_by_name("skin-cancer").experiment_id
        older = client.create_run(experiment, start_time=1, tags={"sweep.group": "sweep-y", "sweep.parent": "true"})
        gate.touch()
        for process in deleters:
            finish(process)
        parents, children = sweep_group(uri, "sweep-y")
        assert [r.info.run_id for r in parents] == [older.info.run_id]
        assert [r.data.tags["mlflow.parentRunId"] for r in children] == [older.info.run_id] * 4
        assert logged_under and all(client.get_run(run).info.lifecycle_stage == "deleted" for run in logged_under)


def sweep_group(uri, group: str) -> tuple[list, list]:
    """(parent runs, child runs) of a sweep group, deleted runs left out."""
    members = [r for r in runs(uri)[1] if r.data.tags.get("sweep.group") == group]
    return [r for r in members if r.data.tags.get("sweep.parent") == "true"], [
        r for r in members if r.data.tags.get("sweep.parent") != "true"
    ]


def test_the_tracking_server_lets_no_one_in_where_they_do_not_belong(trained, tmp_path, monkeypatch):
    """MLflow's basic-auth app on the project's server: no or wrong credentials are refused (401), a
    well-known admin password does not work, a READ user sees runs but cannot log a run, register a
    version or move the alias (403, one line, nothing written), secrets are 0600, PostgreSQL wants
    its password; an EDIT user's run carries no secret in its params, tags or reports."""
    import os
    import stat

    import psycopg
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from skin_cancer.config import write_params
    from skin_cancer.stages.track import publish
    from skin_cancer.tracking.access import AccessError, check_access

    write_params(trained)
    with tracking_server() as (uri, database, folder):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.delenv(key, raising=False)
        with pytest.raises(AccessError, match=r"refused the credentials of no user .*\(401\)"):
            check_access(uri, "skin-cancer", "skin-cancer-classifier")
        status, _ = post_json(f"{uri}/api/2.0/mlflow/experiments/search", {"max_results": 1})
        assert status == 401
        editor, reader = tracking_user(folder, "editor"), tracking_user(folder, "reader", "READ")
        for key, value in editor.items():
            monkeypatch.setenv(key, value)
        published = publish(trained)  # the track stage's work, as the EDIT user
        assert published["registry"]["champion"] and published["tracking_uri"] == uri

        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(AccessError, match=r"refused the credentials of user 'editor' .*\(401\)"):
            check_access(uri, "skin-cancer", "skin-cancer-classifier")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "password1234")  # MLflow's old public default
        with pytest.raises(AccessError, match="401"):
            check_access(uri, "skin-cancer", "skin-cancer-classifier")

        for key, value in reader.items():
            monkeypatch.setenv(key, value)
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name("skin-cancer").experiment_id
        seen = client.search_runs([experiment_id])
        assert [r.info.run_id for r in seen] == [published["run_id"]]  # READ sees the runs
        versions = client.search_model_versions("name = 'skin-cancer-classifier'")
        with pytest.raises(AccessError, match=r"user 'reader' has READ on experiment 'skin-cancer'"):
            publish(trained)  # refused before the run opens
        for attempt in (
            lambda: client.create_run(experiment_id),
            lambda: client.create_model_version("skin-cancer-classifier", f"runs:/{published['run_id']}/serving"),
            lambda: client.set_registered_model_alias("skin-cancer-classifier", "champion", "1"),
        ):
            with pytest.raises(MlflowException) as refused:
                attempt()
            assert refused.value.get_http_status_code() == 403
        assert len(client.search_runs([experiment_id])) == 1  # nothing half-written
        assert len(client.search_model_versions("name = 'skin-cancer-classifier'")) == len(versions)
        track = subprocess.run(
            [sys.executable, "-m", "skin_cancer.stages.track"], capture_output=True, text=True, env=dict(os.environ)
        )
        assert track.returncode == 1 and track.stderr.strip().count("\n") == 0, track.stderr[-2000:]
        assert "user 'reader' has READ" in track.stderr

        secrets = [p for p in (folder / "secrets").rglob("*") if p.is_file()]
        assert {p.name for p in secrets} >= {"admin-password", "db-password", "flask-secret-key", "pgpass", "auth.ini"}
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets)
        assert "trust" not in "".join(
            line for line in (folder / "pg" / "pg_hba.conf").read_text().splitlines() if not line.startswith("#")
        )
        without_password = database.replace(f":{(folder / 'secrets' / 'db-password').read_text().strip()}@", "@")
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(without_password, connect_timeout=10).close()
        psycopg.connect(database, connect_timeout=10).close()

        values = [p.read_text().strip() for p in secrets if p.suffix not in (".ini", ".credentials") and p.name != "pgpass"]
        values += [editor["MLFLOW_TRACKING_PASSWORD"], reader["MLFLOW_TRACKING_PASSWORD"]]
        run = client.get_run(published["run_id"])
        logged = json.dumps([run.data.params, run.data.tags]) + open("params.yaml").read()
        reports = [p for p in (tmp_path / "reports").rglob("*") if p.suffix in (".json", ".md", ".csv", ".html")]
        logged += "".join(p.read_text(errors="ignore") for p in reports)
        assert not [value for value in values if value in logged]

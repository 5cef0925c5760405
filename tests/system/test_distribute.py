"""Training under tf.distribute strategies: two worker processes (MultiWorkerMirroredStrategy) on
loopback and as SLURM tasks against one, MirroredStrategy in the stage's own process, and how a
strategy's run compares with a plain one."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from skin_cancer import paths
from skin_cancer.config import write_params
from skin_cancer.tracking.store import tracking_uri
from tests.helpers import slurm_cluster

# Two workers take half of every global batch each and average their gradients: the same updates as
# one worker up to float rounding (docs/scaling-out.md).
TOLERANCE = 1e-3


def train_and_finetune(cfg, launcher=()) -> pd.DataFrame:
    """Both training stages as `dvc repro` runs them (after `launcher`, e.g. salloc); their histories,
    one row per epoch."""
    write_params(cfg)
    for name in ("train", "finetune"):
        command = [*launcher, sys.executable, "-m", f"skin_cancer.stages.{name}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return histories()


def histories() -> pd.DataFrame:
    return pd.concat([pd.read_csv(paths.TRAIN_HISTORY), pd.read_csv(paths.FINETUNE_HISTORY)], ignore_index=True)


def assert_same_training(one: pd.DataFrame, other: pd.DataFrame) -> None:
    for column in ("val_auc", "val_loss", "loss"):
        assert other[column].tolist() == pytest.approx(one[column].tolist(), abs=TOLERANCE)


def test_one_and_two_workers_here_on_slurm_and_mirrored_train_alike(workspace, tmp_path):
    from skin_cancer.models.classifier import load_model
    from skin_cancer.stages import audit, features, finetune, prepare, train

    for module in (audit, prepare, features):
        module.main(workspace("train.feature_views=1"))
    # Without dropout and with one cached view, nothing random differs between replicas.
    deterministic = ("model.dropout=0", "train.feature_views=1", "train.distribute.strategy=multi_worker")
    one, two = (train_and_finetune(workspace(*deterministic, f"train.distribute.workers={n}")) for n in (1, 2))
    print(one.to_string(), two.to_string(), sep="\n")
    assert_same_training(one, two)
    # The chief alone logs the epochs to MLflow: each once, as its history has them.
    client = MlflowClient(tracking_uri())
    run_id = json.loads(paths.FINETUNE_RUN.read_text())["run_id"]
    logged = [(m.step, m.value) for key in ("head.val_auc", "finetune.val_auc") for m in client.get_metric_history(run_id, key)]
    assert logged == list(zip(two.epoch, two.val_auc))
    # MirroredStrategy in the stage's own process (its replicas: this machine's devices), both stages.
    mirrored = workspace(*deterministic, "train.distribute.strategy=mirrored")
    train.main(mirrored)
    finetune.main(mirrored)
    assert_same_training(one, histories())
    assert load_model(paths.MODEL).output_shape == (None, 1)
    # In a SLURM allocation the stage starts its workers with srun; SLURM's environment names the cluster.
    with slurm_cluster(tmp_path / "slurm") as slurm_conf, pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", slurm_conf)
        on_slurm = train_and_finetune(workspace(*deterministic, "train.distribute.workers=2"), ["salloc", "--ntasks=2"])
    assert_same_training(one, on_slurm)


@pytest.mark.xfail(
    strict=True,
    reason="known gap (issue #32): under any tf.distribute strategy Keras's fit peeks one batch from "
    "a fresh iterator before the first epoch, which uses up one reshuffle of the training set, so "
    "every epoch sees the next epoch's image order of a plain run (docs/scaling-out.md)",
)
def test_a_strategy_trains_like_a_plain_run(workspace):
    from skin_cancer.stages import audit, features, finetune, prepare, train

    deterministic = ("model.dropout=0", "train.feature_views=1")
    for module in (audit, prepare, features):
        module.main(workspace(*deterministic))
    by_strategy = {}
    for strategy in ("none", "mirrored"):
        cfg = workspace(*deterministic, f"train.distribute.strategy={strategy}")
        train.main(cfg)
        finetune.main(cfg)
        by_strategy[strategy] = histories()
    print(by_strategy["none"].to_string(), by_strategy["mirrored"].to_string(), sep="\n")
    assert_same_training(by_strategy["none"], by_strategy["mirrored"])

"""Shared fixtures: composed configs, generated Kaggle-layout folders with tiny images, finished tiny
pipelines. Helpers that are not fixtures live in tests/helpers.py."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from skin_cancer.config import write_params
from tests.helpers import ROOT, TINY, kaggle_folder, make_csv_collection, run_all

# The data and overrides of `workspace()` and of the session's finished pipeline.
WORKSPACE_DATA = {"train": 16, "test": 6}
WORKSPACE_OVERRIDES = ("data.val_fraction=0.25",)
# A HAM10000-like collection of three diagnoses, 12 lesions each, for the session's K-class pipeline:
# a softmax over them, and an external set labelled only malignant / benign, scored through the
# malignant score.
THREE_CLASS_OVERRIDES = (
    "data.label_map={mel: mel, nv: nv, bkl: bkl}",
    "data.positive_class=null",
    "data.malignant_classes=[mel]",
    "train.class_weight=balanced",
    "+evaluate.external.binary.split=test",
    "+evaluate.external.binary.label_map={mel: malignant, nv: benign, bkl: benign}",
)


# The order `make test` hands files to its workers (pytest-xdist, one file at a time, in collection
# order with --no-loadscope-reorder): the longest file first (test_e2e.py: its tests build on one
# another and keep one worker busy for most of the run), then the quick unit tier, then the system
# and integration tiers. So the longest file starts at once and no long file starts last.
FILE_ORDER = {"test_e2e.py": 0, "unit": 1, "system": 2, "integration": 3}


def pytest_collection_modifyitems(items):
    tier = lambda item: item.path.relative_to(ROOT / "tests").parts[0]  # noqa: E731
    items.sort(key=lambda item: FILE_ORDER.get(item.path.name, FILE_ORDER.get(tier(item), 4)))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Random weights for the tiny backbone with BatchNorm statistics set from data.

    Randomly initialised MobileNetV2 in inference mode shrinks activations to ~1e-10 by the last
    block, so nothing above it could learn; setting each BatchNorm's moving mean and variance to
    the statistics of its input (layer by layer) keeps activations of unit scale.
    """
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    x = np.random.default_rng(0).uniform(-1, 1, (32, 32, 32, 3)).astype("float32")
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            inputs = keras.Model(backbone.input, layer.input)(x, training=False).numpy()
            layer.moving_mean.assign(inputs.mean(axis=(0, 1, 2)))
            layer.moving_variance.assign(inputs.var(axis=(0, 1, 2)) + 1e-3)
    path = tmp_path_factory.mktemp("weights") / "tiny_mobilenet_v2.weights.h5"
    backbone.save_weights(path)
    return path


@pytest.fixture(scope="session")
def compose():
    from skin_cancer.config import compose as hydra_compose
    from skin_cancer.config import validate

    return lambda *overrides: validate(hydra_compose(list(overrides), ROOT / "conf"))


@pytest.fixture(scope="session")
def tiny(tiny_weights):
    """Overrides for the tiny model and short training."""
    return [*TINY, f"model.weights={tiny_weights}"]


@pytest.fixture
def tiny_cfg(compose, tiny):
    return compose(*tiny)


@pytest.fixture
def classifier(tiny_cfg):
    """The tiny classifier, untrained (seeded)."""
    import keras

    from skin_cancer.models.classifier import build_classifier

    keras.utils.set_random_seed(0)
    return build_classifier(tiny_cfg.model, tiny_cfg.data.image_size)


@pytest.fixture
def make_dataset(tmp_path):
    """make_dataset(train=n, test=m) -> root of a Kaggle-layout folder of distinct synthetic JPEGs."""

    def make(train: int = 12, test: int = 4, classes=("benign", "malignant"), seed: int = 0, name: str = "kaggle") -> Path:
        return kaggle_folder(tmp_path / name, train, test, classes, seed)

    return make


@pytest.fixture
def shared_weights():
    """Skip unless the offline ImageNet weights are in Keras' cache (`make weights` seeds it)."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    if not (keras_home / "models" / name).is_file():
        pytest.fail(f"{keras_home / 'models' / name} missing: run `make weights` to seed the Keras cache", pytrace=False)
    return keras_home


@pytest.fixture
def workspace(tmp_path, monkeypatch, make_dataset, compose, tiny):
    """Work in tmp_path with generated data; returns a function giving the tiny config plus overrides."""
    root = make_dataset(**WORKSPACE_DATA)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return lambda *extra: compose(*tiny, f"data.root={root}", *WORKSPACE_OVERRIDES, *extra)


@pytest.fixture(scope="session")
def finished(tmp_path_factory, compose, tiny):
    """The tiny pipeline of `workspace()`, run once per session: (its folder, its config)."""
    folder = tmp_path_factory.mktemp("finished")
    root = kaggle_folder(folder / "kaggle", **WORKSPACE_DATA)
    cfg = compose(*tiny, f"data.root={root}", *WORKSPACE_OVERRIDES)
    with contextlib.chdir(folder), pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("DVC_ROOT", raising=False)
        run_all(cfg)
    return folder, cfg


@pytest.fixture(scope="session")
def finished_three_classes(tmp_path_factory, compose, tiny):
    """The tiny pipeline on three generated diagnoses (THREE_CLASS_OVERRIDES), run once per session:
    (its folder, its config); the collection is in its `ham/`."""
    folder = tmp_path_factory.mktemp("finished_three_classes")
    ham = make_csv_collection(folder / "ham", {"mel": 12, "nv": 12, "bkl": 12}, malignant=("mel", "bkl"))
    roots = (f"data.root={ham}", f"+evaluate.external.binary.root={ham}")
    cfg = compose(*tiny, *roots, *WORKSPACE_OVERRIDES, *THREE_CLASS_OVERRIDES)
    with contextlib.chdir(folder), pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("DVC_ROOT", raising=False)
        run_all(cfg)
    return folder, cfg


def copy_finished(finished: tuple, data: str, tmp_path: Path, monkeypatch):
    """A copy of a finished pipeline in the working directory (tmp_path); returns its config."""
    folder, cfg = finished
    # Its data stays where it is; its MLflow store (the runs its training opened) stays behind too.
    ignore = lambda where, names: [data, "mlruns"] if where == str(folder) else []  # noqa: E731
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True, ignore=ignore)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return copy.deepcopy(cfg)  # tests may change their config


@pytest.fixture
def trained(finished, tmp_path, monkeypatch):
    """A copy of the finished tiny pipeline in the working directory (tmp_path); returns its config."""
    return copy_finished(finished, "kaggle", tmp_path, monkeypatch)


@pytest.fixture
def trained_with(trained, compose, tiny):
    """`trained` in the working directory; a function giving its config plus overrides, for stages
    re-run on the finished pipeline with a changed setting."""
    return lambda *extra: compose(*tiny, f"data.root={trained.data.root}", *WORKSPACE_OVERRIDES, *extra)


@pytest.fixture
def trained_three_classes(finished_three_classes, tmp_path, monkeypatch):
    """A copy of the finished three-class pipeline in the working directory; returns its config."""
    return copy_finished(finished_three_classes, "ham", tmp_path, monkeypatch)


@pytest.fixture
def outputs(trained):
    """`trained`, with its params.yaml written as `dvc repro` would find it."""
    write_params(trained)
    return trained

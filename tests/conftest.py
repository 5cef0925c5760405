"""Shared fixtures: composed configs, generated Kaggle-layout folders with tiny images, finished tiny
pipelines. Helpers that are not fixtures live in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from skin_cancer.config import to_dict
from tests.helpers import ROOT, TINY, lesion_image, run_all


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


@pytest.fixture
def compose():
    from skin_cancer.config import compose as hydra_compose
    from skin_cancer.config import validate

    return lambda *overrides: validate(hydra_compose(list(overrides), ROOT / "conf"))


@pytest.fixture
def tiny(tiny_weights):
    """Overrides for the tiny model and short training."""
    return [*TINY, f"model.weights={tiny_weights}"]


@pytest.fixture
def tiny_cfg(compose, tiny):
    return compose(*tiny)


@pytest.fixture
def make_dataset(tmp_path):
    """make_dataset(train=n, test=m) -> root of a Kaggle-layout folder of distinct synthetic JPEGs."""

    def make(train: int = 12, test: int = 4, classes=("benign", "malignant"), seed: int = 0, name: str = "kaggle") -> Path:
        rng = np.random.default_rng(seed)
        root = tmp_path / name
        for split, n in (("train", train), ("test", test)):
            for label in classes:
                folder = root / split / label
                folder.mkdir(parents=True)
                for i in range(n):
                    lesion_image(rng, label == "malignant").save(folder / f"{i}.jpg", quality=92)
        return root

    return make


@pytest.fixture
def shared_weights():
    """Skip unless the offline ImageNet weights are in Keras' cache (`make weights` seeds it)."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    if not (keras_home / "models" / name).is_file():
        pytest.fail(f"{keras_home / 'models' / name} missing: run `make weights` to seed the Keras cache")
    return keras_home


@pytest.fixture
def workspace(tmp_path, monkeypatch, make_dataset, compose, tiny):
    """Work in tmp_path with generated data; returns a function giving the tiny config plus overrides."""
    root = make_dataset(train=16, test=6)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return lambda *extra: compose(*tiny, f"data.root={root}", "data.val_fraction=0.25", *extra)


@pytest.fixture
def trained(workspace):
    """A finished tiny pipeline in the working directory; returns its config."""
    cfg = workspace()
    run_all(cfg)
    return cfg


@pytest.fixture
def outputs(workspace):
    """A finished tiny pipeline in the working directory; returns its config."""
    cfg = workspace()
    run_all(cfg)
    with open("params.yaml", "w") as handle:
        yaml.safe_dump(to_dict(cfg), handle)
    return cfg

"""Shared fixtures: composed configs, generated Kaggle-layout folders with tiny images."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A tiny but real MobileNetV2 so model and training tests take seconds.
TINY = [
    "model.width=0.35",
    "data.image_size=32",
    "train.batch_size=8",
    "train.head.epochs=2",
    "train.finetune.epochs=2",
    "train.feature_views=2",
    "evaluate.batch_size=16",
    "evaluate.bootstrap_resamples=200",
    "~audit.against.ham10000",
    "~evaluate.external.ham10000",
    "audit.workers=2",
]


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


def lesion_image(rng: np.random.Generator, malignant: bool, size: int = 48) -> Image.Image:
    """A synthetic 'lesion': a dark blob on skin tone; malignant ones are larger and irregular."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
    radius = size * (0.32 if malignant else 0.16) * rng.uniform(0.85, 1.15)
    wobble = 1 + (0.35 if malignant else 0.05) * np.sin(rng.integers(3, 7) * np.arctan2(yy - cy, xx - cx))
    inside = np.hypot(yy - cy, xx - cx) < radius * wobble
    # Random smooth shading makes every image's perceptual hash distinct.
    shading = np.kron(rng.uniform(0.7, 1.15, (4, 4)), np.ones((size // 4, size // 4)))[..., None]
    skin = np.array([224, 172, 150]) * shading + rng.normal(0, 6, (size, size, 3))
    lesion = np.array([90, 50, 40]) + rng.normal(0, 8, (size, size, 3))
    pixels = np.where(inside[..., None], lesion, skin)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


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


def run_all(cfg):
    """Every stage before `track`, in dvc.yaml's order."""
    from skin_cancer.stages import audit, calibrate, evaluate, features, finetune, prepare, report, train

    for stage in (audit, prepare, features, train, finetune, calibrate, evaluate, report):
        stage.main(cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(command: list[str], port: int, log: Path, ready: str, cwd: Path | None = None):
    """A real server process (a console script of this environment, run with `port`) on loopback,
    yielding its base URL once `ready` answers 200. Its output goes to `log`: a pipe nobody reads
    would fill and block the server."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # servers run uvicorn from PATH
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / command[0]), *command[1:]],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(url + ready, timeout=2).status == 200:
                    break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail(f"{' '.join(command)} did not start:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its workers
        process.wait(timeout=30)

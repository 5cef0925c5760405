"""Test helpers (not fixtures): project paths, generated lesion images, running every stage, and
real servers on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The default data's image-size limit and the audit's settings as conf/ has them: the keyword
# arguments of skin_cancer.data.audit.audit (two decoding threads).
PIXELS = yaml.safe_load((ROOT / "conf" / "data" / "kaggle.yaml").read_text())["max_image_pixels"]
_AUDIT = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["audit"]
COPY = {"candidate_distance": _AUDIT["candidate_distance"], "min_correlation": _AUDIT["min_correlation"]}
AUDIT = {**COPY, "workers": 2, "max_pixels": PIXELS}


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
    # Off in the shared tiny pipelines, whose tests compare every prediction with the evaluate stage's:
    # a flagged image carries no diagnosis. The flag's own tests switch it on.
    "evaluate.ood_flag_share=null",
]


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


def kaggle_folder(root: Path, train: int = 12, test: int = 4, classes=("benign", "malignant"), seed: int = 0) -> Path:
    """A Kaggle-layout folder (train|test/<class>/) of distinct synthetic JPEGs at `root`."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                lesion_image(rng, label == "malignant").save(folder / f"{i}.jpg", quality=92)
    return root


def make_csv_collection(
    root: Path, lesions: dict[str, int], images_per_lesion: int = 2, seed: int = 1, malignant=("mel",)
) -> Path:
    """A HAM10000-like collection at `root`: images/ + metadata.csv (lesion_id, image_id, dx), with
    `lesions[dx]` lesions per diagnosis, each photographed `images_per_lesion` times (distinct images)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for dx, count in lesions.items():
        for lesion in range(count):
            for shot in range(images_per_lesion):
                image_id = f"{dx}_{lesion}_{shot}"
                lesion_image(rng, dx in malignant).save(root / "images" / f"{image_id}.jpg", quality=92)
                rows.append(f"L_{dx}_{lesion},{image_id},{dx}")
    (root / "metadata.csv").write_text("lesion_id,image_id,dx\n" + "\n".join(rows) + "\n")
    return root


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


def runs(uri, experiment="skin-cancer"):
    """(client, runs) of an MLflow experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client, client.search_runs([experiment_id])


def post_json(url: str, payload: dict | str):
    """(status, answer) of a JSON POST; a str payload is sent as it is (malformed JSON), an error
    body that is not JSON comes back as {"text": ...}."""
    import urllib.error
    import urllib.request

    data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body or b"{}")
        except ValueError:
            return error.code, {"text": body.decode(errors="replace")}


def _script(name: str, *args: str, timeout: int = 600) -> str:
    """Run one of the project's service scripts (scripts/); its last output line."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run([str(ROOT / "scripts" / name), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"scripts/{name} {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


@contextlib.contextmanager
def tracking_server():
    """The project's shared tracking server (scripts/tracking-server): MLflow's basic-auth app, a
    PostgreSQL store with a password, proxied artifacts, on a free loopback port; yields (URI,
    PostgreSQL URL with the password, server folder). Its folder is outside pytest's private temp
    folder, which the `postgres` user cannot enter."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="skin-cancer-tracking-"))
    port = free_port()
    try:
        uri = _script("tracking-server", "start", str(folder), str(port))
        password = (folder / "secrets" / "db-password").read_text().strip()
        yield uri, f"postgresql://mlflow:{password}@127.0.0.1:{port + 1}/mlflow", folder
    finally:
        _script("tracking-server", "stop", str(folder))
        shutil.rmtree(folder, ignore_errors=True)


def tracking_user(folder: Path, name: str, permission: str = "EDIT") -> dict[str, str]:
    """A user of the tracking server in `folder` (scripts/tracking-server add-user), as the
    environment variables MLflow's client reads."""
    import configparser

    credentials = configparser.ConfigParser()
    credentials.read(_script("tracking-server", "add-user", name, "--permission", permission, "--dir", str(folder)))
    return {
        "MLFLOW_TRACKING_USERNAME": credentials["mlflow"]["mlflow_tracking_username"],
        "MLFLOW_TRACKING_PASSWORD": credentials["mlflow"]["mlflow_tracking_password"],
    }


@contextlib.contextmanager
def slurm_cluster(folder: Path):
    """The project's single-node SLURM cluster on loopback (scripts/slurm-cluster); yields SLURM_CONF."""
    if os.geteuid() != 0:
        pytest.skip("a SLURM cluster is started as root (CI runs as root)")
    import tempfile

    from filelock import FileLock

    # One cluster per machine (fixed ports, one munge daemon): parallel test workers take turns.
    with FileLock(Path(tempfile.gettempdir()) / "skin-cancer-slurm-cluster.lock"):
        try:
            yield _script("slurm-cluster", "start", str(folder))
        finally:
            _script("slurm-cluster", "stop", str(folder))


def exhaustive_copies(
    query, reference=None, *, candidate_distance=COPY["candidate_distance"], min_correlation=COPY["min_correlation"], block=1024
):
    """The audit's copy search as it was before its hash index: every query hash against every
    reference hash (quadratic). The reference that the indexed search must equal exactly."""
    from skin_cancer.data.copies import TRANSFORMS, _standardise, dihedral, matched_pairs, perceptual_hash

    same = reference is None
    reference = query if same else reference
    ref_ok = reference.readable
    ref_hash = np.where(ref_ok, perceptual_hash(reference.thumbs), 0)
    ref_std = _standardise(reference.thumbs)
    found = []
    for transform in range(len(TRANSFORMS)):
        turned = dihedral(query.thumbs, transform)
        hashes = perceptual_hash(turned)
        for start in range(0, len(hashes), block):
            distances = np.bitwise_count(hashes[start : start + block, None] ^ ref_hash[None, :])
            a, b = np.nonzero(distances <= candidate_distance)
            keep = query.readable[a + start] & ref_ok[b]
            if same:
                keep &= (a + start) != b
            a, b = a[keep], b[keep]
            if not len(a):
                continue
            correlation = (_standardise(turned[a + start]) * ref_std[b]).mean(axis=1)
            match = correlation >= min_correlation
            found.append(
                pd.DataFrame(
                    {
                        "a": a[match] + start,
                        "b": b[match],
                        "hamming": distances[a[match], b[match]].astype(int),
                        "correlation": correlation[match].round(4),
                        "transform": transform,
                    }
                )
            )
    return matched_pairs(found, query, reference, same)  # shared: the candidate search is what is compared


# Loads the served model where the project is not importable: its package path is taken off
# sys.path (and checked gone) before MLflow loads the model, which brings its own copy of the code.
OUTSIDE = """
import base64, sys
sys.path = [p for p in sys.path if p not in ("", {src!r})]
try:
    import skin_cancer
    raise SystemExit("skin_cancer is still importable")
except ModuleNotFoundError:
    pass
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
image = base64.b64encode(open(sys.argv[2], "rb").read()).decode()
print(model.predict(pd.DataFrame({{"image": [image]}})).to_json(orient="records"))
"""


def predict_outside_the_project(model_dir, image, cwd: Path) -> dict:
    """The served model at `model_dir` loaded and run on `image` by a Python that cannot import the
    project: its one prediction."""
    result = subprocess.run(
        [sys.executable, "-c", OUTSIDE.format(src=str(ROOT / "src")), str(model_dir), str(Path(image).resolve())],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])[0]


def make_other_dataset(root, ours, tmp_path):
    """A HAM10000-like dataset (images/ + metadata CSV with image_id, dx, lesion_id) holding copies
    of some of our images: lesion L1 has copies of train/malignant/0 and test/malignant/0 (a
    same-lesion twin across our split), lesion L2 a copy of train/benign/1 and an image of its own."""
    images = tmp_path / "other" / "images"
    images.mkdir(parents=True)
    rows = []
    for image_id, source, lesion, dx in [
        ("ISIC_1", ours / "train" / "malignant" / "0.jpg", "L1", "mel"),
        ("ISIC_2", ours / "test" / "malignant" / "0.jpg", "L1", "mel"),
        ("ISIC_3", ours / "train" / "benign" / "1.jpg", "L2", "nv"),
        ("ISIC_4", None, "L2", "nv"),
        ("ISIC_5", None, "L3", "bkl"),
    ]:
        image = Image.open(source).resize((200, 150)) if source else lesion_image(np.random.default_rng(len(rows)), False, 96)
        image.convert("RGB").save(images / f"{image_id}.jpg", quality=90)
        rows.append({"lesion_id": lesion, "image_id": image_id, "dx": dx, "age": 50})
    pd.DataFrame(rows).to_csv(tmp_path / "other" / "metadata.csv", index=False)
    return tmp_path / "other"

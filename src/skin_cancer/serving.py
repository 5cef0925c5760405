"""Use a trained model: load it with its operating point (temperature, threshold, input size, test-time
views, class names) and predict calibrated probabilities and labels for image files or arrays.

    from skin_cancer import load_classifier
    clf = load_classifier("models/model.keras")          # or "models:/NAME@ALIAS", or run_id=...
    clf.predict(["lesion.jpg", array])                    # one dict per image
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from skin_cancer.data import BadImage, DataError, read_image
from skin_cancer.io import read_json

OPERATING_POINT_FILE = "operating_point.json"
MAX_IMAGE_PIXELS = 40_000_000
BATCH = 32  # images per forward pass (times the test-time views)


@dataclass
class Classifier:
    """A Keras model plus the operating point fitted on validation (see the calibrate stage)."""
    model: object
    operating_point: dict
    source: str = ""
    _forward: object = field(default=None, repr=False, compare=False)

    @property
    def image_size(self) -> int:
        return int(self.operating_point["image_size"])

    @property
    def threshold(self) -> float:
        return float(self.operating_point["threshold"])

    @property
    def class_names(self) -> list[str]:
        return list(self.operating_point["class_names"])

    def with_views(self, tta_views: int) -> "Classifier":
        """The same classifier averaging over `tta_views` dihedral views (1 = no test-time augmentation)."""
        if not 1 <= tta_views <= 8:
            raise ValueError(f"tta_views={tta_views} must be between 1 and 8")
        return replace(self, operating_point={**self.operating_point, "tta_views": tta_views}, _forward=None)

    def with_runtime(self, runtime: str) -> "Classifier":
        """The same classifier run by another runtime (see inference.py)."""
        return replace(self, operating_point={**self.operating_point, "runtime": runtime}, _forward=None)

    def _probabilities(self, images) -> np.ndarray:
        """Calibrated probability per image of a (n, size, size, 3) float batch in [0, 255]: the mean
        raw probability over the test-time views (the same compiled graph as the evaluate stage's),
        then the temperature."""
        from skin_cancer.evaluation import apply_temperature
        from skin_cancer.inference import compile_predictor, run_batches

        if self._forward is None:
            self._forward = compile_predictor(self.model, int(self.operating_point.get("tta_views", 1)),
                                              self.operating_point.get("runtime", "tensorflow"))
        images = np.asarray(images, dtype="float32")
        if len(images) <= BATCH:  # one request's worth: no padding, no progress bar
            raw = self._forward(images)
        else:
            raw = run_batches(self._forward, (images[i:i + BATCH] for i in range(0, len(images), BATCH)),
                              len(images), BATCH, "predicting")
        return apply_temperature(raw, float(self.operating_point.get("temperature", 1.0)))

    def probabilities_from_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        """Calibrated positive-class probability per RGB array (any size; resized like training)."""
        import tensorflow as tf

        size = (self.image_size,) * 2
        return self._probabilities(tf.stack([tf.image.resize(np.asarray(a)[..., :3], size) for a in images]))

    def probabilities_from_files(self, paths: list[str]) -> np.ndarray:
        """Calibrated probability per decodable file, decoded and resized by the input pipeline's own
        `load_image` (as in training and evaluation)."""
        import tensorflow as tf

        from skin_cancer.pipeline import load_image

        return self._probabilities(tf.stack([load_image(str(p), self.image_size) for p in paths]))

    def predict(self, images: list) -> list[dict]:
        """One result per input (a path or an RGB array): probability, label and threshold, or an
        `error` naming what is wrong with that input; the other inputs are still predicted."""
        results: list[dict] = [{} for _ in images]
        files, arrays = [], []
        with tempfile.TemporaryDirectory() as converted:
            for i, item in enumerate(images):
                if isinstance(item, (str, Path)):
                    try:
                        # Decoded once with Pillow to reject bad files one by one; formats and modes
                        # the input pipeline cannot read as they are get an RGB PNG copy, as in prepare.
                        record = read_image(Path(item), "predict", "", MAX_IMAGE_PIXELS, (Path(converted),) * 2)
                        files.append((i, record.path))
                        results[i] = {"image": str(item)}
                    except (BadImage, OSError) as error:
                        results[i] = {"image": str(item), "error": str(error)}
                else:
                    array = np.asarray(item)
                    if array.ndim != 3 or array.shape[-1] < 3:
                        results[i] = {"image": f"array {i}", "error": f"expected an HxWx3 RGB array, got shape {array.shape}"}
                        continue
                    arrays.append((i, array))
                    results[i] = {"image": f"array {i}"}
            for batch, predict in ((files, self.probabilities_from_files), (arrays, self.probabilities_from_arrays)):
                if batch:
                    for (i, _), probability in zip(batch, predict([item for _, item in batch])):
                        results[i].update(self._decide(probability))
        return results

    def _decide(self, probability: float) -> dict:
        return {"probability": float(probability), "label": self.class_names[int(probability >= self.threshold)],
                "threshold": self.threshold}


def load_classifier(source: str | Path = "models/model.keras", *, run_id: str | None = None) -> Classifier:
    """A classifier from a `.keras` file (with `operating_point.json` beside it), a registered model
    `models:/NAME@ALIAS` (or `models:/NAME/VERSION`), or the model of an MLflow run (`run_id`).
    Raises DataError naming what is missing."""
    from skin_cancer import tracking

    if run_id is not None or str(source).startswith(("models:/", "runs:/")):
        uri = f"runs:/{run_id}/model" if run_id is not None else str(source)
        model, operating_point = tracking.load_logged_model(uri)
        return Classifier(model, operating_point, uri)
    import keras

    path = Path(source)
    if not path.is_file():
        raise DataError(f"model {path} not found (run the pipeline, or give --model / --run)")
    op_path = path.parent / OPERATING_POINT_FILE
    if not op_path.is_file():
        raise DataError(f"{op_path} not found: the model's temperature and threshold come from the calibrate stage")
    return Classifier(keras.saving.load_model(path), read_json(op_path), str(path))


def image_files(inputs: list[str]) -> list[str]:
    """The files named, with folders expanded to the files they hold (recursively, sorted)."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.exists():
            files.append(str(path))
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


# REST serving limits (pyfunc model behind `mlflow models serve`).
MAX_BATCH = 32
MAX_IMAGE_BYTES = 10 * 1024 * 1024


def predict_encoded(classifier: Classifier, encoded: list, max_batch: int = MAX_BATCH,
                    max_bytes: int = MAX_IMAGE_BYTES) -> list[dict]:
    """Predictions for base64-encoded image files (JPEG, PNG, ...: the REST request format), one
    result per item; an item that is not base64, too large or not a usable image gets an `error`."""
    import base64
    import binascii

    if len(encoded) > max_batch:
        raise ValueError(f"a request holds at most {max_batch} images, this one {len(encoded)}")
    results: list[dict] = [{} for _ in encoded]
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for i, text in enumerate(encoded):
            try:
                data = base64.b64decode(str(text), validate=True)
            except (binascii.Error, ValueError):
                results[i] = {"error": "not base64-encoded image bytes"}
                continue
            if len(data) > max_bytes:
                results[i] = {"error": f"{len(data)} bytes exceeds the limit of {max_bytes}"}
                continue
            path = Path(folder) / f"image-{i}"
            path.write_bytes(data)
            files.append((i, path))
        for (i, _), result in zip(files, classifier.predict([path for _, path in files])):
            result.pop("image", None)
            results[i] = result
    return results

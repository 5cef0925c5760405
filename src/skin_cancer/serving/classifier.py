"""Use a trained model: load it with its operating point (temperature, threshold, input size, test-time
views, class names) and predict calibrated probabilities and labels for image files or arrays.

    from skin_cancer import load_classifier
    clf = load_classifier("models/model.keras")          # or "models:/NAME@ALIAS", or run_id=...
    clf.predict(["lesion.jpg", array])                    # one dict per image
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from skin_cancer.data.images import BadImage, read_image
from skin_cancer.errors import DataError
from skin_cancer.model_folder import OOD_FILE, OPERATING_POINT_FILE
from skin_cancer.operating_point import OperatingPoint

BATCH = 32  # images per forward pass (times the test-time views)


@dataclass
class Classifier:
    """A Keras model plus the operating point fitted on validation (see the calibrate stage)."""

    model: object
    operating_point: OperatingPoint
    source: str = ""
    # The out-of-distribution detector fitted with the operating point (skin_cancer.evaluation.ood); None: no flag.
    ood: object = None
    _forward: object = field(default=None, repr=False, compare=False)
    _with_features: bool = field(default=False, repr=False, compare=False)
    # Threads (REST workers, app sessions) share one classifier: the graph is compiled once.
    _compiling: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def image_size(self) -> int:
        return self.operating_point.image_size

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    @property
    def class_names(self) -> list[str]:
        return list(self.operating_point.class_names)

    def with_views(self, tta_views: int) -> Classifier:
        """The same classifier averaging over `tta_views` dihedral views (1 = no test-time augmentation)."""
        if not 1 <= tta_views <= 8:
            raise ValueError(f"tta_views={tta_views} must be between 1 and 8")
        return replace(self, operating_point=self.operating_point.replace(tta_views=tta_views), _forward=None)

    def with_runtime(self, runtime: str) -> Classifier:
        """The same classifier run by another runtime (see models/inference.py)."""
        return replace(self, operating_point=self.operating_point.replace(runtime=runtime), _forward=None)

    def _scores(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probability per image of a (n, size, size, 3) float batch in [0, 255]: the mean
        raw probability over the test-time views (the same compiled graph as the evaluate stage's),
        then the temperature (and a K-class model's class prior); with a detector, also each image's
        distance from the training images' pooled features, read off the same forward pass."""
        from skin_cancer.evaluation.calibration import apply_temperature
        from skin_cancer.evaluation.ood import FEATURE_LAYER
        from skin_cancer.models.inference import compile_predictor, run_batches, split_features

        with self._compiling:
            # A detector set after the graph was compiled (dataclasses.replace) needs the features too.
            if self._forward is None or (self.ood is not None and not self._with_features):
                self._with_features = self.ood is not None
                op, layer = self.operating_point, FEATURE_LAYER if self._with_features else None
                self._forward = compile_predictor(self.model, op.tta_views, op.runtime, layer)
        images = np.asarray(images, dtype="float32")
        if len(images) <= BATCH:  # one request's worth: no padding, no progress bar
            rows = self._forward(images)
        else:
            rows = run_batches(
                self._forward, (images[i : i + BATCH] for i in range(0, len(images), BATCH)), len(images), BATCH, "predicting"
            )
        raw, features = split_features(rows, self.model.output_shape[-1]) if self._with_features else (rows, None)
        probabilities = apply_temperature(raw, self.operating_point.temperature, self.operating_point.class_prior)
        return probabilities, None if self.ood is None else self.ood.distance(features)

    def predict(self, images: list) -> list[dict]:
        """One result per input (a path or an RGB array): probability, label and threshold, or an
        `error` naming what is wrong with that input; the other inputs are still predicted."""
        return list(self.predict_iter(images))

    def predict_iter(self, images, batch_size: int = BATCH):
        """`predict` as a stream: inputs are decoded and scored `batch_size` at a time, so memory
        stays flat however many images a folder holds."""
        batch, start = [], 0
        for item in images:
            batch.append(item)
            if len(batch) == batch_size:
                yield from self._predict_batch(batch, start)
                batch, start = [], start + batch_size
        if batch:
            yield from self._predict_batch(batch, start)

    def _predict_batch(self, items: list, start: int) -> list[dict]:
        """Results of one batch; `start` is its first item's position among all inputs."""
        results, decoded = [], []
        for i, item in enumerate(items, start):
            name = str(item) if isinstance(item, (str, Path)) else f"array {i}"
            try:
                decoded.append(self.load_file(Path(item)) if isinstance(item, (str, Path)) else self._check_array(item))
                results.append({"image": name})
            except (BadImage, OSError, ValueError) as error:
                results.append({"image": name, "error": str(error)})
        scored = [r for r in results if "error" not in r]
        if scored:
            probabilities, distances = self._scores(np.stack(decoded))
            for result, probability in zip(scored, probabilities):
                result.update(self._decide(probability))
            for result, distance in zip(scored, [] if distances is None else distances):
                self._flag(result, float(distance))
        return results

    def _flag(self, result: dict, distance: float) -> None:
        """Add the out-of-distribution verdict to a result; beyond the cut-off the diagnosis is
        withheld (label and probability None, a K-class model's class probabilities removed) and
        `note` says why."""
        from skin_cancer.evaluation.ood import NOT_LIKE_TRAINING

        flagged = distance > self.ood.cutoff
        result.update(out_of_distribution=flagged, ood_distance=distance, ood_cutoff=self.ood.cutoff)
        if flagged:
            for key in ("probabilities", "top3", "malignant_score"):
                result.pop(key, None)
            result.update(label=None, probability=None, note=NOT_LIKE_TRAINING)

    def load_file(self, path: Path) -> np.ndarray:
        """A file decoded and resized as the input pipeline does it; BadImage naming the problem,
        whether Pillow or TensorFlow's decoder refuses it."""
        import tensorflow as tf

        from skin_cancer.data.tf_input import load_image

        with tempfile.TemporaryDirectory() as converted:
            # Pillow first, to reject bad files one by one with a reason; formats and modes the
            # input pipeline cannot read as they are get an RGB PNG copy, as in prepare.
            record = read_image(path, "predict", "", self.operating_point.max_image_pixels, (Path(converted),) * 2)
            try:
                return load_image(record.path, self.image_size).numpy()
            except tf.errors.OpError as error:
                raise BadImage(f"the image decoder refused it: {error.message.splitlines()[0]}") from None

    def _check_array(self, item) -> np.ndarray:
        """An RGB(A) array resized to the model's input, or ValueError saying what is wrong with it."""
        import tensorflow as tf

        array = np.asarray(item)
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ValueError(f"expected an HxWx3 RGB (or HxWx4 RGBA) array, got shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise ValueError(f"expected integer or float pixel values, got dtype {array.dtype}")
        array = array[..., :3].astype("float32")
        if not np.isfinite(array).all():
            raise ValueError("the array holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise ValueError(f"pixel values must lie in [0, 255], found [{low:g}, {high:g}]")
        if np.issubdtype(np.asarray(item).dtype, np.floating) and 0 < high <= 1:
            raise ValueError("float pixel values all lie in [0, 1]: scale them to [0, 255] (the model takes 0-255)")
        return tf.image.resize(array, (self.image_size,) * 2).numpy()

    def _decide(self, probability) -> dict:
        """Binary: the malignancy probability, the label at the threshold. K classes: the top class and
        its probability, every class's probability, the top three, and the malignant score."""
        from skin_cancer.evaluation.outputs import predicted_classes

        op = self.operating_point
        if not op.multiclass:
            return {
                "probability": float(probability),
                "label": self.class_names[int(predicted_classes(np.asarray([probability]), self.threshold)[0])],
                "threshold": self.threshold,
            }
        from skin_cancer.evaluation.multiclass import malignant_score

        p = np.asarray(probability, dtype=float)
        order = np.argsort(-p, kind="stable")
        result = {
            "probability": float(p[order[0]]),
            "label": self.class_names[order[0]],
            "threshold": None,
            "probabilities": {name: float(v) for name, v in zip(self.class_names, p)},
            "top3": [{"label": self.class_names[k], "probability": float(p[k])} for k in order[:3]],
        }
        if op.malignant_classes:
            result["malignant_score"] = float(malignant_score(p[None], self.class_names, op.malignant_classes)[0])
        return result


def load_classifier(source: str | Path = "models/model.keras", *, run_id: str | None = None) -> Classifier:
    """A classifier from a `.keras` file (with `operating_point.json` beside it), a registered model
    `models:/NAME@ALIAS` (or `models:/NAME/VERSION`), or the model of an MLflow run (`run_id`).
    Raises DataError naming what is missing."""
    if run_id is not None or str(source).startswith(("models:/", "runs:/")):
        uri = f"runs:/{run_id}/model" if run_id is not None else str(source)
        model, operating_point, detector = load_logged_model(uri)
        return Classifier(model, operating_point, uri, detector)
    from skin_cancer.models.classifier import load_model

    path = Path(source)
    if not path.is_file():
        raise DataError(f"model {path} not found (run the pipeline, or give --model / --run)")
    op_path = path.parent / OPERATING_POINT_FILE
    if not op_path.is_file():
        raise DataError(f"{op_path} not found: the model's temperature and threshold come from the calibrate stage")
    from skin_cancer.evaluation import ood

    # A model calibrated before the flag existed has no detector file: it predicts without the flag.
    detector = ood.load(path.parent / OOD_FILE) if (path.parent / OOD_FILE).is_file() else None
    return Classifier(load_model(path), OperatingPoint.load(op_path), str(path), detector)


def load_logged_model(uri: str):
    """(Keras model, operating point, out-of-distribution detector or None) of an MLflow model URI:
    `runs:/<run>/model`, `models:/<name>@<alias>` or `models:/<name>/<version>`; DataError naming a
    missing one. Only the serving model carries the detector; the Keras flavour has none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    import skin_cancer.models.classifier  # noqa: F401  registers the model's own layers with Keras
    from skin_cancer.tracking.access import refused
    from skin_cancer.tracking.store import tracking_uri

    server = tracking_uri()
    mlflow.set_tracking_uri(server)
    try:
        info = mlflow.models.get_model_info(uri)
        if "keras" in info.flavors:
            model, detector = mlflow.keras.load_model(uri), None
        else:  # the registered serving pyfunc wraps the classifier
            served = mlflow.pyfunc.load_model(uri).unwrap_python_model().classifier
            model, detector = served.model, served.ood
    except (MlflowException, OSError, AttributeError) as error:
        if isinstance(error, MlflowException) and error.get_http_status_code() in (401, 403):
            raise refused(error.get_http_status_code(), server, f"loading {uri}") from None
        raise DataError(f"{uri}: {str(error).splitlines()[0]}") from None
    operating_point = (info.metadata or {}).get("operating_point")
    if not operating_point:
        raise DataError(f"{uri}: the model carries no operating point (logged before the calibrate stage existed?)")
    return model, OperatingPoint.from_dict(operating_point, uri), detector


def image_files(inputs: list[str]) -> tuple[list[str], list[str]]:
    """(images, skipped): the files named, and the image files (by suffix) that named folders hold,
    recursively and sorted; `skipped` lists the other files in those folders. A file named directly
    is taken whatever its suffix. DataError naming the path for a missing path, or when no image is found."""
    from skin_cancer.data.collections import IMAGE_SUFFIXES

    files, skipped = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            files += [str(p) for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
            skipped += [str(p) for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
        elif path.exists():
            files.append(str(path))
        else:
            raise DataError(f"{path}: no such file or folder")
    if not files:
        raise DataError(f"no images found in {', '.join(inputs)} (looked for {' '.join(sorted(IMAGE_SUFFIXES))})")
    return files, skipped


# REST answer columns of the out-of-distribution flag (empty for a model without a detector).

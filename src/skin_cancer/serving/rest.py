"""The REST model: the pyfunc around a Classifier that the registry holds and `mlflow models serve`
serves (rows with a base64 `image` column in; probability, label, threshold or error out), its
signature, its request limits and an input example."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from skin_cancer.serving.classifier import Classifier, load_classifier

OOD_COLUMNS = ["out_of_distribution", "ood_distance", "ood_cutoff", "note"]


class RequestRejected(ValueError):
    """A request over the serving limits: the client's to fix, refused whole (HTTP 400)."""


def predict_encoded(classifier: Classifier, encoded: list, max_batch: int, max_bytes: int) -> list[dict]:
    """Predictions for base64-encoded image files (JPEG, PNG, ...: the REST request format), one
    result per item; an item that is not base64 or not a usable image gets an `error`. A request
    over `max_batch` items, or holding an image over `max_bytes`, raises RequestRejected."""
    import base64
    import binascii

    if len(encoded) > max_batch:
        raise RequestRejected(f"a request holds at most {max_batch} images, this one {len(encoded)}")
    for i, text in enumerate(encoded):
        # base64 holds 3 bytes per 4 characters: measured before decoding, so a huge row costs nothing.
        size = len(str(text)) * 3 // 4
        if size > max_bytes + 2:
            raise RequestRejected(f"row {i}: about {size} bytes of image, over the limit of {max_bytes} bytes per image")
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
                raise RequestRejected(f"row {i}: {len(data)} bytes of image, over the limit of {max_bytes} bytes per image")
            path = Path(folder) / f"image-{i}"
            path.write_bytes(data)
            files.append((i, path))
        for (i, _), result in zip(files, classifier.predict([path for _, path in files])):
            result.pop("image", None)
            results[i] = result
    return results


def serving_model():
    """An MLflow pyfunc model around `Classifier`: rows with a base64 `image` column in,
    probability, label, threshold (or error) out; what the registry holds and `mlflow models serve`
    serves. Built in a function so that importing this module does not import mlflow; cloudpickle
    stores the class with the model, and the model carries this package as its code.

    MLflow's scoring server answers any exception from `predict` with 400 Bad Request, so a fault
    of the server (the model failing) would read as the client's mistake: requests over the limits
    are refused as invalid (400), every other exception is re-raised as an internal error (500)."""
    import json
    import logging

    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

    class ImageClassifierModel(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.classifier = load_classifier(context.artifacts["model"])
            self.limits = context.model_config  # serving.* of the run that logged it

        def predict(self, context, model_input, params=None):
            if isinstance(model_input, pd.DataFrame) and "image" not in model_input.columns:
                raise MlflowException("the request has no `image` column", error_code=INVALID_PARAMETER_VALUE)
            images = model_input["image"] if isinstance(model_input, pd.DataFrame) else model_input
            try:
                results = predict_encoded(self.classifier, list(images), self.limits["max_batch"], self.limits["max_image_bytes"])
            except RequestRejected as error:
                raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None
            except Exception as error:
                logging.getLogger(__name__).exception("the model failed on a request")
                raise MlflowException(
                    f"the model failed on this request ({type(error).__name__}: {error}); the request itself was valid",
                    error_code=INTERNAL_ERROR,
                ) from error
            columns = ["probability", "label", "threshold", "error", *OOD_COLUMNS]
            if not self.classifier.operating_point.multiclass:
                return pd.DataFrame(results, columns=columns)
            # K classes: every class's probability as a JSON object per row.
            for result in results:
                if "probabilities" in result:
                    result["probabilities"] = json.dumps(result["probabilities"])
            return pd.DataFrame(results, columns=[*columns, "probabilities"])

    return ImageClassifierModel()


def serving_signature():
    """Columns in and out of the serving model."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema(
            [
                ColSpec("double", "probability"),
                ColSpec("string", "label"),
                ColSpec("double", "threshold"),
                ColSpec("string", "error"),
                # Models with an out-of-distribution detector (skin_cancer.evaluation.ood).
                ColSpec("boolean", "out_of_distribution", required=False),
                ColSpec("double", "ood_distance", required=False),
                ColSpec("double", "ood_cutoff", required=False),
                ColSpec("string", "note", required=False),
                ColSpec("string", "probabilities", required=False),  # K-class models: JSON per class
            ]
        ),
    )


@dataclass(frozen=True)
class RestModel:
    """What the registry logs as a run's `serving` model: the pyfunc, its signature, an example
    request and its request limits (logged as the model's model_config)."""

    python_model: object
    signature: object
    example: object
    limits: dict


def rest_model(example_image: Path, limits: dict) -> RestModel:
    """The REST model, with `example_image` (a file) base64-encoded as its input example and
    `limits` ({max_batch, max_image_bytes}: serving.* of the config) as its request limits."""
    import base64

    import pandas as pd

    example = pd.DataFrame({"image": [base64.b64encode(Path(example_image).read_bytes()).decode()]})
    return RestModel(serving_model(), serving_signature(), example, dict(limits))

"""Knowing when it does not know: how far an image's pooled backbone features lie from the training
images' (Mahalanobis distance under a shrunk covariance), with a cut-off frozen on validation so
that a chosen share of in-domain images is flagged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureDistance:
    """A Gaussian fitted to training features; `cutoff` is the distance above which an image is
    flagged as unlike the training data."""

    mean: np.ndarray
    precision: np.ndarray
    cutoff: float = np.inf

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of `features` (n, d) from the training mean."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, self.precision, centred), 0.0))

    def flagged(self, features: np.ndarray) -> np.ndarray:
        return self.distance(features) > self.cutoff

    def with_cutoff(self, validation_features: np.ndarray, flag_share: float) -> FeatureDistance:
        """The same Gaussian with the cut-off at the (1 - flag_share) quantile of validation distances:
        about `flag_share` of images like the validation images get flagged."""
        if not 0 <= flag_share < 1:
            raise ValueError(f"flag_share={flag_share} must be in [0, 1)")
        cutoff = float(np.quantile(self.distance(validation_features), 1 - flag_share))
        return FeatureDistance(self.mean, self.precision, cutoff)


def fit(training_features: np.ndarray) -> FeatureDistance:
    """Mean and Ledoit-Wolf shrunk precision of training features (n, d): shrinkage keeps the
    precision well conditioned when d (1280 for MobileNetV2) is close to or above n."""
    from sklearn.covariance import LedoitWolf

    features = np.asarray(training_features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least two feature rows (n, d), got shape {features.shape}")
    estimate = LedoitWolf().fit(features)
    return FeatureDistance(estimate.location_, estimate.precision_)


def auroc(in_domain: np.ndarray, out_of_domain: np.ndarray) -> float:
    """ROC AUC of telling out-of-domain images (positives) from in-domain ones by a score (distance)."""
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([in_domain, out_of_domain])
    labels = np.concatenate([np.zeros(len(in_domain)), np.ones(len(out_of_domain))])
    return float(roc_auc_score(labels, scores))


NOT_LIKE_TRAINING = "not a dermoscopic image like the training data"


def flag_text(result: dict) -> str:
    """Why a prediction carries no diagnosis, in one line."""
    return f"{result['note']} (distance {result['ood_distance']:.1f} > cut-off {result['ood_cutoff']:.1f})"


def save(detector: FeatureDistance | None, path, reason: str = "") -> None:
    """Write the detector (precision as float32: 6.5 MB for 1280 features), or for a model without
    one a file saying why (`reason`), so the pipeline's output always exists."""
    from skin_cancer.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if detector is None:
            np.savez(handle, reason=np.array(reason))
        else:
            np.savez(handle, mean=detector.mean, precision=detector.precision.astype(np.float32), cutoff=detector.cutoff)


def load(path) -> FeatureDistance | None:
    """The detector saved at `path`; None when the model has none (the file says why)."""
    with np.load(path) as saved:
        if "mean" not in saved:
            return None
        return FeatureDistance(saved["mean"], saved["precision"].astype(np.float64), float(saved["cutoff"]))


# The layer whose output (pooled backbone features) the detector reads.
FEATURE_LAYER = "pool"


def has_features(model) -> bool:
    """Whether `model` has one pooled feature space (an ensemble has none)."""
    try:
        model.get_layer(FEATURE_LAYER)
    except ValueError:
        return False
    return True


def pooled_features(model):
    """The Keras model from an image to the pooled backbone features its classifier reads; None for
    a model without one feature space (an ensemble)."""
    import keras

    if not has_features(model):
        return None
    return keras.Model(model.input, model.get_layer(FEATURE_LAYER).output, name="pooled_features")


def fit_on_images(model, train_paths, validation_features, *, image_size: int, batch_size: int, flag_share: float, runtime: str):
    """The detector of a trained classifier: a Gaussian on the pooled features of `train_paths`, the
    cut-off flagging `flag_share` of `validation_features` (which the calibrate stage reads off its
    validation pass, see inference.compile_predictor)."""
    from skin_cancer.models import inference

    pooled = pooled_features(model)
    forward = inference.compile_forward(lambda images: pooled(images, training=False), model.input_shape[1:], runtime)
    training = inference.predict_files(forward, train_paths, image_size, batch_size, "out-of-distribution: training")
    return fit(training).with_cutoff(validation_features, flag_share)

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

"""What the calibrate stage fits on the validation split: the temperature (temperature scaling), a
K-class model's class prior, the decision (a binary model's threshold by evaluate.threshold_policy;
argmax for K classes) and the validation metrics at that operating point, per source too. No test
image is looked at."""

from __future__ import annotations

import numpy as np
import pandas as pd

from skin_cancer import host
from skin_cancer.data.collections import other_collections
from skin_cancer.data.prepare import images_fingerprint
from skin_cancer.evaluation import calibration
from skin_cancer.evaluation import metrics as ev
from skin_cancer.evaluation import multiclass as mc
from skin_cancer.operating_point import OperatingPoint
from skin_cancer.schema import Config


def fit_operating_point(cfg: Config, val: pd.DataFrame, raw: np.ndarray, report: dict, train_labels) -> OperatingPoint:
    """The operating point of a model whose uncalibrated validation probabilities are `raw` (rows of
    the manifest `val`), for the classes of prepare's `report`; `train_labels` (the training
    images' class indices) give a K-class model's class prior."""
    temperature = calibration.fit_temperature(val.label_index, raw) if cfg.evaluate.temperature_scaling else 1.0
    class_prior = None
    if cfg.evaluate.class_prior == "uniform":
        class_prior = mc.class_shares(train_labels, len(report["class_names"]))
    prob = calibration.apply_temperature(raw, temperature, class_prior)
    bins = cfg.evaluate.calibration_bins
    by_source = {}
    if report["positive_class"] is None:  # K classes: argmax decides, nothing to choose
        threshold, policy = None, "argmax"
        validation = mc.multiclass_metrics(
            val.label_index,
            prob,
            report["class_names"],
            malignant=cfg.data.malignant_classes or [],
            bins=bins,
            resamples=0,
            seed=0,
        )
        validation.update(ece=validation["top_label_ece"], uncalibrated_ece=mc.top_label_ece(val.label_index, raw, bins))
    else:
        threshold, policy = calibration.choose_threshold(val.label_index, prob, cfg.evaluate), cfg.evaluate.threshold_policy
        validation = ev.binary_metrics(val.label_index, prob, threshold)
        uncalibrated = calibration.calibration_metrics(val.label_index, raw, bins)
        validation.update({f"uncalibrated_{k}": v for k, v in uncalibrated.items()})
        validation.update(calibration.calibration_metrics(val.label_index, prob, bins))
        # The one-source subsets, as evaluate scores them on test: a recipe for ranking lesions inside
        # one source can be chosen on these without looking at a test split.
        by_source = ev.per_source_metrics(val, prob, threshold, other_collections(cfg), "validation")
    return OperatingPoint(
        temperature=temperature,
        threshold=threshold,
        threshold_policy=policy,
        tta_views=cfg.evaluate.tta_views,
        runtime=cfg.evaluate.runtime,
        image_size=cfg.data.image_size,
        max_image_pixels=cfg.data.max_image_pixels,
        class_names=report["class_names"],
        positive_class=report["positive_class"],
        malignant_classes=cfg.data.malignant_classes,
        class_prior=class_prior,
        validation=ev.json_safe(validation),
        validation_by_source=ev.json_safe(by_source),
        # Which images the validation metrics come from: only models validated alike are compared.
        validation_fingerprint=images_fingerprint(val.sha256),
        host=host.describe(),
    )

"""Calibration and the operating point: temperature scaling (fit on validation, applied everywhere
the model's output is read), the class prior divided out of K-class probabilities, the decision
threshold, both re-fitted on a labelled sample of a new collection, reliability tables, ECE and
Brier score (numpy and scikit-learn; pure functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skin_cancer.evaluation import outputs
from skin_cancer.schema import EvaluateConfig


def apply_temperature(prob, temperature: float, class_prior=None) -> np.ndarray:
    """Probabilities with their logits divided by `temperature` (1 leaves them unchanged; the
    0.5 point, the argmax and the ranking never change). `prob`: one sigmoid probability per
    image (n,) or softmax rows (n, K). K classes only: `class_prior` (the share of each class
    among the training images) is then divided out, giving the probabilities of a uniform class mix,
    whose argmax is the Bayes decision for balanced accuracy (post-hoc logit adjustment, Menon et
    al. 2021). Renormalising reorders each class's images too, so one-vs-rest AUCs change as well."""
    z = outputs.to_logits(prob) / temperature
    if class_prior is not None:
        z = z - np.log(np.asarray(class_prior, dtype=float))
    return outputs.from_logits(z)


def fit_temperature(y_true, prob) -> float:
    """The temperature minimising the negative log-likelihood of `y_true` (temperature scaling,
    Guo et al. 2017), searched over [0.05, 20]; binary (n,) or K-class (n, K) probabilities, with
    `y_true` the 0/1 label or the class index."""
    from scipy.optimize import minimize_scalar

    logits = outputs.to_logits(prob)
    nll = lambda log_t: outputs.mean_nll(y_true, logits / np.exp(log_t))  # noqa: E731
    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20)), method="bounded").x))


def reliability(y_true, prob, bins: int) -> pd.DataFrame:
    """Per equal-width probability bin: images, mean predicted probability and observed fraction
    of the positive class (empty bins left out)."""
    y_true, prob = np.asarray(y_true, dtype=float), np.asarray(prob, dtype=float)
    index = np.minimum((prob * bins).astype(int), bins - 1)
    rows = [
        {
            "bin_low": b / bins,
            "bin_high": (b + 1) / bins,
            "count": int((index == b).sum()),
            "mean_predicted": float(prob[index == b].mean()),
            "fraction_positive": float(y_true[index == b].mean()),
        }
        for b in range(bins)
        if (index == b).any()
    ]
    return pd.DataFrame(rows, columns=["bin_low", "bin_high", "count", "mean_predicted", "fraction_positive"])


def calibration_metrics(y_true, prob, bins: int) -> dict[str, float]:
    """Expected calibration error (equal-width bins, of the positive-class probability) and Brier score."""
    table = reliability(y_true, prob, bins)
    ece = float((table["count"] * (table.mean_predicted - table.fraction_positive).abs()).sum() / max(len(prob), 1))
    return {"ece": ece, "brier": float(skm.brier_score_loss(np.asarray(y_true).astype(int), np.asarray(prob), pos_label=1))}


def choose_threshold(y_val, prob_val, cfg: EvaluateConfig) -> float:
    """The decision threshold, chosen without looking at any test set.

    "fixed": `cfg.threshold`; "youden": the validation threshold maximising Youden's J
    (sensitivity + specificity - 1); "target_sensitivity": the highest validation threshold whose
    sensitivity reaches `cfg.target_sensitivity`.
    """
    if cfg.threshold_policy == "fixed":
        return float(cfg.threshold)
    fpr, tpr, thresholds = skm.roc_curve(np.asarray(y_val).astype(int), np.asarray(prob_val))
    if cfg.threshold_policy == "youden":
        best = int(np.argmax(tpr - fpr))
    else:
        best = int(np.argmax(tpr >= cfg.target_sensitivity))  # thresholds fall as sensitivity rises
    return float(np.clip(thresholds[best], 1e-6, 1.0))


def recalibration_sample(y_true, groups, size: int, seed: int) -> np.ndarray:
    """Mask of a seeded labelled sample of about `size` images, half per class, drawn as whole groups
    (lesions), for re-fitting temperature and threshold on a new collection; the rest is scored."""
    y_true, groups = np.asarray(y_true).astype(int), pd.Series(np.asarray(groups)).astype(str)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(y_true), dtype=bool)
    for label in (0, 1):
        lesions = groups[y_true == label].unique()
        for lesion in rng.permutation(lesions):
            if chosen[y_true == label].sum() >= size // 2:
                break
            chosen |= (groups == lesion).to_numpy()
    return chosen


def recalibrate(y_sample, prob_sample, cfg: EvaluateConfig) -> tuple[float, float]:
    """(temperature, threshold) re-fitted on a labelled sample of a new collection, on top of the
    model's calibrated probabilities, with the validation split's threshold policy."""
    temperature = fit_temperature(y_sample, prob_sample) if cfg.temperature_scaling else 1.0
    return temperature, choose_threshold(y_sample, apply_temperature(prob_sample, temperature), cfg)

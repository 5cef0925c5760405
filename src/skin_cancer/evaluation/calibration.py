"""Calibration: temperature scaling (fit on validation, applied everywhere the model's output is
read), the class prior divided out of K-class probabilities, reliability tables, ECE and Brier
score (numpy and scikit-learn; pure functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skin_cancer.evaluation import outputs


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

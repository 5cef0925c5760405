"""The model's output in its two forms, and the one place that tells them apart: a binary model's
positive-class probability per image, shape (n,), or a K-class model's softmax rows, shape (n, K).
Calibration, decisions, confidence and explanations go through these functions, so that no other
module branches on the shape of a probability array (tests/unit/evaluation/test_outputs.py keeps it
so)."""

from __future__ import annotations

import numpy as np


def is_class_matrix(prob) -> bool:
    """True for K-class softmax rows (n, K), False for one positive-class probability per image (n,)."""
    return np.ndim(prob) == 2


def to_logits(prob) -> np.ndarray:
    """Logits of the probabilities: the log-odds of a positive-class probability, the log of each
    softmax row (up to a per-row constant, which softmax ignores). Clipped away from 0 and 1."""
    prob = np.asarray(prob, dtype=float)
    if is_class_matrix(prob):
        return np.log(np.clip(prob, 1e-12, 1.0))
    prob = np.clip(prob, 1e-7, 1 - 1e-7)
    return np.log(prob) - np.log1p(-prob)


def from_logits(logits) -> np.ndarray:
    """Probabilities of `to_logits`' form: the sigmoid of (n,) logits, the softmax of (n, K) rows."""
    if is_class_matrix(logits):
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def mean_nll(y_true, logits) -> float:
    """Mean negative log-likelihood of the labels (0/1, or the class index) under the logits."""
    if is_class_matrix(logits):
        from scipy.special import logsumexp

        rows = np.arange(len(logits))
        return float(np.mean(logsumexp(logits, axis=1) - logits[rows, np.asarray(y_true, dtype=int)]))
    return float(np.mean(np.logaddexp(0, logits) - np.asarray(y_true, dtype=float) * logits))


def predicted_classes(prob, threshold: float | None) -> np.ndarray:
    """The one decision rule, class index per image: for a binary model's positive-class
    probabilities (n,), positive (1) at or above `threshold`; for K-class probabilities (n, K), the
    most probable class (the threshold is not used)."""
    prob = np.asarray(prob)
    return prob.argmax(axis=1) if is_class_matrix(prob) else (prob >= threshold).astype(int)


def confidence(prob, threshold: float | None) -> np.ndarray:
    """How sure each decision is: the top class's probability (K classes), or the distance of the
    positive-class probability from the threshold (binary)."""
    prob = np.asarray(prob)
    return prob.max(axis=1) if is_class_matrix(prob) else np.abs(prob - threshold)


def shown_probability(prob) -> np.ndarray:
    """The probability a figure shows per image: the top class's (K classes), the positive class's
    (binary)."""
    prob = np.asarray(prob)
    return prob.max(axis=1) if is_class_matrix(prob) else prob


def explained_classes(prob, threshold: float | None) -> list[int | None]:
    """The class a per-image explanation is of: the predicted class (K classes); None for a binary
    model, whose one output is explained whatever the decision."""
    if not is_class_matrix(prob):
        return [None] * len(prob)
    return [int(k) for k in predicted_classes(prob, threshold)]


def output_unit(row) -> int:
    """Which unit of one image's raw model output (sigmoid unit or softmax row) speaks for the
    prediction: the one sigmoid unit, else the most probable class."""
    row = np.asarray(row)
    return 0 if row.shape[-1] == 1 else int(np.argmax(row))

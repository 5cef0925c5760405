"""K-class metrics against hand counts, scikit-learn and the ISIC Challenge's scoring package."""

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm

from skin_cancer.evaluation import multiclass as mc
from skin_cancer.evaluation.metrics import bootstrap_ci

CLASSES = ["bcc", "mel", "nv"]
# Rows: true classes bcc, bcc, mel, mel, mel, nv, nv, nv, nv, nv.
Y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
PROB = np.array(
    [
        [0.7, 0.2, 0.1],  # bcc -> bcc
        [0.2, 0.5, 0.3],  # bcc -> mel
        [0.1, 0.8, 0.1],  # mel -> mel
        [0.1, 0.6, 0.3],  # mel -> mel
        [0.1, 0.3, 0.6],  # mel -> nv
        [0.0, 0.1, 0.9],  # nv -> nv
        [0.1, 0.1, 0.8],  # nv -> nv
        [0.1, 0.2, 0.7],  # nv -> nv
        [0.2, 0.4, 0.4],  # nv -> mel (argmax takes the first of a tie)
        [0.6, 0.1, 0.3],  # nv -> bcc
    ]
)


def test_confusion_and_per_class_metrics_match_hand_counts():
    assert mc.confusion_counts(Y, PROB).tolist() == [[1, 1, 0], [0, 2, 1], [1, 1, 3]]
    per = mc.per_class(Y, PROB, CLASSES)
    # mel: TP 2, FN 1, FP 2 (one bcc, one nv), TN 5.
    assert per["mel"]["sensitivity"] == pytest.approx(2 / 3) and per["mel"]["specificity"] == pytest.approx(5 / 7)
    assert per["mel"]["precision"] == pytest.approx(2 / 4) and per["mel"]["f1"] == pytest.approx(4 / 7)
    assert per["nv"]["n"] == 5 and per["nv"]["sensitivity"] == pytest.approx(3 / 5)
    assert per["mel"]["roc_auc"] == pytest.approx(skm.roc_auc_score(Y == 1, PROB[:, 1]))


def test_macro_auc_and_confusion_counts_equal_scikit_learns():
    rng = np.random.default_rng(0)
    y = np.r_[0, 1, 2, 3, rng.integers(0, 4, 400)]
    prob = rng.dirichlet(np.ones(4), len(y)) + np.eye(4)[y] * 0.2
    prob /= prob.sum(axis=1, keepdims=True)
    expected = skm.roc_auc_score(y, prob, multi_class="ovr", average="macro")
    assert mc.macro_auc(y, prob) == pytest.approx(expected, abs=1e-12)
    assert (mc.confusion_counts(y, prob) == skm.confusion_matrix(y, prob.argmax(axis=1), labels=range(4))).all()


def test_balanced_accuracy_is_the_isic_challenge_metric():
    """The same number as isic-challenge-scoring's balanced_multiclass_accuracy, on hand data and
    on a random seven-class set."""
    from isic_challenge_scoring.metrics import balanced_multiclass_accuracy

    assert mc.balanced_accuracy(Y, PROB) == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    prob = rng.dirichlet(np.ones(7), 500) + np.eye(7)[y] * rng.uniform(0, 0.5, (500, 1))
    prob /= prob.sum(axis=1, keepdims=True)
    columns = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    truth = pd.DataFrame(np.eye(7)[y], columns=columns)
    theirs = balanced_multiclass_accuracy(truth, pd.DataFrame(prob, columns=columns), pd.Series(np.ones(500)))
    assert mc.balanced_accuracy(y, prob) == pytest.approx(theirs)
    assert mc.balanced_accuracy(y, prob) == pytest.approx(skm.balanced_accuracy_score(y, prob.argmax(axis=1)))


def test_macro_auc_and_top_label_ece():
    assert mc.macro_auc(Y, PROB) == pytest.approx(np.mean([skm.roc_auc_score(Y == k, PROB[:, k]) for k in range(3)]))
    # Top-label confidences 0.7 0.5 0.8 0.6 0.6 0.9 0.8 0.7 0.4 0.6, correct 1 0 1 1 0 1 1 1 0 0; with one
    # bin the ECE is |mean confidence - accuracy| = |0.66 - 0.6|.
    assert mc.top_label_ece(Y, PROB, bins=1) == pytest.approx(0.06)
    confident = np.eye(3)[Y]
    assert mc.top_label_ece(Y, confident, bins=10) == 0.0


def test_malignant_score_sums_the_malignant_classes_and_gives_binary_metrics():
    score = mc.malignant_score(PROB, CLASSES, ["bcc", "mel"])
    np.testing.assert_allclose(score, PROB[:, 0] + PROB[:, 1])
    metrics = mc.multiclass_metrics(Y, PROB, CLASSES, malignant=["bcc", "mel"], bins=5, resamples=200, seed=0)
    assert metrics["malignant.n_positive"] == 5
    assert metrics["malignant.roc_auc"] == pytest.approx(skm.roc_auc_score(Y < 2, score))
    assert metrics["malignant.sensitivity"] == pytest.approx(4 / 5)  # 0.9, 0.7, 0.9, 0.7, 0.4 >= 0.5
    assert metrics["malignant.specificity"] == pytest.approx(3 / 5)  # nevi: 0.1, 0.2, 0.3, 0.6, 0.7
    with pytest.raises(ValueError, match=r"\['akiec'\] are not classes"):
        mc.malignant_score(PROB, CLASSES, ["akiec"])


def test_set_metrics_are_flat_with_lesion_intervals_that_bracket_the_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    prob = rng.dirichlet(np.ones(3), 300) + np.eye(3)[y] * 0.4
    prob /= prob.sum(axis=1, keepdims=True)
    groups = np.repeat(np.arange(150), 2)  # lesions photographed twice
    metrics = mc.multiclass_metrics(y, prob, CLASSES, malignant=["mel"], bins=10, resamples=300, seed=0, groups=groups)
    for key in ("balanced_accuracy", "macro_auc"):
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"]
    assert metrics["n_images"] == 300 and {"mel.sensitivity", "nv.roc_auc", "bcc.f1"} <= set(metrics)
    images = bootstrap_ci(y, prob, mc.balanced_accuracy, n_resamples=300, seed=0)
    lesions = bootstrap_ci(y, prob, mc.balanced_accuracy, n_resamples=300, seed=0, groups=groups)
    assert images != lesions


def test_a_set_without_every_class_has_no_macro_auc():
    keep = Y < 2
    metrics = mc.multiclass_metrics(Y[keep], PROB[keep], CLASSES, malignant=[], bins=5, resamples=100, seed=0)
    assert metrics["macro_auc"] is None and "macro_auc_ci_low" not in metrics
    assert metrics["nv.sensitivity"] is None and metrics["nv.n"] == 0


def test_class_shares_are_the_training_prior_and_need_every_class():
    assert mc.class_shares([0, 0, 1, 2, 2, 2], 3) == pytest.approx([2 / 6, 1 / 6, 3 / 6])
    with pytest.raises(ValueError, match=r"\[1\]"):
        mc.class_shares([0, 2, 2], 3)

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from skin_cancer.evaluation import calibration, figures, outputs
from skin_cancer.evaluation import metrics as ev
from skin_cancer.schema import EvaluateConfig

Y = [0, 0, 0, 0, 1, 1, 1]
P = [0.1, 0.4, 0.6, 0.2, 0.9, 0.3, 0.7]


def test_binary_metrics_match_hand_counts():
    # threshold 0.5: TN=3 (0.1, 0.4, 0.2), FP=1 (0.6), TP=2 (0.9, 0.7), FN=1 (0.3)
    m = ev.binary_metrics(Y, P, 0.5)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(Y, P))
    assert (m["n_images"], m["n_positive"], m["threshold"]) == (7, 3, 0.5)


def test_roc_auc_by_hand():
    # 12 positive/negative pairs; the positive scores higher in 4 + 2 + 4 of them (0.9, 0.3, 0.7).
    assert ev.binary_metrics(Y, P, 0.5)["roc_auc"] == pytest.approx(10 / 12)


def test_threshold_moves_the_operating_point():
    assert ev.binary_metrics(Y, P, 0.25)["sensitivity"] == 1.0
    assert ev.binary_metrics(Y, P, 0.95)["specificity"] == 1.0


def test_single_class_gives_nan_auc_not_a_crash():
    assert np.isnan(ev.binary_metrics([1, 1], [0.2, 0.8], 0.5)["roc_auc"])


def test_confusion_matrix_rows_are_true_classes():
    conf = ev.confusion(Y, P, 0.5, ["benign", "malignant"])
    assert conf == {"labels": ["benign", "malignant"], "matrix": [[3, 1], [1, 2]]}


def test_classification_report_names_classes():
    report = ev.report(Y, P, 0.5, ["benign", "malignant"])
    assert report["malignant"]["recall"] == pytest.approx(2 / 3) and report["benign"]["support"] == 4


def test_figures_are_written(tmp_path):
    figures.plot_confusion(ev.confusion(Y, P, 0.5, ["benign", "malignant"]), tmp_path / "cm.png")
    figures.plot_roc(ev.roc_points(Y, P), 0.75, tmp_path / "roc.png")
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "phase": ["head", "head", "finetune"],
            "loss": [0.7, 0.6, 0.5],
            "val_loss": [0.7, 0.65, 0.6],
            "auc": [0.6, 0.7, 0.8],
            "val_auc": [0.6, 0.7, 0.75],
        }
    )
    figures.plot_history(history, tmp_path / "curves.png")
    for name in ("cm.png", "roc.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_summary_table_lists_the_headline_metrics():
    table = ev.summary_table(ev.binary_metrics(Y, P, 0.5))
    assert "roc_auc" in table and "sensitivity" in table and "0.7143" in table


def test_threshold_policies():
    assert calibration.choose_threshold(Y, P, EvaluateConfig(threshold=0.3, threshold_policy="fixed")) == 0.3
    # Youden's J: at 0.7 sens 2/3, spec 1 (J = 0.67); at 0.3 sens 1, spec 1/2 (J = 0.5).
    assert calibration.choose_threshold(Y, P, EvaluateConfig(threshold_policy="youden")) == pytest.approx(0.7)
    # Target sensitivity: the highest threshold reaching it (0.9 -> 1/3, 0.7 -> 2/3, 0.3 -> 1).
    for target, expected in ((0.3, 0.9), (0.6, 0.7), (0.95, 0.3)):
        cfg = EvaluateConfig(threshold_policy="target_sensitivity", target_sensitivity=target)
        threshold = calibration.choose_threshold(Y, P, cfg)
        assert threshold == pytest.approx(expected)
        assert ev.binary_metrics(Y, P, threshold)["sensitivity"] >= target


def test_json_safe_turns_nan_into_null():
    assert ev.json_safe({"a": float("nan"), "b": {"c": float("nan"), "d": 1.0}}) == {"a": None, "b": {"c": None, "d": 1.0}}


def test_operating_points_by_hand():
    # ROC of Y/P: specificity >= 0.75 allows sensitivity 2/3 (threshold 0.7); >= 0.5 allows 1 (0.3).
    strict, loose = ev.curve_statistics(0.75, 1.0)(Y, P), ev.curve_statistics(0.5, 0.6)(Y, P)
    assert strict["sensitivity_at_specificity_75"] == pytest.approx(2 / 3)
    assert loose["sensitivity_at_specificity_50"] == pytest.approx(1.0)
    assert strict["specificity_at_sensitivity_100"] == pytest.approx(0.5)
    assert loose["specificity_at_sensitivity_60"] == pytest.approx(1.0)


@pytest.mark.parametrize("tied", [False, True])
def test_ranking_statistics_equal_scikit_learns(tied):
    from sklearn.metrics import average_precision_score, roc_curve

    rng = np.random.default_rng(3)
    for n in (5, 60, 700):
        y = np.r_[0, 1, rng.integers(0, 2, n)]
        p = y * 0.3 + rng.uniform(0, 0.7, n + 2)
        p = np.round(p * 6) / 6 if tied else p  # few distinct values: tied groups of both classes
        assert ev.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert ev.curve_statistics(0.9, 0.95)(y, p)["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
        assert np.allclose(ev.roc_rates(y, p), (fpr, tpr))


def test_ranking_statistics_refuse_nan_probabilities():
    with pytest.raises(ValueError, match="1 of 7 probabilities are NaN"):
        ev.roc_auc(Y, [0.1, 0.4, float("nan"), 0.2, 0.9, 0.3, 0.7])


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 400), 0, 1)
    ci = ev.bootstrap_ci(y, p, roc_auc_score, n_resamples=300, seed=1)
    assert ci == ev.bootstrap_ci(y, p, roc_auc_score, n_resamples=300, seed=1)
    assert ci[0] < roc_auc_score(y, p) < ci[1] and ci[1] - ci[0] < 0.15
    wide = ev.bootstrap_ci(y[:40], p[:40], roc_auc_score, n_resamples=300, seed=1)
    assert wide[1] - wide[0] > ci[1] - ci[0]


def test_set_metrics_ranking_names_and_values():
    from sklearn.metrics import average_precision_score

    m = ev.set_metrics(Y, P, 0.5, _evaluate_cfg(), seed=0)
    assert m["roc_auc"] == pytest.approx(10 / 12) and m["pr_auc"] == pytest.approx(average_precision_score(Y, P))
    assert m["sensitivity_at_specificity_90"] == pytest.approx(2 / 3)
    assert m["specificity_at_sensitivity_95"] == pytest.approx(0.5)
    for name in ("roc_auc", "pr_auc", "sensitivity_at_specificity_90", "specificity_at_sensitivity_95"):
        assert m[f"{name}_ci_low"] <= m[name] <= m[f"{name}_ci_high"]
    assert "95% CI" in ev.summary_table(m)


def test_calibration_metrics_by_hand():
    y, p = [0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9]
    # Two bins: [0, 0.5) predicts 0.1 and sees 1/2 positive; [0.5, 1] predicts 0.9 and sees 1.
    m = calibration.calibration_metrics(y, p, bins=2)
    assert m["ece"] == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)
    assert m["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    table = calibration.reliability(y, p, bins=10)
    assert list(table["count"]) == [2, 2] and list(table.fraction_positive) == [0.5, 1.0]
    assert calibration.calibration_metrics([0, 1], [0.0, 1.0], bins=15)["ece"] == 0.0


def test_temperature_scaling_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 20000)
    y = rng.random(20000) < 1 / (1 + np.exp(-logits / 2.5))  # the truth is twice as uncertain
    overconfident = 1 / (1 + np.exp(-logits))
    temperature = calibration.fit_temperature(y, overconfident)
    assert temperature == pytest.approx(2.5, rel=0.05)
    calibrated = calibration.apply_temperature(overconfident, temperature)
    after, before = (calibration.calibration_metrics(y, p, 15)["ece"] for p in (calibrated, overconfident))
    assert after < before / 3
    # Temperature keeps 0.5 and the ranking: AUC and decisions at 0.5 do not change.
    assert calibration.apply_temperature([0.5], 3.0) == pytest.approx([0.5])
    assert (np.argsort(calibrated) == np.argsort(overconfident)).all()


def test_a_uniform_class_prior_divides_the_training_shares_out():
    rng = np.random.default_rng(0)
    prob = rng.dirichlet(np.ones(3), 200)
    prior = [0.7, 0.2, 0.1]
    adjusted = calibration.apply_temperature(prob, 1.0, prior)
    np.testing.assert_allclose(adjusted.sum(axis=1), 1.0)
    np.testing.assert_allclose(adjusted, (prob / prior) / (prob / prior).sum(axis=1, keepdims=True))
    assert (adjusted.argmax(axis=1) != prob.argmax(axis=1)).any()  # rare classes win more often
    # An equal prior changes nothing; temperature still applies first.
    np.testing.assert_allclose(calibration.apply_temperature(prob, 2.0, [1 / 3] * 3), calibration.apply_temperature(prob, 2.0))


def test_set_metrics_without_both_classes_skips_ranking():
    m = ev.set_metrics([1, 1, 1], [0.9, 0.2, 0.7], 0.5, _evaluate_cfg(), seed=0)
    assert "roc_auc_ci_low" not in m and m["sensitivity"] == pytest.approx(2 / 3) and "ece" in m


def test_operating_point_statistics_agree_with_binary_metrics():
    y, p = np.array(Y), np.array(P)
    expected = ev.binary_metrics(y, p, 0.5)
    for name, value in ev.operating_point_statistics(0.5)(y, p).items():
        assert value == pytest.approx(expected[name]), name


def test_one_bootstrap_gives_each_statistic_the_interval_it_gets_alone():
    rng = np.random.default_rng(0)
    y, lesions = rng.integers(0, 2, 200), rng.integers(0, 80, 200)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    statistics = ev.curve_statistics(0.9, 0.95)
    kwargs = {"n_resamples": 100, "seed": 3, "groups": lesions}
    for name, interval in ev.bootstrap_intervals(y, p, statistics, **kwargs).items():
        assert interval == ev.bootstrap_ci(y, p, lambda y, p, name=name: statistics(y, p)[name], **kwargs)


def test_set_metrics_bracket_the_operating_point():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 300), 0, 1)
    m = ev.set_metrics(y, p, 0.5, _evaluate_cfg(), seed=1)
    for key in ("accuracy", "sensitivity", "specificity", "balanced_accuracy", "roc_auc"):
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key


def test_group_resample_draws_whole_groups():
    groups = np.array(["a", "b", "a", "c", "b", "a"])
    rng = np.random.default_rng(0)
    draw = ev.group_sampler(groups)
    for _ in range(50):
        idx = draw(rng)
        drawn = pd.Series(groups[idx]).value_counts()
        sizes = pd.Series(groups).value_counts()
        # each group appears a whole number of times, and 3 groups are drawn
        assert all(drawn[g] % sizes[g] == 0 for g in drawn.index)
        assert sum(drawn[g] // sizes[g] for g in drawn.index) == 3


def test_singleton_groups_give_the_image_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    kwargs = dict(n_resamples=200, seed=3)
    assert ev.bootstrap_ci(y, p, ev.skm.roc_auc_score, groups=np.arange(200), **kwargs) == ev.bootstrap_ci(
        y, p, ev.skm.roc_auc_score, **kwargs
    )


def test_intervals_widen_when_images_come_in_copies():
    """Ten copies of each of 40 lesions are 40 observations, not 400: image resampling would
    claim ten times the evidence; resampling lesions does not."""
    rng = np.random.default_rng(0)
    y = np.repeat(rng.integers(0, 2, 40), 10)
    p = np.clip(y * 0.3 + np.repeat(rng.uniform(0, 0.7, 40), 10), 0, 1)
    lesions = np.repeat(np.arange(40), 10)
    image_low, image_high = ev.bootstrap_ci(y, p, ev.skm.roc_auc_score, n_resamples=300, seed=0)
    group_low, group_high = ev.bootstrap_ci(y, p, ev.skm.roc_auc_score, n_resamples=300, seed=0, groups=lesions)
    assert (group_high - group_low) > 2 * (image_high - image_low)
    m = ev.set_metrics(y, p, 0.5, _evaluate_cfg(), seed=0, groups=lesions)
    assert m["bootstrap_units"] == 40 and m["n_images"] == 400


def _evaluate_cfg():
    return EvaluateConfig(bootstrap_resamples=200, target_specificity=0.9, target_sensitivity=0.95, calibration_bins=15)


def test_source_subsets_split_a_mixed_test_set_by_provenance():
    frame = pd.DataFrame(
        {
            "label_index": [1, 1, 1, 0, 0, 0],
            "found_in": ["ham10000", "", "", "ham10000", "ham10000", "ham10000;other"],
        }
    )
    subsets = ev.source_subsets(frame, ["ham10000", "other"], "test")
    assert subsets["test_from_ham10000"].tolist() == [True, False, False, True, True, True]
    assert subsets["test_positives_not_from_ham10000"].tolist() == [False, True, True, True, True, True]
    # only negatives were found in `other`: one class only, so no subset
    assert "test_from_other" not in subsets
    assert subsets["test_positives_not_from_other"].all()


def test_per_source_metrics_score_each_provenance_subset_by_hand():
    frame = pd.DataFrame({"label_index": [1, 1, 1, 0, 0, 0], "found_in": ["ham10000", "", "", "ham10000", "ham10000", ""]})
    prob = np.array([0.9, 0.8, 0.7, 0.95, 0.2, 0.1])
    metrics = ev.per_source_metrics(frame, prob, 0.5, ["ham10000"], "validation")
    assert set(metrics) == {"validation_from_ham10000", "validation_positives_not_from_ham10000"}
    inside = metrics["validation_from_ham10000"]  # 0.9 (melanoma) against 0.95 and 0.2 (nevi)
    assert (inside["n_images"], inside["n_positive"]) == (3, 1)
    assert inside["roc_auc"] == pytest.approx(0.5) and inside["specificity"] == pytest.approx(0.5)
    assert metrics["validation_positives_not_from_ham10000"]["roc_auc"] == pytest.approx(4 / 6)


def test_recalibration_sample_draws_whole_lesions_half_per_class_and_is_seeded():
    y = np.array([0] * 60 + [1] * 40)
    groups = np.array([f"l{i // 3}" for i in range(100)])  # lesions of 3 images (one spans both classes' border)
    mask = calibration.recalibration_sample(y, groups, 20, seed=1)
    np.testing.assert_array_equal(mask, calibration.recalibration_sample(y, groups, 20, seed=1))
    assert not np.array_equal(mask, calibration.recalibration_sample(y, groups, 20, seed=2))
    assert 10 <= mask[y == 0].sum() <= 12 and 10 <= mask[y == 1].sum() <= 12
    for lesion in set(groups[mask]):  # a drawn lesion is drawn whole, never split between sample and rest
        assert mask[groups == lesion].all()


def test_recalibration_restores_the_operating_point_of_a_shifted_collection():
    """A collection whose probabilities are all pushed up (as blur pushes them towards malignant):
    the frozen threshold calls most negatives positive; a threshold re-fitted on a sample does not."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 400)
    logit = rng.normal(np.where(y == 1, 1.5, -1.5), 1.0) + 2.5  # the shift
    prob = 1 / (1 + np.exp(-logit))
    cfg = EvaluateConfig(threshold_policy="youden", threshold=0.5, target_sensitivity=0.95, temperature_scaling=True)
    frozen = ev.binary_metrics(y, prob, 0.5)
    sample = calibration.recalibration_sample(y, np.arange(800), 100, seed=0)
    temperature, threshold = calibration.recalibrate(y[sample], prob[sample], cfg)
    rest = ev.binary_metrics(y[~sample], calibration.apply_temperature(prob[~sample], temperature), threshold)
    assert frozen["specificity"] < 0.2 and rest["specificity"] > 0.7 and rest["sensitivity"] > 0.7


def test_one_decision_rule_for_two_and_k_classes():
    assert outputs.predicted_classes([0.2, 0.5, 0.7], 0.5).tolist() == [0, 1, 1]  # at the threshold: positive
    assert outputs.predicted_classes([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], None).tolist() == [1, 0]
    confusion = ev.confusion([0, 1, 1], [0.2, 0.5, 0.4], 0.5, ["benign", "malignant"])["matrix"]
    assert confusion == [[1, 0], [1, 1]] and ev.binary_metrics([0, 1, 1], [0.2, 0.5, 0.4], 0.5)["sensitivity"] == 0.5

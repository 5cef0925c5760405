"""The out-of-distribution score on features: a distance that grows away from the training data,
a cut-off that flags the chosen share of in-domain images, and its AUROC."""

import numpy as np
import pytest

from skin_cancer.evaluation import ood
from skin_cancer.models.inference import RUNTIMES, compile_forward, compile_predictor


def gaussian(n, d=16, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.2, 3.0, d)  # unequal variances: Mahalanobis, not Euclidean, is right here
    return rng.normal(shift, 1.0, (n, d)) * scales


def test_the_distance_is_mahalanobis_under_the_fitted_covariance():
    train = gaussian(4000)
    model = ood.fit(train)
    probe = np.zeros((2, 16))
    probe[0, 0], probe[1, -1] = 0.6, 0.6  # the same step along a narrow and along a wide direction
    near_narrow, near_wide = model.distance(probe)
    # 0.6 / 0.2 = 3 and 0.6 / 3 = 0.2 without shrinkage; Ledoit-Wolf pulls both towards the mean variance.
    assert near_narrow > 2.0 and near_wide < 0.3 and near_narrow > 8 * near_wide


def test_the_cutoff_flags_the_chosen_share_of_validation_like_images_and_more_of_the_others():
    model = ood.fit(gaussian(3000)).with_cutoff(gaussian(2000, seed=1), flag_share=0.05)
    assert model.flagged(gaussian(4000, seed=2)).mean() == pytest.approx(0.05, abs=0.015)
    assert model.flagged(gaussian(500, shift=1.5, seed=3)).mean() > 0.9
    with pytest.raises(ValueError, match="flag_share"):
        model.with_cutoff(gaussian(10), 1.0)


def test_auroc_of_in_against_out_of_domain_scores():
    model = ood.fit(gaussian(3000))
    inside, outside = model.distance(gaussian(500, seed=4)), model.distance(gaussian(500, shift=1.5, seed=5))
    assert ood.auroc(inside, outside) > 0.95 and ood.auroc(inside, inside[::-1]) == pytest.approx(0.5, abs=0.05)


def test_too_few_rows_are_refused():
    with pytest.raises(ValueError, match="at least two feature rows"):
        ood.fit(np.zeros((1, 8)))


def test_a_detector_survives_the_file_and_a_model_without_one_says_why(tmp_path):
    model = ood.fit(gaussian(500)).with_cutoff(gaussian(200, seed=1), 0.05)
    ood.save(model, tmp_path / "ood.npz")
    loaded = ood.load(tmp_path / "ood.npz")
    assert loaded.cutoff == model.cutoff
    np.testing.assert_allclose(loaded.distance(gaussian(5, seed=2)), model.distance(gaussian(5, seed=2)), rtol=1e-4)
    ood.save(None, tmp_path / "none.npz", reason="an ensemble has no single feature space")
    assert ood.load(tmp_path / "none.npz") is None
    assert str(np.load(tmp_path / "none.npz")["reason"]) == "an ensemble has no single feature space"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_flag_features_come_from_the_same_pass_unchanged(tiny_cfg, runtime):
    """With the pooled features read off the prediction's forward pass, the probabilities are those
    of the plain predictor and the features those of the image as given (view 0), as a separate
    pooled-features graph computes them."""
    from skin_cancer.evaluation.ood import FEATURE_LAYER, pooled_features
    from skin_cancer.models.classifier import build_classifier
    from skin_cancer.models.inference import split_features

    model = build_classifier(tiny_cfg.model, 32)
    images = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    probabilities, features = split_features(compile_predictor(model, 4, runtime, FEATURE_LAYER)(images), 1)
    np.testing.assert_allclose(probabilities, compile_predictor(model, 4, runtime)(images), atol=1e-6)
    pooled = pooled_features(model)
    alone = compile_forward(lambda x: pooled(x, training=False), (32, 32, 3), runtime)(images)
    assert features.shape == alone.shape == (5, model.get_layer(FEATURE_LAYER).output.shape[-1])
    np.testing.assert_allclose(features, alone, atol=1e-5)
    assert np.ptp(features, axis=0).max() > 1e-3  # the images differ: not one constant row

import keras
import numpy as np
import pytest

from skin_cancer.config import ConfigError
from skin_cancer.models.classifier import (
    ShadesOfGray,
    build_classifier,
    compile_classifier,
    feature_extractor,
    feature_head,
    get_backbone,
    load_model,
    split_at_pool,
    unfreeze,
)


def batchnorm_layers(model):
    return [layer for layer in get_backbone(model).layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_head_phase_trains_only_the_classifier(classifier):
    assert [w.path for w in classifier.trainable_weights] == ["classifier/kernel", "classifier/bias"]
    assert classifier.output.shape == (None, 1)


def test_input_scaling_is_part_of_the_model(compose):
    cfg = compose("model.weights=null", "model.width=0.35", "data.image_size=32")
    unit = compose("model.weights=null", "model.width=0.35", "data.image_size=32", "model.input_scaling=unit")
    backbone_scaling = build_classifier(cfg.model, 32).get_layer("preprocess")
    unit_scaling = build_classifier(unit.model, 32).get_layer("preprocess")
    x = np.array([[0.0, 255.0]])
    np.testing.assert_allclose(backbone_scaling(x), [[-1.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(unit_scaling(x), [[0.0, 1.0]], atol=1e-6)


def test_unfreeze_keeps_layers_below_the_cut_and_batchnorm_frozen(classifier, tiny_cfg):
    unfreeze(classifier, "block_12_add", freeze_batchnorm=True)
    backbone = get_backbone(classifier)
    names = [layer.name for layer in backbone.layers]
    cut = names.index("block_12_add")
    assert not any(layer.trainable for layer in backbone.layers[: cut + 1])
    assert backbone.get_layer("block_13_expand").trainable
    assert not any(layer.trainable for layer in batchnorm_layers(classifier))
    compile_classifier(classifier, 1e-4)  # recompile after changing trainable
    trained = {w.path.split("/")[0] for w in classifier.trainable_weights}
    assert "block_13_expand" in trained and "block_1_expand" not in trained
    assert not any("_BN" in name or "_bn" in name for name in trained)


def test_notebook_mode_lets_batchnorm_train_when_unfrozen(compose):
    cfg = compose("model.weights=null", "model.width=0.35", "data.image_size=32", "experiment=notebook")
    model = build_classifier(cfg.model, 32)
    unfreeze(model, cfg.model.frozen_until, cfg.model.freeze_batchnorm)
    assert any(layer.trainable for layer in batchnorm_layers(model))


def test_feature_head_shares_weights_and_matches_the_full_model(classifier, tiny_cfg):
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    features = feature_extractor(classifier, "block_12_add").predict(x, verbose=0)
    head = feature_head(classifier, "block_12_add", freeze_batchnorm=True)
    np.testing.assert_allclose(head.predict(features, verbose=0), classifier.predict(x, verbose=0), atol=1e-5)
    head.get_layer("classifier").kernel.assign(np.ones_like(head.get_layer("classifier").kernel.numpy()))
    np.testing.assert_array_equal(classifier.get_layer("classifier").kernel.numpy(), head.get_layer("classifier").kernel.numpy())


def test_the_head_split_at_the_pool_composes_to_the_full_model_and_shares_its_classifier(classifier):
    x = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    features = feature_extractor(classifier, "block_12_add").predict(x, verbose=0)
    below, head = split_at_pool(classifier, "block_12_add")
    assert [w.path for w in head.trainable_weights] == ["classifier/kernel", "classifier/bias"]
    pooled = below.predict(features, verbose=0)
    np.testing.assert_allclose(head.predict(pooled, verbose=0), classifier.predict(x, verbose=0), atol=1e-5)
    head.get_layer("classifier").bias.assign([3.0])
    assert classifier.get_layer("classifier").bias.numpy().tolist() == [3.0]


def test_unknown_cut_layer_names_the_key(classifier):
    with pytest.raises(ConfigError, match="model.frozen_until='block_99'"):
        unfreeze(classifier, "block_99", True)


def test_cut_inside_a_residual_block_is_a_clear_error(classifier):
    with pytest.raises(ConfigError, match="does not cut the backbone"):
        feature_head(classifier, "block_12_expand", True)


def test_saved_model_round_trips_with_frozen_batchnorm_calls(classifier, tmp_path):
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    classifier.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), classifier.predict(x, verbose=0), atol=1e-6)


def test_shades_of_gray_neutralises_a_colour_cast():
    rng = np.random.default_rng(0)
    scene = rng.uniform(20, 200, (1, 16, 16, 3)).astype("float32")
    cast = scene * np.array([1.0, 0.8, 0.6], dtype="float32")
    layer = ShadesOfGray(6.0)
    corrected, from_cast = layer(scene).numpy(), layer(cast).numpy()
    # A per-channel gain (illuminant, camera) is removed: the image and its cast give the same colours,
    # differing only by one brightness factor.
    ratio = from_cast / corrected
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-4)
    norms = np.power(np.mean(np.power(from_cast / 255, 6), axis=(1, 2)), 1 / 6)
    np.testing.assert_allclose(norms / norms.mean(), 1.0, atol=1e-4)  # the illuminant is now grey
    grey = np.full((1, 4, 4, 3), 90.0, dtype="float32")
    np.testing.assert_allclose(layer(grey).numpy(), grey, atol=1e-3)


def test_colour_constancy_is_inside_the_saved_model_and_the_cached_part(compose, tiny, tmp_path):
    cfg = compose(*tiny, "model.color_constancy=shades_of_gray")
    keras.utils.set_random_seed(0)
    model = build_classifier(cfg.model, cfg.data.image_size)
    assert model.get_layer("color_constancy").p == cfg.model.minkowski_norm
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32") * np.array([1.0, 0.7, 0.5], "float32")
    cut = cfg.model.frozen_until
    head = feature_head(model, cut, cfg.model.freeze_batchnorm)
    np.testing.assert_allclose(head(feature_extractor(model, cut)(x)), model(x), atol=1e-5)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(load_model(tmp_path / "m.keras")(x), model(x), atol=1e-6)


def test_resolution_reduction_inside_the_model_removes_fine_detail(compose, tiny, tmp_path):
    cfg = compose(*tiny, "model.resolution_divisor=2")
    model = build_classifier(cfg.model, cfg.data.image_size)
    reduce = keras.Sequential([model.get_layer("reduce_resolution"), model.get_layer("restore_size")])
    checker = np.indices((32, 32)).sum(axis=0) % 2 * 255.0  # detail at the finest scale only
    smooth = np.full((32, 32), 100.0)
    for pattern, kept in ((checker, False), (smooth, True)):
        x = np.repeat(pattern[None, ..., None], 3, axis=-1).astype("float32")
        y = reduce(x).numpy()
        assert np.allclose(y, x, atol=1e-3) == kept
    assert np.ptp(reduce(np.repeat(checker[None, ..., None], 3, -1).astype("float32")).numpy()) < 1e-3
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(load_model(tmp_path / "m.keras")(x), model(x), atol=1e-6)
    with pytest.raises(ConfigError, match="model.resolution_divisor=3"):
        build_classifier(compose(*tiny, "model.resolution_divisor=3").model, cfg.data.image_size)


LITE0 = ("model=efficientnet_lite0", "model.weights=null", "data.image_size=64")


def test_every_backbone_is_a_choice_with_its_own_input_size_and_cut(compose):
    for name, size, cut in (
        ("mobilenet_v2", 224, "block_12_add"),
        ("efficientnet_lite0", 224, "block_10_add"),
        ("efficientnet_lite1", 240, "block_14_add"),
        ("efficientnet_lite2", 260, "block_14_add"),
    ):
        cfg = compose(f"model={name}")
        assert (cfg.model.backbone, cfg.data.image_size, cfg.model.frozen_until) == (name, size, cut)


def test_an_efficientnet_lite_classifier_scales_like_google_and_splits_at_its_cut(compose):
    cfg = compose(*LITE0)
    keras.utils.set_random_seed(0)
    model = build_classifier(cfg.model, 64)
    # Google's efficientnet_lite_builder.py: MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3.
    np.testing.assert_allclose(
        model.get_layer("preprocess")(np.array([[0.0, 127.0, 255.0]])), [[-127 / 128, 0.0, 1.0]], atol=1e-6
    )
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    features = feature_extractor(model, cfg.model.frozen_until).predict(x, verbose=0)
    head = feature_head(model, cfg.model.frozen_until, freeze_batchnorm=True)
    np.testing.assert_allclose(head.predict(features, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    unfreeze(model, cfg.model.frozen_until, freeze_batchnorm=True)
    compile_classifier(model, 1e-4)
    trained = {w.path.split("/")[0] for w in model.trainable_weights}
    assert "block_11_expand" in trained and "block_10_expand" not in trained and "Conv_1" in trained
    assert not any("BN" in name or "bn" in name for name in trained)


def test_efficientnet_lite_exists_at_width_one_only(compose):
    with pytest.raises(ConfigError, match=r"model.width=0.5: efficientnet_lite0 exists at width 1.0 only"):
        build_classifier(compose(*LITE0, "model.width=0.5").model, 64)

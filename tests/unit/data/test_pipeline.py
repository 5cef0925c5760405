from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from skin_cancer.data.tf_input import augmenter, dihedral_view, feature_dataset, image_dataset, jitter, jitter_enabled
from skin_cancer.schema import AugmentConfig, JitterConfig


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (size, mode, fmt) in enumerate([((40, 30), "RGB", "JPEG"), ((32, 32), "L", "PNG"), ((50, 50), "RGB", "BMP")]):
        path = tmp_path / f"{i}.{fmt.lower()}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path, format=fmt)
        paths.append(str(path))
    return paths


def test_image_dataset_decodes_resizes_and_batches(image_files):
    ds = image_dataset(image_files, [0, 1, 1], image_size=32, batch_size=2)
    batches = list(ds)
    assert [b[0].shape for b in batches] == [(2, 32, 32, 3), (1, 32, 32, 3)]
    assert batches[0][0].dtype == tf.float32 and float(tf.reduce_max(batches[0][0])) > 1.0  # [0, 255], not rescaled
    assert list(np.concatenate([b[1] for b in batches])) == [0, 1, 1]


def test_views_repeat_each_image_in_dihedral_symmetries(image_files):
    ds = image_dataset(image_files[:1], [1], image_size=32, batch_size=8, views=tuple(range(8)))
    images, labels = next(iter(ds))
    assert images.shape == (8, 32, 32, 3) and list(labels) == [1] * 8
    original = images[0].numpy()
    np.testing.assert_array_equal(images[1].numpy(), np.fliplr(original))
    np.testing.assert_array_equal(images[2].numpy(), np.rot90(original, 2))
    np.testing.assert_array_equal(images[3].numpy(), np.flipud(original))
    np.testing.assert_array_equal(images[4].numpy(), np.rot90(original, 1))
    assert len({images[k].numpy().tobytes() for k in range(8)}) == 8


@pytest.mark.parametrize("view", range(8))
def test_dihedral_view_is_rot90_then_flip_for_images_and_batches(view):
    batch = tf.constant(np.random.default_rng(view).uniform(0, 255, (2, 5, 5, 3)), tf.float32)
    for x in (batch, batch[0]):
        expected = tf.image.rot90(x, k=(0, 0, 2, 2, 1, 1, 3, 3)[view])
        expected = tf.image.flip_left_right(expected) if view % 2 else expected
        np.testing.assert_array_equal(dihedral_view(x, view).numpy(), expected.numpy())


def test_shuffled_training_data_is_seeded(image_files):
    order = lambda: [int(y) for _, ys in image_dataset(image_files, [0, 1, 2], 32, 1, shuffle_seed=5) for y in ys]  # noqa: E731
    assert sorted(order()) == [0, 1, 2] and order() == order()


def test_augmenter_is_built_from_config_and_keeps_shapes():
    aug = augmenter(AugmentConfig(rotation=0.1, flip="horizontal", zoom=0.2), seed=0)
    assert [layer.__class__.__name__ for layer in aug.layers] == ["RandomFlip", "RandomRotation", "RandomZoom"]
    assert aug(tf.zeros((2, 32, 32, 3)), training=True).shape == (2, 32, 32, 3)
    assert augmenter(AugmentConfig(rotation=0.0, flip="none", zoom=0.0), seed=0) is None


def test_feature_dataset_draws_one_view_per_image():
    features = np.stack([np.full((5, 2, 2, 1), v, dtype=np.float16) for v in range(3)], axis=1)  # (5, 3, 2, 2, 1)
    x, y = next(iter(feature_dataset(features, np.arange(5), batch_size=5, shuffle_seed=0)))
    assert x.shape == (5, 2, 2, 1) and x.dtype == tf.float32
    assert set(np.unique(x.numpy())) <= {0.0, 1.0, 2.0}
    single = next(iter(feature_dataset(features[:, :1], np.arange(5), batch_size=5)))[0]
    assert not single.numpy().any()


def test_weights_travel_with_their_images_through_shuffle_and_views(image_files):
    features = np.arange(6, dtype=np.float16).reshape(6, 1, 1)[:, None].repeat(2, axis=1)  # (6, 2 views, 1, 1)
    weights = np.arange(6) / 10
    x, y, w = next(iter(feature_dataset(features, np.arange(6), batch_size=6, shuffle_seed=0, weights=weights)))
    assert x.numpy().ravel().tolist() == y.numpy().tolist() != list(range(6))  # shuffled, still paired
    np.testing.assert_allclose(w.numpy(), y.numpy() / 10)
    x, y, w = next(iter(image_dataset(image_files, [0, 1, 2], 8, batch_size=3, shuffle_seed=1, weights=[0.5, 1.0, 2.0])))
    np.testing.assert_allclose(w.numpy(), np.array([0.5, 1.0, 2.0])[y.numpy().astype(int)])
    assert len(next(iter(feature_dataset(features, np.arange(6), batch_size=6)))) == 2


JITTER_OFF = JitterConfig(
    min_crop_area=1.0,
    min_scale=1.0,
    min_jpeg_quality=100,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    hue=0.0,
    min_zoom_out=1.0,
    vignette=0.0,
)
JITTER_ALL = JitterConfig(
    min_crop_area=0.5,
    min_scale=0.25,
    min_jpeg_quality=30,
    brightness=0.1,
    contrast=0.2,
    saturation=0.2,
    hue=0.02,
    min_zoom_out=0.7,
    vignette=0.5,
)


def textured(seed=0, size=64):
    return tf.constant(np.random.default_rng(seed).uniform(0, 255, (size, size, 3)), tf.float32)


def test_jitter_is_a_function_of_its_seed_and_keeps_shape_and_range():
    image = textured()
    a, b = (jitter(image, tf.constant([3, 4]), JITTER_ALL).numpy() for _ in range(2))
    other = jitter(image, tf.constant([3, 5]), JITTER_ALL).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - other).mean() > 1.0
    assert a.shape == (64, 64, 3) and a.min() >= 0 and a.max() <= 255


@pytest.mark.parametrize(
    "key, value",
    [
        ("min_crop_area", 0.5),
        ("min_scale", 0.25),
        ("min_jpeg_quality", 20),
        ("brightness", 0.2),
        ("contrast", 0.5),
        ("saturation", 0.5),
        ("hue", 0.1),
        ("min_zoom_out", 0.6),
        ("vignette", 1.0),
    ],
)
def test_each_jitter_switch_changes_the_image_alone(key, value):
    cfg = replace(JITTER_OFF, **{key: value})
    assert jitter_enabled(cfg) and not jitter_enabled(JITTER_OFF)
    image = textured()
    np.testing.assert_allclose(jitter(image, tf.constant([0, 1]), JITTER_OFF).numpy(), image.numpy(), atol=1e-3)
    changed = [np.abs(jitter(image, tf.constant([0, s]), cfg).numpy() - image.numpy()).mean() for s in range(4)]
    assert max(changed) > 0.5, changed


def test_the_vignette_jitter_is_the_stress_tests_vignette_on_its_share_of_images():
    """Training sees the dark circle the stress test applies (skin_cancer.data.shifts.vignette), on about
    `vignette` of the images, each with its own radius and softness; the centre keeps its pixels."""
    from PIL import Image

    from skin_cancer.data import shifts
    from skin_cancer.data.tf_input import vignette_mask

    image = textured()
    stress = np.asarray(shifts.vignette(0.8, 0.1)(Image.fromarray(image.numpy().astype(np.uint8))), dtype=np.float32)
    ours = image.numpy().astype(np.uint8).astype(np.float32) * vignette_mask(64, tf.constant(0.8), tf.constant(0.1)).numpy()
    np.testing.assert_allclose(ours, stress, atol=1.0)
    cfg = replace(JITTER_OFF, vignette=0.5)
    outs = [jitter(image, tf.constant([1, s]), cfg).numpy() for s in range(40)]
    darkened = [out[0, 0].max() < 1.0 for out in outs]
    assert 0.25 < np.mean(darkened) < 0.75
    np.testing.assert_allclose(outs[0][32, 32], image.numpy()[32, 32], atol=1e-3)


def test_the_first_jitter_draws_do_not_move_when_a_shift_is_added():
    """Adding a switch must leave the default recipe's contrast and saturation draws (and its numbers) alone."""
    image = textured()
    default = replace(JITTER_OFF, contrast=0.3, saturation=0.3)
    with_vignette = replace(default, vignette=1e-9)  # on, but never drawn
    np.testing.assert_allclose(
        jitter(image, tf.constant([2, 7]), default).numpy(), jitter(image, tf.constant([2, 7]), with_vignette).numpy(), atol=1e-4
    )


def test_downscale_jitter_blurs():
    """Downscaling and back removes fine detail: the sharpness cue that tells collections apart."""
    image = textured()
    cfg = replace(JITTER_OFF, min_scale=0.25)
    detail = lambda x: float(tf.reduce_mean(tf.abs(x[1:] - x[:-1])))  # noqa: E731
    blurred = [detail(jitter(image, tf.constant([0, s]), cfg)) for s in range(8)]
    assert max(blurred) < detail(image) and min(blurred) < 0.6 * detail(image)


def test_jittered_views_are_seeded_and_unjittered_without_config(image_files):
    def views(**kwargs):
        ds = image_dataset(image_files, [0, 1, 1], 32, 16, views=(0, 1), **kwargs)
        return np.concatenate([x.numpy() for x, _ in ds])

    plain = views()
    np.testing.assert_array_equal(views(jitter_cfg=JITTER_OFF, jitter_seed=1), plain)
    first = views(jitter_cfg=JITTER_ALL, jitter_seed=1)
    np.testing.assert_array_equal(views(jitter_cfg=JITTER_ALL, jitter_seed=1), first)
    assert np.abs(first - plain).mean() > 1.0
    assert np.abs(views(jitter_cfg=JITTER_ALL, jitter_seed=2) - first).mean() > 1.0
    # every view of every image gets its own draw
    assert len({first[i].tobytes() for i in range(len(first))}) == len(first)


def test_image_training_draws_new_jitter_every_epoch(image_files):
    ds = image_dataset(image_files, [0, 1, 1], 32, 16, jitter_cfg=JITTER_ALL, jitter_seed=1)
    first, second = (np.concatenate([x.numpy() for x, _ in ds]) for _ in range(2))
    assert np.abs(first - second).mean() > 1.0


def test_no_dataset_runs_the_autotune_thread_whose_sleep_delays_iterator_deletion(image_files):
    """Deleting an iterator waits for tf.data's autotune thread to wake (up to a minute): every
    dataset the project builds has it off (docs/benchmarks.md)."""
    built = [
        image_dataset(image_files, [0, 1, 0], 32, 2),
        image_dataset(image_files, [0, 1, 0], 32, 2, views=(0, 1), jitter_cfg=JITTER_ALL, shuffle_seed=1),
        feature_dataset(np.zeros((4, 2, 3), "float16"), [0, 1, 0, 1], 2, shuffle_seed=1),
    ]
    assert all(ds.map(lambda *x: x).options().autotune.enabled is False for ds in built)

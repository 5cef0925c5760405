"""tf.data input pipelines: images from manifests, and cached backbone features."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from skin_cancer.schema import AugmentConfig, JitterConfig

AUTOTUNE = tf.data.AUTOTUNE


def without_autotune_thread(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with tf.data's autotuning model off.

    Its background thread sleeps up to a minute between optimisations, and deleting an iterator
    waits for that sleep to end (TensorFlow 2.21): every dataset read to its end (a stage's
    predictions, each training epoch) idled for 0 to 60 s at random, which made the `features`
    stage's wall time bimodal (docs/benchmarks.md). AUTOTUNE parallelism then means one call per
    core; prefetch buffers still adapt."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def load_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read, decode (JPEG/PNG/BMP/GIF, any channel count) and resize one image to float32 in [0, 255].

    Images of another size are resized (bilinear, aspect ratio not kept), as Keras'
    image_dataset_from_directory does.
    """
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(image, (image_size, image_size))
    image.set_shape((image_size, image_size, 3))
    return image


# Views ordered so that any prefix is a sensible set: 2 = identity + horizontal flip,
# 4 = + rotation by 180 degrees and vertical flip, 8 = all symmetries of the square.
_VIEW_ROTATIONS = (0, 0, 2, 2, 1, 1, 3, 3)


def dihedral_view(image: tf.Tensor, view: int) -> tf.Tensor:
    """One of the 8 symmetries of the square (`view` a Python int in 0-7) of an image or a batch: a
    rotation by a multiple of 90 degrees (as tf.image.rot90), flipped left-right for odd views.

    Dermoscopic lesions have no canonical orientation, so every view is an equally valid image.
    Written with plain reverse / transpose, not tf.image.rot90's data-dependent branches, so that the
    graph keeps static shapes and converts to OpenVINO (see models/inference.py).
    """
    rank = image.shape.rank
    height, width = rank - 3, rank - 2
    swap = list(range(rank))
    swap[height], swap[width] = width, height
    k = _VIEW_ROTATIONS[view]
    if k == 1:
        image = tf.transpose(tf.reverse(image, [width]), swap)
    elif k == 2:
        image = tf.reverse(tf.reverse(image, [height]), [width])
    elif k == 3:
        image = tf.reverse(tf.transpose(image, swap), [width])
    return tf.reverse(image, [width]) if view % 2 else image


def augmenter(cfg: AugmentConfig, seed: int):
    """Keras preprocessing layers for random augmentation, or None when nothing is enabled."""
    import keras

    layers = []
    if cfg.flip != "none":
        layers.append(keras.layers.RandomFlip(cfg.flip, seed=seed))
    if cfg.rotation > 0:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed))
    if cfg.zoom > 0:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed))
    return keras.Sequential(layers, name="augment") if layers else None


def jitter_enabled(cfg: JitterConfig) -> bool:
    return (
        cfg.min_crop_area < 1
        or cfg.min_scale < 1
        or cfg.min_jpeg_quality < 100
        or cfg.min_zoom_out < 1
        or any(v > 0 for v in (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.vignette))
    )


def vignette_mask(size: int, radius: tf.Tensor, softness: tf.Tensor) -> tf.Tensor:
    """(size, size, 1): 1 inside `radius`, 0 beyond `radius` + `softness` (units of half the side),
    a smoothstep between: the mask of `skin_cancer.data.shifts.vignette`."""
    centre = (size - 1) / 2
    y, x = tf.meshgrid(tf.range(size, dtype=tf.float32), tf.range(size, dtype=tf.float32), indexing="ij")
    r = tf.sqrt((y - centre) ** 2 + (x - centre) ** 2) / (size / 2)
    t = tf.clip_by_value((r - radius) / tf.maximum(softness, 1e-6), 0.0, 1.0)
    return (1.0 - t * t * (3 - 2 * t))[..., None]


def jitter(image: tf.Tensor, seed: tf.Tensor, cfg: JitterConfig) -> tf.Tensor:
    """One random shift of an (size, size, 3) image in [0, 255], drawn from `seed` (shape [2]) with
    stateless ops, so a seed gives the same image on every run: a random square crop resized back,
    independent downscaling of height and width and back (the sharpness of a lower-resolution
    collection), the image shrunk inside its own mirror image (a smaller lesion), JPEG re-encoding,
    brightness, contrast, saturation and hue, then a dermatoscope's dark vignette (as
    `skin_cancer.data.shifts.vignette`) on a `vignette` share of the images."""
    size = image.shape[0]
    # Splitting into more seeds keeps the first ones: adding a shift leaves the others' draws alone.
    seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 13))
    uniform = lambda i, low: tf.random.stateless_uniform((), seeds[i], low, 1.0)  # noqa: E731
    x = image
    if cfg.min_crop_area < 1:
        side = tf.cast(tf.round(tf.sqrt(uniform(0, cfg.min_crop_area)) * size), tf.int32)
        x = tf.image.resize(tf.image.stateless_random_crop(x, tf.stack([side, side, 3]), seeds[1]), (size, size))
    if cfg.min_scale < 1:
        small = tf.cast(tf.round(tf.stack([uniform(2, cfg.min_scale), uniform(3, cfg.min_scale)]) * size), tf.int32)
        x = tf.image.resize(tf.image.resize(x, tf.maximum(small, 1), antialias=True), (size, size))
    if cfg.min_zoom_out < 1:
        side = tf.cast(tf.round(uniform(9, cfg.min_zoom_out) * size), tf.int32)
        before = (size - side) // 2
        pad = tf.stack([[before, size - side - before]] * 2 + [[0, 0]])
        x = tf.reshape(tf.pad(tf.image.resize(x, (side, side), antialias=True), pad, mode="SYMMETRIC"), (size, size, 3))
    x = tf.clip_by_value(x / 255.0, 0.0, 1.0)
    if cfg.min_jpeg_quality < 100:
        x = tf.image.stateless_random_jpeg_quality(x, cfg.min_jpeg_quality, 100, seeds[4])
    if cfg.brightness > 0:
        x = tf.image.stateless_random_brightness(x, cfg.brightness, seeds[5])
    if cfg.contrast > 0:
        x = tf.image.stateless_random_contrast(x, 1 - cfg.contrast, 1 + cfg.contrast, seeds[6])
    if cfg.saturation > 0:
        x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0.0, 1.0), 1 - cfg.saturation, 1 + cfg.saturation, seeds[7])
    if cfg.hue > 0:
        x = tf.image.stateless_random_hue(tf.clip_by_value(x, 0.0, 1.0), cfg.hue, seeds[8])
    if cfg.vignette > 0:
        x = x * tf.where(uniform(10, 0.0) < cfg.vignette, vignette_mask(size, uniform(11, 0.7), uniform(12, 0.05) * 0.3), 1.0)
    x = tf.clip_by_value(x, 0.0, 1.0) * 255.0
    x.set_shape(image.shape)
    return x


def image_dataset(
    paths,
    labels,
    image_size: int,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    augment=None,
    views: tuple[int, ...] = (0,),
    jitter_cfg: JitterConfig | None = None,
    jitter_seed: int = 0,
    weights=None,
) -> tf.data.Dataset:
    """Batched (image, label) pairs, or (image, label, weight) triples with per-image loss `weights`:
    parallel decode and resize, in-memory cache, optional shuffle and augmentation on the graph,
    prefetch. `views` repeats every image in the given dihedral views.

    With `jitter_cfg`, every image (every view) gets its own `jitter` draw: the same draws on every
    run from `jitter_seed`, fresh ones in every epoch."""
    if weights is not None and views != (0,):
        raise ValueError("per-image weights are for training data, which has one view per image")
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths, dtype=str), _targets(labels, weights)))
    ds = ds.map(lambda p, y: (load_image(p, image_size), y), num_parallel_calls=AUTOTUNE)
    if views != (0,):
        ds = ds.map(
            lambda x, y: (tf.stack([dihedral_view(x, v) for v in views]), tf.repeat(y, len(views))), num_parallel_calls=AUTOTUNE
        ).unbatch()
    else:
        ds = ds.cache()
    if jitter_cfg is not None and jitter_enabled(jitter_cfg):
        draws = tf.data.Dataset.random(seed=jitter_seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, draws).map(lambda xy, s: (jitter(xy[0], s, jitter_cfg), xy[1]), num_parallel_calls=AUTOTUNE)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(paths) * len(views), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=AUTOTUNE)
    return without_autotune_thread(_unpack_targets(ds, weights).prefetch(AUTOTUNE))


def _targets(labels, weights):
    """What travels beside each input: its label, or (label, weight); one opaque element, so the
    maps in between need not know which."""
    labels = np.asarray(labels, dtype="float32")
    return labels if weights is None else (labels, np.asarray(weights, dtype="float32"))


def _unpack_targets(ds: tf.data.Dataset, weights) -> tf.data.Dataset:
    """(input, (label, weight)) -> (input, label, weight): the triple Keras reads as sample weights."""
    return ds if weights is None else ds.map(lambda x, t: (x, *t))


def feature_dataset(
    features: np.ndarray, labels, batch_size: int, *, shuffle_seed: int | None = None, weights=None
) -> tf.data.Dataset:
    """Batched (features, label) pairs from cached backbone outputs of shape (N, views, ...), or
    (features, label, weight) triples with per-image loss `weights`.

    With several views, each epoch shows every image in one randomly drawn view (augmentation by
    cached dihedral views); with one view the features are used as they are.
    """
    n_views = features.shape[1]
    ds = tf.data.Dataset.from_tensor_slices((features, _targets(labels, weights)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(features), seed=shuffle_seed, reshuffle_each_iteration=True)
    if n_views > 1:
        pick = lambda f, y: (f[tf.random.uniform((), 0, n_views, dtype=tf.int32)], y)  # noqa: E731
    else:
        pick = lambda f, y: (f[0], y)  # noqa: E731
    ds = ds.map(pick, num_parallel_calls=AUTOTUNE).batch(batch_size)
    return without_autotune_thread(_unpack_targets(ds.map(lambda f, y: (tf.cast(f, tf.float32), y)), weights).prefetch(AUTOTUNE))

"""Training loops for the head and fine-tuning phases, on images or on cached features."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from skin_cancer.data.prepare import read_manifest
from skin_cancer.data.tf_input import augmenter, feature_dataset, image_dataset
from skin_cancer.models.classifier import compile_classifier, feature_head, get_backbone, split_at_pool
from skin_cancer.schema import Config, PhaseConfig


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow ops deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def training_seed(cfg: Config) -> int:
    """The seed of everything random in training: `train.seed`, else the top-level seed."""
    return cfg.seed if cfg.train.seed is None else cfg.train.seed


def learning_rate(phase: PhaseConfig, steps_per_epoch: int):
    """The phase's rate: constant, or cosine decay to 0, after a linear warm-up from 0 over
    `phase.warmup_epochs` (warm-up keeps freshly unfrozen layers from being thrown off)."""
    if phase.epochs == 0 or (phase.schedule == "constant" and not phase.warmup_epochs):
        return phase.lr
    if steps_per_epoch <= 0:
        raise ValueError("a learning-rate schedule needs a dataset of known length")
    warmup = phase.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else phase.lr,
        decay_steps=(phase.epochs - phase.warmup_epochs) * steps_per_epoch,
        alpha=1.0 if phase.schedule == "constant" else 0.0,  # alpha=1: no decay after warm-up
        warmup_target=phase.lr if warmup else None,
        warmup_steps=warmup,
    )


def targets(label_index, units: int) -> np.ndarray:
    """What the model is fitted to: the 0/1 label (one sigmoid output) or a one-hot row (K outputs)."""
    label_index = np.asarray(label_index, dtype=int)
    return label_index.astype("float32") if units == 1 else np.eye(units, dtype="float32")[label_index]


def class_weights(label_index, n_classes: int, policy: str) -> dict[int, float] | None:
    """Loss weight per class index: None ("none"), or scikit-learn's "balanced" n / (K * n_class)."""
    if policy == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(n_classes)
    return dict(zip(classes.tolist(), compute_class_weight(policy, classes=classes, y=np.asarray(label_index)).tolist()))


def source_weights(sources, label_index) -> np.ndarray:
    """Loss weight per image under which, inside every source, each class present carries the same
    total weight, and every source keeps its share of the images (the weights average 1).

    Where one source holds both classes (the Kaggle folders' HAM10000 melanomas and nevi), the model
    cannot lower its loss much by telling sources apart: the lesions inside the source weigh as much
    as the contrast between sources."""
    frame = pd.DataFrame({"source": np.asarray(sources, dtype=str), "label": np.asarray(label_index, dtype=int)})
    by_source = frame.groupby("source").label
    cell_size = frame.groupby(["source", "label"]).label.transform("size")
    return (by_source.transform("size") / (by_source.transform("nunique") * cell_size)).to_numpy(dtype=float)


def image_sources(frame: pd.DataFrame) -> pd.Series:
    """Where each manifest image comes from: the collections the audit found copies of it in, else
    the collection it was loaded from."""
    return frame.found_in.where(frame.found_in != "", frame.collection)


def loss_weights(cfg: Config, train: pd.DataFrame, n_classes: int) -> tuple[dict[int, float] | None, np.ndarray | None]:
    """(class weights, per-image weights) of `train.class_weight` and `train.source_weight` on the
    training manifest. Keras refuses class weights beside per-image weights, so once the source
    weights are on they carry the class weights too."""
    per_class = class_weights(train.label_index, n_classes, cfg.train.class_weight)
    if cfg.train.source_weight == "none":
        return per_class, None
    weights = source_weights(image_sources(train), train.label_index)
    if per_class:
        weights = weights * train.label_index.map(per_class).to_numpy(dtype=float)
    return None, weights


def fit_phase(
    model: keras.Model,
    train_ds,
    val_ds,
    phase: PhaseConfig,
    *,
    restore_best: bool,
    first_epoch: int = 0,
    name: str = "phase",
    class_weight: dict[int, float] | None = None,
    callbacks: list | tuple = (),
) -> list[dict]:
    """Compile and fit `model` (with extra Keras `callbacks`); returns one row of metrics per epoch.

    The best epoch by validation AUC is checkpointed and restored when `restore_best`.
    """
    compile_classifier(model, learning_rate(phase, int(train_ds.cardinality())))
    if phase.epochs == 0:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "best.weights.h5"
        callbacks = [
            *callbacks,
            keras.callbacks.ModelCheckpoint(
                checkpoint, monitor="val_auc", mode="max", save_best_only=True, save_weights_only=True
            ),
        ]
        if phase.patience is not None:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=phase.patience))
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=phase.epochs, callbacks=callbacks, class_weight=class_weight, verbose=2
        )
        if restore_best and checkpoint.exists():
            model.load_weights(checkpoint)
    rows = pd.DataFrame(history.history)
    rows.insert(0, "epoch", np.arange(first_epoch + 1, first_epoch + len(rows) + 1))
    rows.insert(1, "phase", name)
    return rows.to_dict("records")


def datasets(
    cfg: Config,
    prepared_dir: Path,
    features_dir: Path,
    units: int = 1,
    weights: np.ndarray | None = None,
    frozen: keras.Model | None = None,
):
    """(train, validation) datasets for a model with `units` outputs: cached features (augmented by
    their views, passed through the `frozen` model first if given) when train.cache_features, else
    images with train.augment's and train.jitter's random augmentation; with per-image loss
    `weights` for the training images if given."""
    train = read_manifest(prepared_dir / "train.csv")
    val = read_manifest(prepared_dir / "val.csv")
    y_train, y_val = targets(train.label_index, units), targets(val.label_index, units)
    batch, seed = cfg.train.batch_size, training_seed(cfg)
    if cfg.train.cache_features:
        from skin_cancer.models.features import load_features

        def features(split):
            cached = load_features(features_dir, split)
            return cached if frozen is None else apply_to_views(frozen, cached)

        return (
            feature_dataset(features("train"), y_train, batch, shuffle_seed=seed, weights=weights),
            feature_dataset(features("val"), y_val, batch),
        )
    size = cfg.data.image_size
    aug = augmenter(cfg.train.augment, seed)
    return (
        image_dataset(
            train.path,
            y_train,
            size,
            batch,
            shuffle_seed=seed,
            augment=aug,
            jitter_cfg=cfg.train.jitter,
            jitter_seed=seed,
            weights=weights,
        ),
        image_dataset(val.path, y_val, size, batch),
    )


def apply_to_views(model: keras.Model, features: np.ndarray, chunk: int = 256) -> np.ndarray:
    """`model` applied to every cached view of shape (N, views, ...) -> (N, views, outputs...), float32.

    Called eagerly chunk by chunk (not `predict`), so that it runs the same inside a distribution
    strategy's scope."""
    flat = features.reshape(-1, *features.shape[2:])
    outputs = [np.asarray(model(flat[i : i + chunk].astype(np.float32), training=False)) for i in range(0, len(flat), chunk)]
    return np.concatenate(outputs).reshape(*features.shape[:2], -1)


def trainable_model(cfg: Config, classifier: keras.Model) -> tuple[keras.Model, keras.Model | None]:
    """(what `fit` trains, the fixed model the cached features go through first or None): the
    classifier itself; or its part above the cached features; or, while the backbone trains nothing
    (the head phase), the dropout and classifier layer alone on the pooled output of the frozen
    layers above the cut, which are then run once over every view instead of on every epoch."""
    if not cfg.train.cache_features:
        return classifier, None
    if not get_backbone(classifier).trainable_weights:
        below, head = split_at_pool(classifier, cfg.model.frozen_until)
        return head, below
    return feature_head(classifier, cfg.model.frozen_until, cfg.model.freeze_batchnorm), None


def train_phase(
    cfg: Config,
    classifier: keras.Model,
    phase: PhaseConfig,
    name: str,
    prepared_dir: Path,
    features_dir: Path,
    first_epoch: int = 0,
    callbacks: list | tuple = (),
) -> list[dict]:
    """One training phase of `classifier` (the head, or fine-tuning once unfrozen) on the prepared
    data, weighted by `train.class_weight` and `train.source_weight`, with extra Keras `callbacks`;
    returns one row of metrics per epoch."""
    units = classifier.output_shape[-1]
    n_classes = 2 if units == 1 else units
    class_weight, weights = loss_weights(cfg, read_manifest(prepared_dir / "train.csv"), n_classes)
    model, frozen = trainable_model(cfg, classifier)
    train_ds, val_ds = datasets(cfg, prepared_dir, features_dir, units, weights, frozen)
    return fit_phase(
        model,
        train_ds,
        val_ds,
        phase,
        restore_best=cfg.train.restore_best,
        first_epoch=first_epoch,
        name=name,
        class_weight=class_weight,
        callbacks=callbacks,
    )


def history_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=None if rows else ["epoch", "phase", "loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"]
    )

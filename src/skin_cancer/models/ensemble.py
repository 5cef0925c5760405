"""Ensembles of trained classifiers as one Keras model: image -> each member at its own input size ->
its probabilities with its own calibration temperature -> the mean. Saved, calibrated (its own
temperature and threshold, on the same validation images), evaluated, served and explained like any
single model, because it is one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras

from skin_cancer.config import ConfigError, resolve_from_project
from skin_cancer.data.prepare import images_fingerprint, read_manifest
from skin_cancer.model_folder import MODEL_FILE, OPERATING_POINT_FILE
from skin_cancer.models.classifier import TemperatureScaled, load_model
from skin_cancer.operating_point import OperatingPoint
from skin_cancer.schema import Config

MEMBER_PREFIX = "member_"


@dataclass(frozen=True)
class Member:
    folder: Path
    model: keras.Model
    operating_point: OperatingPoint


def load_members(folders: list[str]) -> list[Member]:
    """Each member folder's model.keras and operating_point.json (a finished workspace's `models/`);
    a one-line ConfigError naming the folder when either is missing."""
    members = []
    for folder in folders:
        path = resolve_from_project(folder)
        missing = [name for name in (MODEL_FILE, OPERATING_POINT_FILE) if not (path / name).is_file()]
        if missing:
            raise ConfigError(f"model.members: {path} has no {' or '.join(missing)} (a finished pipeline's models/ folder)")
        model = load_model(path / MODEL_FILE, compile=False)
        members.append(Member(path, model, OperatingPoint.load(path / OPERATING_POINT_FILE)))
    return members


def check_members(members: list[Member], validation_fingerprint: str, class_names: list[str], positive_class: str | None) -> None:
    """Refuse members that would make the ensemble's validation dishonest or its output meaningless:
    each must have been calibrated on exactly this validation split (so none trained on its images)
    and predict the same classes in the same order."""
    if not members:
        raise ConfigError("model.members: an ensemble needs at least one trained member folder")
    for member in members:
        op = member.operating_point
        if op.validation_fingerprint != validation_fingerprint:
            raise ConfigError(
                f"model.members: {member.folder} was validated on other images (fingerprint {op.validation_fingerprint}, "
                f"this split {validation_fingerprint}); it may have trained on this validation split"
            )
        if (op.class_names, op.positive_class) != (class_names, positive_class):
            theirs = f"{op.class_names} (positive {op.positive_class})"
            raise ConfigError(f"model.members: {member.folder} predicts {theirs}, not {class_names} (positive {positive_class})")


def assemble(cfg: Config, prepared_dir: Path, class_names: list[str], positive_class: str | None) -> keras.Model:
    """The ensemble of `cfg.model.members`, checked against the validation split in `prepared_dir`."""
    members = load_members(cfg.model.members)
    check_members(members, images_fingerprint(read_manifest(prepared_dir / "val.csv").sha256), class_names, positive_class)
    return build_ensemble(members, cfg.data.image_size)


def build_ensemble(members: list[Member], image_size: int) -> keras.Model:
    """Image in [0, 255] at `image_size` -> the mean of the members' temperature-scaled probabilities.
    A member trained at another size sees the image resized to its size."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    outputs = []
    for i, member in enumerate(members):
        # A fresh name per member: two members may be the same architecture with the same names.
        network = keras.Model(member.model.input, member.model.output, name=f"{MEMBER_PREFIX}{i}")
        network.trainable = False
        size = member.operating_point.image_size
        x = inputs if size == image_size else keras.layers.Resizing(size, size, name=f"{MEMBER_PREFIX}{i}_resize")(inputs)
        y = network(x, training=False)
        outputs.append(TemperatureScaled(member.operating_point.temperature, name=f"{MEMBER_PREFIX}{i}_calibrated")(y))
    mean = keras.layers.Average(name="mean")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, mean, name="ensemble")


def members_of(model: keras.Model) -> list[keras.Model]:
    """The member classifiers of an ensemble built here, in order; [] for a single model."""
    return [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name.startswith(MEMBER_PREFIX)]

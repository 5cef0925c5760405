"""The operating point: what turns the model's output into a decision, fitted on validation by the
calibrate stage and used unchanged by evaluate, serving, the report and tracking."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from skin_cancer.errors import DataError
from skin_cancer.io import read_json, write_json


@dataclass(frozen=True)
class OperatingPoint:
    temperature: float  # divides the logit (temperature scaling)
    threshold: float | None  # positive class when the calibrated probability is at least this; K classes: None
    threshold_policy: str  # how the threshold was chosen on validation; K classes: "argmax"
    tta_views: int  # dihedral views averaged per image
    runtime: str  # what runs the forward pass: openvino or tensorflow
    image_size: int
    class_names: list[str]  # binary: the last one is the positive class; K classes: the output order
    positive_class: str | None  # None: a K-class model, decided by argmax
    validation: dict = field(default_factory=dict)  # validation metrics at this operating point
    validation_fingerprint: str | None = None  # which validation images: comparable models share it
    # Binary models: validation metrics per source, `validation_from_<dataset>` and
    # `validation_positives_not_from_<dataset>` (the subsets evaluate scores on test).
    validation_by_source: dict = field(default_factory=dict)
    malignant_classes: list[str] | None = None  # K classes: summed into the malignant score
    # K classes, evaluate.class_prior=uniform: each class's share of the training images, divided out
    # of the calibrated probabilities (None: probabilities of the training class mix).
    class_prior: list[float] | None = None
    # The machine that fitted it (skin_cancer.host.describe): numbers differ across instruction sets.
    host: dict = field(default_factory=dict)
    # Images of more pixels are refused wherever the model is served, as prepare refused them
    # (data.max_image_pixels); None (a model calibrated before this was kept): Pillow's own limit.
    max_image_pixels: int | None = None

    @property
    def multiclass(self) -> bool:
        return self.positive_class is None

    @classmethod
    def from_dict(cls, data: dict, source: str = "operating point") -> OperatingPoint:
        """From its JSON form; DataError naming `source` and the missing keys (unknown keys from
        newer versions are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise DataError(f"{source}: the operating point lacks {', '.join(missing)} (re-run the calibrate stage)")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> OperatingPoint:
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> OperatingPoint:
        return cls.from_dict(read_json(path), str(path))

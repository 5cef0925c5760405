"""The schema of the Hydra `conf/` tree and of `params.yaml`: every key and its type (checked by
skin_cancer.config.validate, with the allowed values and ranges)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

# The schema types and checks every key; conf/ alone gives values. A field that conf/ sets is
# MISSING here, so a value has one default only and a key left out of conf/ fails validation by name.


@dataclass
class DatasetSpec:
    """Another labelled image collection (audit.against, evaluate.external): a Kaggle-style folder,
    or an image folder with a metadata CSV whose columns are found by name unless given. The
    optional keys are not in conf/: null means "find it" or "no limit"."""

    root: str = MISSING
    csv: str | None = None
    images: str | None = None
    path_column: str | None = None
    label_column: str | None = None
    group_column: str | None = None
    group_pattern: str | None = None
    rest_label: str | None = None
    # Dataset label -> our class name; null leaves the label's images out. Every label must appear.
    label_map: dict[str, str | None] | None = None
    per_class_limit: int | None = None
    # evaluate.external only: re-fit temperature and threshold on a seeded labelled sample of about
    # this many images (whole lesions), then score the rest both ways (`<name>_recalibrated`).
    recalibration_sample: int | None = None
    # "test": only the collection's test part (its test/ folder, or the lesions data.test_fraction
    # and data.test_seed cut from a collection without one); null: every image.
    split: str | None = None


@dataclass
class DataConfig:
    root: str = MISSING
    # How to read a collection with a metadata CSV (the keys of DatasetSpec; null: found by name).
    csv: str | None = MISSING
    images: str | None = MISSING
    path_column: str | None = MISSING
    label_column: str | None = MISSING
    group_column: str | None = MISSING
    group_pattern: str | None = MISSING
    rest_label: str | None = MISSING
    # Source label -> class (null leaves the label's images out); null keeps the labels as they are.
    label_map: dict[str, str | None] | None = MISSING
    # Two classes: the one whose probability the sigmoid output models. Null: one softmax output per
    # class (K >= 2), decided by argmax.
    positive_class: str | None = MISSING
    # Classes whose summed probability is the derived malignant score of a K-class model (null: none).
    malignant_classes: list[str] | None = MISSING
    image_size: int = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    test_seed: int = MISSING
    per_class_limit: int | None = MISSING
    drop_test_duplicates: bool = MISSING
    strict: bool = MISSING
    max_image_pixels: int = MISSING
    # More collections whose training part joins train/validation (their test part stays held out).
    sources: dict[str, DatasetSpec] = MISSING
    # audit.against collections held out for scoring: their copies (and lesions) never enter train/val.
    held_out: list[str] = MISSING


@dataclass
class AuditConfig:
    against: dict[str, DatasetSpec] = MISSING
    candidate_distance: int = MISSING
    min_correlation: float = MISSING
    workers: int = MISSING


@dataclass
class ModelConfig:
    backbone: str = MISSING
    input_size: int = MISSING
    weights: str | None = MISSING
    width: float = MISSING
    input_scaling: str = MISSING
    dropout: float = MISSING
    freeze_batchnorm: bool = MISSING
    frozen_until: str = MISSING
    color_constancy: str = MISSING
    minkowski_norm: float = MISSING
    resolution_divisor: int = MISSING
    # backbone=ensemble: folders of trained members (each a finished pipeline's models/).
    members: list[str] = MISSING


@dataclass
class AugmentConfig:
    rotation: float = MISSING
    flip: str = MISSING
    zoom: float = MISSING


@dataclass
class JitterConfig:
    min_crop_area: float = MISSING
    min_scale: float = MISSING
    min_jpeg_quality: int = MISSING
    brightness: float = MISSING
    contrast: float = MISSING
    saturation: float = MISSING
    hue: float = MISSING
    min_zoom_out: float = MISSING
    vignette: float = MISSING


@dataclass
class PhaseConfig:
    epochs: int = MISSING
    lr: float = MISSING
    schedule: str = MISSING
    warmup_epochs: int = MISSING
    patience: int | None = MISSING


@dataclass
class DistributeConfig:
    strategy: str = MISSING
    workers: int = MISSING


@dataclass
class TrainConfig:
    batch_size: int = MISSING
    cache_features: bool = MISSING
    feature_views: int = MISSING
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    jitter: JitterConfig = field(default_factory=JitterConfig)
    head: PhaseConfig = field(default_factory=PhaseConfig)
    finetune: PhaseConfig = field(default_factory=PhaseConfig)
    restore_best: bool = MISSING
    seed: int | None = MISSING
    class_weight: str = MISSING
    source_weight: str = MISSING
    distribute: DistributeConfig = field(default_factory=DistributeConfig)


@dataclass
class TrackingConfig:
    uri: str | None = MISSING
    experiment_name: str = MISSING
    run_group: str | None = MISSING
    log_model: bool = MISSING
    registered_model: str | None = MISSING
    champion_alias: str = MISSING
    champion_metric: str = MISSING


@dataclass
class EvaluateConfig:
    threshold: float = MISSING
    threshold_policy: str = MISSING
    batch_size: int = MISSING
    tta_views: int = MISSING
    runtime: str = MISSING
    target_specificity: float = MISSING
    target_sensitivity: float = MISSING
    bootstrap_resamples: int = MISSING
    temperature_scaling: bool = MISSING
    class_prior: str = MISSING
    calibration_bins: int = MISSING
    external: dict[str, DatasetSpec] = MISSING
    stress: list[str] = MISSING
    ood_flag_share: float | None = MISSING
    ood_train_images: int = MISSING


@dataclass
class ServingConfig:
    max_batch: int = MISSING
    max_image_bytes: int = MISSING


@dataclass
class Config:
    recipe: str = MISSING
    seed: int = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)

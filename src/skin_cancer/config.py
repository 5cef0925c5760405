"""Typed configuration: the schema of the Hydra `conf/` tree and of `params.yaml`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf

PARAMS_FILE = "params.yaml"


# The schema types and checks every key; conf/ alone gives values. A field that conf/ sets is
# MISSING here, so a value has one default only and a key left out of conf/ fails validation by name.


@dataclass
class DatasetSpec:
    """Another labelled image collection (audit.against, evaluate.external): a Kaggle-style folder,
    or an image folder with a metadata CSV whose columns are found by name unless given. The
    optional keys are not in conf/: null means "find it" or "no limit"."""

    root: str = MISSING
    csv: Optional[str] = None
    images: Optional[str] = None
    path_column: Optional[str] = None
    label_column: Optional[str] = None
    group_column: Optional[str] = None
    group_pattern: Optional[str] = None
    rest_label: Optional[str] = None
    # Dataset label -> our class name; null leaves the label's images out. Every label must appear.
    label_map: Optional[Dict[str, Optional[str]]] = None
    per_class_limit: Optional[int] = None
    # evaluate.external only: re-fit temperature and threshold on a seeded labelled sample of about
    # this many images (whole lesions), then score the rest both ways (`<name>_recalibrated`).
    recalibration_sample: Optional[int] = None
    # "test": only the collection's test part (its test/ folder, or the lesions data.test_fraction
    # and data.test_seed cut from a collection without one); null: every image.
    split: Optional[str] = None


@dataclass
class DataConfig:
    root: str = MISSING
    # How to read a collection with a metadata CSV (the keys of DatasetSpec; null: found by name).
    csv: Optional[str] = MISSING
    images: Optional[str] = MISSING
    path_column: Optional[str] = MISSING
    label_column: Optional[str] = MISSING
    group_column: Optional[str] = MISSING
    group_pattern: Optional[str] = MISSING
    rest_label: Optional[str] = MISSING
    # Source label -> class (null leaves the label's images out); null keeps the labels as they are.
    label_map: Optional[Dict[str, Optional[str]]] = MISSING
    # Two classes: the one whose probability the sigmoid output models. Null: one softmax output per
    # class (K >= 2), decided by argmax.
    positive_class: Optional[str] = MISSING
    # Classes whose summed probability is the derived malignant score of a K-class model (null: none).
    malignant_classes: Optional[List[str]] = MISSING
    image_size: int = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    test_seed: int = MISSING
    per_class_limit: Optional[int] = MISSING
    drop_test_duplicates: bool = MISSING
    strict: bool = MISSING
    max_image_pixels: int = MISSING
    # More collections whose training part joins train/validation (their test part stays held out).
    sources: Dict[str, DatasetSpec] = MISSING
    # audit.against collections held out for scoring: their copies (and lesions) never enter train/val.
    held_out: List[str] = MISSING


@dataclass
class AuditConfig:
    against: Dict[str, DatasetSpec] = MISSING
    candidate_distance: int = MISSING
    min_correlation: float = MISSING
    workers: int = MISSING


@dataclass
class ModelConfig:
    backbone: str = MISSING
    input_size: int = MISSING
    weights: Optional[str] = MISSING
    width: float = MISSING
    input_scaling: str = MISSING
    dropout: float = MISSING
    freeze_batchnorm: bool = MISSING
    frozen_until: str = MISSING
    color_constancy: str = MISSING
    minkowski_norm: float = MISSING
    resolution_divisor: int = MISSING
    # backbone=ensemble: folders of trained members (each a finished pipeline's models/).
    members: List[str] = MISSING


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
    patience: Optional[int] = MISSING


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
    seed: Optional[int] = MISSING
    class_weight: str = MISSING
    source_weight: str = MISSING
    distribute: DistributeConfig = field(default_factory=DistributeConfig)


@dataclass
class TrackingConfig:
    uri: Optional[str] = MISSING
    experiment_name: str = MISSING
    run_group: Optional[str] = MISSING
    log_model: bool = MISSING
    registered_model: Optional[str] = MISSING
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
    external: Dict[str, DatasetSpec] = MISSING
    stress: List[str] = MISSING
    ood_flag_share: Optional[float] = MISSING
    ood_train_images: int = MISSING


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


class ConfigError(ValueError):
    """A configuration key is unknown, missing or of the wrong type or value."""


_CHOICES = {
    "model.input_scaling": ("backbone", "unit"),
    "model.color_constancy": ("none", "shades_of_gray"),
    "train.class_weight": ("none", "balanced"),
    "train.source_weight": ("none", "balanced"),
    "train.distribute.strategy": ("none", "mirrored", "multi_worker"),
    "train.augment.flip": ("horizontal", "vertical", "horizontal_and_vertical", "none"),
    "evaluate.threshold_policy": ("fixed", "youden", "target_sensitivity"),
    "evaluate.class_prior": ("training", "uniform"),
    "evaluate.runtime": ("openvino", "tensorflow"),
    "train.head.schedule": ("constant", "cosine"),
    "train.finetune.schedule": ("constant", "cosine"),
}


def _at_least(low):
    return lambda v: v >= low, f">= {low}"


def _at_least_or_null(low):
    return lambda v: v is None or v >= low, f">= {low} or null"


def _between(low, high, *, open_low=False, open_high=False):
    def check(v):
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    text = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    return check, text


_FRACTION = _between(0, 1, open_low=True, open_high=True)
_RANGES = {
    "seed": _at_least(0),
    "data.image_size": _at_least(32),
    "model.input_size": _at_least(32),
    "data.val_fraction": _FRACTION,
    "data.test_fraction": _between(0.05, 0.5),
    "data.test_seed": _at_least(0),
    "data.per_class_limit": _at_least_or_null(1),
    "data.max_image_pixels": _at_least(1),
    "model.width": (lambda v: v > 0, "> 0"),
    "model.dropout": _between(0, 1, open_high=True),
    "train.batch_size": _at_least(1),
    "train.feature_views": _between(1, 8),
    "train.augment.rotation": _between(0, 1),
    "train.augment.zoom": _between(0, 1, open_high=True),
    "model.minkowski_norm": _at_least(1),
    "model.resolution_divisor": _between(1, 8),
    "train.jitter.min_crop_area": _between(0, 1, open_low=True),
    "train.jitter.min_scale": _between(0, 1, open_low=True),
    "train.jitter.min_jpeg_quality": _between(1, 100),
    "train.jitter.brightness": _between(0, 1),
    "train.jitter.contrast": _between(0, 1, open_high=True),
    "train.jitter.saturation": _between(0, 1, open_high=True),
    "train.jitter.hue": _between(0, 0.5),
    "train.jitter.min_zoom_out": _between(0.5, 1),
    "train.jitter.vignette": _between(0, 1),
    "train.seed": _at_least_or_null(0),
    "train.distribute.workers": _at_least(1),
    "audit.candidate_distance": _between(0, 32),
    "audit.min_correlation": _between(-1, 1),
    "audit.workers": _at_least(1),
    "evaluate.threshold": _FRACTION,
    "evaluate.batch_size": _at_least(1),
    "evaluate.tta_views": _between(1, 8),
    "evaluate.target_specificity": _FRACTION,
    "evaluate.target_sensitivity": _FRACTION,
    "evaluate.bootstrap_resamples": _at_least(100),
    "evaluate.calibration_bins": _at_least(2),
    "evaluate.ood_flag_share": (lambda v: v is None or 0 < v < 1, "in (0, 1) or null"),
    "evaluate.ood_train_images": _at_least(2),
}
for _phase in ("head", "finetune"):
    _RANGES.update(
        {
            f"train.{_phase}.epochs": _at_least(1),
            f"train.{_phase}.lr": (lambda v: v > 0, "> 0"),
            f"train.{_phase}.warmup_epochs": _at_least(0),
            f"train.{_phase}.patience": _at_least_or_null(1),
        }
    )


def _collections(cfg: Config):
    return (
        ("data.sources", cfg.data.sources),
        ("audit.against", cfg.audit.against),
        ("evaluate.external", cfg.evaluate.external),
    )


def _range_errors(cfg: Config) -> list[str]:
    ranges = dict(_RANGES)
    for group, specs in _collections(cfg):
        for name in specs:
            ranges[f"{group}.{name}.per_class_limit"] = _at_least_or_null(1)
            ranges[f"{group}.{name}.recalibration_sample"] = _at_least_or_null(4)
            ranges[f"{group}.{name}.split"] = (
                ((lambda v: v is None), "null: a source's test part is always held out")
                if group == "data.sources"
                else ((lambda v: v in (None, "test")), "null or 'test'")
            )
    structured = OmegaConf.structured(cfg)
    errors = []
    for key, (ok, expected) in ranges.items():
        value = OmegaConf.select(structured, key)
        if not ok(value):
            errors.append(f"{key}={value!r} must be {expected}")
    if cfg.evaluate.class_prior == "uniform" and cfg.data.positive_class is not None:
        errors.append(
            "evaluate.class_prior='uniform' is for K-class models (data.positive_class: null); a binary model's "
            "threshold policy makes that choice"
        )
    for name in cfg.data.held_out:
        if name not in cfg.audit.against:
            errors.append(f"data.held_out names {name!r}, which is not an audit.against collection (the audit finds its copies)")
    if (cfg.model.backbone == "ensemble") != bool(cfg.model.members):
        errors.append("model.members must list the trained members when, and only when, model.backbone='ensemble'")
    for phase in ("head", "finetune"):
        settings = getattr(cfg.train, phase)
        if settings.warmup_epochs >= settings.epochs:
            errors.append(
                f"train.{phase}.warmup_epochs={settings.warmup_epochs} must be below train.{phase}.epochs={settings.epochs}"
            )
    return errors


def validate(raw: Any) -> Config:
    """Merge a plain or OmegaConf mapping onto the schema; an unknown, missing, mistyped or out-of-range
    key raises ConfigError naming it."""
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(Config)
    try:
        merged = OmegaConf.merge(schema, raw)
        cfg: Config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        message = (error.msg or str(error)).splitlines()[0]
        raise ConfigError(f"invalid configuration key '{error.full_key}': {message}") from None
    reserved = set(cfg.evaluate.external) & {"validation", "test", "clean_test"}
    if reserved:
        raise ConfigError(
            f"invalid configuration: evaluate.external.{sorted(reserved)[0]}: that name is reserved for our own splits"
        )
    for key, allowed in _CHOICES.items():
        value = OmegaConf.select(merged, key)
        if value not in allowed:
            raise ConfigError(f"invalid configuration: {key}={value!r}, expected one of {allowed}")
    errors = _range_errors(cfg)
    if errors:
        raise ConfigError(f"invalid configuration: {'; '.join(errors)}")
    return cfg


def compose(overrides: list[str] | tuple[str, ...] = (), config_dir: Path | None = None) -> DictConfig:
    """Compose the Hydra config tree (default: the project's `conf/`) with command-line style
    overrides, as DVC's `dvc exp run -S` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config_dir = Path(config_dir) if config_dir else project_root() / "conf"
    if not (config_dir / "config.yaml").is_file():
        raise ConfigError(f"{config_dir / 'config.yaml'} not found: run from the project root")
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def write_params(cfg: DictConfig, path: str | Path = PARAMS_FILE) -> None:
    """Write a composed config as `params.yaml`, after checking it against the schema."""
    validate(cfg)
    from skin_cancer.io import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def load_params(path: str | Path = PARAMS_FILE) -> Config:
    """Read `params.yaml` (what DVC stages run with) into a validated, typed Config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found (compose it with `skin-cancer compose`)")
    with open(path) as handle:
        raw = yaml.safe_load(handle) or {}
    return validate(raw)


def project_params() -> Config | None:
    """The composed params.yaml of the project this process runs in, or None outside a project
    (a served model loaded elsewhere): what every reader of configuration outside a stage uses."""
    path = project_root() / PARAMS_FILE
    return load_params(path) if path.is_file() else None


def to_dict(cfg: Config) -> dict:
    """The config as plain nested dicts."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict to dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def project_root() -> Path:
    """The project's own root, also inside a queued DVC experiment's temporary copy.

    DVC sets DVC_ROOT to the parent repository for queued experiments, so paths outside the
    repository (the data root, the MLflow store) resolve to the same place in every worker.
    """
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def resolve_from_project(path: str | Path) -> Path:
    """Absolute path, with a relative one taken from the project root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (project_root() / path).resolve()

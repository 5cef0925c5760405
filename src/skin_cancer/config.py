"""Typed configuration: the schema of the Hydra `conf/` tree and of `params.yaml`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf

PARAMS_FILE = "params.yaml"


@dataclass
class DataConfig:
    root: str = "../shared/data/skin-cancer-mvb"
    positive_class: str = "malignant"
    image_size: int = 224
    val_fraction: float = 0.2
    per_class_limit: Optional[int] = None
    drop_test_duplicates: bool = True
    strict: bool = False
    max_image_pixels: int = 40_000_000


@dataclass
class DatasetSpec:
    """Another labelled image collection (audit.against, evaluate.external): a Kaggle-style folder,
    or an image folder with a metadata CSV whose columns are found by name unless given."""
    root: str = MISSING
    csv: Optional[str] = None
    images: Optional[str] = None
    path_column: Optional[str] = None
    label_column: Optional[str] = None
    group_column: Optional[str] = None
    # Dataset label -> our class name; null leaves the label's images out. Every label must appear.
    label_map: Optional[Dict[str, Optional[str]]] = None
    per_class_limit: Optional[int] = None


@dataclass
class AuditConfig:
    against: Dict[str, DatasetSpec] = field(default_factory=dict)
    candidate_distance: int = 10
    min_correlation: float = 0.97
    workers: int = 4


@dataclass
class ModelConfig:
    backbone: str = "mobilenet_v2"
    weights: Optional[str] = "imagenet"
    width: float = 1.0
    input_scaling: str = "backbone"
    dropout: float = 0.2
    freeze_batchnorm: bool = True
    frozen_until: str = "block_12_add"


@dataclass
class AugmentConfig:
    rotation: float = 0.0
    flip: str = "horizontal_and_vertical"
    zoom: float = 0.0


@dataclass
class PhaseConfig:
    epochs: int = 10
    lr: float = 1e-3
    schedule: str = "constant"
    warmup_epochs: int = 0
    patience: Optional[int] = None


@dataclass
class TrainConfig:
    batch_size: int = 32
    cache_features: bool = True
    feature_views: int = 8
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    head: PhaseConfig = field(default_factory=PhaseConfig)
    finetune: PhaseConfig = field(default_factory=PhaseConfig)
    restore_best: bool = True
    seed: Optional[int] = None


@dataclass
class TrackingConfig:
    uri: Optional[str] = None
    experiment_name: str = "skin-cancer"
    run_group: Optional[str] = None
    log_model: bool = True
    registered_model: Optional[str] = "skin-cancer-classifier"
    champion_alias: str = "champion"
    champion_metric: str = "validation.roc_auc"


@dataclass
class EvaluateConfig:
    threshold: float = 0.5
    threshold_policy: str = "fixed"
    batch_size: int = 64
    tta_views: int = 1
    runtime: str = "openvino"
    target_specificity: float = 0.9
    target_sensitivity: float = 0.95
    bootstrap_resamples: int = 1000
    temperature_scaling: bool = True
    calibration_bins: int = 15
    external: Dict[str, DatasetSpec] = field(default_factory=dict)


@dataclass
class Config:
    recipe: str = "default"
    seed: int = 42
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
    "train.augment.flip": ("horizontal", "vertical", "horizontal_and_vertical", "none"),
    "evaluate.threshold_policy": ("fixed", "youden", "target_sensitivity"),
    "evaluate.runtime": ("openvino", "tensorflow"),
    "train.head.schedule": ("constant", "cosine"),
    "train.finetune.schedule": ("constant", "cosine"),
}


def validate(raw: Any) -> Config:
    """Merge a plain or OmegaConf mapping onto the schema; unknown keys and wrong types raise ConfigError."""
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
        raise ConfigError(f"invalid configuration: evaluate.external.{sorted(reserved)[0]}: that name is reserved for our own splits")
    for key, allowed in _CHOICES.items():
        value = OmegaConf.select(merged, key)
        if value not in allowed:
            raise ConfigError(f"invalid configuration: {key}={value!r}, expected one of {allowed}")
    checks = {
        "data.val_fraction": 0 < cfg.data.val_fraction < 1,
        "data.image_size": cfg.data.image_size >= 32,
        "model.dropout": 0 <= cfg.model.dropout < 1,
        "train.feature_views": 1 <= cfg.train.feature_views <= 8,
        "evaluate.tta_views": 1 <= cfg.evaluate.tta_views <= 8,
        "evaluate.target_specificity": 0 < cfg.evaluate.target_specificity < 1,
        "evaluate.target_sensitivity": 0 < cfg.evaluate.target_sensitivity < 1,
        "evaluate.bootstrap_resamples": cfg.evaluate.bootstrap_resamples >= 100,
        "train.batch_size": cfg.train.batch_size >= 1,
        "evaluate.threshold": 0 < cfg.evaluate.threshold < 1,
        "evaluate.calibration_bins": cfg.evaluate.calibration_bins >= 2,
        "audit.candidate_distance": 0 <= cfg.audit.candidate_distance <= 32,
        "audit.min_correlation": -1 <= cfg.audit.min_correlation <= 1,
        "train.head.warmup_epochs": 0 <= cfg.train.head.warmup_epochs < max(cfg.train.head.epochs, 1),
        "train.finetune.warmup_epochs": 0 <= cfg.train.finetune.warmup_epochs < max(cfg.train.finetune.epochs, 1),
    }
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"invalid configuration: {key}={OmegaConf.select(merged, key)!r} is out of range")
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

"""Configuration: composing the Hydra `conf/` tree into `params.yaml`, reading it back, and checking it
against the schema (skin_cancer.schema) with the allowed values and ranges."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from skin_cancer.schema import Config

PARAMS_FILE = "params.yaml"


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
    "serving.max_batch": _at_least(1),
    "serving.max_image_bytes": _at_least(1),
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

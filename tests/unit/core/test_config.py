from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from skin_cancer import paths
from skin_cancer.config import ConfigError, flatten, load_params, validate
from skin_cancer.config import compose as hydra_compose
from tests.helpers import ROOT


def compose(overrides):
    return hydra_compose(overrides, ROOT / "conf")


def defaults_with(raw: dict):
    """The default composition with `raw` merged on top (struct mode off: unknown keys get through)."""
    return OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(compose([]))), raw)


def test_params_yaml_is_the_composition_of_conf():
    """params.yaml must not drift from conf/ (regenerate with `skin-cancer compose`)."""
    composed = OmegaConf.to_container(compose([]), resolve=True)
    with open(ROOT / "params.yaml") as handle:
        assert yaml.safe_load(handle) == composed


def test_default_config_is_valid_and_typed():
    cfg = load_params(ROOT / "params.yaml")
    assert cfg.train.cache_features is True
    assert cfg.model.freeze_batchnorm is True
    assert cfg.model.input_scaling == "backbone"
    assert cfg.data.val_fraction == 0.2


def test_notebook_experiment_reproduces_the_notebook_recipe():
    cfg = validate(compose(["experiment=notebook"]))
    assert cfg.recipe == "notebook"
    assert (cfg.model.dropout, cfg.model.input_scaling, cfg.model.freeze_batchnorm) == (0.4, "unit", False)
    assert (cfg.train.head.epochs, cfg.train.head.lr) == (15, 1e-3)
    assert (cfg.train.finetune.epochs, cfg.train.finetune.lr) == (5, 1e-5)
    assert cfg.train.cache_features is False
    assert cfg.train.augment.flip == "horizontal" and cfg.train.augment.zoom == 0.2
    assert cfg.evaluate.threshold == 0.5
    assert cfg.model.resolution_divisor == 1 and cfg.model.color_constancy == "none"  # nothing the notebook lacked


def test_sweep_overrides_compose():
    cfg = validate(compose(["model.dropout=0.3", "train.head.lr=0.0001"]))
    assert cfg.model.dropout == 0.3 and cfg.train.head.lr == 1e-4


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"model": {"dropot": 0.3}}, "model.dropot"),
        ({"train": {"head": {"epochs": "many"}}}, "train.head.epochs"),
        ({"trian": {}}, "trian"),
    ],
)
def test_unknown_key_or_wrong_type_names_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(defaults_with(raw))


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"model": {"input_scaling": "imagenet"}}, "model.input_scaling"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction"),
        ({"train": {"feature_views": 9}}, "train.feature_views"),
        ({"model": {"color_constancy": "grey_world"}}, "model.color_constancy"),
        ({"model": {"minkowski_norm": 0.5}}, "model.minkowski_norm"),
        ({"train": {"jitter": {"min_scale": 0.0}}}, "train.jitter.min_scale"),
        ({"train": {"jitter": {"min_crop_area": 1.5}}}, "train.jitter.min_crop_area"),
        ({"train": {"jitter": {"min_jpeg_quality": 0}}}, "train.jitter.min_jpeg_quality"),
        ({"train": {"jitter": {"contrast": 1.0}}}, "train.jitter.contrast"),
        ({"train": {"jitter": {"hue": 0.6}}}, "train.jitter.hue"),
        ({"evaluate": {"class_prior": "balanced"}}, "evaluate.class_prior"),
        ({"evaluate": {"class_prior": "uniform"}}, "evaluate.class_prior"),  # the default data is binary
    ],
)
def test_out_of_range_values_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(defaults_with(raw))


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.head.epochs=-3", "train.head.epochs"),
        ("train.finetune.epochs=0", "train.finetune.epochs"),
        ("train.head.lr=0", "train.head.lr"),
        ("train.finetune.lr=-0.1", "train.finetune.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("evaluate.batch_size=0", "evaluate.batch_size"),
        ("audit.workers=0", "audit.workers"),
        ("data.val_fraction=0", "data.val_fraction"),
        ("data.per_class_limit=0", "data.per_class_limit"),
        ("evaluate.external.ham10000.per_class_limit=-1", "evaluate.external.ham10000.per_class_limit"),
        ("train.head.patience=0", "train.head.patience"),
        ("train.finetune.warmup_epochs=20", "train.finetune.warmup_epochs"),
        ("data.held_out=[derm7pt]", "data.held_out"),  # not an audit.against collection: no copies found
    ],
)
def test_composing_an_out_of_range_value_fails_with_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose([override]))


def test_a_key_missing_from_conf_fails_by_name():
    raw = OmegaConf.to_container(compose([]))
    del raw["train"]["head"]["lr"]
    with pytest.raises(ConfigError, match=r"train\.head\.lr"):
        validate(raw)


def test_the_schema_holds_no_default_that_conf_sets():
    """conf/ is the one source of values: every key it sets is MISSING in the schema."""
    from omegaconf import MISSING

    from skin_cancer.schema import Config

    schema = flatten(OmegaConf.to_container(OmegaConf.structured(Config)))
    composed = flatten(OmegaConf.to_container(compose([]), resolve=True))
    competing = {key: schema[key] for key in composed if key in schema and schema[key] != MISSING}
    assert competing == {}


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="params.yaml: parameters file not found"):
        load_params(tmp_path / "params.yaml")


def test_flatten_gives_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": 2}) == {"a.b": 1, "a.c.d": None, "e": 2}


def dvc_stages():
    with open(ROOT / "dvc.yaml") as handle:
        return yaml.safe_load(handle)["stages"]


def entries(items):
    return [next(iter(i)) if isinstance(i, dict) else i for i in items]


def test_dvc_outputs_match_the_paths_the_code_writes():
    stages = dvc_stages()
    declared = {o for s in stages.values() for key in ("outs", "metrics") for o in entries(s.get(key, []))}
    written = {
        paths.SOURCE_DATA,
        paths.SOURCE_AGAINST,
        paths.SOURCE_EXTERNAL,
        paths.SOURCE_MEMBERS,
        paths.AUDIT,
        paths.PREPARED,
        paths.FEATURES,
        paths.HEAD_MODEL,
        paths.MODEL,
        paths.MODEL_H5,
        paths.OPERATING_POINT,
        paths.OOD,
        paths.TRAIN_HISTORY,
        paths.FINETUNE_HISTORY,
        paths.TRAIN_RUN,
        paths.FINETUNE_RUN,
        paths.METRICS,
        paths.EVALUATION,
        paths.FIGURES,
        paths.MODEL_REPORT,
        paths.MODEL_REPORT.with_suffix(".html"),
        paths.MLFLOW_RUN,
    }
    assert declared == {str(p) for p in written}


def test_dvc_params_exist_in_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())

    def present(key):
        node = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    for name, stage in dvc_stages().items():
        for key in stage.get("params", []):
            assert present(key), f"stage {name}: unknown param {key}"


def test_head_only_params_do_not_invalidate_features():
    """Changing the head's dropout or learning rate must re-run from `train`, not `features`."""
    features = dvc_stages()["features"]["params"]
    assert "model" not in features and "model.dropout" not in features and "train.head" not in features


EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment):
    cfg = validate(compose([f"experiment={experiment}"]))
    assert cfg.recipe == experiment


@pytest.mark.parametrize("held_out", ["kaggle", "ham10000", "isic2017", "derm7pt"])
def test_leave_one_collection_out_trains_on_the_other_three_and_scores_the_fourth_whole(held_out):
    cfg = validate(compose([f"experiment=loco_{held_out}"]))
    roots = {"kaggle": "skin-cancer-mvb", "ham10000": "ham10000", "isic2017": "isic2017", "derm7pt": "derm7pt"}
    trained = {Path(cfg.data.root).name, *(Path(s.root).name for s in cfg.data.sources.values())}
    assert trained == set(roots.values()) - {roots[held_out]}
    scored = cfg.evaluate.external["held_out"]
    assert Path(scored.root).name == roots[held_out] and scored.split is None and scored.per_class_limit is None
    assert held_out in cfg.data.held_out and Path(cfg.audit.against[held_out].root).name == roots[held_out]


@pytest.mark.parametrize("overrides", [[], ["experiment=notebook"], ["model.dropout=0.3", "train.head.lr=0.0001"]])
def test_dvc_hydra_composition_equals_ours(tmp_path, overrides):
    """`dvc exp run -S ...` composes params.yaml with DVC's own Hydra call: it must match ours."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(tmp_path / "params.yaml", str(ROOT / "conf"), None, "config", str(ROOT), overrides)
    dvc_params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert dvc_params == OmegaConf.to_container(compose(overrides), resolve=True)
    validate(dvc_params)

"""DVC stage `features`: the frozen part of the backbone computed once into data/features/."""

from skin_cancer import paths
from skin_cancer.io import atomic_dir, write_json
from skin_cancer.models.features import compute_features
from skin_cancer.models.training import seed_everything
from skin_cancer.schema import Config
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    seed_everything(cfg.seed)
    with atomic_dir(paths.FEATURES) as out_dir:
        info = compute_features(cfg, paths.PREPARED, out_dir)
        write_json(out_dir / "info.json", info)
    print(f"features: {info}")


if __name__ == "__main__":
    run_stage(main)

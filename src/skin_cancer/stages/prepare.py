"""DVC stage `prepare`: the training collections (the data and its sources) + the audit's groups ->
data/prepared/{train,val,test}.csv + report.json."""

from skin_cancer import paths
from skin_cancer.data.audit import read_images
from skin_cancer.data.collections import training_collections
from skin_cancer.data.prepare import prepare
from skin_cancer.io import atomic_dir, write_json
from skin_cancer.schema import Config
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    data = cfg.data
    with atomic_dir(paths.PREPARED) as out_dir:
        report = prepare(
            training_collections(data),
            out_dir,
            paths.PREPARED,
            read_images(paths.AUDIT_IMAGES),
            positive_class=data.positive_class,
            val_fraction=data.val_fraction,
            seed=cfg.seed,
            drop_test_duplicates=data.drop_test_duplicates,
            held_out=tuple(data.held_out),
            strict=data.strict,
            max_image_pixels=data.max_image_pixels,
            workers=cfg.audit.workers,
        )
        write_json(out_dir / "report.json", report)
    print(f"prepare: {report['counts']}")
    print(f"prepare: {report['summary']}")


if __name__ == "__main__":
    run_stage(main)

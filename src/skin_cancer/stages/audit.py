"""DVC stage `audit`: duplicates inside the training collections (the data and its sources), copies
in the `audit.against` datasets, carried-over groups and test leaks -> data/audit/{report.json,
images.csv, pairs.csv, provenance.csv}."""

from skin_cancer import paths
from skin_cancer.data import audit
from skin_cancer.data.collections import from_spec, other_collections, training_collections
from skin_cancer.io import atomic_dir
from skin_cancer.schema import Config
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    data = training_collections(cfg.data)
    against = [from_spec(name, spec, cfg.data, f"audit.against.{name}")[0] for name, spec in other_collections(cfg).items()]
    result = audit.audit(
        data,
        against,
        candidate_distance=cfg.audit.candidate_distance,
        min_correlation=cfg.audit.min_correlation,
        workers=cfg.audit.workers,
        max_pixels=cfg.data.max_image_pixels,
    )
    with atomic_dir(paths.AUDIT) as out:
        audit.write(result, out)
    print(audit.summary_text(result.report))


if __name__ == "__main__":
    run_stage(main)

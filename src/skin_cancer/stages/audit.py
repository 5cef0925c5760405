"""DVC stage `audit`: duplicates inside the data root, copies in the `audit.against` datasets,
carried-over groups and test leaks -> data/audit/{report.json, images.csv, pairs.csv, provenance.csv}."""

from skin_cancer import audit, paths
from skin_cancer.config import Config, resolve_from_project
from skin_cancer.datasets import from_spec, limit_per_class, load_dataset
from skin_cancer.io import atomic_dir
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    data = load_dataset("data", resolve_from_project(cfg.data.root))
    data.frame = limit_per_class(data.frame, cfg.data.per_class_limit)
    against = [from_spec(name, spec) for name, spec in cfg.audit.against.items()]
    result = audit.audit(
        data,
        against,
        candidate_distance=cfg.audit.candidate_distance,
        min_correlation=cfg.audit.min_correlation,
        workers=cfg.audit.workers,
    )
    with atomic_dir(paths.AUDIT) as out:
        audit.write(result, out)
    print(audit.summary_text(result.report))


if __name__ == "__main__":
    run_stage(main)

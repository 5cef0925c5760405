"""DVC stage `report`: reports/model_report.md (and a self-contained .html) from the audit, prepare,
calibrate and evaluate outputs and the composed configuration."""

import yaml

from skin_cancer import paths
from skin_cancer.config import to_dict
from skin_cancer.evaluation import model_report
from skin_cancer.io import atomic_write_text, read_json
from skin_cancer.operating_point import OperatingPoint
from skin_cancer.schema import Config
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    metrics = read_json(paths.METRICS)
    exclusions = {
        name: read_json(paths.EVALUATION / name / "exclusions.json")
        for name in cfg.evaluate.external
        if (paths.EVALUATION / name / "exclusions.json").is_file()
    }
    figures = sorted(str(p.relative_to(paths.MODEL_REPORT.parent)) for p in paths.FIGURES.glob("*.png"))
    text = model_report.build(
        yaml.safe_load(yaml.safe_dump(to_dict(cfg))),
        read_json(paths.AUDIT_REPORT),
        read_json(paths.PREPARE_REPORT),
        OperatingPoint.load(paths.OPERATING_POINT),
        metrics,
        exclusions,
        figures,
    )
    atomic_write_text(paths.MODEL_REPORT, text)
    atomic_write_text(paths.MODEL_REPORT.with_suffix(".html"), model_report.to_html(text, paths.MODEL_REPORT.parent))
    print(f"report: wrote {paths.MODEL_REPORT} and {paths.MODEL_REPORT.with_suffix('.html')}")


if __name__ == "__main__":
    run_stage(main)

"""The model report: one Markdown page per pipeline run (and a self-contained HTML copy) with the
data card, the training recipe, metrics with confidence intervals at the chosen operating point,
the figures, and the intended use and limitations."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from skin_cancer.evaluation.report_sections import (
    data_card,
    exclusions_section,
    operating_point_section,
    recipe_section,
    source_findings,
)
from skin_cancer.evaluation.report_tables import metrics_section, stress_section, transfer_section
from skin_cancer.operating_point import OperatingPoint

LIMITATIONS = """\
- **Research use only. This is not a medical device** and must not be used to diagnose, triage or
  reassure anyone about a skin lesion.
- A class is only what the training folders hold: lesion types absent from training are scored as
  whichever class they resemble. Where the classes come from different sources (see "What the data
  shows"), a model can score well by recognising the source instead of the lesion.
- The clean-test numbers leave out test images with a copy or a same-lesion twin in training.
  External sets are scored only on images that are neither copies of training images nor of the same
  lesion as one.
- Performance on other skin types, devices or clinical photographs than those trained on is unknown.
- The decision threshold and the temperature were chosen on the validation split. Confidence
  intervals are percentile bootstrap intervals that resample lesions and copy clusters (the audit's
  groups), not images, where groups are known.
"""


def build(
    params: dict,
    audit_report: dict,
    prepare_report: dict,
    operating_point: OperatingPoint,
    metrics: dict,
    exclusions: dict[str, dict],
    figures: list[str],
) -> str:
    """The report as Markdown; `figures` are PNG paths relative to the report's folder."""
    sets = [name for name in metrics if name != "validation" and "_from_" not in name and not name.startswith("stress_")]
    multiclass_sets = [name for name in sets if "macro_auc" in metrics[name]]
    sets = [name for name in sets if name not in multiclass_sets]
    lines = [f"# Model report: recipe `{params.get('recipe')}`", "", "> Research use only. Not a medical device.", ""]
    lines += data_card(prepare_report, audit_report, operating_point)
    lines += recipe_section(params)
    lines += operating_point_section(operating_point, prepare_report["positive_class"])
    lines += transfer_section(metrics, operating_point.validation)
    lines += metrics_section(metrics, sets, multiclass_sets, operating_point)
    lines += exclusions_section(exclusions)
    lines += stress_section(metrics)
    lines += ["", "## What the data shows", "", *source_findings(audit_report, metrics)]

    lines += ["", "## Figures", ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    lines += ["", "## Intended use and limitations", "", LIMITATIONS]
    return "\n".join(lines) + "\n"


def to_html(markdown_text: str, base: Path) -> str:
    """Self-contained HTML: images are inlined, so the page opens anywhere (MLflow's artifact view)."""
    import markdown

    def inline(match):
        path = base / match.group(2)
        data = base64.b64encode(path.read_bytes()).decode() if path.is_file() else ""
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    body = markdown.markdown(
        re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", inline, markdown_text), extensions=["tables", "fenced_code", "md_in_html"]
    )
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
        "img{max-width:32em;display:inline-block;margin:.3em}blockquote{color:#a00;font-weight:bold}"
    )
    head = f"<meta charset='utf-8'><title>Model report</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>\n"

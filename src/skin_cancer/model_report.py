"""The model report: one Markdown page per pipeline run (and a self-contained HTML copy) with the
data card, the training recipe, metrics with confidence intervals at the chosen operating point,
the figures, and the intended use and limitations."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import yaml

LIMITATIONS = """\
- **Research use only. This is not a medical device** and must not be used to diagnose, triage or
  reassure anyone about a skin lesion.
- The training data is small and confounded with image source: in the Kaggle "Skin Cancer: Malignant
  vs. Benign" set every benign image is a HAM10000 nevus, while many malignant images come from other
  ISIC collections with other cameras, framing and colour. A model can score well by recognising the
  source instead of the lesion; accuracy on this split flatters it.
- Benign means "nevus" here: other benign lesions (seborrhoeic keratoses, dermatofibromas, vascular
  lesions) are absent from training, and malignant covers melanoma plus other cancers in unknown mix.
- Same-lesion images and near-copies cross the official train/test split (see the data card); the
  clean-test numbers leave those test images out. External sets are scored only on images that are
  neither copies of training images nor of the same lesion as one.
- Dermoscopic images of mostly light skin from European and Australian clinics; performance on other
  skin types, devices or clinical photographs is unknown.
- The decision threshold and the temperature were chosen on the validation split; the confidence
  intervals are percentile bootstrap intervals over test images, which ignore that several images can
  come from one lesion or patient.
"""


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _with_ci(metrics: dict, key: str) -> str:
    if metrics.get(key) is None:
        return "n/a"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return f"{metrics[key]:.3f} [{low:.3f}, {high:.3f}]" if low is not None else f"{metrics[key]:.3f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def build(params: dict, audit_report: dict, prepare_report: dict, operating_point: dict, metrics: dict,
          exclusions: dict[str, dict], figures: list[str]) -> str:
    """The report as Markdown; `figures` are PNG paths relative to the report's folder."""
    sets = [name for name in metrics if name != "validation"]
    positive = prepare_report["positive_class"]
    lines = [f"# Model report: recipe `{params.get('recipe')}`", "",
             "> Research use only. Not a medical device.", ""]

    lines += ["## Data card", "", f"Source: `{prepare_report['root']}`; classes {prepare_report['classes']} "
              f"(positive: **{positive}**); data fingerprint `{prepare_report['fingerprint']}`.", ""]
    counts = prepare_report["counts"]
    lines += _table(["split", *prepare_report["classes"], "total"],
                    [[split, *[counts[split].get(c, 0) for c in prepare_report["classes"]], sum(counts[split].values())]
                     for split in ("train", "val", "test") if split in counts])
    summary, audit_summary = prepare_report["summary"], audit_report["summary"]
    lines += ["", f"- Files found {prepare_report['files_found']}, skipped as unreadable {summary['skipped']}, "
              f"converted to RGB PNG {prepare_report['converted']}.",
              f"- Duplicate clusters (exact or near copies, any flip / quarter turn): {audit_summary['duplicate_clusters']} "
              f"({audit_summary['exact_clusters']} exact, {audit_summary['cross_split_clusters']} across train/test, "
              f"{audit_summary['label_conflicts']} with conflicting labels).",
              f"- Train images dropped as copies of a test image: {summary['dropped_test_duplicates']}.",
              f"- Test images with a copy in train: {audit_summary['test_with_train_copy']}; sharing a lesion / patient "
              f"group with a train image: {audit_summary['test_with_train_group_twin']}; clean test: "
              f"{audit_summary['clean_test_images']} of {audit_summary['test_images']}.",
              f"- The train/validation split keeps each of the {summary['train_val_groups']} groups (copies and "
              "same-lesion images) on one side."]
    for name, source in audit_report["provenance"].items():
        per_class = "; ".join(f"{label}: {c['copies_in_other']} of {c['images']} "
                              f"({', '.join(f'{k} {v}' for k, v in c['by_other_label'].items()) or 'none'})"
                              for label, c in source["per_class"].items())
        lines.append(f"- Copies in **{name}** ({source['images']} images, groups from "
                     f"`{source['group_column']}`): {per_class}.")

    lines += ["", "## Training recipe", "",
              f"Backbone `{params['model']['backbone']}` ({params['model']['weights']} weights), input "
              f"{params['data']['image_size']} px, dropout {params['model']['dropout']}; head "
              f"{params['train']['head']['epochs']} epochs at {params['train']['head']['lr']}, fine-tuning from "
              f"`{params['model']['frozen_until']}` for {params['train']['finetune']['epochs']} epochs at "
              f"{params['train']['finetune']['lr']} ({params['train']['finetune']['schedule']}); seed {params['seed']}.",
              "", "<details><summary>Composed configuration (params.yaml)</summary>", "", "```yaml",
              yaml.safe_dump(params, sort_keys=False).rstrip(), "```", "", "</details>"]

    validation = operating_point["validation"]
    lines += ["", "## Operating point (chosen on validation, frozen for every test set)", "",
              f"- Threshold policy `{operating_point['threshold_policy']}`: {positive} when the calibrated "
              f"probability is at least **{operating_point['threshold']:.4f}**.",
              f"- Temperature {operating_point['temperature']:.3f} (validation ECE "
              f"{_fmt(validation.get('uncalibrated_ece'))} before, {_fmt(validation.get('ece'))} after).",
              f"- Test-time augmentation: mean over {operating_point['tta_views']} flips / rotations."]

    lines += ["", "## Metrics", "", "95% percentile bootstrap intervals in brackets.", ""]
    rows = []
    keys = [("images (positive)", None), ("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
            ("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ROC AUC", "roc_auc"),
            ("PR AUC", "pr_auc")]
    keys += [(k.replace("_", " "), k) for k in metrics.get("test", {}) if k.startswith(("sensitivity_at_", "specificity_at_"))
             and "_ci_" not in k]
    keys += [("ECE", "ece"), ("Brier", "brier"), ("accuracy at 0.5", "at_0.5")]
    for label, key in keys:
        row = [label]
        for name in sets:
            m = metrics[name]
            if key is None:
                row.append(f"{m['n_images']} ({m['n_positive']})")
            elif key == "at_0.5":
                row.append(_fmt(m["at_0.5"]["accuracy"]))
            else:
                row.append(_with_ci(m, key))
        rows.append(row)
    lines += _table(["metric", *sets], rows)

    for name, record in exclusions.items():
        lines += ["", f"### External set `{name}`", "",
                  f"`{record['root']}`: {record['images']} images, {record['left_out_by_label_map']} left out by the "
                  f"label map; excluded before scoring: {record['excluded'] or 'none'} "
                  f"(per class {record['excluded_per_class'] or 'none'}); eligible {record['eligible']}; scored "
                  f"{record['scored']} (at most {record['per_class_limit']} per class, seeded sample)."]

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

    body = markdown.markdown(re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", inline, markdown_text),
                             extensions=["tables", "fenced_code", "md_in_html"])
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
             "img{max-width:32em;display:inline-block;margin:.3em}blockquote{color:#a00;font-weight:bold}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Model report</title><style>{style}</style></head><body>{body}</body></html>\n"

"""The sections of the model report (evaluation.model_report) around its metric tables (those are
evaluation.report_tables'), each as Markdown lines: data card, training recipe, operating point,
external sets' exclusions, what the data shows."""

from __future__ import annotations

import yaml

from skin_cancer.evaluation.report_tables import fmt, table, with_ci
from skin_cancer.host import one_line as host_line
from skin_cancer.operating_point import OperatingPoint


def source_findings(audit_report: dict, metrics: dict) -> list[str]:
    """What the audit's provenance and the per-source metrics show, for this data (not a fixed text)."""
    lines = []
    for name, source in audit_report.get("provenance", {}).items():
        shares = {label: c["copies_in_other"] / c["images"] for label, c in source["per_class"].items() if c["images"]}
        described = ", ".join(f"{share:.0%} of {label}" for label, share in shares.items())
        lines.append(f"- **{name}** holds copies of {described} images.")
        if shares and max(shares.values()) - min(shares.values()) > 0.5:
            lines.append(
                f"  Classes are confounded with source: one class comes mostly from {name}, another mostly "
                "not. A mixed test set rewards telling sources apart; the rows below split it by source."
            )
    rows = []
    for set_name, m in metrics.items():
        if "_from_" in set_name and m.get("roc_auc") is not None:
            rows.append(
                [
                    set_name,
                    f"{m['n_images']} ({m['n_positive']})",
                    with_ci(m, "roc_auc"),
                    with_ci(m, "sensitivity"),
                    with_ci(m, "specificity"),
                ]
            )
    if rows:
        lines += [
            "",
            "Per source (`<set>_from_<dataset>`: only images with a copy in that dataset, one source for "
            "both classes; `<set>_positives_not_from_<dataset>`: the other positives against every negative):",
            "",
            *table(["set", "images (positive)", "ROC AUC", "sensitivity", "specificity"], rows),
        ]
    return lines or ["- No provenance: the audit compared the data with no other dataset."]


def data_card(prepare_report: dict, audit_report: dict, operating_point: OperatingPoint) -> list[str]:
    """The data: source, classes, counts per split and collection, what prepare and the audit found."""
    lines = []
    positive = prepare_report["positive_class"]
    lines += [
        "## Data card",
        "",
        f"Source: `{prepare_report['root']}`; classes {prepare_report['classes']} "
        f"(positive: **{positive}**); data fingerprint `{prepare_report['fingerprint']}`.",
        "",
    ]
    counts = prepare_report["counts"]
    lines += table(
        ["split", *prepare_report["classes"], "total"],
        [
            [split, *[counts[split].get(c, 0) for c in prepare_report["classes"]], sum(counts[split].values())]
            for split in ("train", "val", "test")
            if split in counts
        ],
    )
    summary, audit_summary = prepare_report["summary"], audit_report["summary"]
    if len(prepare_report["collections"]) > 1:
        lines += [
            "",
            "Images per collection and split: "
            + "; ".join(f"{name} {counts}" for name, counts in prepare_report["collections"].items())
            + ".",
        ]
    lines += [
        "",
        f"- Files found {prepare_report['files_found']}, skipped as unreadable {summary['skipped']}, "
        f"converted to RGB PNG {prepare_report['converted']}.",
        f"- Duplicate clusters (exact or near copies, any flip / quarter turn): {audit_summary['duplicate_clusters']} "
        f"({audit_summary['exact_clusters']} exact, {audit_summary['cross_split_clusters']} across train/test, "
        f"{audit_summary['label_conflicts']} with conflicting labels).",
        f"- Train images dropped as copies of a test image: {summary['dropped_test_duplicates']}; as images of a "
        f"test lesion: {summary['dropped_test_lesions']}.",
        f"- Test images with a copy in train: {audit_summary['test_with_train_copy']}; sharing a lesion / patient "
        f"group with a train image: {audit_summary['test_with_train_group_twin']}; clean test: "
        f"{audit_summary['clean_test_images']} of {audit_summary['test_images']}.",
        f"- The train/validation split keeps each of the {summary['train_val_groups']} groups (copies and "
        "same-lesion images) on one side.",
    ]
    for name, source in audit_report["provenance"].items():
        per_class = "; ".join(
            f"{label}: {c['copies_in_other']} of {c['images']} "
            f"({', '.join(f'{k} {v}' for k, v in c['by_other_label'].items()) or 'none'})"
            for label, c in source["per_class"].items()
        )
        lines.append(f"- Copies in **{name}** ({source['images']} images, groups from `{source['group_column']}`): {per_class}.")

    if operating_point.host:
        lines += [f"- Calibrated on {host_line(operating_point.host)}: numbers differ across instruction sets."]
    return lines


def recipe_section(params: dict) -> list[str]:
    """How the model was trained, and the composed configuration."""
    lines = []
    model = params["model"]
    if model["backbone"] == "ensemble":
        recipe = (
            f"An ensemble of {len(model['members'])} trained members (the mean of their temperature-scaled probabilities, "
            f"input {params['data']['image_size']} px, each member at its own size): "
            + ", ".join(f"`{member}`" for member in model["members"])
            + "; each member's own report describes its training."
        )
    else:
        recipe = (
            f"Backbone `{model['backbone']}` ({model['weights']} weights), input "
            f"{params['data']['image_size']} px, dropout {model['dropout']}; head "
            f"{params['train']['head']['epochs']} epochs at {params['train']['head']['lr']}, fine-tuning from "
            f"`{model['frozen_until']}` for {params['train']['finetune']['epochs']} epochs at "
            f"{params['train']['finetune']['lr']} ({params['train']['finetune']['schedule']}); seed {params['seed']}. "
            f"Inside the model: colour constancy `{model['color_constancy']}`, resolution divided by "
            f"{model['resolution_divisor']}; training jitter {params['train']['jitter']}."
        )
    lines += [
        "",
        "## Training recipe",
        "",
        recipe,
        "",
        "<details><summary>Composed configuration (params.yaml)</summary>",
        "",
        "```yaml",
        yaml.safe_dump(params, sort_keys=False).rstrip(),
        "```",
        "",
        "</details>",
    ]
    return lines


def operating_point_section(operating_point: OperatingPoint, positive: str | None) -> list[str]:
    """The decision rule, temperature and test-time views fitted on validation."""
    lines = []
    validation = operating_point.validation
    if operating_point.multiclass:
        prior = ""
        if operating_point.class_prior:
            shares = ", ".join(f"{c} {s:.3f}" for c, s in zip(operating_point.class_names, operating_point.class_prior))
            prior = f", each class's probability divided by its share of the training images (a uniform class prior: {shares})"
        decision = [
            f"- Decision: the most probable of the {len(operating_point.class_names)} classes "
            f"{operating_point.class_names} (argmax, no threshold){prior}.",
            f"- Malignant score: the summed probability of {operating_point.malignant_classes or 'no class'}; "
            "sets labelled only malignant / benign are scored on it at 0.5.",
        ]
    else:
        decision = [
            f"- Threshold policy `{operating_point.threshold_policy}`: {positive} when the calibrated "
            f"probability is at least **{operating_point.threshold:.4f}**."
        ]
    lines += [
        "",
        "## Operating point (chosen on validation, frozen for every test set)",
        "",
        *decision,
        f"- Temperature {operating_point.temperature:.3f} (validation ECE "
        f"{fmt(validation.get('uncalibrated_ece'))} before, {fmt(validation.get('ece'))} after).",
        f"- Test-time augmentation: mean over {operating_point.tta_views} flips / rotations.",
    ]
    return lines


def exclusions_section(exclusions: dict[str, dict]) -> list[str]:
    """Per external set: what was left out or excluded before scoring, and why."""
    lines = []
    for name, record in exclusions.items():
        lines += [
            "",
            f"### External set `{name}`",
            "",
            f"`{record['root']}`: {record['images']} images, {record['left_out_by_label_map']} left out by the "
            f"label map; excluded before scoring: {record['excluded'] or 'none'} "
            f"(per class {record['excluded_per_class'] or 'none'}); eligible {record['eligible']}; scored "
            f"{record['scored']} (at most {record['per_class_limit']} per class, seeded sample).",
        ]
    return lines

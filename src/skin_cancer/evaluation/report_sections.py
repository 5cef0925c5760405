"""The sections of the model report (evaluation.model_report), each as Markdown lines: data card,
training recipe, operating point, transfer table, metrics, external sets, stress test, findings."""

from __future__ import annotations

import yaml

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
                    _with_ci(m, "roc_auc"),
                    _with_ci(m, "sensitivity"),
                    _with_ci(m, "specificity"),
                ]
            )
    if rows:
        lines += [
            "",
            "Per source (`<set>_from_<dataset>`: only images with a copy in that dataset, one source for "
            "both classes; `<set>_positives_not_from_<dataset>`: the other positives against every negative):",
            "",
            *_table(["set", "images (positive)", "ROC AUC", "sensitivity", "specificity"], rows),
        ]
    return lines or ["- No provenance: the audit compared the data with no other dataset."]


def transfer_rows(metrics: dict[str, dict]) -> list[list[str]]:
    """One row per scored set, the collection trained on first and every unseen collection after it:
    kind, images, ROC AUC and specificity at the frozen threshold with its change from validation.
    In-domain numbers are never shown without the transfer numbers beside them."""
    validation = metrics.get("validation", {}).get("specificity")

    def kind(name: str) -> str | None:
        if name.endswith("_recalibrated"):
            return "unseen collection, re-fitted on a labelled sample"
        if "specificity_shift_from_validation" in metrics[name]:
            return "unseen collection"
        if name in ("test", "clean_test"):
            return "collection trained on"
        if name.startswith("validation"):
            return None
        return "collection trained on, one source" if "_from_" in name and "_not_from_" not in name else None

    rows = []
    for name in sorted((n for n in metrics if n != "validation" and kind(n)), key=lambda n: "unseen" in kind(n)):
        m = metrics[name]
        specificity = m.get("specificity")
        change = f"{float(specificity) - float(validation):+.3f}" if specificity is not None and validation is not None else "n/a"
        images = "n/a" if m.get("n_images") is None else str(int(float(m["n_images"])))
        if m.get("n_positive") is not None:  # binary sets; K-class sets have no positive class
            images += f" ({int(float(m['n_positive']))})"
        rows.append([name, kind(name), images, _with_ci(m, "roc_auc"), _with_ci(m, "specificity"), change])
    return rows


def stress_section(metrics: dict) -> list[str]:
    """The shortcut stress test (evaluate.stress): the clean test images changed the ways collections
    differ, each at the frozen threshold, with the change from the unchanged images."""
    rows = [
        [
            name.removeprefix("stress_"),
            _with_ci(m, "roc_auc"),
            f"{m['roc_auc_change']:+.3f}",
            _fmt(m["specificity"]),
            f"{m['specificity_change']:+.3f}",
            f"{m['sensitivity_change']:+.3f}",
        ]
        for name, m in metrics.items()
        if name.startswith("stress_")
    ]
    if not rows:
        return []
    return [
        "",
        "## Shortcut stress test",
        "",
        "The clean test images changed as other collections look (`skin_cancer.data.shifts`), scored at the "
        "threshold frozen on validation. Target: a vignette moves specificity by at most 0.05, any other "
        "change by at most 0.10.",
        "",
        *_table(["stress", "ROC AUC", "AUC change", "specificity", "specificity change", "sensitivity change"], rows),
    ]


TRANSFER_HEADER = ["set", "kind", "images (positive)", "ROC AUC", "specificity", "specificity change from validation"]


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _with_ci(metrics: dict, key: str) -> str:
    if metrics.get(key) is None:
        return "n/a"
    value, low, high = (metrics.get(k) for k in (key, f"{key}_ci_low", f"{key}_ci_high"))
    # Registry tags hold strings: the app's card reads metrics from there too.
    return f"{float(value):.3f} [{float(low):.3f}, {float(high):.3f}]" if low is not None else f"{float(value):.3f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


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
    lines += _table(
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
        f"{_fmt(validation.get('uncalibrated_ece'))} before, {_fmt(validation.get('ece'))} after).",
        f"- Test-time augmentation: mean over {operating_point.tta_views} flips / rotations.",
    ]
    return lines


def transfer_section(metrics: dict, validation: dict) -> list[str]:
    """ROC AUC and specificity at the frozen threshold on every set, the training collection first."""
    lines = []
    lines += [
        "",
        "## Transfer: the collection trained on and unseen collections",
        "",
        "ROC AUC and specificity at the frozen threshold; a model that ranks well only on the collection it "
        "was trained on has learned the source. Validation specificity "
        f"{_fmt(validation.get('specificity'))}.",
        "",
        *_table(TRANSFER_HEADER, transfer_rows(metrics)),
    ]
    return lines


def metrics_section(metrics: dict, sets: list[str], multiclass_sets: list[str], operating_point: OperatingPoint) -> list[str]:
    """Every scored set's metrics with their intervals: K-class sets, then the binary sets."""
    lines = []
    lines += ["", "## Metrics", "", "95% percentile bootstrap intervals in brackets.", ""]
    if multiclass_sets:
        lines += multiclass_table(metrics, multiclass_sets, operating_point) + [""]
    rows = []
    keys = [
        ("images (positive)", None),
        ("accuracy", "accuracy"),
        ("balanced accuracy", "balanced_accuracy"),
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
        ("ROC AUC", "roc_auc"),
        ("PR AUC", "pr_auc"),
    ]
    keys += [
        (k.replace("_", " "), k)
        for k in metrics.get("test", {})
        if k.startswith(("sensitivity_at_", "specificity_at_")) and "_ci_" not in k
    ]
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
    if sets:
        lines += _table(["metric", *sets], rows)
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


def multiclass_table(metrics: dict, sets: list[str], operating_point: OperatingPoint) -> list[str]:
    """K-class sets: balanced accuracy (the ISIC ranking metric) and macro AUC first, then per class
    sensitivity (recall), specificity and one-vs-rest AUC, then the malignant score."""
    keys = [
        ("images", "n_images"),
        ("balanced accuracy", "balanced_accuracy"),
        ("macro ROC AUC", "macro_auc"),
        ("accuracy", "accuracy"),
        ("top-label ECE", "top_label_ece"),
    ]
    for name in operating_point.class_names:
        keys += [(f"{name}: sensitivity", f"{name}.sensitivity"), (f"{name}: specificity", f"{name}.specificity")]
        keys += [(f"{name}: ROC AUC (vs rest)", f"{name}.roc_auc")]
    keys += [("malignant score: ROC AUC", "malignant.roc_auc"), ("malignant score: sensitivity at 0.5", "malignant.sensitivity")]
    keys += [("malignant score: specificity at 0.5", "malignant.specificity")]
    rows = [[label, *[_with_ci(metrics[name], key) for name in sets]] for label, key in keys]
    return _table(["metric", *sets], rows)

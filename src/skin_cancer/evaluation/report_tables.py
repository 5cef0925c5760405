"""The model report's metric tables (evaluation.model_report), as Markdown lines: the transfer
table, every scored set's metrics with their intervals, the stress test; and the number and table
formatting the other sections share."""

from __future__ import annotations

from skin_cancer.operating_point import OperatingPoint


def fmt(value) -> str:
    """A number as the report prints it (three decimals), "n/a" for None."""
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def with_ci(metrics: dict, key: str) -> str:
    """`metrics[key]` with its bootstrap interval where it has one, "n/a" where it has no value."""
    if metrics.get(key) is None:
        return "n/a"
    value, low, high = (metrics.get(k) for k in (key, f"{key}_ci_low", f"{key}_ci_high"))
    # Registry tags hold strings: the app's card reads metrics from there too.
    return f"{float(value):.3f} [{float(low):.3f}, {float(high):.3f}]" if low is not None else f"{float(value):.3f}"


def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


TRANSFER_HEADER = ["set", "kind", "images (positive)", "ROC AUC", "specificity", "specificity change from validation"]


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
        rows.append([name, kind(name), images, with_ci(m, "roc_auc"), with_ci(m, "specificity"), change])
    return rows


def transfer_section(metrics: dict, validation: dict) -> list[str]:
    """ROC AUC and specificity at the frozen threshold on every set, the training collection first."""
    lines = []
    lines += [
        "",
        "## Transfer: the collection trained on and unseen collections",
        "",
        "ROC AUC and specificity at the frozen threshold; a model that ranks well only on the collection it "
        "was trained on has learned the source. Validation specificity "
        f"{fmt(validation.get('specificity'))}.",
        "",
        *table(TRANSFER_HEADER, transfer_rows(metrics)),
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
                row.append(fmt(m["at_0.5"]["accuracy"]))
            else:
                row.append(with_ci(m, key))
        rows.append(row)
    if sets:
        lines += table(["metric", *sets], rows)
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
    rows = [[label, *[with_ci(metrics[name], key) for name in sets]] for label, key in keys]
    return table(["metric", *sets], rows)


def stress_section(metrics: dict) -> list[str]:
    """The shortcut stress test (evaluate.stress): the clean test images changed the ways collections
    differ, each at the frozen threshold, with the change from the unchanged images."""
    rows = [
        [
            name.removeprefix("stress_"),
            with_ci(m, "roc_auc"),
            f"{m['roc_auc_change']:+.3f}",
            fmt(m["specificity"]),
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
        *table(["stress", "ROC AUC", "AUC change", "specificity", "specificity change", "sensitivity change"], rows),
    ]

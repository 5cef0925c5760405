"""External test sets: other labelled collections scored by the final model, after removing every
image the model may have seen in training (a copy of a train/val image, or an image of the same
lesion / patient as such a copy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from skin_cancer.data.collections import from_spec, limit_per_class
from skin_cancer.data.copies import Fingerprints, find_copies, fingerprint
from skin_cancer.data.images import read_image
from skin_cancer.errors import DataError


def external_set(
    name: str,
    spec,
    data,
    training_prints: Fingerprints,
    class_names: list[str],
    converted: Path,
    *,
    candidate_distance: int,
    min_correlation: float,
    seed: int,
    workers: int,
    derived: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """(images to score with columns source, path, label, label_index; a record of what was
    excluded and why). Copies are checked against `training_prints` (the train/val images).
    Images the input pipeline cannot decode as they are (TIFF, CMYK, 16-bit, ...) are converted
    to RGB PNG under `converted`. `data` (the data config) says how a collection without split
    folders is cut when `spec.split` asks for its test part. With `derived` (a K-class model with
    malignant classes), a set labelled only malignant / benign is scored through the malignant score
    (record["scored_as"] says which)."""
    dataset, unmapped = from_spec(name, spec, data, f"evaluate.external.{name}")
    frame = dataset.frame
    class_names, scored_as = scored_classes(name, set(frame.label), class_names, derived)
    prints = fingerprint(list(frame.path), workers, data.max_image_pixels, f"evaluate: hashing {name}")
    copies = find_copies(prints, training_prints, candidate_distance=candidate_distance, min_correlation=min_correlation)
    reason = exclusion_reasons(frame, prints, copies.a.unique(), dataset.group_column)
    kept = frame[reason == ""]
    scored = limit_per_class(kept.assign(split="external"), spec.per_class_limit, seed=seed)
    excluded = frame[reason != ""].assign(reason=reason[reason != ""])
    record = {
        "root": str(dataset.root),
        "split": spec.split,
        "scored_as": scored_as,
        "images": int(len(frame) + unmapped),
        "left_out_by_label_map": int(unmapped),
        "excluded": {r: int(n) for r, n in excluded.reason.map(lambda r: r.split(":")[0]).value_counts().items()},
        "excluded_per_class": {label: int(n) for label, n in excluded.label.value_counts().items()},
        "eligible": {label: int(n) for label, n in kept.label.value_counts().items()},
        "scored": {label: int(n) for label, n in scored.label.value_counts().items()},
        "per_class_limit": spec.per_class_limit,
    }
    label_index = {c: i for i, c in enumerate(class_names)}  # binary: the last class is the positive one
    readable = [
        read_image(Path(p), name, label, data.max_image_pixels, (converted, converted)).path
        for p, label in zip(scored.path, scored.label)
    ]
    # Bootstrap unit: the lesion / patient where the dataset names one, else the image itself.
    groups = [g if isinstance(g, str) else f"image:{key}" for g, key in zip(scored.group, scored.key)]
    out = pd.DataFrame(
        {
            "source": scored.path,
            "path": readable,
            "label": scored.label,
            "label_index": scored.label.map(label_index),
            "group": groups,
        }
    )
    return out.reset_index(drop=True), {"record": record, "excluded": excluded[["key", "label", "reason"]]}


def scored_classes(name: str, labels: set[str], class_names: list[str], derived: bool) -> tuple[list[str], str]:
    """(the classes an external set is scored in, "classes" or "malignant_score"): the model's own,
    or with `derived`, benign / malignant for a set labelled only so; DataError for a label that is
    neither."""
    scored_as = "classes"
    if derived and not labels & set(class_names) and labels <= {"benign", "malignant"}:
        class_names, scored_as = ["benign", "malignant"], "malignant_score"
    unknown = sorted(labels - set(class_names))
    if unknown:
        raise DataError(f"evaluate.external.{name}: labels {unknown} are not classes of the model {class_names} (set label_map)")
    return class_names, scored_as


def exclusion_reasons(frame: pd.DataFrame, prints: Fingerprints, copied: np.ndarray, group_column: str | None) -> pd.Series:
    """Why each image of an external set is not scored ("" when it is): unreadable, a copy of a
    training image (rows `copied`), or of the same lesion / patient as such a copy."""
    reason = pd.Series("", index=frame.index)
    reason[~prints.readable] = [f"unreadable: {e}" for e in prints.errors if e]
    reason.iloc[copied] = "copy of a training image"
    copied_groups = set(frame.group.iloc[copied].dropna())
    twins = frame.group.isin(copied_groups) & (reason == "")
    reason[twins] = f"same {group_column} as a copy of a training image"
    return reason

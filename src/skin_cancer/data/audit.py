"""Audit of a dataset: exact and near-duplicate images inside it and copies in other datasets
(provenance), groups (lesion / patient ids) carried over from those datasets, and the test images
that leak into training through a copy or a same-group twin. The copy search is data.copies'."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from skin_cancer.data.collections import Dataset
from skin_cancer.data.copies import TRANSFORMS, Fingerprints, components, find_copies, fingerprint, perceptual_hash
from skin_cancer.data.prepare import leak_kind


@dataclass
class AuditResult:
    images: pd.DataFrame  # one row per image of the audited dataset
    pairs: pd.DataFrame  # copies inside the audited dataset
    provenance: pd.DataFrame  # copies in other datasets
    report: dict


def audit(
    data: Dataset, against: list[Dataset], *, candidate_distance: int, min_correlation: float, workers: int, max_pixels: int
) -> AuditResult:
    """Duplicates inside `data`, copies of its images in `against` datasets (carrying over their
    groups), and test images that share a copy or a group with train/val images (the settings:
    conf/'s audit.* and data.max_image_pixels)."""
    started = time.perf_counter()
    frame = data.frame.reset_index(drop=True)
    prints = fingerprint(list(frame.path), workers, max_pixels, f"audit: hashing {data.name}")
    pairs = find_copies(prints, candidate_distance=candidate_distance, min_correlation=min_correlation)
    images = frame[["key", "split", "label"]].copy()
    images["sha256"] = prints.sha256
    images["phash"] = [f"{h:016x}" for h in perceptual_hash(prints.thumbs)]
    images["unreadable"] = [e or "" for e in prints.errors]
    images["copy_cluster"] = components(len(frame), list(zip(pairs.a, pairs.b)))

    # Group labels: the dataset's own group column, then groups carried over from matched images.
    tags: list[set[str]] = [{f"{data.name}:{g}"} if isinstance(g, str) else set() for g in frame.group]
    provenance, per_source = [], {}
    found_in: list[set[str]] = [set() for _ in range(len(frame))]
    for other in against:
        other_frame = other.frame.reset_index(drop=True)
        other_prints = fingerprint(list(other_frame.path), workers, max_pixels, f"audit: hashing {other.name}")
        found = find_copies(prints, other_prints, candidate_distance=candidate_distance, min_correlation=min_correlation)
        matched = pd.DataFrame(
            {
                "key": images.key.values[found.a],
                "split": images.split.values[found.a],
                "label": images.label.values[found.a],
                "dataset": other.name,
                "other_key": other_frame.key.values[found.b],
                "other_label": other_frame.label.values[found.b],
                "other_group": other_frame.group.values[found.b],
                "hamming": found.hamming,
                "correlation": found.correlation,
                "transform": found["transform"],
                "exact": found.exact,
            }
        )
        provenance.append(matched)
        for i, group in zip(found.a, matched.other_group):
            found_in[i].add(other.name)
            if isinstance(group, str):
                tags[i].add(f"{other.name}:{group}")
        per_source[other.name] = _provenance_summary(images, matched, other, other_prints)

    edges = list(zip(pairs.a, pairs.b))
    first_with_tag: dict[str, int] = {}
    for i, image_tags in enumerate(tags):
        for tag in image_tags:
            edges.append((first_with_tag.setdefault(tag, i), i))
    images["groups"] = [";".join(sorted(t)) for t in tags]
    # Provenance per image: the other datasets holding a copy of it (its source, where known).
    images["found_in"] = [";".join(sorted(f)) for f in found_in]
    images["group"] = components(len(frame), edges)
    images["leak"] = _leaks(images)
    provenance = pd.concat(provenance, ignore_index=True) if provenance else pd.DataFrame()
    report = _report(data, images, pairs, per_source, candidate_distance, min_correlation)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return AuditResult(images, pairs.assign(a=images.key.values[pairs.a], b=images.key.values[pairs.b]), provenance, report)


def _leaks(images: pd.DataFrame) -> list[str]:
    """Per image: its leak_kind against the train/val images for a test image, "" for the others."""
    train = images.split.isin(["train", "val"])
    train_copies, train_groups = set(images.copy_cluster[train]), set(images.group[train])
    return [
        "" if split != "test" else leak_kind(c, g, train_copies, train_groups)
        for split, c, g in zip(images.split, images.copy_cluster, images.group)
    ]


def _provenance_summary(images: pd.DataFrame, matched: pd.DataFrame, other: Dataset, other_prints: Fingerprints) -> dict:
    per_class = {}
    for label, rows in images.groupby("label"):
        hits = matched[matched.label == label]
        per_class[label] = {
            "images": int(len(rows)),
            "copies_in_other": int(hits.key.nunique()),
            "by_other_label": {k: int(v) for k, v in hits.drop_duplicates("key").other_label.value_counts().items()},
        }
    return {
        "root": str(other.root),
        "images": int(len(other.frame)),
        "unreadable": int((~other_prints.readable).sum()),
        "group_column": other.group_column,
        "per_class": per_class,
        "matched_images": int(matched.key.nunique()),
        "matched_other_images": int(matched.other_key.nunique()),
    }


def _report(
    data: Dataset, images: pd.DataFrame, pairs: pd.DataFrame, provenance: dict, candidate_distance: int, min_correlation: float
) -> dict:
    clusters = []
    for _, members in images.groupby("copy_cluster"):
        if len(members) < 2:
            continue
        idx = set(members.index)
        cluster_pairs = pairs[pairs.a.isin(idx)]
        clusters.append(
            {
                "images": list(members.key),
                "labels": sorted(set(members.label)),
                "splits": sorted(set(members.split)),
                "exact": bool(cluster_pairs.exact.all()),
                "max_hamming": int(cluster_pairs.hamming.max()),
                "min_correlation": float(cluster_pairs.correlation.min()),
            }
        )
    test = images[images.split == "test"]
    leaks = {kind: sorted(test.key[test.leak == kind]) for kind in ("copy", "group")}
    return {
        "dataset": data.name,
        "root": str(data.root),
        "images": int(len(images)),
        "unreadable": {k: r for k, r in zip(images.key, images.unreadable) if r},
        "counts": {split: rows.label.value_counts().sort_index().to_dict() for split, rows in images.groupby("split")},
        "matching": {
            "candidate_distance": candidate_distance,
            "min_correlation": min_correlation,
            "transforms": list(TRANSFORMS),
        },
        "summary": {
            "duplicate_clusters": len(clusters),
            "exact_clusters": sum(c["exact"] for c in clusters),
            "cross_split_clusters": sum(len(c["splits"]) > 1 for c in clusters),
            "label_conflicts": sum(len(c["labels"]) > 1 for c in clusters),
            "test_images": int(len(test)),
            "test_with_train_copy": len(leaks["copy"]),
            "test_with_train_group_twin": len(leaks["group"]),
            "clean_test_images": int((test.leak == "").sum()),
        },
        "duplicate_clusters": clusters,
        "test_leaks": leaks,
        "provenance": provenance,
    }


def summary_text(report: dict) -> str:
    """A few lines for the terminal."""
    s = report["summary"]
    lines = [
        f"audit of {report['dataset']} ({report['images']} images, {len(report['unreadable'])} unreadable) "
        f"in {report.get('seconds', '?')} s",
        f"  duplicate clusters: {s['duplicate_clusters']} ({s['exact_clusters']} exact, "
        f"{s['cross_split_clusters']} across splits, {s['label_conflicts']} with conflicting labels)",
    ]
    if s["test_images"]:
        lines.append(
            f"  test images: {s['test_images']}; with a copy in train/val: {s['test_with_train_copy']}; "
            f"sharing a group with train/val: {s['test_with_train_group_twin']}; clean: {s['clean_test_images']}"
        )
    for name, source in report["provenance"].items():
        per_class = ", ".join(
            f"{label} {c['copies_in_other']}/{c['images']} {c['by_other_label']}" for label, c in source["per_class"].items()
        )
        lines.append(f"  copies in {name} ({source['images']} images): {per_class}")
    return "\n".join(lines)


def write(result: AuditResult, out_dir) -> None:
    """report.json, images.csv, pairs.csv and provenance.csv into `out_dir` (already atomic)."""
    from skin_cancer.io import write_json

    write_json(out_dir / "report.json", result.report)
    result.images.to_csv(out_dir / "images.csv", index=False)
    result.pairs.to_csv(out_dir / "pairs.csv", index=False)
    result.provenance.to_csv(out_dir / "provenance.csv", index=False)


def read_images(path) -> pd.DataFrame:
    """The per-image table written by `write` (images.csv)."""
    return pd.read_csv(
        path,
        dtype={"phash": str, "sha256": str, "leak": str, "groups": str, "unreadable": str, "found_in": str},
        keep_default_na=False,
    )

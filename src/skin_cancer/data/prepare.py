"""Data preparation: decode and normalise every image of the training collections (the data and its
sources), drop training images that copy a test image or share its lesion, split train/validation by
group, and write manifests plus a report of everything skipped or dropped."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from skin_cancer.data.images import PRIMARY, ImageRecord, read_all
from skin_cancer.errors import DataError

SPLITS = ("train", "test")
MANIFEST_SPLITS = ("train", "val", "test")
LAYOUT = "<root>/train/<class>/<images> and <root>/test/<class>/<images>"


def scan_layout(root: Path) -> dict[str, dict[str, list[Path]]]:
    """Files per split and class of a Kaggle-layout folder; raises DataError naming what is wrong."""
    if not root.is_dir():
        raise DataError(f"data root {root} not found: expected {LAYOUT}")
    layout: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"{split_dir} not found: expected {LAYOUT}")
        classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        layout[split] = {c: sorted(p for p in (split_dir / c).rglob("*") if p.is_file()) for c in classes}
    train_classes, test_classes = list(layout["train"]), list(layout["test"])
    if len(train_classes) < 2:
        raise DataError(f"{root / 'train'} has {len(train_classes)} class folder(s); at least two are needed ({LAYOUT})")
    if train_classes != test_classes:
        raise DataError(f"class folders differ: train has {train_classes}, test has {test_classes}")
    for split, classes in layout.items():
        for label, files in classes.items():
            if not files:
                raise DataError(f"{root / split / label} is an empty class folder")
    return layout


def split_train_val(records: list[ImageRecord], val_fraction: float, seed: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Seeded split stratified by class that keeps every group (copies, same lesion) on one side."""
    from sklearn.model_selection import train_test_split

    clusters: dict[int, list[ImageRecord]] = {}
    for record in records:
        clusters.setdefault(record.group, []).append(record)
    keys = sorted(clusters)
    cluster_labels = [sorted(r.label for r in clusters[k])[0] for k in keys]
    for label in sorted(set(cluster_labels)):
        if cluster_labels.count(label) < 2:
            raise DataError(f"class {label!r} has fewer than 2 distinct training images: cannot split train/validation")
    train_keys, val_keys = train_test_split(keys, test_size=val_fraction, random_state=seed, stratify=cluster_labels)
    expand = lambda ks: [r for k in sorted(ks) for r in clusters[k]]  # noqa: E731
    return expand(train_keys), expand(val_keys)


def fingerprint(records: list[ImageRecord]) -> str:
    """Hash of the (split, label, content) of every used image: equal data gives an equal fingerprint."""
    lines = sorted(f"{r.split}\t{r.label}\t{r.sha256}" for r in records)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def images_fingerprint(sha256s) -> str:
    """Hash of a set of images' contents (order-free): which validation images a model was calibrated
    on, so that models validated alike can be compared or combined."""
    return hashlib.sha256("\n".join(sorted(sha256s)).encode()).hexdigest()[:16]


def counts(records: list[ImageRecord]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in records:
        out.setdefault(r.split, {}).setdefault(r.label, 0)
        out[r.split][r.label] += 1
    return out


def attach_audit(records: list[ImageRecord], audit_images: pd.DataFrame) -> None:
    """Copy the audit's perceptual hash, clusters, groups and leaks onto the records (by key);
    raises DataError when the audit does not cover an image."""
    by_key = audit_images.set_index("key")
    for record in records:
        if record.key not in by_key.index:
            raise DataError(f"{record.key}: not in the audit of the data (re-run the audit stage)")
        row = by_key.loc[record.key]
        record.phash, record.copy_cluster, record.group = row.phash, int(row.copy_cluster), int(row.group)
        record.leak = row.leak if isinstance(row.leak, str) else ""
        record.found_in = row.found_in if isinstance(row.found_in, str) else ""


def leak_kind(copy_cluster, group, training_clusters: set, training_groups: set) -> str:
    """The leak rule for one test image: "copy" when a training image is a copy of it, "group" when
    one shares its group (lesion, patient) without being a copy, "" otherwise (the clean test subset)."""
    return "copy" if copy_cluster in training_clusters else "group" if group in training_groups else ""


def mark_leaks(test: list[ImageRecord], training: list[ImageRecord]) -> None:
    """Set each test record's `leak` (see leak_kind) against the training records."""
    clusters, groups = {r.copy_cluster for r in training}, {r.group for r in training}
    for record in test:
        record.leak = leak_kind(record.copy_cluster, record.group, clusters, groups)


def training_pool(
    records: list[ImageRecord], drop_test_duplicates: bool, held_out: tuple[str, ...] = ()
) -> tuple[list[ImageRecord], list[dict]]:
    """(train/val candidates, dropped with reasons). A training image that copies a test image is
    dropped (`drop_test_duplicates`); so is one from a collection that names its lesions (a group
    column) when its audit group (lesion, copies, carried-over lesions) holds a test image: such
    collections never have a lesion on both sides. Same-lesion twins found only through the audit
    in a collection without lesion ids (the Kaggle folders) stay and are reported as test leaks.
    A collection `held_out` for scoring (an audit.against name) takes its copies with it: every
    training image the audit found in it, and every image of that image's audit group, is dropped."""
    test = [r for r in records if r.split == "test"]
    test_by_cluster = {r.copy_cluster: r.key for r in test}
    test_by_group = {r.group: r.key for r in test}
    training = [r for r in records if r.split == "train"]
    held_by_group = {}
    for record in training:
        for name in set(filter(None, record.found_in.split(";"))) & set(held_out):
            held_by_group.setdefault(record.group, (name, record.key))
    pool, dropped = [], []
    for record in training:
        if drop_test_duplicates and record.copy_cluster in test_by_cluster:
            reason, other = "copy of a test image", test_by_cluster[record.copy_cluster]
        elif record.named_group and record.group in test_by_group:
            reason, other = "same lesion as a test image", test_by_group[record.group]
        elif record.group in held_by_group:
            name, copy = held_by_group[record.group]
            if name in record.found_in.split(";"):
                reason, other = f"copy in held-out collection {name}", name
            else:
                reason, other = f"same lesion as a copy in held-out collection {name}", copy
        else:
            pool.append(record)
            continue
        dropped.append({"path": record.source, "label": record.label, "reason": reason, "duplicate_of": other})
    return pool, dropped


def prepare(
    dataset,
    out_dir: Path,
    published_dir: Path,
    audit_images: pd.DataFrame,
    *,
    positive_class: str | None,
    val_fraction: float,
    seed: int,
    drop_test_duplicates: bool,
    strict: bool,
    max_image_pixels: int,
    held_out: tuple[str, ...],
    workers: int,
) -> dict:
    """Build `out_dir` with {train,val,test}.csv manifests, report.json and converted images from a
    collection (datasets.training_collections: columns path, key, split, label, group, collection).

    `audit_images` is the audit's per-image table (copy clusters, groups, leaks, provenance);
    `held_out` names the audited collections whose copies never enter train/val. Returns the
    report. The caller renames `out_dir` to `published_dir` once complete, so paths recorded in
    the manifests point into `published_dir`.
    """
    frame = dataset.frame
    classes = sorted(set(frame.label[frame.split == "train"]))
    check_classes(dataset.root, classes, positive_class)
    folders = (out_dir / "converted", published_dir / "converted")
    records, skipped = read_audited(frame, audit_images, max_image_pixels, folders, strict, workers)
    test = [r for r in records if r.split == "test"]
    train_pool, dropped = training_pool(records, drop_test_duplicates, tuple(held_out))
    check_training_images(dataset.root, classes, train_pool)
    # Leaks: what the data's own training folder shares with a test image (dropped copies included,
    # as the audit counts them), plus what the sources still bring in after the drops.
    kept = {id(r) for r in train_pool}
    mark_leaks(test, [r for r in records if r.split == "train" and (r.collection == PRIMARY or id(r) in kept)])
    train, val = split_train_val(train_pool, val_fraction, seed)
    for record in val:
        record.split = "val"

    class_names = output_order(classes, positive_class)
    label_index = {c: i for i, c in enumerate(class_names)}
    for name, subset in (("train", train), ("val", val), ("test", test)):
        write_manifest(subset, label_index, out_dir / f"{name}.csv")

    used = train + val + test
    return {
        "root": str(dataset.root),
        "classes": classes,
        "class_names": class_names,
        "positive_class": positive_class,
        "negative_classes": [c for c in classes if c != positive_class] if positive_class else None,
        "counts": counts(used),
        "collections": {name: counts([r for r in used if r.collection == name]) for name in sorted({r.collection for r in used})},
        "files_found": len(frame),
        "skipped": skipped,
        "dropped": dropped,
        "converted": sum(r.path != r.source for r in used),
        "fingerprint": fingerprint(used),
        "summary": summary(skipped, dropped, held_out, train + val, test),
    }


def read_audited(frame: pd.DataFrame, audit_images: pd.DataFrame, max_image_pixels: int, folders, strict: bool, workers: int):
    """(records, skipped) of `read_all`, each record carrying the audit's copy cluster, group, leak
    and provenance, and whether its lesion group is a named one (from the collection's metadata)."""
    records, skipped = read_all(frame, max_image_pixels, folders, strict, workers)
    attach_audit(records, audit_images)
    named = dict(zip(frame.key, frame.group.map(lambda g: isinstance(g, str))))
    for record in records:
        record.named_group = named[record.key]
    return records, skipped


def output_order(classes: list[str], positive_class: str | None) -> list[str]:
    """The model's class order: binary, the positive class last (label index 1); K classes, sorted."""
    return [*[c for c in classes if c != positive_class], positive_class] if positive_class else classes


def check_classes(root, classes: list[str], positive_class: str | None) -> None:
    """DataError unless the training part has two classes or more, and a positive class names one
    of exactly two."""
    if len(classes) < 2:
        raise DataError(f"{root}: {len(classes)} class(es) in the training part; at least two are needed")
    if positive_class is not None and positive_class not in classes:
        raise DataError(f"data.positive_class={positive_class!r} is not a class of {root}: {classes}")
    if positive_class is not None and len(classes) > 2:
        raise DataError(
            f"data.positive_class={positive_class!r} needs two classes, the data has {len(classes)}: {classes} "
            "(set data.positive_class: null for a K-class model, or map the labels onto two classes)"
        )


def check_training_images(root, classes: list[str], train_pool: list) -> None:
    """DataError naming the first class without a usable training image (all skipped or dropped)."""
    for label in classes:
        if not any(r.label == label for r in train_pool):
            raise DataError(f"class {label!r} has no usable training image in {root}")


def write_manifest(records: list, label_index: dict[str, int], path: Path) -> None:
    """One split's manifest: a row per image record, with the class index of its label."""
    table = pd.DataFrame([asdict(r) for r in records]).drop(columns="named_group")
    table.insert(2, "label_index", table["label"].map(label_index))
    table.to_csv(path, index=False)


def summary(skipped: list, dropped: list[dict], held_out: tuple[str, ...], train_val: list, test: list) -> dict:
    """What prepare skipped, dropped and kept apart, in counts (the report's `summary`)."""
    return {
        "skipped": len(skipped),
        "dropped_test_duplicates": sum(d["reason"] == "copy of a test image" for d in dropped),
        "dropped_test_lesions": sum(d["reason"] == "same lesion as a test image" for d in dropped),
        "dropped_held_out": {
            name: sum(d["reason"].endswith(f"held-out collection {name}") for d in dropped) for name in held_out
        },
        "train_val_groups": len({r.group for r in train_val}),
        "test_leaks": {kind: sum(r.leak == kind for r in test) for kind in ("copy", "group")},
        "clean_test_images": sum(not r.leak for r in test),
    }


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest written by `prepare`; raises DataError if it is missing or lacks columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run the prepare stage first)")
    frame = pd.read_csv(path, dtype={"sha256": str, "phash": str, "leak": str, "found_in": str}, keep_default_na=False)
    missing = {"path", "label", "label_index"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: manifest lacks columns {sorted(missing)}")
    return frame

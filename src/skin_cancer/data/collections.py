"""Labelled image collections in the layouts we read: a Kaggle-style folder
(`<root>/<split>/<class>/<image>` or `<root>/<class>/<image>`) or an image folder with a metadata CSV
(HAM10000's layout: `images/` + `HAM10000_metadata.csv` with image_id, dx, lesion_id; or the ISIC
challenge's ground truth, one-hot columns `image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`, or ISIC 2017's
`image_id,melanoma,seborrheic_keratosis` where a row of zeros is the rest class)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skin_cancer.data.images import PRIMARY
from skin_cancer.data.prepare import scan_layout
from skin_cancer.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
LABEL_COLUMNS = ("label", "dx", "diagnosis", "class", "target")
GROUP_COLUMNS = ("lesion_id", "patient_id", "group")
CSV_LAYOUT = "an image folder plus a metadata CSV with an image column and a label column"
# The optional keys of a collection's config entry that say how to read it (load_dataset's arguments).
LAYOUT_KEYS = ("csv", "images", "path_column", "label_column", "group_column", "group_pattern", "rest_label")


@dataclass
class Dataset:
    """One labelled collection: `frame` has columns path, key (path relative to the root), split,
    label and group (None where the source has no group column)."""

    name: str
    root: Path
    frame: pd.DataFrame
    group_column: str | None = None


def load_dataset(
    name: str,
    root: Path,
    *,
    csv: str | None = None,
    images: str | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
    group_pattern: str | None = None,
    rest_label: str | None = None,
) -> Dataset:
    """Read a dataset in any supported layout; raises DataError naming what is wrong. Without a group
    column, `group_pattern` (a regular expression searched in each image's path relative to the
    root; its first group, else its match) names the lesion, e.g. a case's second image; `rest_label`
    labels the rows of a one-hot ground truth that have no 1."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        csv, root = root.name, root.parent  # relative to root, like a configured csv
    if not root.is_dir():
        raise DataError(f"dataset {name!r}: {root} not found")
    csv_files = sorted(root.glob("*.csv"))
    if csv is None and len(csv_files) == 1 and not (root / "train").is_dir():
        csv = csv_files[0].name
    if csv is not None:
        dataset = _from_csv(
            name,
            root,
            Path(csv) if Path(csv).is_absolute() else root / csv,
            images,
            path_column,
            label_column,
            group_column,
            rest_label,
        )
    else:
        dataset = _from_folders(name, root)
    if group_pattern and dataset.group_column is None:
        dataset.frame["group"] = groups_from_pattern(dataset.frame.key, group_pattern, f"dataset {name!r}")
    return dataset


def groups_from_pattern(keys: pd.Series, pattern: str, where: str) -> pd.Series:
    """Each key's lesion: the first group of `pattern` searched in it (or the whole match); DataError
    naming the first key it does not match."""
    compiled = re.compile(pattern)

    def group(key: str) -> str | None:
        found = compiled.search(key)
        return None if found is None else (found.group(1) if compiled.groups else found.group(0))

    groups = keys.map(group)
    if groups.isna().any():
        raise DataError(f"{where}: group_pattern {pattern!r} does not match image {keys[groups.isna()].iloc[0]!r}")
    return groups


def _from_folders(name: str, root: Path) -> Dataset:
    if (root / "train").is_dir() or (root / "test").is_dir():
        layout = scan_layout(root)
    else:
        classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(classes) < 1:
            raise DataError(
                f"dataset {name!r}: {root} has no class folders: expected <root>/<class>/<images>, "
                f"<root>/<split>/<class>/<images> or {CSV_LAYOUT}"
            )
        layout = {"all": {c.name: sorted(p for p in c.rglob("*") if p.is_file()) for c in classes}}
        for label, files in layout["all"].items():
            if not files:
                raise DataError(f"dataset {name!r}: {root / label} is an empty class folder")
    rows = [
        (str(path), str(path.relative_to(root)), split, label)
        for split, classes in layout.items()
        for label, files in classes.items()
        for path in files
        if not path.name.startswith(".")
    ]
    frame = pd.DataFrame(rows, columns=["path", "key", "split", "label"])
    frame["group"] = None
    return Dataset(name, root, frame)


def _first_present(columns, candidates, what: str, csv: Path, given: str | None) -> str | None:
    if given is not None:
        if given not in columns:
            raise DataError(f"{csv}: no {what} column {given!r}; columns are {list(columns)}")
        return given
    return next((c for c in candidates if c in columns), None)


def _from_csv(name, root, csv: Path, images, path_column, label_column, group_column, rest_label) -> Dataset:
    if not csv.is_file():
        raise DataError(f"dataset {name!r}: metadata CSV {csv} not found")
    table = pd.read_csv(csv, dtype=str)
    if table.empty:
        raise DataError(f"{csv}: metadata CSV has no rows")
    image_dir = Path(images) if images and Path(images).is_absolute() else root / (images or "")
    files = [p for p in image_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"dataset {name!r}: no image files under {image_dir} ({CSV_LAYOUT})")
    by_name, by_lower_case = {}, {}
    for path in files:
        for key in (str(path.relative_to(image_dir)), path.name, path.stem):
            by_name.setdefault(key, path)
        # A collection written on a case-insensitive disk (Derm7pt's "FCl/" is the folder "FCL/"):
        # a path that differs in case only resolves, unless two files would.
        lower = str(path.relative_to(image_dir)).lower()
        by_lower_case[lower] = None if lower in by_lower_case else path
    if path_column is None:
        # The image column is the one whose values name image files (with or without extension).
        resolves = {c: table[c].map(lambda v: v in by_name).mean() for c in table.columns}
        path_column = max(resolves, key=resolves.get)
        if resolves[path_column] == 0:
            raise DataError(f"{csv}: no column names the image files under {image_dir}")
    elif path_column not in table.columns:
        raise DataError(f"{csv}: no image column {path_column!r}; columns are {list(table.columns)}")
    label_column = _first_present(table.columns, LABEL_COLUMNS, "label", csv, label_column)
    labels = table[label_column] if label_column else one_hot_labels(table, csv, path_column, rest_label)
    group_column = _first_present(table.columns, GROUP_COLUMNS, "group", csv, group_column)
    paths = table[path_column].map(
        lambda v: by_name.get(v) or (image_dir / v if (image_dir / v).is_file() else None) or by_lower_case.get(str(v).lower())
    )
    missing = table.loc[paths.isna(), path_column]
    if len(missing):
        raise DataError(
            f"{csv}: {len(missing)} of {len(table)} images in column {path_column!r} do not exist "
            f"under {image_dir}, e.g. {missing.iloc[0]!r}"
        )
    frame = pd.DataFrame(
        {
            "path": paths.map(str),
            "key": paths.map(lambda p: str(p.relative_to(root))),
            "split": "all",
            "label": labels.values,
            "group": table[group_column].values if group_column else None,
        }
    )
    return Dataset(name, root, frame, group_column)


def one_hot_labels(table: pd.DataFrame, csv: Path, image_column: str, rest_label: str | None = None) -> pd.Series:
    """Labels of the ISIC challenge ground-truth layout, one 0/1 column per class (`image,MEL,NV,...`):
    the lower-cased name of the column holding the 1, or `rest_label` where none does (ISIC 2017: a
    row of zeros is a nevus). DataError when there is no label column of either kind, or naming the
    first row that is not one-hot."""
    columns = [c for c in table.columns if c != image_column and table[c].isin(["0", "1", "0.0", "1.0"]).all()]
    if len(columns) < (1 if rest_label else 2):
        raise DataError(
            f"{csv}: no label column (one of {LABEL_COLUMNS}, or set label_column) and no one-hot class columns "
            "(the ISIC layout: image,MEL,NV,BCC,AKIEC,BKL,DF,VASC)"
        )
    values = table[columns].astype(float)
    hits = values.sum(axis=1)
    bad = values.index[(hits != 1) & ~((hits == 0) & bool(rest_label))]
    if len(bad):
        row = bad[0]
        raise DataError(
            f"{csv}: row {row + 2} (image {table[image_column][row]!r}) is not one-hot over {columns}: "
            f"{dict(zip(columns, values.loc[row].tolist()))}"
        )
    return values.idxmax(axis=1).str.lower().where(hits == 1, rest_label)


def map_labels(frame: pd.DataFrame, label_map: dict[str, str | None] | None, where: str) -> tuple[pd.DataFrame, int]:
    """Rename labels by `label_map`; a label mapped to None is left out (returns how many rows).
    A label the map does not mention is an error listing every such label."""
    if not label_map:
        return frame, 0
    unmapped = sorted(set(frame.label) - set(label_map))
    if unmapped:
        raise DataError(f"{where}: label_map leaves labels unmapped: {unmapped} (map them to a class or to null)")
    mapped = frame.assign(label=frame.label.map(label_map))
    kept = mapped[mapped.label.notna()].reset_index(drop=True)
    return kept, len(frame) - len(kept)


def cut_test_split(frame: pd.DataFrame, fraction: float, seed: int, where: str) -> pd.DataFrame:
    """Split a collection without split folders: about `fraction` of its groups (lesions; an image
    without one is its own) become "test", stratified by the source's own labels (those too rare to
    stratify alone pooled) so that every label map sees the same test lesions; the rest "train".
    Depends on the data and `seed` alone."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = max(2, round(1 / fraction))
    groups = [g if isinstance(g, str) else f"image:{k}" for g, k in zip(frame.group, frame.key)]
    lesions = pd.DataFrame({"group": groups, "label": frame.label}).drop_duplicates("group").label.value_counts()
    # Labels too rare to stratify alone (Derm7pt's one "melanoma", four metastases) share a stratum.
    rare = {label: int(n) for label, n in lesions.items() if n < folds}
    if rare and sum(rare.values()) < folds:
        raise DataError(
            f"{where}: cannot cut a lesion-grouped test part of {fraction}: labels with fewer than {folds} lesions: {rare}"
        )
    strata = frame.label.where(~frame.label.isin(list(rare)), "(rare labels)")
    order = frame.sort_values("key").index  # file order must not move the split
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    _, test_rows = next(splitter.split(order, strata[order], pd.Series(groups, index=frame.index)[order]))
    split = pd.Series("train", index=frame.index)
    split[order[test_rows]] = "test"
    return frame.assign(split=split)


def from_spec(name: str, spec, data, where: str, cut: bool = False) -> tuple[Dataset, int]:
    """The collection a config entry at key `where` describes (a DatasetSpec or the data config;
    relative roots from the project root): loaded; cut into train/test by `data.test_fraction` /
    `data.test_seed` where it has no split folders and `cut` or `spec.split` asks for parts; labels
    mapped; only its test part where `spec.split` says so. Returns (dataset, images the label map left out)."""
    from skin_cancer.config import resolve_from_project

    dataset = load_dataset(
        name,
        resolve_from_project(spec.root),
        **{key: getattr(spec, key, None) for key in LAYOUT_KEYS},
    )
    frame, split = dataset.frame, getattr(spec, "split", None)
    if (frame.split == "all").all() and (cut or split):
        frame = cut_test_split(frame, data.test_fraction, data.test_seed, where)
    if split:
        frame = frame[frame.split == split].reset_index(drop=True)
    dataset.frame, unmapped = map_labels(frame, spec.label_map, f"{where}.label_map")
    return dataset, unmapped


def other_collections(cfg) -> dict:
    """The `audit.against` entries the audit searches for copies: all but the data's own folder
    (data=ham10000 is not audited against audit.against.ham10000)."""
    from skin_cancer.config import resolve_from_project

    own = resolve_from_project(cfg.data.root)
    return {name: spec for name, spec in cfg.audit.against.items() if resolve_from_project(spec.root) != own}


def training_collections(data) -> Dataset:
    """The data (config `data`) and the training part of each of its `sources` as one collection.
    Column `collection` names where an image comes from ("data" or the source's name); a source's
    keys and groups are prefixed with its name so that they cannot collide with the data's."""
    primary, _ = from_spec(PRIMARY, data, data, "data", cut=True)
    # A seeded sample, not the first rows: a metadata CSV sorted by diagnosis would keep one diagnosis.
    frames = [limit_per_class(primary.frame, data.per_class_limit, seed=data.test_seed).assign(collection=PRIMARY)]
    for name, spec in data.sources.items():
        source, _ = from_spec(name, spec, data, f"data.sources.{name}", cut=True)
        frame = limit_per_class(source.frame[source.frame.split == "train"], spec.per_class_limit, seed=data.test_seed)
        frames.append(
            frame.assign(
                key=f"{name}/" + frame.key,
                group=frame.group.map(lambda g, n=name: f"{n}:{g}" if isinstance(g, str) else None),
                collection=name,
            )
        )
    primary.frame = pd.concat(frames, ignore_index=True)
    return primary


def limit_per_class(frame: pd.DataFrame, limit: int | None, seed: int | None = None) -> pd.DataFrame:
    """At most `limit` rows per split and class: the first ones, or a seeded sample when `seed` is given."""
    if limit is None:
        return frame
    order = frame if seed is None else frame.sample(frac=1.0, random_state=seed)
    return order.groupby(["split", "label"], sort=False).head(limit).sort_index().reset_index(drop=True)

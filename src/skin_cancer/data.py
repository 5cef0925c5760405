"""Data preparation: read a Kaggle-layout folder, decode and normalise every image, find duplicates,
split train/validation, and write manifests plus a report of everything skipped or dropped."""
from __future__ import annotations

import hashlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

SPLITS = ("train", "test")
MANIFEST_SPLITS = ("train", "val", "test")
LAYOUT = "<root>/train/<class>/<images> and <root>/test/<class>/<images>"
# Formats tf.io.decode_image reads; any other format, or any non-RGB mode, is converted to PNG.
TF_FORMATS = {"JPEG", "PNG", "BMP", "GIF"}


class DataError(ValueError):
    """The data folder cannot be used as a whole (missing, wrong layout, empty class)."""


class BadImage(ValueError):
    """One file cannot be used as an image; the message is the recorded reason."""


@dataclass
class ImageRecord:
    split: str
    label: str
    source: str  # the original file
    path: str  # the file the input pipeline decodes: the source, or its RGB conversion
    sha256: str
    phash: str
    dhash: str
    width: int
    height: int
    mode: str
    format: str
    group: int = -1  # duplicate cluster; images of one cluster never straddle train and validation


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


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode: grayscale, 16-bit and float, palette, RGBA, CMYK, ..."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and pixels.max(initial=0) <= 1.0:
            pixels = pixels * 255.0
        elif pixels.max(initial=0) > 255:
            pixels = pixels / 257.0  # 16-bit range onto 8-bit
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode(path: Path, max_pixels: int) -> tuple[Image.Image, Image.Image]:
    """(original, RGB) images of a file, fully decoded; raises BadImage with the reason."""
    if path.name.startswith("."):
        raise BadImage("hidden file")
    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(f"{width}x{height} pixels exceeds data.max_image_pixels={max_pixels} (decompression bomb?)")
            image.load()
    except UnidentifiedImageError:
        raise BadImage("not a recognised image (unknown format or corrupt header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"corrupt or truncated image: {error}") from None
    return image, to_rgb(image)


def perceptual_hashes(rgb: Image.Image) -> tuple[str, str]:
    """64-bit DCT perceptual hash and gradient hash (imagehash.phash, imagehash.dhash), 16 hex digits each."""
    import imagehash

    return str(imagehash.phash(rgb)), str(imagehash.dhash(rgb))


def read_image(path: Path, split: str, label: str, max_pixels: int, converted: tuple[Path, Path]) -> ImageRecord:
    """Decode one file into a record; files tf.data cannot decode as RGB get a PNG conversion.

    `converted` is (folder written now, folder it will be published as).
    """
    original, rgb = decode(path, max_pixels)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    phash, dhash = perceptual_hashes(rgb)
    target = path
    if original.format not in TF_FORMATS or original.mode != "RGB":
        # The content hash in the name keeps equal names from different classes apart.
        relative = Path(split) / label / f"{path.stem}-{digest[:12]}.png"
        (converted[0] / relative).parent.mkdir(parents=True, exist_ok=True)
        rgb.save(converted[0] / relative)
        target = converted[1] / relative
    return ImageRecord(
        split=split, label=label, source=str(path), path=str(target),
        sha256=digest, phash=phash, dhash=dhash,
        width=original.width, height=original.height, mode=original.mode, format=str(original.format),
    )


def limit_per_class(layout: dict[str, dict[str, list[Path]]], limit: int | None) -> dict[str, dict[str, list[Path]]]:
    """The first `limit` files of every split and class (sorted by name), for smoke runs."""
    if limit is None:
        return layout
    return {split: {label: files[:limit] for label, files in classes.items()} for split, classes in layout.items()}


def read_all(layout, max_pixels: int, converted: tuple[Path, Path], strict: bool, workers: int = 4):
    """Decode every file in parallel; returns (records, skipped) with a reason per skipped file."""
    jobs = [(path, split, label) for split, classes in layout.items() for label, files in classes.items() for path in files]
    records, skipped = [], []

    def work(job):
        path, split, label = job
        try:
            return read_image(path, split, label, max_pixels, converted), None
        except BadImage as error:
            if strict:
                raise BadImage(f"{path}: {error} (data.strict=true)") from None
            return None, {"path": str(path), "split": split, "label": label, "reason": str(error)}

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for record, skip in tqdm(pool.map(work, jobs), total=len(jobs), desc="prepare: decoding", unit="img"):
            (records.append(record) if record else skipped.append(skip))
    return records, skipped


def hash_bits(hex_hashes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, block: int = 1024) -> list[tuple[int, int, int]]:
    """All pairs (i, j, distance), i < j, whose 64-bit hashes differ in at most `max_distance` bits.

    Vectorised: XOR and popcount of one block of rows against all later hashes at a time.
    """
    pairs = []
    n = len(hashes)
    for start in range(0, n, block):
        rows = hashes[start:start + block]
        distances = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        i, j = np.nonzero(distances <= max_distance)
        i = i + start
        keep = j > i
        pairs += [(int(a), int(b), int(d)) for a, b, d in zip(i[keep], j[keep], distances[i[keep] - start, j[keep]])]
    return pairs


def duplicate_groups(records: list[ImageRecord], max_distance: int) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Cluster id per record (connected components of exact and near-duplicate pairs) and the pairs.

    A near-duplicate pair is within `max_distance` bits in both the DCT hash and the gradient
    hash: on dermoscopy, the DCT hash alone matches different small lesions centred on pale skin.
    Exact duplicates (same file hash) come out at distance 0 whatever their hashes.
    """
    parent = list(range(len(records)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    dhashes = hash_bits([r.dhash for r in records])
    pairs = [(i, j, d) for i, j, d in near_duplicate_pairs(hash_bits([r.phash for r in records]), max_distance)
             if int(np.bitwise_count(dhashes[i] ^ dhashes[j])) <= max_distance]
    by_sha: dict[str, int] = {}
    for i, record in enumerate(records):
        first = by_sha.setdefault(record.sha256, i)
        if first != i:
            pairs.append((first, i, 0))
    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    return [find(i) for i in range(len(records))], pairs


def describe_groups(records: list[ImageRecord], groups: list[int], pairs) -> list[dict]:
    """Report entries for every cluster of two or more images."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    pair_info: dict[int, list] = {}
    for i, j, d in pairs:
        exact = records[i].sha256 == records[j].sha256
        pair_info.setdefault(groups[i], []).append({"a": records[i].source, "b": records[j].source, "distance": d, "exact": exact})
    out = []
    for g, idx in members.items():
        if len(idx) < 2:
            continue
        labels = sorted({records[i].label for i in idx})
        splits = sorted({records[i].split for i in idx})
        out.append({
            "images": [{"split": records[i].split, "label": records[i].label, "path": records[i].source} for i in idx],
            "pairs": pair_info.get(g, []),
            "exact": all(p["exact"] for p in pair_info.get(g, [])),
            "cross_split": len(splits) > 1,
            "conflicting_labels": labels if len(labels) > 1 else [],
        })
    return out


def split_train_val(records: list[ImageRecord], val_fraction: float, seed: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Seeded split stratified by class that keeps every duplicate cluster on one side."""
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


def counts(records: list[ImageRecord]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in records:
        out.setdefault(r.split, {}).setdefault(r.label, 0)
        out[r.split][r.label] += 1
    return out


def prepare(root: Path, out_dir: Path, published_dir: Path, *, positive_class: str, val_fraction: float, seed: int,
            near_duplicate_distance: int, drop_test_duplicates: bool, strict: bool, max_image_pixels: int,
            per_class_limit: int | None = None, workers: int = 4) -> dict:
    """Build `out_dir` with {train,val,test}.csv manifests, report.json and converted images.

    Returns the report. The caller renames `out_dir` to `published_dir` once complete, so paths
    recorded in the manifests point into `published_dir`.
    """
    layout = limit_per_class(scan_layout(root), per_class_limit)
    classes = list(layout["train"])
    if positive_class not in classes:
        raise DataError(f"data.positive_class={positive_class!r} is not a class folder of {root / 'train'}: {classes}")
    records, skipped = read_all(layout, max_image_pixels, (out_dir / "converted", published_dir / "converted"), strict, workers)
    groups, pairs = duplicate_groups(records, near_duplicate_distance)
    for record, group in zip(records, groups):
        record.group = group

    test_groups = {r.group for r in records if r.split == "test"}
    dropped, train_pool = [], []
    for record in (r for r in records if r.split == "train"):
        if drop_test_duplicates and record.group in test_groups:
            twin = next(r.source for r in records if r.split == "test" and r.group == record.group)
            dropped.append({"path": record.source, "label": record.label, "reason": "duplicate of a test image", "duplicate_of": twin})
        else:
            train_pool.append(record)
    for label in classes:
        if not any(r.label == label for r in train_pool):
            raise DataError(f"class {label!r} has no usable training image in {root / 'train' / label}")
    train, val = split_train_val(train_pool, val_fraction, seed)
    for record in val:
        record.split = "val"
    test = [r for r in records if r.split == "test"]

    negative = [c for c in classes if c != positive_class]
    label_index = {c: int(c == positive_class) for c in classes}
    for name, subset in (("train", train), ("val", val), ("test", test)):
        frame = pd.DataFrame([asdict(r) for r in subset])
        frame.insert(2, "label_index", frame["label"].map(label_index))
        frame.to_csv(out_dir / f"{name}.csv", index=False)

    used = train + val + test
    report = {
        "root": str(root),
        "classes": classes,
        "positive_class": positive_class,
        "negative_classes": negative,
        "counts": counts(used),
        "files_found": sum(len(f) for c in layout.values() for f in c.values()),
        "skipped": skipped,
        "dropped": dropped,
        "converted": sum(r.path != r.source for r in used),
        "duplicate_groups": describe_groups(records, groups, pairs),
        "near_duplicate_distance": near_duplicate_distance,
        "fingerprint": fingerprint(used),
    }
    report["summary"] = {
        "skipped": len(skipped),
        "dropped_test_duplicates": len(dropped),
        "duplicate_groups": len(report["duplicate_groups"]),
        "cross_split_groups": sum(g["cross_split"] for g in report["duplicate_groups"]),
        "exact_duplicate_groups": sum(g["exact"] for g in report["duplicate_groups"]),
        "label_conflicts": sum(bool(g["conflicting_labels"]) for g in report["duplicate_groups"]),
    }
    return report


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest written by `prepare`; raises DataError if it is missing or lacks columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run the prepare stage first)")
    frame = pd.read_csv(path, dtype={"sha256": str, "phash": str, "dhash": str})
    missing = {"path", "label", "label_index"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: manifest lacks columns {sorted(missing)}")
    return frame

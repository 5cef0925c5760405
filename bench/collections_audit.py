"""The copy audit across every collection in conf/collection/, each read whole: how many images of
each collection have a copy (any flip, quarter turn, re-encoding or squash the audit covers) in each
other one, and inside itself. Writes collections_audit.json and collections_audit.md under --workdir.

    python bench/collections_audit.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import skin_cancer  # noqa: F401  first: it caps NumPy and OpenBLAS at AVX2, which works only before they load

# isort: split
import pandas as pd

from skin_cancer import host

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ("kaggle", "ham10000", "isic2017", "isic2017_validation", "derm7pt")


def load_whole(name: str):
    """A collection of conf/collection/, every image, its labels as the collection names them."""
    from skin_cancer.config import compose, resolve_from_project
    from skin_cancer.data.collections import LAYOUT_KEYS, load_dataset

    spec = compose([f"+collection@audit.against.{name}={name}"], ROOT / "conf").audit.against[name]
    return load_dataset(name, resolve_from_project(spec.root), **{key: spec.get(key) for key in LAYOUT_KEYS})


def copy_matrix(images: pd.DataFrame) -> pd.DataFrame:
    """Rows: a collection's images; columns: how many of them have a copy in that collection (the
    diagonal: a copy inside the collection itself)."""
    collections = list(dict.fromkeys(images.collection))
    members = images.groupby("copy_cluster").collection.agg(list)
    rows = {}
    for a in collections:
        mine = images[images.collection == a]
        rows[a] = {}
        for b in collections:
            others = mine.copy_cluster.map(lambda c, b=b, a=a: members[c].count(b) - (1 if b == a else 0))
            rows[a][b] = int((others > 0).sum())
    return pd.DataFrame(rows).T.loc[collections, collections]


def main() -> None:
    from skin_cancer.data import audit
    from skin_cancer.data.collections import Dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    print(f"host: {host.one_line(host.describe())}", flush=True)
    started = time.perf_counter()
    frames = []
    for name in COLLECTIONS:
        frame = load_whole(name).frame
        frames.append(frame.assign(key=f"{name}/" + frame.key, collection=name, split="all", group=None))
    whole = pd.concat(frames, ignore_index=True)
    from skin_cancer.config import compose

    cfg = compose([], ROOT / "conf")  # the audit's settings as the pipeline has them
    settings = {"candidate_distance": cfg.audit.candidate_distance, "min_correlation": cfg.audit.min_correlation}
    result = audit.audit(Dataset("all", ROOT, whole), [], **settings, workers=args.workers, max_pixels=cfg.data.max_image_pixels)
    images = result.images.assign(collection=whole.collection.to_numpy())
    matrix = copy_matrix(images)
    sizes = images.collection.value_counts()
    table = ["| images of \\ with a copy in | images | " + " | ".join(matrix.columns) + " |", "|---" * (len(matrix) + 2) + "|"]
    table += [f"| {a} | {sizes[a]} | " + " | ".join(str(v) for v in row) + " |" for a, row in matrix.iterrows()]
    seconds = round(time.perf_counter() - started, 1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = args.workdir / "collections_audit.json"
    out.write_text(
        json.dumps({"seconds": seconds, "images": sizes.to_dict(), "copies": matrix.to_dict(orient="index")}, indent=2)
    )
    (args.workdir / "collections_audit.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"{len(images)} images in {seconds} s; wrote {out}")


if __name__ == "__main__":
    main()

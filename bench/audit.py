"""Benchmark and cross-check of the audit: time the command a user runs, `skin-cancer audit KAGGLE
--against HAM10000` (--runs times in fresh processes: min, median, max), then count HAM10000 copies
again by an independent method and compare with the last run's report.

    python bench/audit.py [--kaggle DIR] [--ham DIR] [--runs 3]

The independent count shares no code with the audit: each image becomes a 16x16 colour thumbnail
(PIL bilinear), every Kaggle image is compared with every HAM10000 image by root-mean-square pixel
difference (one matrix product), and a Kaggle image counts as a copy when its nearest HAM10000
image is within RMS_COPY grey levels. Same-lesion leaks are then counted from the metadata's
lesion_id alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import skin_cancer  # noqa: F401  first: it caps NumPy and OpenBLAS at AVX2, which works only before they load

# isort: split
import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RMS_COPY = 4.0  # grey levels (0-255): nearest-neighbour RMS is below 2 for 2488 images, above 6 for all others


def thumbs(paths: list[Path]) -> np.ndarray:
    return np.stack(
        [
            np.asarray(Image.open(p).convert("RGB").resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32).ravel()
            for p in paths
        ]
    )


def independent_count(kaggle: Path, ham: Path) -> dict:
    meta = pd.read_csv(ham / "HAM10000_metadata.csv")
    ham_paths = [ham / "images" / f"{i}.jpg" for i in meta.image_id]
    kaggle_paths = sorted(p for p in kaggle.rglob("*.jpg"))
    a, b = thumbs(kaggle_paths), thumbs(ham_paths)
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    nearest = squared.argmin(1)
    rms = np.sqrt(np.maximum(squared[np.arange(len(a)), nearest], 0) / a.shape[1])
    table = pd.DataFrame(
        {
            "split": [p.parent.parent.name for p in kaggle_paths],
            "label": [p.parent.name for p in kaggle_paths],
            "rms": rms,
            "dx": meta.dx.values[nearest],
            "lesion": meta.lesion_id.values[nearest],
        }
    )
    table["is_copy"] = table.rms <= RMS_COPY
    per_class = {
        label: {"images": int(len(rows)), "copies": int(rows.is_copy.sum()), "dx": rows[rows.is_copy].dx.value_counts().to_dict()}
        for label, rows in table.groupby("label")
    }
    train_lesions = set(table.lesion[table.is_copy & (table.split == "train")])
    test = table[(table.split == "test") & table.is_copy]
    gap = (float(table.rms[table.is_copy].max()), float(table.rms[~table.is_copy].min()))
    return {
        "per_class": per_class,
        "test_sharing_a_lesion_with_train": int(test.lesion.isin(train_lesions).sum()),
        "largest_copy_rms_and_smallest_other_rms": gap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kaggle", type=Path, default=ROOT.parent / "shared" / "data" / "skin-cancer-mvb")
    parser.add_argument("--ham", type=Path, default=ROOT.parent / "shared" / "data" / "ham10000")
    parser.add_argument("--runs", type=int, default=3, help="runs of the command; min, median and max are printed")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results" / "audit")
    args = parser.parse_args()
    from skin_cancer import host
    from skin_cancer.data.audit import read_images

    report_dir = args.workdir / "audit-report"
    command = [str(Path(sys.executable).parent / "skin-cancer"), "audit", str(args.kaggle), "--against", str(args.ham)]
    print(f"host: {host.one_line(host.describe())}")
    seconds = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run([*command, "--out", str(report_dir)], check=True, stdout=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - start)
    report = json.loads((report_dir / "report.json").read_text())
    images = read_images(report_dir / "images.csv")
    ours = report["provenance"][args.ham.name]["per_class"]
    # Test images sharing a HAM10000 lesion with a train image, by the audit's carried-over groups.
    train_tags = {t for g in images.groups[images.split == "train"] for t in g.split(";") if t}
    shared = sum(any(t in train_tags for t in g.split(";") if t) for g in images.groups[images.split == "test"])
    print(
        f"skin-cancer audit: {statistics.median(seconds):.1f} s median [{min(seconds):.1f}, {max(seconds):.1f}] over "
        f"{len(seconds)} runs, {len(images)} images against {report['provenance'][args.ham.name]['images']}"
    )
    start = time.perf_counter()
    check = independent_count(args.kaggle, args.ham)
    print(f"independent count: {time.perf_counter() - start:.1f} s")
    print(f"\n{'class':<10} {'audit copies':>12} {'independent':>12}")
    for label, c in ours.items():
        print(
            f"{label:<10} {c['copies_in_other']:>12} {check['per_class'][label]['copies']:>12}   "
            f"audit {c['by_other_label']}, independent {check['per_class'][label]['dx']}"
        )
    print(
        f"test images sharing a HAM10000 lesion with a train image: audit {shared}, "
        f"independent {check['test_sharing_a_lesion_with_train']}"
    )
    print(f"independent RMS gap (largest copy, smallest non-copy): {check['largest_copy_rms_and_smallest_other_rms']}")
    out = args.workdir / "audit.json"
    out.write_text(json.dumps({"host": host.describe(), "command": command, "seconds": seconds, "independent": check}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

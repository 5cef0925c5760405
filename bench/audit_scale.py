"""Benchmark: the audit at archive scale. A collection of the real images (Kaggle and HAM10000), near-
copies of them (flip or quarter turn, crop, brightness, JPEG quality: a tenth of the collection) and
new images that copy none (a turned part of a real image with shifted colours) up to 100k images;
times the copy search on growing prefixes of it, indexed (the audit's) and exhaustive (every
pair, as before the index) up to --exhaustive-max, checks that both find exactly the same pairs,
fits how each grows with the collection, and times the whole `audit()` at the largest size.
Writes audit_scale.json and audit_scale.png under --workdir.

    python bench/audit_scale.py                                  # 12.5k, 25k, 50k, 100k images
    python bench/audit_scale.py --sizes 5000 20000 --exhaustive-max 20000

The images are written once under <workdir>/audit_scale (about 1 GB for 100k) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import skin_cancer  # noqa: F401  first: it caps NumPy and OpenBLAS at AVX2, which works only before they load

# isort: split
import numpy as np
import pandas as pd
from PIL import Image

from skin_cancer import host

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers import AUDIT, COPY, exhaustive_copies  # noqa: E402


def real_images(shared: Path) -> list[Path]:
    kaggle = sorted((shared / "data" / "skin-cancer-mvb").rglob("*.jpg"))
    return kaggle + sorted((shared / "data" / "ham10000" / "images").glob("*.jpg"))


def perturbed_copy(job: tuple[int, str, str]) -> None:
    """A near-copy of a real image, as a collection holds them: flip / quarter turn, crop of 90-100%
    of the area, brightness +-10%, JPEG quality 70-95; seeded by its number."""
    number, source, target = job
    rng = np.random.default_rng(number)
    with Image.open(source) as image:
        image = image.convert("RGB")
    image = image.transpose(Image.Transpose(int(rng.integers(0, 7)))) if rng.random() < 0.875 else image
    side = np.sqrt(rng.uniform(0.9, 1.0))
    w, h = image.size
    cw, ch = int(w * side), int(h * side)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.9, 1.1)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target, quality=int(rng.integers(70, 96)))


def new_image(job: tuple[int, str, str]) -> None:
    """An image that copies none: a part (45-65% of the side) of a real image, turned by any angle,
    with its colours shifted per channel by +-20%; stands in for the other lesions of an archive."""
    number, source, target = job
    rng = np.random.default_rng(10_000_000 + number)
    with Image.open(source) as image:
        image = image.convert("RGB")
    w, h = image.size
    turned = image.rotate(float(rng.uniform(0, 360)), resample=Image.Resampling.BILINEAR)
    side = rng.uniform(0.45, 0.65)
    cw, ch = int(w * side), int(h * side)
    # inside the circle the rotation keeps filled
    cx, cy = w / 2 + rng.uniform(-0.12, 0.12) * w, h / 2 + rng.uniform(-0.12, 0.12) * h
    box = (int(cx - cw / 2), int(cy - ch / 2), int(cx - cw / 2) + cw, int(cy - ch / 2) + ch)
    pixels = np.asarray(turned.crop(box).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    pixels = pixels * rng.uniform(0.8, 1.2, 3)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target, quality=90)


def write_all(make, jobs: list[tuple[int, str, str]]) -> None:
    missing = [job for job in jobs if not Path(job[2]).is_file()]
    if missing:
        print(f"writing {len(missing)} images like {missing[0][2]}")
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(make, missing, chunksize=256))


def collection(shared: Path, size: int, folder: Path) -> pd.DataFrame:
    """`size` images: the real ones, near-copies of them (a tenth of the collection, so a real image
    has at most a few, as in an archive) and new images for the rest, shuffled once. Columns: path,
    and the real image a near-copy copies (-1 for others)."""
    real = real_images(shared)
    n_copies = size // 10
    n_new = max(0, size - len(real) - n_copies)
    copy_sources = np.random.default_rng(0).integers(0, len(real), n_copies)
    new_sources = np.random.default_rng(2).integers(0, len(real), n_new)
    copies = [(i, str(real[s]), str(folder / "copies" / f"copy_{i:06d}.jpg")) for i, s in enumerate(copy_sources)]
    new = [(i, str(real[s]), str(folder / "new" / f"new_{i:06d}.jpg")) for i, s in enumerate(new_sources)]
    for sub in ("copies", "new"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    write_all(perturbed_copy, copies)
    write_all(new_image, new)
    frame = pd.DataFrame(
        {
            "path": [str(p) for p in real] + [j[2] for j in copies] + [j[2] for j in new],
            "copy_of": [-1] * len(real) + list(copy_sources) + [-1] * len(new),
        }
    )
    return frame.iloc[np.random.default_rng(1).permutation(len(frame))[:size]].reset_index(drop=True)


def growth(sizes: list[int], seconds: list[float]) -> float:
    """Exponent k of time ~ n^k, fitted on the two largest sizes (the smallest carry fixed costs)."""
    return float(np.polyfit(np.log(sizes[-2:]), np.log(seconds[-2:]), 1)[0])


def plot(results: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = {"indexed": "the audit's (faiss + correlation bound)", "exhaustive": "every pair in numpy (before)"}
    for method, style in (("indexed", "o-"), ("exhaustive", "s--")):
        rows = [r for r in results["sizes"] if r.get(f"{method}_s") is not None]
        if rows:
            growth_label = f" ~ n^{results[f'{method}_growth']:.2f}" if results.get(f"{method}_growth") else ""
            label = f"{names[method]}{growth_label}"
            ax.loglog([r["images"] for r in rows], [r[f"{method}_s"] for r in rows], style, label=label)
    ax.set_xlabel("images in the collection")
    ax.set_ylabel("copy search (s)")
    ax.set_title("Audit copy search, exact (2 cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[12_500, 25_000, 50_000, 100_000])
    parser.add_argument("--exhaustive-max", type=int, default=50_000)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    print(f"host: {host.one_line(host.describe())}", flush=True)
    from skin_cancer.data import audit, copies
    from skin_cancer.data.collections import Dataset

    sizes = sorted(args.sizes)
    images = collection(args.shared, sizes[-1], args.workdir / "audit_scale")
    started = time.perf_counter()
    prints = copies.fingerprint(list(images.path), workers=4, max_pixels=AUDIT["max_pixels"])
    hashing = time.perf_counter() - started
    print(f"hashing: {hashing:.1f} s for {len(images)} images")
    rows = []
    for n in sizes:
        part = copies.Fingerprints(prints.thumbs[:n], prints.sha256[:n], prints.errors[:n])
        started = time.perf_counter()
        indexed = copies.find_copies(part, **COPY)
        row = {"images": n, "indexed_s": round(time.perf_counter() - started, 2), "pairs": len(indexed)}
        copies = images.iloc[:n]
        row["copies_in_collection"] = int((copies.copy_of >= 0).sum())
        if n <= args.exhaustive_max:
            started = time.perf_counter()
            exhaustive = exhaustive_copies(part)
            row["exhaustive_s"] = round(time.perf_counter() - started, 2)
            pd.testing.assert_frame_equal(indexed, exhaustive)  # exactly the same pairs, distances, transforms
            row["identical"] = True
        print(row, flush=True)
        rows.append(row)
    frame = images.assign(key=[Path(p).name for p in images.path], split="train", label="lesion", group=None)
    started = time.perf_counter()
    result = audit.audit(
        Dataset("archive", args.workdir, frame[["path", "key", "split", "label", "group"]]), [], **{**AUDIT, "workers": 4}
    )
    whole = time.perf_counter() - started
    results = {
        "hashing_s": round(hashing, 1),
        "sizes": rows,
        "indexed_growth": growth([r["images"] for r in rows], [r["indexed_s"] for r in rows]),
        "whole_audit": {"images": len(images), "seconds": round(whole, 1), "duplicate_pairs": len(result.pairs)},
        "cpus": os.cpu_count(),
    }
    compared = [r for r in rows if "exhaustive_s" in r]
    if len(compared) >= 2:
        results["exhaustive_growth"] = growth([r["images"] for r in compared], [r["exhaustive_s"] for r in compared])
    print(json.dumps(results, indent=1))
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "audit_scale.json").write_text(json.dumps(results, indent=1))
    plot(results, args.workdir / "audit_scale.png")
    print(f"wrote {args.workdir / 'audit_scale.json'} and audit_scale.png")


if __name__ == "__main__":
    main()

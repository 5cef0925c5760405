"""Copies of images, found at archive scale: fingerprints (thumbnail, perceptual hash, SHA-256) and
the indexed search the audit, the external sets and evaluate use.

Matching is two-step: a candidate pair has 64-bit DCT perceptual hashes within `candidate_distance`
bits in any of the 8 flips / 90-degree rotations of the query image (found exactly by faiss'
binary index, then mostly ruled out by a cheap bound of their correlation); a
candidate is a copy when the aligned 32x32 grayscale thumbnails correlate at `min_correlation` or
more. On dermoscopy the hash alone is not enough: different small lesions centred on pale skin
share hashes, but not thumbnails."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from skin_cancer.data.images import open_image

THUMB = 32  # thumbnail side; the hash is taken from its 8x8 lowest DCT frequencies
TRANSFORMS = ("identity", "flip", "rot90", "rot90+flip", "rot180", "rot180+flip", "rot270", "rot270+flip")
_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(63, -1, -1, dtype=np.uint64))


@dataclass
class Fingerprints:
    """Per image: 32x32 grayscale thumbnail, SHA-256 of the file, and a reason where unreadable."""

    thumbs: np.ndarray  # (n, 32, 32) float32; zeros where unreadable
    sha256: list[str]
    errors: list[str | None]

    @property
    def readable(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def thumbnail(path: str, max_pixels: int) -> tuple[np.ndarray, str]:
    """(32x32 grayscale thumbnail, SHA-256 of the file bytes); raises BadImage (a ValueError) with
    the reason, as prepare does for the same file."""
    with open_image(Path(path), max_pixels) as image:
        image.draft("RGB", (4 * THUMB, 4 * THUMB))  # JPEG: decode at a reduced scale, much faster
        small = image.convert("RGB").convert("L").resize((THUMB, THUMB), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float32), hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fingerprint(paths: list[str], workers: int, max_pixels: int, desc: str = "audit: hashing") -> Fingerprints:
    """Fingerprints of many files, decoded in parallel threads (PIL releases the GIL while decoding);
    a file over `max_pixels` (data.max_image_pixels) is unreadable, with the reason."""

    def work(path):
        try:
            return (*thumbnail(path, max_pixels), None)
        except ValueError as error:
            return np.zeros((THUMB, THUMB), np.float32), "", str(error)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(work, paths), total=len(paths), desc=desc, unit="img", mininterval=2, disable=None))
    thumbs = np.stack([r[0] for r in results]) if results else np.zeros((0, THUMB, THUMB), np.float32)
    return Fingerprints(thumbs, [r[1] for r in results], [r[2] for r in results])


def dihedral(images: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 flips / quarter turns (index into TRANSFORMS) of (..., h, w) arrays."""
    turned = np.rot90(images, transform // 2, axes=(-2, -1))
    return turned[..., ::-1] if transform % 2 else turned


def perceptual_hash(thumbs: np.ndarray) -> np.ndarray:
    """64-bit DCT hash per thumbnail: the 8x8 lowest frequencies above their median."""
    from scipy.fft import dctn

    low = dctn(thumbs, type=2, axes=(-2, -1))[..., :8, :8].reshape(*thumbs.shape[:-2], 64)
    bits = low > np.median(low, axis=-1, keepdims=True)
    return (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=-1, dtype=np.uint64)


def _standardise(thumbs: np.ndarray) -> np.ndarray:
    flat = thumbs.reshape(len(thumbs), -1)
    return (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-6)


def _spectrum(standardised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 lowest orthonormal DCT coefficients of standardised thumbnails and the norm of all the
    others. They bound the thumbnails' correlation from above, x.y <= x_low.y_low + |x_rest||y_rest|
    (Parseval, then Cauchy-Schwarz), from 65 numbers per image instead of 1024."""
    from scipy.fft import dctn

    coefficients = dctn(standardised.reshape(-1, THUMB, THUMB), type=2, norm="ortho", axes=(-2, -1))
    low = np.ascontiguousarray(coefficients[:, :8, :8].reshape(len(coefficients), 64))
    rest = np.sqrt(np.maximum((standardised**2).sum(1) - (low**2).sum(1), 0))
    return low, rest


def _hash_bytes(hashes: np.ndarray) -> np.ndarray:
    """64-bit hashes as the (n, 8) uint8 codes of faiss' binary indexes."""
    return np.ascontiguousarray(hashes.astype(">u8")).view(np.uint8).reshape(-1, 8)


def hash_index(hashes: np.ndarray):
    """faiss' flat binary index of 64-bit hashes: an exact range search that compares every pair with
    vectorised popcounts, some 30 times faster than numpy. On dermoscopy a fixed fraction of all pairs
    of different lesions have hashes within 10 bits, so the candidates, and with them any exact
    search, grow with the square of the collection; faiss' multi-index hash (sub-quadratic where hashes
    spread evenly) was slower on these clustered hashes (docs/scaling-out.md)."""
    import faiss

    index = faiss.IndexBinaryFlat(64)
    index.add(_hash_bytes(hashes))
    return index


def near_hashes(index, hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, indexed, distance) of every pair within `max_distance` bits, by query then indexed position."""
    limits, distances, ids = index.range_search(_hash_bytes(hashes), max_distance + 1)  # faiss: distance < radius
    query = np.repeat(np.arange(len(hashes)), np.diff(limits.astype(np.int64)))
    order = np.lexsort((ids, query))
    return query[order], ids[order], distances[order]


def find_copies(
    query: Fingerprints,
    reference: Fingerprints | None = None,
    *,
    candidate_distance: int,
    min_correlation: float,
    block: int = 262_144,
) -> pd.DataFrame:
    """Copies of query images among reference images (or among the query images themselves when
    `reference` is None, each pair once with a < b).

    Returns columns a (query index), b (reference index), hamming (hash distance), correlation
    (of the aligned thumbnails), transform (how a was flipped / turned to match b) and exact
    (same file bytes). Candidates are checked `block` pairs at a time, which bounds memory.
    """
    same = reference is None
    reference = query if same else reference
    readable = np.flatnonzero(reference.readable)
    index = hash_index(perceptual_hash(reference.thumbs[readable]))
    ref_std = _standardise(reference.thumbs)
    ref_low, ref_rest = _spectrum(ref_std)
    found = []
    for transform in range(len(TRANSFORMS)):
        turned = dihedral(query.thumbs, transform)
        turned_std = _standardise(turned)
        low, rest = _spectrum(turned_std)
        asking = np.flatnonzero(query.readable)
        a, b, distances = near_hashes(index, perceptual_hash(turned[asking]), candidate_distance)
        a, b = asking[a], readable[b]
        if same:
            a, b, distances = a[a != b], b[a != b], distances[a != b]
        for start in range(0, len(a), block):
            pa, pb, hamming = a[start : start + block], b[start : start + block], distances[start : start + block]
            # Most candidates are different lesions: their correlation's upper bound already rules
            # them out (with a margin far above float32 rounding), so few need all 1024 pixels.
            bound = (np.einsum("ij,ij->i", low[pa], ref_low[pb]) + rest[pa] * ref_rest[pb]) / THUMB**2
            possible = bound >= min_correlation - 1e-3
            pa, pb, hamming = pa[possible], pb[possible], hamming[possible]
            correlation = (turned_std[pa] * ref_std[pb]).mean(axis=1)
            match = correlation >= min_correlation
            found.append(
                pd.DataFrame(
                    {
                        "a": pa[match],
                        "b": pb[match],
                        "hamming": hamming[match].astype(int),
                        "correlation": correlation[match].round(4),
                        "transform": transform,
                    }
                )
            )
    return matched_pairs(found, query, reference, same)


def matched_pairs(found: list[pd.DataFrame], query: Fingerprints, reference: Fingerprints, same: bool) -> pd.DataFrame:
    """One row per matched pair from the matches of every transform: its smallest hash distance (then
    highest correlation), the transform's name, and whether the files are byte-identical."""
    pairs = (
        pd.concat(found, ignore_index=True)
        if found
        else pd.DataFrame({"a": [], "b": [], "hamming": [], "correlation": [], "transform": []}).astype(
            {"a": int, "b": int, "hamming": int, "transform": int}
        )
    )
    if same:
        # (a, b) and (b, a) are found with inverse transforms; keep the a < b one.
        pairs = pairs[pairs.a < pairs.b]
    pairs = pairs.sort_values(["a", "b", "hamming", "correlation"], ascending=[True, True, True, False])
    pairs = pairs.drop_duplicates(["a", "b"]).reset_index(drop=True)
    pairs["transform"] = [TRANSFORMS[t] for t in pairs["transform"]]
    pairs["exact"] = [query.sha256[a] == reference.sha256[b] for a, b in zip(pairs.a, pairs.b)]
    return pairs


def components(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    """Connected-component id per node (0..n-1) of an undirected graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not edges:
        return np.arange(n)
    a, b = np.array(edges).T
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]

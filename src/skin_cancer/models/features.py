"""The cached frozen part of the backbone: computed once per data and model, reused by every
training run that only changes what lies above it (head, dropout, learning rates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skin_cancer.data.prepare import read_manifest
from skin_cancer.data.tf_input import image_dataset
from skin_cancer.schema import Config


def compute_features(cfg: Config, prepared_dir: Path, out_dir: Path) -> dict:
    """Write `<split>.npy` (float16, shape (N, views, ...)) for train and val into `out_dir`.

    Training images get `train.feature_views` dihedral views, each with its own `train.jitter` draw
    (seeded by `seed`); validation images one view as they are.
    """
    from skin_cancer.models.classifier import build_classifier, feature_extractor
    from skin_cancer.models.inference import compile_model, run_batches

    # An ensemble trains nothing, so it has nothing to cache.
    info = {"enabled": cfg.train.cache_features and cfg.model.backbone != "ensemble"}
    if not info["enabled"]:
        return info
    extractor = feature_extractor(build_classifier(cfg.model, cfg.data.image_size), cfg.model.frozen_until)
    forward = compile_model(extractor, cfg.evaluate.runtime)
    for split, n_views in (("train", cfg.train.feature_views), ("val", 1)):
        frame = read_manifest(prepared_dir / f"{split}.csv")
        views = tuple(range(n_views))
        batch = cfg.evaluate.batch_size
        jitter_cfg = cfg.train.jitter if split == "train" else None
        ds = image_dataset(
            frame.path, frame.label_index, cfg.data.image_size, batch, views=views, jitter_cfg=jitter_cfg, jitter_seed=cfg.seed
        ).map(lambda x, y: x)
        flat = run_batches(forward, ds.as_numpy_iterator(), len(frame) * n_views, batch, f"features: {split}").astype(np.float16)
        features = flat.reshape(len(frame), n_views, *flat.shape[1:])
        np.save(out_dir / f"{split}.npy", features)
        info[split] = {"images": len(frame), "views": n_views, "shape": list(features.shape)}
    info["cut_layer"] = cfg.model.frozen_until
    return info


def load_features(features_dir: Path, split: str) -> np.ndarray:
    path = Path(features_dir) / f"{split}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cached features not found (run the features stage)")
    return np.load(path)

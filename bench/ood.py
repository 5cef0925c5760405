"""Benchmark: can a trained model tell that an image is unlike its training data? The pooled backbone
features of a seeded sample of its training images fit a Gaussian (skin_cancer.evaluation.ood); the cut-off is
frozen on validation so that --flag-share of validation images are flagged; then the clean test
images (in-domain) are scored against

- non-dermoscopic pictures that ship with installed packages (scikit-image's and scikit-learn's
  sample images, each whole, as four quarter crops and a centre crop, and turned by 90 and 180
  degrees), and
- pictures made from the clean test images: over- and under-exposed, grey, heavily blurred, and the
  lesion small in a wide field (zoomed out 0.4x, a clinical photograph's framing).

    python bench/ood.py PROJECT [--flag-share 0.05] [--train-sample 2000]

PROJECT is a finished pipeline (models/model.keras, data/prepared/*.csv). Prints AUROC (distance as
the score) and the share flagged per group; writes ood.json under --out. Target (issue #30):
AUROC >= 0.95 against the non-dermoscopic pictures while flagging <= 5% of in-domain test images.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from skin_cancer import host
from skin_cancer.data import shifts
from skin_cancer.evaluation import ood

ROOT = Path(__file__).resolve().parents[1]
# Test-derived groups: name -> change of a clean test image.
MADE_FROM_TEST = {
    "overexposed_2.5x": shifts.light(2.5),
    "underexposed_0.25x": shifts.light(0.25),
    "grey": lambda image: ImageOps.grayscale(image).convert("RGB"),
    "blurred_8x": lambda image: shifts.downscale(8)(image).resize(image.size, Image.Resampling.BILINEAR),
    "wide_field_0.4x": shifts.zoom(0.4),
}


def package_pictures() -> list[Path]:
    """The sample pictures bundled with scikit-image and scikit-learn (files on disk: nothing is fetched)."""
    import skimage.data
    import sklearn.datasets

    folders = (Path(skimage.data.__file__).parent, Path(sklearn.datasets.__file__).parent / "images")
    return sorted(p for folder in folders for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))


def variants(image: Image.Image) -> list[Image.Image]:
    """The picture whole, its four quarters, its centre and two turns."""
    w, h = image.size
    corners = ((0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2))
    quarters = [image.crop((x, y, x + w // 2, y + h // 2)) for x, y in corners]
    centre = image.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return [image, *quarters, centre, image.rotate(90, expand=True), image.rotate(180)]


def write_all(images: list[Image.Image], folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(folder / f"{i}.png"))
        image.save(paths[-1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path)
    parser.add_argument("--flag-share", type=float, default=0.05, help="share of validation images the cut-off flags")
    parser.add_argument("--train-sample", type=int, default=2000, help="training images the Gaussian is fitted on")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    print(f"host: {host.one_line(host.describe())}", flush=True)

    import keras

    from skin_cancer.data.prepare import read_manifest
    from skin_cancer.models.classifier import load_model
    from skin_cancer.models.inference import compile_forward, predict_files

    model = load_model(args.project / "models" / "model.keras", compile=False)
    pooled = keras.Model(model.input, model.get_layer("pool").output)
    forward = compile_forward(lambda x: pooled(x, training=False), model.input_shape[1:], "openvino")
    size = model.input_shape[1]

    def features(image_paths, name):
        return predict_files(forward, image_paths, size, 32, f"features: {name}")

    manifests = {split: read_manifest(args.project / "data" / "prepared" / f"{split}.csv") for split in ("train", "val", "test")}
    train = manifests["train"].sample(min(args.train_sample, len(manifests["train"])), random_state=0)
    test = manifests["test"][manifests["test"].leak == ""]
    detector = ood.fit(features(train.path, "train")).with_cutoff(features(manifests["val"].path, "val"), args.flag_share)
    inside = detector.distance(features(test.path, "clean test"))
    groups = {}
    with tempfile.TemporaryDirectory() as tmp:
        pictures = [variant for path in package_pictures() for variant in variants(Image.open(path).convert("RGB"))]
        groups["package_pictures"] = write_all(pictures, Path(tmp) / "pictures")
        test_images = [Image.open(p).convert("RGB") for p in test.path]
        for name, change in MADE_FROM_TEST.items():
            groups[name] = write_all([change(image) for image in test_images], Path(tmp) / name)
        scored = {name: detector.distance(features(paths, name)) for name, paths in groups.items()}
    result = {
        "project": str(args.project),
        "cutoff": detector.cutoff,
        "flag_share_target": args.flag_share,
        "train_images": len(train),
        "in_domain": {"images": len(inside), "flagged": float((inside > detector.cutoff).mean())},
        "groups": {
            name: {"images": len(d), "auroc": ood.auroc(inside, d), "flagged": float((d > detector.cutoff).mean())}
            for name, d in scored.items()
        },
    }
    print(f"cut-off {detector.cutoff:.2f}; clean test (in-domain) flagged {result['in_domain']['flagged']:.3f} of {len(inside)}")
    for name, g in result["groups"].items():
        print(f"  {name:<22} {g['images']:5d} images  AUROC {g['auroc']:.3f}  flagged {g['flagged']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ood.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'ood.json'}")


if __name__ == "__main__":
    main()

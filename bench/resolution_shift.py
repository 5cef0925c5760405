"""Does the trained model depend on image sharpness? Score the test split as it is and degraded the
way the shared HAM10000 copy was made (downscaled to 200x150 JPEG, then resized back to the model's
input like every image), with the model's own temperature and threshold.

    python bench/resolution_shift.py [PROJECT]   # PROJECT: a finished pipeline (default: bench/results/default)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=ROOT / "bench" / "results" / "default")
    parser.add_argument("--size", default="200x150", help="degraded size WxH (default: HAM10000's 200x150)")
    args = parser.parse_args()
    from skin_cancer import evaluation as ev
    from skin_cancer.data import read_manifest
    from skin_cancer.serving import load_classifier

    classifier = load_classifier(args.project / "models" / "model.keras")
    test = read_manifest(args.project / "data" / "prepared" / "test.csv")
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        degraded = []
        for i, path in enumerate(test.path):
            target = Path(tmp) / f"{i}.jpg"
            Image.open(path).convert("RGB").resize(size, Image.Resampling.LANCZOS).save(target, quality=90)
            degraded.append(str(target))
        for name, paths in (("as is", list(test.path)), (f"via {args.size}", degraded)):
            prob = np.array([r["probability"] for r in classifier.predict(paths)])
            m = ev.binary_metrics(test.label_index, prob, classifier.threshold)
            print(
                f"{name:<12} accuracy {m['accuracy']:.3f}  ROC AUC {m['roc_auc']:.3f}  sensitivity "
                f"{m['sensitivity']:.3f}  specificity {m['specificity']:.3f}  mean P(malignant | benign) "
                f"{prob[test.label_index.to_numpy() == 0].mean():.3f}"
            )


if __name__ == "__main__":
    main()

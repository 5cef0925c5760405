"""Benchmark: single-image prediction latency (warm, p50 / p95) through the Python API and through
the REST server (`mlflow models serve`), and throughput for a folder.

    python bench/predict_latency.py [PROJECT] [--images DIR] [--repeats N]

PROJECT is a finished pipeline (default: bench/results/default, written by bench/pipeline.py); its
MLflow store (bench/results/mlflow.db) provides the registered model for the REST server.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import urllib.request
from pathlib import Path

import skin_cancer  # noqa: F401  first: it caps NumPy and OpenBLAS at AVX2, which works only before they load

# isort: split
import numpy as np

from skin_cancer import host

ROOT = Path(__file__).resolve().parents[1]


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):6.1f} ms  p95 {np.percentile(ms, 95):6.1f} ms  (n={len(ms)})"


def time_calls(call, repeats: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def rest_latency(model_uri: str, tracking_uri: str, image: Path, repeats: int) -> list[float]:
    from serve_load import served_model  # bench/ is on sys.path when a bench script runs

    payload = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image.read_bytes()).decode()]]}})

    def call(url):
        request = urllib.request.Request(url, data=payload.encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            json.loads(response.read())

    with served_model(model_uri, tracking_uri) as (url, _):
        return time_calls(lambda: call(f"{url}/invocations"), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=ROOT / "bench" / "results" / "default")
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "skin-cancer-mvb" / "test")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'bench' / 'results' / 'mlflow.db'}")
    parser.add_argument("--model-uri", help="served model (default: the version the project's track stage registered)")
    args = parser.parse_args()
    print(f"host: {host.one_line(host.describe())}", flush=True)
    from skin_cancer.serving.classifier import image_files, load_classifier

    files, _ = image_files([str(args.images)])
    one = files[0]
    clf = load_classifier(args.project / "models" / "model.keras")
    views = clf.operating_point.tta_views
    runtime = clf.operating_point.runtime
    print(f"model {clf.source}, {views} test-time views, runtime {runtime}; image {one}")
    for name, c in (
        (f"API, {views} views (the model's own)", clf),
        ("API, 1 view", clf.with_views(1)),
        (f"API, {views} views, tensorflow", clf.with_runtime("tensorflow")),
        ("API, 1 view, tensorflow", clf.with_views(1).with_runtime("tensorflow")),
    ):
        print(f"{name:<34} {percentiles(time_calls(lambda c=c: c.predict([one]), args.repeats))}")
    start = time.perf_counter()
    results = clf.predict(files)
    elapsed = time.perf_counter() - start
    print(f"{'API, folder throughput':<34} {len(files) / elapsed:6.1f} images/s ({len(results)} images, {views} views)")
    registered = json.loads((args.project / "reports" / "mlflow_run.json").read_text())["registry"]
    model_uri = args.model_uri or f"models:/{registered['name']}/{registered['version']}"
    rest = rest_latency(model_uri, args.tracking_uri, Path(one), args.repeats)
    print(f"{'REST, 1 image per request':<34} {percentiles(rest)} ({model_uri})")


if __name__ == "__main__":
    main()

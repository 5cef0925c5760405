"""Peak memory of `skin-cancer predict FOLDER` against folder size: folders are decoded and scored in
bounded batches, so the peak should not grow with the number of images.

    python bench/predict_memory.py [PROJECT] --sizes 500 5000   # PROJECT: a finished pipeline
                                                                # (default: bench/results/default)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skin_cancer import host

ROOT = Path(__file__).resolve().parents[1]


def peak_of(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident memory in MiB) of a command, which must succeed."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=ROOT / "bench" / "results" / "default")
    parser.add_argument("--sizes", nargs="+", type=int, default=[500, 5000])
    args = parser.parse_args()
    print(f"host: {host.one_line(host.describe())}", flush=True)
    from skin_cancer.data.prepare import read_manifest

    images = list(read_manifest(args.project / "data" / "prepared" / "test.csv").path)
    cli = str(Path(sys.executable).parent / "skin-cancer")
    model = str(args.project / "models" / "model.keras")
    print(f"{'images':>7} {'wall s':>8} {'images/s':>9} {'peak MiB':>9}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            for i in range(size):  # links to the test images, cycled: real files of real sizes
                os.symlink(Path(images[i % len(images)]).resolve(), Path(folder) / f"{i:06d}.jpg")
            wall, peak = peak_of([cli, "predict", folder, "--model", model, "--out", str(Path(folder) / "out.csv")])
        print(f"{size:7d} {wall:8.1f} {size / wall:9.1f} {peak:9.0f}", flush=True)


if __name__ == "__main__":
    main()

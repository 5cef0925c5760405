"""Benchmark: the REST server (`mlflow models serve`) under concurrent clients: requests and images per
second and latency percentiles for 1/2/4/8 clients and 1/8/32 images per request, failed requests, and
the server's resident memory before and after 1,000 requests.

    python bench/serve_load.py [PROJECT] [--images DIR] [--requests N] [--clients 1 2 4 8] [--batches 1 8 32]

PROJECT is a finished pipeline (default: bench/results/default, written by bench/pipeline.py); its
MLflow store (bench/results/mlflow.db) holds the registered model that is served. The one-client
row of each batch size is the baseline the other rows are read against, measured in the same run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import skin_cancer  # noqa: F401  first: it caps NumPy and OpenBLAS at AVX2, which works only before they load

# isort: split
import numpy as np

from skin_cancer import host

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def served_model(model_uri: str, tracking_uri: str):
    """`mlflow models serve` of `model_uri` on a free loopback port; yields (URL, server pid)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    mlflow = str(Path(sys.executable).parent / "mlflow")
    command = [mlflow, "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"{' '.join(command)} did not start") from None
                time.sleep(1)
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in a process group (the server and its uvicorn worker), MiB."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat, the process group
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24, resident pages
    return total / 2**20


def post(url: str, payload: bytes) -> tuple[int, float]:
    """(HTTP status, seconds) of one request."""
    start = time.perf_counter()
    request = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            json.loads(response.read())
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.perf_counter() - start


def load(url: str, payloads: list[bytes], clients: int) -> tuple[list[int], list[float], float]:
    """Send every payload from `clients` threads at once: (statuses, latencies, wall seconds)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answered = list(pool.map(lambda payload: post(url, payload), payloads))
    wall = time.perf_counter() - start
    return [status for status, _ in answered], [seconds for _, seconds in answered], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=ROOT / "bench" / "results" / "default")
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "skin-cancer-mvb" / "test")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'bench' / 'results' / 'mlflow.db'}")
    parser.add_argument("--model-uri", help="served model (default: the version the project's track stage registered)")
    parser.add_argument("--requests", type=int, default=64, help="requests per row (a multiple of 8 keeps clients even)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--memory-requests", type=int, default=1000)
    args = parser.parse_args()
    from skin_cancer.serving.classifier import image_files

    files, _ = image_files([str(args.images)])
    encoded = [base64.b64encode(Path(f).read_bytes()).decode() for f in files[:256]]

    def payload(i: int, batch: int) -> bytes:
        rows = [[encoded[(i * batch + k) % len(encoded)]] for k in range(batch)]
        return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()

    registered = json.loads((args.project / "reports" / "mlflow_run.json").read_text())["registry"]
    model_uri = args.model_uri or f"models:/{registered['name']}/{registered['version']}"
    print(f"host: {host.one_line(host.describe())}; model {model_uri}; {args.requests} requests per row")
    print("| clients | images/request | requests/s | images/s | p50 ms | p95 ms | failed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with served_model(model_uri, args.tracking_uri) as (url, pgid):
        url += "/invocations"
        load(url, [payload(i, 1) for i in range(8)], 1)  # warm-up: the graph is compiled on first use
        for batch in args.batches:
            payloads = [payload(i, batch) for i in range(args.requests)]
            load(url, payloads[:2], 1)  # OpenVINO plans anew for a new batch shape
            for clients in args.clients:
                statuses, seconds, wall = load(url, payloads, clients)
                ms = np.asarray(seconds) * 1000
                failed = sum(status != 200 for status in statuses)
                print(
                    f"| {clients} | {batch} | {len(payloads) / wall:.1f} | {len(payloads) * batch / wall:.1f} "
                    f"| {np.percentile(ms, 50):.0f} | {np.percentile(ms, 95):.0f} | {failed} |",
                    flush=True,
                )
        before = group_rss_mib(pgid)
        statuses, _, wall = load(url, [payload(i, 1) for i in range(args.memory_requests)], 4)
        after = group_rss_mib(pgid)
        failed = sum(status != 200 for status in statuses)
        print(
            f"\nserver memory: {before:.0f} MiB before, {after:.0f} MiB after {args.memory_requests} single-image "
            f"requests from 4 clients ({after - before:+.0f} MiB; {failed} failed; {wall:.0f} s)"
        )


if __name__ == "__main__":
    main()

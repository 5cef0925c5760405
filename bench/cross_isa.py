"""Benchmark: does the same seed give the same model on an AVX2 and an AVX-512 CPU, and what does
the AVX2 cap (skin_cancer.host.pin) cost? Runs the pipeline three times in fresh copies of the project:

- unrestricted: the environment says nothing about instruction sets; the package caps itself;
- avx2: the caps set from outside, as far as software can make this CPU an AVX2 one (oneDNN's
  ISA ceiling, NumPy's SIMD targets, OpenBLAS's kernel family);
- native: the caps switched off (SKIN_CANCER_NATIVE_ISA=1), every library at this CPU's own level;

then compares split files, cached features, weights, operating point, detector, predictions and
metrics between them. unrestricted == avx2 is the claim; native shows what the cap changes.

    python bench/cross_isa.py                        # the default recipe on the full data
    python bench/cross_isa.py data.per_class_limit=50   # any overrides
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import zipfile
from pathlib import Path

import skin_cancer  # noqa: F401  first: it caps NumPy and OpenBLAS at AVX2, which works only before they load

# isort: split
import numpy as np
from pipeline import ROOT, bench, stage_env

from skin_cancer.host import AVX2_CEILING, NATIVE

# What a run produces that a seed should fix (figures are left out: their files carry render metadata).
COMPARED = ("data/prepared", "data/features", "models", "reports/evaluation", "reports/metrics.json")
# The JSON key that describes the machine, not the result (the operating point's).
NOT_RESULTS = {"host"}


def environments(base: dict[str, str]) -> dict[str, dict[str, str]]:
    """The three environments of the comparison, from `base` (the caller's)."""
    clean = {key: value for key, value in base.items() if key not in AVX2_CEILING and key != NATIVE}
    return {"unrestricted": clean, "avx2": {**clean, **AVX2_CEILING}, "native": {**clean, NATIVE: "1"}}


def _digest(arrays) -> str:
    md5 = hashlib.md5()
    for name, array in arrays:
        md5.update(name.encode())
        md5.update(np.ascontiguousarray(array).tobytes())
    return md5.hexdigest()


def _h5_digest(source) -> str:
    import h5py

    arrays = []
    with h5py.File(source, "r") as h5:
        h5.visititems(lambda name, item: arrays.append((name, item[()])) if isinstance(item, h5py.Dataset) else None)
    return _digest(arrays)


def _without(value, keys: set[str]):
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def file_digest(path: Path) -> str:
    """A digest of what a file holds: array values of .keras/.h5/.npz files (not their containers'
    metadata), JSON without the machine's description, otherwise the bytes."""
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            return _h5_digest(io.BytesIO(archive.read("model.weights.h5")))
    if path.suffix == ".h5":
        return _h5_digest(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            return _digest(sorted(arrays.items()))
    if path.suffix == ".json":
        payload = _without(json.loads(path.read_text()), NOT_RESULTS)
        return hashlib.md5(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return hashlib.md5(path.read_bytes()).hexdigest()


def fingerprint(work: Path) -> dict[str, str]:
    """{relative path: digest} of every COMPARED output of the pipeline run in `work`."""
    files = []
    for name in COMPARED:
        target = work / name
        files += sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    return {str(path.relative_to(work)): file_digest(path) for path in files if path.exists()}


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """Paths whose digests differ, or that only one run produced."""
    return sorted(path for path in a.keys() | b.keys() if a.get(path) != b.get(path))


def run(overrides: list[str], workdir: Path, variants=("unrestricted", "avx2", "native"), last: str | None = None) -> dict:
    """Run the pipeline (up to stage `last`) once per variant: their timings and fingerprints, and
    for each later variant the outputs that differ from the first's."""
    env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
    runs = {}
    for name in variants:
        result = bench(name, overrides, workdir, environments(env)[name], repeat=[], repeats=1, last=last)
        runs[name] = {**result, "fingerprint": fingerprint(workdir / name)}
    reference = runs[variants[0]]["fingerprint"]
    return {"runs": runs, "differs": {name: differences(reference, runs[name]["fingerprint"]) for name in variants[1:]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results" / "cross_isa")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    result = run(args.overrides, workdir)
    for name, r in result["runs"].items():
        metrics = r["metrics"].get("clean_test") or next(iter(r["metrics"].values()))
        host = json.loads((workdir / name / "models" / "operating_point.json").read_text()).get("host", {})
        print(
            f"{name:<13} {r['total_s']:7.1f} s  clean-test AUC {metrics['roc_auc']:.6f}  "
            f"oneDNN {host.get('onednn_max_cpu_isa')}  NumPy {host.get('numpy_simd')}  {host.get('blas')}"
        )
    for name, paths in result["differs"].items():
        total = len(result["runs"][name]["fingerprint"])
        print(f"unrestricted vs {name}: {total - len(paths)} of {total} outputs identical; differ: {paths[:8]}")
    base = result["runs"]["native"]["total_s"]
    print(f"cost of the cap: unrestricted / native wall time {result['runs']['unrestricted']['total_s'] / base:.3f}")
    out = workdir / "cross_isa.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

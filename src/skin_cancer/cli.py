"""`skin-cancer` console entry point."""
from __future__ import annotations

import argparse
import sys

from pathlib import Path

from skin_cancer.config import PARAMS_FILE, ConfigError, compose, write_params
from skin_cancer.data import DataError


def run_audit(args) -> None:
    from skin_cancer import audit
    from skin_cancer.datasets import load_dataset
    from skin_cancer.io import atomic_dir

    data = load_dataset(Path(args.data).name, Path(args.data))
    against = [load_dataset(Path(other).name, Path(other)) for other in args.against]
    result = audit.audit(data, against, candidate_distance=args.candidate_distance,
                         min_correlation=args.min_correlation, workers=args.workers)
    with atomic_dir(args.out) as out:
        audit.write(result, out)
    print(audit.summary_text(result.report))
    print(f"wrote {args.out}/report.json, images.csv, pairs.csv, provenance.csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skin-cancer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    composer = commands.add_parser(
        "compose", help="compose conf/ with Hydra overrides into params.yaml (what `dvc exp run -S` does)")
    composer.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=notebook model.dropout=0.3")
    composer.add_argument("--out", default=PARAMS_FILE, help="file to write (default: params.yaml)")
    auditor = commands.add_parser(
        "audit", help="duplicates inside a dataset, copies in other datasets, carried-over groups, test leaks")
    auditor.add_argument("data", help="dataset: Kaggle-style folder, or image folder + metadata CSV")
    auditor.add_argument("--against", nargs="*", default=[], metavar="OTHER", help="datasets to look for copies in")
    auditor.add_argument("--out", default="audit-report", help="output folder (default: audit-report)")
    auditor.add_argument("--candidate-distance", type=int, default=10, help="hash distance of candidate pairs")
    auditor.add_argument("--min-correlation", type=float, default=0.97, help="thumbnail correlation of a copy")
    auditor.add_argument("--workers", type=int, default=4, help="decoding threads")
    args = parser.parse_args(argv)
    try:
        if args.command == "compose":
            write_params(compose(args.overrides), args.out)
            print(f"wrote {args.out}")
        elif args.command == "audit":
            run_audit(args)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # Hydra's override and missing-config errors
        if type(error).__module__.startswith(("hydra", "omegaconf")):
            print(f"error: {error}".splitlines()[0], file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`skin-cancer` console entry point."""
from __future__ import annotations

import argparse
import sys

from skin_cancer.config import PARAMS_FILE, ConfigError, compose, write_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skin-cancer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    composer = commands.add_parser(
        "compose", help="compose conf/ with Hydra overrides into params.yaml (what `dvc exp run -S` does)")
    composer.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=notebook model.dropout=0.3")
    composer.add_argument("--out", default=PARAMS_FILE, help="file to write (default: params.yaml)")
    args = parser.parse_args(argv)
    try:
        if args.command == "compose":
            write_params(compose(args.overrides), args.out)
            print(f"wrote {args.out}")
    except ConfigError as error:
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

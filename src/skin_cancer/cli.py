"""`skin-cancer` console entry point.

Exit codes: 0 all good; 1 some inputs failed (each named on stderr, the others still answered);
2 usage or configuration error (bad arguments, no images found, unknown model, unreadable path).
Results go to stdout; messages, errors and progress bars (on a terminal only) to stderr; library
start-up logs only with -v/--verbose."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from skin_cancer.config import PARAMS_FILE, ConfigError, compose, write_params
from skin_cancer.errors import DataError
from skin_cancer.evaluation.ood import flag_text
from skin_cancer.library_logs import library_logs_hidden
from skin_cancer.tracking.access import AccessError

# `skin-cancer audit`'s options and where conf/ keeps their defaults.
AUDIT_OPTIONS = {
    "candidate_distance": "audit.candidate_distance",
    "min_correlation": "audit.min_correlation",
    "workers": "audit.workers",
    "max_pixels": "data.max_image_pixels",
}


def audit_settings(args) -> dict:
    """The audit's settings: each option given, else conf/'s value (composed as the pipeline composes
    it); ConfigError when an option is missing and there is no conf/ to read it from."""
    missing = [option for option in AUDIT_OPTIONS if getattr(args, option) is None]
    given = {option: getattr(args, option) for option in AUDIT_OPTIONS if option not in missing}
    if not missing:
        return given
    from omegaconf import OmegaConf

    try:
        cfg = compose()
    except ConfigError as error:
        flags = ", ".join(f"--{option.replace('_', '-')}" for option in missing)
        raise ConfigError(f"{error}, or give {flags}") from None
    return {**given, **{option: OmegaConf.select(cfg, AUDIT_OPTIONS[option]) for option in missing}}


def run_audit(args) -> None:
    from skin_cancer.data import audit
    from skin_cancer.data.collections import load_dataset
    from skin_cancer.io import atomic_dir

    settings = audit_settings(args)
    data = load_dataset(Path(args.data).name, Path(args.data))
    against = [load_dataset(Path(other).name, Path(other)) for other in args.against]
    result = audit.audit(data, against, **settings)
    with atomic_dir(args.out) as out:
        audit.write(result, out)
    print(audit.summary_text(result.report))
    print(f"wrote {args.out}/report.json, images.csv, pairs.csv, provenance.csv", file=sys.stderr)


def _classifier(args):
    from skin_cancer.serving.classifier import load_classifier

    classifier = load_classifier(args.model, run_id=args.run)
    return classifier.with_views(args.tta) if args.tta else classifier


def run_predict(args) -> int:
    import json

    import pandas as pd

    from skin_cancer.io import atomic_path
    from skin_cancer.serving.classifier import image_files

    files, skipped = image_files(args.images)
    report_skipped(skipped)
    rows, failed = [], 0
    for i, row in enumerate(_classifier(args).predict_iter(files)):  # bounded batches: memory flat in folder size
        rows.append(table_row(row))
        if "error" in row:
            failed += 1
            print(f"{row['image']}: error: {row['error']}", file=sys.stderr)
        elif args.format == "json":
            print(json.dumps(row), flush=True)
        elif args.format == "csv":
            print(pd.DataFrame([rows[-1]]).to_csv(index=False, header=i == 0), end="", flush=True)
        elif row.get("out_of_distribution"):
            print(f"{row['image']}: {flag_text(row)}", flush=True)
        elif "top3" in row:
            print(f"{row['image']}: {row['label']} (top 3: {rows[-1]['top3']})", flush=True)
        else:
            print(f"{row['image']}: {row['label']} (p={row['probability']:.4f}, threshold {row['threshold']:.4f})", flush=True)
    out = args.out or ("predictions.csv" if any(Path(i).is_dir() for i in args.images) else None)
    if out:
        with atomic_path(out) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        print(f"wrote {out}", file=sys.stderr)
    return 1 if failed else 0


def report_skipped(skipped: list[str]) -> None:
    """Files in the named folders that were not taken, on stderr: none is dropped without a record."""
    if skipped:
        shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        print(f"skipped {len(skipped)} files that are not images by their suffix: {shown}", file=sys.stderr)


def table_row(result: dict) -> dict:
    """A prediction as one CSV row: a K-class model's probabilities as `probability_<class>` columns
    (every class) and its top three as text."""
    row = {k: v for k, v in result.items() if k not in ("probabilities", "top3")}
    row.update({f"probability_{name}": p for name, p in result.get("probabilities", {}).items()})
    if "top3" in result:
        row["top3"] = "; ".join(f"{t['label']} {t['probability']:.3f}" for t in result["top3"])
    return row


def run_explain(args) -> int:
    from skin_cancer.evaluation import explain
    from skin_cancer.serving.classifier import image_files

    files, skipped = image_files(args.images)
    report_skipped(skipped)
    classifier = _classifier(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.class_name and args.class_name not in classifier.class_names:
        raise DataError(f"--class {args.class_name!r} is not a class of the model: {classifier.class_names}")
    failed = 0
    for path in files:
        result, image, heatmap = explain.explain_file(classifier, path, args.class_name)
        if "error" in result:
            failed += 1
            print(f"{path}: error: {result['error']}", file=sys.stderr)
            continue
        if result.get("out_of_distribution"):
            print(f"{path}: {flag_text(result)}: no map")
            continue
        target = out / f"{Path(path).stem}_gradcam.png"
        decided = f"threshold {result['threshold']:.3f}" if result["threshold"] is not None else "most probable class"
        explained = f"; map of {args.class_name}" if args.class_name else ""
        title = f"{Path(path).name}: {result['label']} (p={result['probability']:.3f}, {decided}{explained})"
        explain.save_overlay(image, heatmap, title, target)
        print(f"{path}: {result['label']} (p={result['probability']:.4f}) -> {target}")
    return 1 if failed else 0


def run_app(args) -> int:

    from skin_cancer.config import project_params

    script = Path(__file__).parent / "serving" / "app.py"
    params = project_params()
    registered = args.registered_model or (params.tracking.registered_model if params else None)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.headless",
        "true",
        "--server.port",
        str(args.port),
        "--server.address",
        args.host,
        "--browser.gatherUsageStats",
        "false",
        "--",
        "--model",
        args.model,
        *(["--registered-model", registered] if registered else []),
        *(["--verbose"] if args.verbose else []),
    ]
    # The CLI process becomes the server, so a SIGTERM to it (a service manager) stops the server.
    os.execv(sys.executable, command)


def command_line() -> argparse.ArgumentParser:
    """The `skin-cancer` command line (`sweep` aside: Hydra parses its own)."""
    raw = argparse.RawDescriptionHelpFormatter  # keeps the exit codes' paragraph as written
    parser = argparse.ArgumentParser(prog="skin-cancer", description=__doc__, formatter_class=raw)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's and the other libraries' logs")
    commands = parser.add_subparsers(dest="command", required=True)

    def subcommand(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    composer = subcommand("compose", "compose conf/ with Hydra overrides into params.yaml (what `dvc exp run -S` does)")
    composer.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=notebook model.dropout=0.3")
    composer.add_argument("--out", default=PARAMS_FILE, help="file to write (default: params.yaml)")
    auditor = subcommand("audit", "duplicates inside a dataset, copies in other datasets, carried-over groups, test leaks")
    auditor.add_argument("data", help="dataset: Kaggle-style folder, or image folder + metadata CSV")
    auditor.add_argument("--against", nargs="*", default=[], metavar="OTHER", help="datasets to look for copies in")
    auditor.add_argument("--out", default="audit-report", help="output folder (default: audit-report)")
    for option, help in (
        ("candidate_distance", "hash distance of candidate pairs"),
        ("min_correlation", "thumbnail correlation of a copy"),
        ("workers", "decoding threads"),
        ("max_pixels", "larger images are refused as possible decompression bombs"),
    ):
        kind = float if option == "min_correlation" else int
        auditor.add_argument(
            f"--{option.replace('_', '-')}", type=kind, help=f"{help} (default: conf/'s {AUDIT_OPTIONS[option]})"
        )
    predictor = subcommand("predict", "malignancy probability and label per image (a folder gives a CSV)")
    explainer = subcommand("explain", "Grad-CAM overlays: which regions raised the malignancy score")
    for sub in (predictor, explainer):
        sub.add_argument("images", nargs="+", help="image files or folders")
        sub.add_argument(
            "--model",
            default="models/model.keras",
            help="a .keras file (operating_point.json beside it) or models:/NAME@ALIAS (default: models/model.keras)",
        )
        sub.add_argument("--run", help="use the model logged by this MLflow run instead")
        sub.add_argument("--tta", type=int, choices=range(1, 9), metavar="1-8", help="test-time views (default: the model's own)")
    predictor.add_argument("--out", help="CSV to write (default: predictions.csv when a folder is given)")
    predictor.add_argument(
        "--format",
        choices=("text", "csv", "json"),
        default="text",
        help="stdout: a line per image (text), CSV with a header, or a JSON object per line (default: text)",
    )
    explainer.add_argument("--out", default="explanations", help="folder for the overlay PNGs (default: explanations)")
    explainer.add_argument(
        "--class", dest="class_name", help="K-class models: the class whose evidence to map (default: the predicted one)"
    )
    subcommand("sweep", "Hydra multirun: each job a DVC experiment, one MLflow group (`skin-cancer sweep --help`)")
    app = subcommand("app", "the Streamlit web app (upload images, see predictions and Grad-CAM)")
    app.add_argument("--model", default="models/model.keras", help="initial model: a .keras file or models:/NAME@ALIAS")
    app.add_argument(
        "--registered-model", help="registry name listed in the picker (default: params.yaml's tracking.registered_model)"
    )
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--host", default="127.0.0.1")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sweep"]:  # Hydra's own command line: -m, hydra/launcher=..., --help
        from skin_cancer.tracking.sweep import main as sweep

        return sweep(argv[1:])
    args = command_line().parse_args(argv)
    if args.command == "app":
        return run_app(args)
    with library_logs_hidden(args.verbose):  # only a crash escapes it, and then shows the hidden logs
        try:
            if args.command == "compose":
                write_params(compose(args.overrides), args.out)
                print(f"wrote {args.out}", file=sys.stderr)
            elif args.command == "audit":
                run_audit(args)
            elif args.command == "predict":
                return run_predict(args)
            elif args.command == "explain":
                return run_explain(args)
        except (ConfigError, DataError, AccessError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except Exception as error:  # Hydra's override and missing-config errors
            if type(error).__module__.startswith(("hydra", "omegaconf")):
                print(f"error: {error}".splitlines()[0], file=sys.stderr)
                return 2
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

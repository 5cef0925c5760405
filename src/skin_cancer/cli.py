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
    result = audit.audit(
        data, against, candidate_distance=args.candidate_distance, min_correlation=args.min_correlation, workers=args.workers
    )
    with atomic_dir(args.out) as out:
        audit.write(result, out)
    print(audit.summary_text(result.report))
    print(f"wrote {args.out}/report.json, images.csv, pairs.csv, provenance.csv")


def _classifier(args):
    from skin_cancer.serving import load_classifier

    classifier = load_classifier(args.model, run_id=args.run)
    return classifier.with_views(args.tta) if args.tta else classifier


def run_predict(args) -> None:
    import pandas as pd

    from skin_cancer.io import atomic_path
    from skin_cancer.serving import image_files

    files = image_files(args.images)
    rows = []
    for row in _classifier(args).predict_iter(files):  # bounded batches: memory flat in folder size
        rows.append(table_row(row))
        if "error" in row:
            print(f"{row['image']}: error: {row['error']}", file=sys.stderr)
        elif "top3" in row:
            print(f"{row['image']}: {row['label']} (top 3: {rows[-1]['top3']})")
        else:
            print(f"{row['image']}: {row['label']} (p={row['probability']:.4f}, threshold {row['threshold']:.4f})")
    results = pd.DataFrame(rows)
    out = args.out or ("predictions.csv" if any(Path(i).is_dir() for i in args.images) else None)
    if out:
        with atomic_path(out) as tmp:
            results.to_csv(tmp, index=False)
        print(f"wrote {out}")


def table_row(result: dict) -> dict:
    """A prediction as one CSV row: a K-class model's probabilities as `probability_<class>` columns
    (every class) and its top three as text."""
    row = {k: v for k, v in result.items() if k not in ("probabilities", "top3")}
    row.update({f"probability_{name}": p for name, p in result.get("probabilities", {}).items()})
    if "top3" in result:
        row["top3"] = "; ".join(f"{t['label']} {t['probability']:.3f}" for t in result["top3"])
    return row


def run_explain(args) -> None:
    from skin_cancer import explain
    from skin_cancer.serving import image_files

    classifier = _classifier(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.class_name and args.class_name not in classifier.class_names:
        raise DataError(f"--class {args.class_name!r} is not a class of the model: {classifier.class_names}")
    for path in image_files(args.images):
        result, image, heatmap = explain.explain_file(classifier, path, args.class_name)
        if "error" in result:
            print(f"{path}: error: {result['error']}", file=sys.stderr)
            continue
        target = out / f"{Path(path).stem}_gradcam.png"
        decided = f"threshold {result['threshold']:.3f}" if result["threshold"] is not None else "most probable class"
        explained = f"; map of {args.class_name}" if args.class_name else ""
        title = f"{Path(path).name}: {result['label']} (p={result['probability']:.3f}, {decided}{explained})"
        explain.save_overlay(image, heatmap, title, target)
        print(f"{path}: {result['label']} (p={result['probability']:.4f}) -> {target}")


def run_app(args) -> int:
    import os

    from skin_cancer.config import project_params

    script = Path(__file__).with_name("app.py")
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
    ]
    # The CLI process becomes the server, so a SIGTERM to it (a service manager) stops the server.
    os.execv(sys.executable, command)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sweep"]:  # Hydra's own command line: -m, hydra/launcher=..., --help
        from skin_cancer.sweep import main as sweep

        return sweep(argv[1:])
    parser = argparse.ArgumentParser(prog="skin-cancer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    composer = commands.add_parser(
        "compose", help="compose conf/ with Hydra overrides into params.yaml (what `dvc exp run -S` does)"
    )
    composer.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=notebook model.dropout=0.3")
    composer.add_argument("--out", default=PARAMS_FILE, help="file to write (default: params.yaml)")
    auditor = commands.add_parser(
        "audit", help="duplicates inside a dataset, copies in other datasets, carried-over groups, test leaks"
    )
    auditor.add_argument("data", help="dataset: Kaggle-style folder, or image folder + metadata CSV")
    auditor.add_argument("--against", nargs="*", default=[], metavar="OTHER", help="datasets to look for copies in")
    auditor.add_argument("--out", default="audit-report", help="output folder (default: audit-report)")
    auditor.add_argument("--candidate-distance", type=int, default=10, help="hash distance of candidate pairs")
    auditor.add_argument("--min-correlation", type=float, default=0.97, help="thumbnail correlation of a copy")
    auditor.add_argument("--workers", type=int, default=4, help="decoding threads")
    predictor = commands.add_parser("predict", help="malignancy probability and label per image (a folder gives a CSV)")
    explainer = commands.add_parser("explain", help="Grad-CAM overlays: which regions raised the malignancy score")
    for sub in (predictor, explainer):
        sub.add_argument("images", nargs="+", help="image files or folders")
        sub.add_argument(
            "--model",
            default="models/model.keras",
            help="a .keras file (operating_point.json beside it) or models:/NAME@ALIAS (default: models/model.keras)",
        )
        sub.add_argument("--run", help="use the model logged by this MLflow run instead")
        sub.add_argument("--tta", type=int, help="test-time views 1-8 (default: the model's own)")
    predictor.add_argument("--out", help="CSV to write (default: predictions.csv when a folder is given)")
    explainer.add_argument("--out", default="explanations", help="folder for the overlay PNGs (default: explanations)")
    explainer.add_argument(
        "--class", dest="class_name", help="K-class models: the class whose evidence to map (default: the predicted one)"
    )
    commands.add_parser(
        "sweep",
        help="Hydra multirun: each job a DVC experiment, one MLflow group (skin-cancer sweep --help; docs/scaling-out.md)",
    )
    app = commands.add_parser("app", help="the Streamlit web app (upload images, see predictions and Grad-CAM)")
    app.add_argument("--model", default="models/model.keras", help="initial model: a .keras file or models:/NAME@ALIAS")
    app.add_argument(
        "--registered-model", help="registry name listed in the picker (default: params.yaml's tracking.registered_model)"
    )
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    if args.command == "app":
        return run_app(args)
    try:
        if args.command == "compose":
            write_params(compose(args.overrides), args.out)
            print(f"wrote {args.out}")
        elif args.command == "audit":
            run_audit(args)
        elif args.command == "predict":
            run_predict(args)
        elif args.command == "explain":
            run_explain(args)
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

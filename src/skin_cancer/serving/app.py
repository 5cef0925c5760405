"""Streamlit web app: upload dermoscopic images and see, per image, the calibrated malignancy
probability, the label at the model's operating threshold and a Grad-CAM overlay, beside the model's
card. Start it with `skin-cancer app [--model PATH | --model models:/NAME@ALIAS]`.

Uploads are read in memory and written only to a temporary folder that is removed at once."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from skin_cancer.evaluation.ood import flag_text

NOTICE = (
    "**Research tool, not a medical device.** It must not be used to diagnose, triage or reassure "
    "anyone about a skin lesion. Its training data is small and biased (see the model card)."
)
FORMATS = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"]
MAX_UPLOAD_MB = 10


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/model.keras")
    parser.add_argument("--registered-model")  # None: no registry in the picker
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_known_args()[0]


@st.cache_resource(show_spinner="Loading the model ...")
def classifier(source: str, verbose: bool = False):
    """The model, loaded once for every session; TensorFlow's start-up logs (it is first imported
    here) stay out of the server's terminal unless `skin-cancer app --verbose`."""
    from skin_cancer.library_logs import library_logs_hidden
    from skin_cancer.serving.classifier import load_classifier

    with library_logs_hidden(verbose):
        return load_classifier(source)


def local_card(model_path: Path) -> dict:
    """Card of a model trained in this project: its run, data and metrics from the pipeline outputs."""
    from skin_cancer import paths
    from skin_cancer.io import read_json

    root = model_path.resolve().parent.parent
    card = {}
    if (root / paths.MLFLOW_RUN).is_file():
        card["MLflow run"] = read_json(root / paths.MLFLOW_RUN)["run_id"]
    if (root / paths.PREPARE_REPORT).is_file():
        card["data fingerprint"] = read_json(root / paths.PREPARE_REPORT)["fingerprint"]
    if (root / paths.METRICS).is_file():
        metrics = read_json(root / paths.METRICS)
        card.update({f"{name}.{key}": value for name, values in metrics.items() for key, value in values.items()})
    return card


def show_card(card: dict, classifier) -> list:
    """The operating point and run in the sidebar; returns the transfer rows, shown in the main area
    (six columns do not fit the sidebar)."""
    op = classifier.operating_point
    decision = f"Most probable of {len(op.class_names)} classes" if op.multiclass else f"Threshold **{op.threshold:.3f}**"
    if op.class_prior:
        decision += " under a uniform class prior"
    st.markdown(f"{decision} ({op.threshold_policy}, chosen on validation); temperature {op.temperature:.2f}.")
    for key in ("MLflow run", "data fingerprint", "recipe"):
        if card.get(key):
            st.markdown(f"{key}: `{card[key]}`")
    from skin_cancer.evaluation.report_tables import TRANSFER_HEADER, transfer_rows

    metrics: dict[str, dict] = {}
    for key, value in card.items():
        if "." in key:
            name, metric = key.split(".", 1)
            metrics.setdefault(name, {})[metric] = value
    return [dict(zip(TRANSFER_HEADER, row)) for row in transfer_rows(metrics)]


def pick_model(args) -> tuple[str, dict]:
    """The sidebar's model picker: the local model and every registered version."""
    from skin_cancer.tracking.registry import model_versions

    versions = model_versions(args.registered_model) if args.registered_model else []
    options = {f"local: {args.model}": (args.model, None)}
    for v in versions:
        aliases = f" @{', @'.join(v['aliases'])}" if v["aliases"] else ""
        card = {**v["tags"], "MLflow run": v["run_id"], "data fingerprint": v["data_fingerprint"], "recipe": v["recipe"]}
        options[f"{args.registered_model} v{v['version']}{aliases}"] = (f"models:/{args.registered_model}/{v['version']}", card)
    if not args.model.startswith("models:/") and not Path(args.model).is_file() and len(options) > 1:
        del options[f"local: {args.model}"]
    label = st.sidebar.selectbox("Model", list(options))
    source, card = options[label]
    return source, card if card is not None else (local_card(Path(source)) if not source.startswith("models:/") else {})


def show_prediction(upload, clf) -> None:
    """Predict and explain one uploaded file; a file that cannot be used gets a clear message instead."""
    from skin_cancer.evaluation import explain

    if upload.size > MAX_UPLOAD_MB * 1024 * 1024:
        st.error(f"{upload.name}: rejected: larger than {MAX_UPLOAD_MB} MB")
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{Path(upload.name).suffix.lower()}"
        path.write_bytes(upload.getvalue())
        result, image, heatmap = explain.explain_file(clf, path)
    if "error" in result:
        st.error(f"{upload.name}: rejected: {result['error']}")
        return
    st.subheader(upload.name)
    left, right = st.columns(2)
    left.image(image.astype(np.uint8), caption="as the model sees it", width="stretch")
    if result.get("out_of_distribution"):
        st.warning(
            f"No diagnosis: {flag_text(result)}. The distance is the Mahalanobis distance of the image's features from "
            "the training images'; the cut-off was frozen on validation images. The model was never shown anything "
            "like this image, so its output would mean nothing."
        )
        return
    if clf.operating_point.multiclass:
        right.image(explain.overlay(image, heatmap), caption=f"Grad-CAM: evidence for {result['label']}", width="stretch")
        st.markdown(f"Most probable: **{result['label']}** ({result['probability']:.3f})")
        if "malignant_score" in result:
            st.markdown(f"Malignant score ({', '.join(clf.operating_point.malignant_classes)}): {result['malignant_score']:.3f}")
        # One bar per class, in the model's class order.
        st.bar_chart(pd.DataFrame({"probability": result["probabilities"]}), horizontal=True)
        return
    right.image(explain.overlay(image, heatmap), caption="Grad-CAM: regions that raised the score", width="stretch")
    positive = clf.class_names[-1]
    st.markdown(
        f"Probability of **{positive}**: **{result['probability']:.3f}** &nbsp; "
        f"Label at threshold {result['threshold']:.3f}: **{result['label']}**"
    )


def main() -> None:
    st.set_page_config(page_title="Skin lesion classifier (research)", layout="wide")
    st.title("Skin lesion classifier")
    st.warning(NOTICE)
    args = arguments()
    source, card = pick_model(args)
    try:
        clf = classifier(source, args.verbose)
    except Exception as error:  # noqa: BLE001 - shown to the user, one line
        st.error(f"Cannot load the model {source}: {error}")
        return
    with st.sidebar:
        st.header("Model card")
        transfer = show_card(card, clf)
    uploads = st.file_uploader(
        f"Dermoscopic images ({', '.join(FORMATS)}; at most {MAX_UPLOAD_MB} MB and 40 megapixels each)",
        type=FORMATS,
        accept_multiple_files=True,
        max_upload_size=MAX_UPLOAD_MB,
    )
    for upload in uploads or []:
        show_prediction(upload, clf)
    if transfer:
        with st.expander("How this model does where it was trained and on collections it never saw", expanded=True):
            st.caption("Read them together: a model that ranks well only where it was trained has learned the source.")
            st.table(transfer)


if __name__ == "__main__":
    main()

"""Where each stage writes; dvc.yaml declares the same paths (a test checks they agree)."""

from pathlib import Path

from skin_cancer.model_folder import MODEL_FILE, OOD_FILE, OPERATING_POINT_FILE

# Content fingerprints of the data folders outside the project (see stages/sources.py).
SOURCES = Path("data/sources")
SOURCE_DATA = SOURCES / "data.json"
SOURCE_AGAINST = SOURCES / "against.json"
SOURCE_EXTERNAL = SOURCES / "external.json"
SOURCE_MEMBERS = SOURCES / "members.json"  # model=ensemble: its trained members
AUDIT = Path("data/audit")  # report.json, images.csv, pairs.csv, provenance.csv
AUDIT_REPORT = AUDIT / "report.json"
AUDIT_IMAGES = AUDIT / "images.csv"
PREPARED = Path("data/prepared")
PREPARE_REPORT = PREPARED / "report.json"
FEATURES = Path("data/features")
MODELS = Path("models")
HEAD_MODEL = MODELS / "head.keras"
MODEL = MODELS / MODEL_FILE
MODEL_H5 = MODELS / "model.h5"
# Temperature and decision threshold fitted on validation: what turns the model's output into a decision.
OPERATING_POINT = MODELS / OPERATING_POINT_FILE
# The out-of-distribution detector fitted with it (skin_cancer.evaluation.ood): flags images unlike the training data.
OOD = MODELS / OOD_FILE
REPORTS = Path("reports")
TRAIN_HISTORY = REPORTS / "train_history.csv"
FINETUNE_HISTORY = REPORTS / "finetune_history.csv"
# The MLflow run each training stage logged its epochs into (the track stage completes it).
TRAIN_RUN = REPORTS / "train_run.json"
FINETUNE_RUN = REPORTS / "finetune_run.json"
METRICS = REPORTS / "metrics.json"
EVALUATION = REPORTS / "evaluation"  # per set: predictions, confusion matrix, report, ROC, reliability
FIGURES = REPORTS / "figures"  # PNGs: per set confusion matrix, ROC, PR, reliability; training curves
MODEL_REPORT = REPORTS / "model_report.md"
MLFLOW_RUN = REPORTS / "mlflow_run.json"

# What the pipeline's MLflow run is made of: skin_cancer.tracking.runs.RunFiles(**RUN_FILES).
RUN_FILES = {
    "phases": {"head": (TRAIN_HISTORY, TRAIN_RUN), "finetune": (FINETUNE_HISTORY, FINETUNE_RUN)},
    "prepared": PREPARED,
    "prepare_report": PREPARE_REPORT,
    "audit": AUDIT,
    "audit_report": AUDIT_REPORT,
    "metrics": METRICS,
    "operating_point": OPERATING_POINT,
    "evaluation": EVALUATION,
    "figures": FIGURES,
    "reports": (MODEL_REPORT, MODEL_REPORT.with_suffix(".html")),
    "pipeline": (METRICS, TRAIN_HISTORY, FINETUNE_HISTORY, PREPARE_REPORT, OPERATING_POINT, Path("params.yaml")),
}

"""Where each stage writes; dvc.yaml declares the same paths (a test checks they agree)."""

from pathlib import Path

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
HEAD_MODEL = Path("models/head.keras")
MODEL = Path("models/model.keras")
MODEL_H5 = Path("models/model.h5")
# Temperature and decision threshold fitted on validation: what turns the model's output into a decision.
OPERATING_POINT = Path("models/operating_point.json")
# The out-of-distribution detector fitted with it (skin_cancer.evaluation.ood): flags images unlike the training data.
OOD = Path("models/ood.npz")
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

"""Where each stage writes; dvc.yaml declares the same paths (a test checks they agree)."""
from pathlib import Path

PREPARED = Path("data/prepared")
PREPARE_REPORT = PREPARED / "report.json"
FEATURES = Path("data/features")
HEAD_MODEL = Path("models/head.keras")
MODEL = Path("models/model.keras")
MODEL_H5 = Path("models/model.h5")
REPORTS = Path("reports")
TRAIN_HISTORY = REPORTS / "train_history.csv"
FINETUNE_HISTORY = REPORTS / "finetune_history.csv"
METRICS = REPORTS / "metrics.json"
EVALUATION = REPORTS / "evaluation"  # confusion matrix, ROC, report, predictions, figures
MLFLOW_RUN = REPORTS / "mlflow_run.json"

"""Tracking: MLflow runs (runs), the model registry and its champion alias (registry), where runs
go (store) and who may write there (access), sweeps (sweep)."""

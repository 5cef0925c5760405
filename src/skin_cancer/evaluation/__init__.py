"""Evaluation: metrics (metrics for two classes and the decision rule, multiclass for K), scoring
every set (scoring), figures, the model report, the out-of-distribution flag (ood) and Grad-CAM
(explain)."""

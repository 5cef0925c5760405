"""Evaluation: the model's two output forms and the one decision rule (outputs), metrics (metrics
for two classes, multiclass for K), calibration, the operating point fitted on validation
(validation), scoring every set (scoring), figures, the model report, the out-of-distribution flag
(ood) and Grad-CAM (explain)."""

from skin_cancer.evaluation.report_tables import TRANSFER_HEADER, transfer_rows


def test_transfer_rows_put_unseen_collections_beside_the_collection_trained_on():
    metrics = {
        "validation": {"specificity": 0.85},
        "ham10000": {
            "n_images": 800,
            "n_positive": 400,
            "roc_auc": 0.86,
            "specificity": 0.23,
            "specificity_shift_from_validation": -0.62,
        },
        "test": {
            "n_images": 660,
            "n_positive": 300,
            "roc_auc": 0.953,
            "roc_auc_ci_low": 0.938,
            "roc_auc_ci_high": 0.966,
            "specificity": 0.833,
        },
        "test_from_ham10000": {"n_images": 504, "n_positive": 144, "roc_auc": 0.913, "specificity": 0.833},
        "test_positives_not_from_ham10000": {"n_images": 516, "n_positive": 156, "roc_auc": 0.99, "specificity": 0.833},
        "ham10000_recalibrated": {"n_images": 700, "n_positive": 350, "roc_auc": 0.86, "specificity": 0.7},
    }
    rows = transfer_rows(metrics)
    assert [r[0] for r in rows] == ["test", "test_from_ham10000", "ham10000", "ham10000_recalibrated"]
    by_name = {r[0]: dict(zip(TRANSFER_HEADER, r)) for r in rows}
    assert by_name["ham10000"]["kind"] == "unseen collection"
    assert by_name["ham10000"]["specificity change from validation"] == "-0.620"
    assert by_name["test"]["ROC AUC"] == "0.953 [0.938, 0.966]" and by_name["test"]["images (positive)"] == "660 (300)"
    # The app's card reads the same numbers back from registry tags, as strings.
    as_tags = {name: {k: str(v) for k, v in m.items()} for name, m in metrics.items()}
    assert transfer_rows(as_tags) == rows

"""DVC stage `calibrate`: the model's validation predictions -> the operating point fitted on them
(evaluation.validation: temperature, threshold by `evaluate.threshold_policy`, validation metrics)
in models/operating_point.json, which every later prediction uses, and the out-of-distribution
detector in models/ood.npz. No test image is looked at."""

from skin_cancer import paths
from skin_cancer.data.prepare import read_manifest
from skin_cancer.evaluation import ood
from skin_cancer.evaluation.validation import fit_operating_point
from skin_cancer.io import read_json
from skin_cancer.models import inference
from skin_cancer.models.classifier import load_model
from skin_cancer.schema import Config
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    report = read_json(paths.PREPARE_REPORT)
    val = read_manifest(paths.PREPARED / "val.csv")
    model = load_model(paths.MODEL)
    # The out-of-distribution flag's validation features come from the same pass as the probabilities.
    feature_layer = ood.FEATURE_LAYER if cfg.evaluate.ood_flag_share is not None and ood.has_features(model) else None
    predictor = inference.compile_predictor(model, cfg.evaluate.tta_views, cfg.evaluate.runtime, feature_layer)
    rows = inference.predict_files(predictor, val.path, cfg.data.image_size, cfg.evaluate.batch_size, "calibrate: validation")
    raw, val_features = inference.split_features(rows, model.output_shape[-1]) if feature_layer else (rows, None)
    train = read_manifest(paths.PREPARED / "train.csv")
    operating_point = fit_operating_point(cfg, val, raw, report, train.label_index)
    detector = None
    if feature_layer:
        sample = train.sample(min(cfg.evaluate.ood_train_images, len(train)), random_state=cfg.seed)
        detector = ood.fit_on_images(
            model,
            sample.path,
            val_features,
            image_size=cfg.data.image_size,
            batch_size=cfg.evaluate.batch_size,
            flag_share=cfg.evaluate.ood_flag_share,
            runtime=cfg.evaluate.runtime,
        )
    off = cfg.evaluate.ood_flag_share is None
    ood.save(detector, paths.OOD, reason="evaluate.ood_flag_share is null" if off else "an ensemble has no single feature space")
    operating_point.save(paths.OPERATING_POINT)
    validation = operating_point.validation  # undefined metrics (one class in validation) are null
    shown = {k: "undefined" if validation[k] is None else f"{validation[k]:.4f}" for k in ("uncalibrated_ece", "ece", "roc_auc")}
    print(
        f"calibrate: temperature {operating_point.temperature:.3f}, threshold {operating_point.threshold} "
        f"({operating_point.threshold_policy}); validation ECE {shown['uncalibrated_ece']} -> {shown['ece']}, "
        f"AUC {shown['roc_auc']}"
    )
    if detector is not None:
        print(f"calibrate: out-of-distribution cut-off {detector.cutoff:.2f} (flags {cfg.evaluate.ood_flag_share} of validation)")


if __name__ == "__main__":
    run_stage(main)

"""DVC stage `calibrate`: on the validation split, fit the temperature (temperature scaling) and
choose the decision threshold by `evaluate.threshold_policy` -> models/operating_point.json, which
every later prediction uses, with the validation metrics (per source too). No test image is looked at."""

from skin_cancer import host, paths
from skin_cancer.data.collections import other_collections
from skin_cancer.data.prepare import images_fingerprint, read_manifest
from skin_cancer.evaluation import calibration, ood
from skin_cancer.evaluation import metrics as ev
from skin_cancer.evaluation import multiclass as mc
from skin_cancer.io import read_json
from skin_cancer.models import inference
from skin_cancer.models.classifier import load_model
from skin_cancer.operating_point import OperatingPoint
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
    temperature = calibration.fit_temperature(val.label_index, raw) if cfg.evaluate.temperature_scaling else 1.0
    class_prior = None
    if cfg.evaluate.class_prior == "uniform":
        class_prior = mc.class_shares(read_manifest(paths.PREPARED / "train.csv").label_index, len(report["class_names"]))
    prob = calibration.apply_temperature(raw, temperature, class_prior)
    bins = cfg.evaluate.calibration_bins
    by_source = {}
    if report["positive_class"] is None:  # K classes: argmax decides, nothing to choose
        threshold, policy = None, "argmax"
        validation = mc.multiclass_metrics(
            val.label_index,
            prob,
            report["class_names"],
            malignant=cfg.data.malignant_classes or [],
            bins=bins,
            resamples=0,
            seed=0,
        )
        validation.update(ece=validation["top_label_ece"], uncalibrated_ece=mc.top_label_ece(val.label_index, raw, bins))
    else:
        threshold, policy = ev.choose_threshold(val.label_index, prob, cfg.evaluate), cfg.evaluate.threshold_policy
        validation = ev.binary_metrics(val.label_index, prob, threshold)
        uncalibrated = calibration.calibration_metrics(val.label_index, raw, bins)
        validation.update({f"uncalibrated_{k}": v for k, v in uncalibrated.items()})
        validation.update(calibration.calibration_metrics(val.label_index, prob, bins))
        # The one-source subsets, as evaluate scores them on test: a recipe for ranking lesions inside
        # one source can be chosen on these without looking at a test split.
        by_source = ev.per_source_metrics(val, prob, threshold, other_collections(cfg), "validation")
    operating_point = OperatingPoint(
        temperature=temperature,
        threshold=threshold,
        threshold_policy=policy,
        tta_views=cfg.evaluate.tta_views,
        runtime=cfg.evaluate.runtime,
        image_size=cfg.data.image_size,
        max_image_pixels=cfg.data.max_image_pixels,
        class_names=report["class_names"],
        positive_class=report["positive_class"],
        malignant_classes=cfg.data.malignant_classes,
        class_prior=class_prior,
        validation=ev.json_safe(validation),
        validation_by_source=ev.json_safe(by_source),
        # Which images the validation metrics come from: only models validated alike are compared.
        validation_fingerprint=images_fingerprint(val.sha256),
        host=host.describe(),
    )
    detector = None
    if feature_layer:
        train = read_manifest(paths.PREPARED / "train.csv")
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
    print(
        f"calibrate: temperature {temperature:.3f}, threshold {threshold} ({policy}); "
        f"validation ECE {validation['uncalibrated_ece']:.4f} -> {validation['ece']:.4f}, AUC {validation['roc_auc']:.4f}"
    )
    if detector is not None:
        print(f"calibrate: out-of-distribution cut-off {detector.cutoff:.2f} (flags {cfg.evaluate.ood_flag_share} of validation)")


if __name__ == "__main__":
    run_stage(main)

"""DVC stage `evaluate`: the final model with its validation-fitted temperature and threshold on the
test split, on the clean test subset (no copy or same-lesion twin in train/val) and on every
external set -> one metrics namespace, tables and figures per set, and Grad-CAM overlays of the most
confident right and wrong test predictions."""

import tempfile
from pathlib import Path

import keras
import pandas as pd

from skin_cancer import audit, explain, inference, paths
from skin_cancer import evaluation as ev
from skin_cancer.config import Config
from skin_cancer.data import read_manifest
from skin_cancer.external import external_set
from skin_cancer.io import atomic_dir, read_json, write_json
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    op = read_json(paths.OPERATING_POINT)
    class_names, threshold = op["class_names"], op["threshold"]
    model = keras.saving.load_model(paths.MODEL)

    predictor = inference.compile_predictor(model, op["tta_views"], op["runtime"])

    def predict(frame, name):
        raw = inference.predict_files(predictor, frame.path, cfg.data.image_size, cfg.evaluate.batch_size, f"evaluate: {name}")
        return ev.apply_temperature(raw, op["temperature"])

    test = read_manifest(paths.PREPARED / "test.csv")
    test_prob = predict(test, "test")
    clean = (test.leak == "").to_numpy()
    sets = {"test": (test, test_prob), "clean_test": (test[clean].reset_index(drop=True), test_prob[clean])}
    for base, (frame, prob) in list(sets.items()):
        for name, mask in ev.source_subsets(frame, cfg.audit.against, base).items():
            sets[name] = (frame[mask].reset_index(drop=True), prob[mask])
    external_records = {}
    if cfg.evaluate.external:
        training = pd.concat([read_manifest(paths.PREPARED / f"{s}.csv") for s in ("train", "val")])
        training_prints = audit.fingerprint(list(training.path), cfg.audit.workers, "evaluate: hashing train/val")
        for name, spec in cfg.evaluate.external.items():
            with tempfile.TemporaryDirectory() as converted:
                frame, found = external_set(
                    name,
                    spec,
                    training_prints,
                    class_names,
                    Path(converted),
                    seed=cfg.seed,
                    candidate_distance=cfg.audit.candidate_distance,
                    min_correlation=cfg.audit.min_correlation,
                    workers=cfg.audit.workers,
                )
                sets[name] = (frame, predict(frame, name))
            external_records[name] = found

    metrics = {"validation": op["validation"]}
    with atomic_dir(paths.EVALUATION) as out, atomic_dir(paths.FIGURES) as figures:
        for name, (frame, prob) in sets.items():
            # Intervals resample lesions / copy clusters (the audit's groups), not images.
            metrics[name] = ev.set_metrics(frame.label_index, prob, threshold, cfg.evaluate, cfg.seed, groups=frame.group)
            metrics[name].update(threshold_policy=op["threshold_policy"], temperature=op["temperature"])
            ev.write_set(name, frame, prob, threshold, metrics[name], class_names, cfg.evaluate.calibration_bins, out, figures)
        for name, found in external_records.items():
            write_json(out / name / "exclusions.json", found["record"])
            found["excluded"].to_csv(out / name / "excluded.csv", index=False)
            metrics[name]["excluded"] = sum(found["record"]["excluded"].values())
        explain.gradcam_grid(model, test, test_prob, threshold, class_names, cfg.data.image_size, figures / "test_gradcam.png")
        history = pd.concat([pd.read_csv(paths.TRAIN_HISTORY), pd.read_csv(paths.FINETUNE_HISTORY)], ignore_index=True)
        ev.plot_history(history, figures / "training_curves.png")
    write_json(paths.METRICS, ev.json_safe(metrics))
    for name in sets:
        print(f"\n{name} ({metrics[name]['n_images']} images)\n{ev.summary_table(metrics[name])}")


if __name__ == "__main__":
    run_stage(main)

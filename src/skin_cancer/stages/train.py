"""DVC stage `train`: the head phase (frozen backbone) -> models/head.keras + per-epoch history, each
epoch logged to the pipeline's MLflow run as it ends (the run's id in reports/train_run.json).
model=ensemble: its trained members assembled, nothing trained."""

from skin_cancer import paths
from skin_cancer.io import atomic_path, read_json, write_json
from skin_cancer.models import distribute
from skin_cancer.models.classifier import build_classifier, output_units, trainable_summary
from skin_cancer.models.ensemble import assemble
from skin_cancer.models.training import history_frame, seed_everything, train_phase, training_seed
from skin_cancer.schema import Config
from skin_cancer.stages import run_stage
from skin_cancer.tracking.runs import RunFiles, training_run
from skin_cancer.tracking.store import check_tracking


def main(cfg: Config) -> None:
    # The run is logged by the last stage: a tracking server that is down, or refuses us, must stop us before training.
    check_tracking(cfg.tracking)
    if distribute.delegated_to_workers(cfg.train.distribute, "skin_cancer.stages.train"):
        return
    seed_everything(training_seed(cfg))
    strategy = distribute.strategy(cfg.train.distribute)
    report = read_json(paths.PREPARE_REPORT)
    units = output_units(report["class_names"], report["positive_class"])
    chief = distribute.is_chief(strategy)
    with strategy.scope(), training_run(cfg, RunFiles(**paths.RUN_FILES), "head", chief=chief) as (callbacks, run):
        if cfg.model.backbone == "ensemble":
            classifier, rows = assemble(cfg, paths.PREPARED, report["class_names"], report["positive_class"]), []
        else:
            classifier = build_classifier(cfg.model, cfg.data.image_size, units)
            rows = train_phase(cfg, classifier, cfg.train.head, "head", paths.PREPARED, paths.FEATURES, callbacks=callbacks)
    print(f"train: {trainable_summary(classifier)}")
    if not chief:
        return
    with atomic_path(paths.HEAD_MODEL) as tmp:
        classifier.save(tmp)
    with atomic_path(paths.TRAIN_HISTORY) as tmp:
        history_frame(rows).to_csv(tmp, index=False)
    write_json(paths.TRAIN_RUN, run)


if __name__ == "__main__":
    run_stage(main)

"""DVC stage `finetune`: unfreeze the backbone above model.frozen_until, recompile, train ->
models/model.keras (and models/model.h5 for `load_model` habits) + per-epoch history, each epoch
logged to the pipeline's MLflow run as it ends (the run's id in reports/finetune_run.json).
model=ensemble: the assembled ensemble passes through (its members were fine-tuned)."""

import pandas as pd

from skin_cancer import paths
from skin_cancer.io import atomic_path, write_json
from skin_cancer.models import distribute
from skin_cancer.models.classifier import load_model, trainable_summary, unfreeze
from skin_cancer.models.training import history_frame, seed_everything, train_phase, training_seed
from skin_cancer.schema import Config
from skin_cancer.stages import run_stage
from skin_cancer.tracking.runs import RunFiles, training_run


def main(cfg: Config) -> None:
    if distribute.delegated_to_workers(cfg.train.distribute, "skin_cancer.stages.finetune"):
        return
    seed_everything(training_seed(cfg))
    strategy = distribute.strategy(cfg.train.distribute)
    head_epochs = len(pd.read_csv(paths.TRAIN_HISTORY))
    chief = distribute.is_chief(strategy)
    files = RunFiles(**paths.RUN_FILES)
    with strategy.scope(), training_run(cfg, files, "finetune", head_epochs, chief=chief) as (callbacks, run):
        classifier, rows = load_model(paths.HEAD_MODEL), []
        if cfg.model.backbone != "ensemble":
            unfreeze(classifier, cfg.model.frozen_until, cfg.model.freeze_batchnorm)
            rows = train_phase(
                cfg, classifier, cfg.train.finetune, "finetune", paths.PREPARED, paths.FEATURES, head_epochs, callbacks=callbacks
            )
    print(f"finetune: {trainable_summary(classifier)}")
    if not chief:
        return
    for path in (paths.MODEL, paths.MODEL_H5):
        with atomic_path(path) as tmp:
            classifier.save(tmp)
    with atomic_path(paths.FINETUNE_HISTORY) as tmp:
        history_frame(rows).to_csv(tmp, index=False)
    write_json(paths.FINETUNE_RUN, run)


if __name__ == "__main__":
    run_stage(main)

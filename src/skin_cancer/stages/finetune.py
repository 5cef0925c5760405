"""DVC stage `finetune`: unfreeze the backbone above model.frozen_until, recompile, train ->
models/model.keras (and models/model.h5 for `load_model` habits) + per-epoch history."""

import pandas as pd

from skin_cancer import paths
from skin_cancer.config import Config
from skin_cancer.io import atomic_path, read_json
from skin_cancer.model import load_model, trainable_summary, unfreeze
from skin_cancer.stages import run_stage
from skin_cancer.training import (
    datasets,
    fit_phase,
    history_frame,
    seed_everything,
    trainable_model,
    training_class_weights,
    training_seed,
)


def main(cfg: Config) -> None:
    seed_everything(training_seed(cfg))
    classifier = load_model(paths.HEAD_MODEL)
    unfreeze(classifier, cfg.model.frozen_until, cfg.model.freeze_batchnorm)
    model = trainable_model(cfg, classifier)
    train_ds, val_ds = datasets(cfg, paths.PREPARED, paths.FEATURES, classifier.output_shape[-1])
    weights = training_class_weights(cfg, paths.PREPARED, len(read_json(paths.PREPARE_REPORT)["class_names"]))
    head_epochs = len(pd.read_csv(paths.TRAIN_HISTORY))
    rows = fit_phase(
        model,
        train_ds,
        val_ds,
        cfg.train.finetune,
        restore_best=cfg.train.restore_best,
        first_epoch=head_epochs,
        name="finetune",
        class_weight=weights,
    )
    print(f"finetune: {trainable_summary(model)}")
    for path in (paths.MODEL, paths.MODEL_H5):
        with atomic_path(path) as tmp:
            classifier.save(tmp)
    with atomic_path(paths.FINETUNE_HISTORY) as tmp:
        history_frame(rows).to_csv(tmp, index=False)


if __name__ == "__main__":
    run_stage(main)

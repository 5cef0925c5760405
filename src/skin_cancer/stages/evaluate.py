"""DVC stage `evaluate`: the final model with its validation-fitted temperature and threshold on the
test split, its clean and per-source subsets and every external set -> reports/metrics.json (one
namespace per set), tables and figures per set, Grad-CAM overlays of confident right and wrong
test predictions; the training curves of both phases."""

import pandas as pd

from skin_cancer import paths
from skin_cancer.evaluation import metrics as ev
from skin_cancer.evaluation import scoring
from skin_cancer.evaluation.figures import plot_history
from skin_cancer.io import atomic_dir, write_json
from skin_cancer.models.classifier import load_model
from skin_cancer.operating_point import OperatingPoint
from skin_cancer.schema import Config
from skin_cancer.stages import run_stage


def main(cfg: Config) -> None:
    op = OperatingPoint.load(paths.OPERATING_POINT)
    model = load_model(paths.MODEL)
    with atomic_dir(paths.EVALUATION) as out, atomic_dir(paths.FIGURES) as figures:
        metrics = scoring.score(cfg, model, op, paths.PREPARED, out, figures)
        history = pd.concat([pd.read_csv(path) for path in (paths.TRAIN_HISTORY, paths.FINETUNE_HISTORY)], ignore_index=True)
        plot_history(history, figures / "training_curves.png")
    write_json(paths.METRICS, metrics)
    for name, values in metrics.items():
        if name != "validation":
            print(f"\n{name} ({values['n_images']} images)\n{ev.summary_table(values)}")


if __name__ == "__main__":
    run_stage(main)

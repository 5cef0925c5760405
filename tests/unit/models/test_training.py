"""Learning-rate schedules and per-source loss weights: pure functions, no training."""

import numpy as np
import pytest


def test_source_weights_balance_the_classes_inside_each_source():
    from skin_cancer.models.training import source_weights

    sources = np.array(["ham10000"] * 4 + ["data"] * 2)
    labels = np.array([1, 0, 0, 0, 1, 1])
    weights = source_weights(sources, labels)
    np.testing.assert_allclose(weights, [2.0, 2 / 3, 2 / 3, 2 / 3, 1.0, 1.0])
    assert weights.sum() == pytest.approx(len(labels))  # every source keeps its share


def test_cosine_schedule_decays_to_zero_over_the_phase():
    from skin_cancer.models.training import learning_rate
    from skin_cancer.schema import PhaseConfig

    phase = {"epochs": 3, "lr": 0.1, "warmup_epochs": 0, "patience": None}
    assert learning_rate(PhaseConfig(**phase, schedule="constant"), 10) == 0.1
    schedule = learning_rate(PhaseConfig(**phase, schedule="cosine"), 10)
    assert float(schedule(0)) == pytest.approx(0.1) and float(schedule(30)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("kind, at_end", [("cosine", 0.0), ("constant", 0.1)])
def test_warmup_rises_linearly_then_follows_the_schedule(kind, at_end):
    from skin_cancer.models.training import learning_rate
    from skin_cancer.schema import PhaseConfig

    schedule = learning_rate(PhaseConfig(epochs=4, lr=0.1, schedule=kind, warmup_epochs=1, patience=None), 10)
    assert [round(float(schedule(s)), 6) for s in (0, 5, 10)] == [0.0, 0.05, 0.1]
    assert float(schedule(40)) == pytest.approx(at_end, abs=1e-7)


def test_the_head_phase_runs_the_frozen_layers_above_the_cut_once_and_fine_tuning_trains_them(classifier, tiny_cfg):
    from dataclasses import replace

    from skin_cancer.models.classifier import unfreeze
    from skin_cancer.models.training import apply_to_views, trainable_model

    model, frozen = trainable_model(tiny_cfg, classifier)
    assert model.name == "head" and frozen.name == "frozen_above_cut"
    cached = np.random.default_rng(0).normal(size=(3, 2, *frozen.input.shape[1:])).astype("float16")
    pooled = apply_to_views(frozen, cached, chunk=4)
    assert pooled.shape == (3, 2, frozen.output.shape[-1]) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled[2, 1], frozen.predict(cached[2:3, 1].astype("float32"), verbose=0)[0], atol=1e-5)
    unfreeze(classifier, tiny_cfg.model.frozen_until, tiny_cfg.model.freeze_batchnorm)
    model, frozen = trainable_model(tiny_cfg, classifier)
    assert model.name == "feature_head" and frozen is None
    uncached = replace(tiny_cfg, train=replace(tiny_cfg.train, cache_features=False))
    assert trainable_model(uncached, classifier) == (classifier, None)

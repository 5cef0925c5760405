"""The pre-registered rule that picks the default backbone (docs/backbones.md), as bench/backbones.py applies it."""

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def rule():
    path = Path(__file__).resolve().parents[2] / "bench" / "backbones.py"
    spec = importlib.util.spec_from_file_location("bench_backbones", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(auc, seconds, members_s=None):
    pipeline = {"total_s": seconds, "metrics": {"validation": {"roc_auc": auc}}}
    if members_s is not None:
        pipeline["members_s"] = members_s
    return {"pipeline": pipeline}


def test_within_the_tie_the_faster_wins_and_slow_ones_are_not_eligible(rule):
    results = {
        "_baseline": {"total_s": 1000},
        "mobilenet_v2": result(0.948, 300),
        "efficientnet_lite0": result(0.952, 350),  # best, but within 0.005 of a faster one
        "efficientnet_lite1": result(0.951, 420),
        "efficientnet_lite2": result(0.990, 501),  # over 0.5 x the baseline
    }
    assert rule.ranked(results) == ["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1"]
    assert rule.choice(results) == "mobilenet_v2"
    results["efficientnet_lite0"] = result(0.9531, 350)
    assert rule.choice(results) == "efficientnet_lite0"


def test_the_ensemble_is_adopted_only_beyond_the_tie_and_within_the_time_bound(rule):
    results = {"_baseline": {"total_s": 2000}, "mobilenet_v2": result(0.948, 300), "efficientnet_lite0": result(0.949, 350)}
    results["ensemble"] = result(0.953, 60, members_s=650)
    assert rule.choice(results) == "mobilenet_v2"
    results["ensemble"] = result(0.9531, 60, members_s=650)
    assert rule.choice(results) == "ensemble"
    results["_baseline"] = {"total_s": 1400}  # members and ensemble together over 0.5 x
    assert rule.choice(results) == "mobilenet_v2"


def test_the_ensemble_members_are_the_two_best_whatever_their_time(rule):
    results = {"_baseline": {"total_s": 1000}, "mobilenet_v2": result(0.948, 400), "efficientnet_lite1": result(0.960, 800)}
    results["efficientnet_lite0"] = result(0.954, 600)
    assert rule.ranked(results) == ["mobilenet_v2"]
    assert rule.ranked(results, eligible_only=False)[:2] == ["efficientnet_lite1", "efficientnet_lite0"]


def test_without_a_baseline_the_recipes_budget_bounds_the_time(rule):
    results = {"_budget_s": 1800, "mobilenet_v2": result(0.70, 1300), "efficientnet_lite0": result(0.75, 1900)}
    assert rule.choice(results) == "mobilenet_v2"
    results["efficientnet_lite0"] = result(0.75, 1700)
    assert rule.choice(results) == "efficientnet_lite0"

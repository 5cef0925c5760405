"""Same seed, same model on any x86-64 CPU: the package caps oneDNN, NumPy and OpenBLAS at AVX2
(skin_cancer.host.pin). The real pipeline on a small real subset with the real ImageNet weights, run
as a user runs it and run limited to AVX2 from outside (as far as software can make this CPU an AVX2
one), must give identical split files, cached features, weights, operating point, out-of-distribution
detector, predictions and metrics. Without the cap an AVX-512 CPU gives other weights
(bench/cross_isa.py's `native` run), so on such a host this test fails if the cap goes."""

import importlib.util
import sys

import pytest

from skin_cancer.host import this_cpu
from tests.helpers import ROOT, SHARED

SMALL = [
    "data.per_class_limit=8",
    "~audit.against.ham10000",
    "~evaluate.external.ham10000",
    "train.feature_views=1",
    "train.head.epochs=1",
    "train.finetune.epochs=1",
    "train.finetune.warmup_epochs=0",
    "evaluate.tta_views=1",
    "evaluate.bootstrap_resamples=100",
    "evaluate.ood_train_images=32",
]


@pytest.fixture(scope="module")
def cross_isa():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_cross_isa", ROOT / "bench" / "cross_isa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_avx2_limited_run_gives_the_same_model_and_numbers_as_an_unrestricted_one(cross_isa, tmp_path):
    if not (SHARED / "data" / "skin-cancer-mvb").is_dir():
        pytest.fail(f"{SHARED / 'data' / 'skin-cancer-mvb'} not found: this test reads the real Kaggle data", pytrace=False)
    if not {"avx2", "fma"} <= set(this_cpu()[1]):
        pytest.skip("this CPU has no AVX2 and FMA: there is no AVX2 level to cap at")
    with pytest.MonkeyPatch.context() as patch:  # as a user runs it: no enclosing DVC run or tracking server
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("DVC_ROOT", raising=False)
        result = cross_isa.run(SMALL, tmp_path, variants=("unrestricted", "avx2"), last="evaluate")
    outputs = result["runs"]["unrestricted"]["fingerprint"]
    assert any(path.startswith("models/model") for path in outputs) and "reports/metrics.json" in outputs
    assert any(path.startswith("data/prepared") for path in outputs) and "models/ood.npz" in outputs
    assert result["differs"]["avx2"] == []

import re

import numpy as np
import pytest

from skin_cancer.evaluation import outputs
from tests.helpers import ROOT

P = np.array([0.02, 0.3, 0.55, 0.9, 0.999])  # a binary model's positive-class probabilities (no tie at 0.5)
ROWS = np.column_stack([1 - P, P])  # the same decisions as K = 2 softmax rows


def test_binary_is_the_two_class_case():
    for temperature in (0.5, 1.0, 2.5):
        binary = outputs.from_logits(outputs.to_logits(P) / temperature)
        rows = outputs.from_logits(outputs.to_logits(ROWS) / temperature)
        np.testing.assert_allclose(binary, rows[:, 1], rtol=1e-9)
        y = np.array([0, 0, 1, 1, 1])
        assert outputs.mean_nll(y, outputs.to_logits(P) / temperature) == pytest.approx(
            outputs.mean_nll(y, outputs.to_logits(ROWS) / temperature), rel=1e-9
        )
    assert outputs.predicted_classes(P, 0.5).tolist() == outputs.predicted_classes(ROWS, None).tolist() == [0, 0, 1, 1, 1]


def test_logits_round_trip_and_clip():
    np.testing.assert_allclose(outputs.from_logits(outputs.to_logits(P)), P, rtol=1e-12)
    np.testing.assert_allclose(outputs.from_logits(outputs.to_logits(ROWS)), ROWS, rtol=1e-12)
    assert np.isfinite(outputs.to_logits([0.0, 1.0])).all() and np.isfinite(outputs.to_logits([[0.0, 1.0]])).all()


def test_what_explanations_and_figures_read():
    rows = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    np.testing.assert_allclose(outputs.confidence(P, 0.5), np.abs(P - 0.5))
    np.testing.assert_allclose(outputs.confidence(rows, None), [0.5, 0.6])
    np.testing.assert_allclose(outputs.shown_probability(P), P)
    np.testing.assert_allclose(outputs.shown_probability(rows), [0.5, 0.6])
    assert outputs.explained_classes(P, 0.5) == [None] * len(P) and outputs.explained_classes(rows, None) == [1, 0]
    assert outputs.output_unit([0.93]) == 0 and outputs.output_unit([0.1, 0.7, 0.2]) == 1


# Keras tensors inside the model graph (a layer's sigmoid or softmax) are not probability arrays.
GRAPH_CODE = {"models/classifier.py"}
SHAPE_BRANCH = re.compile(r"\bprob\w*\.ndim|np\.ndim\(prob|\.shape\[-1\] == 1|\.ndim == 2")


def test_no_module_but_the_adapter_branches_on_the_output_form():
    package = ROOT / "src" / "skin_cancer"
    offenders = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        if path.name != "outputs.py" and str(path.relative_to(package)) not in GRAPH_CODE
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if SHAPE_BRANCH.search(line)
    ]
    assert not offenders, offenders

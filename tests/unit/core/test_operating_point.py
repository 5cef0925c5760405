import json

import pytest

from skin_cancer.errors import DataError
from skin_cancer.operating_point import OperatingPoint

POINT = OperatingPoint(
    temperature=1.5,
    threshold=0.4,
    threshold_policy="youden",
    tta_views=4,
    runtime="openvino",
    image_size=224,
    class_names=["benign", "malignant"],
    positive_class="malignant",
    validation={"roc_auc": 0.95},
    validation_fingerprint="abc",
)


def test_round_trip_through_its_file(tmp_path):
    POINT.save(tmp_path / "operating_point.json")
    assert OperatingPoint.load(tmp_path / "operating_point.json") == POINT
    assert POINT.replace(tta_views=1).tta_views == 1 and POINT.tta_views == 4


def test_a_missing_key_is_named_and_unknown_keys_are_ignored(tmp_path):
    data = {**POINT.to_dict(), "added_later": 1}
    del data["threshold"]
    (tmp_path / "op.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"op\.json: the operating point lacks threshold"):
        OperatingPoint.load(tmp_path / "op.json")
    data["threshold"] = 0.4
    assert OperatingPoint.from_dict(data).threshold == 0.4

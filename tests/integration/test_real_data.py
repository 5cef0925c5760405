"""Regression numbers on the real data in ../shared: known copies and look-alikes of the Kaggle set,
and its provenance in HAM10000."""

import pytest

from skin_cancer.data import audit as au
from skin_cancer.data import copies as cp
from skin_cancer.data.collections import from_spec, load_dataset, training_collections
from tests.helpers import AUDIT, COPY, PIXELS, SHARED, exhaustive_copies

KAGGLE = SHARED / "data" / "skin-cancer-mvb"
HAM = SHARED / "data" / "ham10000"
COLLECTIONS = (KAGGLE, HAM, SHARED / "data" / "derm7pt", SHARED / "data" / "isic2017")


@pytest.fixture(autouse=True)
def shared_data():
    """Every test here reads the real collections beside the project; without them, one line."""
    missing = [str(path) for path in COLLECTIONS if not path.is_dir()]
    if missing:
        pytest.fail(f"real-data tests need the collections in ../shared/data; missing: {', '.join(missing)}", pytrace=False)


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("train/malignant/768.jpg", "train/malignant/769.jpg", True),  # byte-identical
        ("train/malignant/439.jpg", "test/malignant/507.jpg", True),  # near-identical copy
        ("train/benign/286.jpg", "test/benign/1180.jpg", True),
        ("train/malignant/311.jpg", "test/malignant/322.jpg", True),  # same lesion, slightly shifted
        ("train/benign/513.jpg", "test/malignant/1280.jpg", False),  # different lesions, near-equal DCT hash
        ("train/malignant/918.jpg", "test/benign/1648.jpg", False),
    ],
)
def test_real_kaggle_pairs(a, b, same):
    """Known copies in the Kaggle data are found; look-alike small lesions are not merged."""
    pairs = cp.find_copies(cp.fingerprint([str(KAGGLE / a), str(KAGGLE / b)], 2, PIXELS), **COPY)
    assert (len(pairs) == 1) == same


def test_real_kaggle_against_ham10000():
    """The acceptance numbers: every benign Kaggle image is a HAM10000 nevus, 688 malignant ones are
    HAM10000 melanomas; 26 test images have a copy in train and 89 more share a HAM lesion with one."""
    result = au.audit(load_dataset("kaggle", KAGGLE), [load_dataset("ham10000", HAM)], **AUDIT)
    per_class = result.report["provenance"]["ham10000"]["per_class"]
    assert per_class["benign"] == {"images": 1800, "copies_in_other": 1800, "by_other_label": {"nv": 1800}}
    assert per_class["malignant"]["copies_in_other"] == 688 and per_class["malignant"]["by_other_label"] == {"mel": 688}
    summary = result.report["summary"]
    assert (summary["test_with_train_copy"], summary["test_with_train_group_twin"], summary["clean_test_images"]) == (26, 89, 545)
    assert ["train/malignant/768.jpg", "train/malignant/769.jpg"] in [
        c["images"] for c in result.report["duplicate_clusters"] if c["exact"]
    ]


def test_the_indexed_copy_search_finds_exactly_the_pairs_of_comparing_every_pair():
    """On the real Kaggle and HAM10000 images, within each and across: the multi-index hash misses no
    pair, adds none, and reports the same distances, correlations and transforms."""
    import pandas as pd

    kaggle = cp.fingerprint(sorted(str(p) for p in KAGGLE.rglob("*.jpg")), 2, PIXELS)
    ham = cp.fingerprint(sorted(str(p) for p in (HAM / "images").glob("*.jpg")), 2, PIXELS)
    for query, reference in ((kaggle, None), (kaggle, ham), (ham, None)):
        indexed = cp.find_copies(query, reference, **COPY)
        assert len(indexed) > 100
        pd.testing.assert_frame_equal(indexed, exhaustive_copies(query, reference))


def test_ham10000_test_lesions_are_one_set_wherever_the_collection_is_used(compose):
    """data=ham10000, HAM10000 as a training source, and the external set all hold out the same
    lesion-grouped fifth of HAM10000, with all seven diagnoses in it and no lesion on both sides."""
    as_data = training_collections(compose("experiment=ham10000_binary").data).frame
    test = as_data[as_data.split == "test"]
    assert as_data.groupby("group").split.nunique().max() == 1
    assert test.group.nunique() == pytest.approx(0.2 * as_data.group.nunique(), rel=0.02)
    raw = load_dataset("ham10000", HAM).frame.set_index("key")
    assert set(raw.label[test.key]) == {"mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"}
    both = compose("experiment=kaggle_ham10000")
    source = training_collections(both.data).frame
    source = source[source.collection == "ham10000"]
    assert not set(source.key.str.removeprefix("ham10000/")) & set(test.key)
    external, _ = from_spec("ham10000", both.evaluate.external["ham10000"], both.data, "evaluate.external.ham10000")
    assert set(external.frame.key) == set(test.key[raw.label[test.key].isin(["mel", "nv"]).to_numpy()])


def test_derm7pt_and_isic2017_read_through_their_own_label_files(compose):
    """Counts from each collection's SOURCE.txt: Derm7pt's 20 diagnoses onto malignant/benign with
    "miscellaneous" left out, its second images ("bis") with their case; ISIC 2017's zeros as nevi."""
    derm7pt = compose("data=derm7pt").data
    dataset, left_out = from_spec("derm7pt", derm7pt, derm7pt, "data", cut=True)
    frame = dataset.frame
    assert len(frame) == 1003 and left_out == 8
    assert frame.label.value_counts().to_dict() == {"benign": 709, "malignant": 294}
    assert frame.group.nunique() == 1001  # two "bis" images whose first image is in the atlas too
    assert frame.groupby("group").split.nunique().max() == 1
    assert "images/FCL/Fcl068.jpg" in set(frame.key)  # named "FCl/..." in meta.csv

    isic = compose("data=isic2017").data
    raw = load_dataset("isic2017", SHARED / "data" / "isic2017", csv=isic.csv, images=isic.images, rest_label="nevus")
    assert raw.frame.label.value_counts().to_dict() == {"nevus": 1372, "melanoma": 374, "seborrheic_keratosis": 254}
    validation = load_dataset(
        "isic2017",
        SHARED / "data" / "isic2017",
        csv="ISIC-2017_Validation_Part3_GroundTruth.csv",
        images="ISIC-2017_Validation_Data",
        rest_label="nevus",
    )
    assert validation.frame.label.value_counts().to_dict() == {"nevus": 78, "seborrheic_keratosis": 42, "melanoma": 30}
    mapped, _ = from_spec("isic2017", isic, isic, "data", cut=True)
    assert mapped.frame.label.value_counts().to_dict() == {"benign": 1626, "malignant": 374}


def test_a_collection_held_out_for_scoring_takes_its_copies_out_of_training(compose, tmp_path):
    """Leave HAM10000 out (experiment=loco_ham10000): every Kaggle benign image is a HAM10000 nevus, so
    none stays in training; the Kaggle melanomas found in HAM10000 leave, the rest stay; the other
    sources' benign images are what the model learns benign from."""
    from skin_cancer.data.prepare import prepare

    cfg = compose(
        "experiment=loco_ham10000",
        "data.per_class_limit=150",
        "+data.sources.isic2017.per_class_limit=20",
        "+data.sources.derm7pt.per_class_limit=20",
    )
    data = training_collections(cfg.data)
    against = [from_spec(name, spec, cfg.data, name)[0] for name, spec in cfg.audit.against.items()]
    images = au.audit(data, against, **AUDIT).images
    report = prepare(
        data,
        tmp_path,
        tmp_path,
        images,
        positive_class="malignant",
        val_fraction=0.2,
        seed=0,
        drop_test_duplicates=True,
        strict=False,
        max_image_pixels=10**8,
        held_out=("ham10000",),
        workers=2,
    )
    kaggle = report["collections"]["data"]
    assert "benign" not in kaggle.get("train", {}) and "benign" not in kaggle.get("val", {})
    assert kaggle["test"] == {"benign": 150, "malignant": 150}  # the in-collection test part is untouched
    dropped = [d for d in report["dropped"] if d["reason"].endswith("held-out collection ham10000")]
    assert {d["label"] for d in dropped} == {"benign", "malignant"}
    assert sum(d["label"] == "benign" for d in dropped) >= 149  # one is a copy of a Kaggle test image, dropped as that
    kept_malignant = kaggle["train"]["malignant"] + kaggle["val"]["malignant"]
    assert 0 < kept_malignant < 150  # 688 of the 1,497 Kaggle melanomas are HAM10000 images
    assert report["summary"]["dropped_held_out"]["ham10000"] == len(dropped)
    for source in ("isic2017", "derm7pt"):
        assert report["collections"][source]["train"]["benign"] > 0

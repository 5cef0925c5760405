"""Collections: the lesion-grouped test cut of a collection without split folders, more than one
training collection, and what never enters training."""

import shutil

import pandas as pd
import pytest

from skin_cancer.config import ConfigError
from skin_cancer.data.audit import audit
from skin_cancer.data.collections import cut_test_split, from_spec, load_dataset, training_collections
from skin_cancer.data.prepare import prepare, read_manifest
from skin_cancer.errors import DataError
from tests.helpers import AUDIT, make_csv_collection

LESIONS = {"mel": 10, "nv": 20, "bkl": 5}
ALL_TO_BINARY = "{mel:malignant,nv:benign,bkl:benign}"


@pytest.fixture
def collection(tmp_path):
    return make_csv_collection(tmp_path / "ham", LESIONS, images_per_lesion=3)


def test_test_cut_keeps_lesions_whole_and_is_stratified(collection):
    frame = cut_test_split(load_dataset("ham", collection).frame, 0.2, 7, "ham")
    assert frame.groupby("group").split.nunique().max() == 1
    test_lesions = frame[frame.split == "test"].drop_duplicates("group").label.value_counts().to_dict()
    assert test_lesions == {"nv": 4, "mel": 2, "bkl": 1}  # a fifth of each diagnosis' lesions


def test_test_cut_depends_on_the_data_and_its_seed_only(collection):
    frame = load_dataset("ham", collection).frame
    cut = cut_test_split(frame, 0.2, 7, "ham")
    shuffled = cut_test_split(frame.sample(frac=1.0, random_state=3), 0.2, 7, "ham")
    test = lambda f: sorted(f.key[f.split == "test"])  # noqa: E731
    assert test(shuffled) == test(cut)
    assert test(cut_test_split(frame, 0.2, 8, "ham")) != test(cut)


def test_every_label_map_sees_the_same_test_lesions(collection, compose):
    """mel vs nv is a subset of malignant vs benign: the cut is made on the source's own labels."""
    cfg = compose(
        f"+evaluate.external.a.root={collection}",
        "+evaluate.external.a.split=test",
        f"+evaluate.external.a.label_map={ALL_TO_BINARY}",
        f"+evaluate.external.b.root={collection}",
        "+evaluate.external.b.split=test",
        "+evaluate.external.b.label_map={mel:malignant,nv:benign,bkl:null}",
    )
    a, _ = from_spec("a", cfg.evaluate.external["a"], cfg.data, "evaluate.external.a")
    b, left_out = from_spec("b", cfg.evaluate.external["b"], cfg.data, "evaluate.external.b")
    assert set(b.frame.key) < set(a.frame.key) and left_out == 3  # one test lesion of bkl, three images
    assert set(a.frame.split) == {"test"} and set(a.frame.label) == {"malignant", "benign"}


def test_too_few_lesions_to_cut_names_the_label_and_counts(tmp_path):
    root = make_csv_collection(tmp_path / "small", {"mel": 10, "df": 3})
    with pytest.raises(DataError, match=r"small: .* fewer than 5 lesions: \{'df': 3\}"):
        cut_test_split(load_dataset("small", root).frame, 0.2, 0, "small")


def test_a_source_joins_with_its_training_part_only(make_dataset, collection, compose):
    kaggle = make_dataset(train=6, test=2)
    cfg = compose(f"data.root={kaggle}", f"+data.sources.ham.root={collection}", f"+data.sources.ham.label_map={ALL_TO_BINARY}")
    frame = training_collections(cfg.data).frame
    ham = frame[frame.collection == "ham"]
    held_out = cut_test_split(load_dataset("ham", collection).frame, 0.2, cfg.data.test_seed, "ham")
    assert set(ham.split) == {"train"}
    assert sorted(ham.key) == sorted("ham/" + held_out.key[held_out.split == "train"])
    assert ham.group.str.startswith("ham:L_").all() and set(ham.label) == {"malignant", "benign"}
    assert len(frame[frame.collection == "data"]) == 16


@pytest.mark.parametrize(
    "override, message",
    [
        ("+data.sources.x.split=test", "data.sources.x.split='test' must be null"),
        ("evaluate.external.ham10000.split=train", "evaluate.external.ham10000.split='train' must be null or 'test'"),
        ("data.test_fraction=0.9", "data.test_fraction=0.9 must be in"),
    ],
)
def test_collection_keys_are_checked(compose, override, message):
    extra = ["+data.sources.x.root=somewhere"] if "sources" in override else []
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        compose(*extra, override)


def test_a_source_lesion_that_holds_a_copy_of_a_test_image_never_enters_training(make_dataset, collection, compose, tmp_path):
    kaggle = make_dataset(train=6, test=3)
    cfg = compose(f"data.root={kaggle}", f"+data.sources.ham.root={collection}", f"+data.sources.ham.label_map={ALL_TO_BINARY}")
    data = training_collections(cfg.data)
    source = data.frame[data.frame.collection == "ham"]
    lesion = source.group.iloc[0]
    copied = source.path[source.group == lesion].iloc[0]
    shutil.copy(copied, kaggle / "test" / "benign" / "copy_from_ham.jpg")
    data = training_collections(cfg.data)
    out = tmp_path / "prepared"
    out.mkdir()
    report = prepare(
        data,
        out,
        out,
        audit(data, [], **AUDIT).images,
        positive_class="malignant",
        val_fraction=0.25,
        seed=0,
        drop_test_duplicates=True,
        strict=False,
        max_image_pixels=10**8,
        held_out=(),
        workers=2,
    )
    reasons = {d["path"]: d["reason"] for d in report["dropped"]}
    lesion_paths = set(source.path[source.group == lesion])
    assert reasons == {copied: "copy of a test image"} | {p: "same lesion as a test image" for p in lesion_paths - {copied}}
    trained = pd.concat(read_manifest(out / f"{s}.csv") for s in ("train", "val"))
    assert not lesion_paths & set(trained.source)
    assert report["collections"]["ham"]["train"] and report["summary"]["dropped_test_lesions"] == 2
    # Its lesion is out of training, so the test image counts as clean: a leak is what training holds.
    test = read_manifest(out / "test.csv")
    assert test.leak[test.source.str.endswith("copy_from_ham.jpg")].tolist() == [""]


def isic_layout(root, rows):
    """An ISIC challenge test set: images/ + a ground-truth CSV with one-hot class columns."""
    make = make_csv_collection(root / "made", {"mel": 2, "nv": 2}, images_per_lesion=1)
    (root / "images").mkdir()
    names = sorted(p.name for p in (make / "images").iterdir())
    for i, _ in enumerate(rows):
        shutil.copy(make / "images" / names[i], root / "images" / f"ISIC_{i:07d}.jpg")
    shutil.rmtree(make)
    header = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
    lines = [f"ISIC_{i:07d}," + ",".join(str(v) for v in row) for i, row in enumerate(rows)]
    (root / "GroundTruth.csv").write_text(header + "\n".join(lines) + "\n")
    return root


def test_the_isic_ground_truth_layout_reads_one_hot_columns(tmp_path):
    root = isic_layout(tmp_path / "isic", [[1, 0, 0, 0, 0, 0, 0], [0.0, 1.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]])
    frame = load_dataset("isic", root).frame.sort_values("key")
    assert list(frame.label) == ["mel", "nv", "vasc"] and set(frame.split) == {"all"}


def test_an_isic_row_that_is_not_one_hot_is_named(tmp_path):
    root = isic_layout(tmp_path / "isic", [[1, 0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0]])
    with pytest.raises(DataError, match=r"row 3 \(image 'ISIC_0000001'\) is not one-hot"):
        load_dataset("isic", root)


def test_a_csv_collection_reads_from_a_relative_root(tmp_path, monkeypatch):
    """`skin-cancer audit ../shared/data/ham10000` joined a relative root to its CSV twice."""
    make_csv_collection(tmp_path / "data" / "ham", {"mel": 2, "nv": 2})
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for root in ("../data/ham", "../data/ham/metadata.csv"):
        frame = load_dataset("ham", root).frame
        assert len(frame) == 8 and all((tmp_path / "work" / p).is_file() for p in frame.path), root


def test_isic_2017_ground_truth_reads_a_row_of_zeros_as_the_rest_label(tmp_path):
    root = isic_layout(tmp_path / "isic", [[1, 0], [0, 0], [0, 1]])
    csv = root / "GroundTruth.csv"
    csv.write_text(
        "image_id,melanoma,seborrheic_keratosis\n"
        + "".join(f"ISIC_{i:07d},{r}\n" for i, r in enumerate(["1.0,0.0", "0.0,0.0", "0.0,1.0"]))
    )
    frame = load_dataset("isic", root, rest_label="nevus").frame.sort_values("key")
    assert list(frame.label) == ["melanoma", "nevus", "seborrheic_keratosis"]
    with pytest.raises(DataError, match=r"row 3 \(image 'ISIC_0000001'\) is not one-hot"):
        load_dataset("isic", root)  # without a rest label a row of zeros is an error


def test_a_group_pattern_puts_a_cases_second_image_with_its_first(tmp_path):
    """Derm7pt has no lesion ids; "<case>bis.jpg" is a second image of "<case>.jpg"."""
    root = make_csv_collection(tmp_path / "atlas", {"mel": 2, "nv": 1}, images_per_lesion=1)
    (root / "images" / "nv_0_0.jpg").rename(root / "images" / "mel_0_0bis.jpg")
    table = (root / "metadata.csv").read_text().replace("nv_0_0,nv", "mel_0_0bis,nv").replace("lesion_id,", "case,")
    (root / "metadata.csv").write_text(table)
    frame = load_dataset("atlas", root, group_pattern=r"^(.+?)(?:bis)?\.\w+$").frame.set_index("key")
    assert frame.group["images/mel_0_0bis.jpg"] == frame.group["images/mel_0_0.jpg"] == "images/mel_0_0"
    assert frame.group["images/mel_1_0.jpg"] == "images/mel_1_0"
    with pytest.raises(DataError, match=r"group_pattern '\^mel' does not match image 'images/mel_0_0.jpg'"):
        load_dataset("atlas", root, group_pattern="^mel")


def test_labels_too_rare_to_stratify_share_a_stratum(tmp_path):
    root = make_csv_collection(tmp_path / "atlas", {"mel": 10, "nv": 10, "df": 3, "vasc": 2}, images_per_lesion=1)
    frame = cut_test_split(load_dataset("atlas", root).frame, 0.2, 0, "atlas")
    test = frame[frame.split == "test"].label.value_counts().to_dict()
    assert test["mel"] == test["nv"] == 2 and test.get("df", 0) + test.get("vasc", 0) == 1


def test_a_path_that_differs_only_in_case_resolves(tmp_path):
    """Derm7pt's meta.csv names "FCl/Fcl068.jpg"; the folder is "FCL" (written on a case-insensitive disk)."""
    root = make_csv_collection(tmp_path / "atlas", {"mel": 1, "nv": 1}, images_per_lesion=1)
    (root / "images" / "FCL").mkdir()
    (root / "images" / "mel_0_0.jpg").rename(root / "images" / "FCL" / "Fcl068.jpg")
    (root / "metadata.csv").write_text((root / "metadata.csv").read_text().replace("mel_0_0,", "FCl/Fcl068.jpg,"))
    frame = load_dataset("atlas", root, images="images", path_column="image_id").frame
    assert sorted(frame.key) == ["images/FCL/Fcl068.jpg", "images/nv_0_0.jpg"]

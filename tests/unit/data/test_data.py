import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skin_cancer.data.audit import audit
from skin_cancer.data.collections import limit_per_class, load_dataset
from skin_cancer.data.images import BadImage, decode, to_rgb
from skin_cancer.data.prepare import prepare, read_manifest, scan_layout
from skin_cancer.errors import DataError
from tests.helpers import AUDIT

PREPARE_DEFAULTS = dict(
    positive_class="malignant",
    val_fraction=0.25,
    seed=0,
    drop_test_duplicates=True,
    strict=False,
    max_image_pixels=10_000_000,
    held_out=(),
    workers=2,
)


def run_prepare(root, out, against=(), **overrides):
    """The audit stage, then prepare, as the pipeline runs them."""
    out.mkdir(exist_ok=True)
    data = load_dataset("data", root)
    data.frame = limit_per_class(data.frame, overrides.pop("per_class_limit", None)).assign(collection="data")
    images = audit(data, list(against), **AUDIT).images
    return prepare(data, out, out, images, **(PREPARE_DEFAULTS | overrides))


def jpeg_bytes(image, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


# --- layout errors -------------------------------------------------------------------------


def test_missing_root_names_the_expected_layout(tmp_path):
    with pytest.raises(DataError, match=r"not found: expected <root>/train/<class>/<images>"):
        scan_layout(tmp_path / "nowhere")


def test_missing_test_split_is_an_error(make_dataset):
    root = make_dataset(train=2, test=1)
    shutil.rmtree(root / "test")
    with pytest.raises(DataError, match="test not found"):
        scan_layout(root)


def test_fewer_than_two_classes_is_an_error(make_dataset):
    root = make_dataset(train=2, test=1, classes=("benign",))
    with pytest.raises(DataError, match="at least two are needed"):
        scan_layout(root)


def test_empty_class_is_an_error(make_dataset):
    root = make_dataset(train=2, test=1)
    for f in (root / "test" / "malignant").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="test/malignant is an empty class folder"):
        scan_layout(root)


def test_a_class_whose_training_images_are_all_unusable_is_named(make_dataset, tmp_path):
    root = make_dataset(train=3, test=1)
    for f in (root / "train" / "malignant").iterdir():
        f.write_bytes(b"not an image")  # each skipped with its reason, none left to train on
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match=f"class 'malignant' has no usable training image in {root}"):
        run_prepare(root, out)
    assert not list(out.glob("*.csv"))


def test_class_folders_must_agree_between_splits(make_dataset):
    root = make_dataset(train=2, test=1)
    (root / "test" / "malignant").rename(root / "test" / "melanoma")
    with pytest.raises(DataError, match="class folders differ"):
        scan_layout(root)


# --- decoding every kind of file -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "I;16", "I", "F", "1"])
def test_every_mode_becomes_8bit_rgb(mode):
    gray = np.linspace(0, 255, 64 * 48).reshape(48, 64)
    if mode in ("I;16", "I"):
        image = Image.fromarray((gray * 257).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F":
        image = Image.fromarray((gray / 255).astype(np.float32))
    else:
        image = Image.fromarray(gray.astype(np.uint8)).convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (64, 48)
    pixels = np.asarray(rgb)
    assert pixels.max() > 200 and pixels.min() < 30, f"{mode}: range lost"


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"this is not an image\n", "not a recognised image"),
        (b"\xff\xd8\xff\xe0" + bytes(200), "corrupt header"),
    ],
)
def test_bad_files_raise_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        decode(path, 10_000_000)


def test_truncated_jpeg_is_rejected(tmp_path):
    data = jpeg_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="corrupt or truncated"):
        decode(path, 10_000_000)


def test_decompression_bomb_is_rejected(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (4000, 3000)).save(path)  # tiny file, 12 megapixels
    with pytest.raises(BadImage, match="decompression bomb"):
        decode(path, max_pixels=1_000_000)


# --- prepare as a whole ---------------------------------------------------------------------


def add_bad_and_odd_files(root):
    """Bad files that must be skipped with a reason, odd formats that must be converted."""
    train_benign = root / "train" / "benign"
    (train_benign / "empty.jpg").write_bytes(b"")
    (train_benign / "notes.txt").write_text("not an image")
    (train_benign / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    Image.new("L", (5000, 5000)).save(train_benign / "bomb.png")
    base = Image.open(root / "train" / "malignant" / "0.jpg")
    base.convert("L").save(root / "train" / "malignant" / "gray.png")
    base.convert("RGBA").save(root / "train" / "malignant" / "alpha.png")
    base.convert("CMYK").save(root / "train" / "malignant" / "cmyk.jpg")
    base.convert("P").save(root / "train" / "malignant" / "palette.gif")
    base.save(root / "train" / "malignant" / "scan.tiff")
    base.save(root / "train" / "malignant" / "bitmap.bmp")


def test_prepare_skips_bad_files_with_reasons_and_converts_odd_ones(make_dataset, tmp_path):
    root = make_dataset(train=8, test=3)
    add_bad_and_odd_files(root)
    report = run_prepare(root, tmp_path / "prepared", drop_test_duplicates=False)
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"empty.jpg", "notes.txt", "broken.jpg", "bomb.png"}
    assert "empty file" in reasons["empty.jpg"] and "not a recognised image" in reasons["notes.txt"]
    assert "decompression bomb" in reasons["bomb.png"]
    frames = pd.concat([read_manifest(tmp_path / "prepared" / f"{s}.csv") for s in ("train", "val", "test")])
    assert len(frames) + len(report["skipped"]) == report["files_found"]
    converted = frames[frames.path != frames.source]
    assert {p.rsplit("/", 1)[1] for p in converted.source} == {
        "gray.png",
        "alpha.png",
        "cmyk.jpg",
        "palette.gif",
        "scan.tiff",
        "bitmap.bmp",
    }
    for path in converted.path:
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.format == "PNG"


def test_strict_mode_fails_on_the_first_bad_file(make_dataset, tmp_path):
    root = make_dataset(train=4, test=2)
    (root / "train" / "benign" / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImage, match="empty.jpg: empty file"):
        run_prepare(root, tmp_path / "prepared", strict=True)


def test_copies_of_test_images_are_dropped_and_clusters_kept_on_one_side(make_dataset, tmp_path):
    root = make_dataset(train=10, test=4)
    test_image = root / "test" / "malignant" / "1.jpg"
    shutil.copy(test_image, root / "train" / "malignant" / "exact_copy_of_test.jpg")
    # A near copy: resized, flipped and re-encoded.
    Image.open(test_image).resize((60, 60)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        root / "train" / "malignant" / "near_copy_of_test.jpg", quality=70
    )
    shutil.copy(root / "train" / "benign" / "3.jpg", root / "train" / "benign" / "twin.jpg")
    report = run_prepare(root, tmp_path / "prepared")
    dropped = {d["path"].rsplit("/", 1)[1] for d in report["dropped"]}
    assert dropped == {"exact_copy_of_test.jpg", "near_copy_of_test.jpg"}
    assert report["summary"]["test_leaks"] == {"copy": 1, "group": 0}
    test = read_manifest(tmp_path / "prepared" / "test.csv")
    assert list(test.source[test.leak == "copy"]) == [str(test_image)]
    train, val = (read_manifest(tmp_path / "prepared" / f"{s}.csv") for s in ("train", "val"))
    names = set(train.source) | set(val.source)
    assert not any("copy_of_test" in n for n in names)
    # The twins stay on one side of the train/validation split.
    twin_sides = {
        s for s, frame in (("train", train), ("val", val)) for p in frame.source if p.endswith(("benign/3.jpg", "twin.jpg"))
    }
    assert len(twin_sides) == 1


def test_a_held_out_collection_takes_its_copies_and_their_lesions_out_of_training(make_dataset, tmp_path):
    root = make_dataset(train=8, test=2)
    data = load_dataset("data", root)
    # Two pictures of one lesion in training; the held-out collection has a re-encoded, flipped copy of one.
    lesion = [str(root / "train" / "benign" / f"{i}.jpg") for i in (0, 1)]
    data.frame = data.frame.assign(group=data.frame.path.map(lambda p: "lesion-1" if p in lesion else None), collection="data")
    (tmp_path / "held" / "benign").mkdir(parents=True)
    Image.open(lesion[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "held" / "benign" / "c.jpg", quality=80)
    images = audit(data, [load_dataset("held", tmp_path / "held")], **AUDIT).images
    for out in ("a", "b"):
        (tmp_path / out).mkdir()
    kept = prepare(data, tmp_path / "a", tmp_path / "a", images, **PREPARE_DEFAULTS)
    assert kept["dropped"] == [] and kept["summary"]["dropped_held_out"] == {}
    report = prepare(data, tmp_path / "b", tmp_path / "b", images, **(PREPARE_DEFAULTS | {"held_out": ("held",)}))
    reasons = {d["path"]: (d["reason"], d["duplicate_of"]) for d in report["dropped"]}
    assert reasons == {
        lesion[0]: ("copy in held-out collection held", "held"),
        lesion[1]: ("same lesion as a copy in held-out collection held", "train/benign/0.jpg"),
    }
    assert report["summary"]["dropped_held_out"] == {"held": 2}
    training = pd.concat(read_manifest(tmp_path / "b" / f"{s}.csv") for s in ("train", "val"))
    assert not set(lesion) & set(training.source)


def test_keeping_test_duplicates_is_configurable(make_dataset, tmp_path):
    root = make_dataset(train=6, test=2)
    shutil.copy(root / "test" / "benign" / "0.jpg", root / "train" / "benign" / "copy.jpg")
    report = run_prepare(root, tmp_path / "prepared", drop_test_duplicates=False)
    assert report["dropped"] == [] and report["summary"]["test_leaks"]["copy"] == 1


def test_split_is_stratified_and_deterministic(make_dataset, tmp_path):
    root = make_dataset(train=20, test=2)
    first = run_prepare(root, tmp_path / "a", val_fraction=0.25, seed=3)
    second = run_prepare(root, tmp_path / "b", val_fraction=0.25, seed=3)
    run_prepare(root, tmp_path / "c", val_fraction=0.25, seed=4)
    assert first["counts"]["val"] == {"benign": 5, "malignant": 5}
    assert first["counts"]["train"] == {"benign": 15, "malignant": 15}
    val = lambda d: list(read_manifest(tmp_path / d / "val.csv").source)  # noqa: E731
    assert val("a") == val("b") and val("a") != val("c")
    assert first["fingerprint"] == second["fingerprint"]


def test_manifests_have_paths_labels_and_hashes(make_dataset, tmp_path):
    root = make_dataset(train=4, test=2)
    run_prepare(root, tmp_path / "prepared")
    test = read_manifest(tmp_path / "prepared" / "test.csv")
    assert {"path", "source", "label", "label_index", "sha256", "phash", "group", "leak", "split"} <= set(test.columns)
    assert dict(zip(test.label, test.label_index)) == {"benign": 0, "malignant": 1}
    assert test.sha256.str.len().eq(64).all() and test.phash.str.len().eq(16).all()


def test_per_class_limit_takes_a_subset(make_dataset, tmp_path):
    report = run_prepare(make_dataset(train=8, test=4), tmp_path / "prepared", per_class_limit=2, val_fraction=0.5)
    assert report["files_found"] == 8


def test_unknown_positive_class_is_an_error(make_dataset, tmp_path):
    with pytest.raises(DataError, match="data.positive_class='melanoma'"):
        run_prepare(make_dataset(train=2, test=1), tmp_path / "prepared", positive_class="melanoma")

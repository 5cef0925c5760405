"""Audit: copies under resizing, squashing, re-encoding, flips and quarter turns; provenance against a
dataset with groups; grouped splits; clean-test flags; bad input; the real data's known pairs."""

import io
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skin_cancer.data import audit as au
from skin_cancer.data import copies as cp
from skin_cancer.data.collections import load_dataset, map_labels
from skin_cancer.data.images import BadImage, decode
from skin_cancer.data.prepare import leak_kind, prepare, read_manifest
from skin_cancer.errors import DataError
from tests.helpers import AUDIT, COPY, PIXELS, exhaustive_copies, lesion_image, make_other_dataset


def reencoded(image: Image.Image, quality: int = 60) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def save_all(folder, images: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        image.save(folder / name)
    return [str(folder / name) for name in images]


@pytest.fixture
def lesions():
    rng = np.random.default_rng(7)
    return [lesion_image(rng, malignant=i % 2 == 1, size=96) for i in range(12)]


@pytest.mark.parametrize(
    "edit",
    [
        lambda im: im.resize((200, 150)),  # aspect squashed, like HAM10000 vs the 224x224 Kaggle set
        lambda im: reencoded(im, 40),
        lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        lambda im: im.rotate(90, expand=True),
        lambda im: reencoded(im.rotate(270, expand=True).resize((150, 120)), 70),
    ],
    ids=["squash", "jpeg40", "hflip", "vflip", "rot90", "rot270-resize-jpeg"],
)
def test_copies_are_found_under_every_edit_and_look_alikes_are_not(tmp_path, lesions, edit):
    originals = save_all(tmp_path / "a", {f"{i}.png": im for i, im in enumerate(lesions)})
    copy = save_all(tmp_path / "b", {"copy.png": edit(lesions[3])})
    pairs = cp.find_copies(cp.fingerprint(copy, 2, PIXELS), cp.fingerprint(originals, 2, PIXELS), **COPY)
    assert list(pairs.b) == [3], pairs


def test_find_copies_within_one_set_lists_each_pair_once(tmp_path, lesions):
    images = {f"{i}.png": im for i, im in enumerate(lesions)}
    images["dup_of_2.jpg"] = lesions[2].convert("RGB")
    images["flip_of_5.png"] = lesions[5].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    paths = save_all(tmp_path, images)
    pairs = cp.find_copies(cp.fingerprint(paths, 2, PIXELS), **COPY)
    found = {tuple(sorted((paths[a].rsplit("/", 1)[1], paths[b].rsplit("/", 1)[1]))) for a, b in zip(pairs.a, pairs.b)}
    assert found == {("2.png", "dup_of_2.jpg"), ("5.png", "flip_of_5.png")}
    assert (pairs.a < pairs.b).all() and pairs.correlation.ge(0.97).all()


def test_candidates_equal_a_brute_force_search():
    """The blocked, vectorised hash search finds exactly the pairs a plain double loop finds."""
    rng = np.random.default_rng(3)
    thumbs = rng.normal(128, 40, (40, 32, 32)).astype(np.float32)
    thumbs[7] = thumbs[30] + rng.normal(0, 2, (32, 32))  # a noisy copy
    thumbs[12] = cp.dihedral(thumbs[21], 5)  # a turned and flipped copy
    prints = cp.Fingerprints(thumbs, [str(i) for i in range(40)], [None] * 40)
    found = cp.find_copies(prints, candidate_distance=64, min_correlation=0.9, block=8)
    brute = set()
    for a, b in combinations(range(40), 2):
        best = max(np.corrcoef(cp.dihedral(thumbs[a], t).ravel(), thumbs[b].ravel())[0, 1] for t in range(8))
        if best >= 0.9:
            brute.add((a, b))
    assert set(zip(found.a, found.b)) == brute == {(7, 30), (12, 21)}


@pytest.mark.parametrize("distance", [3, 10, 13, 16])
def test_the_indexed_search_finds_exactly_the_pairs_of_comparing_every_pair(distance):
    """faiss' range search and the correlation bound miss no pair and add none, whatever the distance,
    across and within sets, with unreadable images on both sides."""
    rng = np.random.default_rng(distance)
    base = rng.normal(128, 40, (300, 32, 32)).astype(np.float32)
    smooth = base.cumsum(axis=1).cumsum(axis=2)  # low-frequency images: hashes close together
    thumbs = np.concatenate([smooth, cp.dihedral(smooth[:100], 3) + rng.normal(0, 60, (100, 32, 32))]).astype(np.float32)
    errors = [None] * len(thumbs)
    errors[5] = errors[350] = "cannot decode"
    prints = cp.Fingerprints(thumbs, [str(i % 350) for i in range(len(thumbs))], errors)
    other = cp.Fingerprints(thumbs[::-1].copy(), [str(i) for i in range(len(thumbs))], errors[::-1])
    for reference in (None, other):
        settings = {"candidate_distance": distance, "min_correlation": 0.5}
        found = cp.find_copies(prints, reference, **settings)
        pd.testing.assert_frame_equal(found, exhaustive_copies(prints, reference, **settings))
        assert len(found) > 0


def test_unreadable_images_are_reported_not_fatal(make_dataset):
    root = make_dataset(train=3, test=2)
    (root / "train" / "benign" / "empty.jpg").write_bytes(b"")
    (root / "train" / "benign" / "junk.jpg").write_bytes(b"not an image")
    result = au.audit(load_dataset("data", root), [], **AUDIT)
    assert set(result.report["unreadable"]) == {"train/benign/empty.jpg", "train/benign/junk.jpg"}
    assert "empty file" in result.report["unreadable"]["train/benign/empty.jpg"]


def test_provenance_carries_groups_and_flags_test_twins(make_dataset, tmp_path):
    ours = make_dataset(train=6, test=3)
    # Our test/malignant/0 and train/malignant/0 are different images of one lesion (L1) in the other set.
    other = make_other_dataset(ours, ours, tmp_path)
    result = au.audit(load_dataset("data", ours), [load_dataset("other", other)], **AUDIT)
    source = result.report["provenance"]["other"]
    assert source["group_column"] == "lesion_id"
    assert source["per_class"]["malignant"]["copies_in_other"] == 2
    assert source["per_class"]["benign"] == {"images": 9, "copies_in_other": 1, "by_other_label": {"nv": 1}}
    images = result.images.set_index("key")
    assert images.loc["train/malignant/0.jpg", "group"] == images.loc["test/malignant/0.jpg", "group"]
    assert images.loc["test/malignant/0.jpg", "leak"] == "group"
    assert result.report["test_leaks"] == {"copy": [], "group": ["test/malignant/0.jpg"]}
    assert result.report["summary"]["clean_test_images"] == 5
    assert set(result.provenance.other_key) == {"images/ISIC_1.jpg", "images/ISIC_2.jpg", "images/ISIC_3.jpg"}


def test_split_keeps_each_group_on_one_side(make_dataset, tmp_path):
    ours = make_dataset(train=10, test=2)
    # One lesion photographed five times (different images, one lesion id in the metadata).
    images = tmp_path / "meta" / "images"
    images.mkdir(parents=True)
    rows = []
    for i in range(5):
        Image.open(ours / "train" / "benign" / f"{i}.jpg").save(images / f"x{i}.jpg")
        rows.append({"image_id": f"x{i}", "dx": "nv", "lesion_id": "same"})
    pd.DataFrame(rows).to_csv(tmp_path / "meta" / "meta.csv", index=False)
    data = load_dataset("data", ours)
    data.frame = data.frame.assign(collection="data")
    result = au.audit(data, [load_dataset("meta", tmp_path / "meta")], **AUDIT)
    for seed in range(4):
        out = tmp_path / f"prepared{seed}"
        out.mkdir()
        prepare(
            data,
            out,
            out,
            result.images,
            positive_class="malignant",
            val_fraction=0.3,
            seed=seed,
            drop_test_duplicates=True,
            strict=False,
            max_image_pixels=10**8,
            held_out=(),
            workers=2,
        )
        sides = {
            split
            for split in ("train", "val")
            for source in read_manifest(out / f"{split}.csv").source
            if any(source.endswith(f"benign/{i}.jpg") for i in range(5))
        }
        assert len(sides) == 1


def test_csv_dataset_errors_name_the_problem(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.jpg")
    pd.DataFrame({"image": ["a", "missing1", "missing2"], "label": ["x", "y", "y"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"m.csv: 2 of 3 images in column 'image' do not exist .* 'missing1'"):
        load_dataset("d", tmp_path)
    pd.DataFrame({"image": ["a"], "kind": ["x"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match="no label column"):
        load_dataset("d", tmp_path)


def test_empty_folder_and_empty_class_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        load_dataset("d", tmp_path / "empty")
    (tmp_path / "one" / "benign").mkdir(parents=True)
    with pytest.raises(DataError, match="benign is an empty class folder"):
        load_dataset("d", tmp_path / "one")
    with pytest.raises(DataError, match="not found"):
        load_dataset("d", tmp_path / "nowhere")


def test_label_map_must_cover_every_label():
    frame = pd.DataFrame({"label": ["mel", "nv", "bkl", "df"], "path": list("abcd")})
    with pytest.raises(DataError, match=r"unmapped: \['bkl', 'df'\]"):
        map_labels(frame, {"mel": "malignant", "nv": "benign"}, "evaluate.external.x.label_map")
    kept, left_out = map_labels(frame, {"mel": "malignant", "nv": "benign", "bkl": None, "df": None}, "x")
    assert list(kept.label) == ["malignant", "benign"] and left_out == 2


@pytest.mark.parametrize("content", ["bomb", "empty", "text", "cut"])
def test_the_audit_refuses_a_file_as_prepare_does(tmp_path, content):
    """One guarded decoder: the audit's thumbnail and prepare's decode refuse a file in the same words."""
    path = tmp_path / "image.png"
    Image.new("L", (4000, 3000)).save(path)  # 12 megapixels in a tiny file
    if content != "bomb":
        data = path.read_bytes()
        path.write_bytes({"empty": b"", "text": b"not an image", "cut": data[: len(data) // 2]}[content])
    with pytest.raises(BadImage) as audited:
        cp.thumbnail(str(path), max_pixels=1_000_000 if content == "bomb" else PIXELS)
    with pytest.raises(BadImage) as prepared:
        decode(path, 1_000_000 if content == "bomb" else 40_000_000)
    assert str(audited.value) == str(prepared.value)


def test_the_leak_rule():
    clusters, groups = {1, 2}, {10, 20}
    assert leak_kind(1, 99, clusters, groups) == "copy"  # a copy, whatever its group
    assert leak_kind(5, 10, clusters, groups) == "group"
    assert leak_kind(5, 99, clusters, groups) == ""

"""Using a trained model: predict (Python API and CLI) and Grad-CAM, on a tiny model."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from skin_cancer import paths
from skin_cancer.cli import main as cli
from skin_cancer.config import to_dict
from skin_cancer.errors import DataError
from skin_cancer.evaluation import explain
from skin_cancer.operating_point import OperatingPoint


def test_api_predictions_equal_the_evaluate_stage(trained):
    from skin_cancer import load_classifier

    clf = load_classifier("models/model.keras")
    evaluated = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv")
    results = clf.predict(list(evaluated.path))
    np.testing.assert_allclose([r["probability"] for r in results], evaluated.probability, atol=1e-5)
    assert [r["label"] for r in results] == list(evaluated.predicted)
    assert {r["threshold"] for r in results} == {json.loads(paths.OPERATING_POINT.read_text())["threshold"]}


def test_arrays_of_any_size_are_resized_like_files(trained, tmp_path):
    from skin_cancer import load_classifier

    clf = load_classifier("models/model.keras")
    path = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[0]
    # Decoded by the same JPEG decoder as the input pipeline (Pillow's differs by about one grey level).
    pixels = tf.io.decode_image(tf.io.read_file(path), channels=3).numpy()
    from_file, from_array = clf.predict([path, pixels])
    assert from_array["probability"] == pytest.approx(from_file["probability"], abs=1e-4)
    bigger = np.asarray(Image.fromarray(pixels).resize((150, 100)))
    assert 0 <= clf.predict([bigger])[0]["probability"] <= 1
    assert "expected an HxWx3" in clf.predict([np.zeros((4, 4))])[0]["error"]


def test_bad_files_get_their_own_error_and_the_rest_is_predicted(trained, tmp_path):
    from skin_cancer import load_classifier

    good = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[0]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    data = open(good, "rb").read()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("1", (8000, 6000)).save(tmp_path / "bomb.png")  # 48 megapixels in a few kilobytes
    Image.open(good).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.open(good).convert("I;16").save(tmp_path / "sixteen.png")
    write_16_bit_bmp(tmp_path / "rgb555.bmp")  # Pillow reads it as RGB, TensorFlow's decoder refuses it
    names = ["empty.jpg", "text.jpg", "cut.jpg", "bomb.png", "cmyk.jpg", "sixteen.png", "rgb555.bmp"]
    results = load_classifier("models/model.keras").predict([good, *[tmp_path / n for n in names]])
    errors = {r["image"].rsplit("/", 1)[-1]: r.get("error") for r in results}
    assert "empty file" in errors["empty.jpg"] and "not a recognised image" in errors["text.jpg"]
    assert "truncated" in errors["cut.jpg"] and "decompression bomb" in errors["bomb.png"]
    assert errors["bomb.png"].startswith("too large: 8000x6000") and "the limit is 40000000" in errors["bomb.png"]
    assert errors["cmyk.jpg"] is None and errors["sixteen.png"] is None and errors["rgb555.bmp"] is None
    assert all(0 <= r["probability"] <= 1 for r in results if "error" not in r)
    # The limit is the one prepare used (data.max_image_pixels), kept with the operating point.
    op = OperatingPoint.load(paths.OPERATING_POINT)
    assert op.max_image_pixels == trained.data.max_image_pixels
    op.replace(max_image_pixels=Image.open(good).width * Image.open(good).height - 1).save(paths.OPERATING_POINT)
    [refused] = load_classifier("models/model.keras").predict([good])
    assert refused["error"].startswith("too large") and "probability" not in refused


def write_16_bit_bmp(path, size: int = 40):
    """A 16-bit (5-5-5) BMP, which Pillow writes no more but cameras and scanners do."""
    import struct

    row = (size * 2 + 3) // 4 * 4
    pixel = struct.pack("<H", (20 << 10) | (12 << 5) | 8)
    pixels = b"".join(pixel * size + b"\0" * (row - size * 2) for _ in range(size))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, size, size, 1, 16, 0, len(pixels), 2835, 2835, 0, 0)
    path.write_bytes(header + info + pixels)


BAD_ARRAYS = [
    (np.zeros((4, 4)), "expected an HxWx3"),
    (np.zeros((8, 8, 2)), "expected an HxWx3"),
    (np.full((8, 8, 3), 0.5, dtype="float32"), "lie in [0, 1]: scale them to [0, 255]"),
    (np.full((8, 8, 3), 300.0), "must lie in [0, 255], found [300, 300]"),
    (np.full((8, 8, 3), -1, dtype="int16"), "must lie in [0, 255]"),
    (np.full((8, 8, 3), np.nan), "NaN or infinite"),
    (np.full((8, 8, 3), "a"), "dtype <U1"),
]


def test_arrays_of_the_wrong_shape_dtype_or_range_get_a_clear_error(trained):
    from skin_cancer import load_classifier

    good = np.full((8, 8, 4), 120, dtype="uint8")  # RGBA: the alpha channel is dropped
    *bad, ok = load_classifier("models/model.keras").predict([array for array, _ in BAD_ARRAYS] + [good])
    for result, (_, message) in zip(bad, BAD_ARRAYS):
        assert message in result["error"]
    assert "error" not in ok


def test_predictions_stream_in_bounded_batches(trained):
    """A folder is decoded and scored a batch at a time: memory does not grow with its size."""
    from skin_cancer import load_classifier

    path = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[0]
    pulled = []

    def inputs():
        for i in range(25):
            pulled.append(i)
            yield path

    stream = load_classifier("models/model.keras").predict_iter(inputs(), batch_size=8)
    first = next(stream)
    assert len(pulled) == 8 and 0 <= first["probability"] <= 1
    assert len([first, *stream]) == 25 and len(pulled) == 25
    arrays = [np.full((8, 8, 3), 100, dtype="uint8")] * 10
    names = [r["image"] for r in load_classifier("models/model.keras").predict_iter(arrays, batch_size=4)]
    assert names == [f"array {i}" for i in range(10)]  # positions among all inputs, not within a batch


def test_cli_predict_folder_writes_a_csv_agreeing_with_evaluate(trained, capsys):
    evaluated = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv")
    folder = str(trained.data.root) + "/test"
    assert cli(["predict", folder, "--out", "out.csv"]) == 0
    written = pd.read_csv("out.csv").set_index("image")
    assert set(written.index) == set(evaluated.path)
    assert list(written.loc[evaluated.path, "label"]) == list(evaluated.predicted)
    assert "wrote out.csv" in capsys.readouterr().err  # stdout holds only results


def test_missing_model_and_operating_point_are_one_line_errors(trained, tmp_path, capsys):
    assert cli(["predict", str(trained.data.root), "--model", "nowhere.keras"]) == 2
    assert "model nowhere.keras not found" in capsys.readouterr().err
    paths.OPERATING_POINT.unlink()
    with pytest.raises(DataError, match="operating_point.json not found"):
        from skin_cancer.serving.classifier import load_classifier

        load_classifier("models/model.keras")


def test_model_of_an_mlflow_run_predicts_the_same(trained, tmp_path):

    from skin_cancer.config import write_params
    from skin_cancer.serving.classifier import load_classifier
    from skin_cancer.stages.track import publish

    write_params(trained)
    run_id = publish(trained)["run_id"]
    path = pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[0]
    local = load_classifier("models/model.keras").predict([path])[0]
    logged = load_classifier(run_id=run_id).predict([path])[0]
    assert logged["probability"] == pytest.approx(local["probability"], abs=1e-5) and logged["label"] == local["label"]
    with pytest.raises(DataError, match="runs:/0123456789abcdef/model"):
        load_classifier(run_id="0123456789abcdef")


def patch_images(n: int, rng: np.random.Generator):
    """32x32 noise; positives carry a bright 8x8 patch at a random place (it alone decides the label)."""
    images = rng.uniform(0, 80, (n, 32, 32, 3)).astype("float32")
    labels = np.arange(n) % 2
    for image, label in zip(images, labels):
        if label:
            y, x = rng.integers(0, 24, 2)
            image[y : y + 8, x : x + 8] = 255
    return images, labels


def tiny_patch_detector():
    inner = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inner)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(h)
    backbone = keras.Model(inner, h, name="tiny_backbone")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dropout(0.0)(x))
    return keras.Model(inputs, outputs)


def test_grad_cam_highlights_the_patch_that_decides_the_output():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = tiny_patch_detector()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    images, labels = patch_images(400, rng)
    model.fit(images, labels, epochs=15, batch_size=32, verbose=0)
    assert explain.last_conv_layer_name(model) == "last_conv"
    image = rng.uniform(0, 80, (32, 32, 3)).astype("float32")
    image[4:12, 18:26] = 255
    heatmap, probability = explain.grad_cam(model, image)
    assert probability > 0.8 and heatmap.shape == (32, 32)
    assert heatmap.max() == pytest.approx(1.0) and heatmap.std() > 0.05
    inside, outside = (
        heatmap[4:12, 18:26].mean(),
        np.delete(heatmap.ravel(), np.ravel_multi_index(np.mgrid[4:12, 18:26].reshape(2, -1), (32, 32))).mean(),
    )
    assert inside > 3 * outside


def test_grad_cam_of_a_saturated_prediction_is_not_blank():
    """At probability 1.0 the sigmoid's gradient vanishes; the logit's does not."""
    keras.utils.set_random_seed(0)
    model = tiny_patch_detector()
    dense = model.layers[-1]
    dense.kernel.assign(np.abs(dense.kernel.numpy()) + 0.1)
    dense.bias.assign([200.0])
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype("float32")
    assert float(model(image[None])[0, 0]) == 1.0
    heatmap, probability = explain.grad_cam(model, image)
    assert probability == 1.0
    assert heatmap.max() == pytest.approx(1.0, abs=1e-3) and heatmap.std() > 0.01


def test_cli_explain_writes_overlays(trained, tmp_path):
    folder = str(trained.data.root) + "/test/malignant"
    assert cli(["explain", folder, "--out", str(tmp_path / "cams")]) == 0
    written = sorted(p.name for p in (tmp_path / "cams").iterdir())
    assert written and all(name.endswith("_gradcam.png") for name in written)
    assert (tmp_path / "cams" / written[0]).read_bytes()[:4] == b"\x89PNG"


def test_the_api_answers_threads_at_once_as_it_answers_one(trained):
    """One classifier shared by threads (REST workers, app sessions): every result equals a sequential run."""
    from concurrent.futures import ThreadPoolExecutor

    from skin_cancer import load_classifier

    files = list(pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path)
    requests = [files[i : i + 1 + i % 3] for i in range(len(files))]
    clf = load_classifier("models/model.keras")  # not compiled yet: the threads race to compile it
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(clf.predict, requests * 3))
    one = load_classifier("models/model.keras")
    sequential = [one.predict(request) for request in requests]
    assert concurrent == sequential * 3


def test_the_served_model_reports_its_own_faults_as_server_errors(trained):
    """A request the model fails on is the server's fault (HTTP 500), not the client's (400); limits
    are the client's (400); a garbage row is answered in its own row."""
    import base64

    from mlflow.exceptions import MlflowException

    from skin_cancer import load_classifier
    from skin_cancer.serving.rest import serving_model

    served = serving_model()
    # What load_context sets from the logged model: its classifier and its limits (serving.*).
    served.classifier, served.limits = load_classifier("models/model.keras"), to_dict(trained.serving)
    good = base64.b64encode(open(pd.read_csv(paths.EVALUATION / "test" / "predictions.csv").path[0], "rb").read()).decode()
    rows = pd.DataFrame({"image": [good, base64.b64encode(b"junk").decode()]})
    answered = served.predict(None, rows)
    assert answered.error.isna().tolist() == [True, False] and 0 <= answered.probability[0] <= 1

    def broken(images):
        raise RuntimeError("Infer Request is busy")

    served.classifier._forward = broken
    with pytest.raises(MlflowException, match="the model failed on this request") as fault:
        served.predict(None, rows)
    assert fault.value.get_http_status_code() == 500
    with pytest.raises(MlflowException, match="at most 32 images") as refused:
        served.predict(None, pd.DataFrame({"image": [good] * 33}))
    assert refused.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match="no `image` column") as refused:
        served.predict(None, pd.DataFrame({"picture": [good]}))
    assert refused.value.get_http_status_code() == 400


def test_images_unlike_the_training_data_get_no_diagnosis_everywhere(trained_with, capsys):
    """calibrate fits the detector (its cut-off flags evaluate.ood_flag_share of validation); beyond
    the cut-off the API, the CLI, the REST model and explain withhold the diagnosis and say why."""
    import base64
    from dataclasses import replace

    from skin_cancer import load_classifier
    from skin_cancer.data.prepare import read_manifest
    from skin_cancer.evaluation import ood
    from skin_cancer.serving.rest import serving_model
    from skin_cancer.stages import calibrate

    assert load_classifier("models/model.keras").ood is None  # the shared pipeline has the flag off
    cfg = trained_with("evaluate.ood_flag_share=0.05")
    calibrate.main(cfg)
    clf = load_classifier("models/model.keras")
    assert clf.ood is not None and clf.ood.cutoff == ood.load(paths.OOD).cutoff
    val = read_manifest(paths.PREPARED / "val.csv")
    flagged = [r["out_of_distribution"] for r in clf.predict(list(val.path))]
    assert np.mean(flagged) <= cfg.evaluate.ood_flag_share + 1 / len(val)  # the validation quantile
    test = str(read_manifest(paths.PREPARED / "test.csv").path[0])
    plain = clf.predict([test])[0]
    assert plain["ood_distance"] > 0 and plain["label"] in clf.class_names

    strict = replace(clf, ood=replace(clf.ood, cutoff=-1.0))  # every image beyond the cut-off
    answer = strict.predict([test])[0]
    assert answer["out_of_distribution"] and answer["label"] is None and answer["probability"] is None
    assert answer["note"] == ood.NOT_LIKE_TRAINING and answer["ood_distance"] == pytest.approx(plain["ood_distance"], rel=1e-4)
    result, image, heatmap = explain.explain_file(strict, test)
    assert result["out_of_distribution"] and image is not None and heatmap is None

    served = serving_model()
    served.classifier, served.limits = strict, {"max_batch": 32, "max_image_bytes": 10**7}
    rows = served.predict(None, pd.DataFrame({"image": [base64.b64encode(open(test, "rb").read()).decode()]}))
    assert rows.out_of_distribution.tolist() == [True] and rows.label.isna().all() and rows.note[0] == ood.NOT_LIKE_TRAINING

    ood.save(strict.ood, paths.OOD)  # the CLI loads the detector beside the model
    assert cli(["predict", test]) == 0
    assert f"{test}: {ood.NOT_LIKE_TRAINING} (distance" in capsys.readouterr().out
    ood.save(None, paths.OOD, reason="an ensemble has no single feature space")
    assert load_classifier("models/model.keras").ood is None

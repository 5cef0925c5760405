import numpy as np
import pytest
from PIL import Image

from skin_cancer.models.inference import RUNTIMES, compile_forward, compile_predictor, predict_files


def corner_model():
    """Outputs the top-left red pixel / 255: each dihedral view moves the corner elsewhere."""
    import keras

    inputs = keras.Input((8, 8, 3))
    corner = keras.layers.Lambda(lambda x: x[:, :1, :1, :1] / 255.0)(inputs)
    return keras.Model(inputs, keras.layers.Flatten()(corner))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tta_averages_the_dihedral_views(tmp_path, runtime):
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[0, 0] = 255
    Image.fromarray(pixels).save(tmp_path / "corner.png")
    paths = [str(tmp_path / "corner.png")] * 3
    single = predict_files(compile_predictor(corner_model(), 1, runtime), paths, 8, batch_size=2)
    averaged = predict_files(compile_predictor(corner_model(), 8, runtime), paths, 8, batch_size=2)
    assert single == pytest.approx([1.0] * 3) and averaged == pytest.approx([2 / 8] * 3)  # top-left in 2 of 8 views


def test_openvino_runs_the_same_graph_as_tensorflow(tiny_cfg):
    from skin_cancer.models.classifier import build_classifier

    model = build_classifier(tiny_cfg.model, 32)
    images = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    by_runtime = {runtime: compile_predictor(model, 4, runtime)(images) for runtime in RUNTIMES}
    assert by_runtime["openvino"].shape == (5,)
    np.testing.assert_allclose(by_runtime["openvino"], by_runtime["tensorflow"], atol=1e-5)
    assert np.ptp(by_runtime["tensorflow"]) > 1e-3  # not a constant output that would agree trivially


def test_unknown_runtime_is_named():
    with pytest.raises(ValueError, match="runtime='onnx'"):
        compile_predictor(corner_model(), 1, "onnx")


def test_openvino_conversion_sends_no_telemetry(monkeypatch):
    """OpenVINO's converter would fork a child to report usage; forked from a threaded process it can
    hang for good without DNS (a `track` stage that never ended). Nothing may be sent."""
    import openvino_telemetry.backend.backend_ga4 as ga4
    import tensorflow as tf

    sent = []
    monkeypatch.setattr(ga4.GA4Backend, "send", lambda self, message: sent.append(message))

    @tf.autograph.experimental.do_not_convert
    def mean(images):
        return tf.reduce_mean(images, axis=(1, 2))

    forward = compile_forward(mean, (8, 8, 3), "openvino")
    assert forward(np.ones((2, 8, 8, 3), dtype="float32")).shape == (2, 3)
    assert sent == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_compiled_model_answers_many_threads_at_once(runtime):
    """Concurrent calls (REST workers, app sessions) on one compiled graph: OpenVINO's compiled model
    called directly reuses one infer request and fails with "Infer Request is busy"."""
    from concurrent.futures import ThreadPoolExecutor

    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        include_top=True, weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=1, classifier_activation="sigmoid"
    )
    forward = compile_predictor(model, 2, runtime)
    batches = [np.random.default_rng(i).uniform(0, 255, (1 + i % 3, 32, 32, 3)).astype("float32") for i in range(12)]
    sequential = [forward(batch) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(forward, batches * 4))
    for got, expected in zip(concurrent, sequential * 4):
        np.testing.assert_array_equal(got, expected)

"""Forward passes outside training, shared by the features, calibrate and evaluate stages and the
serving API, so every probability the project reports or serves comes from the same graph: traced
once, then run by TensorFlow or compiled by OpenVINO.

OpenVINO runs the same float32 graph (outputs agree to ~1e-5) 1.5-3x faster than TensorFlow on a
CPU, most of all for single images; `tensorflow` is there for GPUs and for checking.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import numpy as np

RUNTIMES = ("openvino", "tensorflow")

Forward = Callable[[np.ndarray], np.ndarray]


def _import_openvino():
    """`openvino`, with its usage telemetry switched off for this process.

    OpenVINO reports usage to Google Analytics (on import and on every conversion, unless the user
    opted out with `opt_in_out --opt_out`) from a child process it forks. Forked from a process that
    already runs threads (TensorFlow, MLflow, Streamlit), that child can hang for good in
    getaddrinfo on a machine without DNS, and the parent then waits for it at exit: a stage that
    never ends. Its telemetry object is a singleton that is re-initialised only when another tool
    name asks for it, so consent is switched off under the name `import openvino` uses, then under
    the name conversion uses; the user's own setting is not touched."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        import openvino_telemetry

        openvino_telemetry.Telemetry(
            app_name="OpenVINO",
            app_version=version("openvino"),
            tid="",
            backend="ga4",
            enable_opt_in_dialog=False,
            disable_in_ci=True,
        ).consent = False
    except (ImportError, PackageNotFoundError):  # a build without telemetry
        pass
    import openvino

    try:
        from openvino.tools.ovc.telemetry_utils import init_ovc_telemetry

        init_ovc_telemetry().consent = False
    except ImportError:
        pass
    return openvino


def compile_forward(function, input_shape: tuple, runtime: str) -> Forward:
    """`function` (TensorFlow ops on a float32 batch of `input_shape` images) as a numpy function."""
    import tensorflow as tf

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r} must be one of {', '.join(RUNTIMES)}")
    graph = tf.function(function).get_concrete_function(tf.TensorSpec((None, *input_shape), tf.float32))
    if runtime == "tensorflow":
        return lambda images: graph(tf.convert_to_tensor(images, tf.float32)).numpy()
    ov = _import_openvino()
    # The converter prints a report on stdout whenever "--verbose" is in sys.argv (as in
    # `skin-cancer predict --verbose`): stdout carries results only, so the report goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        converted = ov.convert_model(graph)
    # float32 explicitly: on CPUs with bfloat16 units OpenVINO would otherwise lower the precision.
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    return InferPool(compiled)


class InferPool:
    """A compiled OpenVINO model callable from many threads at once.

    Calling the compiled model directly reuses its one infer request, so two concurrent calls (two
    REST requests, two app sessions) fail with "Infer Request is busy". Each call here borrows an
    idle request, or creates one while fewer than `size` exist, and otherwise waits for one.
    OpenVINO's AsyncInferQueue does not fit: it hands results to callbacks of a single producer,
    while callers here are blocking threads that each need their own result back. `size` defaults to
    the device's optimal number of requests (1 under the LATENCY hint: one request already uses
    every core, so more would only hold more activation memory)."""

    def __init__(self, compiled, size: int | None = None):
        import queue
        import threading

        self._compiled = compiled
        size = size or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._slots = threading.BoundedSemaphore(max(1, size))
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import queue

        with self._slots:
            try:
                request = self._idle.get_nowait()
            except queue.Empty:
                request = self._compiled.create_infer_request()
            try:
                # share_outputs=False (the default) copies the result out of the request's buffers.
                return request.infer(np.ascontiguousarray(images, dtype=np.float32))[0]
            finally:
                self._idle.put(request)


def compile_model(model, runtime: str) -> Forward:
    """The Keras model in inference mode."""
    return compile_forward(lambda images: model(images, training=False), model.input_shape[1:], runtime)


def compile_predictor(model, tta_views: int, runtime: str, feature_layer: str | None = None) -> Forward:
    """From a float32 batch (n, size, size, 3) in [0, 255] to the raw positive-class probability per
    image (n,), or for a K-class model its class probabilities (n, K), averaged over the first
    `tta_views` dihedral views.

    With `feature_layer`, rows (n, units + d) that go on with that layer's output for the image as
    given (view 0), read off the same forward pass: the out-of-distribution flag's features cost
    no second pass and no second graph (`split_features` takes them apart)."""
    import keras
    import tensorflow as tf

    from skin_cancer.data.tf_input import dihedral_view

    units = model.output_shape[-1]
    outputs = [model.output] + ([model.get_layer(feature_layer).output] if feature_layer else [])
    network = keras.Model(model.input, outputs) if feature_layer else model

    def averaged(images):
        stacked = tf.concat([dihedral_view(images, v) for v in range(tta_views)], axis=0)
        per_view = network(stacked, training=False)
        probabilities = per_view[0] if feature_layer else per_view
        mean = tf.reduce_mean(tf.reshape(probabilities, (tta_views, -1, units)), axis=0)
        if feature_layer:
            features = per_view[1]
            return tf.concat([mean, tf.reshape(features, (tta_views, -1, features.shape[-1]))[0]], axis=1)
        return mean[:, 0] if units == 1 else mean

    return compile_forward(averaged, model.input_shape[1:], runtime)


def split_features(rows: np.ndarray, units: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities as `compile_predictor` gives them without features, features) of its rows."""
    return (rows[:, 0] if units == 1 else rows[:, :units]), rows[:, units:]


def run_batches(forward: Forward, batches, n_images: int, batch_size: int, desc: str) -> np.ndarray:
    """`forward` over an iterable of image batches, outputs concatenated, with a progress bar."""
    from tqdm import tqdm

    out = []
    for batch in tqdm(batches, desc=desc, total=-(-n_images // batch_size), unit="batch", mininterval=2, disable=None):
        # A short last batch is padded: OpenVINO plans anew (seconds) for every new input shape.
        images = np.asarray(batch)
        padded = np.concatenate([images, np.zeros((batch_size - len(images), *images.shape[1:]), images.dtype)])
        out.append(forward(padded)[: len(images)])
    return np.concatenate(out) if out else np.zeros(0, dtype="float32")


def predict_files(forward: Forward, image_paths, image_size: int, batch_size: int, desc: str = "predicting") -> np.ndarray:
    """`forward` per image file, decoded and resized by the input pipeline (tf.data, parallel)."""
    from skin_cancer.data.tf_input import image_dataset

    paths = list(image_paths)
    batches = image_dataset(paths, np.zeros(len(paths)), image_size, batch_size).map(lambda x, y: x)
    return run_batches(forward, batches.as_numpy_iterator(), len(paths), batch_size, desc)

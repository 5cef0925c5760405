"""Grad-CAM (Selvaraju et al. 2017) for the classifier: which regions of the image raised the
malignancy score. The heatmap is taken at the backbone's last convolutional feature map, found from
the model itself (the nested backbone's output, named in the result), not hard-coded per backbone.
An ensemble's map is the mean of its members' maps, each taken at the member's own input size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skin_cancer.evaluation import outputs


def split_at_backbone(model):
    """(layers before the backbone, backbone, layers after it) of a classifier built by `models/classifier.py`."""
    from skin_cancer.models.classifier import get_backbone

    backbone = get_backbone(model)
    layers = [layer for layer in model.layers if layer.__class__.__name__ != "InputLayer"]
    at = layers.index(backbone)
    if len(backbone.output.shape) != 4:
        raise ValueError(f"backbone {backbone.name!r} ends in shape {backbone.output.shape}, not a feature map")
    return layers[:at], backbone, layers[at + 1 :]


def last_conv_layer_name(model) -> str:
    """Name of the layer whose feature map Grad-CAM explains: the backbone's last 4-D output."""
    _, backbone, _ = split_at_backbone(model)
    return next(layer.name for layer in reversed(backbone.layers) if len(layer.output.shape) == 4)


def grad_cam(model, image: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, float]:
    """(heatmap in [0, 1] at the input's size, raw model probability of the explained class) for one
    RGB image already at the model's input size; the heatmap weights each feature channel by the mean
    gradient of the class's logit, keeps the positive part and normalises. The class: the malignancy
    output of a binary model; for a K-class model `class_index`, else the predicted class.

    The gradient is taken of the output layer's pre-activation (the logit itself), not of the
    sigmoid: where the probability saturates at 1.0 the sigmoid's gradient is zero and the map
    would be blank, exactly for the most confident predictions.
    """
    import tensorflow as tf

    from skin_cancer.models.ensemble import members_of

    if members_of(model):
        maps = [heatmap for _, heatmap in member_grad_cams(model, image, class_index)]
        mean = np.mean(maps, axis=0)
        probabilities = model(image[None].astype("float32"), training=False).numpy()[0]
        k = outputs.output_unit(probabilities) if class_index is None else class_index
        return mean / (mean.max() + 1e-8), float(probabilities[k])
    before, backbone, after = split_at_backbone(model)
    *hidden, output = after
    if getattr(output, "activation", None) is None or not hasattr(output, "kernel"):
        raise ValueError(f"output layer {output.name!r} is not a Dense layer with an activation")
    x = tf.convert_to_tensor(image[None].astype("float32"))
    for layer in before:
        x = layer(x)
    features = backbone(x, training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)
        y = features
        for layer in hidden:
            y = layer(y, training=False)
        logits = tf.matmul(y, output.kernel) + output.bias
        k = outputs.output_unit(logits[0].numpy()) if class_index is None else class_index
        logit = logits[0, k]
    gradients = tape.gradient(logit, features)[0]
    probability = float(output.activation(logits)[0, k])
    weights = tf.reduce_mean(gradients, axis=(0, 1))
    cam = tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1))
    cam = cam / (tf.reduce_max(cam) + 1e-8)
    heatmap = tf.image.resize(cam[..., None], image.shape[:2])[..., 0].numpy()
    return np.clip(heatmap, 0, 1), probability


def member_grad_cams(model, image: np.ndarray, class_index: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(member name, its Grad-CAM heatmap at the image's size) for each member of an ensemble, each
    member seeing the image at its own input size (unexplained class: the ensemble's prediction)."""
    import tensorflow as tf

    from skin_cancer.models.ensemble import members_of

    if class_index is None:
        probabilities = model(image[None].astype("float32"), training=False).numpy()[0]
        class_index = outputs.output_unit(probabilities)
    maps = []
    for member in members_of(model):
        size = member.input.shape[1:3]
        resized = tf.image.resize(image[None].astype("float32"), size)[0].numpy() if tuple(size) != image.shape[:2] else image
        heatmap, _ = grad_cam(member, resized, class_index)
        maps.append((member.name, tf.image.resize(heatmap[..., None], image.shape[:2])[..., 0].numpy()))
    return maps


def explain_file(classifier, path, class_name: str | None = None) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """(prediction, the image as the model sees it, Grad-CAM heatmap) of one image file, for the CLI
    and the app alike; image and heatmap are None where the prediction carries an `error`, the
    heatmap where the image is flagged out of distribution (no diagnosis to explain). A K-class
    model's map is of `class_name`, else of the predicted class."""
    result = classifier.predict([path])[0]
    if "error" in result:
        return result, None, None
    image = classifier.load_file(Path(path))
    if result.get("out_of_distribution"):
        return result, image, None
    names = classifier.class_names
    index = names.index(class_name or result["label"]) if classifier.operating_point.multiclass else None
    heatmap, _ = grad_cam(classifier.model, image, index)
    return result, image, heatmap


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the heatmap blended on top (jet colour map), uint8 RGB."""
    import matplotlib

    colours = matplotlib.colormaps["jet"](heatmap)[..., :3] * 255
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def save_overlay(image: np.ndarray, heatmap: np.ndarray, title: str, path: Path) -> None:
    """Image, heatmap overlay and title side by side as a PNG (written atomically)."""
    from skin_cancer.evaluation.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
    axes[0].imshow(image.astype(np.uint8))
    axes[1].imshow(overlay(image, heatmap))
    for ax, label in zip(axes, ("image", "Grad-CAM")):
        ax.set(xticks=[], yticks=[], xlabel=label)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def save_grid(items: list[tuple[np.ndarray, np.ndarray, str]], path: Path, columns: int = 4) -> None:
    """Overlays of several images in one PNG, each titled (e.g. true label, probability)."""
    from skin_cancer.evaluation.figures import pyplot, save_figure

    plt = pyplot()
    rows = max(1, -(-len(items) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, heatmap, title) in zip(axes.ravel(), items):
        ax.imshow(overlay(image, heatmap))
        ax.set_title(title, fontsize=8)
    save_figure(fig, path)


def pick_examples(y_true: np.ndarray, prob: np.ndarray, threshold: float | None, per_kind: int = 4) -> list[int]:
    """Indices of the most confident correct and the most confident wrong predictions
    (`per_kind` of each where there are that many); K classes: confidence is the top probability."""
    predicted = outputs.predicted_classes(prob, threshold)
    confidence = outputs.confidence(prob, threshold)
    correct = np.flatnonzero(predicted == y_true.astype(int))
    wrong = np.flatnonzero(predicted != y_true.astype(int))
    by_confidence = lambda idx: idx[np.argsort(-confidence[idx], kind="stable")][:per_kind]  # noqa: E731
    return [*by_confidence(correct), *by_confidence(wrong)]


def gradcam_grid(
    model, frame, prob: np.ndarray, threshold: float | None, class_names: list[str], image_size: int, path: Path
) -> None:
    """A grid of Grad-CAM overlays (of the predicted class) for a few correct and wrong predictions
    of a manifest frame."""
    from skin_cancer.data.tf_input import load_image

    items = []
    predicted, explained = outputs.predicted_classes(prob, threshold), outputs.explained_classes(prob, threshold)
    shown = outputs.shown_probability(prob)
    for i in pick_examples(frame.label_index.to_numpy(), prob, threshold):
        image = load_image(frame.path.iloc[i], image_size).numpy()
        heatmap, _ = grad_cam(model, image, explained[i])
        verdict = "right" if predicted[i] == frame.label_index.iloc[i] else "WRONG"
        items.append((image, heatmap, f"{verdict}: true {frame.label.iloc[i]}\np={shown[i]:.2f} ({class_names[predicted[i]]})"))
    save_grid(items, path)

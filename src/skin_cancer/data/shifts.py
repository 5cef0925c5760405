"""Fixed changes of an image's look, the ways dermoscopy collections differ from one another (a
dermatoscope's dark vignette, how much of the frame the lesion fills, squashed aspect, light,
colour, sharpness, compression, hair): the shortcut stress test scores a model under each.
Every change takes and returns an RGB PIL image of the same size and is deterministic."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

Change = Callable[[Image.Image], Image.Image]


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def radial_distance(height: int, width: int) -> np.ndarray:
    """Each pixel's distance from the centre in units of half the shorter side (1 at the middle of
    the nearer edges, about 1.41 in the corners of a square)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.hypot(y - (height - 1) / 2, x - (width - 1) / 2) / (min(height, width) / 2)


def vignette(radius: float, softness: float) -> Change:
    """A dermatoscope's dark circle: black beyond `radius`, fading in over `softness` (both in units
    of half the shorter side; radius 1 touches the edges and darkens only the corners)."""

    def change(image: Image.Image) -> Image.Image:
        pixels = _array(image)
        r = radial_distance(*pixels.shape[:2])
        t = np.clip((r - radius) / max(softness, 1e-6), 0.0, 1.0)
        mask = 1.0 - t * t * (3 - 2 * t)  # smoothstep from 1 inside to 0 outside
        return _image(pixels * mask[..., None])

    return change


def zoom(scale: float) -> Change:
    """`scale` > 1: the centre 1/scale of the frame, enlarged back (the lesion fills the frame);
    `scale` < 1: the image shrunk and surrounded by its own mirror image (a smaller lesion)."""

    def change(image: Image.Image) -> Image.Image:
        w, h = image.size
        if scale >= 1:
            cw, ch = w / scale, h / scale
            box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
            return image.resize((w, h), Image.Resampling.BICUBIC, box=box)
        small = np.asarray(image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS))
        top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
        pad = ((top, h - small.shape[0] - top), (left, w - small.shape[1] - left), (0, 0))
        return Image.fromarray(np.pad(small, pad, mode="symmetric"))

    return change


def squash(aspect: float) -> Change:
    """Content squashed horizontally to `aspect` of its width (ISIC 2017's 4:3 originals stored
    square: 0.75): stretched vertically by 1 / aspect and cropped back to the frame."""

    def change(image: Image.Image) -> Image.Image:
        w, h = image.size
        tall = image.resize((w, round(h / aspect)), Image.Resampling.BICUBIC)
        top = (tall.height - h) // 2
        return tall.crop((0, top, w, top + h))

    return change


def light(gain: float) -> Change:
    """Every pixel times `gain` (< 1 darker, > 1 brighter)."""
    return lambda image: _image(_array(image) * gain)


def gamma(exponent: float) -> Change:
    """255 * (x / 255) ** exponent: > 1 darkens mid-tones, < 1 lifts them."""
    return lambda image: _image(255.0 * (_array(image) / 255.0) ** exponent)


def contrast_saturation(factor: float) -> Change:
    """Contrast, then saturation, both scaled by `factor`."""
    return lambda image: ImageEnhance.Color(ImageEnhance.Contrast(image.convert("RGB")).enhance(factor)).enhance(factor)


def colour_cast(red: float = 1.12, blue: float = 0.85) -> Change:
    """A warmer camera: red scaled up, blue down."""
    return lambda image: _image(_array(image) * np.array([red, 1.0, blue], dtype=np.float32))


def downscale(factor: float) -> Change:
    """A lower-resolution copy: `factor` times smaller (the input pipeline resizes it back)."""

    def change(image: Image.Image) -> Image.Image:
        size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
        return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)

    return change


def resize_to(width: int, height: int) -> Change:
    """Stored at a fixed size, as a collection's copy is (HAM10000: 200x150)."""
    return lambda image: image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


def hair(strands: int) -> Change:
    """`strands` dark, slightly curved hairs across the image, drawn at random positions seeded by the
    image's own pixels (the same image always gets the same hairs)."""

    def change(image: Image.Image) -> Image.Image:
        image = image.convert("RGB").copy()
        w, h = image.size
        rng = np.random.default_rng(zlib.crc32(image.tobytes()))
        draw = ImageDraw.Draw(image)
        for _ in range(strands):
            start, end = rng.uniform(0, 1, 2) * (w, h), rng.uniform(0, 1, 2) * (w, h)
            bend = (start + end) / 2 + rng.normal(0, 0.15, 2) * (w, h)
            t = np.linspace(0, 1, 24)[:, None]
            points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end  # a quadratic Bezier curve
            shade = tuple(int(v) for v in rng.uniform(15, 60, 3))
            draw.line([tuple(p) for p in points], fill=shade, width=max(1, round(min(w, h) / 150 * rng.uniform(0.8, 1.6))))
        return image

    return change


# Name -> (change or None, JPEG quality of the saved copy or None for lossless PNG). The shortcut
# stress test (bench/stress.py) scores every model under each.
STRESSES: dict[str, tuple[Change | None, int | None]] = {
    "none": (None, None),
    "vignette_r1.0": (vignette(1.0, 0.15), None),
    "vignette_r0.9_soft": (vignette(0.9, 0.3), None),
    "vignette_r0.8_hard": (vignette(0.8, 0.05), None),
    "zoom_in_1.5x": (zoom(1.5), None),
    "zoom_out_0.7x": (zoom(0.7), None),
    "squash_0.75": (squash(0.75), None),
    "darker_0.7x": (light(0.7), None),
    "brighter_1.3x": (light(1.3), None),
    "gamma_1.5": (gamma(1.5), None),
    "contrast_saturation_1.5x": (contrast_saturation(1.5), None),
    "colour_cast": (colour_cast(), None),
    "hair_12": (hair(12), None),
    "downscale_2x": (downscale(2), None),
    "downscale_3x": (downscale(3), None),
    "jpeg_90": (None, 90),
    "jpeg_50": (None, 50),
    "ham10000_copy": (resize_to(200, 150), 90),
}


def write_stressed(paths, name: str, folder: Path) -> list[str]:
    """Every image of `paths` under stress `name` (a key of STRESSES), written into `folder` (PNG, or
    JPEG at the stress's quality); returns the new paths in order. "none" returns the paths."""
    change, quality = STRESSES[name]
    if change is None and quality is None:
        return [str(p) for p in paths]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, path in enumerate(paths):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        target = folder / (f"{i}.jpg" if quality else f"{i}.png")
        (change(image) if change else image).save(target, **({"quality": quality} if quality else {}))
        written.append(str(target))
    return written

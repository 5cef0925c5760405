"""One image file: the guarded way in (a decompression-bomb limit, a reason for every refusal),
decoding to RGB, converting what tf.data cannot read, and the record of a decoded image."""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

PRIMARY = "data"  # the collection name of the data itself; data.sources entries go by their own names
# Formats tf.io.decode_image reads; any other format, or any non-RGB mode, is converted to PNG.
# BMP is converted too: TensorFlow refuses 16-bit and compressed BMPs that Pillow reads as RGB.
TF_FORMATS = {"JPEG", "PNG", "GIF"}


class BadImage(ValueError):
    """One file cannot be used as an image; the message is the recorded reason."""


@dataclass
class ImageRecord:
    split: str
    label: str
    source: str  # the original file
    path: str  # the file the input pipeline decodes: the source, or its RGB conversion
    sha256: str
    width: int
    height: int
    mode: str
    format: str
    key: str = ""  # path relative to the data root: how the audit names the image
    collection: str = PRIMARY  # or the name of the data.sources entry it comes from
    phash: str = ""
    copy_cluster: int = -1  # images that are copies of each other (audit)
    group: int = -1  # copies plus same-lesion / same-patient images; never straddles train and validation
    leak: str = ""  # test images: "copy" / "group" when train shares a copy / a group with it (audit)
    found_in: str = ""  # other datasets (audit.against) holding a copy of the image, ";"-separated
    named_group: bool = field(default=False, repr=False)  # its collection names its lesions (not written)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode: grayscale, 16-bit and float, palette, RGBA, CMYK, ..."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and pixels.max(initial=0) <= 1.0:
            pixels = pixels * 255.0
        elif pixels.max(initial=0) > 255:
            pixels = pixels / 257.0  # 16-bit range onto 8-bit
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


@contextlib.contextmanager
def open_image(path: Path, max_pixels: int | None) -> Iterator[Image.Image]:
    """The one guarded way into an image file (prepare, serving and the audit): the opened, not yet
    decoded, image, refused with a BadImage naming the reason when the file is empty, larger than
    `max_pixels` (data.max_image_pixels: a decompression bomb?) or cannot be decoded, also when
    that happens while the caller decodes it inside the block."""
    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise BadImage(
                        f"too large: {width}x{height} = {width * height} pixels, the limit is {max_pixels} "
                        "(data.max_image_pixels; a decompression bomb?)"
                    )
                yield image
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not a recognised image (unknown format or corrupt header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"corrupt or truncated image: {error}") from None


def decode(path: Path, max_pixels: int) -> tuple[Image.Image, Image.Image]:
    """(original, RGB) images of a file, fully decoded; raises BadImage with the reason."""
    with open_image(path, max_pixels) as image:
        image.load()
        return image, to_rgb(image)


def read_image(path: Path, split: str, label: str, max_pixels: int, converted: tuple[Path, Path]) -> ImageRecord:
    """Decode one file into a record; files tf.data cannot decode as RGB get a PNG conversion.

    `converted` is (folder written now, folder it will be published as).
    """
    original, rgb = decode(path, max_pixels)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    target = path
    if original.format not in TF_FORMATS or original.mode != "RGB":
        # The content hash in the name keeps equal names from different classes apart.
        relative = Path(split) / label / f"{path.stem}-{digest[:12]}.png"
        (converted[0] / relative).parent.mkdir(parents=True, exist_ok=True)
        rgb.save(converted[0] / relative)
        target = converted[1] / relative
    return ImageRecord(
        split=split,
        label=label,
        source=str(path),
        path=str(target),
        sha256=digest,
        width=original.width,
        height=original.height,
        mode=original.mode,
        format=str(original.format),
    )


def read_all(frame: pd.DataFrame, max_pixels: int, converted: tuple[Path, Path], strict: bool, workers: int = 4):
    """Decode every file of a collection frame (path, key, split, label, collection) in parallel;
    returns (records, skipped) with a reason per skipped file."""
    jobs = list(frame[["path", "key", "split", "label", "collection"]].itertuples(index=False))
    records, skipped = [], []

    def work(job):
        try:
            record = read_image(Path(job.path), job.split, job.label, max_pixels, converted)
        except BadImage as error:
            if strict:
                raise BadImage(f"{job.path}: {error} (data.strict=true)") from None
            return None, {"path": job.path, "split": job.split, "label": job.label, "reason": str(error)}
        record.key, record.collection = job.key, job.collection
        return record, None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for record, skip in tqdm(pool.map(work, jobs), total=len(jobs), desc="prepare: decoding", unit="img", disable=None):
            (records.append(record) if record else skipped.append(skip))
    return records, skipped

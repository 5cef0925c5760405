"""The stress test's image changes: each does what its name says, keeps the size, and is deterministic."""

import numpy as np
import pytest
from PIL import Image

from skin_cancer.data import shifts


@pytest.fixture
def lesion():
    """A grey 'skin' with a dark disc in the middle, 120x90."""
    y, x = np.mgrid[0:90, 0:120]
    pixels = np.full((90, 120, 3), 190, np.uint8)
    pixels[np.hypot(y - 45, x - 60) < 15] = (90, 50, 40)
    return Image.fromarray(pixels)


def disc_share(image: Image.Image) -> float:
    return float((np.asarray(image)[..., 0] < 140).mean())


def test_a_vignette_darkens_the_corners_and_leaves_the_centre(lesion):
    for radius, softness in ((1.0, 0.15), (0.8, 0.05)):
        out = np.asarray(shifts.vignette(radius, softness)(lesion), dtype=float)
        assert out[0, 0].max() == 0 and out[-1, -1].max() == 0  # corners black
        assert (out[45, 60] == np.asarray(lesion)[45, 60]).all()  # the lesion untouched
    smaller = np.asarray(shifts.vignette(0.8, 0.05)(lesion)).mean()
    assert smaller < np.asarray(shifts.vignette(1.0, 0.15)(lesion)).mean()


def test_zoom_changes_how_much_of_the_frame_the_lesion_fills(lesion):
    share = disc_share(lesion)
    assert disc_share(shifts.zoom(1.5)(lesion)) == pytest.approx(share * 1.5**2, rel=0.1)
    assert disc_share(shifts.zoom(0.7)(lesion)) < share


def test_squash_narrows_the_lesion_and_keeps_its_height(lesion):
    out = np.asarray(shifts.squash(0.75)(lesion))[..., 0] < 140
    rows, cols = np.nonzero(out)
    assert (np.ptp(cols) + 1) / (np.ptp(rows) + 1) == pytest.approx(0.75, abs=0.08)


def test_light_and_gamma_move_brightness_the_named_way(lesion):
    mean = np.asarray(lesion).mean()
    assert np.asarray(shifts.light(0.7)(lesion)).mean() < mean < np.asarray(shifts.light(1.3)(lesion)).mean()
    assert np.asarray(shifts.gamma(1.5)(lesion)).mean() < mean


def test_hair_draws_a_few_dark_strands_the_same_way_every_time(lesion):
    a, b = (np.asarray(shifts.hair(12)(lesion)) for _ in range(2))
    changed = (a != np.asarray(lesion)).any(axis=-1).mean()
    assert (a == b).all() and 0.01 < changed < 0.3
    assert a[(a != np.asarray(lesion)).any(axis=-1)].mean() < 100


@pytest.mark.parametrize("name", list(shifts.STRESSES))
def test_every_stress_keeps_an_rgb_image_and_is_deterministic(lesion, name):
    change, quality = shifts.STRESSES[name]
    if change is None:
        assert name == "none" or quality is not None
        return
    a, b = change(lesion), change(lesion)
    assert a.mode == "RGB" and (np.asarray(a) == np.asarray(b)).all()
    if not name.startswith(("downscale", "ham10000")):
        assert a.size == lesion.size
    if name != "none":
        assert a.size != lesion.size or not (np.asarray(a) == np.asarray(lesion)).all()

import random

import numpy as np
import torch

from scripts.synthetic_shapes import shapes_crop, shapes_image
from scripts.train import CropSampler


def test_shapes_images_have_flat_areas_and_sharp_edges():
    rng = random.Random(0)
    grey = 0
    for _ in range(20):
        im = shapes_image(64, rng)
        assert im.shape == (64, 64, 3) and im.dtype == np.float32
        assert 0 <= im.min() and im.max() <= 1
        grey += bool(np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 1], im[..., 2]))
        step = np.abs(np.diff(im.mean(2), axis=1))
        # Mostly smooth, the way shaded surfaces are, but not one smooth ramp.
        assert np.median(step) < 0.02
    assert 3 <= grey <= 15  # 40% are grey, exactly (the loss scores those on the planes' mean)
    edges = [np.abs(np.diff(shapes_image(64, rng).mean(2), axis=1)).max() for _ in range(20)]
    assert np.mean(np.array(edges) > 0.1) > 0.7  # most crops hold a visible edge


def test_shapes_are_reproducible():
    a, b = shapes_crop(48, random.Random(5)), shapes_crop(48, random.Random(5))
    assert a.shape == (3, 48, 48) and torch.equal(a, b)


def test_crops_get_shapes_only_when_asked():
    random.seed(0)
    flat = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    plain = CropSampler([flat], 64, 0.0, "cpu", stretch=0.0).batch(6)
    shaped = CropSampler([flat], 64, 0.0, "cpu", shapes=1.0).batch(6)
    assert plain.std() == 0
    assert torch.equal(shaped * 255, (shaped * 255).round())  # still 8-bit
    assert (shaped.flatten(1).std(1) > 0).all()  # every crop was replaced

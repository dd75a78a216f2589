import random

import numpy as np
import torch

from scripts.synthetic_text import _colour, _luma, draw_text, text_layers
from scripts.train import CropSampler


def test_layers_are_masks_with_contrasting_ink():
    rng = random.Random(0)
    grey = np.full(3, 0.5, np.float32)
    visible = 0
    for _ in range(30):
        layers = text_layers(96, grey, rng)
        assert 1 <= len(layers) <= 6
        for cover, colour in layers:
            assert cover.shape == (96, 96) and cover.min() >= 0 and cover.max() <= 1
            assert colour.shape == (3,) and 0 <= colour.min() and colour.max() <= 1
        visible += layers[-1][0].max() > 0.5  # the top layer is glyphs
    assert visible >= 27  # glyphs may run off the crop, but rarely all of them
    for _ in range(50):  # ink always stands out from what is under it
        assert abs(_luma(_colour(rng, avoid=grey)) - 0.5) >= 0.3


def test_crops_get_text_only_when_asked():
    random.seed(0)
    flat = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    plain = CropSampler([flat], 64, 0.0, "cpu").batch(4)
    texty = CropSampler([flat], 64, 0.0, "cpu", text=1.0).batch(4)
    assert plain.std() == 0
    assert torch.equal(texty * 255, (texty * 255).round())  # still 8-bit
    edges = (texty[..., 1:] - texty[..., :-1]).abs().amax(dim=(1, 2, 3))
    assert (edges > 0.2).all()  # every crop got glyph edges


def test_draw_text_is_reproducible():
    x = torch.rand(3, 48, 48)
    assert torch.equal(draw_text(x, random.Random(3)), draw_text(x, random.Random(3)))

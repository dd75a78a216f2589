"""Synthetic text drawn onto training crops (scripts.train --text).

The allowed training photos (shared/data/SOURCES.md) hold almost no text, yet text is what
people judge a compressed image by, what ROI coding boosts, and where the codec trails x265
most (docs/roi.md, docs/training.md). This draws random strings in Pillow's built-in scalable
font (no font files needed, so it runs on the bare GPU machine too): 1 to 3 lines per crop,
sizes 7 to 48 px, any colour, sometimes on a plain sign-like box, sometimes turned by 90
degrees. It returns a coverage mask and a colour per layer; the caller blends them in.
"""

from __future__ import annotations

import math
import random
import string
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

CHARS = string.ascii_letters + string.digits + "      .,:-!?&%/()"


@lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _colour(rng: random.Random, avoid: np.ndarray | None = None) -> np.ndarray:
    """A random RGB colour in [0, 1]; with `avoid`, one whose luma differs from it by >= 0.3."""
    while True:
        c = np.array([rng.random() for _ in range(3)], np.float32)
        if rng.random() < 0.4:  # black, white and greys are the commonest text colours
            c[:] = rng.choice((0.0, 1.0, rng.random()))
        if avoid is None or abs(_luma(c) - _luma(avoid)) >= 0.3:
            return c


def _luma(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def text_layers(size: int, background: np.ndarray, rng: random.Random) -> list[tuple[np.ndarray, np.ndarray]]:
    """(coverage HxW float32 in [0, 1], RGB colour) layers, bottom first, for one size x size crop
    whose mean colour is `background`."""
    layers = []
    for _ in range(rng.randint(1, 3)):
        px = int(round(math.exp(rng.uniform(math.log(7), math.log(48)))))
        text = "".join(rng.choice(CHARS) for _ in range(rng.randint(2, 24))).strip() or "A"
        font = _font(px)
        x0, y0, x1, y1 = font.getbbox(text)
        pos = (rng.randint(-x1 // 2, size - x1 // 2), rng.randint(-y0 - px // 2, size - y1 + px // 2))
        ink = Image.new("L", (size, size), 0)
        ImageDraw.Draw(ink).text(pos, text, fill=255, font=font)
        box = None
        if rng.random() < 0.3:  # a sign or label: the text sits on a plain box
            pad = max(2, px // 4)
            box = Image.new("L", (size, size), 0)
            ImageDraw.Draw(box).rectangle((pos[0] + x0 - pad, pos[1] + y0 - pad, pos[0] + x1 + pad,
                                           pos[1] + y1 + pad), fill=255)
        turn = rng.random() < 0.15
        under = background
        if box is not None:
            under = _colour(rng)
            layers.append((_mask(box, turn), under))
        layers.append((_mask(ink, turn), _colour(rng, avoid=under)))
    return layers


def _mask(img: Image.Image, turn: bool) -> np.ndarray:
    m = np.asarray(img, np.float32) / 255.0
    return np.ascontiguousarray(np.rot90(m)) if turn else m


def draw_text(x, rng: random.Random):
    """Draw synthetic text onto one crop x (3 x H x W torch tensor in [0, 1], any device); returns it."""
    size = x.shape[-1]
    mean = x.mean(dim=(1, 2)).cpu().numpy()
    for cover, colour in text_layers(size, mean, rng):
        a = torch.from_numpy(cover).to(x.device)[None]
        x = x * (1 - a) + torch.from_numpy(colour).to(x.device)[:, None, None] * a
    return x

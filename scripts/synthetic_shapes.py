"""Synthetic "dead leaves" crops of shaded shapes (scripts.train --shapes).

The allowed training photos (shared/data/SOURCES.md) are mostly nature wallpapers: fine texture,
few long sharp edges between smooth shaded surfaces. Architecture, products, graphics and
screen content are made of exactly those, and that is where the codec trails x265 most (the
grey architecture photo eval08 alone adds ~13 points to the eval set's BD-rate, docs/training.md
session 14). This draws occluding shapes (polygons, ellipses, thick curved bands), each filled
with a linear gradient, antialiased by 2x supersampling, sometimes defocused, sometimes noisy,
sometimes grey. Shape sizes follow a power law, as in the dead-leaves model of natural images.
Nothing is read from disk, so it runs on the bare GPU machine too.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter


def _colour(rng: random.Random, gray: bool) -> np.ndarray:
    """A random colour in [0, 1]: a grey level plus a chroma offset that is mostly small, as in
    photographs of painted or built things."""
    c = np.full(3, rng.random(), np.float32)
    if not gray:
        c += (np.array([rng.random() for _ in range(3)], np.float32) - 0.5) * rng.random() ** 2 * 1.6
    return np.clip(c, 0, 1)


def _gradient(s: int, box: tuple[int, int, int, int], rng: random.Random, gray: bool) -> np.ndarray:
    """The part `box` (x0, y0, x1, y1) of an s x s x 3 linear gradient between two random colours
    (flat for a third of them)."""
    x0, y0, x1, y1 = box
    a = _colour(rng, gray)
    if rng.random() < 0.33:
        return np.broadcast_to(a, (y1 - y0, x1 - x0, 3))
    b = np.clip(a + (_colour(rng, gray) - 0.5) * rng.uniform(0.2, 1.2), 0, 1)
    th, span = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.5) * s
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u = ((xx - s / 2) * math.cos(th) + (yy - s / 2) * math.sin(th)) / span + 0.5
    u = np.clip(u, 0, 1)[..., None]
    return a * (1 - u) + b * u


def _shape_mask(s: int, rng: random.Random) -> Image.Image:
    """A binary mask of one polygon, ellipse or curved band, its size drawn from a power law."""
    m = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(m)
    r = s * math.exp(rng.uniform(math.log(0.02), math.log(0.6)))
    cx, cy = rng.uniform(-0.1, 1.1) * s, rng.uniform(-0.1, 1.1) * s
    kind = rng.random()
    if kind < 0.4:  # polygon: 3 to 8 vertices at sorted angles, so it never self-intersects
        n = rng.randint(3, 8)
        angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
        d.polygon([(cx + r * rng.uniform(0.4, 1) * math.cos(a), cy + r * rng.uniform(0.4, 1) * math.sin(a))
                   for a in angles], fill=255)
    elif kind < 0.7:  # ellipse at any angle, as a 64-gon
        ax, ay, th = r, r * rng.uniform(0.2, 1), rng.uniform(0, math.pi)
        d.polygon([(cx + ax * math.cos(a) * math.cos(th) - ay * math.sin(a) * math.sin(th),
                    cy + ax * math.cos(a) * math.sin(th) + ay * math.sin(a) * math.cos(th))
                   for a in np.linspace(0, 2 * math.pi, 64, endpoint=False)], fill=255)
    else:  # a thick band along a sine-bent line across the crop
        th, amp, freq = rng.uniform(0, math.pi), rng.uniform(0, 0.3) * s, rng.uniform(0.2, 2.0)
        ph, width = rng.uniform(0, 2 * math.pi), max(2, int(r * rng.uniform(0.05, 0.5)))
        pts = []
        for v in np.linspace(-0.8, 0.8, 48):
            off = amp * math.sin(2 * math.pi * freq * v + ph)
            pts.append((cx + v * s * math.cos(th) - off * math.sin(th), cy + v * s * math.sin(th) + off * math.cos(th)))
        d.line(pts, fill=255, width=width, joint="curve")
    return m


def shapes_image(size: int, rng: random.Random) -> np.ndarray:
    """One size x size x 3 float32 image in [0, 1] of occluding shaded shapes."""
    s = 2 * size  # drawn at 2x and box-downscaled, so edges are antialiased
    gray = rng.random() < 0.4
    img = np.array(_gradient(s, (0, 0, s, s), rng, gray), np.float32)
    for _ in range(rng.randint(6, 40)):
        mask = _shape_mask(s, rng)
        box = mask.getbbox()
        if box is None:
            continue
        x0, y0, x1, y1 = box
        m = np.asarray(mask.crop(box), np.float32)[..., None] / 255.0
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - m) + _gradient(s, box, rng, gray) * m
    pil = Image.fromarray((img * 255).round().astype(np.uint8)).resize((size, size), Image.Resampling.BOX)
    if rng.random() < 0.4:  # defocus or a soft lens
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    out = np.asarray(pil, np.float32) / 255.0
    if rng.random() < 0.3:  # sensor noise, the same on every plane for a grey image
        sigma = rng.uniform(0.5, 3.0) / 255.0
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, sigma, (size, size, 1 if gray else 3))
        out = np.clip(out + noise.astype(np.float32), 0, 1)
    return out


def shapes_crop(size: int, rng: random.Random, device="cpu") -> torch.Tensor:
    """shapes_image as a 3 x size x size torch tensor in [0, 1] on `device`."""
    return torch.from_numpy(np.ascontiguousarray(shapes_image(size, rng).transpose(2, 0, 1))).to(device)

"""Region-of-interest level maps on the latent grid, and their ROI_MAP section.

A level map holds one small integer per latent position (a 16x16 pixel cell): 0 background,
1 fine texture, 2 text, 3 faces. Each level carries a quality offset: its cells are quantised
with the learned gain vectors of quality q + offset instead of q (the model's own per-channel
step sizes for that rate, not one scalar step), so faces and text get finer steps and the
background coarser ones. The offsets travel in the section, so the encoder may choose them per
image: it sizes the text and face offset by how much of the image's error those cells hold
(roi_offset). The entropy model stays exact without retraining: the residual
(y - mean) times a per-channel step s is Gaussian with scale sigma * s. How the steps are
derived from the offsets, bit-exactly, is LatentCoder.quant_map's job.

Section payload (format version 3): n_levels:u8, n_levels x offset:i16 (big-endian, hundredths of
a quality point), then the levels of the padded grid, context-coded with rANS
(codec.grid_coding). Version-2 files stored the levels as one byte per cell, zlib-compressed
(about twice the size); version-1 files carried a scalar step multiplier per level instead of the
offset (u16, m * 4096). Both still decode.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import FormatError, InputError
from .grid_coding import decode_grid, encode_grid

LEVEL_NAMES = ("background", "texture", "text", "face")
# Quality offset per level at strength 1 (scaled by the strength): background coarser, ROI finer.
# The encoder replaces the text and face offsets by roi_offset's, chosen per image.
LEVEL_OFFSETS = (-6.25, 0.0, 25.0, 25.0)
ROI_MU = 0.8  # weight of the region's PSNR against the whole image's at strength 1 (roi_offset)
MAX_ROI_OFFSET = 50.0  # quality points; above it the smallest file stops fitting low targets
CELL = 16  # pixels per latent position
MAX_STRENGTH = 3.0
DEFAULT_STRENGTH = 1.0
PAD = 64  # the model's total downsampling (g_a, then h_a): images are padded to its multiples


def check_strength(strength) -> float:
    """strength as a float in [0, MAX_STRENGTH], else InputError (NaN fails too)."""
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise InputError(f"roi_strength must be a number, got {strength!r}") from None
    if not 0.0 <= strength <= MAX_STRENGTH:
        raise InputError(f"roi strength must be in [0, {MAX_STRENGTH:g}], got {strength:g}")
    return strength


def roi_offset(error_share: float, strength: float, lmbda_span: float) -> float:
    """Quality offset of the text and face levels for an image whose text and face cells hold
    error_share of its squared error when coded without ROI.

    The encoder maximises whole-image PSNR + mu * PSNR of the region (both in dB, mu = ROI_MU *
    strength). Its gradient weights the region's squared error by w = 1 + mu / error_share
    against the rest's: a region that holds little of the error buys many dB for little
    whole-image loss, while one that is most of the picture (a sign filling the frame) buys
    few at a large loss. A model trained on bpp + lambda(t) * MSE with lambda log-spaced over
    lmbda_span (max / min) codes weight w as lambda * w, ln(w) / ln(lmbda_span) * 100 quality
    points finer. A fixed offset (LEVEL_OFFSETS) is the same rule with w the same everywhere.
    """
    strength = check_strength(strength)
    if strength == 0:
        return 0.0
    w = 1.0 + ROI_MU * strength / max(float(error_share), 1e-6)
    return min(MAX_ROI_OFFSET, 100.0 * math.log(w) / math.log(lmbda_span))


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """The latent grid of an image, which is also its ROI grid (one CELL per position)."""
    return math.ceil(height / PAD) * (PAD // CELL), math.ceil(width / PAD) * (PAD // CELL)


@dataclass
class RoiMap:
    levels: np.ndarray  # uint8, latent-grid shape (h, w)
    offsets: tuple[int, ...] = ()  # per level, quality offset in hundredths of a quality point
    v1_multipliers: tuple[int, ...] | None = None  # version-1 files: scalar step per level * 4096

    @classmethod
    def from_levels(cls, levels: np.ndarray, strength: float, region_offset: float | None = None) -> "RoiMap":
        """Offsets LEVEL_OFFSETS * strength; region_offset (quality points, e.g. roi_offset's)
        replaces the text and face levels' where given."""
        strength = check_strength(strength)
        offsets = [strength * o for o in LEVEL_OFFSETS]
        if region_offset is not None:
            offsets[2:] = [region_offset] * (len(offsets) - 2)
        return cls(np.ascontiguousarray(levels, dtype=np.uint8), tuple(int(round(o * 100)) for o in offsets))

    @property
    def n_levels(self) -> int:
        return len(self.v1_multipliers or self.offsets)

    def quality_offsets(self) -> dict[str, float] | None:
        """Each level's quality offset in quality points (None for version-1 files)."""
        if self.v1_multipliers is not None:
            return None
        return {LEVEL_NAMES[i]: o / 100 for i, o in enumerate(self.offsets)}

    def shares(self) -> dict[str, float]:
        n = self.levels.size
        return {LEVEL_NAMES[i]: round(float((self.levels == i).sum()) / n, 4)
                for i in range(self.n_levels)}

    def pack(self) -> bytes:
        head = bytes([len(self.offsets)]) + b"".join(struct.pack(">h", o) for o in self.offsets)
        return head + encode_grid(self.levels, len(self.offsets))

    @classmethod
    def unpack(cls, payload: bytes, shape: tuple[int, int], version: int = 3) -> "RoiMap":
        if not payload:
            raise FormatError("ROI_MAP section is empty")
        n = payload[0]
        if not 1 <= n <= len(LEVEL_NAMES) or len(payload) < 1 + 2 * n:
            raise FormatError("ROI_MAP section is malformed")
        values = tuple(struct.unpack(f">{n}{'H' if version == 1 else 'h'}", payload[1:1 + 2 * n]))
        if version == 1 and min(values) == 0:
            raise FormatError("ROI_MAP multiplier of zero")
        if version > 1 and max(abs(v) for v in values) > 100 * 100:
            raise FormatError("ROI_MAP quality offset out of range")
        body = payload[1 + 2 * n:]
        levels = _decode_levels(body, shape, n) if version >= 3 else _inflate_levels(body, shape)
        if levels.max(initial=0) >= n:
            raise FormatError("ROI_MAP level out of range")
        if version == 1:
            return cls(levels.copy(), v1_multipliers=values)
        return cls(levels.copy(), values)


def _decode_levels(body: bytes, shape: tuple[int, int], n: int) -> np.ndarray:
    try:
        return decode_grid(body, shape, n)
    except (RuntimeError, ValueError, OverflowError) as e:
        raise FormatError(f"ROI_MAP levels could not be decoded ({e})") from None


def _inflate_levels(body: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Format versions 1 and 2: one byte per cell, zlib-compressed."""
    expected = shape[0] * shape[1]
    try:
        d = zlib.decompressobj()
        raw = d.decompress(body, expected + 1)
    except zlib.error as e:
        raise FormatError(f"ROI_MAP levels are not valid zlib data ({e})") from None
    if len(raw) != expected or not d.eof:
        raise FormatError("ROI_MAP level grid does not match the image size")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def pixel_to_grid(levels: np.ndarray, grid_shape: tuple[int, int], min_cover: float = 0.0) -> np.ndarray:
    """Bring a per-pixel level map (H, W) to the latent grid (cells of CELL x CELL pixels).

    A cell takes the highest level l whose pixels (those at l or above) cover more than
    min_cover of it; min_cover 0 is a max-pool (any pixel counts).
    """
    gh, gw = grid_shape
    h, w = levels.shape
    padded = np.zeros((gh * CELL, gw * CELL), dtype=np.uint8)
    padded[:h, :w] = levels
    cells = padded.reshape(gh, CELL, gw, CELL)
    if min_cover <= 0:
        return cells.max(axis=(1, 3))
    out = np.zeros((gh, gw), dtype=np.uint8)
    for lvl in range(1, int(padded.max(initial=0)) + 1):
        share = (cells >= lvl).mean(axis=(1, 3))
        out[share > min_cover] = lvl
    return out

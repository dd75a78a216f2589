"""Region-of-interest level maps on the latent grid, and their ROI_MAP section.

A level map holds one small integer per latent position (a 16x16 pixel cell): 0 background,
1 fine texture, 2 text, 3 faces. Each level has a quantisation step multiplier m: the latent
residual (y - mean) is coded as round((y - mean) * m), so m > 1 quantises finer. The entropy model
stays exact without retraining: the residual times m is Gaussian with scale sigma * m, which is
the scale the coder is given (see LatentCoder). Multipliers travel as u16 in units of 1/4096, so
encoder and decoder use bit-identical values.

Section payload: n_levels:u8, n_levels x multiplier:u16 (big-endian, m * 4096), then the
levels as one byte per cell (row-major, ceil(H/16) x ceil(W/16) rounded up to the padded grid),
zlib-compressed.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import FormatError, InputError

LEVEL_NAMES = ("background", "texture", "text", "face")
# Step exponent per level: m = 2 ** (strength * weight). Background gets coarser, ROI finer.
LEVEL_WEIGHTS = (-0.5, 0.0, 1.0, 1.0)
MULT_ONE = 4096
CELL = 16  # pixels per latent position
MAX_STRENGTH = 3.0  # 2 ** 3 * MULT_ONE still fits the u16 multiplier field


@dataclass
class RoiMap:
    levels: np.ndarray  # uint8, latent-grid shape (h, w)
    multipliers: tuple[int, ...]  # per level, in units of 1/MULT_ONE

    @classmethod
    def from_levels(cls, levels: np.ndarray, strength: float) -> "RoiMap":
        if not (0.0 <= strength <= MAX_STRENGTH):
            raise InputError(f"roi strength must be in [0, {MAX_STRENGTH:g}], got {strength:g}")
        mults = tuple(int(round(2.0 ** (strength * w) * MULT_ONE)) for w in LEVEL_WEIGHTS)
        return cls(np.ascontiguousarray(levels, dtype=np.uint8), mults)

    def multiplier_map(self):
        """float32 tensor [1, 1, h, w] of exact multipliers (k / 4096)."""
        import torch

        table = torch.tensor(self.multipliers, dtype=torch.float32) / MULT_ONE
        return table[torch.from_numpy(self.levels.astype(np.int64))][None, None]

    def shares(self) -> dict[str, float]:
        n = self.levels.size
        return {LEVEL_NAMES[i]: round(float((self.levels == i).sum()) / n, 4)
                for i in range(len(self.multipliers))}

    def pack(self) -> bytes:
        head = bytes([len(self.multipliers)]) + b"".join(struct.pack(">H", m) for m in self.multipliers)
        return head + zlib.compress(self.levels.tobytes(), 9)

    @classmethod
    def unpack(cls, payload: bytes, shape: tuple[int, int]) -> "RoiMap":
        if not payload:
            raise FormatError("ROI_MAP section is empty")
        n = payload[0]
        if not 1 <= n <= len(LEVEL_NAMES) or len(payload) < 1 + 2 * n:
            raise FormatError("ROI_MAP section is malformed")
        mults = tuple(struct.unpack(f">{n}H", payload[1:1 + 2 * n]))
        if min(mults) == 0:
            raise FormatError("ROI_MAP multiplier of zero")
        expected = shape[0] * shape[1]
        try:
            d = zlib.decompressobj()
            raw = d.decompress(payload[1 + 2 * n:], expected + 1)
        except zlib.error as e:
            raise FormatError(f"ROI_MAP levels are not valid zlib data ({e})") from None
        if len(raw) != expected or not d.eof:
            raise FormatError("ROI_MAP level grid does not match the image size")
        levels = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
        if levels.max(initial=0) >= n:
            raise FormatError("ROI_MAP level out of range")
        return cls(levels.copy(), mults)


def pixel_to_grid(levels: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """Max-pool a per-pixel level map (H, W) to the latent grid (cells of CELL x CELL pixels)."""
    gh, gw = grid_shape
    h, w = levels.shape
    padded = np.zeros((gh * CELL, gw * CELL), dtype=np.uint8)
    padded[:h, :w] = levels
    return padded.reshape(gh, CELL, gw, CELL).max(axis=(1, 3))

"""Fine texture: cells whose local gradient energy is high, where blur is most visible."""

from __future__ import annotations

import numpy as np


def texture_mask(rgb: np.ndarray, cell: int = 32, quantile: float = 0.75,
                 floor: float = 12.0) -> np.ndarray:
    """Boolean (H, W) mask: cells in the top (1 - quantile) of mean |gradient|, above `floor`.

    32-px cells (two latent cells) keep the map blobby, so its section stays ~100 bytes.
    """
    g = rgb.astype(np.float32).mean(axis=2)
    gx = np.abs(np.diff(g, axis=1, append=g[:, -1:]))
    gy = np.abs(np.diff(g, axis=0, append=g[-1:, :]))
    energy = gx + gy
    h, w = energy.shape
    gh, gw = -(-h // cell), -(-w // cell)
    padded = np.zeros((gh * cell, gw * cell), np.float32)
    padded[:h, :w] = energy
    cells = padded.reshape(gh, cell, gw, cell).mean(axis=(1, 3))
    thr = max(float(np.quantile(cells, quantile)), floor)
    mask = np.kron(cells > thr, np.ones((cell, cell), bool))
    return mask[:h, :w]

"""Region analysis: which pixels deserve finer quantisation.

`level_map(rgb, roi)` returns a per-pixel uint8 map with the levels of codec.roi_map
(0 background, 1 fine texture, 2 text, 3 faces), or None for roi="none".
roi is "auto" (detectors), "none", a path to a grayscale mask, or an HxW array: values 0..3 are
levels as they are; a mask using 0..255 is mapped by round(v / 85) (0, 85, 170, 255 -> 0..3).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ..errors import InputError
from ..roi_map import LEVEL_NAMES
from .faces import detect_faces
from .text import available as text_available, detect_text
from .texture import texture_mask

TEXTURE, TEXT, FACE = 1, 2, 3


def auto_levels(rgb: np.ndarray, detectors: tuple[str, ...] = ("faces", "text", "texture")) -> np.ndarray:
    h, w = rgb.shape[:2]
    levels = np.zeros((h, w), np.uint8)
    if "texture" in detectors:
        levels[texture_mask(rgb)] = TEXTURE
    if "text" in detectors:
        for x0, y0, x1, y1 in detect_text(rgb):
            levels[y0:y1, x0:x1] = np.maximum(levels[y0:y1, x0:x1], TEXT)
    if "faces" in detectors:
        for x0, y0, x1, y1 in detect_faces(rgb):
            levels[y0:y1, x0:x1] = FACE
    return levels


def mask_levels(mask, shape: tuple[int, int]) -> np.ndarray:
    if isinstance(mask, (str, os.PathLike)):
        try:
            with Image.open(mask) as m:
                mask = np.asarray(m.convert("L"))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read ROI mask: {e}") from None
    a = np.asarray(mask)
    if a.ndim == 3:
        a = a[:, :, 0]
    if a.shape != shape:
        raise InputError(f"ROI mask is {a.shape[1]}x{a.shape[0]}, image is {shape[1]}x{shape[0]}")
    if a.max(initial=0) <= len(LEVEL_NAMES) - 1:
        return a.astype(np.uint8)
    return np.clip(np.round(a.astype(np.float64) / 85.0), 0, 3).astype(np.uint8)


def level_map(rgb: np.ndarray, roi) -> np.ndarray | None:
    if roi is None or (isinstance(roi, str) and roi == "none"):
        return None
    if isinstance(roi, str) and roi == "auto":
        return auto_levels(rgb)
    return mask_levels(roi, rgb.shape[:2])


def overlay(rgb: np.ndarray, levels: np.ndarray) -> Image.Image:
    """The image with each level tinted (texture green, text blue, faces red) for inspection."""
    colors = np.array([[0, 0, 0], [0, 200, 0], [0, 80, 255], [255, 0, 0]], np.float32)
    tint = colors[levels]
    alpha = np.where(levels > 0, 0.45, 0.0)[:, :, None]
    out = rgb.astype(np.float32) * (1 - alpha) + tint * alpha
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


__all__ = ["level_map", "auto_levels", "mask_levels", "overlay", "text_available", "detect_faces",
           "detect_text", "texture_mask"]

"""Input normalisation (anything Pillow reads, numpy arrays) and output images.

Every input becomes a `SourceImage`: 8-bit RGB planes for the model, an optional 8-bit alpha
plane, and what to give back on decode (channels 1/3/4). Policies (see README):
- EXIF orientation is applied before coding.
- 16-bit input (PNG/TIFF I;16, uint16 arrays) is rounded to 8 bits (v / 257); the header keeps
  bit_depth = 16 to say so, and the decoded image is 8-bit.
- Grayscale (L, 1, I, I;16, F) is coded through the RGB model with R = G = B and decoded as "L".
- RGB(A) whose three planes are equal is `gray` too: it decodes as RGB(A) with equal planes, each
  the mean of the decoded ones, so the model's small colour errors are averaged away.
- Alpha (RGBA, LA, PA, P with transparency) is kept losslessly in its own section; LA decodes as RGBA.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .container import DEFAULT_MAX_PIXELS, MAX_SIDE
from .errors import ImageTooLargeError, InputError


@dataclass
class SourceImage:
    rgb: np.ndarray  # H x W x 3 uint8
    alpha: np.ndarray | None  # H x W uint8
    channels: int  # 1, 3 or 4: what decode returns
    bit_depth: int  # 8 or 16: the source's
    gray: bool = False  # the three planes are equal (always so when channels == 1)

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def _to8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _check_size(w: int, h: int, max_pixels: int | None) -> None:
    if w < 1 or h < 1:
        raise InputError(f"image is empty ({w}x{h})")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise ImageTooLargeError(f"image side exceeds {MAX_SIDE} px ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(
            f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels} "
            "(raise it with max_pixels / --max-pixels)")


def _equal_planes(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2]))


def _color(rgb: np.ndarray, alpha: np.ndarray | None, depth: int) -> SourceImage:
    return SourceImage(rgb, alpha, 4 if alpha is not None else 3, depth, _equal_planes(rgb))


def _gray(a8: np.ndarray, depth: int) -> SourceImage:
    return SourceImage(np.repeat(a8[:, :, None], 3, axis=2), None, 1, depth, True)


def from_array(a: np.ndarray, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> SourceImage:
    if not isinstance(a, np.ndarray):
        raise InputError(f"expected a numpy array, got {type(a).__name__}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {a.shape}")
    _check_size(a.shape[1], a.shape[0], max_pixels)
    if a.dtype == np.uint16:
        depth, a = 16, _to8(a)
    elif a.dtype == np.uint8:
        depth = 8
    else:
        raise InputError(f"array dtype must be uint8 or uint16, got {a.dtype}")
    if a.ndim == 2:
        return _gray(a, depth)
    alpha = np.ascontiguousarray(a[:, :, 3]) if a.shape[2] == 4 else None
    return _color(np.ascontiguousarray(a[:, :, :3]), alpha, depth)


def from_pil(img: Image.Image, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> SourceImage:
    _check_size(img.width, img.height, max_pixels)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not make an otherwise readable image fail
        pass
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img, dtype=np.int64)
        depth = 16 if mode.startswith("I;16") or a.max(initial=0) > 255 else 8
        a8 = _to8(np.clip(a, 0, 65535)) if depth == 16 else np.clip(a, 0, 255).astype(np.uint8)
        return _gray(a8, depth)
    if mode == "F":
        return _gray(np.clip(np.round(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8), 8)
    if mode in ("1", "L"):
        return _gray(np.asarray(img.convert("L")), 8)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in img.info)
    if has_alpha:
        a = np.asarray(img.convert("RGBA"))
        return _color(np.ascontiguousarray(a[:, :, :3]), np.ascontiguousarray(a[:, :, 3]), 8)
    return _color(np.asarray(img.convert("RGB")), None, 8)


def load(image, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> SourceImage:
    """A path, bytes, file object, PIL image or numpy array -> SourceImage."""
    if isinstance(image, np.ndarray):
        return from_array(image, max_pixels)
    if isinstance(image, Image.Image):
        return from_pil(image, max_pixels)
    if isinstance(image, (bytes, bytearray)):
        image = io.BytesIO(image)
    elif isinstance(image, (str, os.PathLike)):
        if not Path(image).is_file():
            raise InputError(f"input file not found: {image}")
    elif not hasattr(image, "read"):
        raise InputError(f"cannot read an image from {type(image).__name__}")
    try:
        with Image.open(image) as img:
            _check_size(img.width, img.height, max_pixels)
            img.load()
            return from_pil(img, max_pixels)
    except UnidentifiedImageError:  # its message names a BytesIO object, not the input
        raise InputError("cannot read image: not an image format Pillow reads "
                         "(PNG, JPEG, WebP, TIFF, BMP, PPM ...)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read image: {e}") from None
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(str(e)) from None


def to_pil(rgb: np.ndarray, alpha: np.ndarray | None, channels: int, gray: bool = False) -> Image.Image:
    """The decoded planes as the source's kind of image; gray (or channels 1): the planes' mean."""
    if channels == 1 or gray:
        mean = np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
        if channels == 1:
            return Image.fromarray(mean, "L")
        rgb = np.repeat(mean[:, :, None], 3, axis=2)
    if channels == 4:
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    return Image.fromarray(rgb, "RGB")


def encode_alpha(alpha: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(alpha, "L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def decode_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    from .errors import FormatError

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            if img.size != (width, height) or img.mode != "L":
                raise FormatError("ALPHA section does not match the image size")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise FormatError(f"ALPHA section is not a valid PNG ({e})") from None

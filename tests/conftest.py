import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """451x300 RGB photo (odd width)."""
    return Image.open(ASSETS / "chelsea.png").convert("RGB")


@pytest.fixture(scope="session")
def small(photo) -> Image.Image:
    """A 67x45 crop: odd sizes on both sides, far from multiples of 64."""
    return photo.crop((100, 80, 167, 125))


@pytest.fixture(scope="session")
def small_file(small) -> bytes:
    import codec

    return codec.encode(small, quality=50)


def psnr(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-12)))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()

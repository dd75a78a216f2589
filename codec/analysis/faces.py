"""Face boxes from OpenCV's Haar cascades (frontal + both profiles), shipped inside opencv."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def _cascade(name: str):
    import cv2

    c = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if c.empty():
        raise RuntimeError(f"OpenCV cascade {name} could not be loaded")
    return c


def detect_faces(rgb: np.ndarray, min_size: int = 16) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1), x1/y1 exclusive, each grown by 15% to cover hair and chin."""
    import cv2

    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    h, w = gray.shape
    boxes = []
    for name, flip in (("haarcascade_frontalface_default.xml", False),
                       ("haarcascade_profileface.xml", False),
                       ("haarcascade_profileface.xml", True)):
        img = gray[:, ::-1] if flip else gray
        found = _cascade(name).detectMultiScale(img, scaleFactor=1.1, minNeighbors=5,
                                                minSize=(min_size, min_size))
        for x, y, bw, bh in (found if len(found) else []):
            if flip:
                x = w - x - bw
            g = int(0.15 * max(bw, bh))
            boxes.append((max(0, x - g), max(0, y - g), min(w, x + bw + g), min(h, y + bh + g)))
    return boxes

"""Face boxes: MTCNN (facenet-pytorch, weights inside the package) when it is installed, else
OpenCV's Haar cascades (frontal + both profiles), which ship inside opencv."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

GROW = 0.15  # each box grows by this share of its side, to cover hair and chin
# MTCNN runs at a recall-first operating point for small faces: a missed face loses the whole ROI
# gain, while a false box of a small face costs only a few cells of finer steps. Its stock
# thresholds (stages 0.6, 0.7, 0.7; keep p >= 0.9) miss the 16-18 px, half-turned faces of the
# eval set, which it scores ~0.5. Large boxes still need p >= 0.9: MTCNN is sure of real large
# faces, and a false large box would be expensive (docs/roi.md, session 7).
MTCNN_STAGES = (0.3, 0.4, 0.4)  # P-, R- and O-net thresholds
MTCNN_MIN_PROB = 0.9
MTCNN_SMALL_MIN_PROB = 0.45  # for boxes whose longer side is at most MTCNN_SMALL px
MTCNN_SMALL = 32
MTCNN_MIN_SIZE = 10


def available() -> list[str]:
    """Installed face detectors, strongest first."""
    try:
        import facenet_pytorch  # noqa: F401
    except ImportError:
        return ["haar"]
    return ["mtcnn", "haar"]


def _grow(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> tuple[int, int, int, int]:
    g = GROW * max(x1 - x0, y1 - y0)
    return (max(0, int(x0 - g)), max(0, int(y0 - g)), min(w, int(np.ceil(x1 + g))), min(h, int(np.ceil(y1 + g))))


@lru_cache(maxsize=None)
def _cascade(name: str):
    import cv2

    c = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if c.empty():
        raise RuntimeError(f"OpenCV cascade {name} could not be loaded")
    return c


def _haar(rgb: np.ndarray, min_size: int) -> list[tuple[int, int, int, int]]:
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
            boxes.append(_grow(x, y, x + bw, y + bh, w, h))
    return boxes


@lru_cache(maxsize=None)
def _mtcnn(min_size: int):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, min_face_size=min_size, thresholds=list(MTCNN_STAGES), device="cpu")


def _mtcnn_boxes(rgb: np.ndarray, min_size: int) -> list[tuple[int, int, int, int]]:
    import torch
    from PIL import Image

    h, w = rgb.shape[:2]
    with torch.no_grad():
        found, probs = _mtcnn(min_size).detect(Image.fromarray(np.ascontiguousarray(rgb)))
    if found is None:
        return []
    keep = []
    for b, p in zip(found, probs):
        small = max(b[2] - b[0], b[3] - b[1]) <= MTCNN_SMALL
        if p is not None and p >= (MTCNN_SMALL_MIN_PROB if small else MTCNN_MIN_PROB):
            keep.append(_grow(*b, w, h))
    return keep


def detect_faces(rgb: np.ndarray, min_size: int | None = None,
                 detector: str = "auto") -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1), x1/y1 exclusive, grown to cover hair and chin.

    detector: "mtcnn", "haar", or "auto" (the strongest installed). min_size: smallest face side
    in pixels (default: 10 for MTCNN, 16 for Haar, below which its false hits multiply).
    """
    if detector == "auto":
        detector = available()[0]
    if detector == "mtcnn":
        return _mtcnn_boxes(rgb, min_size or MTCNN_MIN_SIZE)
    if detector == "haar":
        return _haar(rgb, min_size or 16)
    raise ValueError(f"unknown face detector {detector!r} (have: {', '.join(available())})")

"""Text boxes from PP-OCR's detection network via rapidocr-onnxruntime (optional extra `roi`)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def available() -> bool:
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except Exception:
        return False
    return True


@lru_cache(maxsize=1)
def _engine():
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def detect_text(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Axis-aligned boxes (x0, y0, x1, y1) around detected text lines; [] if the detector is missing."""
    if not available():
        return []
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    result, _ = _engine()(bgr, use_det=True, use_cls=False, use_rec=False)
    h, w = rgb.shape[:2]
    boxes = []
    for poly in result or []:
        pts = np.asarray(poly[0] if isinstance(poly, (list, tuple)) and len(poly) and
                         np.ndim(poly[0]) == 2 else poly, dtype=np.float64).reshape(-1, 2)
        x0, y0 = np.floor(pts.min(axis=0)).astype(int)
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
        boxes.append((max(0, x0), max(0, y0), min(w, x1), min(h, y1)))
    return boxes

"""Find the highest quality whose real encoded size is at or under a byte budget.

Bisection on quality over actual encodes (sizes are monotone in quality up to coding noise,
so the search keeps the best *verified* candidate rather than trusting monotonicity).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from .errors import RateControlError

T = TypeVar("T")


def search_quality(encode_at: Callable[[float], T], max_bytes: int,
                   lo: float = 0.0, hi: float = 100.0, tol: float = 0.25,
                   size: Callable[[T], int] = len) -> T:
    """encode_at(quality) -> file bytes (or anything `size` measures in bytes).
    Returns the largest-quality encoding that fits."""
    if max_bytes <= 0:
        raise RateControlError(f"target size must be positive, got {max_bytes} bytes")
    top = encode_at(hi)
    if size(top) <= max_bytes:
        return top
    best = encode_at(lo)
    if size(best) > max_bytes:
        raise RateControlError(
            f"target of {max_bytes} bytes is below the smallest file for this image "
            f"({size(best)} bytes at quality {lo:g})")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        data = encode_at(round(mid, 2))
        if size(data) <= max_bytes:
            lo, best = mid, data
        else:
            hi = mid
    return best

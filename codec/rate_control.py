"""Find the highest quality whose real encoded size is at or under a byte budget.

Bisection on quality over actual encodes (sizes are monotone in quality up to coding noise,
so the search keeps the best *verified* candidate rather than trusting monotonicity).
"""

from __future__ import annotations

from typing import Callable

from .errors import RateControlError


def search_quality(encode_at: Callable[[float], bytes], max_bytes: int,
                   lo: float = 0.0, hi: float = 100.0, tol: float = 0.25) -> bytes:
    """encode_at(quality) -> file bytes. Returns the largest-quality encoding that fits."""
    if max_bytes <= 0:
        raise RateControlError(f"target size must be positive, got {max_bytes} bytes")
    top = encode_at(hi)
    if len(top) <= max_bytes:
        return top
    best = encode_at(lo)
    if len(best) > max_bytes:
        raise RateControlError(
            f"target of {max_bytes} bytes is below the smallest file for this image "
            f"({len(best)} bytes at quality {lo:g})")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        data = encode_at(round(mid, 2))
        if len(data) <= max_bytes:
            lo, best = mid, data
        else:
            hi = mid
    return best

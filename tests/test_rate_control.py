import pytest

from codec.errors import RateControlError
from codec.rate_control import search_quality


def fake(q: float) -> bytes:
    return b"x" * int(100 + 10 * q)  # 100 .. 1100 bytes, monotone


def test_lands_at_or_under_and_close():
    for target in (150, 500, 1099):
        out = search_quality(fake, target)
        assert len(out) <= target
        assert len(out) >= target - 10


def test_target_above_max_gives_best_quality():
    assert len(search_quality(fake, 10_000)) == 1100


def test_unreachable_target():
    with pytest.raises(RateControlError, match="smallest file"):
        search_quality(fake, 50)
    with pytest.raises(RateControlError):
        search_quality(fake, 0)

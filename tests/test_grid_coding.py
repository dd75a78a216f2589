import zlib

import numpy as np
import pytest

from codec import grid_coding
from codec.grid_coding import decode_grid, encode_grid


def blocky_map(rng, shape=(40, 52)):
    """A level map like the detectors': a few rectangles on background, texture in 2x2 blocks."""
    g = np.kron(rng.random((shape[0] // 2, shape[1] // 2)) < 0.3, np.ones((2, 2), np.uint8)).astype(np.uint8)
    for level in (2, 3, 2):
        y, x = rng.integers(0, shape[0] - 6), rng.integers(0, shape[1] - 10)
        g[y:y + rng.integers(2, 6), x:x + rng.integers(3, 10)] = level
    return g


@pytest.mark.parametrize("n", [1, 2, 4])
def test_round_trip(n):
    rng = np.random.default_rng(n)
    for shape in [(4, 4), (1, 16), (17, 1), (13, 17)]:
        g = rng.integers(0, n, shape).astype(np.uint8)
        assert np.array_equal(decode_grid(encode_grid(g, n), shape, n), g)


def test_level_maps_cost_about_half_of_zlib():
    rng = np.random.default_rng(0)
    maps = [blocky_map(rng) for _ in range(5)]
    ours = sum(len(encode_grid(g, 4)) for g in maps)
    deflate = sum(len(zlib.compress(g.tobytes(), 9)) for g in maps)
    for g in maps:
        assert np.array_equal(decode_grid(encode_grid(g, 4), g.shape, 4), g)
    assert ours < 0.75 * deflate
    flat = np.zeros((135, 240), np.uint8)  # a 4K background-only map
    assert len(encode_grid(flat, 4)) <= 16


def test_bad_input():
    with pytest.raises(ValueError):
        encode_grid(np.full((2, 2), 4, np.uint8), 4)
    with pytest.raises(ValueError):
        encode_grid(np.zeros((3, 5), np.uint8), 4)  # fewer cells than any latent grid
    with pytest.raises(ValueError):
        decode_grid(b"\0" * 4, (8, 8), 4)  # shorter than the 8-byte flush
    # Garbage decodes to valid symbols or raises; it never reads past the buffer.
    rng = np.random.default_rng(1)
    for _ in range(20):
        junk = rng.integers(0, 256, int(rng.integers(8, 40)), dtype=np.uint8).tobytes()
        try:
            g = decode_grid(junk, (60, 60), 4)
        except ValueError:
            continue
        assert g.max() < 4


def test_sequence_round_trip_and_context_checks():
    rng = np.random.default_rng(1)
    contexts = [0] * 40 + [1] * 40
    symbols = list(rng.integers(0, 3, 40)) + list(rng.integers(5, 9, 40))
    data = grid_coding.encode_sequence(symbols, contexts, 9, 2)
    assert grid_coding.decode_sequence(data, contexts, 9, 2) == symbols
    with pytest.raises(ValueError):
        grid_coding.encode_sequence(symbols, contexts, 9, 1)  # a context out of range
    with pytest.raises(ValueError):
        grid_coding.decode_sequence(data[:4], contexts, 9, 2)

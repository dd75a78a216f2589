"""Lossless coding of small symbol sets with compressai's rANS coder and adaptive integer tables:
a 2-D grid (the ROI level map) and a sequence with known contexts (the synthesis adaptation).

Grid cells go in raster order. Each is coded with an adaptive frequency table chosen by its
already-coded neighbours (left, up, up-left, up-right; 0 outside the grid), so the large flat
areas of a level map cost a small fraction of a bit per cell. Both sides update the tables the
same way with integer arithmetic only, so the probabilities, and the bits, agree exactly.
The rANS coder itself is compressai's (16-bit precision, its escape symbol never used here).
Spec: docs/bitstream.md, "ROI_MAP" and "SYNTHESIS_ADAPT".
"""

from __future__ import annotations

import numpy as np

PRECISION = 16
INIT_COUNT = 1  # every symbol starts possible in every context
INCREMENT = 8  # weight of each coded cell against the uniform start: tables learn within a few cells
# compressai 1.2.8's encoder aborts the process ("double free or corruption") when given a single
# symbol; 2 and more worked here. We did not read why; an output buffer sized by the symbol count
# would do it. Every latent grid has at least 4 x 4 cells, so we require that.
MIN_CELLS = 16


def _context(grid: np.ndarray, i: int, j: int, n: int) -> int:
    """Index of the frequency table for cell (i, j): its four causal neighbours in base n."""
    w = grid.shape[1]
    left = grid[i, j - 1] if j else 0
    up = grid[i - 1, j] if i else 0
    up_left = grid[i - 1, j - 1] if i and j else 0
    up_right = grid[i - 1, j + 1] if i and j + 1 < w else 0
    return ((int(left) * n + int(up)) * n + int(up_left)) * n + int(up_right)


def _cdf(counts: list[int]) -> list[int]:
    """compressai's quantised CDF for these counts: every symbol keeps at least one slot, and the
    escape symbol compressai appends takes one slot (it is never coded)."""
    total, room = sum(counts), (1 << PRECISION) - 1 - len(counts)
    freqs = [1 + c * room // total for c in counts]
    freqs[freqs.index(max(freqs))] += (1 << PRECISION) - 1 - sum(freqs)
    cdf = [0]
    for f in freqs + [1]:
        cdf.append(cdf[-1] + f)
    return cdf


def encode_grid(grid: np.ndarray, n: int) -> bytes:
    """rANS string of a 2-D grid of symbols 0 .. n-1."""
    grid = np.asarray(grid)
    if grid.ndim != 2 or (grid.size and int(grid.max()) >= n):
        raise ValueError(f"grid must be 2-D with symbols below {n}")
    if grid.size < MIN_CELLS:
        raise ValueError(f"grid must have at least {MIN_CELLS} cells")
    contexts = [_context(grid, i, j, n) for i in range(grid.shape[0]) for j in range(grid.shape[1])]
    return encode_sequence(grid.reshape(-1), contexts, n, n ** 4)


def decode_grid(data: bytes, shape: tuple[int, int], n: int) -> np.ndarray:
    """Inverse of encode_grid. A corrupt string decodes to some grid of valid symbols or raises
    ValueError; it never reads past its buffer."""
    grid = np.zeros(shape, dtype=np.uint8)
    decode = _AdaptiveDecoder(data, n, n ** 4, grid.size)
    for i in range(shape[0]):
        for j in range(shape[1]):  # each cell's context needs its decoded neighbours
            grid[i, j] = decode(_context(grid, i, j, n))
    return grid


def _ans():
    """compressai's rANS coder, imported on first use (`import codec` and `codec info` skip it),
    through compressai_parts so that it comes without torch."""
    from . import compressai_parts  # noqa: F401
    from compressai import ans

    return ans


def encode_sequence(symbols, contexts, n: int, n_contexts: int) -> bytes:
    """rANS string of symbols 0 .. n-1, each coded with the adaptive table of its context
    (0 .. n_contexts-1, known to both sides). At least MIN_CELLS symbols."""
    symbols, contexts = [int(s) for s in symbols], [int(c) for c in contexts]
    if len(symbols) != len(contexts) or len(symbols) < MIN_CELLS:
        raise ValueError(f"need as many contexts as symbols, and at least {MIN_CELLS}")
    if min(symbols) < 0 or max(symbols) >= n or min(contexts) < 0 or max(contexts) >= n_contexts:
        raise ValueError(f"symbols must lie in [0, {n}) and contexts in [0, {n_contexts})")
    tables = [[INIT_COUNT] * n for _ in range(n_contexts)]
    cdfs = []
    for s, c in zip(symbols, contexts):
        cdfs.append(_cdf(tables[c]))
        tables[c][s] += INCREMENT
    idx = list(range(len(symbols)))
    return _ans().RansEncoder().encode_with_indexes(symbols, idx, cdfs, [n + 2] * len(cdfs), [0] * len(cdfs))


def decode_sequence(data: bytes, contexts, n: int, n_contexts: int) -> list[int]:
    """Inverse of encode_sequence; a corrupt string raises ValueError or gives valid symbols."""
    decode = _AdaptiveDecoder(data, n, n_contexts, len(contexts))
    return [decode(c) for c in contexts]


class _AdaptiveDecoder:
    """Decodes one symbol at a time with the adaptive table of the context it is given, updating
    the tables as the encoder did."""

    def __init__(self, data: bytes, n: int, n_contexts: int, n_symbols: int):
        if len(data) < 8:  # the coder's flush alone writes 8 bytes
            raise ValueError("rANS string too short")
        self.n, self.tables = n, [[INIT_COUNT] * n for _ in range(n_contexts)]
        self.dec = _ans().RansDecoder()
        # compressai's decoder does not bounds-check its reads. No symbol is rarer than 2^-16, so a
        # symbol consumes at most 16 bits: zero padding of 2 bytes per symbol keeps every read inside.
        self.dec.set_stream(bytes(data) + bytes(2 * n_symbols + 64))

    def __call__(self, context: int) -> int:
        counts = self.tables[context]
        s = self.dec.decode_stream([0], [_cdf(counts)], [self.n + 2], [0])[0]
        if not 0 <= s < self.n:
            raise ValueError("symbol out of range")
        counts[s] += INCREMENT
        return s

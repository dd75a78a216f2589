"""codec.file_info: what `codec info` reads from a file without a model."""

import pytest

from codec.errors import CorruptFileError
from codec.file_info import read_info


def test_info_comes_from_the_file_bytes(small_file, small):
    info = read_info(small_file)
    assert (info["width"], info["height"]) == small.size
    assert info["bytes"] == len(small_file)
    assert info["bpp"] == pytest.approx(8 * len(small_file) / (small.size[0] * small.size[1]))
    assert sum(info["sections"].values()) == len(small_file)  # the header's bytes included
    assert info["roi_area_shares"] is None and info["roi_quality_offsets"] is None
    assert not info["synthesis_adapted"]


def test_a_truncated_file_is_a_clear_error(small_file):
    with pytest.raises(CorruptFileError):
        read_info(small_file[:-10])

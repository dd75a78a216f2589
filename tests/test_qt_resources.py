import struct
import zlib

import pytest

from scripts.qt_resources import read_rcc


def _rcc(version: int, compress_second: bool = True) -> bytes:
    """A bundle laid out as rcc writes it: / -> dir "a" -> files "x.txt" and "y.bin"."""
    entries = ["", "a", "x.txt", "y.bin"]
    names, name_off = b"", {}
    for e in entries[1:]:
        name_off[e] = len(names)
        names += struct.pack(">HI", len(e), 0) + e.encode("utf-16-be")
    plain, second = b"hello", bytes(range(200)) * 3
    data = struct.pack(">I", len(plain)) + plain
    off_second = len(data)
    stored = struct.pack(">I", len(second)) + zlib.compress(second) if compress_second else second
    data += struct.pack(">I", len(stored)) + stored
    extra = b"" if version == 1 else b"\0" * 8

    def directory(name, count, first):
        return struct.pack(">IHII", name_off.get(name, 0), 2, count, first) + extra

    def file(name, flags, offset):
        return struct.pack(">IHHHI", name_off[name], flags, 0, 0, offset) + extra

    tree = (directory("", 1, 1) + directory("a", 2, 2) + file("x.txt", 0, 0)
            + file("y.bin", 1 if compress_second else 0, off_second))
    header_len = 20 if version < 3 else 24
    t, d = header_len, header_len + len(tree)
    n = d + len(data)
    header = b"qres" + struct.pack(">IIII", version, t, d, n) + (b"\0" * 4 if version >= 3 else b"")
    return header + tree + data + names, second


@pytest.mark.parametrize("version", [1, 2, 3])
def test_reads_plain_and_zlib_files(version):
    blob, second = _rcc(version)
    assert read_rcc(blob) == {"/a/x.txt": b"hello", "/a/y.bin": second}


def test_uncompressed_blob_is_returned_as_is():
    blob, second = _rcc(2, compress_second=False)
    assert read_rcc(blob)["/a/y.bin"] == second


def test_rejects_other_files():
    with pytest.raises(ValueError, match="qres"):
        read_rcc(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)

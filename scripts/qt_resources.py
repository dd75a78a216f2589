"""Read the files out of a compiled Qt resource bundle (.rcc), as GCompris ships its photos.

    files = read_rcc(Path("explore_monuments.rcc").read_bytes())   # {"/gcompris/src/...": bytes}

The format (qtbase src/corelib/io/qresource.cpp): a header ("qres", version, then the offsets of
the tree, data and names tables, big-endian), a tree of fixed-size nodes, names as UTF-16BE with
a length and a hash, and data blobs with a 4-byte length. A blob flagged compressed is zlib with a
4-byte uncompressed size in front; zstd blobs (flag 4) are refused, as this reader has no zstd.
"""

from __future__ import annotations

import struct
import zlib

_COMPRESSED, _DIRECTORY, _ZSTD = 1, 2, 4


def read_rcc(blob: bytes) -> dict[str, bytes]:
    """Every file in the bundle by its resource path ("/dir/name")."""
    if blob[:4] != b"qres":
        raise ValueError("not a Qt resource bundle (no 'qres' magic)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    if version not in (1, 2, 3):
        raise ValueError(f"unknown Qt resource version {version}")
    node_size = 14 if version == 1 else 22  # version 2 added an 8-byte modification time

    def name(offset: int) -> str:
        p = names + offset
        n = struct.unpack(">H", blob[p:p + 2])[0]
        return blob[p + 6:p + 6 + 2 * n].decode("utf-16-be")  # skip the 4-byte hash

    files: dict[str, bytes] = {}
    stack = [(0, "")]
    while stack:
        index, parent = stack.pop()
        p = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[p:p + 6])
        path = f"{parent}/{name(name_offset)}" if index else ""
        if flags & _DIRECTORY:
            count, first = struct.unpack(">II", blob[p + 6:p + 14])
            stack.extend((c, path) for c in range(first, first + count))
            continue
        q = data + struct.unpack(">I", blob[p + 10:p + 14])[0]  # after country and language
        payload = blob[q + 4:q + 4 + struct.unpack(">I", blob[q:q + 4])[0]]
        if flags & _ZSTD:
            raise ValueError(f"{path}: zstd-compressed resources are not supported")
        files[path] = zlib.decompress(payload[4:]) if flags & _COMPRESSED else payload
    return files

"""The `.lic` container: reading and writing headers and typed, CRC-protected sections.

Pure bytes in, bytes out; knows nothing about models or pixels. Spec: docs/bitstream.md.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import CorruptFileError, FormatError, ImageTooLargeError, UnsupportedError

MAGIC = b"\x89LIC"
FORMAT_VERSION = 5  # 5: POST_FILTER cross-plane taps and direction classes; 4: header flag GRAY; 3: ROI_MAP levels context-coded (2: zlib; 1: scalar steps)
EXTENSION = ".lic"
MAX_SIDE = 65535
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_QUALITY = 50.0  # the API's and the CLI's default; the header stores what a file used


class Section(IntEnum):
    END = 0x00
    HYPER = 0x01
    LATENT = 0x02
    ALPHA = 0x03
    ROI_MAP = 0x04
    VQ_INDICES = 0x05
    VIDEO_FRAME = 0x06
    DECODER_HINTS = 0x81
    SYNTHESIS_ADAPT = 0x82  # per-image scale and bias of g_s's channels; skippable
    POST_FILTER = 0x83  # per-image Wiener filter of the decoded pixels; skippable


# Header flags (format version 4 on; earlier files carry 0).
FLAG_GRAY = 0x01  # the source's colour planes are equal: decode outputs their mean in each
KNOWN_FLAGS = FLAG_GRAY

KNOWN_V1 = {Section.HYPER, Section.LATENT, Section.ALPHA, Section.ROI_MAP}
KNOWN = KNOWN_V1 | {Section.SYNTHESIS_ADAPT, Section.POST_FILTER}  # the sections this decoder reads


@dataclass
class Header:
    model_id: str
    weights_hash: bytes
    width: int
    height: int
    channels: int
    bit_depth: int
    quality: float
    flags: int = 0
    version: int = FORMAT_VERSION  # as read from the file; files are always written at FORMAT_VERSION

    @property
    def gray(self) -> bool:
        """Decode outputs the mean of the decoded planes: a grayscale source, or the GRAY flag."""
        return self.channels == 1 or bool(self.flags & FLAG_GRAY)

    def validate(self) -> None:
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise FormatError(f"invalid image size {self.width}x{self.height}")
        if self.channels not in (1, 3, 4):
            raise FormatError(f"invalid channel count {self.channels}")
        if self.bit_depth not in (8, 16):
            raise FormatError(f"invalid bit depth {self.bit_depth}")
        if not 0 <= self.quality <= 100:
            raise FormatError(f"invalid quality {self.quality}")
        if not 1 <= self.version <= FORMAT_VERSION:
            raise FormatError(f"invalid format version {self.version}")
        if not 0 <= self.flags <= 0xFF or self.flags & ~KNOWN_FLAGS:
            raise FormatError(f"unknown header flags 0x{self.flags:02x}")
        if len(self.weights_hash) != 8 or not self.model_id.isascii() or not 0 < len(self.model_id) < 256:
            raise FormatError("invalid model id or weights hash")


@dataclass
class Container:
    header: Header
    sections: dict[int, bytes] = field(default_factory=dict)


# ---- primitives (also used by sections that store integers: codec.post_filter) ----------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise CorruptFileError(f"file is truncated (in {what})")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        n = 0
        for i in range(5):
            b = self.u8(what)
            n |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return n
        raise FormatError(f"malformed length field in {what}")


def _section_name(t: int) -> str:
    try:
        return Section(t).name
    except ValueError:
        return f"0x{t:02x}"


# ---- writing ---------------------------------------------------------------------------------
def pack_header(h: Header) -> bytes:
    h.validate()
    return header_bytes(h)


def header_bytes(h: Header) -> bytes:
    """The header exactly as written, without validation (the fuzzer writes invalid ones)."""
    mid = h.model_id.encode("ascii")
    body = (bytes([len(mid)]) + mid + h.weights_hash + varint(h.width) + varint(h.height)
            + bytes([h.channels, h.bit_depth]) + struct.pack(">H", round(h.quality * 100))
            + bytes([h.flags]))
    head = MAGIC + bytes([h.version]) + varint(len(body)) + body
    return head + struct.pack(">I", zlib.crc32(head))


def pack_section(t: int, payload: bytes) -> bytes:
    unit = bytes([t]) + varint(len(payload)) + payload
    return unit + struct.pack(">I", zlib.crc32(unit))


def pack(c: Container) -> bytes:
    parts = [pack_header(c.header)]
    for t in sorted(c.sections):
        parts.append(pack_section(t, c.sections[t]))
    parts.append(pack_section(Section.END, b""))
    return b"".join(parts)


# ---- reading ---------------------------------------------------------------------------------
def unpack_header(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Header, int]:
    """Parse and check the header; returns it with the offset of the first section."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise FormatError("empty input: not a .lic file")
    if data[:4] != MAGIC:
        if len(data) < 4 and MAGIC.startswith(data):
            raise CorruptFileError("file is truncated (in magic)")
        raise FormatError("not a .lic file (bad magic bytes)")
    r = Reader(data)
    r.take(4, "magic")
    version = r.u8("header")
    if version > FORMAT_VERSION:
        raise UnsupportedError(
            f"file format version {version} is newer than this decoder supports ({FORMAT_VERSION}); "
            "upgrade codec")
    if version == 0:
        raise FormatError("invalid format version 0")
    n = r.varint("header")
    body_start = r.pos
    body = Reader(r.take(n, "header"))
    (crc,) = struct.unpack(">I", r.take(4, "header CRC"))
    if zlib.crc32(data[:body_start + n]) != crc:
        raise CorruptFileError("header CRC mismatch: the file is corrupt")
    try:
        mid_len = body.u8("header")
        model_id = body.take(mid_len, "header").decode("ascii")
        weights_hash = body.take(8, "header")
        width, height = body.varint("header"), body.varint("header")
        channels, bit_depth = body.u8("header"), body.u8("header")
        (q,) = struct.unpack(">H", body.take(2, "header"))
        flags = body.u8("header")
    except (CorruptFileError, UnicodeDecodeError) as e:
        raise FormatError(f"malformed header ({e})") from None
    h = Header(model_id, weights_hash, width, height, channels, bit_depth, q / 100, flags, version)
    h.validate()
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(raise it with max_pixels / --max-pixels)")
    return h, r.pos


def unpack(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Container:
    header, pos = unpack_header(data, max_pixels)
    r = Reader(bytes(data))
    r.pos = pos
    sections: dict[int, bytes] = {}
    last = -1
    while True:
        start = r.pos
        t = r.u8("section type")
        name = _section_name(t)
        length = r.varint(f"{name} section")
        if length > len(data) - r.pos:
            raise CorruptFileError(f"file is truncated ({name} section claims {length} bytes)")
        payload = r.take(length, f"{name} section")
        (crc,) = struct.unpack(">I", r.take(4, f"{name} section CRC"))
        if zlib.crc32(data[start:r.pos - 4]) != crc:
            raise CorruptFileError(f"{name} section CRC mismatch: the file is corrupt")
        if t == Section.END:
            if length:
                raise FormatError("END section must be empty")
            break
        if t <= last:
            raise FormatError(f"section {name} out of order or repeated")
        last = t
        if t in KNOWN:
            sections[t] = payload
        elif t < 0x80:
            raise UnsupportedError(f"file needs section type {name}, which this decoder does not support")
        # ancillary sections this decoder does not know are skipped
    if r.pos != len(data):
        raise FormatError(f"{len(data) - r.pos} unexpected bytes after the END section")
    for required in (Section.HYPER, Section.LATENT):
        if required not in sections:
            raise FormatError(f"required {required.name} section is missing")
    if (Section.ALPHA in sections) != (header.channels == 4):
        raise FormatError("ALPHA section present iff channels = 4")
    return Container(header, sections)


def section_spans(data: bytes) -> list[tuple[str, int, int]]:
    """(name, offset, total bytes incl. type/length/CRC) for the header and each section."""
    _, pos = unpack_header(data, max_pixels=None)
    spans = [("HEADER", 0, pos)]
    r = Reader(bytes(data))
    r.pos = pos
    while r.pos < len(data):
        start = r.pos
        t = r.u8("section type")
        length = r.varint("section")
        r.take(length + 4, "section")
        spans.append((_section_name(t), start, r.pos - start))
        if t == Section.END:
            break
    return spans

import struct
import zlib

import pytest

from codec import container
from codec.container import Container, Header, Section
from codec.errors import CorruptFileError, FormatError, ImageTooLargeError, UnsupportedError


def make(**kw) -> bytes:
    h = Header("hpg-x", b"\x01" * 8, kw.pop("width", 100), kw.pop("height", 50), 3, 8, 42.5)
    sections = kw.pop("sections", {Section.HYPER: b"zz", Section.LATENT: b"yyyy"})
    return container.pack(Container(h, sections))


def test_round_trip():
    data = make()
    c = container.unpack(data)
    assert c.header.model_id == "hpg-x"
    assert c.header.weights_hash == b"\x01" * 8
    assert (c.header.width, c.header.height, c.header.channels, c.header.bit_depth) == (100, 50, 3, 8)
    assert c.header.quality == 42.5
    assert c.sections == {Section.HYPER: b"zz", Section.LATENT: b"yyyy"}
    assert data.startswith(container.MAGIC)


def test_varint_sizes_round_trip():
    for w, h in [(1, 1), (127, 128), (65535, 300)]:
        c = container.unpack(make(width=w, height=h), max_pixels=None)
        assert (c.header.width, c.header.height) == (w, h)
    big = b"x" * 70000
    c = container.unpack(make(sections={Section.HYPER: b"", Section.LATENT: big}))
    assert c.sections[Section.LATENT] == big


def test_overhead_is_small():
    data = make(sections={Section.HYPER: b"", Section.LATENT: b""})
    assert len(data) < 50


def test_every_flipped_byte_is_detected():
    data = make()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x10
        with pytest.raises(FormatError):
            container.unpack(bytes(bad))


def test_every_truncation_is_detected():
    data = make()
    for n in range(len(data)):
        with pytest.raises(FormatError):
            container.unpack(data[:n])


def test_empty_and_foreign():
    with pytest.raises(FormatError, match="empty"):
        container.unpack(b"")
    with pytest.raises(FormatError, match="not a .lic file"):
        container.unpack(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)


def test_trailing_bytes_rejected():
    with pytest.raises(FormatError, match="after the END"):
        container.unpack(make() + b"\0")


def _refresh_header_crc(data: bytearray, header_end: int) -> bytes:
    data[header_end:header_end + 4] = struct.pack(">I", zlib.crc32(bytes(data[:header_end])))
    return bytes(data)


def test_newer_version_names_versions():
    data = bytearray(make())
    data[4] = container.FORMAT_VERSION + 1
    v = container.FORMAT_VERSION
    with pytest.raises(UnsupportedError, match=rf"version {v + 1} is newer .*supports \({v}\)"):
        container.unpack(bytes(data))


def test_gray_flag_round_trips_and_unknown_flags_are_refused():
    def with_flags(flags):
        h = Header("m", b"\0" * 8, 8, 8, 3, 8, 50, flags)
        return Container(h, {Section.HYPER: b"a", Section.LATENT: b"b"})

    assert container.unpack(container.pack(with_flags(container.FLAG_GRAY))).header.flags == container.FLAG_GRAY
    with pytest.raises(FormatError, match="unknown header flags 0x02"):
        container.pack(with_flags(0x02))
    # A file that claims a flag this decoder does not know is refused, not decoded wrongly.
    data = bytearray(container.pack(with_flags(0)))
    end = len(container.header_bytes(with_flags(0).header)) - 4
    data[end - 1] = 0x80
    with pytest.raises(FormatError, match="unknown header flags 0x80"):
        container.unpack(_refresh_header_crc(data, end))


def test_unknown_critical_section_refused_ancillary_skipped():
    h = container.pack_header(Header("m", b"\0" * 8, 8, 8, 3, 8, 50))
    body = (container.pack_section(Section.HYPER, b"a") + container.pack_section(Section.LATENT, b"b"))
    end = container.pack_section(Section.END, b"")
    with pytest.raises(UnsupportedError, match="0x07"):
        container.unpack(h + body + container.pack_section(0x07, b"?") + end)
    c = container.unpack(h + body + container.pack_section(0x90, b"hint") + end)
    assert set(c.sections) == {Section.HYPER, Section.LATENT}


def test_missing_required_section():
    h = container.pack_header(Header("m", b"\0" * 8, 8, 8, 3, 8, 50))
    data = h + container.pack_section(Section.LATENT, b"b") + container.pack_section(Section.END, b"")
    with pytest.raises(FormatError, match="HYPER section is missing"):
        container.unpack(data)


def test_missing_end_is_truncation():
    data = make()
    with pytest.raises(CorruptFileError, match="truncated"):
        container.unpack(data[:-6])


def test_pixel_limit_checked_from_header():
    data = make(width=60000, height=60000)
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        container.unpack(data)
    assert container.unpack(data, max_pixels=None).header.width == 60000


def test_header_validation():
    with pytest.raises(FormatError):
        container.pack_header(Header("m", b"\0" * 8, 0, 8, 3, 8, 50))
    with pytest.raises(FormatError):
        container.pack_header(Header("m", b"\0" * 8, 8, 8, 2, 8, 50))
    with pytest.raises(FormatError):
        container.pack_header(Header("m", b"\0" * 8, 8, 8, 3, 8, 101))


def test_section_spans_cover_file():
    data = make()
    spans = container.section_spans(data)
    assert [s[0] for s in spans] == ["HEADER", "HYPER", "LATENT", "END"]
    assert sum(s[2] for s in spans) == len(data)
